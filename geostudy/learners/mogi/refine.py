"""Least squares of the Mogi forward model plus nuisance terms on a user's map, and its intervals.

Parameters: the source ``p = (x0 km, y0 km, ln depth km, log10 ΔV)`` (logs keep depth and ΔV
positive and the problem well scaled) and the nuisance terms, linear in the model: an offset and a
planar ramp ``a·x + b·y`` (x, y in km from the map's centre). The model of pixel i is

    m_i = e_i · u(x_i, y_i; p) + offset + a x_i + b y_i

with ``u`` the Mogi displacement and ``e_i`` the unit vector to the satellite (one per pixel or
one for all). The Jacobian is analytic: with X = x − x0, Y = y − y0, D the depth (all m),
R² = X² + Y² + D², c = (1 − ν) ΔV / (π R³) and g = e · (X, Y, D), the LOS is c g and

    ∂/∂x0 = 3 c X g / R² − c e_E,   ∂/∂y0 = 3 c Y g / R² − c e_N,   ∂/∂D = −3 c D g / R² + c e_U.

:func:`fit_source` runs Levenberg–Marquardt (:func:`levenberg_marquardt`) from a start (the
network's estimate in ``mode: invert``). Its intervals (:func:`sandwich_covariance`) are the
linearised covariance of the least-squares estimate under the noise the residual shows:

    Cov(p̂) = (JᵀJ)⁻¹ Jᵀ Ĉ J (JᵀJ)⁻¹,

with Ĉ the stationary covariance of the noise: an exponential covariance plus a nugget (white
noise) fitted to the residual's empirical autocovariance with the fit's own projection accounted
for (:func:`fit_residual_covariance`), its spectrum clipped at zero so that Ĉ stays positive
semi-definite. InSAR noise is spatially correlated (atmosphere): the white-noise
formula s² (JᵀJ)⁻¹ would give intervals several times too narrow. The bench checks the coverage.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft
from scipy.stats import norm

SOURCE = ("x0_km", "y0_km", "depth_km", "dv_m3")
NUISANCE = ("offset", "ramp_x", "ramp_y")
COVARIANCE_SIDE = 16  # the residual covariance is fitted on a subsample of at most this many pixels a side (speed)
COVARIANCE_LENGTHS = 5  # candidate correlation lengths (geometric, 0.3 px to half the subsample's side)


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


class SourceModel:
    """LOS of a source at fixed points, the Jacobian from the same intermediates (one fit evaluates many
    ``p`` at the same points: coordinates in metres and, for one unit vector, ``e_E x + e_N y`` are
    computed once)."""

    def __init__(self, x_km: np.ndarray, y_km: np.ndarray, e: np.ndarray, nu: float) -> None:
        self.xm, self.ym = x_km * 1000.0, y_km * 1000.0
        self.e, self.k = e, (1.0 - nu) / math.pi
        self.base = e[0] * self.xm + e[1] * self.ym if e.ndim == 1 else None
        self._last: tuple[np.ndarray, np.ndarray, float, np.ndarray, np.ndarray, np.ndarray] | None = None

    def los(self, p: np.ndarray) -> np.ndarray:
        """LOS (m) of the source ``p = (x0, y0, ln depth, log10 ΔV)``; kept for :meth:`jacobian`."""
        x0, y0 = float(p[0]) * 1000.0, float(p[1]) * 1000.0
        d = math.exp(float(p[2])) * 1000.0
        X, Y = self.xm - x0, self.ym - y0
        r2 = X * X
        r2 += Y * Y  # in place (small arrays, many calls: allocations count), the same sums in the same order
        r2 += d * d
        c = np.sqrt(r2)
        c *= r2
        np.divide(self.k * 10.0 ** float(p[3]), c, out=c)  # (1 - ν) ΔV / (π R³)
        e = self.e
        if self.base is not None:  # e · (X, Y, D) with one e: a shift of the precomputed e_E x + e_N y
            g = self.base - (float(e[0]) * x0 + float(e[1]) * y0)
            g += float(e[2]) * d
        else:
            g = e[0] * X + e[1] * Y + e[2] * d
        los = c * g
        self._last = (X, Y, d, r2, c, los)
        return los

    def jacobian(self, extra: np.ndarray | None = None) -> np.ndarray:
        """``(N, 4)`` derivatives of the last :meth:`los` by x0, y0 (per km), ln depth and log10 ΔV, then the
        columns ``extra.T`` (``extra``: ``(k, N)``); a transposed view of a row-major ``(4 + k, N)`` array
        (rows are written and read contiguously, ``JᵀJ`` is one BLAS call on them)."""
        if self._last is None:
            raise RuntimeError("SourceModel.jacobian() needs a los() first")
        X, Y, d, r2, c, los = self._last
        e = self.e
        a = 3.0 * los / r2
        rows = np.empty((4 + (0 if extra is None else len(extra)), len(los)))
        rows[0] = (a * X - c * e[0]) * 1000.0  # per km of x0
        rows[1] = (a * Y - c * e[1]) * 1000.0
        rows[2] = (c * e[2] - a * d) * d  # d/d ln D = D d/dD
        rows[3] = los * math.log(10.0)
        if extra is not None:
            rows[4:] = extra
        return rows.T


def source_los(p: np.ndarray, x_km: np.ndarray, y_km: np.ndarray, e: np.ndarray, nu: float,
               jacobian: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """LOS (m) of the source ``p = (x0, y0, ln depth, log10 ΔV)`` at points; with its ``(N, 4)`` Jacobian."""
    model = SourceModel(x_km, y_km, e, nu)
    los = model.los(p)
    return los, (model.jacobian() if jacobian else None)


@dataclass
class FitResult:
    """A fitted source (physical units), the nuisance coefficients, the residual and the covariance of ``p``."""

    p: np.ndarray  # x0 km, y0 km, ln depth km, log10 ΔV, then nuisance coefficients
    names: list[str]
    residual: np.ndarray  # data − model at the fitted points
    jac: np.ndarray
    nfev: int
    converged: bool  # False: stopped after the most steps allowed (or at a hopeless damping), still moving

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
    model = SourceModel(x_km, y_km, e, nu)
    design_rows = np.ascontiguousarray(design.T)

    def residual(p: np.ndarray) -> np.ndarray:
        return model.los(p[:4]) + design @ p[4:] - data

    def jacobian() -> np.ndarray:
        return model.jacobian(design_rows)

    p, r, jac, nfev, converged = levenberg_marquardt(residual, jacobian, p0)
    return FitResult(p, list(SOURCE) + nnames, -r, jac, nfev, converged)


def levenberg_marquardt(residual: Callable[[np.ndarray], np.ndarray], jacobian: Callable[[], np.ndarray],
                        p0: np.ndarray, max_iter: int = 12,
                        tol: float = 1e-6) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, bool]:
    """Minimise ``|r(p)|²`` with Marquardt's scaled damping; ``jacobian()`` is that of the last ``residual(p)``.

    A few lines of numpy rather than ``scipy.optimize.least_squares``: from the network's start it
    converges in a handful of steps, with the analytic Jacobian computed from the residual's own
    intermediates and only at accepted steps (a rejected step only raises the damping). It stops
    when the cost falls by less than ``tol`` (relative; 1e-6 moves the estimate by a few hundredths
    of its standard deviation) or after ``max_iter`` steps: a fit still wandering then is one that
    ``mode: invert`` leaves out (implausible, or not sharper than the network).

    Returns:
        ``(p, residual, jacobian, evaluations, converged)`` at the solution.
    """
    p = np.asarray(p0, dtype=np.float64)
    r = residual(p)
    jac = jacobian()
    cost, lam, nfev = float(r @ r), 1e-3, 1
    for _ in range(max_iter):
        a, g = jac.T @ jac, jac.T @ r
        scale = np.maximum(np.diag(a), 1e-30)
        try:
            step = np.linalg.solve(a + lam * np.diag(scale), -g)
        except np.linalg.LinAlgError:
            lam *= 10.0
            continue
        p_new = p + step
        r_new = residual(p_new)
        nfev += 1
        cost_new = float(r_new @ r_new)
        if np.isfinite(cost_new) and cost_new <= cost:
            done = cost - cost_new <= tol * cost or bool(np.all(np.abs(step) <= 1e-7 * (np.abs(p) + 1e-7)))
            p, r, jac, cost = p_new, r_new, jacobian(), cost_new
            lam = max(lam / 3.0, 1e-12)
            if done:
                return p, r, jac, nfev, True
        else:
            lam *= 4.0
            if lam > 1e12:
                break
    return p, r, jac, nfev, False


def _padded(shape: tuple[int, ...]) -> tuple[int, int]:
    """FFT grid for linear (not circular) correlations of an image: at least twice each side, fast sizes."""
    return sfft.next_fast_len(2 * shape[0], real=True), sfft.next_fast_len(2 * shape[1], real=True)


@functools.lru_cache(maxsize=8)
def _lags(shape: tuple[int, int]) -> np.ndarray:
    """Distance (pixels) of each cell of a periodic grid from cell (0, 0) (cached: read only)."""
    ly = np.minimum(np.arange(shape[0]), shape[0] - np.arange(shape[0]))[:, None]
    lx = np.minimum(np.arange(shape[1]), shape[1] - np.arange(shape[1]))[None, :]
    return np.sqrt(lx**2 + ly**2)


@functools.lru_cache(maxsize=8)
def _kernels(shape: tuple[int, int], lengths: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lags, the exponential kernels ``exp(-h / length)`` and their rfft2 spectra (real) for each length
    (cached: the same map sizes come back, and these are read only)."""
    lag = _lags(shape)
    kernels = np.exp(-lag[None] / np.array(lengths)[:, None, None])
    return lag, kernels, sfft.rfft2(kernels).real


