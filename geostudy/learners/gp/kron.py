"""The station GP: a product kernel over fixed stations × times, with gaps in the series.

The values of ``S`` fixed stations at ``T`` times have the covariance ``s2 Kt ⊗ Ks + n2 I`` restricted
to the observed (time, station) pairs. Two ways to condition on them:

- ``exact`` (up to ``model.exact_max_n`` observations): one dense Cholesky factor of the observed
  covariance; means and variances are exact.
- ``kronecker`` (above): the system is solved by conjugate gradients whose products cost
  ``O(T S (T + S))`` (``Kt V Ks``, never the ``(TS)²`` matrix), preconditioned by the complete-data
  inverse from the eigendecompositions of ``Kt`` and ``Ks`` (exact when nothing is missing, so a few
  iterations suffice for gappy series). Means are exact (to the solver's tolerance). Variances use the
  complete-data formula ``s2 kt ks - s2² Σ_ij (Kt*Qt)²_ti (Ks*Qs)²_pj / (s2 λt_i λs_j + n2)``, exact when
  no value is missing and otherwise slightly low where a nearby station is missing at a nearby time
  (the bench's coverage row measures the effect).

The prior mean is a constant, or with ``model.mean: linear`` linear in time and in the two coordinates
(``b0 + bt t + bx x + by y``: a warming trend, a gradient across the region), its coefficients fitted with
the kernel; the GP models what is left, so far from the stations the prediction returns to the trend
rather than to one value (and a linear-in-time mean extrapolates linearly past the data's times).

Hyperparameters (kernel lengthscales, signal and noise variance, the mean's coefficients) maximise the exact
marginal likelihood of blocks of the data, each the stations near a random one × consecutive times,
with about ``train.hyper_block`` observations in all (all of them when fewer; :func:`hyper_blocks`):
the blocks keep both the spatial and the temporal neighbours that the lengthscales are about. ``model.time_kernel: disabled`` here means
no temporal correlation (``Kt = I``: each time is its own spatial field, hyperparameters shared; no periodic part either).
``model.time_period`` adds a periodic part (fixed period, learnt weight and lengthscale) to the time kernel, e.g. a daily cycle;
the covariance stays a Kronecker product.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from gpytorch.kernels import Kernel, PeriodicKernel

from geostudy.errors import ConfigError
from geostudy.learners.gp.config import MEAN_NAMES, ModelConfig, TrainConfig
from geostudy.learners.gp.kernels import base_kernel, spectral_mixture_parts

CG_TOL = 1e-8
CG_MAX_ITER = 1000
CHUNK_BYTES = 256 << 20  # working memory of one prediction chunk
BLOCK_MAX = 600  # observations per hyperparameter block (the likelihood's Cholesky is cubic in it)


@dataclass
class Normaliser:
    """Station coordinates (metres) and times to the kernels' units: space in [~0, 1], time in [0, 1]."""

    centre: np.ndarray
    length: float
    t0: float
    span: float

    @classmethod
    def fit(cls, coords: np.ndarray, times: np.ndarray) -> Normaliser:
        lo, hi = coords.min(0), coords.max(0)
        length = float((hi - lo).max())
        span = float(times.max() - times.min())
        return cls(centre=(lo + hi) / 2, length=length if length > 0 else 1.0, t0=float(times.min()),
                   span=span if span > 0 else 1.0)

    def space(self, coords: np.ndarray) -> np.ndarray:
        return (np.asarray(coords, float) - self.centre) / self.length

    def time(self, times: np.ndarray) -> np.ndarray:
        return (np.asarray(times, float) - self.t0) / self.span


MEAN_TERMS = ("mean", "mean.time", "mean.x", "mean.y")  # coefficient names of the linear mean, in order


