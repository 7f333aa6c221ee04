"""A compact UNet for OA-ARDM: partly revealed one-hot image + mask in, per-pixel class logits out.

The network also sees the revealed fraction (a sinusoidal embedding added in every residual block),
which plays the role of the diffusion step t of the paper.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def model_input(x: torch.Tensor, mask: torch.Tensor, n_classes: int) -> torch.Tensor:
    """The network input: one-hot of ``x`` where revealed (zeros elsewhere) and the mask channel.

    Args:
        x: ``(B, H, W)`` category indices; values at unrevealed pixels are ignored.
        mask: ``(B, H, W)`` bool, True where revealed.

    Returns:
        ``(B, K+1, H, W)`` float tensor.
    """
    m = mask.to(torch.float32).unsqueeze(1)  # (B, 1, H, W): broadcasts over the K class channels
    onehot = F.one_hot(x.clamp(0, n_classes - 1), n_classes).permute(0, 3, 1, 2).to(torch.float32)
    return torch.cat([onehot * m, m], dim=1)


def _groups(channels: int) -> int:
    return math.gcd(channels, 8)


def _embed(fraction: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=fraction.device, dtype=torch.float32) / half)
    args = fraction[:, None] * 1000.0 * freqs[None, :]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.silu(self.norm1(h)))
        out = out + self.emb(emb)[:, :, None, None]
        out = self.conv2(self.drop(F.silu(self.norm2(out))))
        return out + self.skip(h)


def _window_edges(n: int, window: int) -> list[int]:
    """Edges of ``ceil(n / window)`` nearly equal windows covering ``0..n`` (each at most ``window``)."""
    count = -(-n // window)
    return [(i * n) // count for i in range(count + 1)]


class Attention(nn.Module):
    """Single-head self-attention over the pixels of a level, within windows of at most ``window`` x
    ``window`` of them (``None``: over all of them).

    The window is the extent of a training patch at this level: on a patch-sized grid it is global
    attention, and on a larger grid every pixel attends over the context the network was trained on
    (not a softmax over far more pixels than it ever saw), at a cost linear in the area instead of
    quadratic.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        self.window: int | None = None

    @staticmethod
    def _attend(qkv: torch.Tensor) -> torch.Tensor:
        """``(B, 3C, h, w)`` -> ``(B, C, h, w)``: attention over all ``h * w`` pixels."""
        b, c3, hh, ww = qkv.shape
        c = c3 // 3
        q, k, v = qkv.reshape(b, 3, c, hh * ww).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, hw, C)
        return out.transpose(-1, -2).reshape(b, c, hh, ww)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = h.shape
        qkv = self.qkv(self.norm(h))
        window = self.window
        if window is None or (hh <= window and ww <= window):
            return h + self.proj(self._attend(qkv))
        rows, cols = _window_edges(hh, window), _window_edges(ww, window)
        wh, wc = rows[1], cols[1]
        if hh % wh == 0 and ww % wc == 0:  # equal windows: one batched call
            nr, nc = hh // wh, ww // wc
            tiles = qkv.reshape(b, 3 * c, nr, wh, nc, wc).permute(0, 2, 4, 1, 3, 5).reshape(b * nr * nc, 3 * c, wh, wc)
            out = self._attend(tiles).reshape(b, nr, nc, c, wh, wc).permute(0, 3, 1, 4, 2, 5).reshape(b, c, hh, ww)
        else:
            out = torch.empty_like(h)
            for r0, r1 in zip(rows, rows[1:]):
                for c0, c1 in zip(cols, cols[1:]):
                    out[:, :, r0:r1, c0:c1] = self._attend(qkv[:, :, r0:r1, c0:c1])
        return h + self.proj(out)


class UNet(nn.Module):
    """UNet with ``len(widths)`` levels, ``depth`` residual blocks per level, attention where asked.

    Args:
        n_classes: K, the number of categories.
        widths: Channels per level, full resolution first; each further level halves H and W.
        depth: Residual blocks per level (the decoder has ``depth + 1``, one per skip).
        attention_levels: Levels (0 = full resolution) that get self-attention after each block.
        dropout: Dropout inside the residual blocks.
        attention_window: The training patch side in pixels: attention at level ``l`` runs within
            windows of ``attention_window / 2**l`` pixels of that level (see :class:`Attention`);
            ``None`` attends over the whole grid at every size.
    """

    def __init__(self, n_classes: int, widths: Sequence[int], depth: int = 2,
                 attention_levels: Sequence[int] = (), dropout: float = 0.0,
                 attention_window: int | None = None) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.n_levels = len(widths)
        emb_dim = 4 * widths[0]
        self.emb_dim = emb_dim
        self.emb_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.conv_in = nn.Conv2d(n_classes + 1, widths[0], 3, padding=1)
        attn = set(attention_levels)

        self.down = nn.ModuleList()
        self.down_attn = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips = [widths[0]]
        ch = widths[0]
        for level, width in enumerate(widths):
            for _ in range(depth):
                self.down.append(ResBlock(ch, width, emb_dim, dropout))
                self.down_attn.append(Attention(width) if level in attn else nn.Identity())
                ch = width
                skips.append(ch)
            if level < self.n_levels - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.mid1 = ResBlock(ch, ch, emb_dim, dropout)
        self.mid_attn = Attention(ch) if attn else nn.Identity()
        self.mid2 = ResBlock(ch, ch, emb_dim, dropout)

        self.up = nn.ModuleList()
        self.up_attn = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level in reversed(range(self.n_levels)):
            width = widths[level]
            for _ in range(depth + 1):
                self.up.append(ResBlock(ch + skips.pop(), width, emb_dim, dropout))
                self.up_attn.append(Attention(width) if level in attn else nn.Identity())
                ch = width
            if level > 0:
                self.upsample.append(nn.Conv2d(ch, ch, 3, padding=1))
        self.depth = depth
        self.norm_out = nn.GroupNorm(_groups(ch), ch)
        self.conv_out = nn.Conv2d(ch, n_classes, 3, padding=1)
        self.set_attention_window(attention_window)

    def set_attention_window(self, pixels: int | None) -> None:
        """Attend within windows of ``pixels`` full-resolution pixels (the training patch), or globally."""
        self.attention_window = pixels
        levels = [lv for lv in range(self.n_levels) for _ in range(self.depth)]  # down_attn's levels
        levels += [lv for lv in reversed(range(self.n_levels)) for _ in range(self.depth + 1)]  # up_attn's
        modules = list(self.down_attn) + list(self.up_attn) + [self.mid_attn]
        for module, level in zip(modules, levels + [self.n_levels - 1]):
            if isinstance(module, Attention):
                module.window = None if pixels is None else max(1, pixels >> level)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K, H, W)`` for category indices ``x`` revealed where ``mask`` is True."""
        inp = model_input(x, mask, self.n_classes)
        fraction = mask.flatten(1).to(torch.float32).mean(1)
        emb = self.emb_mlp(_embed(fraction, self.emb_dim))
        h = self.conv_in(inp)
        hs = [h]
        blocks = iter(zip(self.down, self.down_attn))
        for level in range(self.n_levels):
            for _ in range(self.depth):
                block, attn = next(blocks)
                h = attn(block(h, emb))
                hs.append(h)
            if level < self.n_levels - 1:
                h = self.downsample[level](h)
                hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        blocks = iter(zip(self.up, self.up_attn))
        for i, level in enumerate(reversed(range(self.n_levels))):
            for _ in range(self.depth + 1):
                block, attn = next(blocks)
                h = attn(block(torch.cat([h, hs.pop()], dim=1), emb))
            if level > 0:
                h = self.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))
