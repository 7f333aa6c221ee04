"""GP learner's steering (edge-adaptive nonstationary) kernel: PSD, stationary limit, edges, bad config."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gpytorch.kernels import MaternKernel, RBFKernel, RQKernel

from geostudy.config import apply_overrides
from geostudy.errors import ConfigError
from geostudy.learners import RunContext, get_learner
from geostudy.learners.gp.config import ModelConfig, TrainConfig
from geostudy.learners.gp.model import fit_gp
from geostudy.learners.gp.rounds import posterior_mean, round_errors
from geostudy.learners.gp.steering import CORRELATIONS, SteeringKernel, steering_inputs, structure_sigmas

STATIONARY = {"matern12": lambda: MaternKernel(nu=0.5), "matern32": lambda: MaternKernel(nu=1.5),
              "matern52": lambda: MaternKernel(nu=2.5), "rbf": RBFKernel, "rq": RQKernel}


def random_inputs(n: int, gen: torch.Generator) -> torch.Tensor:
    """Points with random symmetric positive definite covariances (y, x, s_yy, s_yx, s_xx)."""
    a = torch.randn(n, 2, 2, generator=gen, dtype=torch.float64)
    sigma = a @ a.transpose(-1, -2) + 0.05 * torch.eye(2, dtype=torch.float64)
    coords = torch.rand(n, 2, generator=gen, dtype=torch.float64)
    return torch.cat([coords, sigma[:, 0, 0:1], sigma[:, 0, 1:2], sigma[:, 1, 1:2]], dim=1)


@pytest.mark.parametrize("corr", CORRELATIONS)
def test_steering_kernel_is_symmetric_psd_with_unit_diagonal(corr):
    gen = torch.Generator().manual_seed(0)
    x = random_inputs(40, gen)
    kernel = SteeringKernel(corr).double()
    kernel.lengthscale = 0.3
    with torch.no_grad():
        k = kernel(x).to_dense()
        diag = kernel(x, diag=True)
    assert torch.allclose(k, k.T, atol=1e-12)
    assert torch.linalg.eigvalsh(k).min() > -1e-8
    assert torch.allclose(torch.diagonal(k), torch.ones(40, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(diag, torch.diagonal(k), atol=1e-6)


@pytest.mark.parametrize("corr", CORRELATIONS)
def test_equal_covariances_give_the_stationary_kernel(corr):
    gen = torch.Generator().manual_seed(1)
    coords = torch.rand(30, 2, generator=gen, dtype=torch.float64)
    other = torch.rand(9, 2, generator=gen, dtype=torch.float64)
    steer = SteeringKernel(corr).double()
    steer.lengthscale = 0.25
    stationary = STATIONARY[corr]().double()
    stationary.lengthscale = 0.25
    if corr == "rq":
        steer.raw_alpha.data.fill_(0.7)
        stationary.alpha = float(steer.alpha.detach())
    ident = torch.tensor([[1.0, 0.0, 1.0]], dtype=torch.float64)
    with torch.no_grad():
        got = steer(torch.cat([coords, ident.expand(30, 3)], 1), torch.cat([other, ident.expand(9, 3)], 1)).to_dense()
        want = stationary(coords, other).to_dense()
        assert torch.allclose(got, want, atol=1e-6)
        # A shared anisotropic covariance diag(4, 1) is the stationary kernel with lengthscales (2l, l).
        aniso = torch.tensor([[4.0, 0.0, 1.0]], dtype=torch.float64)
        got = steer(torch.cat([coords, aniso.expand(30, 3)], 1), torch.cat([other, aniso.expand(9, 3)], 1)).to_dense()
        scaled = stationary(coords / torch.tensor([2.0, 1.0], dtype=torch.float64),
                            other / torch.tensor([2.0, 1.0], dtype=torch.float64)).to_dense()
        assert torch.allclose(got, scaled, atol=1e-6)


def test_structure_sigmas_are_long_along_an_edge_and_round_in_flat_regions():
    img = np.zeros((20, 20))
    img[:, 10:] = 1.0  # a vertical edge: the along-edge direction is y
    sig = structure_sigmas(img, smooth=1.5, elongation_reg=0.3, elongation_power=1.0, energy_power=0.0,
                           energy_reg=0.01)
    s_yy, s_yx, s_xx = sig[10, 10]
    assert s_yy > 3 * s_xx and abs(s_yx) < 1e-6 * s_yy
    assert sig[10, 0, 0] == pytest.approx(sig[10, 0, 2], rel=1e-3)  # far from the edge: isotropic
    assert np.all(sig[..., 0] * sig[..., 2] - sig[..., 1] ** 2 > 0)
    assert steering_inputs(np.zeros((400, 2)), sig).shape == (400, 5)


def edge_config(tmp_path, **extra) -> dict:
    """A 24x24 image with a sharp straight oblique edge, 80% missing."""
    yy, xx = np.mgrid[0:24, 0:24]
    np.save(tmp_path / "edge.npy", np.where(yy > 0.6 * xx + 4, 1.0, 0.0))
    overrides = {"device": "cpu", "data.source": "npy", "data.path": str(tmp_path / "edge.npy"),
                 "mask.p_missing": 0.8, "mask.seed": 3, "model.space_kernel": "matern12", "model.inference": "exact",
                 "train.optim": "lbfgs", "train.iterations": 30, "train.report_every": 10, "eval.pdf": False,
                 "eval.griddata": False, **extra}
    return apply_overrides(get_learner("gp").default_config(), overrides)


@pytest.mark.parametrize("rounds", [1, 2])
def test_steering_gp_beats_the_stationary_one_on_a_sharp_edge(tmp_path, rounds):
    learner = get_learner("gp")
    stationary = learner.run(edge_config(tmp_path), RunContext(workdir=tmp_path)).metrics["rmse"]
    steer = {"model.nonstationary": "steering", "model.steering.rounds": rounds}
    result = learner.run(edge_config(tmp_path, **steer), RunContext(workdir=tmp_path))
    steering = result.metrics["rmse"]
    assert math.isfinite(steering) and math.isfinite(result.metrics["nlpd"])
    assert steering < 0.9 * stationary, (steering, stationary)
    assert result.tables["training"], "the last round reports held-out rmse during training"


@pytest.mark.parametrize(("key", "value", "message"), [
    ("model.nonstationary", "paciorek", "unknown nonstationary kernel 'paciorek'; allowed: none, steering"),
    ("model.space_kernel", "periodic", "nonstationary 'steering' needs one of matern12"),
    ("model.inference", "svgp", "needs exact inference"),
    ("model.steering.smooth", 0.0, "must be in (0"),
    ("model.steering.rounds", 0, "must be in [1"),
    ("model.steering.elongation_power", -1.0, "must be in [0"),
])
def test_bad_steering_config_is_a_one_line_error(tmp_path, key, value, message):
    extra = {"model.nonstationary": "steering", key: value}
    with pytest.raises(ConfigError) as err:
        get_learner("gp").check_config(edge_config(tmp_path, **extra), file="configs/gp.yaml")
    text = str(err.value)
    assert text.startswith(f"configs/gp.yaml: key '{key}'") and message in text and "\n" not in text


def test_steering_on_a_space_time_field_is_a_one_line_error(tmp_path):
    cfg = apply_overrides(get_learner("gp").default_config(), {"device": "cpu", "data.synthetic.frames": 2,
                                                               "data.synthetic.height": 6, "data.synthetic.width": 6,
                                                               "model.nonstationary": "steering", "eval.pdf": False})
    with pytest.raises(ConfigError, match="2-D fields") as err:
        get_learner("gp").run(cfg, RunContext(workdir=tmp_path))
    assert "\n" not in str(err.value)


def test_posterior_mean_with_fixed_hyperparameters_equals_the_fitted_gps():
    gen = np.random.default_rng(0)
    coords = gen.random((60, 2))
    sig = np.tile([[1.0, 0.2, 0.5]], (60, 1))
    x = np.concatenate([coords, sig], 1)
    y = np.sin(4 * coords[:, 0]) + coords[:, 1]
    fitted = fit_gp(x[:40], (y[:40] - y[:40].mean()) / y[:40].std(), ModelConfig(space_kernel="matern12",
                    nonstationary="steering", inference="exact"), TrainConfig(iterations=10, optim="lbfgs"),
                    has_time=False, device=torch.device("cpu"), dtype=torch.float64)
    want, _ = fitted.predict(x[40:])
    got = posterior_mean(fitted, x[:40], (y[:40] - y[:40].mean()) / y[:40].std(), x[40:])
    assert np.allclose(got, want, atol=1e-8)


def test_round_errors_rebuild_every_pilot_without_the_held_fold():
    img = np.where(np.add.outer(np.arange(16), -0.5 * np.arange(16)) > 3, 1.0, 0.0)
    gen = np.random.default_rng(1)
    obs_idx = np.sort(gen.choice(img.size, size=60, replace=False))
    y_obs = (img.ravel()[obs_idx] - 0.5) * 2
    coords = np.stack(np.meshgrid(np.arange(16), np.arange(16), indexing="ij"), -1).reshape(-1, 2) / 15.0

    def inputs_of(pilot: np.ndarray) -> np.ndarray:
        return steering_inputs(coords, structure_sigmas(pilot, smooth=1.5, elongation_reg=0.3, elongation_power=1.0,
                                                        energy_power=0.5, energy_reg=0.01))

    masks: list[np.ndarray] = []

    def inpaint(mask: np.ndarray) -> np.ndarray:
        masks.append(mask.ravel().copy())
        from skimage.restoration import inpaint_biharmonic
        return inpaint_biharmonic(np.where(mask, img, 0.0), ~mask)

    full = inputs_of(inpaint(np.isin(np.arange(img.size), obs_idx).reshape(img.shape)))
    masks.clear()
    fitted = fit_gp(full[obs_idx], y_obs, ModelConfig(space_kernel="matern12", nonstationary="steering",
                    inference="exact"), TrainConfig(iterations=10, optim="lbfgs"), has_time=False,
                    device=torch.device("cpu"), dtype=torch.float64)
    errors = round_errors([fitted, fitted], inputs_of, inpaint, img.shape, obs_idx, y_obs, folds=4, seed=0)
    assert errors.shape == (2,) and np.all(np.isfinite(errors)) and np.all(errors > 0)
    assert len(masks) == 4
    # Every station is held out exactly once, and a fold's pilot never sees its held stations.
    held_counts = np.zeros(img.size, int)
    for mask in masks:
        assert mask.sum() < len(obs_idx) and set(np.flatnonzero(mask)) <= set(obs_idx)
        held_counts[obs_idx[~mask[obs_idx]]] += 1
    assert np.all(held_counts[obs_idx] == 1)


def test_chosen_round_is_one_of_the_rounds(tmp_path):
    learner = get_learner("gp")
    runs = {r: learner.run(edge_config(tmp_path, **{"model.nonstationary": "steering", "model.steering.rounds": r}),
                           RunContext(workdir=tmp_path)).metrics["rmse"] for r in (1, 2)}
    chosen = learner.run(edge_config(tmp_path, **{"model.nonstationary": "steering", "model.steering.rounds": 2,
                                                   "model.steering.choose_rounds": True, "train.folds": 4}),
                         RunContext(workdir=tmp_path))
    picked = chosen.tables["steering_round"]
    assert len(chosen.tables["steering_rounds_cv_rmse"]) == 2
    assert chosen.metrics["rmse"] == pytest.approx(runs[picked], abs=1e-9), (picked, runs)
