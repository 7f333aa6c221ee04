"""A user's LOS map for ``mode: invert``: the file, its units, its viewing geometry, its valid pixels.

:func:`read_observed` reads ``invert.map`` through :mod:`geostudy.io.grid` (GeoTIFF, NetCDF or
``.npy`` with ``invert.grid``), converts the values to metres (or metres per year for a velocity map)
and to the forward model's sign (positive towards the satellite; ``geometry.sign: away`` flips it),
and attaches the unit vector from the ground to the satellite: one for the whole map from constant
``incidence_deg``/``heading_deg`` (default: the checkpoint's), or one per pixel from incidence and
heading rasters or from a 3-component LOS raster on the same grid. Pixels that are NaN, nodata or
masked in the map or in any geometry raster are left out of every fit.

Coordinates inside the inversion are km from the map's centre (``ref``); results go back to the
map's own coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geostudy.errors import DataError
from geostudy.io.grid import Raster, file_format, read_raster, sha256, unit_scale
from geostudy.learners.mogi.config import InvertConfig
from geostudy.learners.mogi.data import LosConfig
from geostudy.learners.mogi.forward import los_vector


@dataclass
class ObservedMap:
    """A map ready to invert.

    Attributes:
        raster: The file as read (values in its own unit, coordinates in its own unit).
        los: ``(ny, nx)`` LOS in metres (per year when ``rate``), positive towards the satellite, NaN where invalid.
        e: Unit vector(s) ground -> satellite (east, north, up): ``(3,)`` or ``(3, ny, nx)``.
        x_km, y_km: Pixel-centre axes in km from ``ref``.
        ref: ``(x, y)`` of the map's centre in the map's coordinate unit.
        rate: True for a velocity map (m/yr): ΔV is then a rate (m³/yr).
        sha256: Hex digest of the map file.
    """

    raster: Raster
    los: np.ndarray
    e: np.ndarray
    x_km: np.ndarray
    y_km: np.ndarray
    ref: tuple[float, float]
    rate: bool
    sha256: str

    @property
    def valid(self) -> np.ndarray:
        return np.isfinite(self.los)

    @property
    def spacing_km(self) -> float:
        return float(self.x_km[1] - self.x_km[0])

    def to_map_units(self, x_km: float, y_km: float) -> tuple[float, float]:
        """Inversion km -> the map's own coordinates."""
        c = self.raster.coord_m / 1000.0
        return self.ref[0] + x_km / c, self.ref[1] + y_km / c


def _read(inv: InvertConfig, path: str, key: str, bands: tuple[int, ...], variable: str) -> Raster:
    grid = inv.grid
    if file_format(path, inv.format if key == "invert.map" else "auto", key=key) == "npy" and (
            grid.spacing is None or grid.origin is None):
        raise DataError("a .npy map needs invert.grid.spacing and invert.grid.origin (metres)", file=path, key="invert.grid")
    return read_raster(path, fmt=inv.format if key == "invert.map" else "auto", variable=variable, x=inv.netcdf.x,
                       y=inv.netcdf.y, bands=bands, spacing=grid.spacing,
                       origin=None if grid.origin is None else (float(grid.origin[0]), float(grid.origin[1])),
                       north_up=grid.north_up, key=key)


def _same_grid(geo: Raster, ref: Raster, key: str) -> np.ndarray:
    if geo.values.shape[-2:] != ref.values.shape:
        raise DataError(f"grid of shape {geo.values.shape[-2:]} differs from the map's {ref.values.shape}; give it on the "
                        "map's grid", file=geo.path, key=key)
    tol = 1e-3 * min(ref.spacing)
    if ref.path and geo.path and (np.abs(geo.x * geo.coord_m - ref.x * ref.coord_m).max() > tol * ref.coord_m
                                  or np.abs(geo.y * geo.coord_m - ref.y * ref.coord_m).max() > tol * ref.coord_m):
        raise DataError("its coordinates differ from the map's; give it on the map's grid", file=geo.path, key=key)
    return geo.values


