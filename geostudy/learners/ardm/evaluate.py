"""Statistics of categorical images and their mismatch: proportions, indicator variograms along x and
y, connectivity functions along x and y, and connected-component summaries.

Arrays are indexed ``[class, axis, lag - 1]`` with axis 0 = x (along a row, columns change) and
axis 1 = y (along a column, rows change).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


def _lag_pairs(a: np.ndarray, axis: int, lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel pairs ``(a[p], a[p + lag])`` along ``axis`` (0 = x, 1 = y) of ``(N, H, W)`` images."""
    if axis == 0:
        return a[:, :, :-lag], a[:, :, lag:]
    return a[:, :-lag, :], a[:, lag:, :]


def indicator_variograms(images: np.ndarray, n_classes: int, max_lag: int) -> np.ndarray:
    """Per-image indicator variograms ``gamma_k(h) = 0.5 * mean (I_k(p) - I_k(p + h))^2``.

    Args:
        images: ``(N, H, W)`` category indices.
        n_classes: K.
        max_lag: Lags ``1..max_lag`` (must be below the image side).

    Returns:
        ``(N, K, 2, max_lag)`` array.
    """
    images = np.asarray(images)
    out = np.zeros((len(images), n_classes, 2, max_lag))
    for k in range(n_classes):
        ind = images == k
        for axis in (0, 1):
            for h in range(1, max_lag + 1):
                a, b = _lag_pairs(ind, axis, h)
                out[:, k, axis, h - 1] = 0.5 * (a != b).mean(axis=(1, 2))
    return out


def _labels(images: np.ndarray, k: int) -> np.ndarray:
    """4-connected component labels of class ``k`` per image (0 = not class k)."""
    return np.stack([ndimage.label(img == k)[0] for img in images])


def connectivity_functions(images: np.ndarray, n_classes: int, max_lag: int) -> np.ndarray:
    """``tau_k(h)``: probability that two class-k pixels ``h`` apart are in one connected component.

    Pooled over the images; NaN where no pair of class-k pixels exists at that lag.

    Returns:
        ``(K, 2, max_lag)`` array.
    """
    images = np.asarray(images)
    out = np.full((n_classes, 2, max_lag), np.nan)
    for k in range(n_classes):
        lab = _labels(images, k)
        for axis in (0, 1):
            for h in range(1, max_lag + 1):
                a, b = _lag_pairs(lab, axis, h)
                both = (a > 0) & (b > 0)
                n_both = both.sum()
                if n_both:
                    out[k, axis, h - 1] = (both & (a == b)).sum() / n_both
    return out


def component_stats(images: np.ndarray, n_classes: int) -> dict[str, np.ndarray]:
    """Per class, averaged over images where the class occurs: ``largest`` (largest component's share
    of the class's pixels) and ``connected_pairs`` (chance that two random class pixels connect)."""
    largest = np.full(n_classes, np.nan)
    pairs = np.full(n_classes, np.nan)
    for k in range(n_classes):
        lg, pr = [], []
        for lab in _labels(np.asarray(images), k):
            sizes = np.bincount(lab.ravel())[1:]
            total = sizes.sum()
            if total:
                lg.append(sizes.max() / total)
                pr.append(float((sizes.astype(np.float64) ** 2).sum() / float(total) ** 2))
        if lg:
            largest[k], pairs[k] = np.mean(lg), np.mean(pr)
    return {"largest": largest, "connected_pairs": pairs}


def proportions(images: np.ndarray, n_classes: int) -> np.ndarray:
    """Share of each category over all pixels of all images."""
    return np.bincount(np.asarray(images).ravel(), minlength=n_classes)[:n_classes] / np.asarray(images).size


@dataclass
class ImageStats:
    """Summary statistics of a set of images of one size."""

    proportions: np.ndarray  # (K,)
    variograms: np.ndarray  # (N, K, 2, L) per image
    connectivity: np.ndarray  # (K, 2, L)
    largest: np.ndarray  # (K,)
    connected_pairs: np.ndarray  # (K,)

    @property
    def variogram(self) -> np.ndarray:
        """Mean indicator variogram ``(K, 2, L)``."""
        return self.variograms.mean(axis=0)


def image_stats(images: np.ndarray, n_classes: int, max_lag: int) -> ImageStats:
    comp = component_stats(images, n_classes)
    return ImageStats(
        proportions=proportions(images, n_classes),
        variograms=indicator_variograms(images, n_classes, max_lag),
        connectivity=connectivity_functions(images, n_classes, max_lag),
        largest=comp["largest"],
        connected_pairs=comp["connected_pairs"],
    )


def mismatch(ours: ImageStats, ref: ImageStats) -> dict[str, float]:
    """Distances between two sets of statistics (0 = identical).

    ``variogram_mismatch``: mean absolute difference of the mean indicator variograms over classes,
    axes and lags, relative to the reference's mean (so 0.1 reads as "10 % off").
    ``connectivity_mismatch``: mean absolute difference of the connectivity functions (both are
    probabilities), over the entries defined for the reference; where ``ours`` has no pair of that
    class at that lag it counts as 0 (nothing connects).
    ``proportion_error``: largest absolute difference of the category proportions.
    """
    scale = float(ref.variogram.mean())
    diff = float(np.abs(ours.variogram - ref.variogram).mean())
    defined = np.isfinite(ref.connectivity)
    ours_conn = np.nan_to_num(ours.connectivity, nan=0.0)
    conn = float(np.abs(ours_conn - ref.connectivity)[defined].mean()) if defined.any() else 0.0
    return {
        "variogram_mismatch": diff / scale if scale > 0 else diff,
        "connectivity_mismatch": conn,
        "proportion_error": float(np.abs(ours.proportions - ref.proportions).max()),
    }
