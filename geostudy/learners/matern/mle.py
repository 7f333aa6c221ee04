"""Exact-likelihood MLE baseline: scipy L-BFGS-B on the Gaussian negative log-likelihood (or on
Vecchia's approximation of it for large fields, ``vecchia.py``).

Same parametrisation as the network (log range, log time range, log variance, log nugget); the
parameters the config fixes stay at their values, as the network also knows them. Gradients come from
torch autograd in float64 for the closed-form smoothness values, finite differences otherwise.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import scipy.optimize as so
import torch

from geostudy.learners.matern.covariance import (
    is_closed_form,
    matern_correlation,
    pairwise_distances,
    single_thread,
)
from geostudy.learners.matern.vecchia import vecchia_nll, vecchia_structure


@dataclass
class MleResult:
    """One field's fit: log-parameters of the free parameters (name -> value), NLL, time, success."""

    log_params: dict[str, float]
    nll: float
    seconds: float
    success: bool
    evaluations: int


def field_covariance(
    log_params: Mapping[str, torch.Tensor | float],
    dist_s: torch.Tensor,
    nu: float,
    *,
    dist_t: torch.Tensor | None = None,
    nu_time: float = 0.5,
) -> torch.Tensor:
    """The ``(n, n)`` covariance the likelihood uses (arguments as :func:`negative_log_likelihood`).

    A jitter of ``1e-8`` times the variance keeps it positive definite without a nugget.
    """
    rho = torch.exp(torch.as_tensor(log_params["range"], dtype=dist_s.dtype))
    sigma2 = torch.exp(torch.as_tensor(log_params["variance"], dtype=dist_s.dtype))
    tau2 = torch.exp(torch.as_tensor(log_params["nugget"], dtype=dist_s.dtype))
    corr = matern_correlation(dist_s, rho, nu)
    if dist_t is not None:
        rho_t = torch.exp(torch.as_tensor(log_params["time_range"], dtype=dist_s.dtype))
        corr = corr * matern_correlation(dist_t, rho_t, nu_time)
    eye = torch.eye(dist_s.shape[-1], dtype=dist_s.dtype)
    return sigma2 * corr + (tau2 + 1e-8 * sigma2) * eye


def negative_log_likelihood(
    log_params: Mapping[str, torch.Tensor | float],
    values: torch.Tensor,
    dist_s: torch.Tensor,
    nu: float,
    *,
    dist_t: torch.Tensor | None = None,
    nu_time: float = 0.5,
) -> torch.Tensor:
    """Gaussian NLL (up to the constant) of ``m`` replicates ``values`` (m, n), zero mean.

    Args:
        log_params: ``range``, ``variance``, ``nugget`` (and ``time_range`` when ``dist_t`` is given), all logs;
            a nugget of ``-inf`` means none.
        dist_s: ``(n, n)`` spatial distances; ``dist_t``: ``(n, n)`` time lags for the space-time model.
    """
    cov = field_covariance(log_params, dist_s, nu, dist_t=dist_t, nu_time=nu_time)
    chol, info = torch.linalg.cholesky_ex(cov)
    if int(info) > 0:
        return torch.tensor(float("inf"), dtype=dist_s.dtype)
    m, n = values.shape[0], dist_s.shape[-1]
    alpha = torch.linalg.solve_triangular(chol, values.T, upper=False)
    logdet = 2.0 * torch.log(torch.diagonal(chol)).sum()
    return 0.5 * (m * logdet + (alpha * alpha).sum()) + 0.5 * m * n * math.log(2 * math.pi)


class LikelihoodInputs(NamedTuple):
    """One field as the likelihood takes it: values ``(m, n)``, distances, logs of the fixed parameters."""

    values: torch.Tensor
    dist_s: torch.Tensor
    dist_t: torch.Tensor | None
    fixed_logs: dict[str, float]


