"""The mogi learner's typed config (every key is documented in ``configs/mogi.yaml``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from geostudy.config import check_range, to_dataclass
from geostudy.errors import ConfigError
from geostudy.learners.mogi.data import DataConfig
from geostudy.learners.mogi.model import ModelConfig
from geostudy.learners.mogi.spec import VARIABLES, parse_spec
from geostudy.nn.training import OptimConfig as BaseOptimConfig

REQUIRED_TARGETS = ("depth_km", "dv_m3")


@dataclass
class OptimConfig(BaseOptimConfig):
    lr: float = 2.0e-3
    schedule: Literal["onecycle", "none"] = "onecycle"


@dataclass
class TrainConfig:
    epochs: int = 12
    n_train: int = 8192
    n_val: int = 1024
    n_test: int = 1024
    data: Literal["fixed", "on_the_fly"] = "fixed"
    batch_size: int = 64
    loss: Literal["mse", "mae"] = "mse"

    def validate(self, file: str | Path | None, prefix: str) -> None:
        check_range(self.epochs, f"{prefix}epochs", file=file, low=1)
        for name in ("n_train", "n_val", "n_test"):
            check_range(getattr(self, name), f"{prefix}{name}", file=file, low=2)
        check_range(self.batch_size, f"{prefix}batch_size", file=file, low=2)


@dataclass
class EvalConfig:
    baseline_maps: int = 64  # final runs: test maps also inverted by least squares (0: none)
    baseline_bounds: Literal["prior", "physical"] = "prior"
    figures: bool = True

    def validate(self, file: str | Path | None, prefix: str) -> None:
        check_range(self.baseline_maps, f"{prefix}baseline_maps", file=file, low=0)


@dataclass
class MatrixAxis:
    var: str = "depth_km"
    low: float | None = None  # null: the low end of the variable's test range in the checkpoint's spec
    high: float | None = None
    n: int = 128
    log: bool | None = None  # null: log spacing for loguniform/lognormal variables

    def validate(self, file: str | Path | None, prefix: str) -> None:
        if self.var not in VARIABLES:
            raise ConfigError(f"unknown variable {self.var!r}; allowed: {', '.join(VARIABLES)}", file=file, key=f"{prefix}var")
        check_range(self.n, f"{prefix}n", file=file, low=1, high=2048)
        if self.low is not None and self.high is not None and not self.low < self.high:
            raise ConfigError(f"low must be < high, but got low={self.low!r}, high={self.high!r}", file=file, key=f"{prefix}low")


@dataclass
class MatrixConfig:
    checkpoint: str | None = None  # a mogi_model.pt written by a final train run
    x: MatrixAxis = field(default_factory=lambda: MatrixAxis("depth_km"))
    y: MatrixAxis = field(default_factory=lambda: MatrixAxis("dv_m3"))
    fixed: dict[str, float] = field(default_factory=dict)  # values of the other variables (default: central)
    noise: bool = True  # add the checkpoint's noise (seeded) to the maps, or predict on clean maps
    batch_size: int = 1024

    def validate(self, file: str | Path | None, prefix: str) -> None:
        if self.x.var == self.y.var:
            raise ConfigError(f"x and y must be different variables, but both are {self.x.var!r}", file=file, key=f"{prefix}y.var")
        for var, value in self.fixed.items():
            if var not in VARIABLES:
                raise ConfigError(f"unknown variable {var!r}; allowed: {', '.join(VARIABLES)}", file=file, key=f"{prefix}fixed.{var}")
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ConfigError(f"must be a number, but got {value!r}", file=file, key=f"{prefix}fixed.{var}")
        check_range(self.batch_size, f"{prefix}batch_size", file=file, low=1)


@dataclass
class MogiConfig:
    learner: str = "mogi"
    seed: int = 0
    mode: Literal["train", "matrix"] = "train"
    device: str = "auto"
    threads: int = 1
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    matrix: MatrixConfig = field(default_factory=MatrixConfig)

    def validate(self, file: str | Path | None, prefix: str) -> None:
        check_range(self.threads, f"{prefix}threads", file=file, low=0)
        spec = parse_spec(self.data.spec, file=file, key=f"{prefix}data.spec")
        targets = self.model.targets
        for i, var in enumerate(targets):
            if var not in spec.distributions:
                raise ConfigError(f"{var!r} is not a varying variable of data.spec; varying: {', '.join(spec.distributions)}",
                                  file=file, key=f"{prefix}model.targets[{i}]")
        missing = [t for t in REQUIRED_TARGETS if t not in targets]
        if missing or len(set(targets)) != len(targets):
            raise ConfigError(f"must hold {' and '.join(REQUIRED_TARGETS)} once each (plus any other varying variable), "
                              f"but got {targets!r}", file=file, key=f"{prefix}model.targets")
        if self.mode == "matrix" and not self.matrix.checkpoint:
            raise ConfigError("mode: matrix needs a checkpoint (--set matrix.checkpoint=PATH/mogi_model.pt)", file=file,
                              key=f"{prefix}matrix.checkpoint")


def parse_config(config: Mapping[str, Any], *, file: str | Path | None = None) -> MogiConfig:
    return to_dataclass(MogiConfig, config, file=file)
