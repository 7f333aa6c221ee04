"""Engine overhead: seconds per trial of a whole study with a trivial objective.

Ours is the real path of ``optuna_hyper.py`` (study file, spec, per-study SQLite default, objective
wrapper, callbacks, summary) on the toy learner with one step; the baselines are raw Optuna with
the same sampler on an in-memory storage and on a fresh SQLite file, optimising the same function.
"""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

import optuna
import yaml

from geostudy.cli import study_main
from geostudy.learners.toy import branin

ROOT = Path(__file__).resolve().parents[1]


def _raw(sampler: str, n: int, storage: str | None) -> float:
    def objective(trial: optuna.Trial) -> float:
        return branin(trial.suggest_float("x", -5, 10), trial.suggest_float("y", 0, 15))

    make = optuna.samplers.TPESampler if sampler == "tpe" else optuna.samplers.RandomSampler
    study = optuna.create_study(storage=storage, sampler=make(seed=0))
    start = time.perf_counter()
    study.optimize(objective, n_trials=n)
    return (time.perf_counter() - start) / n


def _ours(sampler: str, n: int, folder: Path) -> float:
    study = {
        "name": f"bench_{sampler}", "learner": "toy", "config": str(ROOT / "configs" / "toy.yaml"),
        "set": {"steps": 1}, "metrics": ["value"], "n_trials": n,
        "sampler": {"name": sampler, "args": {"seed": 0}}, "pruner": {"name": "nop"},
        "space": {"x": {"type": "float", "low": -5, "high": 10}, "y": {"type": "float", "low": 0, "high": 15}},
    }
    path = folder / f"bench_{sampler}.yaml"
    path.write_text(yaml.safe_dump(study))
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = study_main(["--study", str(path), "--out", str(folder / "out"), "--no-progress"])
    if code != 0:
        raise RuntimeError(f"study exited {code}")
    return (time.perf_counter() - start) / n


def run(quick: bool) -> list[dict]:
    n = 100 if quick else 1000
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for sampler in ("random", "tpe"):
            print(f"engine: {sampler}, {n} trials each: ours ...", file=sys.stderr, flush=True)
            ours = _ours(sampler, n, folder)
            print(f"engine: {sampler}: raw in-memory, raw SQLite ...", file=sys.stderr, flush=True)
            memory = _raw(sampler, n, None)
            sqlite = _raw(sampler, n, f"sqlite:///{folder / f'raw_{sampler}.db'}")
            ms = 1000.0
            rows.append({"work": f"overhead_{sampler}", "unit": "ms/trial", "ours": ours * ms, "baseline": memory * ms,
                         "baseline_name": f"raw Optuna {sampler}, in-memory", "lower_is_better": True,
                         "goal": "<= 2x" if sampler == "tpe" else ""})
            rows.append({"work": f"overhead_{sampler}_vs_sqlite", "unit": "ms/trial", "ours": ours * ms,
                         "baseline": sqlite * ms, "baseline_name": f"raw Optuna {sampler}, SQLite file",
                         "lower_is_better": True, "goal": "<= 0.2x"})
    return rows
