"""Figures: predicted vs true per target, an example map, and the inference-matrix heat maps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from geostudy.learners.mogi.data import Simulator

LABELS = {"depth_km": "depth (km)", "dv_m3": "ΔV (m³)", "x0_km": "x0 (km)", "y0_km": "y0 (km)", "nu": "ν"}
LOG_VARS = {"dv_m3"}


def save_figure(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def scatter_figure(targets: Sequence[str], pred: Mapping[str, np.ndarray], true: Mapping[str, np.ndarray],
                   in_range: np.ndarray | None = None, title: str = "validation"):
    """Predicted vs true per target; out-of-training-range samples in orange when given."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(targets), figsize=(3.6 * len(targets), 3.4), squeeze=False)
    for ax, var in zip(axes[0], targets):
        t, p = np.asarray(true[var]), np.asarray(pred[var])
        inside = np.ones(len(t), bool) if in_range is None else in_range
        ax.scatter(t[inside], p[inside], s=4, alpha=0.5, label="in range")
        if (~inside).any():
            ax.scatter(t[~inside], p[~inside], s=4, alpha=0.5, color="tab:orange", label="out of range")
            ax.legend(fontsize=7, loc="upper left")
        lo, hi = min(t.min(), p.min()), max(t.max(), p.max())
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        if var in LOG_VARS:
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set(xlabel=f"true {LABELS[var]}", ylabel=f"predicted {LABELS[var]}")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def example_figure(sim: Simulator, maps: np.ndarray, values: Mapping[str, np.ndarray], k: int = 3):
    """The first ``k`` maps with their source parameters."""
    import matplotlib.pyplot as plt

    half = sim.cfg.grid.extent_km / 2
    fig, axes = plt.subplots(1, k, figsize=(3.4 * k, 3.2), squeeze=False)
    unit = "phase (rad)" if sim.wrapped else "LOS (m)"
    for i, ax in enumerate(axes[0][: len(maps)]):
        v = float(np.nanmax(np.abs(maps[i]))) or 1.0
        im = ax.imshow(maps[i], origin="lower", extent=(-half, half, -half, half), cmap="RdBu_r", vmin=-v, vmax=v)
        fig.colorbar(im, ax=ax, shrink=0.8, label=unit)
        ax.set_title(f"d={values['depth_km'][i]:.1f} km, ΔV={values['dv_m3'][i]:.2g} m³", fontsize=8)
        ax.set(xlabel="east (km)", ylabel="north (km)")
    fig.tight_layout()
    return fig


def matrix_figure(target: str, arrays: Mapping[str, np.ndarray], xs: np.ndarray, ys: np.ndarray, xvar: str, yvar: str,
                  sim: Simulator, logs: tuple[bool, bool]):
    """Prediction, difference and relative difference over the (x, y) grid; training range outlined."""
    import matplotlib.pyplot as plt

    unit = "log10 m³" if target in LOG_VARS else LABELS[target].split("(")[-1].rstrip(")")
    panels = [
        ("pred", f"predicted {LABELS[target]}", "viridis", None),
        ("diff", f"pred − true ({unit})", "RdBu_r", "sym"),
        ("reldiff", "(pred − true) / true", "RdBu_r", "sym"),
    ]
    # Log axes are drawn as log10 values on linear axes: matplotlib's log tick machinery took seconds.
    def coord(values: np.ndarray, log: bool) -> np.ndarray:
        return np.log10(values) if log else values

    def label(var: str, log: bool) -> str:
        return f"log10 {LABELS[var]}" if log else LABELS[var]

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (kind, title, cmap, scale) in zip(axes, panels):
        arr = arrays[kind]
        if kind == "pred" and target in LOG_VARS:
            arr, title = np.log10(arr), f"predicted log10 {LABELS[target]}"
        kwargs = {}
        if scale == "sym":
            finite = np.abs(arr[np.isfinite(arr)])
            v = float(np.quantile(finite, 0.98)) if finite.size else 1.0
            kwargs = {"vmin": -v, "vmax": v}
        im = ax.pcolormesh(coord(xs, logs[0]), coord(ys, logs[1]), arr, cmap=cmap, shading="nearest", **kwargs)
        fig.colorbar(im, ax=ax, shrink=0.85)
        spec = sim.spec
        if xvar in spec.distributions and yvar in spec.distributions:
            (x0, x1), (y0, y1) = spec.value_range(xvar), spec.value_range(yvar)
            bx, by = coord(np.array([x0, x1, x1, x0, x0]), logs[0]), coord(np.array([y0, y0, y1, y1, y0]), logs[1])
            ax.plot(bx, by, "k--", lw=1, label="training range")
        ax.set(xlabel=label(xvar, logs[0]), ylabel=label(yvar, logs[1]), title=title)
    fig.tight_layout()
    return fig


def invert_figure(obs, modelled: np.ndarray, record: Mapping):
    """Observed, modelled and residual LOS (mm) on the map's coordinates; the source and its intervals marked."""
    import matplotlib.pyplot as plt

    r = obs.raster
    observed = np.where(np.isfinite(obs.los), obs.los, np.nan) * 1000.0
    panels = [("observed", observed), ("modelled", modelled * 1000.0), ("residual", observed - modelled * 1000.0)]
    v = float(np.nanquantile(np.abs(observed), 0.995)) or 1.0
    rate = "/yr" if obs.rate else ""
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), sharex=True, sharey=True)
    x0, y0 = record["x0"], record["y0"]
    for ax, (title, arr) in zip(axes, panels):
        # The residual gets its own scale: it is usually far smaller than the signal.
        w = (float(np.nanquantile(np.abs(arr), 0.995)) or 1.0) if title == "residual" else v
        im = ax.pcolormesh(r.x, r.y, arr, cmap="RdBu_r", vmin=-w, vmax=w, shading="nearest")
        ax.xaxis.set_major_locator(plt.MaxNLocator(4))
        ax.ticklabel_format(style="plain", useOffset=False)
        fig.colorbar(im, ax=ax, shrink=0.85, label=f"LOS towards satellite (mm{rate})")
        ax.plot([x0["estimate"]], [y0["estimate"]], marker="*", color="k", ms=12, mfc="gold")
        if x0["low"] is not None and y0["low"] is not None:
            ax.errorbar([x0["estimate"]], [y0["estimate"]], xerr=[[x0["estimate"] - x0["low"]], [x0["high"] - x0["estimate"]]],
                        yerr=[[y0["estimate"] - y0["low"]], [y0["high"] - y0["estimate"]]], color="k", lw=1, capsize=3)
        ax.set(title=title, xlabel=f"x ({r.coord_unit})", aspect="equal")
    axes[0].set_ylabel(f"y ({r.coord_unit})")
    d, dv = record["depth_km"]["estimate"], record["dv_m3"]["estimate"]
    fig.suptitle(f"{record['method']}: depth {d:.2f} km, ΔV {dv:.3g} m³{rate}, RMS misfit {record['rms_misfit_mm']:.2f} mm{rate}")
    fig.tight_layout()
    return fig
