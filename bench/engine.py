"""Engine overhead: milliseconds per trial of a whole study with a trivial objective.

Ours is the real path of ``optuna_hyper.py`` (study file, spec, per-study SQLite default, objective
wrapper, callbacks, summary) on the toy learner with one step; the baselines are raw Optuna with
the same sampler on an in-memory storage and on a fresh SQLite file, optimising the same function.
One-time imports are not timed: a 3-trial run of ours warms them first (the baselines, timed after
ours, find them warm too), and the baselines' timing starts after their study is created.

Both sides build their sampler from the same arguments (``SAMPLER_ARGS``: only ``seed=0``, so
Optuna 5.0's defaults otherwise; for TPE: multivariate (its default for one objective), ``constant_liar=True,
n_startup_trials=10, n_ei_candidates=24``), and the run checks that the samplers' settings match.
Ours is ``IncrementalTPESampler`` for TPE: Optuna's TPE with a cheaper read of the history, which
proposes exactly what ``TPESampler`` does for the same seed (tests/test_tpe.py), so both sides run the
same search.

``per_trial_growth_*`` compares the per-trial time at the end of a study with that at its start,
from the trials' completion timestamps in their storage: the median gap between consecutive
completions over the last 100 trials (the last tenth, at least 5) divided by that over the first
100 (1.0: flat). Medians, not means, because this machine is shared: one hiccup of another process
(a few ms, or a SQLite checkpoint's fsync) would otherwise decide the ratio; for the same reason ours
and raw in-memory run ``REPEATS`` times and report the medians of time and growth. Random's goal is
<= 1.2 (the storage must not slow down as the study grows); TPE's own sampling grows with the
trial count, so its baseline is raw in-memory TPE's growth and ours should not exceed it by much.

Every row of ours runs with the default crash safety (each trial records its worker, its params are
written as soon as its objective sets anything: ``geostudy/study/workers.py``). ``overhead_tpe_with_heartbeat``
adds heartbeats as a server database gets them by default (``SERVER_HEARTBEAT_INTERVAL``, a beat thread
per trial and Optuna's stale-trial query before each), here on the same SQLite file, so their cost
shows next to raw in-memory TPE's.
"""

from __future__ import annotations

import contextlib
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import yaml

from geostudy.cli import study_main
from geostudy.learners.toy import branin
from geostudy.study.spec import parse_study
from geostudy.study.storage import SERVER_GRACE_PERIOD, SERVER_HEARTBEAT_INTERVAL

ROOT = Path(__file__).resolve().parents[1]
# Ours and raw in-memory run this many times each (medians reported); raw SQLite, slow and dominated by
# the disk rather than by other processes' CPU use, runs once.
REPEATS = 3


SAMPLER_ARGS: dict = {"seed": 0}
# Settings that change what a sampler costs per trial: equal on both sides, or the comparison is unfair.
SAMPLER_SETTINGS = ("_multivariate", "_constant_liar", "_n_startup_trials", "_n_ei_candidates", "_group")


