"""Figures: estimated vs true per parameter (network and MLE side by side), error vs true range."""

from __future__ import annotations

import numpy as np

from geostudy.learners.matern.evaluate import Estimates
from geostudy.learners.matern.priors import LOG_NAMES


def scatter_figure(truth: np.ndarray, gnn: Estimates, mle: Estimates | None, free: list[str]):
    """One row per parameter; columns: the network (with its intervals) and, when run, the MLE."""
    import matplotlib.pyplot as plt

    cols = 2 if mle is not None else 1
    fig, axes = plt.subplots(len(free), cols, figsize=(3.6 * cols, 3.2 * len(free)), squeeze=False)
    for j, name in enumerate(free):
        lo, hi = float(truth[:, j].min()), float(truth[:, j].max())
        pad = 0.05 * (hi - lo + 1e-9)
        panels = [("GNN", gnn)] + ([("MLE", mle)] if mle is not None else [])
        for c, (label, est) in enumerate(panels):
            ax = axes[j, c]
            n = min(len(est.point), len(truth))
            t, e = truth[:n, j], est.point[:n, j]
            if est.interval is not None:
                ax.vlines(t, est.interval[:n, j, 0], est.interval[:n, j, 1], color="0.8", lw=0.6, zorder=1)
            ax.scatter(t, e, s=6, alpha=0.7, zorder=2)
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=0.8)
            rmse = float(np.sqrt(np.mean((e - t) ** 2)))
            ax.set(title=f"{label}: {LOG_NAMES[name]} (RMSE {rmse:.3g})", xlabel="true", ylabel="estimated")
    fig.tight_layout()
    return fig


def range_error_figure(truth_range: np.ndarray, gnn_range: np.ndarray, mle_range: np.ndarray | None):
    """Estimation error of the range against the true range, with a binned RMSE curve."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    bins = np.linspace(truth_range.min(), truth_range.max(), 9)
    series = [("GNN", gnn_range)] + ([("MLE", mle_range)] if mle_range is not None else [])
    for label, est in series:
        n = min(len(est), len(truth_range))
        t, err = truth_range[:n], est[:n] - truth_range[:n]
        axes[0].scatter(t, err, s=6, alpha=0.6, label=label)
        which = np.clip(np.digitize(t, bins) - 1, 0, len(bins) - 2)
        centres, rmse = [], []
        for b in range(len(bins) - 1):
            sel = which == b
            if sel.any():
                centres.append(0.5 * (bins[b] + bins[b + 1]))
                rmse.append(float(np.sqrt(np.mean(err[sel] ** 2))))
        axes[1].plot(centres, rmse, "o-", label=label)
    axes[0].axhline(0.0, color="k", lw=0.8)
    axes[0].set(xlabel="true range", ylabel="estimated - true", title="range error")
    axes[1].set(xlabel="true range", ylabel="RMSE", title="range RMSE per bin")
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    return fig
