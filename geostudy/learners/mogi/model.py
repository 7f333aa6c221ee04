"""Networks that invert a map for source parameters, and the input/target transforms around them.

Inputs: an unwrapped LOS map is divided by its own RMS over valid pixels (so the network sees the
shape of the pattern at unit scale) and the log of that RMS, standardised, enters the head as a
scalar (it carries the amplitude, hence ΔV). A wrapped map enters as cos φ and sin φ. A mask channel
marks the valid pixels; holes are zero. Targets: depth in km, ΔV as log10 m³ (x0, y0 in km, ν as is),
each standardised with the mean and std of its training draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from geostudy.config import check_range

LOG_TARGETS = {"dv_m3"}  # targets learned as log10


@dataclass
class ModelConfig:
    arch: Literal["cnn", "mlp"] = "cnn"
    targets: list[str] = field(default_factory=lambda: ["depth_km", "dv_m3"])
    width: int = 8  # CNN channels of the first stage (doubled at each later stage, up to 4x)
    depth: int = 3  # CNN stages: a residual block each, stride-2 downsampling between them
    kernel: int = 3  # CNN kernel size (odd; the stem uses kernel + 2)
    pool: int = 2  # average pooling of the input before the stem (1: none); also used by the MLP
    hidden: int = 128  # width of the head (CNN) or of the hidden layers (MLP)
    mlp_layers: int = 2  # hidden layers of the MLP
    dropout: float = 0.0

    def validate(self, file: str | Path | None, prefix: str) -> None:
        check_range(self.width, f"{prefix}width", file=file, low=1, high=512)
        check_range(self.depth, f"{prefix}depth", file=file, low=1, high=8)
        check_range(self.kernel, f"{prefix}kernel", file=file, low=1, high=15)
        check_range(self.pool, f"{prefix}pool", file=file, low=1, high=8)
        check_range(self.hidden, f"{prefix}hidden", file=file, low=1)
        check_range(self.mlp_layers, f"{prefix}mlp_layers", file=file, low=1, high=8)
        check_range(self.dropout, f"{prefix}dropout", file=file, low=0, high=1, high_open=True)
        if self.kernel % 2 == 0:
            from geostudy.errors import ConfigError

            raise ConfigError(f"must be odd, but got {self.kernel!r}", file=file, key=f"{prefix}kernel")


def map_features(maps: np.ndarray, wrapped: bool, mask: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(B, n, n)`` maps -> channels ``(B, C, n, n)`` float32 and the raw scalar ``(B, 1)`` (log RMS).

    Channels: the map over its RMS (or cos φ, sin φ when ``wrapped``), then the valid-pixel mask when
    ``mask`` (maps with holes). Holes (NaN) are zero in every channel.
    """
    maps = np.asarray(maps, dtype=np.float32)
    valid = ~np.isnan(maps)
    holes = not valid.all()
    filled = np.where(valid, maps, np.float32(0.0)) if holes else maps
    scalar = np.zeros((len(maps), 1), np.float32)
    if wrapped:
        chans = [np.cos(filled) * valid, np.sin(filled) * valid]
    else:
        count = valid.sum(axis=(1, 2)) if holes else np.full(len(maps), maps[0].size)
        rms = np.sqrt(np.einsum("bij,bij->b", filled, filled, dtype=np.float64) / np.maximum(count, 1)) + 1e-12
        chans = [filled * (1.0 / rms).astype(np.float32)[:, None, None]]
        scalar = np.log(rms)[:, None].astype(np.float32)
    if mask:
        chans.append(valid.astype(np.float32))
    return np.stack(chans, axis=1), scalar


def in_channels(wrapped: bool, mask: bool) -> int:
    return (2 if wrapped else 1) + int(mask)


