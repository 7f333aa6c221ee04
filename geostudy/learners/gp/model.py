"""Exact and variational GPs, their training loop and batched prediction."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import gpytorch
import numpy as np
import torch
from gpytorch.constraints import GreaterThan

from geostudy.learners.gp.config import ModelConfig, TrainConfig
from geostudy.learners.gp.kernels import build_kernel, init_spectral_mixtures
from geostudy.nn.training import check_finite

# Exact GPs here are always solved by Cholesky: GPyTorch's default switches to CG above 800 points,
# which is slower on a CPU at these sizes and approximate.
CHOLESKY_MAX = 100_000


class ExactGPModel(gpytorch.models.ExactGP):
    """Constant mean and the configured kernel."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, likelihood: gpytorch.likelihoods.Likelihood,
                 kernel: gpytorch.kernels.Kernel) -> None:
        super().__init__(x, y, likelihood)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = kernel

    def forward(self, x: torch.Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


class SVGPModel(gpytorch.models.ApproximateGP):
    """Sparse variational GP with learnt inducing locations (Hensman et al. 2013)."""

    def __init__(self, inducing: torch.Tensor, kernel: gpytorch.kernels.Kernel) -> None:
        dist = gpytorch.variational.CholeskyVariationalDistribution(inducing.size(0))
        strategy = gpytorch.variational.VariationalStrategy(self, inducing, dist, learn_inducing_locations=True)
        super().__init__(strategy)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = kernel

    def forward(self, x: torch.Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


@dataclass
class FittedGP:
    """A trained model ready to predict, in normalised units."""

    model: gpytorch.models.GP
    likelihood: gpytorch.likelihoods.GaussianLikelihood
    inference: str
    fit_seconds: float
    losses: list[float]

    def predict(self, x: np.ndarray, batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """Posterior predictive mean and variance (noise included) at ``x``, ``batch`` points at a time."""
        return predict(self.model, self.likelihood, x, batch=batch)


def choose_inference(n: int, cfg: ModelConfig) -> str:
    """``exact`` or ``svgp``: the config's choice, or exact up to ``exact_max_n`` points under ``auto``."""
    if cfg.inference != "auto":
        return cfg.inference
    return "exact" if n <= cfg.exact_max_n else "svgp"


def _kernel(cfg: ModelConfig, has_time: bool) -> gpytorch.kernels.ScaleKernel:
    return build_kernel(cfg.space_kernel, cfg.time_kernel if has_time else None, combine=cfg.combine, ard=cfg.ard,
                        num_mixtures=cfg.num_mixtures, space_lengthscale=cfg.space_lengthscale,
                        time_lengthscale=cfg.time_lengthscale, min_lengthscale=cfg.min_lengthscale)


def _likelihood(cfg: ModelConfig) -> gpytorch.likelihoods.GaussianLikelihood:
    lik = gpytorch.likelihoods.GaussianLikelihood(noise_constraint=GreaterThan(cfg.noise_lower_bound))
    lik.noise = max(1e-2, 2 * cfg.noise_lower_bound)
    return lik


def fit_gp(
    x: np.ndarray,
    y: np.ndarray,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    *,
    has_time: bool,
    device: torch.device,
    dtype: torch.dtype,
    seed: int = 0,
    on_eval: Callable[[int, FittedGP], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> FittedGP:
    """Train an exact GP or an SVGP on normalised inputs ``x`` and values ``y`` with Adam.

    Args:
        x: ``(n, d)`` inputs; ``y``: ``(n,)`` standardised values.
        model_cfg: Kernel, noise, inference choice. ``train_cfg``: iterations, lr, reporting.
        has_time: Whether ``x`` has the time column.
        device: Where to train. ``dtype``: float32 or float64.
        seed: Seeds inducing-point choice and minibatches.
        on_eval: Called every ``train_cfg.report_every`` iterations and at the end, with the model in
            eval mode (it may raise ``optuna.TrialPruned``, which propagates).
        log: Progress lines.
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    xt = torch.as_tensor(x, dtype=dtype, device=device)
    yt = torch.as_tensor(y, dtype=dtype, device=device)
    n = xt.shape[0]
    inference = choose_inference(n, model_cfg)
    kernel = _kernel(model_cfg, has_time)
    lik = _likelihood(model_cfg)
    model: gpytorch.models.GP
    if inference == "exact":
        init_spectral_mixtures(kernel, xt, yt)
        model = ExactGPModel(xt, yt, lik, kernel)
    else:
        m = min(model_cfg.inducing_points, n)
        idx = torch.randperm(n, generator=gen)[:m].to(device)
        if any(True for _ in kernel.modules() if isinstance(_, gpytorch.kernels.SpectralMixtureKernel)):
            sub = torch.randperm(n, generator=gen)[: min(n, 5000)].to(device)
            init_spectral_mixtures(kernel, xt[sub], yt[sub])
        model = SVGPModel(xt[idx].clone(), kernel)
    model = model.to(device=device, dtype=dtype)
    lik = lik.to(device=device, dtype=dtype)
    fitted = FittedGP(model=model, likelihood=lik, inference=inference, fit_seconds=0.0, losses=[])

    model.train()
    lik.train()
    params = list(model.parameters()) + ([] if inference == "exact" else list(lik.parameters()))
    params = [p for p in dict.fromkeys(params) if p.requires_grad]
    opt = torch.optim.Adam(params, lr=train_cfg.lr)
    if inference == "exact":
        mll: gpytorch.mlls.MarginalLogLikelihood = gpytorch.mlls.ExactMarginalLogLikelihood(lik, model)
    else:
        mll = gpytorch.mlls.VariationalELBO(lik, model, num_data=n)
    batch = min(model_cfg.batch_size, n)
    order = torch.randperm(n, generator=gen).to(device)
    cursor = 0
    elapsed = 0.0
    start = time.perf_counter()
    with gpytorch.settings.max_cholesky_size(CHOLESKY_MAX):
        for it in range(train_cfg.iterations):
            opt.zero_grad()
            if inference == "exact":
                loss = -mll(model(xt), yt)
            else:
                if cursor + batch > n:
                    order, cursor = torch.randperm(n, generator=gen).to(device), 0
                sel = order[cursor: cursor + batch]
                cursor += batch
                loss = -mll(model(xt[sel]), yt[sel])
            loss.backward()
            opt.step()
            fitted.losses.append(check_finite(loss, it))
            last = it == train_cfg.iterations - 1
            if (it + 1) % train_cfg.report_every == 0 or last:
                elapsed += time.perf_counter() - start
                fitted.fit_seconds = elapsed
                if log:
                    log(f"iteration {it + 1}/{train_cfg.iterations} loss={fitted.losses[-1]:.4g} "
                        f"noise={float(lik.noise.detach().mean()):.3g}")
                if on_eval is not None and not last:
                    model.eval()
                    lik.eval()
                    on_eval(it, fitted)
                    model.train()
                    lik.train()
                start = time.perf_counter()
    model.eval()
    lik.eval()
    return fitted


def predict(model: gpytorch.models.GP, likelihood: gpytorch.likelihoods.GaussianLikelihood, x: np.ndarray, *,
            batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Predictive mean and variance at ``x`` in batches (bounded memory on any grid)."""
    param = next(model.parameters())
    means, variances = [], []
    model.eval()
    likelihood.eval()
    with torch.no_grad(), gpytorch.settings.max_cholesky_size(CHOLESKY_MAX), contextlib.ExitStack():
        for lo in range(0, len(x), batch):
            xb = torch.as_tensor(x[lo: lo + batch], dtype=param.dtype, device=param.device)
            out = likelihood(model(xb))
            means.append(out.mean.detach().cpu().numpy())
            variances.append(out.variance.detach().clamp_min(1e-12).cpu().numpy())
    if not means:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(means).astype(np.float64), np.concatenate(variances).astype(np.float64)


def exact_mll_value(fitted: FittedGP) -> float:
    """Exact log marginal likelihood per point (normalised units); NaN for an SVGP."""
    if fitted.inference != "exact":
        return math.nan
    model = fitted.model
    with torch.no_grad(), gpytorch.settings.max_cholesky_size(CHOLESKY_MAX):
        model.train()
        fitted.likelihood.train()
        mll = gpytorch.mlls.ExactMarginalLogLikelihood(fitted.likelihood, model)
        x, y = model.train_inputs[0], model.train_targets
        value = float(mll(model(x), y))
        model.eval()
        fitted.likelihood.eval()
    return value
