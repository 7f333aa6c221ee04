"""Synthetic LOS map files with a known Mogi source: what ``mode: invert`` should recover.

``python -m geostudy.learners.mogi.synthetic_map out/volcano_los.tif`` writes a GeoTIFF (UTM 33N,
500 m pixels, 60 x 50 km, values in mm) of a source 4 km deep with ΔV = 2e7 m³, 1 cm of correlated
noise over 6 km, an offset, a ramp and 10 % of the pixels lost (nodata), and prints the truth; a
``.nc`` or ``.npy`` path writes that format instead (``.npy``: metres, north-up, with the
``invert.grid`` values to pass printed). Tests and the bench build their maps with
:func:`synthetic_los` and :func:`write_map`.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from geostudy.io.grid import file_format, write_geotiff, write_netcdf
from geostudy.learners.mogi.forward import mogi_displacements, project_los
from geostudy.learners.mogi.noise import correlated_noise

CRS = "EPSG:32633"  # WGS 84 / UTM zone 33N


@dataclass
class MapSpec:
    """A synthetic map: grid (m), source (x0/y0 in m), geometry, noise, nuisance and holes."""

    nx: int = 60
    ny: int = 50
    spacing_m: float = 500.0
    origin: tuple[float, float] = (500250.0, 4000250.0)  # centre of the south-west pixel (m)
    source: dict[str, float] = field(default_factory=lambda: {"x0": 517000.0, "y0": 4011000.0, "depth_km": 4.0,
                                                              "dv_m3": 2.0e7, "nu": 0.25})
    incidence_deg: float = 34.0
    heading_deg: float = -10.0
    noise_m: float = 0.01  # std of the correlated (exponential) noise
    noise_length_km: float = 6.0
    white_m: float = 0.002
    offset_m: float = 0.02
    ramp_per_km: tuple[float, float] = (3e-4, -2e-4)  # m per km east, north (from the map's centre)
    nan_fraction: float = 0.1

    def axes(self) -> tuple[np.ndarray, np.ndarray]:
        """Increasing pixel-centre x and y (m)."""
        return (self.origin[0] + self.spacing_m * np.arange(self.nx), self.origin[1] + self.spacing_m * np.arange(self.ny))


def synthetic_los(spec: MapSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x, y, los)``: axes (m) and the LOS map (m, positive towards the satellite, rows south to north, NaN holes)."""
    x, y = spec.axes()
    gx, gy = np.meshgrid(x, y)
    s = spec.source
    ux, uy, uz = mogi_displacements((gx - s["x0"]) / 1000.0, (gy - s["y0"]) / 1000.0, 0.0, 0.0, s["depth_km"], s["dv_m3"],
                                    s.get("nu", 0.25))
    los = project_los(ux, uy, uz, spec.incidence_deg, spec.heading_deg)
    xc, yc = (x[0] + x[-1]) / 2, (y[0] + y[-1]) / 2
    los = los + spec.offset_m + spec.ramp_per_km[0] * (gx - xc) / 1000.0 + spec.ramp_per_km[1] * (gy - yc) / 1000.0
    n = max(spec.nx, spec.ny)
    los = los + correlated_noise(rng, 1, n, spec.spacing_m / 1000.0, "exponential", spec.noise_length_km,
                                 spec.noise_m)[0, :spec.ny, :spec.nx]
    los = los + spec.white_m * rng.standard_normal(los.shape)
    if spec.nan_fraction > 0:
        los[rng.random(los.shape) < spec.nan_fraction] = np.nan
    return x, y, los


def write_map(path: str | Path, x: np.ndarray, y: np.ndarray, los_m: np.ndarray, *, units: str = "mm",
              crs: str = CRS) -> Path:
    """Write a LOS map (m) as GeoTIFF (nodata -9999) or NetCDF in ``units``, or as ``.npy`` in metres, north-up."""
    kind = file_format(path)
    scale = {"m": 1.0, "cm": 100.0, "mm": 1000.0}[units]
    if kind == "geotiff":
        return write_geotiff(path, los_m * scale, x, y, crs, nodata=-9999.0, units=units)
    if kind == "netcdf":
        return write_netcdf(path, {"los": los_m * scale}, x, y, units={"los": units}, crs=crs)
    np.save(path, los_m[::-1])
    return Path(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a synthetic LOS map with a known Mogi source.")
    parser.add_argument("path", help="output file: .tif, .nc or .npy")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    spec = MapSpec()
    x, y, los = synthetic_los(spec, np.random.default_rng(args.seed))
    Path(args.path).parent.mkdir(parents=True, exist_ok=True)
    write_map(args.path, x, y, los)
    truth = {**spec.source, "offset_m": spec.offset_m, "ramp_per_km": list(spec.ramp_per_km)}
    if file_format(args.path) == "npy":
        truth["invert.grid"] = {"spacing": spec.spacing_m, "origin": [float(x[0]), float(y[-1])], "north_up": True}
    print(json.dumps(truth))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