def growth(trials: list[optuna.trial.FrozenTrial]) -> float:
    """Median seconds between completions over the last tenth of ``trials`` / that over the first tenth."""
    done = sorted(t.datetime_complete for t in trials if t.datetime_complete is not None)
    gaps = [(b - a).total_seconds() for a, b in zip(done, done[1:])]
    k = max(5, len(gaps) // 10)
    first, last = statistics.median(gaps[:k]), statistics.median(gaps[-k:])
    return last / first if first > 0 else float("nan")


def _make_sampler(sampler: str) -> optuna.samplers.BaseSampler:
    make = optuna.samplers.TPESampler if sampler == "tpe" else optuna.samplers.RandomSampler
    return make(**SAMPLER_ARGS)


def _check_same_sampler(sampler: str, study_file: Path) -> None:
    ours = parse_study(study_file).make_sampler()
    raw = _make_sampler(sampler)
    differ = {k: (getattr(ours, k, None), getattr(raw, k, None)) for k in SAMPLER_SETTINGS
              if getattr(ours, k, None) != getattr(raw, k, None)}
    # Ours may be a subclass that proposes the same (IncrementalTPESampler: tested equal to TPESampler).
    if not isinstance(ours, type(raw)) or differ:
        raise RuntimeError(f"ours and the baseline use different samplers: {type(ours).__name__} vs "
                           f"{type(raw).__name__}, {differ}")


def _raw(sampler: str, n: int, storage: str | None) -> tuple[float, float]:
    def objective(trial: optuna.Trial) -> float:
        return branin(trial.suggest_float("x", -5, 10), trial.suggest_float("y", 0, 15))

    study = optuna.create_study(storage=storage, sampler=_make_sampler(sampler))
    start = time.perf_counter()
    study.optimize(objective, n_trials=n)
    seconds = (time.perf_counter() - start) / n
    return seconds, growth(study.get_trials(deepcopy=False))


def _ours(sampler: str, n: int, folder: Path, name: str | None = None, heartbeat: bool = False) -> tuple[float, float]:
    name = name or f"bench_{sampler}"
    study = {
        "name": name, "learner": "toy", "config": str(ROOT / "configs" / "toy.yaml"),
        "set": {"steps": 1}, "metrics": ["value"], "n_trials": n,
        "sampler": {"name": sampler, "args": dict(SAMPLER_ARGS)}, "pruner": {"name": "nop"},
        "space": {"x": {"type": "float", "low": -5, "high": 10}, "y": {"type": "float", "low": 0, "high": 15}},
    }
    if heartbeat:  # as on a server database by default
        study.update(heartbeat_interval=SERVER_HEARTBEAT_INTERVAL, grace_period=SERVER_GRACE_PERIOD)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study))
    _check_same_sampler(sampler, path)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = study_main(["--study", str(path), "--out", str(folder / "out"), "--no-progress"])
    if code != 0:
        raise RuntimeError(f"study exited {code}")
    seconds = (time.perf_counter() - start) / n
    stored = optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'out' / name / f'{name}.db'}")
    return seconds, growth(stored.get_trials(deepcopy=False))


def _median_of(measure: Callable[[int], tuple[float, float]]) -> tuple[float, float]:
    """Median seconds per trial and median growth over ``REPEATS`` runs (this CPU is shared)."""
    runs = [measure(i) for i in range(REPEATS)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def run(quick: bool) -> list[dict]:
    n = 100 if quick else 1000
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for sampler in ("random", "tpe"):
            print(f"engine: {sampler}, {n} trials each: ours ...", file=sys.stderr, flush=True)
            _ours(sampler, 3, folder, name=f"warmup_{sampler}")
            ours, ours_growth = _median_of(lambda i, s=sampler: _ours(s, n, folder, name=f"bench_{s}_{i}"))
            if sampler == "tpe":
                with_beat, _ = _median_of(lambda i: _ours("tpe", n, folder, name=f"bench_tpe_beat_{i}", heartbeat=True))
            print(f"engine: {sampler}: raw in-memory, raw SQLite ...", file=sys.stderr, flush=True)
            memory, memory_growth = _median_of(lambda i, s=sampler: _raw(s, n, None))
            sqlite, sqlite_growth = _raw(sampler, n, f"sqlite:///{folder / f'raw_{sampler}.db'}")
            ms = 1000.0
            rows.append({"work": f"overhead_{sampler}", "unit": "ms/trial", "ours": ours * ms, "baseline": memory * ms,
                         "baseline_name": f"raw Optuna {sampler}, in-memory", "lower_is_better": True,
                         "goal": "<= 2x" if sampler == "tpe" else ""})
            rows.append({"work": f"overhead_{sampler}_vs_sqlite", "unit": "ms/trial", "ours": ours * ms,
                         "baseline": sqlite * ms, "baseline_name": f"raw Optuna {sampler}, SQLite file",
                         "lower_is_better": True, "goal": "<= 0.2x"})
            if sampler == "random":
                rows.append({"work": "per_trial_growth_random", "unit": "median gap, last/first 10%", "ours": ours_growth,
                             "baseline": sqlite_growth, "baseline_name": "raw Optuna random, SQLite file",
                             "lower_is_better": True, "goal": "ours <= 1.2"})
            else:
                rows.append({"work": "overhead_tpe_with_heartbeat", "unit": "ms/trial", "ours": with_beat * ms,
                             "baseline": memory * ms, "baseline_name": "raw Optuna tpe, in-memory",
                             "lower_is_better": True, "goal": "<= 2x"})
                rows.append({"work": "per_trial_growth_tpe", "unit": "median gap, last/first 10%", "ours": ours_growth,
                             "baseline": memory_growth, "baseline_name": "raw Optuna tpe, in-memory (sampler's own)",
                             "lower_is_better": True, "goal": "ours ~ baseline"})
    return rows
