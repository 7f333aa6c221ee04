"""The objective: wraps any learner as an Optuna objective, the same way for every learner."""

from __future__ import annotations

import atexit
import math
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from functools import cache
from importlib import metadata
from pathlib import Path

import optuna

from geostudy.errors import GeostudyError
from geostudy.learners.base import RunContext, RunResult
from geostudy.study.artifacts import json_safe, make_store, save_figures, upload_run_outputs
from geostudy.study.spec import StudySpec

INTERRUPTED = "interrupted"  # how a Ctrl-C'd (or SIGTERM'd) trial's fail_reason starts
VERSIONED = ("torch", "dgl", "torch_geometric", "gpytorch", "optuna", "numpy", "scipy", "geostudy")


@cache
def library_versions() -> dict[str, str]:
    """Versions of python and the libraries a result depends on (read without importing them)."""
    versions = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def interrupted_reason(err: KeyboardInterrupt) -> str:
    """The ``fail_reason`` of a trial cut short by Ctrl-C or a signal (``interrupted (signal 15); ...``)."""
    return f"{INTERRUPTED} ({err or 'Ctrl-C'}); the study can be resumed"


def describe_error(err: BaseException) -> str:
    """One line for a trial's ``fail_reason``: the error type and message."""
    if isinstance(err, GeostudyError):
        return f"{type(err).__name__}: {err.one_line()}"
    text = " ".join(str(err).split()) or "(no message)"
    if "out of memory" in text.lower() or isinstance(err, MemoryError):
        return f"out of memory ({type(err).__name__}): {text[:500]}"
    return f"{type(err).__name__}: {text[:500]}"


class TrialReporter:
    """Forwards a learner's per-step metrics to ``trial.report`` and prunes.

    Multi-objective studies cannot prune in Optuna, so there the values are only kept for the
    trial's history.
    """

    def __init__(self, trial: optuna.Trial, metric: str, prune: bool) -> None:
        self.trial = trial
        self.metric = metric
        self.prune = prune
        self.last_step = -1

    def __call__(self, step: int, metrics: Mapping[str, float]) -> None:
        self.last_step = step
        if not self.prune or self.metric not in metrics:
            return
        value = float(metrics[self.metric])
        if not math.isfinite(value):
            return  # the final value decides; Optuna rejects NaN intermediate values for pruning
        self.trial.report(value, step)
        if self.trial.should_prune():
            self.trial.set_user_attr("pruned_at_step", step)
            raise optuna.TrialPruned(f"pruned at step {step} with {self.metric}={value:.6g}")


class Objective:
    """Callable objective for ``study.optimize``.

    For each trial: suggest parameters, resolve the full config, run the learner in a scratch
    folder, upload its figures as artifacts, store the config, versions, metrics (or the failure
    reason) as user attributes, and return the study's metric(s).
    """

    def __init__(self, spec: StudySpec, artifact_folder: Path, on_start: Callable[[], None] | None = None,
                 on_end: Callable[[], None] | None = None) -> None:
        self.spec = spec
        self.store = make_store(artifact_folder)
        self.on_start = on_start
        self.on_end = on_end
        self._workdir: Path | None = None
        self.trial_id: int | None = None  # the trial this objective ran last (the runner reads it back)

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        self.trial_id = trial._trial_id
        try:
            if self.on_start is not None:
                self.on_start()  # the trial is RUNNING in the storage now: other workers may count it
            return self._run(trial)
        except KeyboardInterrupt as err:
            # Optuna marks the trial FAIL on the way out; say why, so nobody hunts for a bug. Here, not
            # in _run: a signal held while Optuna created the trial is raised by on_start.
            trial.set_user_attr("fail_reason", interrupted_reason(err))
            raise
        finally:
            if self.on_end is not None:
                self.on_end()  # Optuna stores the trial next (the runner holds signals back meanwhile)

    def _run(self, trial: optuna.Trial) -> float | list[float]:
        spec = self.spec
        params = spec.space.suggest(trial)
        config = spec.config_for(params)
        trial.set_user_attr("config", json_safe(config))
        trial.set_user_attr("versions", library_versions())
        reporter = TrialReporter(trial, spec.metrics[0], prune=not spec.multi_objective)
        start = time.perf_counter()
        workdir = self._scratch()
        try:
            result = spec.learner.run(config, RunContext(workdir=workdir, report=reporter))
            result.metrics["run_seconds"] = time.perf_counter() - start
            figures = save_figures(result, workdir / "figures")
            upload_run_outputs(trial, self.store, {**figures, **result.files})
        except (optuna.TrialPruned, KeyboardInterrupt):
            raise
        except BaseException as err:
            trial.set_user_attr("fail_reason", describe_error(err))
            raise
        return self._values(trial, result)

    def _scratch(self) -> Path:
        """An empty folder for this trial's files (uploaded as artifacts, then dropped).

        One folder per worker, emptied between trials: creating and deleting a temporary folder
        per trial cost more than all the storage writes of a trial together.
        """
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix=f"geostudy-{self.spec.name}-"))
            atexit.register(shutil.rmtree, self._workdir, ignore_errors=True)
        elif any(self._workdir.iterdir()):
            shutil.rmtree(self._workdir)
            self._workdir.mkdir()
        return self._workdir

    def _values(self, trial: optuna.Trial, result: RunResult) -> float | list[float]:
        missing = [m for m in self.spec.metrics if m not in result.metrics]
        if missing:
            reason = f"learner {self.spec.learner.name} returned no metric {missing[0]!r}; it returned {sorted(result.metrics)}"
            trial.set_user_attr("fail_reason", reason)
            raise RuntimeError(reason)
        trial.set_user_attr("metrics", {k: float(v) for k, v in result.metrics.items()})
        if result.tables:
            trial.set_user_attr("tables", json_safe(result.tables))
        values = [float(result.metrics[m]) for m in self.spec.metrics]
        bad = [m for m, v in zip(self.spec.metrics, values) if not math.isfinite(v)]
        if bad:
            trial.set_user_attr("fail_reason", f"metric {bad[0]!r} is not finite")
        return values[0] if len(values) == 1 else values