class StationKernel(torch.nn.Module):
    """``s2 kt(t, t') ks(x, x')`` with a constant or linear mean and Gaussian noise ``n2``; ``disabled`` groups are identities."""

    def __init__(self, cfg: ModelConfig, period: float | None = None) -> None:
        """Args: cfg: kernels and bounds; period: ``model.time_period`` in normalised time (None: no cycle)."""
        super().__init__()
        if cfg.space_kernel == "disabled" and cfg.time_kernel == "disabled":
            raise ConfigError("every kernel group is 'disabled'; enable space_kernel or time_kernel",
                              key="model.space_kernel")
        self.space: Kernel | None = base_kernel(cfg.space_kernel, (0, 1), ard=cfg.ard, num_mixtures=cfg.num_mixtures,
                                                init_lengthscale=cfg.space_lengthscale,
                                                min_lengthscale=cfg.min_lengthscale, key="model.space_kernel")
        self.time: Kernel | None = base_kernel(cfg.time_kernel, (0,), ard=False, num_mixtures=cfg.num_mixtures,
                                               init_lengthscale=cfg.time_lengthscale,
                                               min_lengthscale=cfg.min_lengthscale, key="model.time_kernel")
        # A periodic part added to the time kernel (a daily cycle, say), its period fixed in normalised time.
        self.cycle: Kernel | None = None
        if cfg.time_period is not None and period is not None and cfg.time_kernel != "disabled":
            self.cycle = PeriodicKernel(active_dims=(0,))
            self.cycle.period_length = period
            self.cycle.raw_period_length.requires_grad_(False)
            self.cycle.lengthscale = 1.0
            self.raw_cycle_weight = torch.nn.Parameter(torch.tensor(_inv_softplus(0.3)))
        self.noise_floor = float(cfg.noise_lower_bound)
        self.raw_outputscale = torch.nn.Parameter(torch.tensor(_inv_softplus(1.0)))
        self.raw_noise = torch.nn.Parameter(torch.tensor(_inv_softplus(max(0.05, 2 * self.noise_floor))))
        if cfg.mean not in MEAN_NAMES:
            raise ConfigError(f"unknown mean {cfg.mean!r}; allowed: {', '.join(MEAN_NAMES)}", key="model.mean")
        # Coefficients of 1, t, x, y (the constant alone for ``constant``).
        self.mean = torch.nn.Parameter(torch.zeros(1 if cfg.mean == "constant" else len(MEAN_TERMS)))

    def mean_grid(self, xs: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
        """``(T, S)`` prior mean at ``(T, 1)`` normalised times × ``(S, 2)`` normalised coordinates."""
        out = self.mean[0] + torch.zeros(ts.shape[0], xs.shape[0], dtype=xs.dtype)
        if len(self.mean) > 1:
            out = out + self.mean[1] * ts[:, :1] + (xs @ self.mean[2:4])[None, :]
        return out

    @property
    def outputscale(self) -> torch.Tensor:
        return torch.nn.functional.softplus(self.raw_outputscale)

    @property
    def noise(self) -> torch.Tensor:
        return self.noise_floor + torch.nn.functional.softplus(self.raw_noise)

    @staticmethod
    def _group(kernel: Kernel | None, a: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        if kernel is None:  # disabled: no correlation between distinct points
            b = a if b is None else b
            return (torch.cdist(a, b) < 1e-12).to(a.dtype)
        return kernel(a, a if b is None else b).to_dense()

    def ks(self, a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        """Space correlation between ``(n, 2)`` and ``(m, 2)`` normalised coordinates."""
        return self._group(self.space, a, b)

    def kt(self, a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        """Time correlation between ``(n, 1)`` and ``(m, 1)`` normalised times (plus the weighted cycle)."""
        k = self._group(self.time, a, b)
        if self.cycle is not None:
            k = k + torch.nn.functional.softplus(self.raw_cycle_weight) * self.cycle(a, a if b is None else b).to_dense()
        return k

    @torch.no_grad()
    def hyperparameters(self) -> dict[str, object]:
        out: dict[str, object] = {"outputscale": float(self.outputscale), "noise": float(self.noise)}
        out.update({name: float(v) for name, v in zip(MEAN_TERMS, self.mean, strict=False)})
        if self.cycle is not None:
            out["cycle.weight"] = float(torch.nn.functional.softplus(self.raw_cycle_weight))
        for group, kernel in (("space", self.space), ("time", self.time), ("cycle", self.cycle)):
            if kernel is None:
                continue
            for attr in ("lengthscale", "period_length", "alpha"):
                if f"raw_{attr}" in dict(kernel.named_parameters()):
                    out[f"{group}.{attr}"] = getattr(kernel, attr).detach().cpu().numpy().ravel().tolist()
        return out


def _inv_softplus(v: float) -> float:
    return float(v + math.log(-math.expm1(-v)))


def mean_features(coords: np.ndarray, times: np.ndarray, n_terms: int) -> np.ndarray:
    """``(T, S, n_terms)``: the mean's features 1, t, x, y (the first ``n_terms``) at times × coordinates."""
    n_t, n_s = len(times), len(coords)
    cols = [np.ones((n_t, n_s)), np.broadcast_to(times[:, None], (n_t, n_s)),
            np.broadcast_to(coords[None, :, 0], (n_t, n_s)), np.broadcast_to(coords[None, :, 1], (n_t, n_s))]
    return np.stack(cols[:n_terms], axis=-1)


def least_squares_mean(coords: np.ndarray, times: np.ndarray, y: np.ndarray, n_terms: int) -> np.ndarray:
    """Ordinary least-squares coefficients of the mean on the observed values of ``y`` ``(T, S)``: the fit's start."""
    ok = np.isfinite(y)
    if not ok.any():
        return np.zeros(n_terms)
    beta, *_ = np.linalg.lstsq(mean_features(coords, times, n_terms)[ok], y[ok], rcond=None)
    return np.asarray(beta, float)


def hyper_blocks(coords: np.ndarray, mask: np.ndarray, budget: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Blocks (station indices, consecutive time indices) holding about ``budget`` observations in all.

    All the data when it has at most ``budget`` (and ``2 * BLOCK_MAX``) values; else ``ceil(budget / BLOCK_MAX)`` blocks of
    about :data:`BLOCK_MAX` values, each the stations nearest a random station (the short distances the
    prediction depends on) × about as many consecutive times from a random start. The likelihood of
    independent blocks (a block composite likelihood) costs ``n_blocks * BLOCK_MAX³`` where one block
    of the same size would cost ``budget³``.
    """
    n_t, n_s = mask.shape
    if int(mask.sum()) <= min(budget, 2 * BLOCK_MAX):
        return [(np.arange(n_s), np.arange(n_t))]
    density = max(float(mask.mean()), 1e-3)
    count = math.ceil(budget / BLOCK_MAX)
    slots = max(4, int(budget / count / density))
    mt = int(min(n_t, max(math.ceil(math.sqrt(slots)), math.ceil(slots / n_s))))
    ms = int(min(n_s, max(2, slots // mt)))
    blocks = []
    for _ in range(count):
        centre = coords[rng.integers(n_s)]
        stations = np.sort(np.argsort(((coords - centre) ** 2).sum(1))[:ms])
        first = int(rng.integers(0, n_t - mt + 1))
        blocks.append((stations, np.arange(first, first + mt)))
    return blocks


class GaussianNLL(torch.autograd.Function):
    """``0.5 r' K^-1 r + 0.5 log|K| + n/2 log 2π`` with the closed-form gradient ``0.5 (K^-1 - a a')``, ``a = K^-1 r``.

    Autograd through the Cholesky factorisation costs several times the forward pass; this backward is
    one ``cholesky_inverse`` (Rasmussen & Williams eq. 5.9).
    """

    @staticmethod
    def forward(ctx, k: torch.Tensor, r: torch.Tensor) -> torch.Tensor:  # type: ignore[override]  # noqa: ANN001
        chol = torch.linalg.cholesky(k)
        alpha = torch.cholesky_solve(r[:, None], chol)[:, 0]
        ctx.save_for_backward(chol, alpha)
        return 0.5 * (r * alpha).sum() + torch.log(torch.diagonal(chol)).sum() + 0.5 * len(r) * math.log(2 * math.pi)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]  # noqa: ANN001
        chol, alpha = ctx.saved_tensors
        inverse = torch.cholesky_inverse(chol)
        return 0.5 * grad * (inverse - torch.outer(alpha, alpha)), grad * alpha


def block_nll(kern: StationKernel, xs: torch.Tensor, ts: torch.Tensor, y: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
    """Negative log marginal likelihood (a sum) of the block's observed values ``y[obs]``."""
    t_idx, s_idx = torch.nonzero(obs.reshape(ts.shape[0], xs.shape[0]), as_tuple=True)
    # Spread the kernels to the observations with indicator products: their backward is two matrix
    # products, where a gather's is a slow scatter-add of n² values.
    e_t = torch.nn.functional.one_hot(t_idx, ts.shape[0]).to(ts.dtype)
    e_s = torch.nn.functional.one_hot(s_idx, xs.shape[0]).to(xs.dtype)
    k = kern.outputscale * (e_t @ kern.kt(ts) @ e_t.T) * (e_s @ kern.ks(xs) @ e_s.T)
    k = k + kern.noise * torch.eye(len(t_idx), dtype=k.dtype)
    out: torch.Tensor = GaussianNLL.apply(k, y[obs] - kern.mean_grid(xs, ts).reshape(-1)[obs])  # type: ignore[no-untyped-call]
    return out


def fit_hypers(kern: StationKernel, coords: np.ndarray, times: np.ndarray, y: np.ndarray, train_cfg: TrainConfig, *,
               seed: int, log: Callable[[str], None] | None = None) -> list[float]:
    """Fit ``kern`` by L-BFGS on the marginal likelihood of a data block (see the module docstring).

    Args:
        kern: The kernel to fit (changed in place).
        coords: ``(S, 2)`` normalised station coordinates; ``times``: ``(T,)`` normalised times.
        y: ``(T, S)`` standardised values, NaN where missing.
        train_cfg: ``iterations`` (L-BFGS iterations at most) and ``hyper_block``.
        seed: Seeds the block choice.
        log: Progress lines.

    Returns:
        The loss after each chunk of iterations.
    """
    mask = np.isfinite(y)
    data = []
    for stations, window in hyper_blocks(coords, mask, train_cfg.hyper_block, np.random.default_rng(seed)):
        yb = y[np.ix_(window, stations)]
        data.append((torch.as_tensor(coords[stations], dtype=torch.float64),
                     torch.as_tensor(times[window, None], dtype=torch.float64),
                     torch.as_tensor(np.nan_to_num(yb).ravel(), dtype=torch.float64),
                     torch.as_tensor(np.isfinite(yb).ravel())))
    n_total = sum(int(b[3].sum()) for b in data)
    kern.double()
    with torch.no_grad():
        kern.mean.copy_(torch.as_tensor(least_squares_mean(coords, times, y, len(kern.mean))))
        xs, ts = torch.as_tensor(coords, dtype=torch.float64), torch.as_tensor(times[:, None], dtype=torch.float64)
        for sm in spectral_mixture_parts(kern.space) if kern.space is not None else []:
            sm.initialize_from_data(xs, torch.as_tensor(np.nan_to_num(np.nanmean(y, 0))))
        for sm in spectral_mixture_parts(kern.time) if kern.time is not None else []:
            sm.initialize_from_data(ts, torch.as_tensor(np.nan_to_num(np.nanmean(y, 1))))

    def total_nll() -> torch.Tensor:
        return sum((block_nll(kern, *b) for b in data), torch.zeros((), dtype=torch.float64)) / n_total

    params = [p for p in kern.parameters() if p.requires_grad]
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=1, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-6, tolerance_change=1e-10)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = total_nll()
        loss.backward()
        return loss

    losses: list[float] = []
    done, chunk = 0, 10
    start = time.perf_counter()
    while done < train_cfg.iterations:
        step = min(chunk, train_cfg.iterations - done)
        opt.param_groups[0]["max_iter"] = step
        opt.param_groups[0]["max_eval"] = step * 5 // 4 + 5
        snapshot = [p.detach().clone() for p in params]
        before = int(opt.state[opt._params[0]].get("n_iter", 0))  # type: ignore[attr-defined]
        try:
            loss = float(torch.as_tensor(opt.step(closure)).detach())  # type: ignore[arg-type]
            ok = math.isfinite(loss) and all(bool(torch.isfinite(p).all()) for p in params)
        except (RuntimeError, ValueError):  # a line-search point made the block covariance not PD
            ok = False
        if not ok:  # keep the last finite hyperparameters: the fit up to here stands
            with torch.no_grad():
                for p, old in zip(params, snapshot, strict=True):
                    p.copy_(old)
            break
        losses.append(loss)
        taken = int(opt.state[opt._params[0]].get("n_iter", 0)) - before  # type: ignore[attr-defined]
        done += step
        if log:
            log(f"gp stations: hyperparameters, iteration {done} nll={loss:.4g} ({time.perf_counter() - start:.1f}s)")
        if taken < step:  # converged
            break
    if not losses:
        with torch.no_grad():
            losses.append(float(total_nll()))
    if train_cfg.station_calibration:
        with torch.no_grad():
            factor = station_out_scale(kern, data)
            kern.raw_outputscale.copy_(torch.as_tensor(_inv_softplus(float(kern.outputscale) * factor)))
            noise = max(float(kern.noise) * factor, kern.noise_floor * 1.001)
            kern.raw_noise.copy_(torch.as_tensor(_inv_softplus(noise - kern.noise_floor)))
        if log:
            log(f"gp stations: variance scale from held-out stations within the blocks: x{factor:.3g}")
    return losses


def station_out_scale(kern: StationKernel, data: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]) -> float:
    """The factor for signal and noise variance together that gives leave-one-station-out residuals unit variance.

    Within each block, each station's series is held out in turn; its residuals and their covariance
    are closed form (:func:`~geostudy.learners.gp.crossval.kfold_residuals`, folds = stations). The
    marginal likelihood fits the kernel's shape; a misspecified kernel (a daily cycle a product kernel
    cannot express, say) then leaves the overall scale off for predicting a station never seen,
    which is what maps and held-out scores need. Scaling both variances keeps the posterior mean.
    """
    ratios = []
    for xs, ts, y, obs in data:
        t_idx, s_idx = torch.nonzero(obs.reshape(ts.shape[0], xs.shape[0]), as_tuple=True)
        k = kern.outputscale * kern.kt(ts)[t_idx][:, t_idx] * kern.ks(xs)[s_idx][:, s_idx]
        k = k + kern.noise * torch.eye(len(t_idx), dtype=k.dtype)
        r = y[obs] - kern.mean_grid(xs, ts).reshape(-1)[obs]
        chol = torch.linalg.cholesky(k)
        alpha = torch.cholesky_solve(r[:, None], chol)[:, 0]
        inverse = torch.cholesky_inverse(chol)
        for s in torch.unique(s_idx):
            idx = torch.nonzero(s_idx == s).squeeze(-1)
            if len(idx) == 0 or len(torch.unique(s_idx)) < 2:
                continue
            cov = torch.linalg.inv(inverse[idx][:, idx])
            resid = cov @ alpha[idx]
            ratios.append((resid.pow(2) / torch.diagonal(cov)).numpy())
    if not ratios:
        return 1.0
    return float(np.clip(np.mean(np.concatenate(ratios)), 0.1, 10.0))


@dataclass
class StationPosterior:
    """The GP conditioned on every observed (time, station) value; predicts anywhere, any time.

    Attributes (normalised units): ``coords`` ``(S, 2)``, ``times`` ``(T,)``, ``mask`` ``(T, S)``,
    ``alpha`` ``(T, S)`` (zero where missing), and either ``chol`` (exact) or the eigenpairs.
    """

    kern: StationKernel
    coords: np.ndarray
    times: np.ndarray
    mask: np.ndarray
    alpha: np.ndarray
    inference: str
    chol: torch.Tensor | None = None
    eig: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
    cg_iterations: int = 0
    fit_seconds: float = 0.0
    losses: list[float] = field(default_factory=list)

    @property
    def noise(self) -> float:
        return float(self.kern.noise.detach())

    def _exact_grams(self, kt: np.ndarray) -> np.ndarray:
        """``(t*, S, S)``: for each output time, ``E' D R D E`` with ``R`` the inverse observed covariance,
        ``D`` the time correlations of the observations with that time and ``E`` their station indicator.

        The exact variance at ``(t*, p)`` is then ``prior - s2² ks(p)' G_t* ks(p)``: ``O(n² S)`` per time once,
        ``O(S²)`` per point, instead of ``O(n²)`` per point and time.
        """
        if self.chol is None:
            raise RuntimeError("exact grams need the Cholesky factor")
        obs = self.mask.ravel()
        t_of, s_of = np.nonzero(self.mask)  # row-major, the order of the observed vector
        inverse = torch.cholesky_inverse(self.chol).numpy()
        indicator = np.zeros((int(obs.sum()), self.mask.shape[1]))
        indicator[np.arange(len(s_of)), s_of] = 1.0
        grams = np.empty((len(kt), self.mask.shape[1], self.mask.shape[1]))
        for i, row in enumerate(kt):
            weighted = row[t_of][:, None] * indicator
            grams[i] = weighted.T @ inverse @ weighted
        return grams

    def predict(self, coords: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Latent mean and variance ``(len(times), len(coords))`` at normalised ``coords`` and ``times``.

        Add :attr:`noise` to the variance for the predictive variance of a new observation.
        """
        s2 = float(self.kern.outputscale.detach())
        coords, times = np.asarray(coords, float), np.asarray(times, float)
        n_t = len(times)
        step = max(1, CHUNK_BYTES // (8 * n_t * (self.alpha.shape[0] + self.alpha.shape[1] + 4)))
        with torch.no_grad():
            kt_self = self.kern.kt(torch.as_tensor(times[:, None], dtype=torch.float64), None).diagonal().numpy()
            kt_all = self.kern.kt(torch.as_tensor(times[:, None], dtype=torch.float64),
                                  torch.as_tensor(self.times[:, None], dtype=torch.float64)).numpy()
        grams = self._exact_grams(kt_all) if self.chol is not None else None
        means, variances = [], []
        for lo in range(0, len(coords), step):
            c = coords[lo: lo + step]
            with torch.no_grad():
                ct = torch.as_tensor(c, dtype=torch.float64)
                ks = self.kern.ks(ct, torch.as_tensor(self.coords, dtype=torch.float64)).numpy()  # (p, S)
                ks_self = self.kern.ks(ct).diagonal().numpy()
                prior_mean = self.kern.mean_grid(ct, torch.as_tensor(times[:, None], dtype=torch.float64)).numpy()
            mean = prior_mean + s2 * (kt_all @ self.alpha @ ks.T)
            prior = s2 * kt_self[:, None] * ks_self[None, :]
            if grams is not None:
                var = prior - s2**2 * np.einsum("ps,tsq,pq->tp", ks, grams, ks, optimize=True)
            else:
                if self.eig is None:
                    raise RuntimeError("a kronecker posterior without its eigenpairs")
                lt, qt, ls, qs = self.eig
                w = 1.0 / (s2 * lt[:, None] * ls[None, :] + self.noise)
                var = prior - s2**2 * ((kt_all @ qt) ** 2) @ w @ ((ks @ qs) ** 2).T
            means.append(mean)
            variances.append(np.maximum(var, 1e-12))
        if not means:
            return np.zeros((n_t, 0)), np.zeros((n_t, 0))
        return np.concatenate(means, axis=1), np.concatenate(variances, axis=1)


def choose_station_inference(n_obs: int, cfg: ModelConfig) -> str:
    """``exact`` or ``kronecker``: the config's choice, or exact up to ``exact_max_n`` observations."""
    if cfg.inference in ("exact", "kronecker"):
        return cfg.inference
    if cfg.inference == "svgp":
        raise ConfigError("station data use 'exact' or 'kronecker' inference (or 'auto'), but got 'svgp'",
                          key="model.inference")
    return "exact" if n_obs <= cfg.exact_max_n else "kronecker"


def _cg(matvec: Callable[[np.ndarray], np.ndarray], precond: Callable[[np.ndarray], np.ndarray], b: np.ndarray) -> tuple[np.ndarray, int]:
    """Preconditioned conjugate gradients on matrices (the vectors are ``(T, S)`` arrays)."""
    x = np.zeros_like(b)
    r = b.copy()
    z = precond(r)
    p = z.copy()
    rz = float((r * z).sum())
    norm_b = float(np.sqrt((b * b).sum())) or 1.0
    for it in range(1, CG_MAX_ITER + 1):
        ap = matvec(p)
        step = rz / float((p * ap).sum())
        x += step * p
        r -= step * ap
        if float(np.sqrt((r * r).sum())) < CG_TOL * norm_b:
            return x, it
        z = precond(r)
        rz_new = float((r * z).sum())
        p = z + (rz_new / rz) * p
        rz = rz_new
    return x, CG_MAX_ITER


def condition(kern: StationKernel, coords: np.ndarray, times: np.ndarray, y: np.ndarray, inference: str) -> StationPosterior:
    """Condition the fitted kernel on every observed value of ``y`` ``(T, S)`` (NaN missing)."""
    mask = np.isfinite(y)
    with torch.no_grad():
        ks = kern.ks(torch.as_tensor(coords, dtype=torch.float64)).numpy()
        kt = kern.kt(torch.as_tensor(times[:, None], dtype=torch.float64)).numpy()
        s2, n2 = float(kern.outputscale), float(kern.noise)  # under no_grad
        mu = kern.mean_grid(torch.as_tensor(coords, dtype=torch.float64),
                            torch.as_tensor(times[:, None], dtype=torch.float64)).numpy()
    r = np.where(mask, y - mu, 0.0)
    if inference == "exact":
        obs = mask.ravel()
        k = s2 * np.kron(kt, ks)[np.ix_(obs, obs)] + n2 * np.eye(int(obs.sum()))
        chol = torch.linalg.cholesky(torch.as_tensor(k))
        alpha = np.zeros(mask.size)
        alpha[obs] = torch.cholesky_solve(torch.as_tensor(r.ravel()[obs])[:, None], chol)[:, 0].numpy()
        return StationPosterior(kern, coords, times, mask, alpha.reshape(mask.shape), "exact", chol=chol)
    lt, qt = np.linalg.eigh(kt)
    ls, qs = np.linalg.eigh(ks)
    lt, ls = np.maximum(lt, 0.0), np.maximum(ls, 0.0)
    w = 1.0 / (s2 * lt[:, None] * ls[None, :] + n2)

    def matvec(v: np.ndarray) -> np.ndarray:
        return np.where(mask, s2 * (kt @ v @ ks) + n2 * v, 0.0)

    def precond(v: np.ndarray) -> np.ndarray:
        return np.where(mask, qt @ ((qt.T @ v @ qs) * w) @ qs.T, 0.0)

    alpha, iterations = _cg(matvec, precond, r)
    return StationPosterior(kern, coords, times, mask, alpha, "kronecker", eig=(lt, qt, ls, qs),
                            cg_iterations=iterations)


def fit_station_gp(coords: np.ndarray, times: np.ndarray, y: np.ndarray, model_cfg: ModelConfig,
                   train_cfg: TrainConfig, *, seed: int, log: Callable[[str], None] | None = None,
                   period: float | None = None) -> StationPosterior:
    """Fit hyperparameters on blocks, then condition on every observation (normalised inputs, standardised ``y``).

    ``period``: ``model.time_period`` converted to normalised time (None: no periodic part).
    """
    start = time.perf_counter()
    torch.manual_seed(seed)
    if model_cfg.combine != "product":
        raise ConfigError(f"station data need the product of the space and time kernels (Kronecker structure), but "
                          f"got {model_cfg.combine!r}", key="model.combine")
    kern = StationKernel(model_cfg, period).double()
    losses = fit_hypers(kern, coords, times, y, train_cfg, seed=seed, log=log)
    inference = choose_station_inference(int(np.isfinite(y).sum()), model_cfg)
    post = condition(kern, coords, times, y, inference)
    post.losses = losses
    post.fit_seconds = time.perf_counter() - start
    if log:
        extra = f", {post.cg_iterations} CG iterations" if inference == "kronecker" else ""
        log(f"gp stations: {inference} posterior on {int(np.isfinite(y).sum())} values{extra} "
            f"({post.fit_seconds:.1f}s)")
    return post
