"""GP learner, station path: readers, Kronecker algebra, reconstruction vs spline, folds, NetCDF, bad input, study."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from geostudy.cli import run_main, study_main
from geostudy.config import apply_overrides
from geostudy.errors import DataError
from geostudy.io.stations import (
    LocalProjection,
    StationTable,
    read_station_csv,
    read_station_netcdf,
    write_station_csv,
)
from geostudy.learners import RunContext, get_learner
from geostudy.learners.gp.stations_config import StationSimConfig
from geostudy.learners.gp.stations_sim import simulate_stations

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = {"station": "station", "x": "x", "y": "y", "time": "time", "value": "value"}
SMALL = StationSimConfig(n_stations=24, n_times=12, noise=0.2, p_missing=0.1)
RUN = {"device": "cpu", "data.source": "stations", "train.iterations": 20, "eval.station_folds": 3,
       "eval.map_times": 2, "eval.series_figures": 2, "output.grid.size": 12}


def config(**extra) -> dict:
    return apply_overrides(get_learner("gp").default_config(), {**RUN, **extra})


def station_csv(tmp_path: Path, sim: StationSimConfig = SMALL, seed: int = 0) -> Path:
    return write_station_csv(tmp_path / "stations.csv", simulate_stations(sim, seed).observed)


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    code = run_main(["--config", str(ROOT / "configs" / "gp.yaml"), "--quiet", *args])
    return code, capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# Readers


def test_csv_round_trip_keeps_gaps_dates_and_coordinates(tmp_path):
    table = simulate_stations(SMALL, 0).observed
    back = read_station_csv(write_station_csv(tmp_path / "s.csv", table), COLUMNS)
    order = np.argsort(table.ids)
    np.testing.assert_allclose(back.x, table.x[order])
    np.testing.assert_allclose(back.times, table.times, atol=1e-9)
    np.testing.assert_allclose(back.values, table.values[:, order])  # NaN where the rows were absent
    assert back.time_origin is not None and back.time_origin.startswith("2024-01-01")


def test_netcdf_with_a_station_dimension_reads_like_the_csv(tmp_path):
    import xarray as xr

    table = simulate_stations(SMALL, 0).observed
    times = np.datetime64("2024-01-01") + (table.times * 86400).astype("timedelta64[s]")
    ds = xr.Dataset({"t2m": (("station", "time"), table.values.T, {"units": "K"}),
                     "x": ("station", table.x), "y": ("station", table.y), "name": ("station", table.ids)},
                    coords={"time": times})
    ds.to_netcdf(tmp_path / "s.nc")
    back = read_station_netcdf(tmp_path / "s.nc", {**COLUMNS, "value": "t2m", "station": "name"})
    assert back.units == "K"
    np.testing.assert_allclose(back.values, table.values)
    np.testing.assert_allclose(back.times, table.times, atol=1e-6)


def test_lonlat_projection_keeps_great_circle_distances():
    lon, lat = np.array([10.0, 11.0, 10.5, 9.2]), np.array([45.0, 45.3, 46.0, 44.1])
    proj = LocalProjection.centred_on(lon, lat)
    x, y = proj.forward(lon, lat)
    lo, la = proj.inverse(x, y)
    np.testing.assert_allclose(lo, lon, atol=1e-9)
    np.testing.assert_allclose(la, lat, atol=1e-9)
    from pyproj import Geod

    _, _, geodesic = Geod(ellps="WGS84").inv(lon[0], lat[0], lon[2], lat[2])
    assert math.hypot(x[0] - x[2], y[0] - y[2]) == pytest.approx(geodesic, rel=2e-3)


# --------------------------------------------------------------------------------------------------
# The GP: Kronecker algebra against the exact GP, reconstruction against the spline, the folds


def _normalised(table: StationTable):
    from geostudy.learners.gp.kron import Normaliser

    norm = Normaliser.fit(table.coords, table.times)
    mu, sd = np.nanmean(table.values), np.nanstd(table.values)
    return norm, norm.space(table.coords), norm.time(table.times), (table.values - mu) / sd


def test_kronecker_posterior_equals_the_exact_one():
    from geostudy.learners.gp.config import ModelConfig, TrainConfig
    from geostudy.learners.gp.kron import condition, fit_station_gp

    sim = simulate_stations(StationSimConfig(n_stations=15, n_times=10), 1, n_heldout=5)
    assert sim.heldout is not None
    norm, xs, ts, y = _normalised(sim.observed)
    exact = fit_station_gp(xs, ts, y, ModelConfig(inference="exact"), TrainConfig(iterations=10), seed=0)
    kron = condition(exact.kern, xs, ts, y, "kronecker")
    xh = norm.space(sim.heldout.coords)
    (me, ve), (mk, vk) = exact.predict(xh, ts), kron.predict(xh, ts)
    np.testing.assert_allclose(mk, me, atol=1e-6)  # the means agree whatever is missing
    assert np.all(vk <= ve + 1e-9)  # the complete-data variance is a lower bound with gaps
    # Against a dense GP written out by hand.
    import torch

    with torch.no_grad():
        kern = exact.kern
        s2, n2, mu = float(kern.outputscale), float(kern.noise), float(kern.mean)
        k_all = s2 * np.kron(kern.kt(torch.as_tensor(ts[:, None])).numpy(), kern.ks(torch.as_tensor(xs)).numpy())
        k_star = s2 * np.kron(kern.kt(torch.as_tensor(ts[:, None])).numpy(),
                              kern.ks(torch.as_tensor(xh), torch.as_tensor(xs)).numpy())
    obs = np.isfinite(y).ravel()
    a = k_all[np.ix_(obs, obs)] + n2 * np.eye(obs.sum())
    dense = mu + k_star[:, obs] @ np.linalg.solve(a, y.ravel()[obs] - mu)
    np.testing.assert_allclose(me.ravel(), dense, atol=1e-8)
    full = np.where(np.isfinite(y), y, 0.0)  # no gaps: the Kronecker variance is exact too
    np.testing.assert_allclose(condition(exact.kern, xs, ts, full, "kronecker").predict(xh, ts)[1],
                               condition(exact.kern, xs, ts, full, "exact").predict(xh, ts)[1], atol=1e-9)


def test_linear_mean_recovers_a_known_trend_and_returns_to_it_far_from_the_stations():
    from geostudy.learners.gp.config import ModelConfig, TrainConfig
    from geostudy.learners.gp.kron import condition, fit_station_gp

    rng = np.random.default_rng(4)
    n_s, n_t = 40, 15
    xs, ts = rng.random((n_s, 2)) - 0.5, np.linspace(0.0, 1.0, n_t)
    d = np.sqrt(((xs[:, None] - xs[None]) ** 2).sum(-1)) / 0.1
    ks = (1 + np.sqrt(3) * d) * np.exp(-np.sqrt(3) * d)
    kt = np.exp(-0.5 * ((ts[:, None] - ts[None]) / 0.2) ** 2)
    chol = np.linalg.cholesky(np.kron(kt, ks) + 1e-8 * np.eye(n_s * n_t))
    beta = np.array([1.0, 0.8, 0.6, -0.4])  # 1, t, x, y
    trend = beta[0] + beta[1] * ts[:, None] + xs[None, :, 0] * beta[2] + xs[None, :, 1] * beta[3]
    y = trend + 0.2 * (chol @ rng.standard_normal(n_s * n_t)).reshape(n_t, n_s) + 0.05 * rng.standard_normal((n_t, n_s))
    y[rng.random(y.shape) < 0.1] = np.nan
    train = TrainConfig(iterations=40, station_calibration=False)
    linear = fit_station_gp(xs, ts, y, ModelConfig(inference="exact", mean="linear"), train, seed=0)
    constant = fit_station_gp(xs, ts, y, ModelConfig(inference="exact"), train, seed=0)
    hyper = linear.kern.hyperparameters()
    fitted = np.array([hyper[k] for k in ("mean", "mean.time", "mean.x", "mean.y")])
    np.testing.assert_allclose(fitted, beta, atol=0.25)
    assert "mean.time" not in constant.kern.hyperparameters()
    # Far outside the stations (no correlation left) the GP returns to its prior mean: the trend, or one value.
    far, t_mid = np.array([[1.5, -1.5]]), np.array([0.5])
    truth = beta[0] + beta[1] * 0.5 + 1.5 * beta[2] - 1.5 * beta[3]
    lin_far, const_far = float(linear.predict(far, t_mid)[0][0, 0]), float(constant.predict(far, t_mid)[0][0, 0])
    assert abs(lin_far - truth) < 0.5 < 1.0 < abs(const_far - truth), (lin_far, const_far, truth)
    # Near the stations both means give the same field (the GP absorbs what a constant mean leaves).
    mean_lin, mean_const = linear.predict(xs, ts)[0], constant.predict(xs, ts)[0]
    assert float(np.sqrt(np.mean((mean_lin - mean_const) ** 2))) < 0.1
    # The Kronecker path subtracts and adds back the same mean: its posterior mean is the exact one.
    np.testing.assert_allclose(condition(linear.kern, xs, ts, y, "kronecker").predict(xs, ts)[0], mean_lin, atol=1e-6)


def test_true_posterior_mean_is_the_dense_conditional_mean_of_the_simulated_field():
    from geostudy.learners.gp.stations_sim import _matern32, true_posterior_mean

    cfg = StationSimConfig(n_stations=12, n_times=9, p_missing=0.2, noise=0.2, cycle=0.5, trend=1.5, step_hours=6.0)
    sim = simulate_stations(cfg, 2, n_heldout=4)
    assert sim.heldout is not None
    table, targets = sim.observed, sim.heldout.coords
    # The simulator's covariance written out densely: (rbf in steps x Matern 3/2) + cycle^2 cos(2 pi dt) x Matern 3/2
    # at twice the range, its trend known.
    xy = np.concatenate([table.coords, targets])
    d = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1)) / (cfg.space_lengthscale * cfg.extent_m)
    steps = np.arange(cfg.n_times)
    kt = np.exp(-0.5 * ((steps[:, None] - steps[None]) / cfg.time_lengthscale) ** 2)
    kc = cfg.cycle**2 * np.cos(2 * np.pi * (table.times[:, None] - table.times[None]))
    k = np.kron(kt, _matern32(d)) + np.kron(kc, _matern32(d / 2))  # (time, station) row-major
    n = len(xy)
    obs_rows = [t * n + s for t in range(cfg.n_times) for s in range(table.n_stations) if np.isfinite(table.values[t, s])]
    tgt_rows = [t * n + s for t in range(cfg.n_times) for s in range(table.n_stations, n)]
    trend = cfg.trend * (table.times - table.times.mean()) / (table.times[-1] - table.times[0])
    resid = np.array([table.values[r // n, r % n] - trend[r // n] for r in obs_rows])
    a = k[np.ix_(obs_rows, obs_rows)] + cfg.noise**2 * np.eye(len(obs_rows))
    dense = (k[np.ix_(tgt_rows, obs_rows)] @ np.linalg.solve(a, resid)).reshape(cfg.n_times, -1) + trend[:, None]
    np.testing.assert_allclose(true_posterior_mean(cfg, table, targets), dense, atol=1e-6)


def test_station_csv_is_reconstructed_better_than_the_per_time_step_spline(tmp_path):
    from geostudy.learners.gp.stations import fit_stations
    from geostudy.learners.gp.stations_eval import spline_per_time

    sim_cfg = StationSimConfig(n_stations=30, n_times=16, noise=0.3, p_missing=0.1)
    sim = simulate_stations(sim_cfg, 3, n_heldout=10)
    assert sim.heldout is not None
    table = read_station_csv(write_station_csv(tmp_path / "s.csv", sim.observed), COLUMNS)
    cfg = get_learner("gp").parse_config(config(**{"data.path": str(tmp_path / "s.csv")}))
    norm, *_ = _normalised(table)
    mean, _ = fit_stations(cfg, table, norm, None).predict(sim.heldout.coords, table.times)
    spline = spline_per_time(table.coords, table.values, sim.heldout.coords)
    truth = sim.heldout.values
    gp_rmse, spline_rmse = (float(np.sqrt(np.mean((p - truth) ** 2))) for p in (mean, spline))
    assert gp_rmse < 0.9 * spline_rmse, (gp_rmse, spline_rmse)


def test_folds_partition_the_stations_random_and_blocked():
    from geostudy.learners.gp.stations_eval import station_folds

    coords = np.random.default_rng(0).random((40, 2)) * 1000
    for spacing in (None, 250.0):
        folds = station_folds(coords, 4, seed=0, block_spacing=spacing)
        joined = np.concatenate(folds)
        assert sorted(joined.tolist()) == list(range(40))
    blocked = station_folds(coords, 4, seed=0, block_spacing=250.0)
    block_of = [tuple((coords[i] // 250).astype(int)) for i in range(40)]
    for fold in blocked:  # a block never straddles two folds
        assert not {block_of[i] for i in fold} & {block_of[i] for i in np.setdiff1d(np.arange(40), fold)}


def test_held_out_stations_never_reach_the_fold_that_scores_them():
    from geostudy.learners.gp.kron import Normaliser
    from geostudy.learners.gp.stations import fit_stations
    from geostudy.learners.gp.stations_eval import cross_validate, station_folds

    table = simulate_stations(StationSimConfig(n_stations=15, n_times=8), 2).observed
    cfg = get_learner("gp").parse_config(config(**{"train.iterations": 8}))
    norm = Normaliser.fit(table.coords, table.times)
    folds = station_folds(table.coords, 3, seed=0)
    seen: list[tuple[np.ndarray, np.ndarray]] = []

    def run(values: np.ndarray):
        tab = StationTable(ids=table.ids, x=table.x, y=table.y, times=table.times, values=values, source="t")

        def fit_predict(train, test):
            seen.append((train, test))
            fold = fit_stations(cfg, tab.subset(train), norm, None)
            mean, std = fold.predict(tab.coords[test], tab.times)
            return mean, std**2
        return cross_validate(values, folds, fit_predict)

    before = run(table.values)
    assert all(not set(train) & set(test) for train, test in seen)
    changed = table.values.copy()
    victim = folds[0]
    changed[:, victim] += 50.0  # a wild change to the held-out stations of fold 0
    after = run(changed)
    np.testing.assert_allclose(after.mean[:, victim], before.mean[:, victim], atol=1e-9)
    assert not np.allclose(after.mean[:, folds[1]], before.mean[:, folds[1]])


# --------------------------------------------------------------------------------------------------
# A run: metrics, NetCDF (CF), figures; bad input


def test_run_writes_a_cf_netcdf_and_station_metrics(tmp_path):
    import xarray as xr

    path = station_csv(tmp_path)
    result = get_learner("gp").run(config(**{"data.path": str(path), "data.stations.units": "K"}),
                                   RunContext(workdir=tmp_path / "run"))
    m = result.metrics
    assert all(math.isfinite(m[k]) for k in ("rmse", "mae", "nlpd", "coverage95", "baseline_spline_rmse"))
    assert {"gp_station_maps", "gp_station_series", "gp_station_error_distance"} <= set(result.figures)
    with xr.open_dataset(result.files["gp_stations_nc"]) as ds:
        assert ds.attrs["Conventions"] == "CF-1.8"
        assert ds["mean"].dims == ("time", "y", "x") and ds["std"].dims == ("time", "y", "x")
        assert ds["mean"].attrs["units"] == "K" and ds["x"].attrs["standard_name"] == "projection_x_coordinate"
        assert np.issubdtype(ds["time"].dtype, np.datetime64) and ds.sizes["time"] == SMALL.n_times
        assert float(ds["std"].min()) > 0 and np.isfinite(ds["mean"].values).all()
        assert ds["station_cv_mean"].dims == ("station_time", "station") and ds.sizes["station"] == SMALL.n_stations
        table = read_station_csv(path, COLUMNS)
        np.testing.assert_allclose(ds["station_value"].values, table.values, rtol=1e-6)


def test_lonlat_stations_give_a_lonlat_grid_and_a_station_outside_is_reported(tmp_path):
    import xarray as xr

    table = simulate_stations(SMALL, 0).observed
    lon, lat = LocalProjection(lon0=8.0, lat0=46.0).inverse(table.x - 5e4, table.y - 5e4)
    table.lon, table.lat = lon, lat
    path = write_station_csv(tmp_path / "ll.csv", table, {"x": "lon", "y": "lat"})
    extent = [float(lon.min()) + 0.1, float(lon.max()), float(lat.min()), float(lat.max())]
    cfg = config(**{"data.path": str(path), "data.stations.coords": "lonlat", "data.stations.columns.x": "lon",
                    "data.stations.columns.y": "lat", "output.grid.extent": extent, "output.grid.resolution": 0.1,
                    "eval.station_folds": 0})
    result = get_learner("gp").run(cfg, RunContext(workdir=tmp_path / "run"))
    assert result.tables["stations_outside_grid"]  # allowed, reported
    with xr.open_dataset(result.files["gp_stations_nc"]) as ds:
        assert ds["mean"].dims == ("time", "lat", "lon") and ds["lon"].attrs["units"] == "degrees_east"


def test_a_template_netcdf_sets_the_grid_and_output_times_pick_dates(tmp_path):
    import xarray as xr

    xr.Dataset(coords={"x": ("x", np.linspace(0, 1e5, 7), {"axis": "X"}),
                       "y": ("y", np.linspace(0, 1e5, 5), {"axis": "Y"})}).to_netcdf(tmp_path / "grid.nc")
    cfg = config(**{"data.path": str(station_csv(tmp_path)), "output.grid.template": str(tmp_path / "grid.nc"),
                    "output.times": ["2024-01-01T03:00", "2024-01-02"], "eval.station_folds": 0})
    result = get_learner("gp").run(cfg, RunContext(workdir=tmp_path / "run"))
    with xr.open_dataset(result.files["gp_stations_nc"]) as ds:
        assert ds["mean"].shape == (2, 5, 7)
        assert [str(t)[:16] for t in ds["time"].values] == ["2024-01-01T03:00", "2024-01-02T00:00"]


BAD_CASES = {
    "missing column": ("station,x,y,time,temp\nA,0,0,2024-01-01,1\n", [], "columns.value", "not found"),
    "non-numeric value": ("station,x,y,time,value\nA,0,0,2024-01-01,1\nB,5,5,2024-01-01,warm\n", [],
                          "columns.value", "not a number"),
    "duplicate": ("station,x,y,time,value\nA,0,0,2024-01-01,1\nA,0,0,2024-01-01,2\n", [], "columns.value",
                  "two different values"),
    "latitude out of range": ("station,x,y,time,value\nA,10,95,2024-01-01,1\nB,11,45,2024-01-01,2\n",
                              ["data.stations.coords=lonlat"], "columns.y", "latitude"),
    "grid too large": (None, ["output.grid.resolution=0.5"], "output.grid", "GiB"),
    "bad time": ("station,x,y,time,value\nA,0,0,yesterday,1\n", [], "columns.time", "ISO date"),
    "unknown mean": (None, ["model.mean=quadratic"], "model.mean", "allowed: constant, linear"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_station_input_is_one_line_naming_file_and_key(case, tmp_path, capsys):
    text, extra, key, words = BAD_CASES[case]
    path = tmp_path / "bad.csv"
    if text is None:
        station_csv(tmp_path).rename(path)
    else:
        path.write_text(text)
    out = tmp_path / "out"
    code, err = run_cli(["--set", "data.source=stations", f"data.path={path}", *extra, "--out", str(out)], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and key in lines[0] and words in lines[0], lines
    assert ("bad.csv" in lines[0]) or ("gp.yaml" in lines[0])
    assert not out.exists()  # refused before anything is written


def test_missing_station_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        get_learner("gp").check_config(config(**{"data.path": str(tmp_path / "none.csv")}))


# --------------------------------------------------------------------------------------------------
# The quick study


def test_gp_stations_quick_study_runs(tmp_path):
    import optuna

    out = tmp_path / "out"
    assert study_main(["--study", "gp_stations_quick", "--out", str(out), "--n-trials", "2", "--no-progress"]) == 0
    assert (out / "gp_stations_quick" / "best_config.yaml").is_file()
    study = optuna.load_study(study_name="gp_stations_quick",
                              storage=f"sqlite:///{out / 'gp_stations_quick' / 'gp_stations_quick.db'}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete and all(math.isfinite(t.value) for t in complete)
