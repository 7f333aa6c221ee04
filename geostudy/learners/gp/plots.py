"""Per-run PDF (a page per frame, then an aggregate page) and the study-level bar chart."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files, never windows (also set by geostudy/__init__)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.backends.backend_pdf import PdfPages  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

AGGREGATE_PAGES = 1  # pages after the per-frame pages


def pdf_frames(n_frames: int, max_frames: int) -> list[int]:
    """Which frames get a page: all of them, or ``max_frames`` evenly spaced ones."""
    if n_frames <= max_frames:
        return list(range(n_frames))
    return sorted({int(round(v)) for v in np.linspace(0, n_frames - 1, max_frames)})


def frame_figure(k: int, truth: np.ndarray, observed: np.ndarray, mean: np.ndarray, std: np.ndarray,
                 valid: np.ndarray, title: str, frame_rmse: float) -> Figure:
    """Truth, observed stations, reconstruction, posterior std and error of one frame."""
    fig, axes = plt.subplots(1, 5, figsize=(17, 3.8))
    vmin, vmax = np.nanmin(truth), np.nanmax(truth)
    show = lambda a: np.where(valid, a, np.nan)  # noqa: E731
    panels = [
        (show(truth), "truth", "viridis", vmin, vmax),
        (np.where(observed, truth, np.nan), f"observed ({int(observed.sum())} stations)", "viridis", vmin, vmax),
        (show(mean), "GP reconstruction", "viridis", vmin, vmax),
        (show(std), "posterior std", "magma", 0.0, float(np.nanmax(show(std))) or 1.0),
    ]
    err = show(mean - truth)
    lim = float(np.nanmax(np.abs(err))) or 1.0
    panels.append((err, f"error (RMSE {frame_rmse:.3g} on held-out)", "RdBu_r", -lim, lim))
    for ax, (img, name, cmap, lo, hi) in zip(axes, panels):
        im = ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi, origin="upper", interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    fig.suptitle(f"{title} — frame {k}", fontsize=11)
    fig.tight_layout()
    return fig


def aggregate_figure(per_frame: Mapping[str, Sequence[Mapping[str, float]]], truth_held: np.ndarray,
                     mean_held: np.ndarray, std_held: np.ndarray, title: str) -> Figure:
    """Over frames: RMSE per method, NLPD and 95% coverage of the GP, predicted vs true, z-scores."""
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    ax = axes[0, 0]
    for name, rows in per_frame.items():
        ax.plot([r["rmse"] for r in rows], marker="o", ms=3, label=name)
    ax.set(xlabel="frame", ylabel="RMSE (held-out)", title="RMSE per frame")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    gp_rows = per_frame.get("GP", [])
    ax.plot([r.get("coverage95", np.nan) for r in gp_rows], marker="o", ms=3, color="C0", label="coverage 95%")
    ax.axhline(0.95, color="grey", ls="--", lw=1)
    ax.set(xlabel="frame", ylabel="coverage of the 95% interval", ylim=(0, 1.02), title="GP calibration per frame")
    twin = ax.twinx()
    twin.plot([r.get("nlpd", np.nan) for r in gp_rows], marker="s", ms=3, color="C3", label="NLPD")
    twin.set_ylabel("NLPD", color="C3")
    ax = axes[1, 0]
    n = len(truth_held)
    sub = np.random.default_rng(0).choice(n, size=min(n, 5000), replace=False) if n else np.zeros(0, int)
    ax.scatter(truth_held[sub], mean_held[sub], s=3, alpha=0.4)
    if n:
        lo, hi = float(np.min(truth_held)), float(np.max(truth_held))
        ax.plot([lo, hi], [lo, hi], color="k", lw=1)
    ax.set(xlabel="truth", ylabel="GP mean", title="held-out points: predicted vs true")
    ax = axes[1, 1]
    z = (mean_held - truth_held) / np.maximum(std_held, 1e-12) if n else np.zeros(0)
    ax.hist(np.clip(z, -6, 6), bins=60, density=True, alpha=0.7)
    grid = np.linspace(-6, 6, 200)
    ax.plot(grid, np.exp(-grid**2 / 2) / np.sqrt(2 * np.pi), color="k", lw=1, label="N(0, 1)")
    ax.set(xlabel="(mean - truth) / std", title="standardised errors")
    ax.legend(fontsize=8)
    for ax in axes[0]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(f"{title} — all frames", fontsize=11)
    fig.tight_layout()
    return fig


def write_report_pdf(path: Path, frames: Sequence[Figure], aggregate: Figure) -> Path:
    """One PDF: the frame pages then the aggregate page; figures are closed after writing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with PdfPages(path) as pdf:
        for fig in [*frames, aggregate]:
            pdf.savefig(fig)
            plt.close(fig)
    return path


