"""The OA-ARDM objective (Hoogeboom et al., ICLR 2022), its validation bound, EMA and one training step.

For an image of D pixels the order-agnostic bound is

    -log p(x) <= E_{t ~ U{1..D}} E_sigma [ D / (D - t + 1) * sum_{k in sigma(>= t)} -log p(x_k | x_sigma(<t)) ],

so one draw of ``t`` and a random order ``sigma`` per image, revealing the first ``t - 1`` pixels of
``sigma``, gives an unbiased estimate of the negative log-likelihood bound in nats.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

LN2 = math.log(2.0)


def draw_mask(batch: int, height: int, width: int, generator: torch.Generator,
              device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``t ~ U{1..D}`` and a random order per image; reveal the first ``t - 1`` pixels.

    Returns:
        ``mask`` ``(B, H, W)`` bool, True where revealed, and ``t`` ``(B,)`` int64.
    """
    d = height * width
    t = torch.randint(1, d + 1, (batch,), generator=generator)
    ranks = torch.rand(batch, d, generator=generator).argsort(1).argsort(1)  # position of each pixel in sigma
    mask = ranks < (t - 1)[:, None]
    return mask.view(batch, height, width).to(device), t.to(device)


def ardm_loss(logits: torch.Tensor, x: torch.Tensor, mask: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Per-image OA-ARDM loss in nats: ``D / (D - t + 1) * sum of NLL over unrevealed pixels``.

    Args:
        logits: ``(B, K, H, W)`` class logits.
        x: ``(B, H, W)`` true categories.
        mask: ``(B, H, W)`` bool, True where revealed (those pixels do not count).
        t: ``(B,)`` the step each image was drawn at; ``mask`` reveals ``t - 1`` pixels.

    Returns:
        ``(B,)`` loss per image; its mean over a batch estimates the NLL bound per image.
    """
    d = x.shape[-2] * x.shape[-1]
    nll = F.cross_entropy(logits, x, reduction="none")  # (B, H, W): the class axis is already reduced
    unrevealed = (~mask).to(nll.dtype)
    return (nll * unrevealed).flatten(1).sum(1) * d / (d - t + 1).to(nll.dtype)


class Ema:
    """Exponential moving average of a model's weights, with the usual warm-up of the decay.

    The effective decay is ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so that short
    runs (a quick study) are not dominated by the initial weights.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for ema_p, p in zip(self.model.parameters(), model.parameters()):
            ema_p.lerp_(p.detach(), 1.0 - d)
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, generator: torch.Generator,
               grad_clip: float) -> float:
    """One optimisation step on a batch ``x`` ``(B, H, W)``; returns the batch loss in bits per pixel."""
    b, h, w = x.shape
    mask, t = draw_mask(b, h, w, generator, x.device)
    loss = ardm_loss(model(x, mask), x, mask, t).mean() / (h * w * LN2)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def bits_per_pixel(model: nn.Module, images: torch.Tensor, *, repeats: int, seed: int, batch_size: int) -> float:
    """The OA-ARDM negative log-likelihood bound of ``images`` ``(N, H, W)``, in bits per pixel.

    The draws of ``t`` and orders come from ``seed``, so the value is comparable between epochs.
    """
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    n, h, w = images.shape
    total = 0.0
    for _ in range(repeats):
        for start in range(0, n, batch_size):
            x = images[start: start + batch_size]
            mask, t = draw_mask(len(x), h, w, generator, x.device)
            total += float(ardm_loss(model(x, mask), x, mask, t).sum())
    model.train(was_training)
    return total / (n * repeats * h * w * LN2)
