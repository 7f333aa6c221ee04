"""Sampler factory: every sampler Optuna 5 ships, by the name a study file uses."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from geostudy.errors import ConfigError
from geostudy.study.components import ComponentSpec, build
from geostudy.study.space import SearchSpace
from geostudy.study.tpe import IncrementalTPESampler

SAMPLERS: dict[str, Callable[..., optuna.samplers.BaseSampler]] = {
    "tpe": IncrementalTPESampler,  # Optuna's TPE, reading each finished trial once (see tpe.py)
    "random": optuna.samplers.RandomSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "gp": optuna.samplers.GPSampler,
    "qmc": optuna.samplers.QMCSampler,
    "grid": optuna.samplers.GridSampler,
    "nsgaii": optuna.samplers.NSGAIISampler,
    "nsgaiii": optuna.samplers.NSGAIIISampler,
    "bruteforce": optuna.samplers.BruteForceSampler,
}
# Samplers that cannot optimise several objectives at once.
SINGLE_OBJECTIVE_ONLY = {"cmaes"}


def list_samplers() -> list[str]:
    return list(SAMPLERS)


def make_sampler(spec: ComponentSpec, space: SearchSpace, n_objectives: int, *,
                 file: str | Path | None = None) -> optuna.samplers.BaseSampler:
    """Build the sampler a study file declares.

    The grid sampler's ``search_space`` comes from the study's ``space:`` (every parameter must be
    discrete: int, categorical, or float with ``step``).
    """
    if spec.name not in SAMPLERS:
        raise ConfigError(f"unknown sampler {spec.name!r}; allowed: {', '.join(SAMPLERS)}", file=file, key="sampler.name")
    if spec.name in SINGLE_OBJECTIVE_ONLY and n_objectives > 1:
        raise ConfigError(f"sampler {spec.name} handles one objective, but the study has {n_objectives}; "
                          "use tpe, nsgaii, nsgaiii, gp or random", file=file, key="sampler.name")
    fixed: dict[str, Any] = {}
    if spec.name == "grid":
        fixed["search_space"] = space.grid()
    return build(SAMPLERS[spec.name], spec.args, section="sampler", name=spec.name, file=file, fixed=fixed)