def _image(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    out = np.zeros(valid.shape)
    out[valid] = values
    return out


def fit_residual_covariance(jac: np.ndarray, resid: np.ndarray, valid: np.ndarray, n_lengths: int = 8,
                            max_side: int = 32) -> tuple[float, float, float]:
    """``(sill, length in pixels, nugget)`` of ``C(h) = sill exp(-h / length) + nugget [h = 0]`` from the residual.

    The residual of a least-squares fit is the noise with the fit's directions projected out,
    ``r = (I - H) ε`` with ``H = Q Qᵀ`` (Q an orthonormal basis of the Jacobian's columns): the fit
    absorbs the long-wavelength part of correlated noise (into the offset, the ramp, the source), so
    the raw empirical covariance of ``r`` underestimates the correlation length. The model fitted is
    therefore the expected empirical covariance of the projected noise,

        E Σ_{pairs at lag h} r_i r_j = Σ_pairs [C - HC - CH + HCH]_ij,

    computed for each candidate length by FFT (cross-correlations of Q's columns with C Q's), binned
    by lag up to half the map's smaller side; sill and nugget are its non-negative linear weights.
    For speed it works on every ``stride``-th row and column (at most ``max_side`` a side) and returns
    the length in pixels of the full map.
    """
    stride = max(1, math.ceil(max(valid.shape) / max_side))
    if stride > 1:
        sub = valid[::stride, ::stride]
        resid = _image(resid, valid)[::stride, ::stride][sub]
        jac = np.stack([_image(jac[:, k], valid)[::stride, ::stride][sub] for k in range(jac.shape[1])], axis=1)
        valid = sub
    ny, nx = valid.shape
    shape = _padded(valid.shape)

    def rfft(a: np.ndarray) -> np.ndarray:
        return sfft.rfft2(a, shape)

    def irfft(a: np.ndarray) -> np.ndarray:
        return sfft.irfft2(a, shape)

    q = np.linalg.qr(jac)[0]
    images = np.zeros((q.shape[1], ny, nx))
    images[:, valid] = q.T
    fq = rfft(images)  # (P, ...) all columns at once
    fm = rfft(valid.astype(np.float64))
    fr = rfft(_image(resid, valid))
    lengths = np.geomspace(0.3, max(min(ny, nx) / 2.0, 1.0), n_lengths)
    lag, kernels, fkernels = _kernels(shape, tuple(lengths.tolist()))
    bins = np.rint(lag).astype(int).ravel()
    use = np.flatnonzero(bins <= min(ny, nx) // 2)
    nb = int(bins.max()) + 1
    idx = bins[use]

    def binned(field: np.ndarray) -> np.ndarray:
        """Sums by integer lag of the last two axes; leading axes kept (one bincount for all)."""
        flat = field.reshape(-1, field.shape[-2] * field.shape[-1])[:, use]
        rows = np.arange(flat.shape[0])[:, None] * nb
        out = np.bincount((rows + idx).ravel(), weights=flat.ravel(), minlength=flat.shape[0] * nb)
        return out.reshape(*field.shape[:-2], nb)

    pairs = irfft(np.abs(fm) ** 2)
    count = binned(pairs)
    target = binned(irfft(np.abs(fr) ** 2))
    white = binned((lag == 0) * float(valid.sum()) - irfft(np.sum(np.abs(fq) ** 2, axis=0)))  # C = I: Σ_pairs (I - H)
    ok = count > 0.5
    w = 1.0 / np.sqrt(count[ok])  # per-pair averages weighted by the root of their counts
    # every candidate length at once: C Q on the valid pixels, then Σ_pairs [C - HC - CH + HCH] by lag
    cq = irfft(fq[None] * fkernels[:, None])[..., :ny, :nx] * valid  # (L, P, ny, nx)
    fcq = rfft(cq)
    m = q.T @ np.swapaxes(cq[..., valid], 1, 2)  # Qᵀ C Q per length, (L, P, P)
    cfq = np.conj(fq)
    hch = (m @ fq.reshape(len(fq), -1)).reshape(fcq.shape)  # (Qᵀ C Q) applied to Q's spectra, a BLAS product
    spectrum = np.sum(cfq * (2.0 * fcq - hch), axis=1).real  # the HCH part is a Hermitian form: real
    expected = binned(kernels * pairs - irfft(spectrum))  # (L, bins)
    design = np.stack([expected[:, ok], np.broadcast_to(white[ok], expected[:, ok].shape)], axis=2) * w[:, None]
    y = target[ok] * w
    # sill and nugget per length: the 2 x 2 normal equations of all lengths in one solve, clipped at 0
    gram = np.swapaxes(design, 1, 2) @ design
    gram += 1e-12 * np.trace(gram, axis1=1, axis2=2)[:, None, None] * np.eye(2)  # a singular length stays finite
    coef = np.clip(np.linalg.solve(gram, (np.swapaxes(design, 1, 2) @ y)[..., None])[..., 0], 0.0, None)
    sse = np.sum((np.einsum("lbk,lk->lb", design, coef) - y) ** 2, axis=1)
    k = int(np.argmin(np.where(np.isfinite(sse), sse, np.inf)))
    return float(coef[k, 0]), float(lengths[k]) * stride, float(coef[k, 1])


def residual_kernel(jac: np.ndarray, resid: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Spectrum (rfft2 on the :func:`_padded` grid) of the residual's fitted covariance, clipped ≥ 0."""
    shape = _padded(valid.shape)
    sill, length, nugget = fit_residual_covariance(jac, resid, valid, max_side=COVARIANCE_SIDE, n_lengths=COVARIANCE_LENGTHS)
    h = _lags(shape)
    cov = sill * np.exp(-h / length) + nugget * (h == 0)
    return np.clip(sfft.rfft2(cov).real, 0.0, None)


def _inverse(a: np.ndarray) -> np.ndarray:
    """Inverse of a small normal matrix ``JᵀJ``; the pseudo-inverse (an SVD, several times slower) only
    where it is singular."""
    try:
        out = np.linalg.inv(a)
    except np.linalg.LinAlgError:
        return np.linalg.pinv(a)
    return out if np.isfinite(out).all() else np.linalg.pinv(a)


def white_covariance(jac: np.ndarray, resid: np.ndarray) -> np.ndarray:
    """``s² (JᵀJ)⁻¹``: the covariance if the noise were white. Positively correlated noise (the
    atmosphere) only widens it, so a fit that is not sharp enough even by this one is not worth the
    sandwich (:func:`sandwich_covariance`)."""
    dof = max(len(resid) - jac.shape[1], 1)
    return float(resid @ resid) / dof * _inverse(jac.T @ jac)


def sandwich_covariance(jac: np.ndarray, resid: np.ndarray, valid: np.ndarray, kernel: np.ndarray | None = None) -> np.ndarray:
    """``(JᵀJ)⁻¹ Jᵀ Ĉ J (JᵀJ)⁻¹`` for the fitted points ``valid`` of an image (module docstring)."""
    ny, nx = valid.shape
    if kernel is None:
        kernel = residual_kernel(jac, resid, valid)
    shape = _padded(valid.shape)
    images = np.zeros((jac.shape[1], ny, nx))
    images[:, valid] = jac.T
    cj = sfft.irfft2(sfft.rfft2(images, shape) * kernel, shape)[:, :ny, :nx][:, valid]  # Ĉ J, column by column
    meat = jac.T @ cj.T
    meat = 0.5 * (meat + meat.T)
    bread = _inverse(jac.T @ jac)
    return bread @ meat @ bread


@functools.lru_cache(maxsize=8)
def z_score(level: float) -> float:
    """Half width in standard deviations of the central ``level`` normal interval (cached: ``norm.ppf`` is slow)."""
    return float(norm.ppf(0.5 + level / 2))


def intervals(p: np.ndarray, cov: np.ndarray, level: float) -> dict[str, tuple[float, float]]:
    """Central ``level`` intervals of the source parameters in physical units (depth, ΔV back from their logs)."""
    z = z_score(level)
    sd = np.sqrt(np.clip(np.diag(cov)[:4], 0.0, None))
    lo, hi = p[:4] - z * sd, p[:4] + z * sd
    return {"x0_km": (float(lo[0]), float(hi[0])), "y0_km": (float(lo[1]), float(hi[1])),
            "depth_km": (math.exp(lo[2]), math.exp(hi[2])), "dv_m3": (10.0 ** float(lo[3]), 10.0 ** float(hi[3]))}


def sharper(cov: np.ndarray, prior: Mapping[str, tuple[float, float, float]], level: float, ratio: float) -> bool:
    """Whether the fit's standard deviations of ln depth and log10 ΔV are both under ``ratio`` times the network's.

    ``prior`` maps source names to the network's ``(estimate, low, high)`` at ``level``; its standard
    deviation in the fit's parameters is the interval's half width over z.
    """
    z = z_score(level)
    sd = np.sqrt(np.clip(np.diag(cov)[:4], 0.0, None))
    for i, name, to_param in ((2, "depth_km", math.log), (3, "dv_m3", math.log10)):
        if name in prior:
            _, lo, hi = prior[name]
            if not sd[i] < ratio * (to_param(hi) - to_param(lo)) / (2 * z):
                return False
    return True
