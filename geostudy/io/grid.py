"""2-D rasters on a regular grid: GeoTIFF, NetCDF and ``.npy`` readers, a NetCDF/GeoTIFF writer.

Every reader returns a :class:`Raster`: the values as float64 with NaN wherever a pixel carries no
data (NaN in the file, the GeoTIFF's ``nodata``, a NetCDF ``_FillValue``/``missing_value`` or a masked
band), the pixel-centre coordinates of its columns (``x``, increasing eastwards) and rows (``y``,
increasing northwards: rows are flipped when the file is stored north-up, as GeoTIFFs are), the unit
of those coordinates in metres (``coord_m``), the CRS when the file has one, and the values' unit as
the file states it (CF ``units`` attribute, GeoTIFF band unit) or None.

Rules that keep a raster usable as a map in metres:

- a GeoTIFF needs a geotransform and a CRS; a geographic CRS (degrees) is refused with a one-line
  error telling the user to reproject (``gdalwarp -t_srs EPSG:326XX in.tif out.tif``); a rotated
  geotransform is refused likewise;
- NetCDF coordinates in ``m``/``metre(s)``/``meter(s)`` or ``km`` (no ``units``: metres);
  ``degrees_*`` units are refused like a geographic CRS;
- the grid must be regular (constant spacing along each axis, to 0.1 %).

Value units (:func:`unit_scale`) are the usual InSAR ones: ``m``, ``cm``, ``mm`` (displacement) and
the same per year (``m/yr``, ``mm/year``, ``m a-1``, ...: velocity). Nothing here knows a learner.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geostudy.errors import DataError

METRE_UNITS = {"m", "metre", "metres", "meter", "meters"}
KM_UNITS = {"km", "kilometre", "kilometres", "kilometer", "kilometers"}
LENGTH_SCALE = {"m": 1.0, "cm": 0.01, "mm": 0.001}
RATE_WORDS = ("/yr", "/year", "/a", " a-1", " yr-1", " year-1", " a^-1", " yr^-1", "/y", " y-1")
SUFFIXES = {".tif": "geotiff", ".tiff": "geotiff", ".nc": "netcdf", ".nc4": "netcdf", ".cdf": "netcdf", ".npy": "npy"}


@dataclass
class Raster:
    """A 2-D raster in a projected (metric) frame.

    Attributes:
        values: ``(ny, nx)`` float64, NaN where there is no data; row ``i`` lies at ``y[i]``.
        x, y: Pixel-centre coordinates in the file's unit (``coord_m`` metres each), increasing.
        coord_m: Metres per coordinate unit (1 for metres, 1000 for km).
        units: The values' unit as stated in the file, or None.
        crs: The CRS as WKT (GeoTIFF, or a NetCDF ``crs_wkt``/``spatial_ref`` attribute), or None.
        path: Where it was read from.
    """

    values: np.ndarray
    x: np.ndarray
    y: np.ndarray
    coord_m: float = 1.0
    units: str | None = None
    crs: str | None = None
    path: Path | None = None

    @property
    def spacing(self) -> tuple[float, float]:
        """Pixel size ``(dx, dy)`` in coordinate units (both positive)."""
        return float(self.x[1] - self.x[0]) if len(self.x) > 1 else 1.0, float(self.y[1] - self.y[0]) if len(self.y) > 1 else 1.0

    @property
    def coord_unit(self) -> str:
        return "m" if self.coord_m == 1.0 else "km" if self.coord_m == 1000.0 else f"{self.coord_m:g} m"


def file_format(path: str | Path, fmt: str = "auto", *, key: str | None = None) -> str:
    """``geotiff``, ``netcdf`` or ``npy``: ``fmt`` unless ``auto``, else from the file's suffix."""
    if fmt != "auto":
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"cannot tell the format from the suffix {suffix!r}; use one of {', '.join(SUFFIXES)} "
                        "or set the format", file=path, key=key)
    return SUFFIXES[suffix]


def sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (to record which file a result came from)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def unit_scale(units: str | None, *, file: str | Path | None = None, key: str | None = None) -> tuple[float, bool]:
    """``(metres per value unit, is_rate)`` of a displacement or velocity unit; None means metres."""
    if units is None:
        return 1.0, False
    text = " ".join(units.strip().lower().replace("meters", "m").replace("metres", "m").replace("meter", "m")
                    .replace("metre", "m").split())
    rate = any(w in f" {text}" for w in RATE_WORDS)
    base = re.split(r"[/ ]", text, maxsplit=1)[0] if text else ""
    if base not in LENGTH_SCALE:
        raise DataError(f"unknown unit {units!r}; allowed: m, cm, mm, or the same per year (m/yr, mm/yr)",
                        file=file, key=key)
    return LENGTH_SCALE[base], rate


def _check_file(path: str | Path, key: str | None) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", file=path, key=key)
    return path


def _regular_axis(axis: np.ndarray, name: str, path: Path, key: str | None) -> np.ndarray:
    axis = np.asarray(axis, dtype=np.float64)
    if axis.ndim != 1 or len(axis) < 2 or not np.isfinite(axis).all():
        raise DataError(f"coordinate {name!r} must be 1-D, finite, with at least 2 values", file=path, key=key)
    step = np.diff(axis)
    if not (np.all(step > 0) or np.all(step < 0)) or np.ptp(step) > 1e-3 * abs(step[0]):
        raise DataError(f"coordinate {name!r} is not a regular grid (spacing varies from {step.min():g} to "
                        f"{step.max():g})", file=path, key=key)
    return axis


