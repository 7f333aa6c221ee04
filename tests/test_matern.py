"""The matern learner: simulator vs the analytic covariance, MLE, graphs, model, CSV estimate mode."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from geostudy.cli import run_main
from geostudy.config import load_yaml, to_dataclass
from geostudy.errors import ConfigError, DataError
from geostudy.learners import RunContext, get_learner
from geostudy.learners.matern.config import MaternConfig
from geostudy.learners.matern.covariance import (
    matern_correlation,
    matern_correlation_bessel,
    matern_covariance,
    separable_covariance,
)
from geostudy.learners.matern.data import build_graph, collate
from geostudy.learners.matern.estimate import read_points
from geostudy.learners.matern.locations import sample_locations
from geostudy.learners.matern.mle import fit_mle
from geostudy.learners.matern.refine import fisher_scoring, wald_interval
from geostudy.learners.matern.simulate import FieldSet, simulate, simulate_fields
from geostudy.learners.matern.train import build_model
from tests.conftest import ROOT

TINY = {
    "device": "cpu",
    "data": {"n": 40, "train_size": 32, "val_size": 16, "test_size": 12, "simulation": "fixed"},
    "train": {"epochs": 2, "batch_size": 16},
    "model": {"hidden": 16, "deepsets_hidden": 16, "n_basis": 6},
    "eval": {"mle_fields": 3, "plots": False, "refine_steps": 3},
}


def make_cfg(**sections) -> MaternConfig:
    raw: dict = {}
    for name, value in sections.items():
        raw[name] = value
    return to_dataclass(MaternConfig, raw)


def merged(base: dict, extra: dict) -> dict:
    out = json.loads(json.dumps(base))
    for key, value in extra.items():
        if isinstance(value, dict):
            out.setdefault(key, {}).update(value)
        else:
            out[key] = value
    return out


# -- covariance and simulator ------------------------------------------------------------------------


@pytest.mark.parametrize("nu", [0.5, 1.5, 2.5])
def test_closed_forms_equal_the_bessel_form(nu):
    d = torch.linspace(0.0, 2.0, 41, dtype=torch.float64)
    closed = matern_correlation(d, 0.3, nu)
    bessel = matern_correlation_bessel(d / 0.3, nu)
    assert torch.allclose(closed, bessel, atol=1e-10)
    assert closed[0] == 1.0


def test_general_nu_is_between_its_neighbours():
    d = torch.tensor([0.1, 0.2], dtype=torch.float64)
    c1, c, c2 = (matern_correlation(d, 0.2, nu) for nu in (0.5, 1.0, 1.5))
    assert bool(((c1 < c) & (c < c2)).all())


def _empirical_check(cov: np.ndarray, draws: np.ndarray) -> None:
    """Every entry of the sample covariance within 5 Monte-Carlo standard errors of the analytic one."""
    n_draws = draws.shape[0]
    emp = draws.T @ draws / n_draws  # zero mean is known
    se = np.sqrt((cov**2 + np.outer(np.diag(cov), np.diag(cov))) / n_draws)
    assert np.all(np.abs(emp - cov) < 5 * se), np.max(np.abs(emp - cov) / se)


@pytest.mark.parametrize("nu,tau2", [(0.5, 0.0), (1.5, 0.2), (2.5, 0.0), (1.0, 0.1)])
def test_simulated_fields_have_the_analytic_covariance(nu, tau2):
    rng = np.random.default_rng(1)
    coords = rng.random((8, 2))
    params = {"range": np.array([0.3]), "variance": np.array([2.0]), "nugget": np.array([tau2])}
    gen = torch.Generator().manual_seed(0)
    draws = simulate_fields([coords], params, np.array([20000]), nu, gen)[0]
    cov = matern_covariance(torch.from_numpy(coords), 0.3, 2.0, nu, tau2).numpy()
    _empirical_check(cov, draws)
    # The variogram at each pair: half the mean squared increment equals sigma2 (1 - rho(d)) + tau2.
    i, j = np.triu_indices(8, 1)
    gamma = 0.5 * np.mean((draws[:, i] - draws[:, j]) ** 2, axis=0)
    expected = cov[0, 0] - cov[i, j]
    assert np.all(np.abs(gamma - expected) < 5 * np.sqrt(2.0 / 20000) * expected + 1e-9)


def test_spacetime_fields_have_the_separable_covariance():
    rng = np.random.default_rng(2)
    sites = rng.random((3, 2))
    coords = np.repeat(sites, 3, axis=0)
    times = np.tile([0.0, 0.5, 1.0], 3)
    params = {"range": np.array([0.4]), "time_range": np.array([0.6]), "variance": np.array([1.0]),
              "nugget": np.array([0.05])}
    draws = simulate_fields([coords], params, np.array([20000]), 1.5, torch.Generator().manual_seed(1),
                            times=[times], nu_time=0.5)[0]
    cov = separable_covariance(torch.from_numpy(coords), torch.from_numpy(times), 0.4, 0.6, 1.0, 1.5, 0.5, 0.05)
    _empirical_check(cov.numpy(), draws)


def test_padded_batches_of_different_sizes_are_exact():
    """Fields of different sizes share one batched Cholesky; each equals its own factorisation."""
    rng = np.random.default_rng(3)
    coords = [rng.random((5, 2)), rng.random((9, 2))]
    params = {"range": np.array([0.2, 0.3]), "variance": np.array([1.0, 2.0]), "nugget": np.array([0.0, 0.1])}
    both = simulate_fields(coords, params, np.array([2, 3]), 1.5, torch.Generator().manual_seed(5))
    assert [v.shape for v in both] == [(2, 5), (3, 9)]
    cfg = make_cfg(data={"locations": "poisson", "n": 30, "m_min": 1, "m_max": 4})
    fs = simulate(cfg, 6, np.random.default_rng(0))
    assert all(v.shape[1] == len(c) and 1 <= v.shape[0] <= 4 for v, c in zip(fs.values, fs.coords))


@pytest.mark.parametrize("pattern", ["uniform", "poisson", "cluster", "grid"])
def test_location_patterns(pattern):
    rng = np.random.default_rng(0)
    pts = sample_locations(pattern, 100, rng)
    assert pts.ndim == 2 and pts.shape[1] == 2 and len(pts) >= 10
    assert pts.min() >= 0 and pts.max() <= 1
    if pattern in ("uniform", "grid"):
        assert len(pts) == 100


def test_cluster_pattern_is_clustered():
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(0)

    def nn_dist(p):
        return cKDTree(p).query(p, k=2)[0][:, 1].mean()

    cl = np.mean([nn_dist(sample_locations("cluster", 200, rng, cluster_scale=0.03)) for _ in range(5)])
    un = np.mean([nn_dist(sample_locations("uniform", 200, rng)) for _ in range(5)])
    assert cl < 0.8 * un


def test_priors_sample_inside_their_bounds():
    cfg = make_cfg(prior={"range": {"dist": "loguniform", "low": 0.01, "high": 0.5},
                          "variance": {"dist": "uniform", "low": 0.5, "high": 2.0}})
    fs = simulate(cfg, 64, np.random.default_rng(0), chunk=32)
    assert 0.01 <= fs.params["range"].min() and fs.params["range"].max() <= 0.5
    assert 0.5 <= fs.params["variance"].min() and fs.params["variance"].max() <= 2.0
    assert np.all(fs.params["nugget"] == 0.0)
    assert cfg.free_params() == ["range", "variance"]


# -- MLE -----------------------------------------------------------------------------------------------


def test_mle_recovers_a_known_case():
    rng = np.random.default_rng(4)
    coords = rng.random((120, 2))
    params = {"range": np.array([0.15]), "variance": np.array([1.5]), "nugget": np.array([0.1])}
    values = simulate_fields([coords], params, np.array([6]), 1.5, torch.Generator().manual_seed(3))[0]
    res = fit_mle(coords, values, nu=1.5, free=["range", "variance", "nugget"], fixed={},
                  bounds={"range": (math.log(0.01), math.log(2.0)), "variance": (math.log(0.01), math.log(100.0)),
                          "nugget": (math.log(1e-4), math.log(10.0))})
    assert res.success
    assert abs(res.log_params["range"] - math.log(0.15)) < 0.25
    assert abs(res.log_params["variance"] - math.log(1.5)) < 0.5
    assert abs(res.log_params["nugget"] - math.log(0.1)) < 0.5
    # The optimum beats the truth in likelihood (it is the maximum).
    truth = fit_mle(coords, values, nu=1.5, free=["range"], fixed={"variance": 1.5, "nugget": 0.1},
                    bounds={"range": (math.log(0.15), math.log(0.15))})
    assert res.nll <= truth.nll + 1e-6


def test_mle_with_general_nu_uses_finite_differences():
    rng = np.random.default_rng(5)
    coords = rng.random((60, 2))
    params = {"range": np.array([0.2]), "variance": np.array([1.0]), "nugget": np.array([0.0])}
    values = simulate_fields([coords], params, np.array([4]), 1.2, torch.Generator().manual_seed(4))[0]
    res = fit_mle(coords, values, nu=1.2, free=["range"], fixed={"variance": 1.0, "nugget": 0.0},
                  bounds={"range": (math.log(0.02), math.log(1.0))})
    assert abs(res.log_params["range"] - math.log(0.2)) < 0.3


@pytest.mark.parametrize("nu, free", [(1.5, ["range", "variance"]), (1.2, ["range"])])
def test_fisher_scoring_converges_to_the_mle(nu, free):
    """From a start near the optimum the steps close in fast (about 5-30x each here); at the optimum it stays."""
    rng = np.random.default_rng(6)
    coords = rng.random((80, 2))
    params = {"range": np.array([0.2]), "variance": np.array([1.3]), "nugget": np.array([0.0])}
    values = simulate_fields([coords], params, np.array([3]), nu, torch.Generator().manual_seed(5))[0]
    fixed = {"nugget": 0.0, **({} if "variance" in free else {"variance": 1.3})}
    bounds = {"range": (math.log(0.02), math.log(2.0)), "variance": (math.log(0.01), math.log(100.0))}
    mle = fit_mle(coords, values, nu=nu, free=free, fixed=fixed, bounds=bounds)
    optimum = np.array([mle.log_params[name] for name in free])
    start = optimum + np.array([0.15, -0.1][: len(free)])

    def distance(steps: int, origin: np.ndarray = start) -> float:
        return float(np.abs(fisher_scoring(coords, values, origin, nu=nu, free=free, fixed=fixed, bounds=bounds,
                                           steps=steps).log_params - optimum).max())

    first = distance(1)
    assert first < 0.35 * float(np.abs(start - optimum).max())
    assert distance(3) < 0.1 * first
    assert distance(4) < 1e-3
    assert distance(1, optimum) < 1e-3
    # Kept in the bounds: a start far above the box comes back inside it.
    far = fisher_scoring(coords, values, optimum + 5.0, nu=nu, free=free, fixed=fixed, bounds=bounds, steps=1)
    assert all(bounds[name][0] <= far.log_params[i] <= bounds[name][1] for i, name in enumerate(free))


def test_wald_intervals_of_the_scoring_have_their_nominal_coverage():
    """Over 400 simulated fields the refined 90% intervals hold the true log-range 90% of the time
    (binomial sd 1.5%; measured 88.8% and 89.5%), and the width follows the information: with four
    replicates the intervals are half as wide as with one (the information grows with m)."""
    rng = np.random.default_rng(11)
    count, n, level = 400, 100, 0.9
    coords = [rng.random((n, 2)) for _ in range(count)]
    ranges = rng.uniform(0.05, 0.3, count)
    params = {"range": ranges, "variance": np.ones(count), "nugget": np.zeros(count)}
    fixed, bounds = {"variance": 1.0, "nugget": 0.0}, {"range": (math.log(0.01), math.log(2.0))}
    widths = {}
    for m in (1, 4):
        values = simulate_fields(coords, params, np.full(count, m), 1.5, torch.Generator().manual_seed(m))
        hits, width = [], []
        for i in range(count):
            start = [math.log(ranges[i]) + rng.normal(0, 0.1)]  # a consistent estimate, as the network's
            scored = fisher_scoring(coords[i], values[i], start, nu=1.5, free=["range"], fixed=fixed, bounds=bounds,
                                    steps=3)
            low, high = wald_interval(scored.log_params, scored.information, level)[0]
            hits.append(low <= math.log(ranges[i]) <= high)
            width.append(high - low)
        widths[m] = float(np.median(width))
        assert 0.855 <= np.mean(hits) <= 0.945, m
    assert widths[4] == pytest.approx(widths[1] / 2, rel=0.15)
    # No information (the start was not positive definite): no interval, not a made-up one.
    assert np.isnan(wald_interval(np.array([0.0]), None, level)).all()


# -- graphs ------------------------------------------------------------------------------------------------


def test_knn_and_radius_graphs():
    rng = np.random.default_rng(0)
    coords = rng.random((50, 2))
    cfg = make_cfg(graph={"kind": "knn", "k": 5})
    g = build_graph(coords, cfg.graph)
    e = g.edges
    assert e.shape[0] == 2 and not np.any(e[0] == e[1])
    # Directed kNN: node i receives from exactly its 5 nearest others, nearest first.
    assert np.array_equal(e[1], np.repeat(np.arange(50), 5))
    d = np.linalg.norm(coords[:, None] - coords[None], axis=2) + np.eye(50) * 9
    assert np.array_equal(g.neighbors, np.argsort(d, axis=1)[:, :5]) and np.array_equal(e[0], g.neighbors.ravel())
    assert np.allclose(g.attr[:, 0], np.linalg.norm(coords[e[0]] - coords[e[1]], axis=1), atol=1e-6)
    assert np.all(g.attr[:, 1] == 0)
    rad = build_graph(coords, make_cfg(graph={"kind": "radius", "radius": 0.2}).graph)
    assert rad.attr[:, 0].max() < 0.2 and rad.neighbors is None
    assert {(a, b) for a, b in rad.edges.T} == {(b, a) for a, b in rad.edges.T}  # symmetric


def test_spacetime_graph_links_space_and_time_neighbours():
    cfg = make_cfg(data={"spacetime": True, "n": 12, "n_times": 4}, graph={"k": 3, "time_k": 1})
    fs = simulate(cfg, 1, np.random.default_rng(0))
    coords, times = fs.coords[0], fs.times[0]
    g = build_graph(coords, cfg.graph, times)
    ds, dt = g.attr[:, 0], g.attr[:, 1]
    temporal = dt > 0
    # Temporal edges join one site at consecutive times; spatial edges join sites at one time.
    assert temporal.any() and np.all(ds[temporal] < 1e-6) and np.allclose(dt[temporal], 1 / 3, atol=1e-6)
    assert np.all(ds[~temporal] > 0)
    assert temporal.sum() == 2 * 12 * 3  # both directions, 3 steps between 4 times, 12 sites


# -- model -----------------------------------------------------------------------------------------------


def _fields(cfg: MaternConfig, count: int, seed: int = 0) -> FieldSet:
    return simulate(cfg, count, np.random.default_rng(seed))


@pytest.mark.parametrize("backend,arch,readout", [("pyg", "gcn", "mean"), ("dgl", "gcn", "attention"),
                                                  ("pyg", "sage", "sum"), ("dgl", "gat", "mean"),
                                                  ("pyg", "gat", "attention")])
def test_model_shapes(backend, arch, readout):
    cfg = make_cfg(data={"n": 30, "m_min": 1, "m_max": 3},
                   prior={"variance": {"dist": "loguniform", "low": 0.5, "high": 2},
                          "nugget": {"dist": "loguniform", "low": 0.01, "high": 0.1}},
                   model={"backend": backend, "arch": arch, "readout": readout, "hidden": 8, "depth": 2,
                          "heads": 2, "deepsets_hidden": 8})
    fs = _fields(cfg, 5)
    graphs = [build_graph(c, cfg.graph) for c in fs.coords]
    batch = collate(fs, graphs, cfg.free_params())
    model = build_model(cfg)
    point, interval = model(batch)
    assert point.shape == (5, 3) and interval.shape == (5, 3, 2) and batch.target.shape == (5, 3)
    assert bool((interval[..., 0] <= point).all() and (point <= interval[..., 1]).all())
    point.sum().backward()  # differentiable end to end


def test_shuffling_nodes_or_replicates_does_not_change_the_estimate():
    cfg = make_cfg(data={"n": 40, "m_min": 3, "m_max": 3}, model={"depth": 2, "readout": "attention"})
    fs = _fields(cfg, 2)
    model = build_model(cfg).eval()
    rng = np.random.default_rng(0)

    def estimate(fields: FieldSet) -> torch.Tensor:
        graphs = [build_graph(c, cfg.graph) for c in fields.coords]
        with torch.no_grad():
            return torch.cat(model(collate(fields, graphs))[:1] + (model(collate(fields, graphs))[1].flatten(1),), 1)

    base = estimate(fs)
    perm = [rng.permutation(len(c)) for c in fs.coords]
    nodes = FieldSet([c[p] for c, p in zip(fs.coords, perm)], [v[:, p] for v, p in zip(fs.values, perm)], fs.params)
    reps = FieldSet(fs.coords, [v[rng.permutation(v.shape[0])] for v in fs.values], fs.params)
    assert torch.allclose(estimate(nodes), base, atol=1e-4)
    assert torch.allclose(estimate(reps), base, atol=1e-4)
    # ...while a different field does change it.
    other = FieldSet(fs.coords, [v[::-1] * 2.0 for v in fs.values], fs.params)
    assert not torch.allclose(estimate(other), base, atol=1e-4)


# -- interval calibration ----------------------------------------------------------------------------------


def test_the_conformal_shift_is_the_finite_sample_quantile_of_the_misses():
    from geostudy.learners.matern.calibrate import conformal_shift

    interval = np.tile([[0.0, 1.0]], (9, 1, 1))  # (9 fields, 1 parameter, lo/hi)
    truth = np.array([[-0.3], [1.2], [0.5], [0.1], [1.05], [0.9], [-0.02], [0.5], [2.0]])
    # misses max(lo - t, t - hi): 0.3, 0.2, -0.5, -0.1, 0.05, -0.1, 0.02, -0.5, 1.0; sorted:
    # -0.5 -0.5 -0.1 -0.1 0.02 0.05 0.2 0.3 1.0. Level 0.7: rank ceil(10 * 0.7) = 7 -> 0.2.
    assert conformal_shift(interval, truth, 0.7) == pytest.approx([0.2])
    assert conformal_shift(interval, truth, 0.3) == pytest.approx([-0.1])  # rank 3: the interval narrows
    assert conformal_shift(interval, truth, 0.95) == pytest.approx([1.0])  # rank 10 > 9: the largest miss


def test_calibrated_intervals_hold_the_truth_at_their_level_for_every_replicate_count():
    from geostudy.learners.matern.calibrate import calibrate
    from geostudy.learners.matern.evaluate import predict, true_log_params

    cfg = make_cfg(device="cpu", data={"n": 40, "m_min": 1, "m_max": 3}, eval={"level": 0.5},
                   model={"hidden": 16, "deepsets_hidden": 16, "n_basis": 6})
    torch.manual_seed(0)
    model = build_model(cfg)  # untrained: its intervals span most of the prior, far wider than a 50% one
    calibration = calibrate(model, cfg, fields=300, rng=np.random.default_rng(1))
    assert calibration is not None and calibration.replicates == [1, 2, 3]
    for m in (1, 2, 3):
        test = simulate(cfg, 400, np.random.default_rng([2, m]), m=m)
        truth = true_log_params(test, ["range"])[:, 0]
        raw = predict(model, cfg, test)
        fixed = calibration.apply(raw, test)
        assert raw.interval is not None and fixed.interval is not None

        def coverage(interval, truth=truth):
            return float(np.mean((truth >= interval[:, 0, 0]) & (truth <= interval[:, 0, 1])))

        assert coverage(raw.interval) > 0.7, m
        assert coverage(fixed.interval) == pytest.approx(0.5, abs=0.08), m
        assert np.all(fixed.interval[..., 0] <= fixed.interval[..., 1])
    assert calibrate(model, cfg, fields=0, rng=np.random.default_rng(1)) is None


# -- learner runs: train, checkpoint, estimate -----------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny final run (train + test + MLE) whose checkpoint the estimate tests use."""
    work = tmp_path_factory.mktemp("matern_run")
    learner = get_learner("matern")
    config = merged(learner.default_config(), TINY)
    result = learner.run(config, RunContext(workdir=work, final=True))
    return result, work


