"""Least squares of the Mogi forward model plus nuisance terms on a user's map, and its intervals.

Parameters: the source ``p = (x0 km, y0 km, ln depth km, log10 ΔV)`` (logs keep depth and ΔV
positive and the problem well scaled) and the nuisance terms, linear in the model: an offset and a
planar ramp ``a·x + b·y`` (x, y in km from the map's centre). The model of pixel i is

    m_i = e_i · u(x_i, y_i; p) + offset + a x_i + b y_i

with ``u`` the Mogi displacement and ``e_i`` the unit vector to the satellite (one per pixel or
one for all). The Jacobian is analytic: with X = x − x0, Y = y − y0, D the depth (all m),
R² = X² + Y² + D², c = (1 − ν) ΔV / (π R³) and g = e · (X, Y, D), the LOS is c g and

    ∂/∂x0 = 3 c X g / R² − c e_E,   ∂/∂y0 = 3 c Y g / R² − c e_N,   ∂/∂D = −3 c D g / R² + c e_U.

:func:`fit_source` runs ``scipy.optimize.least_squares`` (Levenberg–Marquardt) from a start (the
network's estimate in ``mode: invert``). Its intervals (:func:`sandwich_covariance`) are the
linearised covariance of the least-squares estimate under the noise the residual shows:

    Cov(p̂) = (JᵀJ)⁻¹ Jᵀ Ĉ J (JᵀJ)⁻¹,

with Ĉ the stationary covariance of the residual image, estimated from its empirical
autocovariance by FFT (lags up to a third of the map, tapered, its spectrum clipped at zero so that
Ĉ stays positive semi-definite). InSAR noise is spatially correlated (atmosphere): the white-noise
formula s² (JᵀJ)⁻¹ would give intervals several times too narrow. The bench checks the coverage.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares
from scipy.stats import norm

SOURCE = ("x0_km", "y0_km", "depth_km", "dv_m3")
NUISANCE = ("offset", "ramp_x", "ramp_y")


def nuisance_design(x_km: np.ndarray, y_km: np.ndarray, offset: bool, ramp: bool) -> tuple[np.ndarray, list[str]]:
    """Columns ``(N, k)`` of the enabled nuisance terms and their names."""
    cols, names = [], []
    if offset:
        cols.append(np.ones_like(x_km))
        names.append("offset")
    if ramp:
        cols += [x_km, y_km]
        names += ["ramp_x", "ramp_y"]
    return (np.stack(cols, axis=1) if cols else np.zeros((len(x_km), 0))), names


def source_los(p: np.ndarray, x_km: np.ndarray, y_km: np.ndarray, e: np.ndarray, nu: float,
               jacobian: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """LOS (m) of the source ``p = (x0, y0, ln depth, log10 ΔV)`` at points; with its ``(N, 4)`` Jacobian."""
    x0, y0, ln_d, log_dv = (float(v) for v in p)
    d, dv = math.exp(ln_d), 10.0 ** log_dv
    X, Y, D = (x_km - x0) * 1000.0, (y_km - y0) * 1000.0, d * 1000.0
    r2 = X * X + Y * Y + D * D
    c = (1.0 - nu) * dv / (math.pi * r2 * np.sqrt(r2))
    eE, eN, eU = e[0], e[1], e[2]
    g = eE * X + eN * Y + eU * D
    los = c * g
    if not jacobian:
        return los, None
    a = 3.0 * los / r2
    jac = np.stack([
        (a * X - c * eE) * 1000.0,  # per km of x0
        (a * Y - c * eN) * 1000.0,
        (-a * D + c * eU) * D,  # d/d ln D = D d/dD
        los * math.log(10.0),
    ], axis=1)
    return los, jac


@dataclass
class FitResult:
    """A fitted source (physical units), the nuisance coefficients, the residual and the covariance of ``p``."""

    p: np.ndarray  # x0 km, y0 km, ln depth km, log10 ΔV, then nuisance coefficients
    names: list[str]
    residual: np.ndarray  # data − model at the fitted points
    jac: np.ndarray
    nfev: int

    @property
    def source(self) -> dict[str, float]:
        return {"x0_km": float(self.p[0]), "y0_km": float(self.p[1]), "depth_km": math.exp(self.p[2]),
                "dv_m3": 10.0 ** float(self.p[3])}

    @property
    def nuisance(self) -> dict[str, float]:
        return {n: float(v) for n, v in zip(self.names[4:], self.p[4:])}


def start_vector(start: Mapping[str, float]) -> np.ndarray:
    return np.array([start["x0_km"], start["y0_km"], math.log(max(start["depth_km"], 1e-3)),
                     math.log10(max(start["dv_m3"], 1.0))])


def fit_source(x_km: np.ndarray, y_km: np.ndarray, data: np.ndarray, e: np.ndarray, start: Mapping[str, float],
               nuisance_start: Mapping[str, float], *, offset: bool, ramp: bool, nu: float = 0.25) -> FitResult:
    """Levenberg–Marquardt fit of source + nuisance to ``data`` (m) at points ``(x_km, y_km)``.

    Args:
        e: ``(3,)`` or ``(3, N)`` unit vectors to the satellite at the points.
        start: Source start (``x0_km``, ``y0_km``, ``depth_km``, ``dv_m3``).
        nuisance_start: Starting nuisance coefficients by name (missing: 0).
    """
    design, nnames = nuisance_design(x_km, y_km, offset, ramp)
    p0 = np.concatenate([start_vector(start), [nuisance_start.get(n, 0.0) for n in nnames]])

    def residual(p: np.ndarray) -> np.ndarray:
        return source_los(p[:4], x_km, y_km, e, nu)[0] + design @ p[4:] - data

    def jacobian(p: np.ndarray) -> np.ndarray:
        return np.hstack([source_los(p[:4], x_km, y_km, e, nu, jacobian=True)[1], design])

    result = least_squares(residual, p0, jac=jacobian, method="lm", x_scale="jac")
    return FitResult(result.x, list(SOURCE) + nnames, -result.fun, result.jac, int(result.nfev))


def residual_kernel(resid: np.ndarray, valid: np.ndarray, max_lag_fraction: float = 1 / 3) -> np.ndarray:
    """Spectrum (rfft2 on a grid padded to twice the map) of the residual's tapered autocovariance, clipped ≥ 0."""
    ny, nx = resid.shape
    shape = (2 * ny, 2 * nx)
    r = np.where(valid, resid - resid[valid].mean(), 0.0)
    m = valid.astype(np.float64)
    prod = np.fft.irfft2(np.abs(np.fft.rfft2(r, shape)) ** 2, shape)
    count = np.fft.irfft2(np.abs(np.fft.rfft2(m, shape)) ** 2, shape)
    enough = count > max(0.05 * valid.sum(), 10.0)
    cov = np.where(enough, prod / np.where(enough, count, 1.0), 0.0)
    lag_y = np.minimum(np.arange(shape[0]), shape[0] - np.arange(shape[0]))[:, None] / ny
    lag_x = np.minimum(np.arange(shape[1]), shape[1] - np.arange(shape[1]))[None, :] / nx
    h = np.sqrt(lag_x**2 + lag_y**2) / max_lag_fraction
    taper = np.where(h < 1.0, 0.5 * (1.0 + np.cos(np.pi * np.minimum(h, 1.0))), 0.0)  # Hann: smooth to 0
    return np.clip(np.fft.rfft2(cov * taper).real, 0.0, None)