def likelihood_inputs(coords: np.ndarray, values: np.ndarray, times: np.ndarray | None,
                      fixed: Mapping[str, float]) -> LikelihoodInputs:
    """Float64 tensors of a field and the logs of its ``fixed`` parameter values (``-inf`` for a zero)."""
    z = torch.as_tensor(np.atleast_2d(values), dtype=torch.float64)
    dist_s = pairwise_distances(torch.as_tensor(coords, dtype=torch.float64))
    dist_t = None
    if times is not None:
        tt = torch.as_tensor(times, dtype=torch.float64)
        dist_t = (tt[:, None] - tt[None, :]).abs()
    fixed_logs = {k: (math.log(v) if v > 0 else -math.inf) for k, v in fixed.items()}
    return LikelihoodInputs(z, dist_s, dist_t, fixed_logs)


def fit_mle(
    coords: np.ndarray,
    values: np.ndarray,
    *,
    nu: float,
    free: Sequence[str],
    fixed: Mapping[str, float],
    bounds: Mapping[str, tuple[float, float]],
    start: Mapping[str, float] | None = None,
    times: np.ndarray | None = None,
    nu_time: float = 0.5,
    max_iter: int = 200,
    vecchia_neighbors: int | None = None,
) -> MleResult:
    """Maximise the exact likelihood of one field (or Vecchia's approximation) over the free log-parameters.

    Args:
        coords: ``(n, 2)`` locations; ``values``: ``(m, n)`` replicates (or ``(n,)``).
        free: Names of the estimated parameters (``range``, ``variance``, ``nugget``, ``time_range``).
        fixed: Values (not logs) of the others; a fixed nugget of 0 is allowed.
        bounds: Log-scale box for each free parameter.
        start: Optional log starting values; by default the middle of ``bounds`` for ranges and the
            sample variance for variance/nugget.
        times: ``(n,)`` node times for the space-time model.
        vecchia_neighbors: Maximise Vecchia's likelihood with this many conditioning neighbours instead
            (``vecchia.py``; spatial fields only): ``O(n m^3)`` per evaluation instead of ``O(n^3)``.
    """
    t0 = time.perf_counter()
    if vecchia_neighbors is not None:
        if times is not None:
            raise ValueError("Vecchia's likelihood is for spatial fields; use the exact one with times")
        z = torch.as_tensor(np.atleast_2d(values), dtype=torch.float64)
        struct = vecchia_structure(coords, vecchia_neighbors)
        fixed_logs = {k: (math.log(v) if v > 0 else -math.inf) for k, v in fixed.items()}
    else:
        z, dist_s, dist_t, fixed_logs = likelihood_inputs(coords, values, times, fixed)
    var = float(z.var()) if z.numel() > 1 else 1.0
    x0 = []
    for name in free:
        lo, hi = bounds[name]
        if start is not None and name in start:
            guess = start[name]
        elif name == "variance":
            guess = math.log(max(var * (0.9 if "nugget" in free else 1.0), 1e-12))
        elif name == "nugget":
            guess = math.log(max(0.05 * var, 1e-12))
        else:
            guess = 0.5 * (lo + hi)
        x0.append(min(max(guess, lo), hi))
    autograd = is_closed_form(nu) and (times is None or is_closed_form(nu_time))
    evals = 0

    def objective(x: np.ndarray):
        nonlocal evals
        evals += 1
        theta = torch.tensor(x, dtype=torch.float64, requires_grad=autograd)
        params: dict[str, torch.Tensor | float] = dict(fixed_logs)
        for i, name in enumerate(free):
            params[name] = theta[i]
        if vecchia_neighbors is not None:
            nll = vecchia_nll(params, z, struct, nu)
        else:
            nll = negative_log_likelihood(params, z, dist_s, nu, dist_t=dist_t, nu_time=nu_time)
        if not torch.isfinite(nll):
            return (1e30, np.zeros_like(x)) if autograd else 1e30
        if not autograd:
            return float(nll)
        (grad,) = torch.autograd.grad(nll, theta)
        return float(nll.detach()), grad.numpy().copy()

    # One thread: a 256 x 256 Cholesky gains little from two, and on a shared CPU two were ~8x slower.
    with single_thread():
        res = so.minimize(objective, np.asarray(x0), jac=autograd, method="L-BFGS-B",
                          bounds=[bounds[name] for name in free], options={"maxiter": max_iter})
    return MleResult(
        log_params={name: float(res.x[i]) for i, name in enumerate(free)},
        nll=float(res.fun),
        seconds=time.perf_counter() - t0,
        success=bool(res.success),
        evaluations=evals,
    )
