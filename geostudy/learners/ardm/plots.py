"""Figures of an ARDM run: samples, conditional samples with hard data, entropy map, statistics."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure

from geostudy.learners.ardm.data import HardData
from geostudy.learners.ardm.evaluate import ImageStats


def _cmap(n_classes: int) -> tuple[ListedColormap, BoundaryNorm]:
    base = ["#2b2b2b", "#f2c14e", "#4ea5d9", "#d1495b", "#66a182", "#8e6c8a", "#edae49", "#00798c"]
    colors = base[:n_classes] if n_classes <= len(base) else list(plt.get_cmap("tab20")(np.arange(n_classes) % 20))
    return ListedColormap(colors), BoundaryNorm(np.arange(n_classes + 1) - 0.5, n_classes)


def _grid(n: int, max_cols: int = 6) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def _mark(ax, hard: HardData, n_classes: int) -> None:
    cmap, norm = _cmap(n_classes)
    ax.scatter(hard.cols, hard.rows, c=hard.cats, cmap=cmap, norm=norm, s=28, marker="o", edgecolors="red",
               linewidths=1.2)


def samples_grid(images: np.ndarray, n_classes: int, title: str, hard: HardData | None = None,
                 reference: np.ndarray | None = None) -> Figure:
    """Realisations side by side (hard data as red-ringed dots; ``reference`` first when given)."""
    panels = ([reference] if reference is not None else []) + list(images)
    rows, cols = _grid(len(panels))
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 1.9 * rows + 0.4), squeeze=False)
    cmap, norm = _cmap(n_classes)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= len(panels):
            continue
        ax.imshow(panels[i], cmap=cmap, norm=norm, interpolation="nearest")
        if hard is not None and len(hard):
            _mark(ax, hard, n_classes)
        if reference is not None and i == 0:
            ax.set_title("training image (held out)", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def entropy_map(entropy: np.ndarray, hard: HardData | None, n_classes: int) -> Figure:
    """Per-pixel entropy (bits) of the first sampling step, given the hard data only."""
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    im = ax.imshow(entropy, cmap="magma", vmin=0, vmax=math.log2(n_classes), interpolation="nearest")
    if hard is not None and len(hard):
        _mark(ax, hard, n_classes)
    fig.colorbar(im, ax=ax, label="entropy (bits)")
    ax.set(title="first-step entropy given the hard data", xticks=[], yticks=[])
    fig.tight_layout()
    return fig


def statistics_comparison(ours: ImageStats, ref: ImageStats, metrics: dict[str, float],
                          baseline: ImageStats | None = None, baseline_name: str = "baseline") -> Figure:
    """Indicator variograms and connectivity functions along x and y: samples vs training image."""
    n_classes, _, n_lags = ref.variogram.shape
    lags = np.arange(1, n_lags + 1)
    # With two classes both indicator variograms are the same curve: show class 1 only.
    var_classes = [1] if n_classes == 2 else list(range(n_classes))
    colors = plt.get_cmap("tab10")(np.arange(10))
    fig, axes = plt.subplots(2, 2, figsize=(9, 6.4), sharex=True)
    for axis, name in ((0, "x"), (1, "y")):
        ax = axes[0, axis]
        for k in var_classes:
            c = colors[k % 10]
            lo, hi = np.percentile(ours.variograms[:, k, axis], [10, 90], axis=0)
            ax.fill_between(lags, lo, hi, color=c, alpha=0.15, lw=0)
            ax.plot(lags, ours.variogram[k, axis], color=c, label=f"samples, class {k}")
            ax.plot(lags, ref.variogram[k, axis], color=c, ls="--", label=f"training image, class {k}")
            if baseline is not None:
                ax.plot(lags, baseline.variogram[k, axis], color=c, ls=":", label=f"{baseline_name}, class {k}")
        ax.set(title=f"indicator variogram along {name}", ylabel="gamma(h)")
        ax = axes[1, axis]
        for k in range(n_classes):
            c = colors[k % 10]
            ax.plot(lags, ours.connectivity[k, axis], color=c, label=f"samples, class {k}")
            ax.plot(lags, ref.connectivity[k, axis], color=c, ls="--", label=f"training image, class {k}")
            if baseline is not None:
                ax.plot(lags, baseline.connectivity[k, axis], color=c, ls=":", label=f"{baseline_name}, class {k}")
        ax.set(title=f"connectivity along {name}", xlabel="lag h (pixels)", ylabel="P(connected | both in class)",
               ylim=(0, 1.02))
    axes[0, 0].legend(fontsize=7)
    axes[1, 0].legend(fontsize=7)
    shown = ", ".join(f"{k} {v:.3g}" for k, v in metrics.items())
    fig.suptitle(f"samples vs training image: {shown}", fontsize=9)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------
# Maps of a simulation (mode: simulate), in world coordinates with y up, as a geomodeller reads them.

Extent = tuple[float, float, float, float]


def _wells(ax, hard: HardData | None, shape: tuple[int, int], extent: Extent, colors=None) -> None:
    if hard is None or not len(hard):
        return
    ny, nx = shape
    dx, dy = (extent[1] - extent[0]) / nx, (extent[3] - extent[2]) / ny
    x = extent[0] + dx * (hard.cols + 0.5)
    y = extent[2] + dy * (hard.rows + 0.5)
    ax.scatter(x, y, c=colors if colors is not None else "none", s=14, marker="o", edgecolors="red", linewidths=0.9)


def realisation_maps(images: np.ndarray, codes: np.ndarray, extent: Extent, hard: HardData | None) -> Figure:
    """The first realisations (category indices), coloured by facies code, wells as red rings."""
    k = len(codes)
    rows, cols = _grid(len(images), max_cols=3)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.9 * rows + 0.6), squeeze=False, layout="constrained")
    cmap, norm = _cmap(k)
    im = None
    for i, ax in enumerate(axes.flat):
        if i >= len(images):
            ax.set_axis_off()
            continue
        im = ax.imshow(images[i], cmap=cmap, norm=norm, origin="lower", extent=extent, interpolation="nearest")
        _wells(ax, hard, images[i].shape, extent, colors=None)
        ax.set_title(f"realisation {i + 1}", fontsize=9)
        ax.tick_params(labelsize=7)
    if im is not None:
        bar = fig.colorbar(im, ax=axes, ticks=np.arange(k), shrink=0.8)
        bar.ax.set_yticklabels([f"{c:g}" for c in codes])
        bar.set_label("facies code")
    fig.suptitle(f"conditional realisations ({len(hard) if hard is not None else 0} hard data, red rings)", fontsize=10)
    return fig


def probability_maps(prob: np.ndarray, codes: np.ndarray, extent: Extent, hard: HardData | None) -> Figure:
    """One e-type map per facies: the share of realisations holding it."""
    k = len(codes)
    fig, axes = plt.subplots(1, k, figsize=(3.6 * k, 3.4), squeeze=False)
    for i, ax in enumerate(axes[0]):
        im = ax.imshow(prob[i], cmap="viridis", vmin=0, vmax=1, origin="lower", extent=extent,
                       interpolation="nearest")
        _wells(ax, hard, prob[i].shape, extent)
        ax.set_title(f"P(facies {codes[i]:g})", fontsize=9)
        ax.tick_params(labelsize=7)
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    return fig


def entropy_world_map(entropy: np.ndarray, n_classes: int, extent: Extent, hard: HardData | None) -> Figure:
    """Entropy (bits) of the facies shares over the realisations; 0 at the wells."""
    fig, ax = plt.subplots(figsize=(4.6, 3.9))
    im = ax.imshow(entropy, cmap="magma", vmin=0, vmax=math.log2(n_classes), origin="lower", extent=extent,
                   interpolation="nearest")
    _wells(ax, hard, entropy.shape, extent)
    fig.colorbar(im, ax=ax, label="entropy (bits)")
    ax.set(title="entropy of the facies shares over the realisations", xlabel="x", ylabel="y")
    ax.title.set_fontsize(9)
    fig.tight_layout()
    return fig
