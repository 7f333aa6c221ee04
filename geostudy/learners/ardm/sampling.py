"""Sampling from a trained OA-ARDM: unconditional or conditioned on hard data, in batches.

Each realisation draws its own random order. Hard data are revealed before the first network call;
the remaining pixels are revealed in ``budget`` nearly equal chunks along the order, one network
call per chunk, each pixel of a chunk drawn from its own predicted categorical (the paper's
parallel sampling with a uniform step schedule), optionally sharpened by a temperature below 1.
``budget`` equal to the number of free pixels (at temperature 1) is exact one-pixel-per-call
ancestral sampling.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from geostudy.errors import ConfigError
from geostudy.learners.ardm.data import HardData
from geostudy.learners.ardm.train import LN2


@dataclass
class Samples:
    """Realisations ``(N, H, W)``, the first step's per-pixel entropy in bits ``(H, W)``, and the
    number of network calls per batch."""

    images: np.ndarray
    entropy: np.ndarray
    calls: int


def chunk_edges(n_free: int, budget: int) -> np.ndarray:
    """Boundaries of ``min(budget, n_free)`` nearly equal chunks of ``n_free`` pixels."""
    steps = max(1, min(budget, n_free))
    return (np.arange(steps + 1) * n_free) // steps


def servo_bias(logits: torch.Tensor, x: torch.Tensor, mask: torch.Tensor, target: torch.Tensor,
               strength: float, floor: float = 1e-3, limit: float = 3.0) -> torch.Tensor:
    """Per-realisation logit offsets ``(B, 1, K)`` that steer the facies proportions toward ``target``.

    A servosystem as in SNESIM (Strebelle, 2002), in logit space: the share of each facies still
    needed among the unrevealed pixels, ``r_k = (target_k * D - revealed_k) / unrevealed``, is set
    against the network's mean prediction ``m_k`` over those pixels, and ``strength * log(r_k / m_k)``
    is added to every pixel's logits. Because ``r`` counts what is already revealed, a realisation that
    has drawn too much of a facies is steered back by the later calls. A logit offset (rather than the
    original's additive probability) leaves pixels the network is sure of nearly unchanged, so the
    correction falls on the uncertain ones and the patterns keep their shape.

    Args:
        logits: ``(B, D, K)`` network logits.
        x: ``(B, D)`` current categories (valid where ``mask``).
        mask: ``(B, D)`` revealed pixels.
        target: ``(K,)`` proportions summing to 1.
        strength: 0 (no correction) to 1 (match the needed share to first order).
        floor: Lowest share either side of the ratio may take, so a spent facies is damped, not banned.
        limit: Largest offset in nats either way.
    """
    k = logits.shape[-1]
    free = (~mask).float()  # (B, D)
    n_free = free.sum(1, keepdim=True).clamp_min(1.0)  # (B, 1)
    revealed = torch.nn.functional.one_hot(x, k).float() * mask.unsqueeze(-1).float()  # (B, D, K)
    needed = (target * mask.shape[1] - revealed.sum(1)) / n_free  # (B, K)
    needed = needed.clamp_min(floor)
    needed = needed / needed.sum(1, keepdim=True)
    predicted = (torch.softmax(logits.float(), -1) * free.unsqueeze(-1)).sum(1) / n_free  # (B, K)
    bias = strength * (needed.log() - predicted.clamp_min(floor).log())
    return bias.clamp(-limit, limit).unsqueeze(1)


@torch.no_grad()
def sample(model: nn.Module, n: int, size: int | tuple[int, int], *, budget: int, hard: HardData | None = None, seed: int = 0,
           batch_size: int = 16, device: torch.device | str = "cpu",
           progress: Callable[[str], None] | None = None, temperature: float = 1.0,
           proportions: np.ndarray | None = None, servo: float = 0.0) -> Samples:
    """Draw ``n`` realisations of ``size x size`` pixels.

    Args:
        model: A network ``(x, mask) -> logits`` with attribute ``n_classes``.
        n: Number of realisations.
        size: Image side in pixels, or ``(height, width)``; the network is fully convolutional, so
            grids larger than its training patch work (each a multiple of ``2**(levels-1)``).
        budget: Network calls per realisation (at most the number of free pixels).
        hard: Hard data revealed first; every realisation honours all of them.
        seed: Seeds the orders and the categorical draws.
        batch_size: Realisations per network call.
        device: Where to run.
        progress: Called with a line about every tenth of the network calls (long runs on big grids).
        temperature: Divides the logits before each draw. 1 draws from the network's conditionals;
            below 1 sharpens them, which offsets the independent draws of the many pixels revealed
            in one call (they cannot see each other, so a chunk comes out noisier than the joint).
        proportions: Target facies proportions ``(K,)`` for the servosystem (those of the training image).
        servo: Servosystem strength in [0, 1]; 0 draws from the network as it is. See :func:`servo_bias`.
    """
    if servo > 0 and proportions is None:
        raise ValueError("a servosystem (servo > 0) needs the target proportions")
    model.eval()
    device = torch.device(device)
    height, width = (size, size) if isinstance(size, int) else size
    d = height * width
    generator = torch.Generator(device=device).manual_seed(seed)
    if hard is not None and len(hard):
        inside = (hard.rows >= 0) & (hard.rows < height) & (hard.cols >= 0) & (hard.cols < width)
        if not inside.all():
            i = int(np.flatnonzero(~inside)[0])
            raise ConfigError(f"hard datum {i} at (row {hard.rows[i]}, col {hard.cols[i]}) is outside the "
                              f"{height}x{width} image")
        flat = torch.as_tensor(hard.rows * width + hard.cols, device=device)
        cats = torch.as_tensor(hard.cats, device=device)
    else:
        flat = torch.zeros(0, dtype=torch.long, device=device)
        cats = torch.zeros(0, dtype=torch.long, device=device)
    n_free = d - len(flat)
    target = None if proportions is None else torch.as_tensor(proportions, dtype=torch.float32, device=device)
    edges = torch.as_tensor(chunk_edges(n_free, budget), device=device)
    out, entropy = [], None
    n_calls = -(-n // batch_size) * (len(edges) - 1)
    every = max(1, n_calls // 10)
    done = 0
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        x = torch.zeros(b, d, dtype=torch.long, device=device)
        mask = torch.zeros(b, d, dtype=torch.bool, device=device)
        x[:, flat] = cats
        mask[:, flat] = True
        keys = torch.rand(b, d, generator=generator, device=device)
        keys[:, flat] = -1.0  # hard data come first in every order
        rank = keys.argsort(1).argsort(1) - len(flat)  # free pixels: 0..n_free-1 along the order
        for k in range(len(edges) - 1):
            if n_free == 0:
                break
            logits = model(x.view(b, height, width), mask.view(b, height, width))  # (B, K, H, W)
            logits = logits.flatten(2).transpose(1, 2)  # (B, D, K)
            if entropy is None:
                logp = torch.log_softmax(logits[0].float(), dim=-1)
                ent = -(logp.exp() * logp).sum(-1) / LN2
                ent[flat] = 0.0  # known pixels carry no uncertainty
                entropy = ent.view(height, width).cpu().numpy()
            if target is not None and servo > 0:
                logits = logits + servo_bias(logits, x, mask, target, servo)
            u = torch.rand(logits.shape, generator=generator, device=device).clamp_(1e-20, 1.0)
            draw = (logits / temperature - torch.log(-torch.log(u))).argmax(-1)  # Gumbel-max: one categorical draw per pixel
            chosen = (rank >= edges[k]) & (rank < edges[k + 1])
            x = torch.where(chosen, draw, x)
            mask |= chosen
            done += 1
            if progress is not None and (done % every == 0 or done == n_calls):
                progress(f"sampling: {done}/{n_calls} network calls")
        out.append(x.view(b, height, width).cpu().numpy())
    if entropy is None:
        entropy = np.zeros((height, width))
    return Samples(images=np.concatenate(out), entropy=entropy, calls=len(edges) - 1 if n_free else 0)
