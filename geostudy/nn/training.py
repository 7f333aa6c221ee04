"""Training helpers shared by every neural learner: seeding, optimizers, the epoch loop."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from geostudy.config import check_range
from geostudy.errors import ConfigError, NonFiniteLossError
from geostudy.learners.base import RunContext

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "adamax": torch.optim.Adamax,
    "sgd": torch.optim.SGD,
}


@dataclass
class OptimConfig:
    """The ``optim`` section the neural learners share: optimizer name, learning rate, weight decay.

    A learner subclasses it to change the defaults, narrow ``name`` with a ``Literal``, or add keys;
    the checks here run for all of them (``to_dataclass`` calls ``validate``).
    """

    name: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0

    def validate(self, file: str | Path | None, prefix: str) -> None:
        if self.name not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.name!r}; allowed: {', '.join(OPTIMIZERS)}", file=file,
                              key=f"{prefix}name")
        check_range(self.lr, f"{prefix}lr", file=file, low=0, low_open=True)
        check_range(self.weight_decay, f"{prefix}weight_decay", file=file, low=0)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA); return a CPU generator seeded the same way.

    Together with a fixed config this makes a CPU run repeat to the last digit, which is what lets
    ``best_config.yaml`` reproduce the best trial.
    """
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def make_optimizer(
    name: str, params: Iterable[torch.nn.Parameter], *, lr: float, weight_decay: float = 0.0, key: str = "optim.name"
) -> torch.optim.Optimizer:
    """Build an optimizer by name (``adam``, ``adamw``, ``adamax``, ``sgd``)."""
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; allowed: {', '.join(OPTIMIZERS)}", key=key)
    if not lr > 0:
        raise ConfigError(f"learning rate must be > 0, but got {lr!r}", key="optim.lr")
    return OPTIMIZERS[name](params, lr=lr, weight_decay=weight_decay)


def make_scheduler(schedule: str, optimizer: torch.optim.Optimizer, total_steps: int, *,
                   key: str = "optim.schedule") -> torch.optim.lr_scheduler.LRScheduler | None:
    """The learning-rate schedule over ``total_steps`` optimizer steps, stepped once per step.

    ``none`` / ``constant``: no schedule (``None``). ``cosine``: from the optimizer's rate down to 0 along
    half a cosine, so the last steps settle instead of hovering at the full step size. ``onecycle``: a
    warm-up over the first 15 % to the optimizer's rate, then annealing (Smith's one-cycle policy).
    """
    if schedule in ("none", "constant"):
        return None
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    if schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=optimizer.param_groups[0]["lr"],
                                                   total_steps=total_steps, pct_start=0.15)
    raise ConfigError(f"unknown schedule {schedule!r}; allowed: none, constant, cosine, onecycle", key=key)


def check_finite(loss: torch.Tensor | float, step: int) -> float:
    """Return the loss as a float, or raise :class:`NonFiniteLossError` for NaN/inf."""
    value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
    if not math.isfinite(value):
        raise NonFiniteLossError(step, value)
    return value


def run_epochs(
    epochs: int,
    train_epoch: Callable[[int], float],
    evaluate: Callable[[int], Mapping[str, float]],
    ctx: RunContext,
    *,
    eval_every: int = 1,
) -> list[dict[str, float]]:
    """The shared epoch loop: train, check the loss is finite, evaluate, report, log.

    Args:
        epochs: Number of epochs.
        train_epoch: Runs one epoch, returns its mean training loss.
        evaluate: Returns validation metrics after an epoch.
        ctx: The run context; ``ctx.report`` may raise ``optuna.TrialPruned`` (let it through).
        eval_every: Evaluate and report every this many epochs (and always at the last one).

    Returns:
        One dict per evaluated epoch: ``epoch``, ``loss``, ``seconds`` and the validation metrics.
    """
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    for epoch in range(epochs):
        loss = check_finite(train_epoch(epoch), epoch)
        if (epoch + 1) % eval_every and epoch != epochs - 1:
            continue
        metrics = dict(evaluate(epoch))
        row = {"epoch": float(epoch), "loss": loss, "seconds": time.perf_counter() - start, **metrics}
        history.append(row)
        shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        ctx.log(f"epoch {epoch + 1}/{epochs} loss={loss:.4g} {shown}")
        ctx.report(epoch, metrics)
    return history
