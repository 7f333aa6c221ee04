"""Vecchia's likelihood: each value conditioned on its nearest earlier neighbours only.

The exact Gaussian likelihood factorises as ``p(z) = prod_i p(z_i | z_1..z_{i-1})`` in any order of the
points. Vecchia (1988) keeps, for each point, only its ``m`` nearest earlier neighbours ``N(i)``:

    p(z_i | z_N(i)) = Normal(b_i^T z_N(i), v_i),   b_i = C_NN^-1 c_Ni,   v_i = c_ii - c_Ni^T b_i,

an ``m x m`` solve per point, ``O(n m^3)`` in all instead of ``O(n^3)``, and exactly the full likelihood
when every earlier point is a neighbour (``m = n - 1``). Points are put in (approximate) maxmin order (each next point
far from those before it), under which a few tens of neighbours reproduce the likelihood of a
smooth Matérn field closely (Guinness 2018, "Permutation and grouping methods for sharpening Gaussian
process approximations").

Fisher scoring on it (Guinness 2021, "Gaussian process learning via Fisher scoring of Vecchia's
approximation") needs only the same per-point quantities: with ``r_i = z_i - b_i^T z_N(i)``,

    -score_j = sum_r sum_i [dv_i / (2 v_i) - r_i (db_i^T z_N(i)) / v_i - r_i^2 dv_i / (2 v_i^2)]
    fisher_jk = m_rep sum_i [db_ij^T C_NN db_ik / v_i + dv_ij dv_ik / (2 v_i^2)]

(the expected information of each conditional factor), again exact at ``m = n - 1``. The derivatives in
the log-parameters are central differences, as in ``refine.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

from geostudy.learners.matern.covariance import matern_correlation, pairwise_distances
from geostudy.learners.matern.scoring import bound_arrays, scoring_step

DEFAULT_NEIGHBORS = 30
JITTER = 1e-8  # relative to the variance, as the exact likelihood's (mle.field_covariance)


@dataclass
class VecchiaStructure:
    """A field's ordering and conditioning sets (they do not depend on the parameters).

    Attributes:
        order: ``(n,)`` maxmin permutation of the points.
        neighbors: ``(n, m)`` per ordered point, the positions (in the order) of its conditioning points,
            nearest first; ``-1`` pads the first points, which have fewer than ``m`` earlier ones.
        d_nn: ``(n, m, m)`` distances among each point's neighbours; ``d_ni``: ``(n, m)`` from them to it.
        valid: ``(n, m)`` which neighbour slots are real.
    """

    order: np.ndarray
    neighbors: np.ndarray
    d_nn: torch.Tensor
    d_ni: torch.Tensor
    valid: torch.Tensor


def maxmin_order(coords: np.ndarray) -> np.ndarray:
    """Approximate maxmin ordering, coarse to fine: one point per cell of ever finer grids.

    Exact maxmin (always the point farthest from those chosen) is an ``O(n^2)`` loop, seconds at
    n = 4096; taking, level by level, the not yet chosen point nearest the centre of each cell of a
    ``2^l x 2^l`` grid spreads every prefix of the order over the domain the same way, in ``O(n log n)``.
    """
    n = len(coords)
    lo = coords.min(0)
    span = float((coords.max(0) - lo).max()) or 1.0
    unit = (coords - lo) / span
    chosen = np.zeros(n, dtype=bool)
    order: list[np.ndarray] = []
    level = 0
    while not chosen.all():
        cells = 2**level
        idx = np.flatnonzero(~chosen)
        scaled = unit[idx] * cells
        cell = np.minimum(scaled.astype(np.int64), cells - 1)
        key = cell[:, 0] * cells + cell[:, 1]
        off = ((scaled - cell - 0.5) ** 2).sum(1)
        # Per cell, the point nearest its centre: sort by (cell, offset), keep the first of each cell.
        by = np.lexsort((off, key))
        first = by[np.r_[True, key[by][1:] != key[by][:-1]]]
        picked = idx[first]
        order.append(picked[np.argsort(key[first], kind="stable")])
        chosen[picked] = True
        level += 1
    return np.concatenate(order)


def earlier_neighbors(pts: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Per ordered point ``i``, its ``m`` nearest among points ``0..i-1`` (``-1``/``inf`` pads), nearest first.

    Points of the order block ``[s, 2s)`` query a k-d tree of points ``0..2s-1`` for ``3m`` candidates and
    keep the earlier ones (in a coarse-to-fine order about half the candidates are earlier); the few
    left with fewer than ``m`` (and the first ``4m`` points) are searched by brute force.
    """
    n = len(pts)
    nb = np.full((n, m), -1, dtype=np.int64)
    dist = np.full((n, m), np.inf)
    head = min(n, 4 * m)
    todo = list(range(1, head))
    start = head
    while start < n:
        end = min(n, 2 * start)
        tree = cKDTree(pts[:end])
        k = min(3 * m, end)
        d, j = tree.query(pts[start:end], k=k)
        rows = np.arange(start, end)
        keep = j < rows[:, None]
        first = np.argsort(~keep, axis=1, kind="stable")[:, :m]  # the first m earlier candidates, nearest first
        full = keep.sum(1) >= m
        nb[rows[full]] = np.take_along_axis(j, first, 1)[full]
        dist[rows[full]] = np.take_along_axis(d, first, 1)[full]
        todo.extend(rows[~full].tolist())
        start = end
    for i in todo:
        d = np.sqrt(((pts[:i] - pts[i]) ** 2).sum(1))
        take = np.argsort(d, kind="stable")[:m]
        nb[i, : len(take)], dist[i, : len(take)] = take, d[take]
    return nb, dist