def _orient(values: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flip so that x and y increase along columns and rows."""
    if x[0] > x[-1]:
        values, x = values[..., ::-1], x[::-1]
    if y[0] > y[-1]:
        values, y = values[..., ::-1, :], y[::-1]
    return np.ascontiguousarray(values), np.ascontiguousarray(x), np.ascontiguousarray(y)


def read_geotiff(path: str | Path, *, bands: tuple[int, ...] = (1,), key: str | None = None) -> Raster:
    """A GeoTIFF band (or several, stacked on a leading axis) with its grid; see the module docstring."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    path = _check_file(path, key)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                transform, crs, count = src.transform, src.crs, src.count
                for b in bands:
                    if not 1 <= b <= count:
                        raise DataError(f"band {b} does not exist; the file has {count} band(s)", file=path, key=key)
                data = src.read(list(bands), masked=True).astype(np.float64)
                unit = src.units[bands[0] - 1] or None
                tags = src.tags(bands[0])
                width, height = src.width, src.height
    except RasterioIOError as err:
        raise DataError(f"not a readable GeoTIFF ({' '.join(str(err).split())[:120]})", file=path, key=key) from None
    if transform.is_identity or (transform.a == 1 and transform.e == 1 and transform.c == 0 and transform.f == 0):
        raise DataError("the GeoTIFF has no geotransform (pixel size and origin); georeference it, e.g. with "
                        "gdal_translate -a_ullr / -a_srs", file=path, key=key)
    if crs is None:
        raise DataError("the GeoTIFF has no CRS; assign its projected CRS, e.g. gdal_edit.py -a_srs EPSG:32633", file=path, key=key)
    if crs.is_geographic:
        raise DataError(f"the GeoTIFF's CRS ({crs.to_string()}) is geographic (degrees); reproject it to a projected "
                        "metric CRS first, e.g. gdalwarp -t_srs EPSG:326XX (UTM) in.tif out.tif", file=path, key=key)
    if transform.b != 0 or transform.d != 0:
        raise DataError("the GeoTIFF's geotransform is rotated; warp it north-up first (gdalwarp)", file=path, key=key)
    factor = float(crs.linear_units_factor[1]) if crs.is_projected else 1.0
    values = np.ma.filled(data, np.nan)
    values[~np.isfinite(values)] = np.nan
    x = transform.c + transform.a * (np.arange(width) + 0.5)
    y = transform.f + transform.e * (np.arange(height) + 0.5)
    values, x, y = _orient(values, x, y)
    unit = unit or tags.get("units") or tags.get("UNITS")
    return Raster(values[0] if len(bands) == 1 else values, x, y, factor, unit, crs.to_wkt(), path)


def read_netcdf(path: str | Path, variable: str, *, x: str = "x", y: str = "y", key: str | None = None) -> Raster:
    """One 2-D NetCDF variable with coordinates ``x`` and ``y`` (a leading length-1 dimension is dropped)."""
    import xarray as xr

    path = _check_file(path, key)
    try:
        ds = xr.open_dataset(path, mask_and_scale=True, decode_times=False)
    except Exception as err:  # noqa: BLE001  (any unreadable file is the user's to fix)
        raise DataError(f"not a readable NetCDF file ({type(err).__name__})", file=path, key=key) from None
    with ds:
        if variable not in ds.data_vars:
            raise DataError(f"variable {variable!r} is not in the file; its variables: {', '.join(map(str, ds.data_vars)) or 'none'}",
                            file=path, key=key)
        da = ds[variable].squeeze(drop=True)
        for name in (x, y):
            if name not in da.dims:
                raise DataError(f"variable {variable!r} has no dimension {name!r}; its dimensions: {', '.join(map(str, da.dims))}",
                                file=path, key=key)
        extra = [d for d in da.dims if d not in (x, y)]
        if extra:
            raise DataError(f"variable {variable!r} must be 2-D ({y}, {x}), but it also has {', '.join(map(str, extra))}",
                            file=path, key=key)
        da = da.transpose(y, x)
        values = np.asarray(da.values, dtype=np.float64)
        coord_units = {str(ds[n].attrs.get("units", "m")).strip().lower() for n in (x, y) if n in ds.coords}
        units = da.attrs.get("units")
        crs = None
        for var in ds.variables.values():  # CF grid mapping (or rioxarray's spatial_ref)
            crs = crs or var.attrs.get("crs_wkt") or var.attrs.get("spatial_ref")
        for name in (x, y):
            if name not in ds.coords:
                raise DataError(f"dimension {name!r} has no coordinate values; the pixel positions are needed", file=path, key=key)
        xs = _regular_axis(ds[x].values, x, path, key)
        ys = _regular_axis(ds[y].values, y, path, key)
    if any(u.startswith("degree") for u in coord_units):
        raise DataError(f"coordinates {x!r}/{y!r} are in degrees; reproject the grid to a projected metric CRS first "
                        "(e.g. rioxarray's rio.reproject or gdalwarp)", file=path, key=key)
    bad = coord_units - METRE_UNITS - KM_UNITS
    if bad:
        raise DataError(f"coordinate units {sorted(bad)} are not metres or km", file=path, key=key)
    coord_m = 1000.0 if coord_units and coord_units <= KM_UNITS else 1.0
    if coord_units & KM_UNITS and coord_units & METRE_UNITS:
        raise DataError("coordinates x and y are in different units", file=path, key=key)
    values[~np.isfinite(values)] = np.nan
    values, xs, ys = _orient(values, xs, ys)
    return Raster(values, xs, ys, coord_m, None if units is None else str(units), None if crs is None else str(crs), path)


def read_npy(path: str | Path, *, spacing: float, origin: tuple[float, float], north_up: bool = True,
             key: str | None = None) -> Raster:
    """A ``.npy`` array ``(ny, nx)`` (or ``(k, ny, nx)``) on a grid given by the caller, in metres.

    Args:
        spacing: Pixel size (m), the same along both axes.
        origin: ``(x, y)`` of the centre of pixel ``[0, 0]`` (m).
        north_up: Row 0 is the northernmost (image order, as GeoTIFFs); False: row 0 is the southernmost.
    """
    path = _check_file(path, key)
    try:
        values = np.load(path, allow_pickle=False)
    except Exception as err:  # noqa: BLE001
        raise DataError(f"not a readable .npy array ({type(err).__name__})", file=path, key=key) from None
    if values.ndim not in (2, 3) or values.shape[-1] < 2 or values.shape[-2] < 2 or not np.issubdtype(values.dtype, np.number):
        raise DataError(f"must be a numeric 2-D array (ny, nx), but got shape {values.shape} of {values.dtype}", file=path, key=key)
    values = values.astype(np.float64)
    values[~np.isfinite(values)] = np.nan
    ny, nx = values.shape[-2:]
    x = origin[0] + spacing * np.arange(nx)
    y = origin[1] + (-spacing if north_up else spacing) * np.arange(ny)
    values, x, y = _orient(values, x, y)
    return Raster(values, x, y, 1.0, None, None, path)


def read_raster(path: str | Path, *, fmt: str = "auto", variable: str = "los", x: str = "x", y: str = "y",
                bands: tuple[int, ...] = (1,), spacing: float | None = None, origin: tuple[float, float] | None = None,
                north_up: bool = True, key: str | None = None) -> Raster:
    """Read any supported raster; the keyword arguments that do not apply to its format are ignored."""
    kind = file_format(path, fmt, key=key)
    if kind == "geotiff":
        return read_geotiff(path, bands=bands, key=key)
    if kind == "netcdf":
        return read_netcdf(path, variable, x=x, y=y, key=key)
    if spacing is None or origin is None:
        raise DataError("a .npy map needs its grid: pixel spacing and origin (m)", file=path, key=key)
    return read_npy(path, spacing=spacing, origin=origin, north_up=north_up, key=key)


def write_netcdf(path: str | Path, fields: Mapping[str, np.ndarray], x: np.ndarray, y: np.ndarray, *,
                 coord_units: str = "m", units: Mapping[str, str] | None = None, crs: str | None = None,
                 attrs: Mapping[str, str] | None = None) -> Path:
    """Write 2-D fields ``(ny, nx)`` on coordinates ``x``/``y`` as CF-style NetCDF (NaN as missing)."""
    import xarray as xr

    data_vars = {}
    for name, arr in fields.items():
        da = xr.DataArray(np.asarray(arr, dtype=np.float32), dims=("y", "x"), attrs={"units": (units or {}).get(name, "")})
        if crs:
            da.attrs["grid_mapping"] = "spatial_ref"
        data_vars[name] = da
    ds = xr.Dataset(data_vars, coords={"x": ("x", np.asarray(x), {"units": coord_units, "axis": "X"}),
                                       "y": ("y", np.asarray(y), {"units": coord_units, "axis": "Y"})},
                    attrs=dict(attrs or {}))
    if crs:
        ds["spatial_ref"] = xr.DataArray(0, attrs={"crs_wkt": crs, "spatial_ref": crs})
    ds.to_netcdf(path)
    return Path(path)


def write_geotiff(path: str | Path, values: np.ndarray, x: np.ndarray, y: np.ndarray, crs: str, *,
                  nodata: float | None = None, units: str | None = None) -> Path:
    """Write ``(ny, nx)`` (or ``(k, ny, nx)``) values on increasing pixel-centre ``x``/``y`` (m) as a north-up GeoTIFF."""
    import rasterio
    from rasterio.transform import Affine

    values = np.asarray(values, dtype=np.float32)
    stack = values if values.ndim == 3 else values[None]
    dx, dy = float(x[1] - x[0]), float(y[1] - y[0])
    transform = Affine(dx, 0.0, float(x[0]) - dx / 2, 0.0, -dy, float(y[-1]) + dy / 2)  # north-up
    out = stack[:, ::-1, :].copy()  # north-up: the first row is the northernmost
    if nodata is not None:
        out[np.isnan(out)] = nodata
    with rasterio.open(path, "w", driver="GTiff", width=out.shape[2], height=out.shape[1], count=out.shape[0],
                       dtype="float32", crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(out)
        if units:
            dst.units = tuple(units for _ in range(out.shape[0]))
    return Path(path)
