"""Sequential indicator simulation (SIS), the classical baseline for categorical realisations.

Deutsch & Journel (*GSLIB*, 1998, ``sisim``): visit the cells along a random path; at each one, simple
indicator kriging of every category from the nearest informed cells (hard data and cells simulated
earlier) gives a probability per category; after the order-relation correction (clip to [0, 1],
renormalise) one category is drawn and the cell joins the conditioning data. The indicator variogram of
each category is a nested-free model (exponential or spherical, geometric anisotropy along x and y)
fitted to the training image's experimental indicator variograms.

No package installed here (gstools, pykrige) offers SIS, hence this small implementation; the tests
check it against a known variogram.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.optimize import least_squares

from geostudy.learners.ardm.data import HardData
from geostudy.learners.ardm.evaluate import indicator_variograms, proportions

VariogramKind = Literal["exponential", "spherical"]


@dataclass
class IndicatorVariogram:
    """``gamma(h) = sill * f(r)`` with ``r = sqrt((hx / range_x)^2 + (hy / range_y)^2)`` (practical ranges)."""

    kind: VariogramKind
    sill: float
    range_x: float
    range_y: float

    def gamma(self, hx: np.ndarray, hy: np.ndarray) -> np.ndarray:
        r = np.sqrt((np.asarray(hx, float) / self.range_x) ** 2 + (np.asarray(hy, float) / self.range_y) ** 2)
        return self.sill * _shape(self.kind, r)

    def covariance(self, hx: np.ndarray, hy: np.ndarray) -> np.ndarray:
        return self.sill - self.gamma(hx, hy)


def _shape(kind: VariogramKind, r: np.ndarray) -> np.ndarray:
    if kind == "exponential":
        return 1.0 - np.exp(-3.0 * r)  # 95 % of the sill at the practical range
    return np.where(r < 1.0, 1.5 * r - 0.5 * r**3, 1.0)


def fit_indicator_variograms(image: np.ndarray, n_classes: int, max_lag: int) -> list[IndicatorVariogram]:
    """Fit one model per category to the image's indicator variograms along x and y (lags 1..max_lag).

    The sill, both ranges and the kind (exponential or spherical, whichever fits better) are fitted by
    least squares; lags are weighted equally.
    """
    exp = indicator_variograms(image[None], n_classes, max_lag)[0]  # (K, 2, L)
    lags = np.arange(1, max_lag + 1, dtype=float)
    p = proportions(image, n_classes)
    out = []
    for k in range(n_classes):
        gx, gy = exp[k, 0], exp[k, 1]
        if max(gx.max(), gy.max()) <= 0:  # an absent or constant category: no spatial variability
            out.append(IndicatorVariogram("exponential", max(float(p[k] * (1 - p[k])), 1e-6), 1.0, 1.0))
            continue
        fits = []
        for kind in ("exponential", "spherical"):
            def residual(theta: np.ndarray, kind: VariogramKind = kind, gx: np.ndarray = gx,
                         gy: np.ndarray = gy) -> np.ndarray:
                model = IndicatorVariogram(kind, theta[0], theta[1], theta[2])
                return np.concatenate([model.gamma(lags, 0 * lags) - gx, model.gamma(0 * lags, lags) - gy])

            start = np.array([max(float(p[k] * (1 - p[k])), 1e-3), max_lag / 3, max_lag / 3])
            fit = least_squares(residual, start, bounds=([1e-4, 0.5, 0.5], [0.25, 20 * max_lag, 20 * max_lag]))
            fits.append((float(fit.cost), IndicatorVariogram(kind, *map(float, fit.x))))
        out.append(min(fits, key=lambda f: f[0])[1])
    return out


def _template(variograms: list[IndicatorVariogram], radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Offsets within ``radius`` cells, nearest first in the mean anisotropic metric (search order)."""
    rx = np.mean([v.range_x for v in variograms])
    ry = np.mean([v.range_y for v in variograms])
    dr, dc = np.mgrid[-radius: radius + 1, -radius: radius + 1]
    dr, dc = dr.ravel(), dc.ravel()
    keep = (dr != 0) | (dc != 0)
    dr, dc = dr[keep], dc[keep]
    order = np.argsort((dc / rx) ** 2 + (dr / ry) ** 2, kind="stable")
    return dr[order], dc[order]