class TargetTransform:
    """Physical values <-> standardised network outputs (log10 for ΔV)."""

    def __init__(self, targets: Sequence[str], mean: Sequence[float], std: Sequence[float]) -> None:
        self.targets = list(targets)
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)

    @staticmethod
    def transformed(var: str, values: np.ndarray) -> np.ndarray:
        """Physical -> the unit the network works in (log10 m³ for ΔV, otherwise unchanged)."""
        return np.log10(values) if var in LOG_TARGETS else np.asarray(values, dtype=np.float64)

    @staticmethod
    def physical(var: str, values: np.ndarray) -> np.ndarray:
        return 10.0 ** values if var in LOG_TARGETS else values

    @classmethod
    def fit(cls, targets: Sequence[str], values: dict[str, np.ndarray]) -> TargetTransform:
        t = np.stack([cls.transformed(v, values[v]) for v in targets], axis=1)
        return cls(targets, t.mean(axis=0), np.maximum(t.std(axis=0), 1e-6))

    def encode(self, values: dict[str, np.ndarray]) -> np.ndarray:
        t = np.stack([self.transformed(v, values[v]) for v in self.targets], axis=1)
        return ((t - self.mean) / self.std).astype(np.float32)

    def decode_transformed(self, z: np.ndarray) -> np.ndarray:
        """Standardised outputs ``(B, T)`` -> transformed units (km, log10 m³)."""
        return np.asarray(z, dtype=np.float64) * self.std + self.mean

    def state(self) -> dict[str, list]:
        return {"targets": self.targets, "mean": self.mean.tolist(), "std": self.std.tolist()}


class ResBlock(nn.Module):
    def __init__(self, width: int, kernel: int) -> None:
        super().__init__()
        pad = kernel // 2
        self.body = nn.Sequential(
            nn.Conv2d(width, width, kernel, padding=pad, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, kernel, padding=pad, bias=False), nn.BatchNorm2d(width),
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class MogiCNN(nn.Module):
    """Average pooling by ``pool``, a stride-2 stem, then ``depth`` stages of a residual block, each
    but the last followed by a stride-2 convolution that doubles the width (at most 4x), then global
    mean and max pooling and a small head that also takes the amplitude scalar.

    The pooling and the stride-2 stem keep the cost per map low (the Mogi pattern is smooth): with
    64 x 64 maps and ``pool: 2`` the residual blocks run at 16 x 16, 8 x 8 and 4 x 4.
    """

    def __init__(self, in_ch: int, n_out: int, cfg: ModelConfig) -> None:
        super().__init__()
        w, k = cfg.width, cfg.kernel
        layers: list[nn.Module] = [nn.AvgPool2d(cfg.pool)] if cfg.pool > 1 else []
        layers += [nn.Conv2d(in_ch, w, k + 2, stride=2, padding=(k + 2) // 2, bias=False), nn.BatchNorm2d(w),
                   nn.ReLU(inplace=True)]
        for i in range(cfg.depth):
            layers.append(ResBlock(w, k))
            if i < cfg.depth - 1:
                w_next = min(2 * w, 4 * cfg.width)
                layers += [nn.Conv2d(w, w_next, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w_next),
                           nn.ReLU(inplace=True)]
                w = w_next
        self.features = nn.Sequential(*layers)
        # Mean and max pooling: the mean sees the pattern's extent, the max its peak.
        self.head = nn.Sequential(nn.Linear(2 * w + 1, cfg.hidden), nn.ReLU(inplace=True), nn.Dropout(cfg.dropout),
                                  nn.Linear(cfg.hidden, n_out))

    def forward(self, x: torch.Tensor, scalar: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        pooled = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3)), scalar], dim=1)
        return self.head(pooled)


class MogiMLP(nn.Module):
    """Baseline without convolutions: the (pooled) flattened map and the scalar through dense layers."""

    def __init__(self, in_ch: int, n_pix: int, n_out: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(cfg.pool) if cfg.pool > 1 else nn.Identity()
        dims = [in_ch * (n_pix // cfg.pool**2) + 1] + [cfg.hidden] * cfg.mlp_layers
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU(inplace=True), nn.Dropout(cfg.dropout)]
        layers.append(nn.Linear(dims[-1], n_out))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, scalar: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([self.pool(x).flatten(1), scalar], dim=1))


def build_model(cfg: ModelConfig, in_ch: int, n: int) -> nn.Module:
    if cfg.arch == "cnn":
        return MogiCNN(in_ch, len(cfg.targets), cfg)
    return MogiMLP(in_ch, n * n, len(cfg.targets), cfg)
