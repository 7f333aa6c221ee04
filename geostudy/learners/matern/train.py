"""Building the estimator from a config and training it on simulated fields."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping

import numpy as np
import torch

from geostudy.learners.base import RunContext
from geostudy.learners.matern.config import MaternConfig
from geostudy.learners.matern.data import FieldGraph, build_graphs, collate
from geostudy.learners.matern.model import MaternEstimator, estimator_loss
from geostudy.learners.matern.simulate import FieldSet, simulate
from geostudy.nn.training import check_finite, make_optimizer


def typical_edge_length(cfg: MaternConfig) -> float:
    """Edge length scale of the graphs this config builds (initialises the radial bases)."""
    if cfg.model.density_aware:
        return 1.0  # lengths are in units of each field's mean edge length
    if cfg.graph.kind == "radius":
        return cfg.graph.radius
    # The k-th neighbour of a uniform pattern of n points in the unit square lies ~sqrt(k / (pi n)) away.
    return math.sqrt(cfg.graph.k / (math.pi * cfg.data.n))


def build_model(cfg: MaternConfig) -> MaternEstimator:
    """The estimator for this config; deterministic given the config (checkpoints rely on it)."""
    free = cfg.free_params()
    lows, highs = zip(*(getattr(cfg.prior, name).log_bounds() for name in free))
    lo, hi = torch.tensor(lows), torch.tensor(highs)
    return MaternEstimator(
        cfg.model, cfg.graph, len(free), (lo + hi) / 2, (hi - lo) / 2,
        length_scale=typical_edge_length(cfg), spacetime=cfg.data.spacetime,
        time_scale=1.0 / max(cfg.data.n_times - 1, 1),
    )


def graphs_for(cfg: MaternConfig, fields: FieldSet) -> list[FieldGraph]:
    return build_graphs(fields.coords, cfg.graph, fields.times)


def train(
    cfg: MaternConfig,
    model: MaternEstimator,
    ctx: RunContext,
    evaluate: Callable[[int], Mapping[str, float]],
    *,
    rng: np.random.Generator,
    device: torch.device,
) -> list[dict[str, float]]:
    """Train ``model``; after each epoch call ``evaluate`` and report its metrics.

    On the fly, every ``data.reuse_epochs`` epochs simulate ``data.train_size`` fresh fields (on a CPU a
    field costs more to simulate than to train on, so a few passes over each set buy more steps);
    ``fixed`` simulates that many once and reuses them. Stops early once ``train.max_seconds`` have passed (after a whole epoch).
    ``ctx.report`` may raise ``optuna.TrialPruned``; it is let through.
    """
    free = cfg.free_params()
    opt = make_optimizer(cfg.optim.name, model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    epochs = cfg.train.epochs
    budget = cfg.train.max_seconds
    fixed_set: tuple[FieldSet, list[FieldGraph]] | None = None
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    step = 0
    for epoch in range(epochs):
        fresh = cfg.data.simulation == "on_the_fly" and epoch % cfg.data.reuse_epochs == 0
        if fixed_set is None or fresh:
            fs = simulate(cfg, cfg.data.train_size, rng, device=device)
            fixed_set = (fs, graphs_for(cfg, fs))
        fields, graphs = fixed_set
        model.train()
        order = rng.permutation(len(fields))
        total, count = 0.0, 0
        for b in range(0, len(order), cfg.train.batch_size):
            lr = cfg.optim.lr
            if cfg.train.lr_decay:
                # Cosine decay over the epochs, or over the time budget when that ends first.
                frac = (epoch + b / len(order)) / epochs
                if budget:
                    frac = max(frac, (time.perf_counter() - start) / budget)
                lr *= 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
            if step < cfg.train.warmup_steps:  # linear warm-up: early steps at the full rate can derail Adam
                lr *= (step + 1) / cfg.train.warmup_steps
            for group in opt.param_groups:
                group["lr"] = lr
            idx = order[b: b + cfg.train.batch_size]
            batch = collate(fields, graphs, free, idx).to(device)
            target = batch.target
            if target is None:
                raise ValueError("training fields must carry their parameters")
            point, interval = model(batch)
            loss = estimator_loss(point, interval, target, model.center, model.half_width, level=cfg.eval.level,
                                  quantile_weight=cfg.train.quantile_weight, point_loss=cfg.train.point_loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            value = check_finite(loss, step)
            total += value * len(idx)
            count += len(idx)
            step += 1
        metrics = dict(evaluate(epoch))
        row = {"epoch": float(epoch), "loss": total / max(count, 1), "seconds": time.perf_counter() - start, **metrics}
        history.append(row)
        shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        ctx.log(f"epoch {epoch + 1}/{epochs} loss={row['loss']:.4g} {shown} ({row['seconds']:.0f} s)")
        ctx.report(epoch, metrics)
        if budget is not None and row["seconds"] > budget:
            ctx.log(f"stopping after epoch {epoch + 1}: train.max_seconds={budget} reached")
            break
    return history
