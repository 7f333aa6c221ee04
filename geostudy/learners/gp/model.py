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

from geostudy.errors import ConfigError
from geostudy.learners.gp.config import ModelConfig, TrainConfig
from geostudy.learners.gp.crossval import cv_loss, loo_scale, make_folds
from geostudy.learners.gp.kernels import build_kernel, init_spectral_mixtures
from geostudy.learners.gp.steering import SteeringKernel
from geostudy.nn.training import check_finite

# Exact GPs here are always solved by Cholesky: GPyTorch's default switches to CG above 800 points,
# which is slower on a CPU at these sizes and approximate.
CHOLESKY_MAX = 100_000
# An SVGP learns from minibatches: at a constant step size its variational mean keeps jumping with the
# batch noise. Decaying Adam's step size linearly to 2% over the run lets it settle (bench large_n field,
# 640,000 points, 2 epochs, 256 inducing points: RMSE 0.036 at a constant 0.05, 0.0066 decayed; natural
# gradients for the variational part gave the same 0.0066 once decayed, so plain Adam stays).
LR_FLOOR = 0.02


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
    local_neighbours: int = 0

    def predict(self, x: np.ndarray, batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """Posterior predictive mean and variance (noise included) at ``x``, ``batch`` points at a time.

        With ``local_neighbours`` > 0 each point conditions on its nearest stations only.
        """
        if self.local_neighbours > 0:
            return predict_local(self.model, self.likelihood, x, neighbours=self.local_neighbours, batch=batch)
        return predict(self.model, self.likelihood, x, batch=batch)


def choose_inference(n: int, cfg: ModelConfig) -> str:
    """``exact`` or ``svgp``: the config's choice, or exact up to ``exact_max_n`` points under ``auto``."""
    if cfg.inference != "auto":
        return cfg.inference
    return "exact" if n <= cfg.exact_max_n else "svgp"


def _kernel(cfg: ModelConfig, has_time: bool) -> gpytorch.kernels.ScaleKernel:
    return build_kernel(cfg.space_kernel, cfg.time_kernel if has_time else None, combine=cfg.combine, ard=cfg.ard,
                        num_mixtures=cfg.num_mixtures, space_lengthscale=cfg.space_lengthscale,
                        time_lengthscale=cfg.time_lengthscale, min_lengthscale=cfg.min_lengthscale,
                        nonstationary=cfg.nonstationary)


def _likelihood(cfg: ModelConfig) -> gpytorch.likelihoods.GaussianLikelihood:
    lik = gpytorch.likelihoods.GaussianLikelihood(noise_constraint=GreaterThan(cfg.noise_lower_bound))
    lik.noise = max(1e-2, 2 * cfg.noise_lower_bound)
    return lik


def _init_from_data(kernel: gpytorch.kernels.ScaleKernel, lik: gpytorch.likelihoods.GaussianLikelihood,
                    x: torch.Tensor, y: torch.Tensor, cfg: ModelConfig, gen: torch.Generator) -> None:
    """Start lengthscales at a quarter of the median pairwise distance, scale and noise from the variance."""
    sub = x[torch.randperm(x.shape[0], generator=gen)[:500].to(x.device)]
    var = float(y.var()) if y.numel() > 1 else 1.0
    for module in kernel.base_kernel.modules():
        if not hasattr(module, "raw_lengthscale") or not module.raw_lengthscale.requires_grad:
            continue
        if isinstance(module, gpytorch.kernels.SpectralMixtureKernel):
            continue
        if module.active_dims is not None:
            dims = module.active_dims
        else:  # a steering kernel's inputs carry covariance columns after the coordinates
            dims = torch.arange(2 if isinstance(module, SteeringKernel) else x.shape[1])
        pts = sub[:, dims]
        dist = torch.cdist(pts, pts)
        med = float(dist[dist > 0].median()) if bool((dist > 0).any()) else 1.0
        module.lengthscale = max(0.25 * med, 2 * cfg.min_lengthscale, 1e-3)
    kernel.outputscale = max(0.9 * var, 1e-3)
    lik.noise = max(0.1 * var, 2 * cfg.noise_lower_bound)


def _optimise(
    loss_fn: Callable[[], torch.Tensor],
    params: list[torch.nn.Parameter],
    *,
    optim: str,
    steps: int,
    lr: float,
    report_every: int,
    fitted: FittedGP,
    on_report: Callable[[int, bool], None],
    offset: int = 0,
    decay: bool = False,
) -> int:
    """Minimise ``loss_fn`` for ``steps`` Adam steps or L-BFGS iterations; returns the steps taken.

    L-BFGS (strong-Wolfe line search) runs in chunks of ``report_every`` iterations so that the study
    still gets intermediate reports; its curvature history carries over between chunks, and it stops
    early once converged. With ``decay`` Adam's step size falls linearly to :data:`LR_FLOOR` of ``lr``
    over the ``steps``.
    """
    if optim == "lbfgs":
        opt: torch.optim.Optimizer = torch.optim.LBFGS(params, lr=1.0, max_iter=1, history_size=20,
                                                       line_search_fn="strong_wolfe", tolerance_grad=1e-6,
                                                       tolerance_change=1e-10)

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = loss_fn()
            loss.backward()
            return loss

        done = 0
        while done < steps:
            chunk = min(report_every, steps - done)
            opt.param_groups[0]["max_iter"] = chunk
            opt.param_groups[0]["max_eval"] = chunk * 5 // 4 + 5
            before = int(opt.state[opt._params[0]].get("n_iter", 0))  # type: ignore[attr-defined]
            snapshot = [p.detach().clone() for p in params]
            try:
                step_loss = torch.as_tensor(opt.step(closure)).detach()  # type: ignore[arg-type]
                finite = all(bool(torch.isfinite(p).all()) for p in params) and math.isfinite(float(step_loss))
            except (RuntimeError, ValueError):  # a line-search trial point made the kernel matrix NaN / not PD
                finite = False
            if not finite:
                # Keep the last finite hyperparameters: the line search overshot, the fit up to here stands.
                with torch.no_grad():
                    for p, old in zip(params, snapshot, strict=True):
                        p.copy_(old)
                if not fitted.losses:
                    with torch.no_grad():
                        fitted.losses.append(check_finite(loss_fn(), offset + done))
                on_report(offset + done, True)
                return done
            taken = int(opt.state[opt._params[0]].get("n_iter", 0)) - before  # type: ignore[attr-defined]
            fitted.losses.append(check_finite(step_loss, offset + done))
            done += chunk
            converged = taken < chunk
            on_report(offset + done - 1, done >= steps or converged)
            if converged:
                return done
        return done
    opt = torch.optim.Adam(params, lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: max(LR_FLOOR, 1 - it / steps) if decay else 1.0)
    for it in range(steps):
        opt.zero_grad()
        adam_loss = loss_fn()
        adam_loss.backward()
        opt.step()
        schedule.step()
        fitted.losses.append(check_finite(adam_loss, offset + it))
        last = it == steps - 1
        if (it + 1) % report_every == 0 or last:
            on_report(offset + it, last)
    return steps


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
    """Train an exact GP or an SVGP on normalised inputs ``x`` and values ``y``.

    An exact GP may fit its hyperparameters on a random subsample of ``train_cfg.hyper_subsample``
    stations (optionally refined by ``train_cfg.refine_steps`` steps on all of them); its posterior
    always conditions on every station.

    Args:
        x: ``(n, d)`` inputs; ``y``: ``(n,)`` standardised values.
        model_cfg: Kernel, noise, inference choice. ``train_cfg``: optimiser, iterations, lr, reporting.
        has_time: Whether ``x`` has the time column.
        device: Where to train. ``dtype``: float32 or float64.
        seed: Seeds inducing-point choice, the hyperparameter subsample and minibatches.
        on_eval: Called every ``train_cfg.report_every`` iterations and at the end, with the model in
            eval mode (it may raise ``optuna.TrialPruned``, which propagates).
        log: Progress lines.

    Raises:
        ConfigError: L-BFGS or local prediction asked of a variational GP.
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    xt = torch.as_tensor(x, dtype=dtype, device=device)
    yt = torch.as_tensor(y, dtype=dtype, device=device)
    n = xt.shape[0]
    inference = choose_inference(n, model_cfg)
    if inference == "svgp" and train_cfg.optim == "lbfgs":
        raise ConfigError(f"'lbfgs' needs exact inference, but {n} stations resolve to 'svgp'; use adam or "
                          "model.inference: exact", key="train.optim")
    if inference == "svgp" and model_cfg.nonstationary == "steering":
        raise ConfigError(f"nonstationary 'steering' needs exact inference, but {n} stations resolve to 'svgp'; raise "
                          "model.exact_max_n or use model.inference: exact", key="model.nonstationary")
    if inference == "svgp" and train_cfg.objective != "mll":
        raise ConfigError(f"objective {train_cfg.objective!r} needs exact inference, but {n} stations resolve to "
                          "'svgp'; use mll or model.inference: exact", key="train.objective")
    if inference == "svgp" and model_cfg.local.enabled:
        raise ConfigError(f"local prediction needs exact inference, but {n} stations resolve to 'svgp'",
                          key="model.local.enabled")
    kernel = _kernel(model_cfg, has_time)
    lik = _likelihood(model_cfg)
    if model_cfg.init_from_data:
        _init_from_data(kernel, lik, xt, yt, model_cfg, gen)
    model: gpytorch.models.GP
    xh, yh = xt, yt
    if inference == "exact":
        if 0 < train_cfg.hyper_subsample < n:
            sub = torch.randperm(n, generator=gen)[: train_cfg.hyper_subsample].to(device)
            xh, yh = xt[sub], yt[sub]
        init_spectral_mixtures(kernel, xh, yh)
        model = ExactGPModel(xh, yh, lik, kernel)
    else:
        m = min(model_cfg.inducing_points, n)
        idx = torch.randperm(n, generator=gen)[:m].to(device)
        if any(True for _ in kernel.modules() if isinstance(_, gpytorch.kernels.SpectralMixtureKernel)):
            sub = torch.randperm(n, generator=gen)[: min(n, 5000)].to(device)
            init_spectral_mixtures(kernel, xt[sub], yt[sub])
        model = SVGPModel(xt[idx].clone(), kernel)
    model = model.to(device=device, dtype=dtype)
    lik = lik.to(device=device, dtype=dtype)
    local = model_cfg.local.neighbours if model_cfg.local.enabled else 0
    fitted = FittedGP(model=model, likelihood=lik, inference=inference, fit_seconds=0.0, losses=[],
                      local_neighbours=local)

    model.train()
    lik.train()
    params = list(model.parameters()) + ([] if inference == "exact" else list(lik.parameters()))
    params = [p for p in dict.fromkeys(params) if p.requires_grad]
    if inference == "exact":
        mll: gpytorch.mlls.MarginalLogLikelihood = gpytorch.mlls.ExactMarginalLogLikelihood(lik, model)
    else:
        mll = gpytorch.mlls.VariationalELBO(lik, model, num_data=n)
    batch = min(model_cfg.batch_size, n)
    state = {"order": torch.randperm(n, generator=gen).to(device), "cursor": 0}
    clock = {"elapsed": 0.0, "start": time.perf_counter()}
    total = train_cfg.iterations + (train_cfg.refine_steps if xh is not xt else 0)

    folds: dict[int, list[torch.Tensor]] = {}

    def loss_fn() -> torch.Tensor:
        if inference == "exact":
            inputs, targets = model.train_inputs[0], model.train_targets
            if train_cfg.objective == "mll":
                return -mll(model(inputs), targets)
            k, r = station_system(model, lik, inputs, targets)
            if train_cfg.objective == "kfold" and len(targets) not in folds:  # per station set (hyper_subsample)
                folds[len(targets)] = [f.to(device) for f in make_folds(len(targets), train_cfg.folds, gen)]
            return cv_loss(train_cfg.objective, k, r, folds.get(len(targets)))
        if int(state["cursor"]) + batch > n:  # type: ignore[call-overload]
            state["order"], state["cursor"] = torch.randperm(n, generator=gen).to(device), 0
        cur = int(state["cursor"])  # type: ignore[call-overload]
        sel = state["order"][cur: cur + batch]  # type: ignore[index]
        state["cursor"] = cur + batch
        return -mll(model(xt[sel]), yt[sel])

    def on_report(it: int, last: bool) -> None:
        clock["elapsed"] += time.perf_counter() - clock["start"]
        fitted.fit_seconds = clock["elapsed"]
        if log:
            log(f"iteration {it + 1}/{total} loss={fitted.losses[-1]:.4g} "
                f"noise={float(lik.noise.detach().mean()):.3g}")
        if on_eval is not None and not last:
            model.eval()
            lik.eval()
            on_eval(it, fitted)
            model.train()
            lik.train()
        clock["start"] = time.perf_counter()

    with gpytorch.settings.max_cholesky_size(CHOLESKY_MAX):
        taken = _optimise(loss_fn, params, optim=train_cfg.optim, steps=train_cfg.iterations, lr=train_cfg.lr,
                          report_every=train_cfg.report_every, fitted=fitted, on_report=on_report,
                          decay=inference == "svgp")
        if xh is not xt:
            model.set_train_data(xt, yt, strict=False)  # type: ignore[operator]
            if train_cfg.refine_steps:
                _optimise(loss_fn, params, optim=train_cfg.optim, steps=train_cfg.refine_steps, lr=train_cfg.lr,
                          report_every=train_cfg.refine_steps, fitted=fitted, on_report=on_report, offset=taken)
    if inference == "exact" and train_cfg.objective in ("loo", "kfold"):
        _calibrate_scale(model, lik)
    clock["elapsed"] += time.perf_counter() - clock["start"]
    fitted.fit_seconds = clock["elapsed"]
    model.eval()
    lik.eval()
    return fitted


def station_system(model: gpytorch.models.ExactGP, lik: gpytorch.likelihoods.GaussianLikelihood, x: torch.Tensor,
                    y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The stations' covariance (noise included) and their values minus the prior mean."""
    k = model.covar_module(x).to_dense()
    k = k + lik.noise.reshape(()) * torch.eye(k.shape[-1], dtype=k.dtype, device=k.device)
    return k, y - model.mean_module(x)


def _calibrate_scale(model: gpytorch.models.ExactGP, lik: gpytorch.likelihoods.GaussianLikelihood) -> None:
    """Rescale signal and noise variance together (same posterior mean) so LOO residuals have unit variance.

    A squared-error objective leaves that common scale unfitted, and the predictive variances need it.
    """
    with torch.no_grad(), gpytorch.settings.max_cholesky_size(CHOLESKY_MAX):
        x, y = model.train_inputs[0], model.train_targets
        factor = loo_scale(*station_system(model, lik, x, y))
        kernel = model.covar_module
        floor = float(lik.noise_covar.raw_noise_constraint.lower_bound)
        noise = float(lik.noise.reshape(()))
        # The noise cannot go below its bound: shrink the factor instead (the mean then moves a little).
        factor = max(factor, floor * 1.001 / noise)
        kernel.outputscale = kernel.outputscale * factor
        lik.noise = noise * factor


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


def predict_local(model: gpytorch.models.GP, likelihood: gpytorch.likelihoods.GaussianLikelihood, x: np.ndarray, *,
                  neighbours: int, batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Moving-window kriging: predictive mean and variance at each point of ``x`` from its nearest stations.

    Uses the fitted (global) kernel, mean and noise; each point's posterior conditions on its
    ``neighbours`` nearest stations in input space (one batched Cholesky per chunk), so with at
    least as many neighbours as stations it equals the exact GP's.

    Args:
        model: A fitted exact GP (its train data are the stations).
        likelihood: Its Gaussian likelihood.
        x: ``(m, d)`` prediction inputs.
        neighbours: Stations per prediction point.
        batch: Points per chunk (reduced so a chunk's matrices stay near 128 MiB).
    """
    from scipy.spatial import cKDTree

    if len(x) == 0:
        return np.zeros(0), np.zeros(0)
    xtr = model.train_inputs[0].detach()
    ytr = model.train_targets.detach()
    k = min(int(neighbours), xtr.shape[0])
    tree = cKDTree(xtr.cpu().numpy())
    kernel = model.covar_module
    const = model.mean_module.constant.detach()
    noise = likelihood.noise.detach().reshape(())
    eye = torch.eye(k, dtype=xtr.dtype, device=xtr.device)
    chunk = max(1, min(batch, (1 << 24) // (k * k)))
    means, variances = [], []
    model.eval()
    likelihood.eval()
    with torch.no_grad():
        for lo in range(0, len(x), chunk):
            xq = np.asarray(x[lo: lo + chunk], dtype=np.float64)
            _, idx = tree.query(xq, k=k)
            idx_t = torch.as_tensor(np.asarray(idx).reshape(len(xq), k), device=xtr.device)
            xb = torch.as_tensor(xq, dtype=xtr.dtype, device=xtr.device)[:, None, :]
            xn, yn = xtr[idx_t], ytr[idx_t] - const
            knn = kernel(xn).to_dense() + noise * eye
            ks = kernel(xb, xn).to_dense()  # (b, 1, k)
            kss = kernel(xb, diag=True).reshape(-1)
            chol, _ = torch.linalg.cholesky_ex(knn)
            v = torch.linalg.solve_triangular(chol, ks.transpose(-1, -2), upper=False)  # (b, k, 1)
            w = torch.linalg.solve_triangular(chol, yn[..., None], upper=False)
            means.append((const + (v * w).sum((-2, -1))).cpu().numpy())
            variances.append((kss - v.pow(2).sum((-2, -1)) + noise).clamp_min(1e-12).cpu().numpy())
    return np.concatenate(means).astype(np.float64), np.concatenate(variances).astype(np.float64)