def sandwich_covariance(jac: np.ndarray, resid: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``(JᵀJ)⁻¹ Jᵀ Ĉ J (JᵀJ)⁻¹`` for the fitted points ``valid`` of an image (module docstring)."""
    ny, nx = valid.shape
    shape = (2 * ny, 2 * nx)
    image = np.zeros(valid.shape)
    image[valid] = resid
    kernel = residual_kernel(image, valid)
    cols = []
    for j in range(jac.shape[1]):
        image = np.zeros(valid.shape)
        image[valid] = jac[:, j]
        cols.append(np.fft.rfft2(image, shape))
    cj = [np.fft.irfft2(f * kernel, shape)[:ny, :nx][valid] for f in cols]
    meat = jac.T @ np.stack(cj, axis=1)
    meat = 0.5 * (meat + meat.T)
    bread = np.linalg.pinv(jac.T @ jac)
    return bread @ meat @ bread


def intervals(p: np.ndarray, cov: np.ndarray, level: float) -> dict[str, tuple[float, float]]:
    """Central ``level`` intervals of the source parameters in physical units (depth, ΔV back from their logs)."""
    z = float(norm.ppf(0.5 + level / 2))
    sd = np.sqrt(np.clip(np.diag(cov)[:4], 0.0, None))
    lo, hi = p[:4] - z * sd, p[:4] + z * sd
    return {"x0_km": (float(lo[0]), float(hi[0])), "y0_km": (float(lo[1]), float(hi[1])),
            "depth_km": (math.exp(lo[2]), math.exp(hi[2])), "dv_m3": (10.0 ** float(lo[3]), 10.0 ** float(hi[3]))}
