"""The station path's output: the target grid, the memory estimate, and the CF-conventions NetCDF.

The grid is predicted and written in blocks of rows (all output times at once), so memory stays
bounded whatever the grid's size; only the few maps drawn in the figures are kept whole.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geostudy.errors import ConfigError, DataError
from geostudy.io.stations import LocalProjection, StationTable, parse_times
from geostudy.learners.gp.stations_config import GridConfig

X_NAMES = {"xy": ("x", "projection_x_coordinate", "easting"), "lonlat": ("lon", "longitude", "x")}
Y_NAMES = {"xy": ("y", "projection_y_coordinate", "northing"), "lonlat": ("lat", "latitude", "y")}
BLOCK_BYTES = 128 << 20


@dataclass
class OutputGrid:
    """A regular grid in the data's own units: metres (``xy``) or degrees (``lonlat``).

    Attributes:
        xs: ``(W,)`` x (or longitude) of the columns; ``ys``: ``(H,)`` y (or latitude) of the rows.
        coords: ``xy`` or ``lonlat``.
        projection: Degrees to metres, for ``lonlat``.
    """

    xs: np.ndarray
    ys: np.ndarray
    coords: str
    projection: LocalProjection | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.ys), len(self.xs)

    @property
    def size(self) -> int:
        return len(self.ys) * len(self.xs)

    def metres(self, rows: slice) -> np.ndarray:
        """``(n, 2)`` metre coordinates of the points of ``rows`` (row-major)."""
        xx, yy = np.meshgrid(self.xs, self.ys[rows])
        if self.projection is not None:
            mx, my = self.projection.forward(xx.ravel(), yy.ravel())
            return np.stack([mx, my], axis=1)
        return np.stack([xx.ravel(), yy.ravel()], axis=1)

    def outside(self, table: StationTable) -> np.ndarray:
        """Indices of the stations outside the grid's extent (allowed; reported)."""
        sx, sy = (table.lon, table.lat) if self.coords == "lonlat" else (table.x, table.y)
        if sx is None or sy is None:
            return np.zeros(0, int)
        half_x = (self.xs[1] - self.xs[0]) / 2 if len(self.xs) > 1 else 0.0
        half_y = (self.ys[1] - self.ys[0]) / 2 if len(self.ys) > 1 else 0.0
        inside = ((sx >= self.xs.min() - abs(half_x)) & (sx <= self.xs.max() + abs(half_x))
                  & (sy >= self.ys.min() - abs(half_y)) & (sy <= self.ys.max() + abs(half_y)))
        return np.flatnonzero(~inside)


def _template_axis(ds, names: tuple[str, ...], standard: str, axis: str, key: str, path: Path) -> np.ndarray:  # noqa: ANN001
    for name in ds.variables:
        attrs = ds[name].attrs
        if attrs.get("standard_name") == standard or (attrs.get("axis") == axis and ds[name].ndim == 1):
            return np.asarray(ds[name].values, float).ravel()
    for name in names:
        if name in ds.variables and ds[name].ndim == 1:
            return np.asarray(ds[name].values, float)
    raise DataError(f"no 1-D {axis} coordinate (standard_name {standard!r}, axis {axis!r} or named "
                    f"{', '.join(names)})", file=path, key=key)