def test_final_run_reports_metrics_and_saves_a_checkpoint(trained):
    result, work = trained
    m = result.metrics
    for key in ("val_rmse_log_range", "test_rmse_log_range", "test_coverage_log_range", "mle_rmse_log_range",
                "refined_rmse_log_range", "seconds_per_field", "refined_seconds_per_field", "mle_seconds_per_field",
                "param_count"):
        assert math.isfinite(m[key]), key
    # Refined by Fisher scoring, the tiny network's estimates land on the MLE's (same fields).
    same = result.tables["same_fields"]
    assert same["refined"]["rmse_log_range"] == pytest.approx(same["mle"]["rmse_log_range"], abs=0.02)
    assert 0.0 <= m["refined_coverage_log_range"] <= 1.0  # its own Wald intervals, not the network's
    assert m["refined_seconds_per_field"] > m["seconds_per_field"]
    assert math.isnan(m["val_rmse_log_variance"])  # variance is fixed in the default config
    assert set(get_learner("matern").metrics) <= set(m)
    assert result.files["checkpoint"] == work / "checkpoint.pt" and result.files["checkpoint"].is_file()
    ckpt = torch.load(result.files["checkpoint"], weights_only=True)
    assert ckpt["config"]["learner"] == "matern"
    # The intervals were calibrated on fresh fields, and the checkpoint carries the shifts.
    assert ckpt["interval_calibration"] == result.tables["interval_calibration"]
    assert ckpt["interval_calibration"]["replicates"] == [1] and ckpt["interval_calibration"]["fields"] == 200


