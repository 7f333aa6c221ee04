"""Metrics on held-out points and the classical baselines run on the same mask."""

from __future__ import annotations

import math
import time
import warnings

import numpy as np

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def point_metrics(truth: np.ndarray, mean: np.ndarray, var: np.ndarray | None = None) -> dict[str, float]:
    """MAE, RMSE and (with a variance) NLPD and the coverage of the 95% interval.

    Args:
        truth, mean: Values at held-out points, in original units.
        var: Predictive variance there (original units squared), or None for point predictors.

    Returns:
        ``mae``, ``rmse``, and when ``var`` is given ``nlpd`` (mean Gaussian negative log density)
        and ``coverage95`` (fraction of truths inside mean ± 1.96 sd). NaN for no points.
    """
    truth, mean = np.asarray(truth, float), np.asarray(mean, float)
    out: dict[str, float] = {}
    if truth.size == 0:
        out.update(mae=math.nan, rmse=math.nan)
        if var is not None:
            out.update(nlpd=math.nan, coverage95=math.nan)
        return out
    err = mean - truth
    out["mae"] = float(np.mean(np.abs(err)))
    out["rmse"] = float(np.sqrt(np.mean(err**2)))
    if var is not None:
        var = np.maximum(np.asarray(var, float), 1e-300)
        out["nlpd"] = float(np.mean(0.5 * np.log(2 * np.pi * var) + err**2 / (2 * var)))
        out["coverage95"] = float(np.mean(np.abs(err) <= Z95 * np.sqrt(var)))
    return out


def per_frame_metrics(truth: np.ndarray, mean: np.ndarray, var: np.ndarray | None, held: np.ndarray) -> list[dict[str, float]]:
    """:func:`point_metrics` for each frame of ``(T, H, W)`` arrays over the ``held`` points."""
    rows = []
    for k in range(truth.shape[0]):
        m = held[k]
        rows.append(point_metrics(truth[k][m], mean[k][m], None if var is None else var[k][m]))
    return rows


def biharmonic(values: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """``skimage.restoration.inpaint_biharmonic`` on each frame (unobserved points filled)."""
    from skimage.restoration import inpaint_biharmonic

    out = np.empty_like(values, dtype=float)
    for k in range(values.shape[0]):
        img = np.where(observed[k], values[k], 0.0)
        out[k] = inpaint_biharmonic(img, ~observed[k])
    return out


def griddata_linear(values: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """``scipy.interpolate.griddata`` linear on each frame; outside the stations' hull, nearest."""
    from scipy.interpolate import griddata

    t, h, w = values.shape
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    out = np.empty((t, h, w))
    for k in range(t):
        pts = np.stack([yy[observed[k]], xx[observed[k]]], 1).astype(float)
        vals = values[k][observed[k]]
        try:
            lin = griddata(pts, vals, (yy, xx), method="linear")
        except Exception:  # collinear stations: Qhull cannot triangulate
            lin = np.full((h, w), np.nan)
        near = griddata(pts, vals, (yy, xx), method="nearest")
        out[k] = np.where(np.isfinite(lin), lin, near)
    return out


def sklearn_kernel(space: str, time: str | None, combine: str, has_time: bool):
    """The scikit-learn kernel closest to ours: same family, anisotropic, times a constant, plus noise.

    scikit-learn kernels have no active dims, so a product space×time kernel of one family becomes one
    anisotropic kernel over (y, x, t) (exact for rbf); other combinations use the space family over
    all inputs. Families scikit-learn lacks (spectral mixture) fall back to rbf.
    """
    from sklearn.gaussian_process import kernels as K

    d = 3 if has_time else 2
    ls = np.full(d, 0.1)
    fam = space if space not in ("spectral_mixture", "soft_disabled", "disabled") else (time or "rbf")
    if fam in ("spectral_mixture", "soft_disabled", "disabled"):
        fam = "rbf"
    base: K.Kernel
    if fam == "rbf":
        base = K.RBF(length_scale=ls)
    elif fam.startswith("matern"):
        base = K.Matern(length_scale=ls, nu={"matern12": 0.5, "matern32": 1.5, "matern52": 2.5}[fam])
    elif fam == "rq":
        base = K.RationalQuadratic(length_scale=0.1)
    else:
        base = K.ExpSineSquared(length_scale=0.5, periodicity=0.5)
    return K.ConstantKernel(1.0) * base + K.WhiteKernel(1e-2, noise_level_bounds=(1e-6, 1e1))


def sklearn_gpr(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, kernel, *, max_n: int, seed: int,
                batch: int = 4096) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Fit scikit-learn's GPR on at most ``max_n`` stations; predictive mean and variance at ``x_test``.

    Returns:
        mean, variance (noise included, normalised units), fit seconds, stations used.
    """
    from sklearn.gaussian_process import GaussianProcessRegressor

    rng = np.random.default_rng(seed)
    if len(x_train) > max_n:
        keep = rng.choice(len(x_train), size=max_n, replace=False)
        x_train, y_train = x_train[keep], y_train[keep]
    gpr = GaussianProcessRegressor(kernel=kernel, normalize_y=False, random_state=seed)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gpr.fit(x_train, y_train)
    seconds = time.perf_counter() - start
    means, sds = [], []
    for lo in range(0, len(x_test), batch):
        m, s = gpr.predict(x_test[lo: lo + batch], return_std=True)
        means.append(m)
        sds.append(s)
    mean = np.concatenate(means) if means else np.zeros(0)
    var = np.concatenate(sds) ** 2 if sds else np.zeros(0)
    return mean, var, seconds, len(x_train)