def _geometry(inv: InvertConfig, train_los: LosConfig, raster: Raster) -> np.ndarray:
    """Unit vectors ground -> satellite, ``(3,)`` or ``(3, ny, nx)`` (NaN where a raster has no data)."""
    g, names = inv.geometry, inv.netcdf
    if g.los_map:
        key = "invert.geometry.los_map"
        kind = file_format(g.los_map, key=key)
        if kind == "netcdf":
            parts = [_read(inv, g.los_map, key, (1,), v) for v in names.los]
            e = np.stack([_same_grid(p, raster, key) for p in parts])
        else:
            e = _same_grid(_read(inv, g.los_map, key, (1, 2, 3), names.los[0]), raster, key)
            if e.ndim != 3 or e.shape[0] != 3:
                raise DataError(f"must hold 3 components (east, north, up), but got shape {e.shape}", file=g.los_map, key=key)
        ok = np.isfinite(e).all(axis=0)
        norm = np.linalg.norm(e[:, ok], axis=0)
        if ok.any() and (np.abs(norm - 1).max() > 0.02 or (e[2, ok] <= 0).any()):
            raise DataError(f"must be unit vectors (east, north, up) from the ground to the satellite (up > 0), but norms "
                            f"range {norm.min():.3g}-{norm.max():.3g} and up {e[2, ok].min():.3g}-{e[2, ok].max():.3g}",
                            file=g.los_map, key=key)
        return np.where(ok, e / np.where(ok, np.linalg.norm(np.nan_to_num(e), axis=0), 1.0), np.nan)
    inc = g.incidence_deg if g.incidence_deg is not None else train_los.incidence_deg
    head = g.heading_deg if g.heading_deg is not None else train_los.heading_deg
    if not (g.incidence_map or g.heading_map):
        return los_vector(inc, head)
    shape = raster.values.shape
    angles = {"incidence": np.full(shape, float(inc)), "heading": np.full(shape, float(head))}
    for name, path, low, high in (("incidence", g.incidence_map, 0.0, 90.0), ("heading", g.heading_map, -360.0, 360.0)):
        if not path:
            continue
        key = f"invert.geometry.{name}_map"
        values = _same_grid(_read(inv, path, key, (1,), getattr(names, name)), raster, key)
        finite = values[np.isfinite(values)]
        bad = finite[(finite < low) | (finite >= high if name == "incidence" else finite > high)]
        if bad.size:
            raise DataError(f"{bad.size} pixel(s) have {name} angles outside [{low:g}, {high:g}{')' if name == 'incidence' else ']'} "
                            f"degrees (e.g. {bad[0]:g})", file=path, key=key)
        angles[name] = values
    t, h = np.radians(angles["incidence"]), np.radians(angles["heading"])
    return np.stack([-np.sin(t) * np.cos(h), np.sin(t) * np.sin(h), np.cos(t)])


def read_observed(inv: InvertConfig, train_los: LosConfig) -> ObservedMap:
    """Read and check ``invert.map`` and its geometry (module docstring); every problem is a DataError."""
    path = str(inv.map)
    raster = _read(inv, path, "invert.map", (inv.band,), inv.netcdf.variable)
    units_key = "invert.units" if inv.units != "auto" else "invert.map"
    scale, rate = unit_scale(raster.units if inv.units == "auto" else inv.units, file=path, key=units_key)
    sign = 1.0 if inv.geometry.sign == "towards" else -1.0
    los = raster.values * (scale * sign)
    e = _geometry(inv, train_los, raster)
    if e.ndim == 3:
        los = np.where(np.isfinite(e).all(axis=0), los, np.nan)
    n_valid, total = int(np.isfinite(los).sum()), los.size
    if n_valid == 0:
        raise DataError(f"the map has no valid pixel (all {total} are NaN, nodata or masked)", file=path, key="invert.map")
    if n_valid < inv.min_valid:
        raise DataError(f"only {n_valid} valid pixels of {total}; at least {inv.min_valid} are needed (invert.min_valid)",
                        file=path, key="invert.map")
    c = raster.coord_m / 1000.0
    ref = (float(raster.x[0] + raster.x[-1]) / 2, float(raster.y[0] + raster.y[-1]) / 2)
    if not math.isfinite(ref[0] + ref[1]):
        raise DataError("the map's coordinates are not finite", file=path, key="invert.map")
    return ObservedMap(raster, los, e, (raster.x - ref[0]) * c, (raster.y - ref[1]) * c, ref, rate, sha256(Path(path)))