def _write_points(path, coords, values, replicate=None):
    df = pd.DataFrame({"x": coords[:, 0], "y": coords[:, 1], "value": values})
    if replicate is not None:
        df["rep"] = replicate
    df.to_csv(path, index=False)
    return path


def _estimate(learner, ckpt, csv, work, **extra):
    config = merged(learner.default_config(), {"mode": "estimate", "estimate": {"checkpoint": str(ckpt),
                                                                                "csv": str(csv), **extra}})
    learner.check_config(config)
    return learner.run(config, RunContext(workdir=work))


def test_estimate_mode_returns_parameters_in_data_units(trained, tmp_path):
    result, _ = trained
    learner = get_learner("matern")
    rng = np.random.default_rng(9)
    coords = rng.random((40, 2))
    values = simulate_fields([coords], {"range": np.array([0.2]), "variance": np.array([1.0]),
                                        "nugget": np.array([0.0])}, np.array([2]), 1.5,
                             torch.Generator().manual_seed(0))[0]
    unit = _estimate(learner, result.files["checkpoint"], _write_points(tmp_path / "a.csv", coords, values[0]),
                     tmp_path / "a")
    # The same points in metres (x 1000, shifted): the range comes back 1000 times larger.
    metres = _estimate(learner, result.files["checkpoint"],
                       _write_points(tmp_path / "b.csv", coords * 1000 + 5e5, values[0]), tmp_path / "b")
    ratio = metres.metrics["estimate_range"] / unit.metrics["estimate_range"]
    scale = (coords.max(0) - coords.min(0)).max()
    assert ratio == pytest.approx(1000.0, rel=1e-4)
    assert metres.metrics["estimate_mle_range"] / unit.metrics["estimate_mle_range"] == pytest.approx(1000, rel=1e-2)
    summary = json.loads((tmp_path / "b" / "estimates.json").read_text())
    assert summary["coordinate_scale"] == pytest.approx(1000 * scale)
    assert summary["interval_calibration"] == "conformal, 200 simulated fields for each replicate count 1-1"
    range_row = summary["parameters"][0]
    assert range_row["gnn_low"] <= range_row["gnn_high"]
    assert (tmp_path / "b" / "estimates.csv").is_file() and set(metres.files) == {"estimates_json", "estimates_csv"}
    # Two replicates through a replicate column.
    both = np.concatenate([values[0], values[1]])
    reps = _estimate(learner, result.files["checkpoint"],
                     _write_points(tmp_path / "c.csv", np.vstack([coords, coords]), both, [0] * 40 + [1] * 40),
                     tmp_path / "c", replicate="rep")
    assert reps.tables["estimates"]["replicates"] == 2 and math.isfinite(reps.metrics["estimate_range"])
    # eval.refine_steps adds the network's estimate refined on the exact likelihood: next to the MLE's.
    config = merged(learner.default_config(), {"mode": "estimate", "eval": {"refine_steps": 3}, "estimate": {
        "checkpoint": str(result.files["checkpoint"]), "csv": str(tmp_path / "b.csv")}})
    refined = learner.run(config, RunContext(workdir=tmp_path / "d")).tables["estimates"]
    row = refined["parameters"][0]
    assert refined["refine_steps"] == 3 and row["parameter"] == "range"
    assert row["refined"] == pytest.approx(row["mle"], rel=0.02)
    assert row["refined_low"] < row["refined"] < row["refined_high"]
    assert {"refined", "refined_low", "refined_high"} <= set(pd.read_csv(tmp_path / "d" / "estimates.csv").columns)


