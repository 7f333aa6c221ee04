"""Matérn fields of any size: variable-n training, the density-aware network, the spectral simulator,
Vecchia's likelihood, the variogram baseline and estimate mode outside the trained sizes."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from geostudy.config import to_dataclass
from geostudy.errors import ConfigError
from geostudy.learners import RunContext, get_learner
from geostudy.learners.matern.config import MaternConfig
from geostudy.learners.matern.covariance import matern_correlation, matern_covariance
from geostudy.learners.matern.data import build_graphs, collate
from geostudy.learners.matern.estimate import save_checkpoint
from geostudy.learners.matern.mle import fit_mle, likelihood_inputs, negative_log_likelihood
from geostudy.learners.matern.refine import fisher_scoring
from geostudy.learners.matern.simulate import FieldSet, simulate, simulate_fields
from geostudy.learners.matern.spectral import spectral_fields
from geostudy.learners.matern.train import build_model
from geostudy.learners.matern.variogram import fit_variogram_range, gstools_matern
from geostudy.learners.matern.vecchia import earlier_neighbors, maxmin_order, vecchia_nll, vecchia_structure

VARIABLE = {"data": {"n": 30, "n_max": 300, "m_min": 1, "m_max": 2},
            "graph": {"k": 8}, "model": {"density_aware": True, "hidden": 16, "deepsets_hidden": 16, "n_basis": 4}}


def make_cfg(raw: dict) -> MaternConfig:
    return to_dataclass(MaternConfig, raw)


def exact_fields(coords: np.ndarray, rho: float, reps: int, nu: float = 1.5, tau2: float = 0.0,
                 seed: int = 0) -> np.ndarray:
    params = {"range": np.array([rho]), "variance": np.array([1.0]), "nugget": np.array([tau2])}
    return simulate_fields([coords], params, np.array([reps]), nu, torch.Generator().manual_seed(seed))[0]


# -- variable sizes and the network ------------------------------------------------------------------------


def test_variable_size_config_draws_log_uniform_sizes():
    cfg = make_cfg({"data": {"n": 20, "n_max": 2000, "simulator": "spectral", "spectral_modes": 50}})
    fs = simulate(cfg, 400, np.random.default_rng(0))
    sizes = np.array([len(c) for c in fs.coords])
    assert sizes.min() >= 20 and sizes.max() <= 2000
    # log-uniform: the median is the geometric middle (200), and a quarter lie below 20 * 10^0.5 = 63
    assert 150 < np.median(sizes) < 270 and 0.18 < np.mean(sizes < 63) < 0.32
    assert all(v.shape[1] == len(c) for v, c in zip(fs.values, fs.coords))
    fixed = simulate(cfg, 3, np.random.default_rng(0), n=77)
    assert [len(c) for c in fixed.coords] == [77, 77, 77]


def test_one_network_takes_fields_of_different_n_in_one_batch_or_in_turn():
    cfg = make_cfg(VARIABLE)
    rng = np.random.default_rng(1)
    fs = FieldSet([], [], {})
    for n, m in ((30, 1), (120, 2), (300, 1)):
        coords = rng.random((n, 2))
        fs.coords.append(coords)
        fs.values.append(exact_fields(coords, 0.2, m, seed=n))
    model = build_model(cfg).eval()
    graphs = build_graphs(fs.coords, cfg.graph)
    with torch.no_grad():
        together, together_iv = model(collate(fs, graphs))
        alone = torch.cat([model(collate(fs, graphs, idx=np.array([i])))[0] for i in range(3)])
        model.use_dense = False  # the message-passing path gives the same
        general, _ = model(collate(fs, graphs))
    assert together.shape == (3, 1) and together_iv is not None and together_iv.shape == (3, 1, 2)
    assert torch.allclose(together, alone, atol=1e-5) and torch.allclose(together, general, atol=1e-5)
    assert len(set(np.round(together[:, 0].numpy(), 6))) == 3  # three fields, three estimates


def test_density_aware_lengths_do_not_change_with_the_point_density():
    """Edge lengths in spacing units: a field of 16x the points has edges 4x shorter, and the same lengths
    once divided by its spacing, so the variogram layer sees fields of any n on the same radial bases."""
    from geostudy.learners.matern.model import graph_spacing

    rng = np.random.default_rng(2)
    cfg = make_cfg(VARIABLE)
    spacings, normalised = [], []
    for pts in (rng.random((100, 2)), rng.random((1600, 2))):
        batch = collate(FieldSet([pts], [np.zeros((1, len(pts)))], {}), build_graphs([pts], cfg.graph))
        spacing = graph_spacing(batch.edge_attr, batch.edge_ptr, batch.node_ptr)
        spacings.append(float(spacing[0]))
        normalised.append(np.quantile((batch.edge_attr[:, 0] / spacing[0]).numpy(), [0.5, 0.9]))
    assert spacings[0] / spacings[1] == pytest.approx(4.0, rel=0.1)
    assert np.allclose(normalised[0], normalised[1], rtol=0.1)


def test_variable_size_training_runs_and_sum_pooling_is_refused(tmp_path):
    learner = get_learner("matern")
    config = json.loads(json.dumps(learner.default_config()))
    for key, value in {**VARIABLE, "train": {"epochs": 1, "batch_size": 8},
                       "eval": {"calibration_fields": 0, "plots": False}}.items():
        config.setdefault(key, {}).update(value)
    config["data"].update(train_size=16, val_size=8, simulator="spectral", spectral_modes=100)
    result = learner.run(config, RunContext(workdir=tmp_path))
    assert math.isfinite(result.metrics["val_rmse_log_range"])
    for bad, key in (({"model": {"readout": "sum"}}, "model.readout"), ({"data": {"n_max": 10}}, "data.n_max"),
                     ({"data": {"spacetime": True, "simulator": "spectral"}}, "data.simulator"),
                     ({"data": {"spacetime": True, "n_max": None, "simulator": "exact"},
                       "eval": {"likelihood": "vecchia"}},
                      "eval.likelihood")):
        raw = json.loads(json.dumps(config))
        for section, values in bad.items():
            raw[section].update(values)
        with pytest.raises(ConfigError) as err:
            learner.check_config(raw)
        assert key in str(err.value) and "\n" not in str(err.value)


# -- the spectral simulator --------------------------------------------------------------------------------


@pytest.mark.parametrize("nu", [0.5, 1.5])
def test_spectral_fields_have_the_matern_covariance(nu):
    rng = np.random.default_rng(3)
    coords = rng.random((6, 2)) * 0.5
    draws = spectral_fields(coords, 0.2, 1.0, 0.0, nu, 3000, torch.Generator().manual_seed(0), modes=100)
    cov = matern_covariance(torch.from_numpy(coords), 0.2, 1.0, nu).numpy()
    emp = draws.T @ draws / len(draws)
    assert np.allclose(np.diag(emp), 1.0, rtol=0.08)
    assert np.max(np.abs(emp - cov)) < 0.1, np.max(np.abs(emp - cov))
    # The variogram at each pair, against the analytic one (a wrong frequency law is off by far more).
    i, j = np.triu_indices(6, 1)
    gamma = 0.5 * np.mean((draws[:, i] - draws[:, j]) ** 2, axis=0)
    assert np.allclose(gamma, 1.0 - cov[i, j], rtol=0.12, atol=0.02)


# -- Vecchia's likelihood -----------------------------------------------------------------------------------


@pytest.mark.parametrize("nu,tau2", [(1.5, 0.0), (0.5, 0.1), (1.0, 0.0)])
def test_vecchia_with_every_earlier_point_is_the_exact_likelihood(nu, tau2):
    rng = np.random.default_rng(4)
    coords = rng.random((50, 2))
    values = exact_fields(coords, 0.25, 2, nu, tau2)
    log_params = {"range": math.log(0.18), "variance": math.log(1.3), "nugget": math.log(tau2) if tau2 else -math.inf}
    z, dist, _, _ = likelihood_inputs(coords, values, None, {})
    exact = float(negative_log_likelihood(log_params, z, dist, nu))
    for ordered in (True, False):
        full = float(vecchia_nll(log_params, z, vecchia_structure(coords, 49, ordered=ordered), nu))
        assert full == pytest.approx(exact, rel=1e-9, abs=1e-7)


def test_vecchia_is_close_to_the_exact_likelihood_at_small_n():
    rng = np.random.default_rng(5)
    coords = rng.random((300, 2))
    values = exact_fields(coords, 0.2, 1)
    z, dist, _, _ = likelihood_inputs(coords, values, None, {})
    kw = {"nu": 1.5, "free": ["range"], "fixed": {"variance": 1.0, "nugget": 0.0},
          "bounds": {"range": (math.log(0.05), math.log(0.35))}}
    for rho in (0.08, 0.2, 0.3):
        params = {"range": math.log(rho), "variance": 0.0, "nugget": -math.inf}
        exact = float(negative_log_likelihood(params, z, dist, 1.5))
        approx = float(vecchia_nll(params, z, vecchia_structure(coords, 30), 1.5))
        assert abs(approx - exact) < 0.5, (rho, approx, exact)  # of an NLL in the hundreds (negative here)
    exact_fit = fit_mle(coords, values, **kw)
    vecchia_fit = fit_mle(coords, values, vecchia_neighbors=30, **kw)
    assert vecchia_fit.log_params["range"] == pytest.approx(exact_fit.log_params["range"], abs=0.02)


def test_vecchia_fisher_scoring_with_every_earlier_point_is_exact_scoring():
    rng = np.random.default_rng(6)
    coords = rng.random((40, 2))
    values = exact_fields(coords, 0.2, 3, tau2=0.05)
    kw = {"nu": 1.5, "free": ["range", "variance", "nugget"], "fixed": {},
          "bounds": {"range": (-4.0, 0.0), "variance": (-2.0, 2.0), "nugget": (-8.0, 0.0)}}
    start = [math.log(0.15), 0.2, math.log(0.1)]
    exact = fisher_scoring(coords, values, start, steps=2, **kw)
    vecchia = fisher_scoring(coords, values, start, steps=2, vecchia_neighbors=39, **kw)
    assert np.allclose(vecchia.log_params, exact.log_params, atol=1e-5)
    assert np.allclose(vecchia.information, exact.information, rtol=1e-5)
    # With 20 neighbours a step still lands near the exact one.
    near = fisher_scoring(coords, values, start, steps=2, vecchia_neighbors=20, **kw)
    assert np.allclose(near.log_params[0], exact.log_params[0], atol=0.05)


def test_neighbour_search_and_order():
    rng = np.random.default_rng(7)
    coords = rng.random((700, 2))
    order = maxmin_order(coords)
    assert sorted(order.tolist()) == list(range(700))
    pts = coords[order]
    nb, dist = earlier_neighbors(pts, 10)
    for i in (0, 1, 5, 40, 300, 699):
        d = np.sqrt(((pts[:i] - pts[i]) ** 2).sum(1))
        expected = np.sort(d)[:10]
        assert np.allclose(dist[i][: len(expected)], expected) and np.all(nb[i][: len(expected)] < max(i, 1))
        assert np.all(nb[i][len(expected):] == -1)
    # Coarse to fine: the first 16 points spread over the square (none closer than a cell apart).
    first = coords[order[:16]]
    gaps = np.sqrt(((first[:, None] - first[None]) ** 2).sum(-1)) + np.eye(16)
    assert gaps.min() > 0.05


def test_auto_likelihood_switches_to_vecchia_above_its_size():
    cfg = make_cfg({"eval": {"vecchia_from": 500, "vecchia_neighbors": 25}})
    assert cfg.eval.vecchia_neighbors_for(500, False) is None
    assert cfg.eval.vecchia_neighbors_for(501, False) == 25
    assert cfg.eval.vecchia_neighbors_for(501, True) is None  # space-time: exact
    assert make_cfg({"eval": {"likelihood": "vecchia"}}).eval.vecchia_neighbors_for(20, False) == 30


# -- the variogram baseline ---------------------------------------------------------------------------------


def test_gstools_matern_is_this_packages_matern():
    d = np.linspace(0.0, 0.6, 13)
    for nu in (0.5, 1.5, 2.5):
        ours = matern_correlation(torch.from_numpy(d), 0.2, nu).numpy()
        assert np.allclose(gstools_matern(0.2, nu).correlation(d), ours, atol=1e-10)


def test_variogram_fit_recovers_the_range_of_a_large_field():
    rng = np.random.default_rng(8)
    coords = rng.random((600, 2))
    values = exact_fields(coords, 0.15, 4)
    fit = fit_variogram_range(coords, values, nu=1.5, variance=1.0, nugget=0.0, bounds=(0.05, 0.35))
    assert 0.09 < fit.range < 0.25 and fit.seconds > 0


# -- estimate mode ------------------------------------------------------------------------------------------


def test_estimate_mode_warns_outside_the_trained_range(tmp_path, capsys):
    learner = get_learner("matern")
    config = json.loads(json.dumps(learner.default_config()))
    for key, value in VARIABLE.items():
        config.setdefault(key, {}).update(value)
    ckpt = save_checkpoint(tmp_path / "checkpoint.pt", build_model(make_cfg(config)), config)
    rng = np.random.default_rng(9)

    def estimate(n: int) -> dict:
        coords = rng.random((n, 2)) * 500.0
        path = tmp_path / f"p{n}.csv"
        pd.DataFrame({"x": coords[:, 0], "y": coords[:, 1], "value": rng.standard_normal(n)}).to_csv(path, index=False)
        run = json.loads(json.dumps(learner.default_config()))
        run.update(mode="estimate")
        run["estimate"].update(checkpoint=str(ckpt), csv=str(path), mle=False)
        learner.check_config(run)
        return learner.run(run, RunContext(workdir=tmp_path / f"w{n}")).tables["estimates"]

    for n in (30, 150, 300):
        summary = estimate(n)
        assert summary["warnings"] == [] and summary["trained_n_range"] == [30, 300]
        assert capsys.readouterr().err == ""
    for n in (12, 400):
        summary = estimate(n)
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("warning: ") and f"{n} sites" in err, err
        assert "[30, 300]" in err and f"p{n}.csv" in err and summary["warnings"] == [err[len("warning: "):]]
        assert math.isfinite(summary["parameters"][0]["gnn"])