def vecchia_structure(coords: np.ndarray, neighbors: int = DEFAULT_NEIGHBORS, *, ordered: bool = True
                      ) -> VecchiaStructure:
    """Order the points and find each one's ``neighbors`` nearest earlier points.

    Args:
        coords: ``(n, 2)`` locations.
        neighbors: Conditioning-set size ``m`` (capped at ``n - 1``; ``n - 1`` gives the exact likelihood).
        ordered: Coarse-to-fine maxmin order (default); False keeps the given order.
    """
    if neighbors < 1:
        raise ValueError(f"neighbors must be >= 1, but got {neighbors!r}")
    n = len(coords)
    m = min(neighbors, n - 1)
    order = maxmin_order(coords) if ordered else np.arange(n)
    pts_np = np.ascontiguousarray(coords[order], dtype=np.float64)
    nb_np, _ = earlier_neighbors(pts_np, m)
    pts = torch.from_numpy(pts_np)
    nb = torch.from_numpy(nb_np)
    valid = nb >= 0
    near = pts[nb.clamp_min(0)]  # (n, m, 2)
    d_nn = pairwise_distances(near)
    d_ni = torch.linalg.vector_norm(near - pts[:, None, :], dim=-1)
    return VecchiaStructure(order, nb_np, d_nn, d_ni, valid)