def test_bad_inputs_are_one_line_errors(trained, tmp_path):
    result, _ = trained
    learner = get_learner("matern")
    ckpt = result.files["checkpoint"]
    rng = np.random.default_rng(0)
    bad = tmp_path / "nocol.csv"
    pd.DataFrame({"x": rng.random(20), "y": rng.random(20), "z": rng.random(20)}).to_csv(bad, index=False)
    with pytest.raises(DataError) as err:
        _estimate(learner, ckpt, bad, tmp_path / "w")
    assert str(bad) in str(err.value) and "'value'" in str(err.value) and "\n" not in str(err.value)
    few = _write_points(tmp_path / "few.csv", rng.random((7, 2)), rng.random(7))
    with pytest.raises(DataError, match="at least 10 points"):
        _estimate(learner, ckpt, few, tmp_path / "w")
    with pytest.raises(ConfigError) as err:
        learner.check_config(merged(learner.default_config(), {"prior": {"range": {"dist": "uniform", "low": 0.0,
                                                                                      "high": 0.3}}}))
    assert "prior.range.low" in str(err.value) and "> 0" in str(err.value) and "\n" not in str(err.value)
    cfg = load_yaml(ROOT / "configs" / "matern.yaml")
    with pytest.raises(ConfigError, match="prior.variance.low"):
        learner.check_config(merged(cfg, {"prior": {"variance": {"dist": "loguniform", "low": -1, "high": 2}}}))
    with pytest.raises(ConfigError) as err:
        learner.check_config(merged(cfg, {"eval": {"refine_steps": 11}}))
    assert "eval.refine_steps" in str(err.value) and "\n" not in str(err.value)
    typed = to_dataclass(MaternConfig, cfg)
    with pytest.raises(DataError, match="at least 10 points"):
        read_points(few, typed, typed.estimate)