def _column(df, *names: str) -> str:
    for name in names:
        if name in df.columns:
            return name
    raise ValueError(f"trials table needs one of the columns {list(names)}, but has {list(df.columns)}")


def kernel_mask_bar_chart(trials_df) -> Figure:
    """Study-level bars: RMSE and MAE per kernel combination, one bar per mask regime.

    Args:
        trials_df: A pandas DataFrame with one row per finished trial and columns ``kernel``
            (or ``kernel_combination``), ``mask`` (or ``mask_regime``), ``rmse`` and ``mae``.
            Bars show the mean over trials of a cell; black ticks mark the best (lowest) trial.
    """
    kcol = _column(trials_df, "kernel_combination", "kernel")
    mcol = _column(trials_df, "mask_regime", "mask")
    df = trials_df.dropna(subset=["rmse", "mae"])
    kernels = sorted(df[kcol].astype(str).unique())
    masks = sorted(df[mcol].astype(str).unique())
    fig, axes = plt.subplots(2, 1, figsize=(max(6.0, 1.1 * len(kernels) * max(1, len(masks)) ** 0.5 + 3), 7.5),
                             sharex=True)
    width = 0.8 / max(len(masks), 1)
    x = np.arange(len(kernels))
    for ax, metric in zip(axes, ("rmse", "mae")):
        for j, mask in enumerate(masks):
            sel = df[df[mcol].astype(str) == mask]
            grouped = sel.groupby(sel[kcol].astype(str))[metric]
            mean = grouped.mean().reindex(kernels)
            best = grouped.min().reindex(kernels)
            pos = x - 0.4 + width * (j + 0.5)
            ax.bar(pos, mean.values, width=width * 0.95, label=mask, color=f"C{j % 10}")
            ax.scatter(pos, best.values, marker="_", s=200, color="k", zorder=3)
        ax.set_ylabel(f"{metric.upper()} (held-out)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_title("GP study: error per kernel combination and mask regime (bar: mean, tick: best trial)")
    axes[0].legend(title="mask", fontsize=8, loc="lower right", framealpha=0.9)
    axes[1].set_xticks(x)
    axes[1].set_xticklabels(kernels, rotation=20, ha="right", rotation_mode="anchor")
    axes[1].set_xlabel("kernel combination (space ∘ time)")
    fig.tight_layout()
    return fig


def trials_frame(study):
    """The table :func:`kernel_mask_bar_chart` takes, from an Optuna study of the GP learner.

    One row per complete trial: ``kernel_combination`` and ``mask_regime`` from the trial's
    ``tables`` user attribute (set by the learner), ``rmse`` and ``mae`` from its ``metrics``.
    """
    import optuna
    import pandas as pd

    rows = []
    for trial in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE]):
        tables = trial.user_attrs.get("tables") or {}
        metrics = trial.user_attrs.get("metrics") or {}
        if "kernel_combination" not in tables or "rmse" not in metrics:
            continue
        rows.append({"number": trial.number, "kernel_combination": tables["kernel_combination"],
                     "mask_regime": tables["mask_regime"], "rmse": metrics["rmse"], "mae": metrics.get("mae")})
    return pd.DataFrame(rows, columns=["number", "kernel_combination", "mask_regime", "rmse", "mae"])
