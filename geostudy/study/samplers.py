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
# Seed offset between the workers of one --jobs run: far beyond any trial count a resume adds.
WORKER_STRIDE = 1_000_003
# Samplers that cannot optimise several objectives at once.
SINGLE_OBJECTIVE_ONLY = {"cmaes"}


def list_samplers() -> list[str]:
    return list(SAMPLERS)


def make_sampler(spec: ComponentSpec, space: SearchSpace, n_objectives: int, *,
                 file: str | Path | None = None, stored: int = 0, worker: int = 0) -> optuna.samplers.BaseSampler:
    """Build the sampler a study file declares.

    The grid sampler's ``search_space`` comes from the study's ``space:`` (every parameter must be
    discrete: int, categorical, or float with ``step``).

    ``stored`` is the number of trials the study already holds, ``worker`` the number of this
    process in a ``--jobs`` run (0 for the parent). A seeded sampler built afresh on resume, or in
    each of several workers, would replay the same first random proposals (the startup trials of
    TPE, every one of random): so its seed becomes ``seed + stored + WORKER_STRIDE * worker``, which
    keeps a resume reproducible from the same stored history.
    """
    if spec.name not in SAMPLERS:
        raise ConfigError(f"unknown sampler {spec.name!r}; allowed: {', '.join(SAMPLERS)}", file=file, key="sampler.name")
    if spec.name in SINGLE_OBJECTIVE_ONLY and n_objectives > 1:
        raise ConfigError(f"sampler {spec.name} handles one objective, but the study has {n_objectives}; "
                          "use tpe, nsgaii, nsgaiii, gp or random", file=file, key="sampler.name")
    fixed: dict[str, Any] = {}
    args = dict(spec.args)
    if isinstance(args.get("seed"), int):
        args["seed"] = (args["seed"] + stored + WORKER_STRIDE * worker) % 2**32  # numpy's seed range
    if spec.name == "grid":
        fixed["search_space"] = space.grid()
    return build(SAMPLERS[spec.name], args, section="sampler", name=spec.name, file=file, fixed=fixed)