def test_cli_bad_csv_is_one_line_exit_2(trained, tmp_path, capsys):
    result, _ = trained
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"a": [1.0] * 12, "b": [2.0] * 12}).to_csv(bad, index=False)
    code = run_main(["--config", str(ROOT / "configs" / "matern.yaml"), "--out", str(tmp_path / "o"), "--quiet",
                     "--set", "mode=estimate", f"estimate.checkpoint={result.files['checkpoint']}",
                     f"estimate.csv={bad}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "missing column" in err and str(bad) in err


def test_spacetime_run_estimates_both_ranges(tmp_path):
    learner = get_learner("matern")
    config = merged(learner.default_config(), merged(TINY, {"data": {"spacetime": True, "n": 12, "n_times": 4,
                                                                     "train_size": 16, "val_size": 8,
                                                                     "test_size": 4},
                                                            "eval": {"mle_fields": 2}}))
    result = learner.run(config, RunContext(workdir=tmp_path, final=True))
    for key in ("val_rmse_log_range", "val_rmse_log_time_range", "test_rmse_log_time_range",
                "mle_rmse_log_time_range"):
        assert math.isfinite(result.metrics[key]), key


def test_quick_study_runs(tmp_path):
    from geostudy.cli import study_main

    out = tmp_path / "out"
    assert study_main(["--study", "matern_quick", "--out", str(out), "--n-trials", "2", "--no-progress",
                       "--set", "data.n=32", "data.train_size=32", "data.val_size=8", "train.epochs=2"]) == 0
    assert (out / "matern_quick" / "best_config.yaml").is_file()
