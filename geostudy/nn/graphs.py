"""Graph builders on point coordinates with ``scipy.spatial.cKDTree``.

PyG's ``radius_graph``/``knn_graph`` need pyg-lib or torch-cluster, which are not installable
here, so every learner builds its edges with these functions. Edges are returned as a ``(2, E)``
int64 NumPy array of (source, target) pairs, without self loops, symmetric (undirected) unless
stated otherwise.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from geostudy.errors import ConfigError


def _as_points(coords: np.ndarray) -> np.ndarray:
    pts = np.asarray(coords, dtype=np.float64)
    if pts.ndim == 1:
        pts = pts[:, None]
    if pts.ndim != 2:
        raise ValueError(f"coords must be (n, d), but got shape {pts.shape}")
    return pts


def symmetrize(edges: np.ndarray, num_nodes: int) -> np.ndarray:
    """Union of the edges and their reverses, duplicates and self loops removed, sorted by target."""
    if edges.size == 0:
        return np.zeros((2, 0), dtype=np.int64)
    src = np.concatenate([edges[0], edges[1]])
    dst = np.concatenate([edges[1], edges[0]])
    keep = src != dst
    ids = np.unique(dst[keep].astype(np.int64) * num_nodes + src[keep])
    return np.stack([ids % num_nodes, ids // num_nodes]).astype(np.int64)


def knn_edges(coords: np.ndarray, k: int, *, groups: np.ndarray | None = None) -> np.ndarray:
    """Symmetric k-nearest-neighbour edges (each point linked to its k nearest others).

    Args:
        coords: ``(n, d)`` point coordinates.
        k: Neighbours per point (>= 1).
        groups: Optional ``(n,)`` labels; when given, only points of the same group are linked.
    """
    if k < 1:
        raise ConfigError(f"k must be >= 1, but got {k}", key="graph.k")
    pts = _as_points(coords)
    n = len(pts)
    if groups is not None:
        return _per_group(pts, np.asarray(groups), lambda p: knn_edges(p, k))
    kk = min(k, n - 1)
    if kk < 1:
        return np.zeros((2, 0), dtype=np.int64)
    _, idx = cKDTree(pts).query(pts, k=kk + 1)
    src = idx[:, 1:].reshape(-1)
    dst = np.repeat(np.arange(n), kk)
    return symmetrize(np.stack([src, dst]), n)


def knn_neighbors(
    coords: list[np.ndarray], k: int, *, workers: int = -1
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The ``k`` nearest other points of every point of several point sets, with one tree for all.

    The sets are laid side by side, each shifted along the first axis by more than any set's extent, so
    that one ``cKDTree`` query finds each point's neighbours inside its own set: per set,
    neighbours never cross, since every set has more than ``k`` points (the nearest ``k`` others of a
    point then lie within its set's extent, closer than any point of another set). ``workers``: query
    threads (-1: all cores).

    Returns:
        Per set, ``(n_i, k)`` local neighbour indices, nearest first, and their ``(n_i, k)`` distances.
    """
    if k < 1:
        raise ConfigError(f"k must be >= 1, but got {k}", key="graph.k")
    sets = [_as_points(c) for c in coords]
    if not sets:
        return [], []
    sizes = np.array([len(p) for p in sets])
    if sizes.min() <= k:
        raise ValueError(f"every point set needs more than k={k} points, but one has {sizes.min()}")
    span = max(float(np.ptp(p, axis=0).max()) for p in sets)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    shifted = np.concatenate(sets)
    shifted[:, 0] = shifted[:, 0] + np.repeat(np.arange(len(sets)) * (3.0 * span + 1.0), sizes)
    dist, idx = cKDTree(shifted).query(shifted, k=k + 1, workers=workers)
    # Drop each point itself (column 0, unless an exact duplicate came first; then wherever it is).
    is_self = idx == np.arange(len(shifted))[:, None]
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), k)
    keep = np.arange(k + 1)[None, :] != drop[:, None]
    nbr, nd = idx[keep].reshape(-1, k), dist[keep].reshape(-1, k)
    local = nbr - np.repeat(starts, sizes)[:, None]
    bounds = np.cumsum(sizes)[:-1]
    return np.split(local, bounds), np.split(nd, bounds)


def radius_edges(
    coords: np.ndarray, r: float, *, groups: np.ndarray | None = None, max_neighbors: int | None = None
) -> np.ndarray:
    """Symmetric edges between points closer than ``r``.

    Args:
        coords: ``(n, d)`` point coordinates.
        r: Radius (> 0), in the units of ``coords``.
        groups: Optional ``(n,)`` labels; only points of the same group are linked.
        max_neighbors: Keep at most this many nearest neighbours per point (bounds memory in
            dense regions); None keeps all.
    """
    if not r > 0:
        raise ConfigError(f"radius must be > 0, but got {r}", key="graph.radius")
    pts = _as_points(coords)
    n = len(pts)
    if groups is not None:
        return _per_group(pts, np.asarray(groups), lambda p: radius_edges(p, r, max_neighbors=max_neighbors))
    tree = cKDTree(pts)
    if max_neighbors is None:
        pairs = tree.query_pairs(r, output_type="ndarray")
        return symmetrize(pairs.T.astype(np.int64), n)
    kk = min(max_neighbors, n - 1)
    if kk < 1:
        return np.zeros((2, 0), dtype=np.int64)
    dist, idx = tree.query(pts, k=kk + 1, distance_upper_bound=r)
    dist, idx = dist[:, 1:], idx[:, 1:]
    ok = np.isfinite(dist)
    dst = np.repeat(np.arange(n), kk).reshape(n, kk)[ok]
    return symmetrize(np.stack([idx[ok], dst]), n)


def _per_group(pts: np.ndarray, groups: np.ndarray, build) -> np.ndarray:
    parts = []
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        local = build(pts[members])
        parts.append(members[local])
    if not parts:
        return np.zeros((2, 0), dtype=np.int64)
    return symmetrize(np.concatenate(parts, axis=1), len(pts))


def edge_lengths(coords: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Euclidean length of each edge."""
    pts = _as_points(coords)
    return np.linalg.norm(pts[edges[0]] - pts[edges[1]], axis=1)
