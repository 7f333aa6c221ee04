"""The GP learner's station path: station series in, gridded posterior NetCDF, held-out-station scores out.

Order of a run: read the table (:mod:`geostudy.io.stations`, or synthetic stations) -> build the output
grid and times -> estimate memory (refuse before the fit if too large) -> fit on every station
(:mod:`geostudy.learners.gp.kron`) -> stream the grid into the NetCDF -> k-fold over whole stations
(:mod:`geostudy.learners.gp.stations_eval`) with the spline baseline on the same folds -> figures.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geostudy.errors import ConfigError
from geostudy.io.stations import StationTable, read_station_csv, read_station_netcdf
from geostudy.learners.base import RunContext, RunResult
from geostudy.learners.gp import stations_eval, stations_output, stations_plots
from geostudy.learners.gp.config import GpConfig
from geostudy.learners.gp.kernels import kernel_label
from geostudy.learners.gp.kron import Normaliser, StationPosterior, choose_station_inference, fit_station_gp
from geostudy.learners.gp.stations_sim import simulate_stations

NETCDF_SUFFIXES = (".nc", ".nc4", ".cdf", ".netcdf")


def load_stations(cfg: GpConfig) -> StationTable:
    """The station table the config names: a CSV / NetCDF file, or synthetic stations when ``data.path`` is null."""
    st = cfg.data.stations
    if cfg.data.path is None:
        return simulate_stations(st.synthetic, cfg.seed).observed
    fmt = st.format
    if fmt == "auto":
        fmt = "netcdf" if Path(cfg.data.path).suffix.lower() in NETCDF_SUFFIXES else "csv"
    prefix = "data.stations.columns"
    if fmt == "netcdf":
        return read_station_netcdf(cfg.data.path, st.columns.as_dict(), station_dim=st.station_dim, coords=st.coords,
                                   units=st.units, key_prefix=prefix)
    return read_station_csv(cfg.data.path, st.columns.as_dict(), coords=st.coords, units=st.units, key_prefix=prefix)


@dataclass
class StationPlan:
    """What a run will do, settled before any fit: table, grid, times, inference, memory estimate."""

    table: StationTable
    grid: stations_output.OutputGrid
    times: np.ndarray
    inference: str
    memory_bytes: int
    outside: np.ndarray


def plan_run(cfg: GpConfig, *, file: str | Path | None = None) -> StationPlan:
    """Read and check everything a station run needs; raises the one-line errors before anything is written."""
    if cfg.model.combine != "product":
        raise ConfigError(f"station data need the product of the space and time kernels (Kronecker structure), but "
                          f"got {cfg.model.combine!r}", file=file, key="model.combine")
    if cfg.model.nonstationary != "none":
        raise ConfigError("nonstationary kernels work on 2-D gridded fields, not on station data", file=file,
                          key="model.nonstationary")
    table = load_stations(cfg)
    grid = stations_output.build_grid(cfg.output.grid, table, cfg.data.stations.coords, file=file)
    times = stations_output.output_times(cfg.output.times, table, file=file)
    try:
        inference = choose_station_inference(table.n_observed, cfg.model)
    except ConfigError as err:
        raise ConfigError(err.message, file=file, key=err.key) from None
    estimate = stations_output.estimate_memory(table.n_stations, table.n_times, table.n_observed, inference,
                                               cfg.train.hyper_block, grid, len(times), cfg.eval.map_times)
    stations_output.check_memory(estimate, cfg.output.memory_limit_gb, grid, len(times), file=file)
    if cfg.eval.station_folds > table.n_stations:
        raise ConfigError(f"must be at most the number of stations ({table.n_stations}), but got "
                          f"{cfg.eval.station_folds}", file=file, key="eval.station_folds")
    return StationPlan(table=table, grid=grid, times=times, inference=inference, memory_bytes=estimate,
                       outside=grid.outside(table))


@dataclass
class Fitted:
    """A posterior with the scalings that map model units back to the data's."""

    post: StationPosterior
    norm: Normaliser
    mu: float
    sd: float

    def predict(self, coords_m: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Latent mean and std ``(len(times), n)`` in data units at metre coordinates."""
        mean, var = self.post.predict(self.norm.space(coords_m), self.norm.time(times))
        return mean * self.sd + self.mu, np.sqrt(var) * self.sd

    @property
    def noise_std(self) -> float:
        return math.sqrt(self.post.noise) * self.sd


def fit_stations(cfg: GpConfig, table: StationTable, norm: Normaliser, log: Callable[[str], None] | None) -> Fitted:
    """Fit on every station of ``table`` (values standardised by its own observed values)."""
    obs = table.values[np.isfinite(table.values)]
    mu, sd = float(obs.mean()), float(obs.std()) or 1.0
    period = None if cfg.model.time_period is None else cfg.model.time_period / norm.span
    post = fit_station_gp(norm.space(table.coords), norm.time(table.times), (table.values - mu) / sd, cfg.model,
                          cfg.train, seed=cfg.seed, log=log, period=period)
    return Fitted(post=post, norm=norm, mu=mu, sd=sd)


def _time_label(table: StationTable, t: float) -> str:
    if table.time_origin is None:
        return f"t={t:g}"
    stamp = np.datetime64(table.time_origin.replace("+00:00", "")) + np.timedelta64(int(round(t * 86400)), "s")
    return str(stamp).replace("T00:00:00", "")


def run_stations(cfg: GpConfig, ctx: RunContext) -> RunResult:
    """One station run (see the module docstring); metrics are those of the held-out stations' series."""
    start_all = time.perf_counter()
    plan = plan_run(cfg)
    table, grid = plan.table, plan.grid
    h, w = grid.shape
    ctx.log(f"gp stations: {table.n_stations} stations x {table.n_times} times, {table.n_observed} values "
            f"({table.source}); {plan.inference} inference; grid {h} x {w} x {len(plan.times)} times; "
            f"memory estimate {plan.memory_bytes / 2**30:.2f} GiB")
    if len(plan.outside):
        ctx.log(f"gp stations: {len(plan.outside)} station(s) outside the output grid (used for the fit): "
                f"{', '.join(table.ids[plan.outside][:10])}{' ...' if len(plan.outside) > 10 else ''}")
    norm = Normaliser.fit(table.coords, table.times)
    fitted = fit_stations(cfg, table, norm, ctx.log)

    # Held-out stations: k-fold over whole stations, each fold fitted without its stations.
    metrics: dict[str, float] = {}
    cv = None
    baseline = None
    if cfg.eval.station_folds:
        folds = stations_eval.station_folds(table.coords, cfg.eval.station_folds, cfg.seed, cfg.eval.block_spacing)

        def fit_predict(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            fold = fit_stations(cfg, table.subset(train), norm, None)
            mean, std = fold.predict(table.coords[test], table.times)
            return mean, std**2 + fold.noise_std**2

        cv = stations_eval.cross_validate(table.values, folds, fit_predict, ctx.log)
        metrics.update(stations_eval.series_metrics(table.values, cv.mean, cv.var))
        if cfg.eval.spline:
            baseline = np.full(table.values.shape, np.nan)
            every = np.arange(table.n_stations)
            for test in folds:
                train = np.setdiff1d(every, test)
                baseline[:, test] = stations_eval.spline_per_time(table.coords[train], table.values[:, train],
                                                                  table.coords[test])
            base = stations_eval.series_metrics(table.values, baseline, None)
            metrics["baseline_spline_rmse"], metrics["baseline_spline_mae"] = base["rmse"], base["mae"]
    for name in ("rmse", "mae", "nlpd", "coverage95", "baseline_spline_rmse", "baseline_spline_mae"):
        metrics.setdefault(name, math.nan)
    metrics["rmse_vs_spline"] = (metrics["rmse"] / metrics["baseline_spline_rmse"]
                                 if metrics["baseline_spline_rmse"] > 0 else math.nan)
    metrics["fit_seconds"] = fitted.post.fit_seconds
    ctx.report(0, {k: metrics[k] for k in ("rmse", "mae", "nlpd", "coverage95")})

    # The grid, streamed into the NetCDF (or only the figures' maps without it).
    start = time.perf_counter()
    map_index = np.unique(np.linspace(0, len(plan.times) - 1, min(cfg.eval.map_times, len(plan.times))).round()
                          .astype(int))
    in_mean, in_std = fitted.predict(table.coords, table.times)
    station_arrays = {"station_value": table.values, "station_mean": in_mean, "station_std": in_std}
    if cv is not None:
        station_arrays |= {"station_cv_mean": cv.mean, "station_cv_std": np.sqrt(cv.var)}
    files: dict[str, Path] = {}
    label = kernel_label(cfg.model.space_kernel, cfg.model.time_kernel, "product")
    if cfg.output.netcdf:
        nc_path = Path(ctx.workdir) / "gp_stations.nc"
        attrs = {"gp_kernel": label, "gp_inference": plan.inference,
                 "gp_hyperparameters": str(fitted.post.kern.hyperparameters())}
        if table.projection is not None:
            attrs["distance_projection"] = table.projection.proj4
        maps_mean, maps_std = stations_output.write_netcdf(
            nc_path, grid, plan.times, table, lambda c: fitted.predict(c, plan.times), map_index=map_index,
            stations=station_arrays, attrs=attrs, noise_std=fitted.noise_std)
        files["gp_stations_nc"] = nc_path
    else:
        maps_mean, maps_std = (a.reshape(len(map_index), h, w)
                               for a in fitted.predict(grid.metres(slice(0, h)), plan.times[map_index]))
    metrics["predict_seconds"] = time.perf_counter() - start

    figures: dict[str, Any] = {}
    title = f"{table.source}: GP {label} ({plan.inference})"
    observed_at = np.zeros((len(map_index), table.n_stations), bool)
    for k, i in enumerate(map_index):  # a station "has a value" at an output time that is one of its own times
        match = np.flatnonzero(np.isclose(table.times, plan.times[i]))
        if len(match):
            observed_at[k] = np.isfinite(table.values[match[0]])
    figures["gp_station_maps"] = stations_plots.maps_figure(
        grid, maps_mean, maps_std, [_time_label(table, plan.times[i]) for i in map_index], table, observed_at, title)
    tables: dict[str, Any] = {"kernel_combination": label, "inference": plan.inference,
                              "n_stations": table.n_stations, "n_times": table.n_times, "n_values": table.n_observed,
                              "grid_shape": [len(plan.times), h, w], "memory_estimate_gib": plan.memory_bytes / 2**30,
                              "stations_outside_grid": [str(i) for i in table.ids[plan.outside]],
                              "hyperparameters": fitted.post.kern.hyperparameters(),
                              "cg_iterations": fitted.post.cg_iterations}
    if cv is not None:
        tables["folds"] = [[str(i) for i in table.ids[f]] for f in cv.folds]
        dist = stations_eval.nearest_distance(table.coords, cv.folds)
        err = (cv.mean - table.values) ** 2
        per_station = np.sqrt(np.nanmean(np.where(np.isfinite(err), err, np.nan), axis=0))
        per_base = None if baseline is None else np.sqrt(np.nanmean((baseline - table.values) ** 2, axis=0))
        figures["gp_station_error_distance"] = stations_plots.distance_figure(
            dist, per_station, per_base, f"{title}: held-out stations")
        if cfg.eval.series_figures:
            pick = np.argsort(dist)[np.linspace(0, table.n_stations - 1, min(cfg.eval.series_figures,
                                                                              table.n_stations)).astype(int)]
            figures["gp_station_series"] = stations_plots.series_figure(
                table, cv.mean, np.sqrt(cv.var), list(pick), baseline, f"{title}: held-out stations (nearest to farthest)")
    for name in ("biharmonic", "griddata", "sklearn_gpr"):
        metrics.setdefault(f"baseline_{name}_rmse", math.nan)
        metrics.setdefault(f"baseline_{name}_mae", math.nan)
    for name in ("nlpd", "coverage95", "fit_seconds"):
        metrics.setdefault(f"baseline_sklearn_gpr_{name}", math.nan)
    metrics["rmse_vs_biharmonic"] = math.nan
    ctx.log(f"gp stations: held-out rmse={metrics['rmse']:.4g} (spline {metrics['baseline_spline_rmse']:.4g}), "
            f"coverage95={metrics['coverage95']:.3f}; {time.perf_counter() - start_all:.1f}s")
    return RunResult(metrics={k: float(v) for k, v in metrics.items()}, figures=figures, files=files, tables=tables)
