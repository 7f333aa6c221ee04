"""Synthetic interferograms: source parameters from the spec -> LOS (or phase) maps with noise."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from geostudy.config import check_range
from geostudy.learners.mogi.forward import grid_coords, mogi_displacements, project_los, wrap_phase
from geostudy.learners.mogi.noise import correlated_noise, holes_mask
from geostudy.learners.mogi.spec import DatasetSpec, parse_spec


@dataclass
class GridConfig:
    n: int = 64  # pixels per side
    extent_km: float = 40.0  # side of the square map, centred on (0, 0)

    def validate(self, file: str | Path | None, prefix: str) -> None:
        check_range(self.n, f"{prefix}n", file=file, low=8, high=1024)
        check_range(self.extent_km, f"{prefix}extent_km", file=file, low=0, low_open=True)


@dataclass
class LosConfig:
    incidence_deg: float = 34.0
    heading_deg: float = -10.0
    wavelength_m: float | None = None  # wrap to phase for this radar wavelength (Sentinel-1: 0.0555)

    def validate(self, file: str | Path | None, prefix: str) -> None:
        check_range(self.incidence_deg, f"{prefix}incidence_deg", file=file, low=0, high=90, high_open=True)
        if self.wavelength_m is not None:
            check_range(self.wavelength_m, f"{prefix}wavelength_m", file=file, low=0, low_open=True)


@dataclass
class NoiseConfig:
    kind: Literal["exponential", "gaussian"] = "exponential"
    length_km: float = 6.0
    amplitude_m: float = 0.01
    white_m: float = 0.002
    holes_fraction: float = 0.0
    holes_size_km: float = 3.0

    def validate(self, file: str | Path | None, prefix: str) -> None:
        check_range(self.length_km, f"{prefix}length_km", file=file, low=0, low_open=True)
        check_range(self.amplitude_m, f"{prefix}amplitude_m", file=file, low=0)
        check_range(self.white_m, f"{prefix}white_m", file=file, low=0)
        check_range(self.holes_fraction, f"{prefix}holes_fraction", file=file, low=0, high=0.9)
        check_range(self.holes_size_km, f"{prefix}holes_size_km", file=file, low=0, low_open=True)


@dataclass
class DataConfig:
    grid: GridConfig = field(default_factory=GridConfig)
    los: LosConfig = field(default_factory=LosConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    spec: dict[str, Any] = field(default_factory=dict)

    def validate(self, file: str | Path | None, prefix: str) -> None:
        parse_spec(self.spec, file=file, key=f"{prefix}spec")


class Simulator:
    """Maps of a given data config: ``simulate(values)`` -> ``(B, n, n)`` LOS metres or phase radians.

    Holes are NaN. The same simulator serves training, evaluation, the baseline and the matrix.
    """

    def __init__(self, cfg: DataConfig, file: str | Path | None = None) -> None:
        self.cfg = cfg
        self.spec: DatasetSpec = parse_spec(cfg.spec, file=file, key="data.spec")
        self.x, self.y = grid_coords(cfg.grid.n, cfg.grid.extent_km)
        self.x32, self.y32 = self.x.astype(np.float32), self.y.astype(np.float32)
        self.dx = cfg.grid.extent_km / cfg.grid.n

    @property
    def wrapped(self) -> bool:
        return self.cfg.los.wavelength_m is not None

    def clean_los(self, values: Mapping[str, np.ndarray], x: np.ndarray | None = None,
                  y: np.ndarray | None = None) -> np.ndarray:
        """Noise-free LOS displacement (m) for each sample, on the grid or on points ``(x, y)``."""
        ux, uy, uz = mogi_displacements(self.x if x is None else x, self.y if y is None else y, values["x0_km"],
                                        values["y0_km"], values["depth_km"], values["dv_m3"], values["nu"])
        return project_los(ux, uy, uz, self.cfg.los.incidence_deg, self.cfg.los.heading_deg)

    def noise(self, rng: np.random.Generator, batch: int) -> np.ndarray:
        nc, n = self.cfg.noise, self.cfg.grid.n
        out = correlated_noise(rng, batch, n, self.dx, nc.kind, nc.length_km, nc.amplitude_m)
        if nc.white_m > 0:
            out += nc.white_m * rng.standard_normal(out.shape, dtype=np.float32)
        return out

    def simulate(self, values: Mapping[str, np.ndarray], rng: np.random.Generator | None,
                 chunk: int = 1024) -> np.ndarray:
        """Observed maps (float32): LOS + noise (+ wrapping, + holes). ``rng=None`` gives clean maps."""
        batch = len(values["depth_km"])
        n = self.cfg.grid.n
        out = np.empty((batch, n, n), dtype=np.float32)
        for start in range(0, batch, chunk):
            part = {k: np.asarray(v)[start:start + chunk] for k, v in values.items()}
            b = len(part["depth_km"])
            los = self.clean_los(part, self.x32, self.y32)
            if rng is not None:
                los = los + self.noise(rng, b)
            if self.wrapped:
                los = wrap_phase(los, self.cfg.los.wavelength_m)  # type: ignore[arg-type]
            if rng is not None and self.cfg.noise.holes_fraction > 0:
                mask = holes_mask(rng, b, n, self.dx, self.cfg.noise.holes_fraction, self.cfg.noise.holes_size_km)
                los = np.where(mask, np.nan, los)
            out[start:start + b] = los
        return out

    def draw(self, rng: np.random.Generator, n: int, split: str = "train") -> tuple[dict[str, np.ndarray], np.ndarray]:
        """``n`` source parameter sets from the spec and their noisy maps."""
        values = self.spec.sample(rng, n, split)
        return values, self.simulate(values, rng)
