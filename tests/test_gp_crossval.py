"""GP learner's cross-validation objectives: closed forms equal refits, fits predict well, bad config."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gpytorch.kernels import MaternKernel

from geostudy.config import apply_overrides
from geostudy.errors import ConfigError
from geostudy.learners import get_learner
from geostudy.learners.gp.config import ModelConfig, TrainConfig
from geostudy.learners.gp.crossval import cv_loss, kfold_residuals, loo_residuals, loo_scale, make_folds
from geostudy.learners.gp.model import fit_gp, station_system


def small_system(n: int = 24, noise: float = 0.05) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, 2, generator=gen, dtype=torch.float64)
    kernel = MaternKernel(nu=1.5).double()
    kernel.lengthscale = 0.3
    with torch.no_grad():
        kf = kernel(x).to_dense()
    r = torch.randn(n, generator=gen, dtype=torch.float64)
    return kf, kf + noise * torch.eye(n, dtype=torch.float64), r


def refit_residual(kf: torch.Tensor, k: torch.Tensor, r: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor,
                                                                                                 torch.Tensor]:
    """Residuals and predictive variances (noise included) of the points ``out`` from a GP on the rest."""
    keep = torch.ones(len(r), dtype=torch.bool)
    keep[out] = False
    solve = torch.linalg.solve(k[keep][:, keep], torch.cat([r[keep, None], kf[keep][:, out]], 1))
    mean = kf[out][:, keep] @ solve[:, 0]
    cov = k[out][:, out] - kf[out][:, keep] @ solve[:, 1:]
    return r[out] - mean, torch.diagonal(cov)


def test_loo_residuals_equal_brute_force_refits():
    kf, k, r = small_system()
    resid, var = loo_residuals(k, r)
    for i in range(len(r)):
        want_resid, want_var = refit_residual(kf, k, r, torch.tensor([i]))
        assert torch.allclose(resid[i], want_resid[0], atol=1e-9)
        assert torch.allclose(var[i], want_var[0], atol=1e-9)


def test_kfold_residuals_equal_brute_force_refits():
    kf, k, r = small_system()
    folds = make_folds(len(r), 5, torch.Generator().manual_seed(3))
    assert sorted(torch.cat(folds).tolist()) == list(range(len(r)))
    resid = kfold_residuals(k, r, folds)
    for fold in folds:
        want, _ = refit_residual(kf, k, r, fold)
        assert torch.allclose(resid[fold], want, atol=1e-9)
    # One station per fold is leave-one-out.
    singles = [torch.tensor([i]) for i in range(len(r))]
    assert torch.allclose(kfold_residuals(k, r, singles), loo_residuals(k, r)[0], atol=1e-9)
    assert torch.allclose(cv_loss("kfold", k, r, singles), cv_loss("loo", k, r), atol=1e-12)


def rough_field(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A Matérn 1/2 (rough) draw at random points: an RBF model of it is misspecified."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 2))
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    f = np.linalg.cholesky(np.exp(-d / 0.3) + 1e-9 * np.eye(n)) @ rng.standard_normal(n)
    return x, f


def fit(x: np.ndarray, y: np.ndarray, objective: str, kernel: str = "matern32"):
    return fit_gp(x, y, ModelConfig(space_kernel=kernel, inference="exact", space_lengthscale=0.3),
                  TrainConfig(iterations=50, optim="lbfgs", objective=objective, folds=8), has_time=False,
                  device=torch.device("cpu"), dtype=torch.float64)


def objectives(fitted) -> tuple[float, float]:
    """(negative log marginal likelihood per station, LOO mean squared error) of a fitted GP."""
    model = fitted.model
    with torch.no_grad():
        k, r = station_system(model, fitted.likelihood, model.train_inputs[0], model.train_targets)
        chol = torch.linalg.cholesky(k)
        nll = 0.5 * float(r @ torch.cholesky_solve(r[:, None], chol).squeeze(1)) + float(torch.diagonal(chol).log().sum())
        return nll / len(r), float(cv_loss("loo", k, r))


def test_each_objective_wins_on_its_own_terms():
    # A rough (Matérn 1/2) field under a smooth RBF model: misspecified, so the two optima differ.
    x, f = rough_field(160, seed=0)
    y = (f - f.mean()) / f.std()
    by_mll, by_loo = fit(x, y, "mll", "rbf"), fit(x, y, "loo", "rbf")
    nll_mll, loo_mll = objectives(by_mll)
    nll_loo, loo_loo = objectives(by_loo)
    assert nll_mll < nll_loo - 1e-3
    assert loo_loo < loo_mll - 1e-4


@pytest.mark.parametrize("objective", ["loo", "loo_nlpd", "kfold"])
def test_cross_validated_fit_predicts_a_matching_field_as_well_as_the_likelihood(objective):
    x, f = rough_field(400, seed=1)
    y = (f - f[:200].mean()) / f[:200].std()
    rmse = {}
    for obj in ("mll", objective):
        mean, var = fit(x[:200], y[:200], obj, "matern12").predict(x[200:])
        assert np.all(var > 0)
        rmse[obj] = float(np.sqrt(np.mean((mean - y[200:]) ** 2)))
    assert rmse[objective] <= 1.05 * rmse["mll"], rmse


def test_squared_error_fit_calibrates_the_predictive_scale():
    x, f = rough_field(120, seed=2)
    fitted = fit_gp(x, f, ModelConfig(space_kernel="matern12", inference="exact"),
                    TrainConfig(iterations=30, optim="lbfgs", objective="loo"), has_time=False,
                    device=torch.device("cpu"), dtype=torch.float64)
    model = fitted.model
    with torch.no_grad():
        k, r = station_system(model, fitted.likelihood, model.train_inputs[0], model.train_targets)
        assert loo_scale(k, r) == pytest.approx(1.0, rel=1e-3)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("train.objective", "likelihood", "allowed: mll, loo, loo_nlpd, kfold"),
    ("train.folds", 1, "train.folds"),
])
def test_bad_objective_settings_are_one_line_errors(key, value, message):
    learner = get_learner("gp")
    cfg = apply_overrides(learner.default_config(), {key: value})
    with pytest.raises(ConfigError) as err:
        learner.check_config(cfg, file="configs/gp.yaml")
    text = str(err.value)
    assert text.startswith(f"configs/gp.yaml: key '{key}'") and message in text and "\n" not in text


def test_cross_validation_needs_exact_inference():
    x, f = rough_field(40, seed=3)
    with pytest.raises(ConfigError, match="train.objective"):
        fit_gp(x, f, ModelConfig(inference="svgp"), TrainConfig(iterations=2, objective="loo"), has_time=False,
               device=torch.device("cpu"), dtype=torch.float64)
