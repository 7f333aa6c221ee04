"""Step schedules for parallel sampling: how many pixels of the order each network call reveals.

Drawing the ``k`` pixels of a chunk in one call, each from its own conditional given only the pixels
revealed before the chunk, turns the sampler into another model, whose negative log-likelihood is
bounded by ``sum over chunks of k * l(t)``, with ``l(t)`` the expected NLL of an unrevealed pixel
when ``t`` pixels are known (OA-ARDM, Hoogeboom et al., ICLR 2022, section 4: the model is
order-agnostic, so ``l`` does not depend on which pixels were revealed). Equal chunks ignore that
``l`` falls steeply while the structure is still open and is flat once it is settled; the dynamic
programme of that paper picks the chunk edges that minimise the bound for a given number of calls
(small chunks early, large ones late). It uses only the network's own loss curve, never the
statistics a realisation is judged by.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class LossCurve:
    """``nats[i]``: expected NLL of an unrevealed pixel with ``fractions[i]`` of the image revealed."""

    fractions: np.ndarray
    nats: np.ndarray
    # Schedules already solved, by (n_known, n_free, budget, grid): a bench or a study samples one grid
    # size many times, and the programme takes a second or two on a loaded CPU.
    solved: dict[tuple[int, int, int, int], np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def at(self, fraction: np.ndarray) -> np.ndarray:
        return np.interp(fraction, self.fractions, self.nats)


@torch.no_grad()
def loss_curve(model: nn.Module, images: torch.Tensor, *, points: int = 33, seed: int = 0,
               batch_size: int = 16) -> LossCurve:
    """Estimate ``l(t)`` on ``images`` ``(N, H, W)`` at ``points`` revealed fractions in ``[0, 1)``,
    each image revealing a random subset of that size (the order-agnostic training distribution)."""
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    n, h, w = images.shape
    d = h * w
    fractions = np.linspace(0.0, 1.0, points, endpoint=False)
    nats = np.zeros(points)
    for i, f in enumerate(fractions):
        t = int(round(f * d))
        total, count = 0.0, 0
        for start in range(0, n, batch_size):
            x = images[start: start + batch_size]
            ranks = torch.rand(len(x), d, generator=generator).argsort(1).argsort(1)
            mask = (ranks < t).view(len(x), h, w).to(x.device)
            nll = F.cross_entropy(model(x, mask), x, reduction="none")
            total += float(nll[~mask].sum())
            count += int((~mask).sum())
        nats[i] = total / max(count, 1)
    model.train(was_training)
    return LossCurve(fractions=fractions, nats=nats)


def dp_edges(curve: LossCurve, n_known: int, n_free: int, budget: int, grid: int = 512) -> np.ndarray:
    """Chunk boundaries ``0 = e_0 < ... < e_S = n_free`` along the order of the free pixels that minimise
    ``sum_s (e_{s+1} - e_s) * l(n_known + e_s)`` with ``S = min(budget, n_free)`` calls.

    Boundaries are restricted to ``grid`` evenly spaced positions (the programme costs
    ``S * grid**2``), so a chunk holds at least ``n_free / grid`` pixels.
    """
    key = (n_known, n_free, budget, grid)
    if key not in curve.solved:
        curve.solved[key] = _solve(curve, n_known, n_free, budget, grid)
    return curve.solved[key]


def _solve(curve: LossCurve, n_known: int, n_free: int, budget: int, grid: int) -> np.ndarray:
    m = max(1, min(grid, n_free))
    pos = (np.arange(m + 1) * n_free) // m
    steps = max(1, min(budget, m))
    loss = curve.at((n_known + pos[:-1]) / max(n_known + n_free, 1))  # l at the start of each candidate chunk
    # cost[i, j]: revealing pixels pos[i]..pos[j] in one call; only j > i is a chunk.
    cost = (pos[None, :] - pos[:-1, None]) * loss[:, None]
    cost[np.arange(m + 1)[None, :] <= np.arange(m)[:, None]] = np.inf
    best = np.full(m + 1, np.inf)
    best[0] = 0.0
    back = np.zeros((steps, m + 1), dtype=np.int64)
    for s in range(steps):  # best[j]: least cost of covering pos[0]..pos[j] with s + 1 chunks
        total = best[:-1, None] + cost
        back[s] = total.argmin(axis=0)
        best = np.concatenate([[np.inf], total.min(axis=0)[1:]])
    edges = [m]
    for s in reversed(range(steps)):
        edges.append(int(back[s, edges[-1]]))
    return pos[np.array(edges[::-1])]
