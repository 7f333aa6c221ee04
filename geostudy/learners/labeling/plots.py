"""Figures of a labeling run: a cross-section (truth vs predicted) or, for a borehole table, log
strips per well; a plan view; the confusion matrix."""

from __future__ import annotations

from typing import Any

import numpy as np

from geostudy.learners.labeling.data import Survey


def _colors(num_classes: int) -> Any:
    import matplotlib.pyplot as plt

    return plt.get_cmap("tab10" if num_classes <= 10 else "tab20", max(num_classes, 2))


def _along_line(coords: np.ndarray) -> np.ndarray:
    """Distance along the principal horizontal axis of a group's nodes."""
    horiz = coords[:, :-1] if coords.shape[1] > 1 else coords
    if horiz.shape[1] == 1:
        return horiz[:, 0] - horiz[:, 0].min()
    centred = horiz - horiz.mean(0)
    axis = np.linalg.svd(centred, full_matrices=False)[2][0]
    if axis[np.argmax(np.abs(axis))] < 0:
        axis = -axis
    t = centred @ axis
    return t - t.min()


def cross_section(survey: Survey, pred: np.ndarray, group: str, title: str = "") -> Any:
    """Truth (labels; unlabeled in grey) above predictions, along one group (flight line)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    nodes = np.flatnonzero(survey.groups == group)
    c = survey.coords[nodes]
    dist, vert = _along_line(c), c[:, -1]
    k = survey.num_classes
    cmap = _colors(k)
    colors = ListedColormap([cmap(i) for i in range(k)])
    truth = survey.truth[nodes] if survey.truth is not None else survey.labels[nodes]
    fig, axes = plt.subplots(2, 1, figsize=(8, 5.2), sharex=True, sharey=True)
    size = max(4.0, min(40.0, 6000.0 / max(len(nodes), 1)))
    for ax, values, name in ((axes[0], truth, "truth"), (axes[1], pred[nodes], "predicted")):
        known = values >= 0
        ax.scatter(dist[~known], vert[~known], c="lightgrey", s=size, marker="s", linewidths=0)
        ax.scatter(dist[known], vert[known], c=values[known], cmap=colors, vmin=-0.5, vmax=k - 0.5, s=size,
                   marker="s", linewidths=0)
        ax.set_ylabel(survey.coord_names[-1])
        ax.set_title(f"{name} — {survey.source if survey.truth is None else 'synthetic survey'} group {group}", fontsize=9)
    axes[1].set_xlabel("distance along line")
    handles = [plt.Line2D([], [], marker="s", ls="", color=cmap(i), label=n) for i, n in enumerate(survey.class_names)]
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    return fig


MAX_STRIPS = 12  # wells drawn side by side; more would make each strip too thin to read


def log_strips(survey: Survey, pred: np.ndarray, wells: list[str], title: str = "") -> Any:
    """True and predicted facies of each well as two strips side by side, depth (the one coordinate) downwards.

    Each sample fills the depth interval between the midpoints to its neighbours; unlabeled samples
    are grey in the truth strip.
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    k = survey.num_classes
    cmap = _colors(k)
    colors = ListedColormap(["lightgrey"] + [cmap(i) for i in range(k)])
    wells = [w for w in wells if (survey.groups == w).any()] or survey.group_names()[:1]
    fig, axes = plt.subplots(1, len(wells), figsize=(1.3 + 1.2 * len(wells), 6.5), sharey=True, squeeze=False)
    truth_all = survey.truth if survey.truth is not None else survey.labels
    for ax, well in zip(axes[0], wells):
        nodes = np.flatnonzero(survey.groups == well)
        nodes = nodes[np.argsort(survey.coords[nodes, 0], kind="stable")]
        depth = survey.coords[nodes, 0]
        mid = (depth[1:] + depth[:-1]) / 2
        first = depth[0] - (mid[0] - depth[0] if len(mid) else 0.5)
        last = depth[-1] + (depth[-1] - mid[-1] if len(mid) else 0.5)
        edges = np.concatenate([[first], mid, [last]])
        values = np.column_stack([truth_all[nodes], pred[nodes]]) + 1  # 0 = unlabeled (grey)
        ax.pcolormesh([0, 1, 2], edges, values, cmap=colors, vmin=-0.5, vmax=k + 0.5, shading="flat")
        ax.set_xticks([0.5, 1.5], ["true", "pred"], fontsize=8)
        ax.set_title(str(well), fontsize=9)
    axes[0][0].invert_yaxis()  # sharey: once inverts every strip
    axes[0][0].set_ylabel(survey.coord_names[0])
    handles = [plt.Line2D([], [], marker="s", ls="", color=cmap(i), label=n) for i, n in enumerate(survey.class_names)]
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.82, 1))
    return fig


def plan_view(survey: Survey, pred: np.ndarray, roles: np.ndarray, depth: float | None = None) -> Any:
    """Predicted class in plan at one depth below the top of each column; groups marked by split."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    coords = survey.coords
    k = survey.num_classes
    cmap = _colors(k)
    fig, ax = plt.subplots(figsize=(7, 5.5))
    if coords.shape[1] >= 3:
        horiz, vert = coords[:, :2], coords[:, -1]
        _, col = np.unique(np.column_stack([np.unique(survey.groups, return_inverse=True)[1], np.round(horiz, 6)]),
                           axis=0, return_inverse=True)
        col = col.reshape(-1)
        top = np.full(col.max() + 1, -np.inf)
        np.maximum.at(top, col, vert)
        below = top[col] - vert
        target = float(np.median(below)) if depth is None else depth
        gap = np.abs(below - target)
        order = np.lexsort((gap, col))
        first = np.ones(len(order), bool)
        first[1:] = col[order[1:]] != col[order[:-1]]
        nodes = order[first]
        label = f"predicted class {target:.3g} below the top of each column"
    else:
        nodes = np.arange(survey.num_nodes)
        label = "predicted class"
    xy = coords[nodes, :2] if coords.shape[1] >= 2 else np.column_stack([coords[nodes, 0], np.zeros(len(nodes))])
    ax.scatter(xy[:, 0], xy[:, 1], c=pred[nodes], cmap=ListedColormap([cmap(i) for i in range(k)]), vmin=-0.5,
               vmax=k - 0.5, s=14, marker="s", linewidths=0)
    for g in survey.group_names():
        members = nodes[survey.groups[nodes] == g]
        if len(members) == 0:
            continue
        role = roles[members[0]]
        west = members[np.argmin(coords[members, 0])]
        p = (float(coords[west, 0]), float(coords[west, 1]) if coords.shape[1] >= 2 else 0.0)
        ax.annotate(f"{g} ({role})", p, fontsize=7, xytext=(-4, 4), textcoords="offset points", ha="right")
    handles = [plt.Line2D([], [], marker="s", ls="", color=cmap(i), label=n) for i, n in enumerate(survey.class_names)]
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.set(xlabel=survey.coord_names[0], ylabel=survey.coord_names[1] if coords.shape[1] >= 2 else "", title=label)
    ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    return fig


def confusion_figure(cm: np.ndarray, class_names: list[str], title: str) -> Any:
    """The confusion matrix, counts annotated, rows normalised for the colour."""
    import matplotlib.pyplot as plt

    with np.errstate(invalid="ignore"):
        frac = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * k, 0.8 + 0.6 * k))
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=8,
                    color="white" if frac[i, j] > 0.6 else "black")
    ax.set_xticks(range(k), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), class_names, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    return fig
