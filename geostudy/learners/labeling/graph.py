"""Spatial graphs over survey nodes: ``knn``, ``radius``, ``lattice`` and ``file``, cached.

Edges are symmetric ``(2, E)`` int64 arrays without self loops, built with ``scipy.spatial.cKDTree``
(:mod:`geostudy.nn.graphs`). Built graphs are cached in memory (a study builds its graph once) and,
when ``graph.cache_dir`` is set, as ``.npz`` files keyed by the data fingerprint and the graph
parameters.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from geostudy.errors import ConfigError, DataError
from geostudy.learners.labeling.config import GraphConfig
from geostudy.learners.labeling.data import Survey
from geostudy.nn.graphs import knn_edges, radius_edges, symmetrize

_MEMORY: dict[str, np.ndarray] = {}
_MEMORY_MAX = 8


def _cache_key(survey: Survey, cfg: GraphConfig) -> str:
    params: dict[str, Any] = {"method": cfg.method, "within_group": cfg.within_group}
    if cfg.method == "knn":
        params.update(k=cfg.k, scale=coord_scale(survey, cfg).tolist())
    elif cfg.method == "radius":
        params.update(r=cfg.radius, max_neighbors=cfg.max_neighbors, scale=coord_scale(survey, cfg).tolist())
    elif cfg.method == "file":
        params["edges"] = hashlib.sha1(np.ascontiguousarray(survey.edges).tobytes()).hexdigest() if survey.edges is not None else None
    blob = json.dumps(params, sort_keys=True) + survey.fingerprint()
    return hashlib.sha1(blob.encode()).hexdigest()[:20]


def build_edges(survey: Survey, cfg: GraphConfig) -> np.ndarray:
    """The graph of ``survey`` described by ``cfg`` (cached; see the module docstring)."""
    key = _cache_key(survey, cfg)
    if key in _MEMORY:
        return _MEMORY[key]
    path = Path(cfg.cache_dir) / f"graph-{key}.npz" if cfg.cache_dir else None
    if path is not None and path.is_file():
        edges = np.load(path)["edges"]
    else:
        edges = _build(survey, cfg)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npz")
            np.savez_compressed(tmp, edges=edges)
            tmp.replace(path)
    if len(_MEMORY) >= _MEMORY_MAX:
        _MEMORY.pop(next(iter(_MEMORY)))
    _MEMORY[key] = edges
    return edges


def coord_scale(survey: Survey, cfg: GraphConfig) -> np.ndarray:
    """``graph.coord_scale``, one factor per coordinate column (null: ones).

    Raises:
        ConfigError: the list's length differs from the number of coordinates.
    """
    d = survey.coords.shape[1]
    if cfg.coord_scale is None:
        return np.ones(d)
    if len(cfg.coord_scale) != d:
        raise ConfigError(f"must give one factor per coordinate ({d}: {', '.join(survey.coord_names)}), or be null "
                          f"(ones), but got {list(cfg.coord_scale)!r}", key="graph.coord_scale")
    return np.asarray(cfg.coord_scale, dtype=np.float64)


def _scaled(survey: Survey, cfg: GraphConfig) -> np.ndarray:
    return survey.coords * coord_scale(survey, cfg)


def _build(survey: Survey, cfg: GraphConfig) -> np.ndarray:
    groups = survey.groups if cfg.within_group else None
    n = survey.num_nodes
    if cfg.method == "knn":
        return knn_edges(_scaled(survey, cfg), cfg.k, groups=groups)
    if cfg.method == "radius":
        return radius_edges(_scaled(survey, cfg), cfg.radius, groups=groups, max_neighbors=cfg.max_neighbors)
    if cfg.method == "file":
        if survey.edges is None:
            raise ConfigError("graph.method is 'file', so data.csv.edges must name an edge CSV", key="data.csv.edges")
        edges = survey.edges
        if cfg.within_group:
            edges = edges[:, survey.groups[edges[0]] == survey.groups[edges[1]]]
        return symmetrize(edges, n)
    if cfg.method == "lattice":
        return lattice_edges(survey.coords, survey.groups, within_group=cfg.within_group)
    raise ConfigError(f"unknown graph method {cfg.method!r}; allowed: knn, radius, lattice, file", key="graph.method")


def lattice_edges(coords: np.ndarray, groups: np.ndarray, *, within_group: bool = False) -> np.ndarray:
    """Edges of a survey lattice: columns of cells under stations, stations along lines.

    The last coordinate is vertical, the others horizontal. Nodes sharing a group and a horizontal
    position form a column, ranked from the top. With one coordinate (a borehole table: depth only)
    each group is one column, so the graph links consecutive samples of each well. Links: vertical neighbours in a column; the same
    rank at neighbouring stations along a line (stations ordered along the line's principal axis);
    and, unless ``within_group``, the same rank at the nearest station of each adjacent line (lines
    ordered across their mean direction).
    """
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] < 1:
        raise DataError(f"the lattice graph needs coordinates (horizontal..., vertical), but got shape {coords.shape}")
    n = len(coords)
    horiz, vert = coords[:, :-1], coords[:, -1]
    span = float(np.ptp(horiz)) if n and horiz.shape[1] else 1.0
    tol = max(span, 1.0) * 1e-9
    _, group_id = np.unique(groups, return_inverse=True)
    keys = np.column_stack([group_id, np.round(horiz / tol)])
    _, col = np.unique(keys, axis=0, return_inverse=True)
    col = col.reshape(-1)
    order = np.lexsort((-vert, col))  # by column, top first
    counts = np.bincount(col)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    n_cols = len(counts)
    col_xy = np.zeros((n_cols, horiz.shape[1]))
    np.add.at(col_xy, col, horiz)
    col_xy /= counts[:, None]
    col_group = np.zeros(n_cols, dtype=np.int64)
    col_group[col] = group_id

    parts = []
    # Vertical: consecutive ranks in a column.
    same_col = col[order[1:]] == col[order[:-1]]
    parts.append(np.stack([order[:-1][same_col], order[1:][same_col]]))

    def link(ca: np.ndarray, cb: np.ndarray) -> None:
        if len(ca) == 0:
            return
        m = np.minimum(counts[ca], counts[cb])
        rank = np.arange(m.sum()) - np.repeat(np.cumsum(m) - m, m)
        parts.append(np.stack([order[np.repeat(start[ca], m) + rank], order[np.repeat(start[cb], m) + rank]]))

    directions: list[np.ndarray] = []
    line_cols: list[np.ndarray] = []
    for g in range(group_id.max() + 1 if n else 0):
        cols = np.flatnonzero(col_group == g)
        line_cols.append(cols)
        if len(cols) < 2:
            continue
        xy = col_xy[cols] - col_xy[cols].mean(0)
        axis = np.linalg.svd(xy, full_matrices=False)[2][0]
        if directions and axis @ directions[0] < 0:
            axis = -axis
        directions.append(axis)
        ordered = cols[np.argsort(xy @ axis, kind="stable")]
        link(ordered[:-1], ordered[1:])

    if not within_group and len(line_cols) > 1 and horiz.shape[1] >= 2 and directions:
        along = np.mean(directions, axis=0)
        across = np.array([-along[1], along[0], *([0.0] * (horiz.shape[1] - 2))])
        centres = np.array([col_xy[c].mean(0) @ across for c in line_cols])
        line_order = np.argsort(centres, kind="stable")
        for a, b in zip(line_order[:-1], line_order[1:]):
            ca, cb = line_cols[a], line_cols[b]
            _, nearest = cKDTree(col_xy[cb]).query(col_xy[ca])
            link(ca, cb[nearest])
            _, nearest = cKDTree(col_xy[ca]).query(col_xy[cb])
            link(cb, ca[nearest])
    edges = np.concatenate(parts, axis=1) if parts else np.zeros((2, 0), dtype=np.int64)
    return symmetrize(edges.astype(np.int64), n)
