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
class NetcdfNames:
    variable: str = "los"  # the LOS variable
    x: str = "x"  # coordinate (dimension) names
    y: str = "y"
    incidence: str = "incidence"  # variables read when a geometry file is a NetCDF
    heading: str = "heading"
    los: list[str] = field(default_factory=lambda: ["los_east", "los_north", "los_up"])  # LOS unit-vector components


@dataclass
class NpyGrid:
    spacing: float | None = None  # pixel size (m)
    origin: list[float] | None = None  # [x, y] of the centre of pixel [0, 0] (m)
    north_up: bool = True  # row 0 is the northernmost (image order); false: the southernmost

    def validate(self, file: str | Path | None, prefix: str) -> None:
        if self.spacing is not None:
            check_range(self.spacing, f"{prefix}spacing", file=file, low=0, low_open=True)
        if self.origin is not None and len(self.origin) != 2:
            raise ConfigError(f"must be [x, y] (m), but got {self.origin!r}", file=file, key=f"{prefix}origin")


@dataclass
class GeometryConfig:
    incidence_deg: float | None = None  # null: the checkpoint's data.los.incidence_deg
    heading_deg: float | None = None  # null: the checkpoint's data.los.heading_deg
    incidence_map: str | None = None  # per-pixel incidence (deg) on the map's grid
    heading_map: str | None = None  # per-pixel heading (deg)
    los_map: str | None = None  # 3 bands/components: unit vector ground -> satellite (east, north, up)
    sign: Literal["towards", "away"] = "towards"  # positive map values: motion towards / away from the satellite

    def validate(self, file: str | Path | None, prefix: str) -> None:
        if self.incidence_deg is not None:
            check_range(self.incidence_deg, f"{prefix}incidence_deg", file=file, low=0, high=90, high_open=True)
        if self.heading_deg is not None:
            check_range(self.heading_deg, f"{prefix}heading_deg", file=file, low=-360, high=360)
        if self.los_map and (self.incidence_map or self.heading_map):
            raise ConfigError("give either los_map or incidence_map/heading_map, not both", file=file, key=f"{prefix}los_map")


@dataclass
class NuisanceConfig:
    offset: bool = True  # a constant (the reference point of relative InSAR)
    ramp: bool = True  # a plane a·x + b·y (orbit errors)


@dataclass
class InvertConfig:
    checkpoint: str | None = None
    map: str | None = None
    format: Literal["auto", "geotiff", "netcdf", "npy"] = "auto"
    units: Literal["auto", "m", "cm", "mm", "m/yr", "cm/yr", "mm/yr"] = "auto"
    band: int = 1
    netcdf: NetcdfNames = field(default_factory=NetcdfNames)
    grid: NpyGrid = field(default_factory=NpyGrid)
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    nuisance: NuisanceConfig = field(default_factory=NuisanceConfig)
    refine: bool = True
    level: float = 0.9
    min_valid: int = 100
    max_pixels: int = 600  # the refinement fits at most this many pixels (a regular subsample beyond)
    figures: bool = True

    def validate(self, file: str | Path | None, prefix: str) -> None:
        check_range(self.band, f"{prefix}band", file=file, low=1)
        check_range(self.level, f"{prefix}level", file=file, low=0, high=1, low_open=True, high_open=True)
        check_range(self.min_valid, f"{prefix}min_valid", file=file, low=10)
        check_range(self.max_pixels, f"{prefix}max_pixels", file=file, low=100)


@dataclass
class MogiConfig:
    learner: str = "mogi"
    seed: int = 0
    mode: Literal["train", "matrix", "invert"] = "train"
    device: str = "auto"
    threads: int = 1
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    matrix: MatrixConfig = field(default_factory=MatrixConfig)
    invert: InvertConfig = field(default_factory=InvertConfig)

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
        if self.mode == "invert":
            for name, hint in (("checkpoint", "PATH/mogi_model.pt"), ("map", "FILE.tif|.nc|.npy")):
                if not getattr(self.invert, name):
                    raise ConfigError(f"mode: invert needs invert.{name} (--set invert.{name}={hint})", file=file,
                                      key=f"{prefix}invert.{name}")


def parse_config(config: Mapping[str, Any], *, file: str | Path | None = None) -> MogiConfig:
    return to_dataclass(MogiConfig, config, file=file)
