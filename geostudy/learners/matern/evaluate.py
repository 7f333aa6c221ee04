"""Prediction in batches, its refinement, the MLE over a set of fields, and the per-parameter metrics."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from geostudy.learners.matern.config import MaternConfig
from geostudy.learners.matern.covariance import single_thread
from geostudy.learners.matern.data import FieldGraph, build_graphs, collate
from geostudy.learners.matern.mle import fit_mle
from geostudy.learners.matern.model import MaternEstimator
from geostudy.learners.matern.priors import LOG_NAMES
from geostudy.learners.matern.refine import fisher_scoring, wald_interval
from geostudy.learners.matern.simulate import FieldSet


@dataclass
class Estimates:
    """Log-scale estimates of the free parameters: ``point`` (B, P), optional ``interval`` (B, P, 2)."""

    point: np.ndarray
    interval: np.ndarray | None
    seconds: float


@torch.no_grad()
def predict(
    model: MaternEstimator,
    cfg: MaternConfig,
    fields: FieldSet,
    *,
    graphs: list[FieldGraph] | None = None,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> Estimates:
    """Estimate every field; builds the graphs when not given (and counts that time)."""
    model.eval()
    t0 = time.perf_counter()
    if graphs is None:
        graphs = build_graphs(fields.coords, cfg.graph, fields.times)
    points, intervals = [], []
    for start in range(0, len(fields), batch_size):
        idx = np.arange(start, min(start + batch_size, len(fields)))
        batch = collate(fields, graphs, None, idx).to(device)
        point, interval = model(batch)
        points.append(point.cpu().numpy())
        if interval is not None:
            intervals.append(interval.cpu().numpy())
    return Estimates(
        point=np.concatenate(points).astype(np.float64),
        interval=np.concatenate(intervals).astype(np.float64) if intervals else None,
        seconds=time.perf_counter() - t0,
    )


def mle_bounds(cfg: MaternConfig) -> dict[str, tuple[float, float]]:
    """Log-scale box of the MLE: the prior's support, or that widened by a factor 10 each way."""
    widen = math.log(10.0) if cfg.eval.mle_bounds == "wide" else 0.0
    out = {}
    for name in cfg.free_params():
        lo, hi = getattr(cfg.prior, name).log_bounds()
        out[name] = (lo - widen, hi + widen)
    return out


def run_mle(cfg: MaternConfig, fields: FieldSet, *, limit: int | None = None) -> Estimates:
    """MLE of the free parameters of the first ``limit`` fields: exact likelihood, or Vecchia's for large
    fields (``eval.likelihood``)."""
    free = cfg.free_params()
    fixed = {name: getattr(cfg.prior, name).value for name in cfg.param_names() if name not in free}
    bounds = mle_bounds(cfg)
    count = len(fields) if limit is None else min(limit, len(fields))
    out = np.zeros((count, len(free)))
    t0 = time.perf_counter()
    for i in range(count):
        res = fit_mle(
            fields.coords[i], fields.values[i], nu=cfg.data.nu, free=free, fixed=fixed, bounds=bounds,
            times=None if fields.times is None else fields.times[i], nu_time=cfg.data.nu_time,
            vecchia_neighbors=cfg.eval.vecchia_neighbors_for(len(fields.coords[i]), fields.times is not None),
        )
        out[i] = [res.log_params[name] for name in free]
    return Estimates(point=out, interval=None, seconds=time.perf_counter() - t0)


def refine(cfg: MaternConfig, fields: FieldSet, est: Estimates, steps: int) -> Estimates:
    """The network's point estimates after ``steps`` Fisher-scoring steps on each field's exact likelihood
    (Vecchia's for large fields, ``eval.likelihood``).

    The intervals are the Wald intervals of the likelihood at level ``eval.level`` (from the scoring's own
    information matrix); ``seconds`` adds the refinement's time to the network's.
    """
    free = cfg.free_params()
    fixed = {name: getattr(cfg.prior, name).value for name in cfg.param_names() if name not in free}
    bounds = mle_bounds(cfg)
    point = np.zeros_like(est.point)
    interval = np.zeros((*est.point.shape, 2))
    t0 = time.perf_counter()
    with single_thread():
        for i in range(len(est.point)):
            scored = fisher_scoring(fields.coords[i], fields.values[i], est.point[i], nu=cfg.data.nu, free=free,
                                    fixed=fixed, bounds=bounds, times=None if fields.times is None else fields.times[i],
                                    nu_time=cfg.data.nu_time, steps=steps,
                                    vecchia_neighbors=cfg.eval.vecchia_neighbors_for(len(fields.coords[i]),
                                                                                     fields.times is not None))
            point[i] = scored.log_params
            interval[i] = wald_interval(scored.log_params, scored.information, cfg.eval.level)
    return Estimates(point=point, interval=interval, seconds=est.seconds + time.perf_counter() - t0)


def true_log_params(fields: FieldSet, free: list[str], count: int | None = None) -> np.ndarray:
    cols = [np.log(fields.params[name]) for name in free]
    arr = np.stack(cols, axis=1)
    return arr if count is None else arr[:count]


def param_metrics(est: Estimates, truth: np.ndarray, free: list[str], prefix: str) -> dict[str, float]:
    """RMSE, MAE, bias (log scale) and interval coverage per parameter; RMSE of the range in its units."""
    out: dict[str, float] = {}
    n = min(len(truth), len(est.point))
    err = est.point[:n] - truth[:n]
    for j, name in enumerate(free):
        key = LOG_NAMES[name]
        out[f"{prefix}rmse_{key}"] = float(np.sqrt(np.mean(err[:, j] ** 2)))
        out[f"{prefix}mae_{key}"] = float(np.mean(np.abs(err[:, j])))
        out[f"{prefix}bias_{key}"] = float(np.mean(err[:, j]))
        if est.interval is not None:
            lo, hi = est.interval[:n, j, 0], est.interval[:n, j, 1]
            out[f"{prefix}coverage_{key}"] = float(np.mean((truth[:n, j] >= lo) & (truth[:n, j] <= hi)))
    if "range" in free:
        j = free.index("range")
        out[f"{prefix}rmse_range"] = float(np.sqrt(np.mean((np.exp(est.point[:n, j]) - np.exp(truth[:n, j])) ** 2)))
    return out
