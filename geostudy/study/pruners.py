"""Pruner factory: every pruner Optuna 5 ships, by the name a study file uses.

``patient`` wraps another pruner given as ``args: {patience: 3, wrapped: {name: median}}``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from geostudy.errors import ConfigError
from geostudy.study.components import ComponentSpec, build

PRUNERS: dict[str, Callable[..., optuna.pruners.BasePruner]] = {
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "threshold": optuna.pruners.ThresholdPruner,
    "patient": optuna.pruners.PatientPruner,
    "wilcoxon": optuna.pruners.WilcoxonPruner,
    "nop": optuna.pruners.NopPruner,
}


def list_pruners() -> list[str]:
    return list(PRUNERS)


def make_pruner(spec: ComponentSpec, *, file: str | Path | None = None, section: str = "pruner") -> optuna.pruners.BasePruner:
    """Build the pruner a study file declares."""
    if spec.name not in PRUNERS:
        raise ConfigError(f"unknown pruner {spec.name!r}; allowed: {', '.join(PRUNERS)}", file=file, key=f"{section}.name")
    args = dict(spec.args)
    fixed: dict[str, Any] = {}
    if spec.name == "patient":
        inner = ComponentSpec.parse(args.pop("wrapped", None), section=f"{section}.args.wrapped",
                                    allowed=list_pruners(), default="nop", file=file)
        fixed["wrapped_pruner"] = make_pruner(inner, file=file, section=f"{section}.args.wrapped")
    return build(PRUNERS[spec.name], args, section=section, name=spec.name, file=file, fixed=fixed)
