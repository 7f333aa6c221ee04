"""Figures of a station run: mean and std maps with the stations, held-out series, error vs distance."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # files, never windows
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from geostudy.io.stations import StationTable  # noqa: E402
from geostudy.learners.gp.stations_output import OutputGrid  # noqa: E402


def maps_figure(grid: OutputGrid, mean: np.ndarray, std: np.ndarray, labels: Sequence[str], table: StationTable,
                observed_at: np.ndarray, title: str) -> Figure:
    """Posterior mean (top) and std (bottom) at a few times; stations with a value then drawn as dots, others as x."""
    n = len(labels)
    fig, axes = plt.subplots(2, n, figsize=(4.2 * n, 7.2), squeeze=False)
    sx, sy = (table.lon, table.lat) if grid.coords == "lonlat" else (table.x, table.y)
    extent = (float(grid.xs[0]), float(grid.xs[-1]), float(grid.ys[0]), float(grid.ys[-1]))
    vmin, vmax = float(np.nanmin(mean)), float(np.nanmax(mean))
    smax = float(np.nanmax(std)) or 1.0
    unit = f" ({table.units})" if table.units else ""
    for k, label in enumerate(labels):
        for row, (img, cmap, lo, hi, name) in enumerate(((mean[k], "viridis", vmin, vmax, "mean"),
                                                         (std[k], "magma", 0.0, smax, "std"))):
            ax = axes[row, k]
            im = ax.imshow(img, origin="lower", extent=extent, cmap=cmap, vmin=lo, vmax=hi, aspect="auto")
            if sx is not None and sy is not None:
                seen = observed_at[k]
                ax.scatter(sx[seen], sy[seen], s=9, c="white", edgecolors="black", linewidths=0.5)
                ax.scatter(sx[~seen], sy[~seen], s=12, c="red", marker="x", linewidths=0.8)
            ax.set_xlim(extent[0], extent[1])
            ax.set_ylim(extent[2], extent[3])
            ax.set_title(f"{name}{unit}, {label}", fontsize=9)
            ax.tick_params(labelsize=7)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    fig.suptitle(f"{title}\nstations: o with a value at that time, x without", fontsize=10)
    fig.tight_layout()
    return fig


def series_figure(table: StationTable, cv_mean: np.ndarray, cv_std: np.ndarray, stations: Sequence[int],
                  baseline: np.ndarray | None, title: str) -> Figure:
    """Held-out stations' series: observed values, the out-of-fold GP mean and its 95% band, the spline."""
    n = max(len(stations), 1)
    fig, axes = plt.subplots(n, 1, figsize=(11, 2.4 * n), squeeze=False, sharex=True)
    t = table.times
    for ax, s in zip(axes[:, 0], stations, strict=False):
        band = 1.959963984540054 * cv_std[:, s]
        ax.fill_between(t, cv_mean[:, s] - band, cv_mean[:, s] + band, color="C0", alpha=0.25, label="GP 95%")
        ax.plot(t, cv_mean[:, s], color="C0", lw=1.2, label="GP mean (station held out)")
        if baseline is not None:
            ax.plot(t, baseline[:, s], color="C1", lw=1, ls="--", label="spline per time step")
        ax.plot(t, table.values[:, s], "k.", ms=3, label="observed")
        ax.set_ylabel(f"{table.ids[s]}", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7, ncol=4, loc="upper left")
    axes[-1, 0].set_xlabel("days since " + table.time_origin if table.time_origin else "time")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def distance_figure(distance: np.ndarray, rmse_gp: np.ndarray, rmse_baseline: np.ndarray | None, title: str) -> Figure:
    """Per held-out station RMSE against the distance to the nearest station its fold trained on."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    km = distance / 1000.0
    ax.scatter(km, rmse_gp, s=14, label="GP")
    if rmse_baseline is not None:
        ax.scatter(km, rmse_baseline, s=14, marker="^", alpha=0.7, label="spline per time step")
    ax.set(xlabel="distance to the nearest training station (km)", ylabel="RMSE of the held-out series", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
