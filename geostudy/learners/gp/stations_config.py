"""Typed config of the GP learner's station path: ``data.stations`` and ``output`` (see ``configs/gp.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from geostudy.config import check_range
from geostudy.errors import ConfigError


@dataclass
class StationColumns:
    """Column (CSV) or variable (NetCDF) name of each role."""

    station: str = "station"
    x: str = "x"
    y: str = "y"
    time: str = "time"
    value: str = "value"

    def as_dict(self) -> dict[str, str]:
        return {"station": self.station, "x": self.x, "y": self.y, "time": self.time, "value": self.value}


@dataclass
class StationSimConfig:
    """Synthetic stations (``data.path: null``): a space×time field with known truth, see ``stations_sim``."""

    n_stations: int = 40
    n_times: int = 30
    p_missing: float = 0.1
    noise: float = 0.2
    space_lengthscale: float = 0.25
    time_lengthscale: float = 4.0
    cycle: float = 0.4
    trend: float = 1.0
    step_hours: float = 3.0
    extent_m: float = 100000.0

    def validate(self, file: str | Path | None, prefix: str) -> None:
        check_range(self.n_stations, f"{prefix}n_stations", file=file, low=3)
        check_range(self.n_times, f"{prefix}n_times", file=file, low=1)
        check_range(self.p_missing, f"{prefix}p_missing", file=file, low=0, high=1, high_open=True)
        check_range(self.noise, f"{prefix}noise", file=file, low=0)
        check_range(self.space_lengthscale, f"{prefix}space_lengthscale", file=file, low=0, low_open=True)
        check_range(self.time_lengthscale, f"{prefix}time_lengthscale", file=file, low=0, low_open=True)
        check_range(self.cycle, f"{prefix}cycle", file=file, low=0)
        check_range(self.step_hours, f"{prefix}step_hours", file=file, low=0, low_open=True)
        check_range(self.extent_m, f"{prefix}extent_m", file=file, low=0, low_open=True)


@dataclass
class StationsConfig:
    format: Literal["auto", "csv", "netcdf"] = "auto"
    coords: Literal["xy", "lonlat"] = "xy"
    columns: StationColumns = field(default_factory=StationColumns)
    station_dim: str = "station"
    units: str | None = None
    synthetic: StationSimConfig = field(default_factory=StationSimConfig)


@dataclass
class GridConfig:
    """The output grid: a template NetCDF's coordinates, else an extent and a resolution (or a size)."""

    extent: list[float] | None = None
    resolution: float | None = None
    size: int = 50
    pad: float = 0.05
    template: str | None = None

    def validate(self, file: str | Path | None, prefix: str) -> None:
        if self.extent is not None:
            if len(self.extent) != 4 or not (self.extent[0] < self.extent[1] and self.extent[2] < self.extent[3]):
                raise ConfigError(f"must be [xmin, xmax, ymin, ymax] with xmin < xmax and ymin < ymax, but got "
                                  f"{self.extent!r}", file=file, key=f"{prefix}extent")
        if self.resolution is not None:
            check_range(self.resolution, f"{prefix}resolution", file=file, low=0, low_open=True)
        check_range(self.size, f"{prefix}size", file=file, low=2)
        check_range(self.pad, f"{prefix}pad", file=file, low=0)


@dataclass
class OutputConfig:
    grid: GridConfig = field(default_factory=GridConfig)
    times: list[str | float] | None = None
    netcdf: bool = True
    memory_limit_gb: float | None = None

    def validate(self, file: str | Path | None, prefix: str) -> None:
        if self.memory_limit_gb is not None:
            check_range(self.memory_limit_gb, f"{prefix}memory_limit_gb", file=file, low=0, low_open=True)
        if self.times is not None and not self.times:
            raise ConfigError("must be null (all the data's times) or a non-empty list", file=file,
                              key=f"{prefix}times")
