"""Station time series tables: stations at scattered coordinates, each with a series that has gaps.

Learner-agnostic readers for a CSV (one row per station and time) or a NetCDF with a station
dimension. Every reader returns a :class:`StationTable`: one value matrix ``(time, station)`` with
NaN where a station has no value (an absent row or a NaN are the same thing), the stations'
coordinates in metres, and the times as numbers.

Coordinates are either projected ``x``/``y`` in metres, or longitude/latitude in degrees. Degrees
are converted to metres with an azimuthal equidistant projection (WGS84, via pyproj) centred on the
stations: distances from the centre are exact and other distances within 0.1% out to 500 km from
it (2% at 2000 km), so a kernel over metres is a kernel over real distances for a regional network.

Bad input (a missing column or variable, a value that is not a number, a station whose coordinates
change between rows, two different values for one station and time, lon/lat out of range) raises a
one-line :class:`~geostudy.errors.DataError` naming the file and the config key of the column.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from geostudy.errors import DataError

ROLES: tuple[str, ...] = ("station", "x", "y", "time", "value")
EARTH_DAY_SECONDS = 86400.0


@dataclass(frozen=True)
class LocalProjection:
    """Azimuthal equidistant projection (WGS84) centred on ``(lon0, lat0)``; metres both ways."""

    lon0: float
    lat0: float

    @property
    def proj4(self) -> str:
        return f"+proj=aeqd +lat_0={self.lat0:.6f} +lon_0={self.lon0:.6f} +datum=WGS84 +units=m +no_defs"

    def _transformer(self, inverse: bool):  # noqa: ANN202  (pyproj.Transformer)
        from pyproj import CRS, Transformer

        src, dst = CRS.from_epsg(4326), CRS.from_proj4(self.proj4)
        return Transformer.from_crs(dst, src, always_xy=True) if inverse else Transformer.from_crs(src, dst, always_xy=True)

    def forward(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Degrees to metres."""
        x, y = self._transformer(False).transform(np.asarray(lon, float), np.asarray(lat, float))
        return np.asarray(x, float), np.asarray(y, float)

    def inverse(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Metres to degrees."""
        lon, lat = self._transformer(True).transform(np.asarray(x, float), np.asarray(y, float))
        return np.asarray(lon, float), np.asarray(lat, float)

    @classmethod
    def centred_on(cls, lon: np.ndarray, lat: np.ndarray) -> LocalProjection:
        """Centred on the stations: circular mean longitude (works across the antimeridian), mean latitude."""
        rad = np.deg2rad(np.asarray(lon, float))
        lon0 = float(np.rad2deg(np.arctan2(np.sin(rad).mean(), np.cos(rad).mean())))
        return cls(lon0=lon0, lat0=float(np.mean(lat)))


@dataclass
class StationTable:
    """Station series on a common time axis.

    Attributes:
        ids: ``(S,)`` station identifiers (strings).
        x, y: ``(S,)`` coordinates in metres (projected from lon/lat when ``projection`` is set).
        times: ``(T,)`` sorted unique times as numbers: days since ``time_origin`` for dates, else the
            file's own numbers.
        values: ``(T, S)`` values, NaN where a station has none.
        source: The file (or a description) the table came from.
        variable: Name of the value column or variable.
        units: Units of the values, when the file says (NetCDF ``units`` attribute) or the config does.
        time_origin: ISO date of time 0 when times were dates, else None.
        lon, lat: ``(S,)`` degrees when the coordinates were lon/lat, else None.
        projection: The projection from lon/lat to ``x``/``y``, else None.
    """

    ids: np.ndarray
    x: np.ndarray
    y: np.ndarray
    times: np.ndarray
    values: np.ndarray
    source: str
    variable: str = "value"
    units: str | None = None
    time_origin: str | None = None
    lon: np.ndarray | None = None
    lat: np.ndarray | None = None
    projection: LocalProjection | None = None

    @property
    def n_stations(self) -> int:
        return int(self.values.shape[1])

    @property
    def n_times(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_observed(self) -> int:
        return int(np.isfinite(self.values).sum())

    @property
    def coords(self) -> np.ndarray:
        """``(S, 2)`` station coordinates (x, y) in metres."""
        return np.stack([self.x, self.y], axis=1)

    def subset(self, stations: np.ndarray) -> StationTable:
        """The table restricted to the stations at indices (or mask) ``stations``."""
        idx = np.flatnonzero(stations) if np.asarray(stations).dtype == bool else np.asarray(stations, int)
        return StationTable(ids=self.ids[idx], x=self.x[idx], y=self.y[idx], times=self.times,
                            values=self.values[:, idx], source=self.source, variable=self.variable, units=self.units,
                            time_origin=self.time_origin, lon=None if self.lon is None else self.lon[idx],
                            lat=None if self.lat is None else self.lat[idx], projection=self.projection)


def check_lonlat(lon: np.ndarray, lat: np.ndarray, *, file: str | Path | None, lon_key: str, lat_key: str) -> None:
    """Longitudes must lie in [-180, 360], latitudes in [-90, 90]."""
    bad_lat = ~((lat >= -90) & (lat <= 90))
    if bad_lat.any():
        raise DataError(f"latitude must be in [-90, 90] degrees, but got {float(lat[bad_lat][0])!r}", file=file,
                        key=lat_key)
    bad_lon = ~((lon >= -180) & (lon <= 360))
    if bad_lon.any():
        raise DataError(f"longitude must be in [-180, 360] degrees, but got {float(lon[bad_lon][0])!r}", file=file,
                        key=lon_key)


def parse_times(raw: np.ndarray, *, file: str | Path | None, key: str) -> tuple[np.ndarray, str | None]:
    """Times as numbers: ISO dates become days since the earliest date (returned as the origin).

    Raises:
        DataError: a time that is neither a number nor a date (the first one is named), or a mix.
    """
    import pandas as pd

    series = pd.Series(np.asarray(raw, dtype=object))
    if np.issubdtype(np.asarray(raw).dtype, np.datetime64):
        stamps = pd.to_datetime(series)
    else:
        numbers = pd.to_numeric(series, errors="coerce")
        if numbers.notna().all():
            return numbers.to_numpy(dtype=float), None
        stamps = pd.to_datetime(series.astype(str), errors="coerce", format="ISO8601")
        bad = stamps.isna()
        if bad.any():
            first = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"time {series.iloc[first]!r} (row {first + 1}) is neither a number nor an ISO date",
                            file=file, key=key)
    if getattr(stamps.dt, "tz", None) is not None:
        stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    origin = stamps.min()
    days = (stamps - origin).dt.total_seconds().to_numpy(dtype=float) / EARTH_DAY_SECONDS
    return days, origin.isoformat()


def _numeric(values: np.ndarray, *, file: str | Path | None, key: str, allow_missing: bool) -> np.ndarray:
    """A column as float; a value that is present but not a number raises, naming its row."""
    import pandas as pd

    series = pd.Series(np.asarray(values, dtype=object))
    numbers = pd.to_numeric(series, errors="coerce")
    present = series.notna() & (series.astype(str).str.strip() != "")
    bad = present & numbers.isna() & ~series.astype(str).str.strip().str.lower().isin({"nan", "na"})
    if bad.any():
        first = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{series.iloc[first]!r} (row {first + 1}) is not a number", file=file, key=key)
    out = np.array(numbers.to_numpy(dtype=float), dtype=float)
    out[~np.isfinite(out)] = np.nan
    if not allow_missing and np.isnan(out).any():
        first = int(np.flatnonzero(np.isnan(out))[0])
        raise DataError(f"row {first + 1} has no value (coordinates may not be missing)", file=file, key=key)
    return out


def _table(ids_raw: np.ndarray, xs: np.ndarray, ys: np.ndarray, times: np.ndarray, values: np.ndarray, *,
           file: str | Path, keys: Mapping[str, str], coords: str, variable: str, units: str | None,
           time_origin: str | None) -> StationTable:
    """Pivot long rows (one per station and time) into a :class:`StationTable`, checking consistency."""
    ids = np.asarray([str(i) for i in ids_raw], dtype=object)
    if ids.size == 0:
        raise DataError("the file has no rows", file=file, key=keys["value"])
    station_names, station_of = np.unique(ids, return_inverse=True)
    # One place per station: the coordinates of all its rows must agree.
    first_row = np.full(len(station_names), -1)
    first_row[station_of[::-1]] = np.arange(len(ids))[::-1]
    for arr, role in ((xs, "x"), (ys, "y")):
        moved = ~np.isclose(arr, arr[first_row][station_of], rtol=0, atol=1e-9 * max(1.0, float(np.abs(arr).max())))
        if moved.any():
            row = int(np.flatnonzero(moved)[0])
            raise DataError(f"station {ids[row]!r} has {role} {arr[row]!r} on row {row + 1} but "
                            f"{arr[first_row[station_of[row]]]!r} on row {first_row[station_of[row]] + 1}", file=file,
                            key=keys[role])
    sx, sy = xs[first_row], ys[first_row]
    time_values, time_of = np.unique(times, return_inverse=True)
    grid = np.full((len(time_values), len(station_names)), np.nan)
    # Duplicate (station, time) rows: allowed when they agree, an error when they differ.
    flat = time_of * len(station_names) + station_of
    order = np.argsort(flat, kind="stable")
    same = np.flatnonzero(flat[order][1:] == flat[order][:-1])
    for k in same:
        a, b = order[k], order[k + 1]
        va, vb = values[a], values[b]
        if not (np.isnan(va) and np.isnan(vb)) and not (np.isclose(va, vb, rtol=1e-12, atol=0) or va == vb):
            raise DataError(f"station {ids[a]!r} has two different values at time {times[a]!r}: {va!r} (row {a + 1}) and "
                            f"{vb!r} (row {b + 1})", file=file, key=keys["value"])
    keep = np.isfinite(values)
    grid[time_of[keep], station_of[keep]] = values[keep]
    lon = lat = None
    projection = None
    if coords == "lonlat":
        check_lonlat(sx, sy, file=file, lon_key=keys["x"], lat_key=keys["y"])
        lon, lat = sx, sy
        projection = LocalProjection.centred_on(lon, lat)
        sx, sy = projection.forward(lon, lat)
    if not np.isfinite(grid).any():
        raise DataError("no station has a finite value", file=file, key=keys["value"])
    return StationTable(ids=station_names.astype(str), x=np.asarray(sx, float), y=np.asarray(sy, float),
                        times=time_values.astype(float), values=grid, source=str(file), variable=variable, units=units,
                        time_origin=time_origin, lon=lon, lat=lat, projection=projection)


def read_station_csv(path: str | Path, columns: Mapping[str, str], *, coords: Literal["xy", "lonlat"] = "xy",
                     units: str | None = None, key_prefix: str = "columns") -> StationTable:
    """Read a long CSV: one row per station and time.

    Args:
        path: The CSV file.
        columns: Column name of each role in :data:`ROLES` (``station``, ``x``, ``y``, ``time``, ``value``);
            with ``coords='lonlat'`` the ``x`` column holds longitudes and ``y`` latitudes.
        coords: ``xy`` (metres) or ``lonlat`` (degrees, projected, see the module docstring).
        units: Units of the values (CSV files carry none).
        key_prefix: Config section of ``columns``, for the error messages' keys.

    Raises:
        DataError: see the module docstring.
    """
    import pandas as pd

    path = Path(path)
    keys = {role: f"{key_prefix}.{role}" for role in ROLES}
    if not path.is_file():
        raise DataError("station file not found", file=path, key="data.path")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except Exception as err:  # pandas raises several kinds for a malformed file
        raise DataError(f"cannot read as CSV: {err}", file=path, key="data.path") from None
    for role in ROLES:
        if columns[role] not in df.columns:
            raise DataError(f"column {columns[role]!r} not found; columns present: {', '.join(map(str, df.columns))}",
                            file=path, key=keys[role])
    df = df.replace({"": None})
    ids = df[columns["station"]].to_numpy(dtype=object)
    if pd.isna(df[columns["station"]]).any():
        row = int(np.flatnonzero(pd.isna(df[columns["station"]]).to_numpy())[0])
        raise DataError(f"row {row + 1} has no station id", file=path, key=keys["station"])
    xs = _numeric(df[columns["x"]].to_numpy(), file=path, key=keys["x"], allow_missing=False)
    ys = _numeric(df[columns["y"]].to_numpy(), file=path, key=keys["y"], allow_missing=False)
    values = _numeric(df[columns["value"]].to_numpy(), file=path, key=keys["value"], allow_missing=True)
    if df[columns["time"]].isna().any():
        row = int(np.flatnonzero(df[columns["time"]].isna().to_numpy())[0])
        raise DataError(f"row {row + 1} has no time", file=path, key=keys["time"])
    times, origin = parse_times(df[columns["time"]].to_numpy(), file=path, key=keys["time"])
    return _table(ids, xs, ys, times, values, file=path, keys=keys, coords=coords, variable=columns["value"],
                  units=units, time_origin=origin)


def read_station_netcdf(path: str | Path, columns: Mapping[str, str], *, station_dim: str = "station",
                        coords: Literal["xy", "lonlat"] = "xy", units: str | None = None,
                        key_prefix: str = "columns") -> StationTable:
    """Read a NetCDF whose value variable has a station and a time dimension.

    ``columns`` name variables here: ``value`` (dims ``(station, time)`` in either order), ``x``/``y``
    (along the station dimension), ``time`` (the time coordinate, CF-decoded dates or numbers) and
    ``station`` (ids along the station dimension; when absent, the station index). The value's
    ``units`` attribute is used unless ``units`` is given.
    """
    import xarray as xr

    path = Path(path)
    keys = {role: f"{key_prefix}.{role}" for role in ROLES}
    if not path.is_file():
        raise DataError("station file not found", file=path, key="data.path")
    try:
        ds = xr.open_dataset(path)
    except Exception as err:
        raise DataError(f"cannot read as NetCDF: {err}", file=path, key="data.path") from None
    with ds:
        names = set(map(str, ds.variables))
        for role in ("value", "x", "y", "time"):
            if columns[role] not in names:
                raise DataError(f"variable {columns[role]!r} not found; variables present: {', '.join(sorted(names))}",
                                file=path, key=keys[role])
        da = ds[columns["value"]]
        time_dim = ds[columns["time"]].dims[0] if ds[columns["time"]].dims else columns["time"]
        for dim, key in ((station_dim, "data.stations.station_dim"), (time_dim, keys["time"])):
            if dim not in da.dims:
                raise DataError(f"dimension {dim!r} not in variable {columns['value']!r}; its dimensions: "
                                f"{', '.join(map(str, da.dims))}", file=path, key=key)
        if set(da.dims) != {station_dim, time_dim}:
            raise DataError(f"variable {columns['value']!r} must have exactly the dimensions ({station_dim}, {time_dim}), "
                            f"but has {da.dims}", file=path, key=keys["value"])
        try:
            values = da.transpose(time_dim, station_dim).values.astype(float)
        except (TypeError, ValueError):
            raise DataError(f"variable {columns['value']!r} is not numeric", file=path, key=keys["value"]) from None
        xs = _numeric(ds[columns["x"]].values.ravel(), file=path, key=keys["x"], allow_missing=False)
        ys = _numeric(ds[columns["y"]].values.ravel(), file=path, key=keys["y"], allow_missing=False)
        n_t, n_s = values.shape
        if len(xs) != n_s or len(ys) != n_s:
            raise DataError(f"coordinates must have one value per station ({n_s}), but got {len(xs)} and {len(ys)}",
                            file=path, key=keys["x"])
        ids = (ds[columns["station"]].values.ravel() if columns["station"] in names else np.arange(n_s)).astype(str)
        times, origin = parse_times(ds[columns["time"]].values.ravel(), file=path, key=keys["time"])
        file_units = da.attrs.get("units")
    if len(np.unique(times)) != len(times):
        raise DataError("the time coordinate has repeated times", file=path, key=keys["time"])
    if len(np.unique(ids)) != len(ids):
        raise DataError("the station ids repeat", file=path, key=keys["station"])
    long_ids = np.repeat(ids[None, :], n_t, 0).ravel()
    return _table(long_ids, np.tile(xs, n_t), np.tile(ys, n_t), np.repeat(times, n_s), values.ravel(), file=path,
                  keys=keys, coords=coords, variable=columns["value"], units=units or file_units,
                  time_origin=origin)


def write_station_csv(path: str | Path, table: StationTable, columns: Mapping[str, str] | None = None) -> Path:
    """Write ``table`` as a long CSV (the rows that have values), readable by :func:`read_station_csv`."""
    import pandas as pd

    cols = dict(zip(ROLES, ROLES, strict=True)) | dict(columns or {})
    t_idx, s_idx = np.nonzero(np.isfinite(table.values))
    xs, ys = (table.lon, table.lat) if table.lon is not None and table.lat is not None else (table.x, table.y)
    if table.time_origin is not None:
        origin = np.datetime64(table.time_origin.replace("+00:00", ""))
        seconds = np.round(table.times * EARTH_DAY_SECONDS).astype("int64")
        times: np.ndarray = (origin + seconds.astype("timedelta64[s]")).astype(str)
    else:
        times = table.times
    df = pd.DataFrame({cols["station"]: table.ids[s_idx], cols["x"]: xs[s_idx], cols["y"]: ys[s_idx],
                       cols["time"]: times[t_idx], cols["value"]: table.values[t_idx, s_idx]})
    path = Path(path)
    df.to_csv(path, index=False)
    return path
