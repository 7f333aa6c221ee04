"""The ARDM learner's typed config (``configs/ardm.yaml`` documents every key)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from geostudy.config import check_range
from geostudy.errors import ConfigError


@dataclass
class GeneratorConfig:
    """The procedural training image (used when ``data.source`` is ``procedural``)."""

    kind: Literal["channels", "ellipses", "mixed"] = "mixed"
    size: int = 384
    n_channels: int = 12
    channel_width: float = 4.0
    n_ellipses: int = 40
    ellipse_axes: list[float] = field(default_factory=lambda: [3.0, 10.0])

    def validate(self, file: str | Path | None, prefix: str) -> None:
        check_range(self.size, f"{prefix}size", file=file, low=8)
        check_range(self.n_channels, f"{prefix}n_channels", file=file, low=0)
        check_range(self.channel_width, f"{prefix}channel_width", file=file, low=0, low_open=True)
        check_range(self.n_ellipses, f"{prefix}n_ellipses", file=file, low=0)
        if len(self.ellipse_axes) != 2 or not 0 < self.ellipse_axes[0] <= self.ellipse_axes[1]:
            raise ConfigError(f"must be [min, max] with 0 < min <= max, but got {self.ellipse_axes!r}", file=file,
                              key=f"{prefix}ellipse_axes")


@dataclass
class DataConfig:
    source: Literal["file", "procedural"] = "procedural"
    path: str | None = None
    n_categories: int = 3
    thresholds: list[float] | None = None
    codes: list[float] | None = None
    variable: int | str = 0
    grid: list[int] | None = None
    missing: float | None = -999.0
    downsample: int = 1
    patch: int = 64
    val_fraction: float = 0.2
    flips: bool = True
    rot90: bool = True
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)

    def validate(self, file: str | Path | None, prefix: str) -> None:
        check_range(self.n_categories, f"{prefix}n_categories", file=file, low=2, high=255)
        check_range(self.downsample, f"{prefix}downsample", file=file, low=1)
        check_range(self.patch, f"{prefix}patch", file=file, low=4)
        check_range(self.val_fraction, f"{prefix}val_fraction", file=file, low=0, high=1, low_open=True,
                    high_open=True)
        if self.source == "file" and not self.path:
            raise ConfigError("data.source: file needs a training image path (PNG, .npy or GSLIB), or set "
                              "data.source: procedural", file=file, key=f"{prefix}path")
        if self.codes is not None and (len(self.codes) != self.n_categories or len(set(self.codes)) != len(self.codes)):
            raise ConfigError(f"must list n_categories = {self.n_categories} distinct codes, but got {self.codes!r}",
                              file=file, key=f"{prefix}codes")
        if self.grid is not None and (len(self.grid) != 2 or min(self.grid) < 1):
            raise ConfigError(f"must be [nx, ny] with both >= 1, but got {self.grid!r}", file=file, key=f"{prefix}grid")
        if self.thresholds is not None:
            if len(self.thresholds) != self.n_categories - 1:
                raise ConfigError(f"must hold n_categories - 1 = {self.n_categories - 1} grey levels, but got "
                                  f"{len(self.thresholds)}", file=file, key=f"{prefix}thresholds")
            if any(b <= a for a, b in zip(self.thresholds, self.thresholds[1:])):
                raise ConfigError(f"must be strictly increasing, but got {self.thresholds!r}", file=file,
                                  key=f"{prefix}thresholds")


@dataclass
class ModelConfig:
    base_width: int = 32
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2])
    depth: int = 2
    attention: Literal["none", "lowest", "all"] | list[int] = "lowest"
    dropout: float = 0.0

    @property
    def widths(self) -> list[int]:
        return [self.base_width * m for m in self.channel_mult]

    def attention_levels(self) -> list[int]:
        n = len(self.channel_mult)
        if self.attention == "none":
            return []
        if self.attention == "lowest":
            return [n - 1]
        if self.attention == "all":
            return list(range(n))
        return list(self.attention)

    def validate(self, file: str | Path | None, prefix: str) -> None:
        check_range(self.base_width, f"{prefix}base_width", file=file, low=1)
        check_range(self.depth, f"{prefix}depth", file=file, low=1)
        check_range(self.dropout, f"{prefix}dropout", file=file, low=0, high=1, high_open=True)
        if not self.channel_mult or any(m < 1 for m in self.channel_mult):
            raise ConfigError(f"must be a non-empty list of integers >= 1, but got {self.channel_mult!r}",
                              file=file, key=f"{prefix}channel_mult")
        bad = [lv for lv in self.attention_levels() if not 0 <= lv < len(self.channel_mult)]
        if bad:
            raise ConfigError(f"levels must be in 0..{len(self.channel_mult) - 1} (one per channel_mult entry), "
                              f"but got {bad}", file=file, key=f"{prefix}attention")


@dataclass
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    ema: float = 0.999
    schedule: Literal["constant", "cosine"] = "constant"

    def validate(self, file: str | Path | None, prefix: str) -> None:
        check_range(self.lr, f"{prefix}lr", file=file, low=0, low_open=True)
        check_range(self.weight_decay, f"{prefix}weight_decay", file=file, low=0)
        check_range(self.grad_clip, f"{prefix}grad_clip", file=file, low=0)
        check_range(self.ema, f"{prefix}ema", file=file, low=0, high=1, high_open=True)


@dataclass
class TrainConfig:
    epochs: int = 20
    steps_per_epoch: int = 200
    batch_size: int = 32
    val_patches: int = 64
    val_repeats: int = 4

    def validate(self, file: str | Path | None, prefix: str) -> None:
        for name in ("epochs", "steps_per_epoch", "batch_size", "val_patches", "val_repeats"):
            check_range(getattr(self, name), f"{prefix}{name}", file=file, low=1)


@dataclass
class EvalConfig:
    n_samples: int = 16
    sample_size: int | None = None
    call_budget: int = 64
    temperature: float = 0.9
    servo: float = 0.25
    batch_size: int = 16
    n_hard: int = 20
    hard_data: list[list[int]] | None = None
    n_conditional: int = 8
    n_reference: int = 64
    max_lag: int | None = None

    def validate(self, file: str | Path | None, prefix: str) -> None:
        for name in ("n_samples", "call_budget", "batch_size", "n_conditional", "n_reference"):
            check_range(getattr(self, name), f"{prefix}{name}", file=file, low=1)
        check_range(self.temperature, f"{prefix}temperature", file=file, low=0.0, low_open=True, high=2.0)
        check_range(self.servo, f"{prefix}servo", file=file, low=0.0, high=1.0)
        check_range(self.n_hard, f"{prefix}n_hard", file=file, low=0)
        if self.sample_size is not None:
            check_range(self.sample_size, f"{prefix}sample_size", file=file, low=4)
        if self.max_lag is not None:
            check_range(self.max_lag, f"{prefix}max_lag", file=file, low=1)
        for i, datum in enumerate(self.hard_data or []):
            if len(datum) != 3:
                raise ConfigError(f"each hard datum must be [row, col, category], but got {datum!r}", file=file,
                                  key=f"{prefix}hard_data[{i}]")


@dataclass
class SimulateConfig:
    """``mode: simulate``: realisations of a trained checkpoint on a target grid, honouring wells."""

    checkpoint: str | None = None
    n_realisations: int = 10
    nx: int = 256
    ny: int = 256
    origin: list[float] = field(default_factory=lambda: [0.0, 0.0])
    spacing: list[float] = field(default_factory=lambda: [1.0, 1.0])
    hard_data: str | None = None
    columns: list[str] = field(default_factory=lambda: ["x", "y", "facies"])
    coordinates: Literal["grid", "world"] = "grid"
    call_budget: int = 256
    temperature: float = 0.9
    servo: float = 0.25
    proportions: list[float] | None = None
    batch_size: int = 4
    attention: Literal["window", "global"] = "window"

    def validate(self, file: str | Path | None, prefix: str) -> None:
        for name in ("n_realisations", "nx", "ny", "call_budget", "batch_size"):
            check_range(getattr(self, name), f"{prefix}{name}", file=file, low=1)
        check_range(self.temperature, f"{prefix}temperature", file=file, low=0.0, low_open=True, high=2.0)
        check_range(self.servo, f"{prefix}servo", file=file, low=0.0, high=1.0)
        if self.proportions is not None and (min(self.proportions, default=0) <= 0
                                             or abs(sum(self.proportions) - 1.0) > 1e-3):
            raise ConfigError(f"must be one share per facies (in the checkpoint's code order), each > 0, summing to "
                              f"1, but got {self.proportions!r}", file=file, key=f"{prefix}proportions")
        if len(self.origin) != 2:
            raise ConfigError(f"must be [x0, y0], but got {self.origin!r}", file=file, key=f"{prefix}origin")
        if len(self.spacing) != 2 or min(self.spacing) <= 0:
            raise ConfigError(f"must be [dx, dy] with both > 0, but got {self.spacing!r}", file=file,
                              key=f"{prefix}spacing")
        if len(self.columns) != 3:
            raise ConfigError(f"must name the [x, y, facies] columns, but got {self.columns!r}", file=file,
                              key=f"{prefix}columns")


@dataclass
class ArdmConfig:
    learner: str = "ardm"
    seed: int = 0
    mode: Literal["train", "simulate"] = "train"
    device: str = "auto"
    threads: int | None = None
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    simulate: SimulateConfig = field(default_factory=SimulateConfig)

    @property
    def sample_size(self) -> int:
        return self.eval.sample_size or self.data.patch

    def validate(self, file: str | Path | None, prefix: str) -> None:
        if self.threads is not None:
            check_range(self.threads, f"{prefix}threads", file=file, low=1)
        if self.mode == "simulate" and not self.simulate.checkpoint:
            raise ConfigError("mode: simulate needs the checkpoint.pt of a train run", file=file,
                              key=f"{prefix}simulate.checkpoint")
        factor = 2 ** (len(self.model.channel_mult) - 1)
        for key, size in ((f"{prefix}data.patch", self.data.patch), (f"{prefix}eval.sample_size", self.sample_size)):
            if size % factor:
                raise ConfigError(f"must be a multiple of 2**(levels-1) = {factor} for a UNet with "
                                  f"{len(self.model.channel_mult)} levels (model.channel_mult), but got {size}",
                                  file=file, key=key)