def sis(shape: tuple[int, int], variograms: list[IndicatorVariogram], target: np.ndarray, *,
        hard: HardData | None = None, n_neighbours: int = 16, radius: int = 24,
        rng: np.random.Generator) -> np.ndarray:
    """One SIS realisation of category indices on a ``(height, width)`` grid.

    Args:
        shape: ``(height, width)``.
        variograms: One indicator variogram per category.
        target: Global category proportions (the simple-kriging means).
        hard: Cells fixed before the path starts; every realisation honours them.
        n_neighbours: Informed cells used per kriging system (the nearest in the search template).
        radius: Half side of the search window (cells).
        rng: Random path and draws.
    """
    h, w = shape
    k = len(variograms)
    target = np.asarray(target, dtype=float)
    img = np.full((h, w), -1, dtype=np.int64)
    if hard is not None and len(hard):
        img[hard.rows, hard.cols] = hard.cats
    dr, dc = _template(variograms, radius)
    # Covariance lookup over every offset two cells of one window can have.
    span = np.arange(-2 * radius, 2 * radius + 1)
    oy, ox = np.meshgrid(span, span, indexing="ij")
    table = np.stack([v.covariance(ox, oy) for v in variograms])  # (K, 4R+1, 4R+1), [k, dy, dx]
    c0 = 2 * radius
    eye = 1e-8 * np.eye(n_neighbours)
    cum_target = np.cumsum(target / target.sum())
    path = rng.permutation(h * w)
    draws = rng.random(h * w)
    for step, flat in enumerate(path):
        r, c = divmod(int(flat), w)
        if img[r, c] >= 0:
            continue
        rr, cc = dr + r, dc + c
        inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
        idx = np.flatnonzero(inside)
        idx = idx[img[rr[idx], cc[idx]] >= 0][:n_neighbours]
        if len(idx) == 0:
            img[r, c] = int(np.searchsorted(cum_target, draws[step], side="right"))
            continue
        ndr, ndc = dr[idx], dc[idx]
        a = table[:, (ndr[:, None] - ndr[None, :]) + c0, (ndc[:, None] - ndc[None, :]) + c0]  # (K, n, n)
        b = table[:, ndr + c0, ndc + c0]  # (K, n)
        lam = np.linalg.solve(a + eye[: len(idx), : len(idx)], b[..., None])[..., 0]  # (K, n)
        ind = img[rr[idx], cc[idx]][None, :] == np.arange(k)[:, None]  # (K, n) indicators of the neighbours
        prob = target + (lam * (ind - target[:, None])).sum(axis=1)
        prob = np.clip(prob, 0.0, 1.0)
        total = prob.sum()
        prob = prob / total if total > 0 else target / target.sum()
        img[r, c] = min(int(np.searchsorted(np.cumsum(prob), draws[step], side="right")), k - 1)
    return img


def sis_realisations(n: int, shape: tuple[int, int], training_image: np.ndarray, n_classes: int, *,
                     hard: HardData | None = None, max_lag: int = 32, n_neighbours: int = 16,
                     seed: int = 0) -> tuple[np.ndarray, list[IndicatorVariogram]]:
    """``n`` SIS realisations with variograms and proportions fitted to ``training_image``."""
    variograms = fit_indicator_variograms(training_image, n_classes, max_lag)
    target = proportions(training_image, n_classes)
    radius = int(min(max(max(v.range_x, v.range_y) for v in variograms), max_lag))
    rng = np.random.default_rng(seed)
    out = np.stack([sis(shape, variograms, target, hard=hard, n_neighbours=n_neighbours, radius=max(radius, 4),
                        rng=rng) for _ in range(n)])
    return out, variograms
