"""What :class:`~geostudy.study.fast_storage.FastStorage` keeps in memory: the trials this process
runs (:class:`OwnedTrial`, with what is not yet written) and each study's known trials
(:class:`StudyCache`, indexed for O(1)-ish reads)."""

from __future__ import annotations

import bisect
import time
from collections import Counter
from collections.abc import Container

from optuna import distributions as dists
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState


class OwnedTrial:
    """A trial this process runs: its live state and what is not yet in the database."""

    def __init__(self, study_id: int, trial: FrozenTrial, beat_written: bool) -> None:
        self.study_id = study_id
        self.trial = trial
        self.params: dict[str, tuple[float, str]] = {}  # name -> (internal value, distribution json), unwritten
        self.attrs: dict[str, dict[str, str]] = {"user": {}, "system": {}}  # key -> json, unwritten
        self.written: dict[str, set[str]] = {"user": set(), "system": set()}
        self.steps: dict[int, float] = {}
        self.written_steps: set[int] = set()
        self.last_flush = time.monotonic()
        self.last_beat = time.monotonic() if beat_written else float("-inf")
        self.lost = False  # another process finished (failed) it

    def dirty(self) -> bool:
        return bool(self.params or self.steps or self.attrs["user"] or self.attrs["system"])


class StudyCache:
    """What this process knows of one study's trials, indexed so that every per-trial read is O(1)-ish.

    ``get_all_trials`` is called several times per trial (Optuna's ask, TPE, the runner's count):
    a fresh filtered list each time is an O(n) Python loop per call, which made the per-trial
    cost grow with the study. Instead each filter asked for keeps a view (the matching trials in
    number order) that :meth:`put` updates in place (a binary search and a C-level list edit), and
    the counts per state are kept as trials come and change.
    """

    MAX_VIEWS = 16  # distinct state filters kept; more (never seen in practice) are computed each time

    def __init__(self) -> None:
        self.by_number: list[FrozenTrial | None] = []
        self.state_of: list[TrialState | None] = []  # each trial's state when it was last put (owned ones change in place)
        self.counts: Counter[TrialState] = Counter()
        self.views: dict[frozenset[TrialState] | None, list[FrozenTrial]] = {}
        self.last_seen = -1  # highest trial id a refresh has seen
        self.unfinished: dict[int, float] = {}  # others' unfinished trial ids -> when their details were read
        self.stale = True  # refresh at the next read
        self.version: int | None = None  # SQLite's data_version at the last refresh
        self.refreshed_at = float("-inf")
        self.dists: dict[str, dists.BaseDistribution] = {}
        self.directions: list[StudyDirection] | None = None
        self.name: str | None = None
        self.best: FrozenTrial | None = None

    def put(self, trial: FrozenTrial) -> None:
        """Add ``trial`` or replace the one of its number, keeping the views and counts exact."""
        number = trial.number
        if number >= len(self.by_number):
            grow = number + 1 - len(self.by_number)
            self.by_number.extend([None] * grow)
            self.state_of.extend([None] * grow)
        was = self.state_of[number]
        self.by_number[number], self.state_of[number] = trial, trial.state
        if was is not None:
            self.counts[was] -= 1
        self.counts[trial.state] += 1
        for key, view in self.views.items():
            before = was is not None and (key is None or was in key)
            after = key is None or trial.state in key
            if not (before or after):
                continue
            i = bisect.bisect_left(view, number, key=_number)
            if before and after:
                view[i] = trial
            elif before:
                del view[i]
            else:
                view.insert(i, trial)

    def trials(self, states: Container[TrialState] | None) -> list[FrozenTrial]:
        """The known trials (in number order) whose state is in ``states`` (all if None): a new list."""
        try:
            key = None if states is None else frozenset(states)  # type: ignore[call-overload]
        except TypeError:  # a Container that cannot be iterated
            return [t for t in self.by_number if t is not None and t.state in states]  # type: ignore[operator]
        view = self.views.get(key)
        if view is None:
            view = [t for t, s in zip(self.by_number, self.state_of) if t is not None and (key is None or s in key)]
            if len(self.views) >= self.MAX_VIEWS:
                return view
            self.views[key] = view
        return list(view)


def _number(trial: FrozenTrial) -> int:
    return trial.number

