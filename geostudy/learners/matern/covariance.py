"""Matérn covariance: closed forms for nu = 0.5, 1.5, 2.5 and the Bessel form for any nu.

Convention (Stein / Rasmussen-Williams): with ``s = sqrt(2 nu) d / rho``,
``C(d) = sigma2 * 2^(1-nu) / Gamma(nu) * s^nu * K_nu(s)``, plus ``tau2`` on the diagonal (nugget).
Then nu = 0.5 is ``exp(-d/rho)``, nu = 1.5 is ``(1 + sqrt(3) d/rho) exp(-sqrt(3) d/rho)`` and nu = 2.5 is
``(1 + sqrt(5) d/rho + 5 d^2 / (3 rho^2)) exp(-sqrt(5) d/rho)``.

Everything is torch, batched over leading dimensions and differentiable in ``rho`` for the closed
forms (the MLE uses autograd). The general-nu branch goes through ``scipy.special.kv`` on NumPy and is
not differentiable; the MLE then uses finite differences.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import scipy.special as sp
import torch

from geostudy.nn.threads import torch_threads

CLOSED_FORM_NU = (0.5, 1.5, 2.5)


def is_closed_form(nu: float) -> bool:
    return any(abs(nu - v) < 1e-12 for v in CLOSED_FORM_NU)


def matern_correlation(d: torch.Tensor, rho: torch.Tensor | float, nu: float) -> torch.Tensor:
    """Matérn correlation of distances ``d`` at range ``rho`` (broadcast against ``d``).

    Args:
        d: Distances (any shape, >= 0).
        rho: Range (> 0), a float or a tensor broadcastable to ``d``.
        nu: Smoothness (> 0).
    """
    if not nu > 0:
        raise ValueError(f"nu must be > 0, but got {nu!r}")
    r = d / rho
    if abs(nu - 0.5) < 1e-12:
        return torch.exp(-r)
    if abs(nu - 1.5) < 1e-12:
        s = math.sqrt(3.0) * r
        return (1.0 + s) * torch.exp(-s)
    if abs(nu - 2.5) < 1e-12:
        s = math.sqrt(5.0) * r
        return (1.0 + s + s * s / 3.0) * torch.exp(-s)
    return matern_correlation_bessel(r.detach(), nu).to(d)


def matern_correlation_bessel(r: torch.Tensor | np.ndarray, nu: float) -> torch.Tensor:
    """General-nu Matérn correlation of scaled distances ``r = d / rho`` via ``scipy.special.kv``."""
    r_np = r.cpu().numpy() if isinstance(r, torch.Tensor) else np.asarray(r, dtype=np.float64)
    s = np.sqrt(2.0 * nu) * np.asarray(r_np, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        out = (2.0 ** (1.0 - nu) / sp.gamma(nu)) * np.power(s, nu) * sp.kv(nu, s)
    out = np.where(s < 1e-12, 1.0, out)  # the limit at d = 0
    out = np.nan_to_num(out, nan=0.0, posinf=1.0)  # kv underflows to 0 far away
    return torch.from_numpy(out)


def pairwise_distances(coords: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between all points: ``(..., n, d)`` -> ``(..., n, n)``, exact zeros on the diagonal.

    Not the matmul shortcut (``|x|^2 + |y|^2 - 2xy``), which loses the small distances that matter here.
    """
    return torch.cdist(coords, coords, compute_mode="donot_use_mm_for_euclid_dist")


def matern_covariance(
    coords: torch.Tensor,
    rho: torch.Tensor | float,
    sigma2: torch.Tensor | float,
    nu: float,
    tau2: torch.Tensor | float = 0.0,
    *,
    dist: torch.Tensor | None = None,
) -> torch.Tensor:
    """Covariance matrix of a Matérn field (plus nugget) at ``coords``.

    Args:
        coords: ``(..., n, d)`` locations; batched over leading dims.
        rho, sigma2, tau2: Range, variance and nugget; floats or tensors of the batch shape.
        nu: Smoothness (shared).
        dist: Precomputed ``pairwise_distances(coords)`` (saves work in an optimisation loop).
    """
    d = pairwise_distances(coords) if dist is None else dist
    rho_t = _batch_param(rho, d)
    sigma2_t = _batch_param(sigma2, d)
    tau2_t = _batch_param(tau2, d)
    cov = sigma2_t * matern_correlation(d, rho_t, nu)
    eye = torch.eye(d.shape[-1], dtype=d.dtype, device=d.device)
    return cov + tau2_t * eye


def separable_covariance(
    coords: torch.Tensor,
    times: torch.Tensor,
    rho_s: torch.Tensor | float,
    rho_t: torch.Tensor | float,
    sigma2: torch.Tensor | float,
    nu: float,
    nu_t: float,
    tau2: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """Separable space x time Matérn: ``sigma2 * C_s(|dx|/rho_s) * C_t(|dt|/rho_t) + tau2 I``.

    Args:
        coords: ``(..., n, 2)`` spatial coordinates of every node (a node is one site at one time).
        times: ``(..., n)`` times of every node.
    """
    ds = pairwise_distances(coords)
    dt = (times.unsqueeze(-1) - times.unsqueeze(-2)).abs()
    cs = matern_correlation(ds, _batch_param(rho_s, ds), nu)
    ct = matern_correlation(dt, _batch_param(rho_t, dt), nu_t)
    eye = torch.eye(ds.shape[-1], dtype=ds.dtype, device=ds.device)
    return _batch_param(sigma2, ds) * cs * ct + _batch_param(tau2, ds) * eye


def _batch_param(value: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor | float:
    """A per-batch parameter reshaped to broadcast against a ``(..., n, n)`` matrix."""
    if isinstance(value, torch.Tensor):
        value = value.to(like)
        if value.dim() > 0:
            return value.reshape(*value.shape, 1, 1)
    return value


def single_thread(device: torch.device | str = "cpu") -> contextlib.AbstractContextManager[None]:
    """Run small LAPACK calls on one CPU thread.

    A batched Cholesky of 256 x 256 matrices is a loop of small calls; with two threads on a shared
    CPU each call was ~8x slower here (thread contention) than on one.
    """
    return torch_threads(1 if torch.device(device).type == "cpu" else None)


def cholesky_jitter(cov: torch.Tensor, *, jitter: float = 1e-10, tries: int = 6) -> torch.Tensor:
    """Batched Cholesky; adds growing jitter (relative to the diagonal) when a matrix fails."""
    with single_thread(cov.device):
        return _cholesky_jitter(cov, jitter, tries)


def _cholesky_jitter(cov: torch.Tensor, jitter: float, tries: int) -> torch.Tensor:
    scale = cov.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1e-300)
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    eps = jitter
    for _ in range(tries):
        chol, info = torch.linalg.cholesky_ex(cov + (eps * scale)[..., None, None] * eye)
        if not bool((info > 0).any()):
            return chol
        eps *= 100.0
    raise ValueError("covariance is not positive definite even with jitter; check the parameters")
