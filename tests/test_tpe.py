"""IncrementalTPESampler proposes exactly what Optuna's TPESampler does, for the same seed and history."""

from __future__ import annotations

import math

import optuna
import pytest

from geostudy.study.samplers import SAMPLERS
from geostudy.study.storage import open_storage
from geostudy.study.tpe import IncrementalTPESampler

optuna.logging.set_verbosity(optuna.logging.ERROR)


def _objective(trial: optuna.Trial) -> float:
    """Mixed parameter types, ties, pruned trials (one with a NaN report), failures and infeasible trials."""
    x = trial.suggest_float("x", -5, 10)
    lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    k = trial.suggest_int("k", 0, 15)
    kind = trial.suggest_categorical("kind", ["a", "b", "c"])
    value = (x - 1) ** 2 + (k - 3) ** 2 + {"a": 0, "b": 1, "c": 2}[kind] + math.log10(lr) ** 2
    trial.set_constraint("budget", x - 8.0)  # infeasible when x > 8
    if trial.number % 7 == 3:
        trial.report(float("nan") if trial.number % 14 == 3 else value, 1)
        raise optuna.TrialPruned()
    if trial.number % 11 == 5:
        raise ValueError("a failing trial")
    return float(round(value))  # rounding makes ties, whose order the split must keep


def _proposals(sampler: optuna.samplers.BaseSampler, direction: str, storage=None, n: int = 45) -> list[dict]:
    study = optuna.create_study(direction=direction, sampler=sampler, storage=storage)
    study.optimize(_objective, n_trials=n, catch=(ValueError,))
    return [t.params for t in study.trials]


@pytest.mark.parametrize("args", [{}, {"multivariate": False}, {"constant_liar": False}, {"group": True},
                                  {"n_startup_trials": 3, "n_ei_candidates": 5}],
                         ids=["defaults", "independent", "no-liar", "group", "few-startup"])
@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_same_proposals_as_optuna_tpe(args: dict, direction: str) -> None:
    ours = _proposals(IncrementalTPESampler(seed=3, **args), direction)
    theirs = _proposals(optuna.samplers.TPESampler(seed=3, **args), direction)
    assert ours == theirs


def test_same_proposals_on_the_write_behind_sqlite_storage(tmp_path) -> None:
    ours = _proposals(IncrementalTPESampler(seed=5), "minimize", open_storage(f"sqlite:///{tmp_path / 'a.db'}"))
    theirs = _proposals(optuna.samplers.TPESampler(seed=5), "minimize")
    assert ours == theirs


def test_multi_objective_goes_through_optuna_unchanged() -> None:
    def two(trial: optuna.Trial) -> tuple[float, float]:
        x, y = trial.suggest_float("x", 0, 1), trial.suggest_float("y", 0, 1)
        return x + y, (1 - x) ** 2 + y

    runs = []
    for make in (IncrementalTPESampler, optuna.samplers.TPESampler):
        study = optuna.create_study(directions=["minimize", "minimize"], sampler=make(seed=1))
        study.optimize(two, n_trials=30)
        runs.append([t.params for t in study.trials])
    assert runs[0] == runs[1]


def test_one_sampler_for_two_studies_starts_afresh_for_the_second() -> None:
    """Rows read from the first study must not leak into the second one's proposals."""
    ours_sampler, their_sampler = IncrementalTPESampler(seed=2), optuna.samplers.TPESampler(seed=2)
    ours = [_proposals(ours_sampler, "minimize", n=25) for _ in range(2)]
    theirs = [_proposals(their_sampler, "minimize", n=25) for _ in range(2)]
    assert ours == theirs


def test_study_files_name_tpe_and_get_the_incremental_one() -> None:
    assert issubclass(SAMPLERS["tpe"], optuna.samplers.TPESampler)
    assert SAMPLERS["tpe"] is IncrementalTPESampler