def build_grid(cfg: GridConfig, table: StationTable, coords: str, *, file: str | Path | None = None) -> OutputGrid:
    """The output grid the config asks for (see ``output.grid`` in ``configs/gp.yaml``).

    Raises:
        DataError: an unreadable template or one without x/y coordinates.
        ConfigError: an extent of degrees out of range.
    """
    projection = table.projection if coords == "lonlat" else None
    if cfg.template:
        import xarray as xr

        path = Path(cfg.template)
        if not path.is_file():
            raise DataError("grid template not found", file=path, key="output.grid.template")
        try:
            ds = xr.open_dataset(path, decode_times=False)
        except Exception as err:
            raise DataError(f"cannot read as NetCDF: {err}", file=path, key="output.grid.template") from None
        with ds:
            std_x, std_y = ("longitude", "latitude") if coords == "lonlat" else ("projection_x_coordinate",
                                                                                 "projection_y_coordinate")
            xs = _template_axis(ds, X_NAMES[coords], std_x, "X", "output.grid.template", path)
            ys = _template_axis(ds, Y_NAMES[coords], std_y, "Y", "output.grid.template", path)
        if len(xs) < 2 or len(ys) < 2:
            raise DataError("the template grid needs at least 2 points along x and y", file=path,
                            key="output.grid.template")
        return OutputGrid(xs=xs, ys=ys, coords=coords, projection=projection)
    sx, sy = (table.lon, table.lat) if coords == "lonlat" else (table.x, table.y)
    if sx is None or sy is None:
        raise ConfigError("lon/lat output needs stations read with lon/lat coordinates", key="data.stations.coords")
    if cfg.extent is not None:
        x0, x1, y0, y1 = (float(v) for v in cfg.extent)
        if coords == "lonlat" and not (-180 <= x0 and x1 <= 360 and -90 <= y0 and y1 <= 90):
            raise ConfigError(f"a lon/lat extent must lie in [-180, 360] x [-90, 90] degrees, but got {cfg.extent!r}",
                              file=file, key="output.grid.extent")
    else:
        x0, x1, y0, y1 = float(sx.min()), float(sx.max()), float(sy.min()), float(sy.max())
        span = max(x1 - x0, y1 - y0) or 1.0
        x0, x1, y0, y1 = x0 - cfg.pad * span, x1 + cfg.pad * span, y0 - cfg.pad * span, y1 + cfg.pad * span
        if coords == "lonlat":
            x0, x1, y0, y1 = max(x0, -180.0), min(x1, 360.0), max(y0, -90.0), min(y1, 90.0)
    res = cfg.resolution if cfg.resolution is not None else max(x1 - x0, y1 - y0) / (cfg.size - 1)
    nx = int(np.floor((x1 - x0) / res + 1e-9)) + 1
    ny = int(np.floor((y1 - y0) / res + 1e-9)) + 1
    if nx * ny > 10**12 or nx < 1 or ny < 1:  # arange below would itself exhaust memory
        raise ConfigError(f"the output grid of {ny} x {nx} points cannot be held (resolution {res!r} for extent "
                          f"[{x0:g}, {x1:g}, {y0:g}, {y1:g}])", file=file, key="output.grid.resolution")
    return OutputGrid(xs=x0 + res * np.arange(max(nx, 2)), ys=y0 + res * np.arange(max(ny, 2)), coords=coords,
                      projection=projection)


def output_times(times: list[str | float] | None, table: StationTable, *, file: str | Path | None = None) -> np.ndarray:
    """The output times as numbers on the table's time axis (all the table's times for ``None``)."""
    if times is None:
        return table.times
    values, origin = parse_times(np.asarray(times, dtype=object), file=file, key="output.times")
    if (origin is None) != (table.time_origin is None):
        raise ConfigError("output.times must be dates when the data's times are dates, numbers when they are numbers",
                          file=file, key="output.times")
    if origin is not None and table.time_origin is not None:
        shift = (np.datetime64(origin.replace("+00:00", "")) - np.datetime64(table.time_origin.replace("+00:00", "")))
        values = values + shift / np.timedelta64(1, "s") / 86400.0
    return np.asarray(values, float)