def conditionals(log_params: Mapping[str, torch.Tensor | float], struct: VecchiaStructure, nu: float
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``b (n, m)``, ``v (n,)`` and ``C_NN (n, m, m)`` of every ordered point (see the module docstring).

    Padded slots get unit variance and no covariance with anything, so their ``b`` is 0.
    """
    dtype = struct.d_ni.dtype
    rho = torch.exp(torch.as_tensor(log_params["range"], dtype=dtype))
    sigma2 = torch.exp(torch.as_tensor(log_params["variance"], dtype=dtype))
    tau2 = torch.exp(torch.as_tensor(log_params["nugget"], dtype=dtype))
    m = struct.d_ni.shape[1]
    eye = torch.eye(m, dtype=dtype)
    pair = struct.valid[:, :, None] & struct.valid[:, None, :]
    c_nn = sigma2 * matern_correlation(struct.d_nn, rho, nu) + (tau2 + JITTER * sigma2) * eye
    c_nn = torch.where(pair, c_nn, eye.expand_as(c_nn))
    c_ni = torch.where(struct.valid, sigma2 * matern_correlation(struct.d_ni, rho, nu), torch.zeros((), dtype=dtype))
    chol = torch.linalg.cholesky(c_nn)
    b = torch.cholesky_solve(c_ni[..., None], chol)[..., 0]
    v = sigma2 + tau2 + JITTER * sigma2 - (c_ni * b).sum(-1)
    return b, v, c_nn


def _ordered(values: torch.Tensor, struct: VecchiaStructure) -> tuple[torch.Tensor, torch.Tensor]:
    """Replicates in the structure's order ``(r, n)`` and each point's neighbour values ``(r, n, m)``."""
    z = values[:, torch.as_tensor(struct.order)]
    near = z[:, torch.as_tensor(struct.neighbors).clamp_min(0)] * struct.valid
    return z, near


def vecchia_nll(log_params: Mapping[str, torch.Tensor | float], values: torch.Tensor, struct: VecchiaStructure,
                nu: float) -> torch.Tensor:
    """Vecchia's negative log-likelihood of ``values`` ``(r, n)`` (same constant as the exact one's).

    Differentiable in the log-parameters for the closed-form smoothness values; ``inf`` where a
    conditional variance is not positive.
    """
    try:
        b, v, _ = conditionals(log_params, struct, nu)
    except torch.linalg.LinAlgError:
        return torch.tensor(float("inf"), dtype=struct.d_ni.dtype)
    if not bool((v > 0).all()):
        return torch.tensor(float("inf"), dtype=struct.d_ni.dtype)
    z, near = _ordered(values, struct)
    resid = z - (near * b).sum(-1)
    r, n = values.shape
    return 0.5 * (r * torch.log(v).sum() + (resid * resid / v).sum()) + 0.5 * r * n * math.log(2 * math.pi)


def vecchia_fisher_scoring(
    coords: np.ndarray,
    values: np.ndarray,
    start: Sequence[float],
    *,
    nu: float,
    free: Sequence[str],
    fixed: Mapping[str, float],
    bounds: Mapping[str, tuple[float, float]],
    steps: int = 1,
    neighbors: int = DEFAULT_NEIGHBORS,
    diff_step: float = 1e-4,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Fisher scoring on Vecchia's likelihood (spatial fields); called by ``refine.fisher_scoring``.

    Arguments as there, plus ``neighbors`` (the conditioning-set size) and ``diff_step`` (of the central
    differences in the log-parameters).

    Returns:
        The log-parameters after the steps and the information matrix at the start of the last step.
    """
    struct = vecchia_structure(coords, neighbors)
    z_all = torch.as_tensor(np.atleast_2d(values), dtype=torch.float64)
    z, near = _ordered(z_all, struct)
    reps = z.shape[0]
    fixed_logs = {k: (math.log(v) if v > 0 else -math.inf) for k, v in fixed.items()}
    lower, upper = bound_arrays(free, bounds)
    theta = np.clip(np.asarray(start, dtype=np.float64), lower, upper)
    information = None

    def terms(at: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return conditionals({**fixed_logs, **dict(zip(free, at.tolist()))}, struct, nu)

    for _ in range(steps):
        try:
            b, v, c_nn = terms(theta)
        except torch.linalg.LinAlgError:
            break
        if not bool((v > 0).all()):
            break
        resid = z - (near * b).sum(-1)  # (r, n)
        db, dv = [], []
        for i in range(len(free)):
            step = np.zeros(len(free))
            step[i] = diff_step
            b_hi, v_hi, _ = terms(theta + step)
            b_lo, v_lo, _ = terms(theta - step)
            db.append((b_hi - b_lo) / (2 * diff_step))
            dv.append((v_hi - v_lo) / (2 * diff_step))
        score = np.array([float(-(reps * 0.5 * (dv[j] / v).sum()
                                  - (resid * (near * db[j]).sum(-1) / v).sum()
                                  - 0.5 * (resid * resid * dv[j] / (v * v)).sum())) for j in range(len(free))])
        cdb = [torch.einsum("nab,nb->na", c_nn, d) for d in db]
        information = np.array([[float(reps * ((db[j] * cdb[k]).sum(-1) / v + 0.5 * dv[j] * dv[k] / (v * v)).sum())
                                 for k in range(len(free))] for j in range(len(free))])
        stepped = scoring_step(theta, score, information, lower, upper)
        if stepped is None:
            break
        theta = stepped
    return theta, information
