"""The toy learner's config, run and figure."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from geostudy.config import check_range
from geostudy.errors import NonFiniteLossError
from geostudy.learners.base import Learner, RunContext, RunResult


def branin(x: float, y: float) -> float:
    """Branin-Hoo function on x in [-5, 10], y in [0, 15]; global minimum 0.397887."""
    a, b, c = 1.0, 5.1 / (4 * math.pi**2), 5 / math.pi
    r, s, t = 6.0, 10.0, 1 / (8 * math.pi)
    return a * (y - b * x**2 + c * x - r) ** 2 + s * (1 - t) * math.cos(x) + s


@dataclass
class ToyConfig:
    learner: str = "toy"
    seed: int = 0
    x: float = 0.0
    y: float = 0.0
    steps: int = 5
    noise: float = 0.0
    sleep: float = 0.0
    fail: Literal["none", "nan", "error", "memory"] = "none"
    figure: bool = False

    def validate(self, file: str | Path | None, prefix: str) -> None:
        check_range(self.x, f"{prefix}x", file=file, low=-5, high=10)
        check_range(self.y, f"{prefix}y", file=file, low=0, high=15)
        check_range(self.steps, f"{prefix}steps", file=file, low=1)
        check_range(self.noise, f"{prefix}noise", file=file, low=0)
        check_range(self.sleep, f"{prefix}sleep", file=file, low=0)


class ToyLearner(Learner):
    name: ClassVar[str] = "toy"
    metrics: ClassVar[Mapping[str, str]] = {"value": "minimize", "distance": "minimize"}
    config_class = ToyConfig

    def run(self, config: Mapping[str, Any], ctx: RunContext) -> RunResult:
        cfg: ToyConfig = self.parse_config(config)
        rng = np.random.default_rng(cfg.seed) if cfg.noise else None  # a Generator costs more than the rest of a run
        target = branin(cfg.x, cfg.y)
        value = target
        for step in range(cfg.steps):
            if cfg.sleep:
                time.sleep(cfg.sleep)
            # Converges from above like a validation loss, so pruners have something to compare.
            value = target * (1 + 2.0 / (step + 1)) + (cfg.noise * rng.standard_normal() if rng is not None else 0.0)
            if cfg.fail == "nan" and step == cfg.steps // 2:
                raise NonFiniteLossError(step, float("nan"))
            if cfg.fail == "error" and step == cfg.steps // 2:
                raise RuntimeError("toy learner failed on purpose (fail: error)")
            if cfg.fail == "memory" and step == cfg.steps // 2:
                raise MemoryError("toy learner ran out of memory on purpose (fail: memory)")
            ctx.report(step, {"value": value})
        distance = min(math.dist((cfg.x, cfg.y), p) for p in [(-math.pi, 12.275), (math.pi, 2.275), (9.42478, 2.475)])
        figures: dict[str, Any] = {}
        if cfg.figure:
            figures["branin"] = _branin_figure(cfg.x, cfg.y)
        return RunResult(metrics={"value": float(value), "distance": float(distance)}, figures=figures)


def _branin_figure(x: float, y: float):
    import matplotlib.pyplot as plt

    xs, ys = np.meshgrid(np.linspace(-5, 10, 80), np.linspace(0, 15, 80))
    zs = np.vectorize(branin)(xs, ys)
    fig, ax = plt.subplots(figsize=(4, 3.2))
    cs = ax.contourf(xs, ys, np.log(zs), levels=20, cmap="viridis")
    fig.colorbar(cs, ax=ax, label="log Branin")
    ax.plot([x], [y], "r*", ms=12)
    ax.set(xlabel="x", ylabel="y", title="trial point on Branin")
    fig.tight_layout()
    return fig