def available_memory() -> int:
    """Bytes of memory available now (``MemAvailable``), or 8 GiB where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def estimate_memory(n_stations: int, n_times: int, n_obs: int, inference: str, hyper_block: int, grid: OutputGrid,
                    n_out_times: int, map_times: int) -> int:
    """Bytes the run needs at its peak, estimated before the fit.

    The largest of: the hyperparameter block (its covariance, Cholesky factor and gradients), the
    posterior (dense observed covariance for ``exact``; the two kernels, their eigenvectors and a few
    ``(T, S)`` CG vectors for ``kronecker``), one block of grid rows (at least one row at every output
    time), plus the maps kept for the figures and the per-station predictions.
    """
    f = 8
    density = max(n_obs / max(n_stations * n_times, 1), 1e-3)
    slots = min(n_stations * n_times, int(hyper_block / density) + 1)
    block = 6 * f * slots**2
    if inference == "exact":
        posterior = f * ((n_stations * n_times) ** 2 + 2 * n_obs**2)
        per_point = f * n_out_times * n_stations * n_times * 3
    else:
        posterior = f * (3 * (n_stations**2 + n_times**2) + 10 * n_stations * n_times)
        per_point = f * n_out_times * (n_times + n_stations + 8)
    row = max(BLOCK_BYTES, grid.shape[1] * n_out_times * f * 4, per_point)
    kept = f * (2 * map_times * grid.size + 8 * n_out_times * n_stations)
    return int(max(block, posterior) + row + kept)


def check_memory(estimate: int, limit_gb: float | None, grid: OutputGrid, n_out_times: int, *,
                 file: str | Path | None = None) -> None:
    """A one-line :class:`ConfigError` when the estimate exceeds the limit (default 80% of available memory)."""
    limit = limit_gb * 2**30 if limit_gb is not None else 0.8 * available_memory()
    if estimate > limit:
        h, w = grid.shape
        raise ConfigError(f"the run needs about {estimate / 2**30:.1f} GiB of memory (output grid {h} x {w} points x "
                          f"{n_out_times} times), above the limit of {limit / 2**30:.1f} GiB; use a coarser "
                          "output.grid.resolution, a smaller extent, fewer output.times, or raise "
                          "output.memory_limit_gb", file=file, key="output.grid")


def _time_attrs(origin: str | None) -> dict[str, str]:
    if origin is None:
        return {"long_name": "time (the input's numbers)", "axis": "T"}
    return {"standard_name": "time", "long_name": "time", "axis": "T", "calendar": "standard",
            "units": f"days since {origin.replace('T', ' ').replace('+00:00', '')}"}


def write_netcdf(path: Path, grid: OutputGrid, times: np.ndarray, table: StationTable,
                 predict: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], *, map_index: np.ndarray,
                 stations: dict[str, np.ndarray], attrs: dict[str, str], noise_std: float) -> tuple[np.ndarray, np.ndarray]:
    """Write the gridded mean and std ``(time, y, x)`` and the per-station series to a CF-1.8 NetCDF.

    Args:
        path: The file to write.
        grid: The output grid; ``times``: output times on the table's axis.
        table: The stations (ids, coordinates, observed values, units).
        predict: ``(n, 2)`` metre coordinates -> mean and std ``(len(times), n)`` in the data's units.
        map_index: Output-time indices whose full maps are returned (for the figures).
        stations: ``(T, S)`` per-station arrays to store, name -> values, e.g. ``station_mean``.
        attrs: Extra global attributes.
        noise_std: The measurement noise's std (data units), stored as an attribute of ``std``.

    Returns:
        The mean and std maps ``(len(map_index), H, W)``.
    """
    import netCDF4

    h, w = grid.shape
    units = table.units
    lonlat = grid.coords == "lonlat"
    ydim, xdim = ("lat", "lon") if lonlat else ("y", "x")
    maps_mean = np.full((len(map_index), h, w), np.nan)
    maps_std = np.full((len(map_index), h, w), np.nan)
    path.parent.mkdir(parents=True, exist_ok=True)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.setncatts({"Conventions": "CF-1.8", "title": f"GP reconstruction of {table.variable} from station series",
                      "source": f"geostudy gp learner, data {table.source}",
                      "history": f"{dt.datetime.now(dt.UTC).isoformat(timespec='seconds')} created by geostudy", **attrs})
        nc.createDimension("time", len(times))
        nc.createDimension(ydim, h)
        nc.createDimension(xdim, w)
        nc.createDimension("station", table.n_stations)
        nc.createDimension("station_time", table.n_times)
        tv = nc.createVariable("time", "f8", ("time",))
        tv.setncatts(_time_attrs(table.time_origin))
        tv[:] = times
        st = nc.createVariable("station_time", "f8", ("station_time",))
        st.setncatts(_time_attrs(table.time_origin))
        st[:] = table.times
        yv, xv = nc.createVariable(ydim, "f8", (ydim,)), nc.createVariable(xdim, "f8", (xdim,))
        if lonlat:
            xv.setncatts({"standard_name": "longitude", "units": "degrees_east", "axis": "X"})
            yv.setncatts({"standard_name": "latitude", "units": "degrees_north", "axis": "Y"})
        else:
            xv.setncatts({"standard_name": "projection_x_coordinate", "units": "m", "axis": "X"})
            yv.setncatts({"standard_name": "projection_y_coordinate", "units": "m", "axis": "Y"})
        xv[:], yv[:] = grid.xs, grid.ys
        common = {"units": units} if units else {}
        mv = nc.createVariable("mean", "f4", ("time", ydim, xdim), fill_value=np.float32(np.nan), zlib=True)
        mv.setncatts({"long_name": f"posterior mean of {table.variable}", **common})
        sv = nc.createVariable("std", "f4", ("time", ydim, xdim), fill_value=np.float32(np.nan), zlib=True)
        sv.setncatts({"long_name": f"posterior standard deviation of {table.variable} (the field; a new measurement "
                                   "adds measurement_noise_std in quadrature)", "measurement_noise_std": noise_std,
                      **common})
        ids = nc.createVariable("station_id", str, ("station",))
        ids.setncatts({"long_name": "station identifier", "cf_role": "timeseries_id"})
        for i, name in enumerate(table.ids):
            ids[i] = str(name)
        sx = nc.createVariable("station_x", "f8", ("station",))
        sy = nc.createVariable("station_y", "f8", ("station",))
        sx.setncatts({"standard_name": "projection_x_coordinate", "units": "m",
                      "long_name": "station x (metres; the projection of lon/lat when given)"})
        sy.setncatts({"standard_name": "projection_y_coordinate", "units": "m",
                      "long_name": "station y (metres; the projection of lon/lat when given)"})
        sx[:], sy[:] = table.x, table.y
        if table.lon is not None and table.lat is not None:
            slon, slat = nc.createVariable("station_lon", "f8", ("station",)), nc.createVariable("station_lat", "f8",
                                                                                                ("station",))
            slon.setncatts({"standard_name": "longitude", "units": "degrees_east"})
            slat.setncatts({"standard_name": "latitude", "units": "degrees_north"})
            slon[:], slat[:] = table.lon, table.lat
        station_coords = "station_lon station_lat" if table.lon is not None else "station_x station_y"
        for name, values in stations.items():
            var = nc.createVariable(name, "f4", ("station_time", "station"), fill_value=np.float32(np.nan))
            var.setncatts({"long_name": f"{name.replace('_', ' ')} of {table.variable}",
                           "coordinates": f"station_time {station_coords}", **common})
            var[:] = values.astype(np.float32)
        rows = max(1, BLOCK_BYTES // max(1, w * len(times) * 8 * 4))
        for r0 in range(0, h, rows):
            sl = slice(r0, min(h, r0 + rows))
            mean, std = predict(grid.metres(sl))
            n_rows = sl.stop - sl.start
            mean, std = mean.reshape(len(times), n_rows, w), std.reshape(len(times), n_rows, w)
            mv[:, sl, :] = mean.astype(np.float32)
            sv[:, sl, :] = std.astype(np.float32)
            maps_mean[:, sl, :] = mean[map_index]
            maps_std[:, sl, :] = std[map_index]
    return maps_mean, maps_std
