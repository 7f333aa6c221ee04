"""Statistics of categorical images and their mismatch: proportions, indicator variograms along x and
y, connectivity functions along x and y, and connected-component summaries.

Arrays are indexed ``[class, axis, lag - 1]`` with axis 0 = x (along a row, columns change) and
axis 1 = y (along a column, rows change).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

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


def connectivity_counts(images: np.ndarray, n_classes: int, max_lag: int) -> np.ndarray:
    """Per image, class, axis and lag: the pairs of class-k pixels ``h`` apart that lie in one connected
    component (``[..., 0]``) and all such pairs (``[..., 1]``).

    Sums of these counts over any set of images give that set's pooled connectivity function, so
    subsets (jackknife, groups) need no relabelling.

    Returns:
        ``(N, K, 2, max_lag, 2)`` int64 array.
    """
    images = np.asarray(images)
    out = np.zeros((len(images), n_classes, 2, max_lag, 2), dtype=np.int64)
    for k in range(n_classes):
        lab = _labels(images, k)
        for axis in (0, 1):
            for h in range(1, max_lag + 1):
                a, b = _lag_pairs(lab, axis, h)
                both = (a > 0) & (b > 0)
                out[:, k, axis, h - 1, 0] = (both & (a == b)).sum(axis=(1, 2))
                out[:, k, axis, h - 1, 1] = both.sum(axis=(1, 2))
    return out


def _pooled_connectivity(counts: np.ndarray) -> np.ndarray:
    """``(K, 2, L)`` ratio of summed connected pairs to summed pairs; NaN where no pair exists."""
    total = counts.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total[..., 1] > 0, total[..., 0] / np.maximum(total[..., 1], 1), np.nan)


def connectivity_functions(images: np.ndarray, n_classes: int, max_lag: int) -> np.ndarray:
    """``tau_k(h)``: probability that two class-k pixels ``h`` apart are in one connected component.

    Pooled over the images; NaN where no pair of class-k pixels exists at that lag.

    Returns:
        ``(K, 2, max_lag)`` array.
    """
    return _pooled_connectivity(connectivity_counts(images, n_classes, max_lag))


def _component_shares(images: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per image and class: the largest component's share of the class's pixels and the chance that
    two random class pixels connect; NaN where the class is absent. Two ``(N, K)`` arrays."""
    images = np.asarray(images)
    largest = np.full((len(images), n_classes), np.nan)
    pairs = np.full((len(images), n_classes), np.nan)
    for k in range(n_classes):
        for i, lab in enumerate(_labels(images, k)):
            sizes = np.bincount(lab.ravel())[1:]
            total = sizes.sum()
            if total:
                largest[i, k] = sizes.max() / total
                pairs[i, k] = float((sizes.astype(np.float64) ** 2).sum() / float(total) ** 2)
    return largest, pairs


def _mean_where_present(values: np.ndarray) -> np.ndarray:
    """Mean over images (axis 0) ignoring NaN; NaN for a class absent from every image."""
    present = np.isfinite(values)
    n = present.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(present, values, 0.0).sum(axis=0) / np.maximum(n, 1), np.nan)


def component_stats(images: np.ndarray, n_classes: int) -> dict[str, np.ndarray]:
    """Per class, averaged over images where the class occurs: ``largest`` (largest component's share
    of the class's pixels) and ``connected_pairs`` (chance that two random class pixels connect)."""
    largest, pairs = _component_shares(images, n_classes)
    return {"largest": _mean_where_present(largest), "connected_pairs": _mean_where_present(pairs)}


def proportions(images: np.ndarray, n_classes: int) -> np.ndarray:
    """Share of each category over all pixels of all images."""
    return np.bincount(np.asarray(images).ravel(), minlength=n_classes)[:n_classes] / np.asarray(images).size


@dataclass
class ImageStats:
    """Summary statistics of a set of images of one size, kept per image so that any subset or union
    of sets (:meth:`subset`, :meth:`concat`) pools exactly as if computed on its images."""

    pixel_counts: np.ndarray  # (N, K) pixels of each class per image
    variograms: np.ndarray  # (N, K, 2, L) per image
    pair_counts: np.ndarray  # (N, K, 2, L, 2) connectivity counts per image (connectivity_counts)
    largest_each: np.ndarray  # (N, K) largest component's share, NaN where the class is absent
    pairs_each: np.ndarray  # (N, K) chance that two class pixels connect, NaN where absent

    def __len__(self) -> int:
        return len(self.variograms)

    @property
    def proportions(self) -> np.ndarray:
        """Share of each category over all pixels of all images ``(K,)``."""
        total = self.pixel_counts.sum(axis=0)
        return total / total.sum()

    @property
    def variogram(self) -> np.ndarray:
        """Mean indicator variogram ``(K, 2, L)``."""
        return self.variograms.mean(axis=0)

    @property
    def connectivity(self) -> np.ndarray:
        """Pooled connectivity functions ``(K, 2, L)`` (as :func:`connectivity_functions`)."""
        return _pooled_connectivity(self.pair_counts)

    @property
    def largest(self) -> np.ndarray:
        """Largest component's share of each class ``(K,)``, averaged over images where it occurs."""
        return _mean_where_present(self.largest_each)

    @property
    def connected_pairs(self) -> np.ndarray:
        """Chance that two random pixels of a class connect ``(K,)``, averaged as :attr:`largest`."""
        return _mean_where_present(self.pairs_each)

    def subset(self, index: np.ndarray | slice) -> ImageStats:
        """The statistics of the images at ``index``."""
        return ImageStats(self.pixel_counts[index], self.variograms[index], self.pair_counts[index],
                          self.largest_each[index], self.pairs_each[index])

    @staticmethod
    def concat(parts: Sequence[ImageStats]) -> ImageStats:
        """The statistics of the union of several sets of images (same K and lags)."""
        return ImageStats(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(ImageStats)))


def image_stats(images: np.ndarray, n_classes: int, max_lag: int) -> ImageStats:
    images = np.asarray(images)
    largest, pairs = _component_shares(images, n_classes)
    return ImageStats(
        pixel_counts=np.stack([(images == k).sum(axis=(1, 2)) for k in range(n_classes)], axis=1),
        variograms=indicator_variograms(images, n_classes, max_lag),
        pair_counts=connectivity_counts(images, n_classes, max_lag),
        largest_each=largest,
        pairs_each=pairs,
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
