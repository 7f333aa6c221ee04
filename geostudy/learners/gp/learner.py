"""The GP learner: load a field, mask stations, fit a GP, score held-out points against baselines."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from geostudy.errors import ConfigError, DataError
from geostudy.learners.base import REPO_ROOT, Learner, RunContext, RunResult
from geostudy.learners.gp import data as gpdata
from geostudy.learners.gp import evaluate, patch_prior, plots
from geostudy.learners.gp.config import GpConfig
from geostudy.learners.gp.kernels import kernel_label
from geostudy.learners.gp.model import FittedGP, fit_gp
from geostudy.learners.gp.rounds import round_errors
from geostudy.learners.gp.stations import plan_run, run_stations
from geostudy.learners.gp.steering import steering_inputs, structure_sigmas
from geostudy.nn.device import resolve_device
from geostudy.nn.training import seed_everything

BASELINES = ("biharmonic", "griddata", "sklearn_gpr")
GP_METRICS = ("rmse", "mae", "nlpd", "coverage95")

_GRIDDED_MEAN = "a linear mean is for station data (data.source: stations); gridded fields use constant"


def _metric_names() -> dict[str, str]:
    names = {"rmse": "minimize", "mae": "minimize", "nlpd": "minimize", "coverage95": "maximize",
             "fit_seconds": "minimize", "predict_seconds": "minimize", "rmse_vs_biharmonic": "minimize"}
    for base in BASELINES:
        names[f"baseline_{base}_rmse"] = "minimize"
        names[f"baseline_{base}_mae"] = "minimize"
    names["baseline_sklearn_gpr_nlpd"] = "minimize"
    names["baseline_sklearn_gpr_coverage95"] = "maximize"
    names["baseline_sklearn_gpr_fit_seconds"] = "minimize"
    # Station data (data.source: stations): rmse/mae/nlpd/coverage95 are the held-out stations' series.
    names.update(baseline_spline_rmse="minimize", baseline_spline_mae="minimize", rmse_vs_spline="minimize")
    return names


def resolve_path(path: str | None) -> str | None:
    """A relative data path is taken from the working directory, else from the repository root."""
    if path is None:
        return None
    p = Path(path)
    if p.is_absolute() or p.exists():
        return str(p)
    return str(REPO_ROOT / p)


def trial_labels(config: Mapping[str, Any]) -> tuple[str, str]:
    """(kernel combination, mask regime) labels of a config, as the study bar chart groups trials."""
    model = config.get("model", {})
    mask = config.get("mask", {})
    data = config.get("data", {})
    has_time = data.get("source", "synthetic") != "image"
    label = kernel_label(model.get("space_kernel", "matern32"), model.get("time_kernel", "rbf") if has_time else None,
                         model.get("combine", "product"))
    return label, f"{mask.get('regime', 'fixed')} p={mask.get('p_missing', 0.8)}"


def _hyperparameters(fitted: FittedGP) -> dict[str, Any]:
    out: dict[str, Any] = {"noise": float(fitted.likelihood.noise.detach().mean())}
    for name, module in fitted.model.covar_module.named_modules():
        for attr in ("lengthscale", "outputscale", "period_length", "alpha"):
            if hasattr(module, attr) and f"raw_{attr}" in dict(module.named_parameters(recurse=False)):
                value = getattr(module, attr).detach().cpu().numpy().ravel().tolist()
                out[f"{name or 'kernel'}.{attr}"] = value
    return out


def load_patch_prior(cfg: GpConfig, fld: gpdata.Field, file: str | Path | None = None) -> patch_prior.PatchPrior | None:
    """The steering pilot's patch prior, if the config asks for one; it must not have seen the field ``fld``."""
    steer = cfg.model.steering
    if not cfg.model.uses_patch_prior:
        return None
    key = "model.steering.patch_prior"
    try:
        prior = patch_prior.PatchPrior.load(str(steer.patch_prior))
    except DataError as err:
        raise DataError(err.message, file=err.file, key=key) from None
    seen = Path(str(cfg.data.image)).name if cfg.data.source == "image" else None
    if seen not in prior.trained_on:  # by name, else by content (a copy, a resize, skimage's cat as chelsea)
        seen = next((name for name in map(prior.seen, fld.values) if name is not None), None)
    if seen is not None:
        raise ConfigError(f"the patch prior {steer.patch_prior} was fitted to {seen!r}, the same picture as the "
                          f"field scored here ({fld.name}): its held-out pixels would not be held out; fit one "
                          "without it", file=file, key=key)
    if cfg.data.source == "image" and cfg.data.size and min(cfg.data.size) < prior.patch:
        raise ConfigError(f"the patch prior's {prior.patch}x{prior.patch} patches do not fit in an image of size "
                          f"{list(cfg.data.size)}", file=file, key=key)
    return prior


class GpLearner(Learner):
    """Reconstruct a (time, y, x) field from sparse stations with a GPyTorch GP."""

    name: ClassVar[str] = "gp"
    metrics: ClassVar[Mapping[str, str]] = _metric_names()
    config_class = GpConfig

    def parse_config(self, config: Mapping[str, Any], *, file: str | Path | None = None) -> GpConfig:
        cfg: GpConfig = super().parse_config(config, file=file)
        cfg.data.path = resolve_path(cfg.data.path)
        cfg.model.steering.patch_prior = resolve_path(cfg.model.steering.patch_prior)
        cfg.output.grid.template = resolve_path(cfg.output.grid.template)
        return cfg

    def check_config(self, config: Mapping[str, Any], *, file: str | Path | None = None) -> None:
        cfg = self.parse_config(config, file=file)
        resolve_device(cfg.device)
        # Fail before a study starts, not in every trial.
        if cfg.data.source == "stations":
            plan_run(cfg, file=file)
        elif cfg.model.inference == "kronecker":
            raise ConfigError("'kronecker' inference is for station data (data.source: stations); gridded fields use "
                              "auto, exact or svgp", file=file, key="model.inference")
        elif cfg.model.mean != "constant":
            raise ConfigError(_GRIDDED_MEAN, file=file, key="model.mean")
        elif cfg.model.uses_patch_prior:  # the whole field: the prior must not have seen it
            load_patch_prior(cfg, gpdata.load_field(cfg.data, cfg.seed), file)
        elif cfg.data.source == "netcdf":
            gpdata.load_netcdf(str(cfg.data.path), str(cfg.data.variable), time_dim=cfg.data.time_dim,
                               y_dim=cfg.data.y_dim, x_dim=cfg.data.x_dim)
        elif cfg.data.source == "npy" and not Path(str(cfg.data.path)).is_file():
            gpdata.load_npy(str(cfg.data.path))

    @staticmethod
    def _fit(cfg: GpConfig, fld: gpdata.Field, x_all: np.ndarray, obs_idx: np.ndarray,
             scaler: gpdata.Scaler, device: torch.device, dtype: torch.dtype,
             eval_callback: Callable[[np.ndarray], Callable[[int, FittedGP], None]],
             pilot_of: Callable[[np.ndarray], np.ndarray], ctx: RunContext) -> tuple[FittedGP, np.ndarray, dict[str, Any]]:
        """Fit the GP; returns it, the model inputs of every grid point and notes for the run's tables.

        A steering (nonstationary) GP is fitted in rounds: its per-pixel covariances come from a
        pilot image, ``pilot_of(stations)`` first (biharmonic inpainting, or that refined by the
        patch prior), then the previous round's GP mean.
        """
        y_obs = scaler.transform(fld.values.ravel()[obs_idx])
        if cfg.model.nonstationary != "steering":
            return fit_gp(x_all[obs_idx], y_obs, cfg.model, cfg.train, has_time=fld.has_time, device=device,
                          dtype=dtype, seed=cfg.seed, on_eval=eval_callback(x_all), log=ctx.log), x_all, {}
        if fld.has_time:
            raise ConfigError("nonstationary 'steering' works on 2-D fields (image, (y, x) arrays), but this field "
                              "has a time axis", key="model.nonstationary")
        steer = cfg.model.steering
        start = time.perf_counter()
        observed = np.zeros(fld.values[0].size, dtype=bool)
        observed[obs_idx] = True
        pilot = pilot_of(observed.reshape(fld.values[0].shape))
        shape = pilot.shape

        def inputs_of(image: np.ndarray) -> np.ndarray:
            sigmas = structure_sigmas(image, smooth=steer.smooth, elongation_reg=steer.elongation_reg,
                                      elongation_power=steer.elongation_power, energy_power=steer.energy_power,
                                      energy_reg=steer.energy_reg)
            return steering_inputs(x_all, sigmas)

        fits: list[tuple[FittedGP, np.ndarray]] = []
        notes: dict[str, Any] = {"steering_round": steer.rounds}
        for round_ in range(steer.rounds):
            x_model = inputs_of(pilot)
            last = round_ == steer.rounds - 1
            fitted = fit_gp(x_model[obs_idx], y_obs, cfg.model, cfg.train, has_time=False, device=device,
                            dtype=dtype, seed=cfg.seed, on_eval=eval_callback(x_model) if last else None, log=ctx.log)
            fits.append((fitted, x_model))
            if not last:
                pilot = scaler.inverse(fitted.predict(x_model, batch=cfg.eval.predict_batch)[0]).reshape(shape)
                ctx.log(f"gp: steering round {round_ + 1}/{steer.rounds} done")
        if steer.choose_rounds and len(fits) > 1:
            errors = round_errors([f for f, _ in fits], inputs_of, pilot_of, shape, obs_idx, y_obs,
                                  folds=cfg.train.folds, seed=cfg.seed)
            best = int(np.argmin(errors))
            ctx.log(f"gp: steering rounds' out-of-fold rmse {np.round(errors, 5).tolist()}: using round {best + 1}")
            fitted, x_model = fits[best]
            notes = {"steering_round": best + 1, "steering_rounds_cv_rmse": [float(scaler.inverse_std(e)) for e in errors]}
        fitted.fit_seconds = time.perf_counter() - start
        return fitted, x_model, notes

    def run(self, config: Mapping[str, Any], ctx: RunContext) -> RunResult:
        cfg = self.parse_config(config)
        seed_everything(cfg.seed)
        if cfg.data.source == "stations":
            return run_stations(cfg, ctx)
        if cfg.model.inference == "kronecker":
            raise ConfigError("'kronecker' inference is for station data (data.source: stations); gridded fields use "
                              "auto, exact or svgp", key="model.inference")
        if cfg.model.mean != "constant":
            raise ConfigError(_GRIDDED_MEAN, key="model.mean")
        device = resolve_device(cfg.device)
        dtype = torch.float64 if cfg.dtype == "float64" else torch.float32

        fld = gpdata.load_field(cfg.data, cfg.seed)
        shape = fld.shape
        observed = gpdata.make_mask(shape, cfg.mask, cfg.seed, fld.valid)
        held = fld.valid & ~observed
        x_all = gpdata.grid_inputs(shape, fld.has_time)
        flat_vals = fld.values.ravel()
        obs_idx = np.flatnonzero(observed.ravel())
        held_idx = np.flatnonzero(held.ravel())
        scaler = gpdata.Scaler.fit(flat_vals[obs_idx])
        ctx.log(f"gp: {fld.name} shape {shape}, {len(obs_idx)} stations, {len(held_idx)} held-out points")

        rng = np.random.default_rng(cfg.seed)
        report_idx = held_idx if len(held_idx) <= cfg.train.report_points else np.sort(
            rng.choice(held_idx, size=cfg.train.report_points, replace=False))
        history: list[dict[str, float]] = []

        def eval_callback(x_model: np.ndarray) -> Callable[[int, FittedGP], None]:
            """The training callback for model inputs ``x_model`` (they differ from ``x_all`` for a steering GP)."""
            def on_eval(step: int, fitted: FittedGP) -> None:
                if len(report_idx) == 0:
                    return
                mean, _ = fitted.predict(x_model[report_idx], batch=cfg.eval.predict_batch)
                rmse = float(np.sqrt(np.mean((scaler.inverse(mean) - flat_vals[report_idx]) ** 2)))
                history.append({"iteration": step + 1, "rmse": rmse, "loss": fitted.losses[-1]})
                ctx.report(step, {"rmse": rmse})
            return on_eval

        filled = np.where(fld.valid, fld.values, 0.0)

        @functools.cache
        def biharmonic_fill() -> np.ndarray:
            # The steering GP's first pilot and the biharmonic baseline are the same inpainting: run it once.
            return evaluate.biharmonic(filled, observed)

        prior = load_patch_prior(cfg, fld)

        def pilot_of(stations: np.ndarray) -> np.ndarray:
            """The steering kernel's first pilot from the ``stations`` (a 2-D mask) of the first frame."""
            same = np.array_equal(stations, observed[0])
            fill = biharmonic_fill()[0] if same else evaluate.biharmonic(filled[:1], stations[None])[0]
            if prior is None:
                return fill
            return patch_prior.restore(prior, filled[0], stations, fill, log=ctx.log if same else None)

        fitted, x_model, notes = self._fit(cfg, fld, x_all, obs_idx, scaler, device, dtype, eval_callback,
                                           pilot_of, ctx)
        start = time.perf_counter()
        valid_idx = np.flatnonzero(fld.valid.ravel())
        mean_n, var_n = fitted.predict(x_model[valid_idx], batch=cfg.eval.predict_batch)
        predict_seconds = time.perf_counter() - start
        mean = np.full(flat_vals.shape, np.nan)
        var = np.full(flat_vals.shape, np.nan)
        mean[valid_idx] = scaler.inverse(mean_n)
        var[valid_idx] = scaler.inverse_std(np.sqrt(var_n)) ** 2
        mean, var = mean.reshape(shape), var.reshape(shape)

        metrics = evaluate.point_metrics(fld.values[held], mean[held], var[held])
        metrics["fit_seconds"] = fitted.fit_seconds
        metrics["predict_seconds"] = predict_seconds
        ctx.report(cfg.train.iterations - 1, {"rmse": metrics["rmse"]})
        per_frame: dict[str, list[dict[str, float]]] = {"GP": evaluate.per_frame_metrics(fld.values, mean, var, held)}

        for base in BASELINES:
            for m in ("rmse", "mae"):
                metrics[f"baseline_{base}_{m}"] = math.nan
        for m in ("nlpd", "coverage95", "fit_seconds"):
            metrics[f"baseline_sklearn_gpr_{m}"] = math.nan
        if cfg.eval.biharmonic:
            bh = biharmonic_fill()
            per_frame["biharmonic"] = evaluate.per_frame_metrics(fld.values, bh, None, held)
            for m, v in evaluate.point_metrics(fld.values[held], bh[held]).items():
                metrics[f"baseline_biharmonic_{m}"] = v
        if cfg.eval.griddata:
            gd = evaluate.griddata_linear(filled, observed)
            per_frame["griddata linear"] = evaluate.per_frame_metrics(fld.values, gd, None, held)
            for m, v in evaluate.point_metrics(fld.values[held], gd[held]).items():
                metrics[f"baseline_griddata_{m}"] = v
        if cfg.eval.sklearn_gpr:
            kern = evaluate.sklearn_kernel(cfg.model.space_kernel, cfg.model.time_kernel, cfg.model.combine,
                                           fld.has_time)
            sk_mean, sk_var, sk_seconds, _ = evaluate.sklearn_gpr(
                x_all[obs_idx], scaler.transform(flat_vals[obs_idx]), x_all[held_idx], kern,
                max_n=cfg.eval.sklearn_max_n, seed=cfg.seed, batch=cfg.eval.predict_batch)
            sk = evaluate.point_metrics(flat_vals[held_idx], scaler.inverse(sk_mean),
                                        scaler.inverse_std(np.sqrt(sk_var)) ** 2)
            for m, v in sk.items():
                metrics[f"baseline_sklearn_gpr_{m}"] = v
            metrics["baseline_sklearn_gpr_fit_seconds"] = sk_seconds
        for name in ("baseline_spline_rmse", "baseline_spline_mae", "rmse_vs_spline"):
            metrics[name] = math.nan
        bh_rmse = metrics["baseline_biharmonic_rmse"]
        metrics["rmse_vs_biharmonic"] = metrics["rmse"] / bh_rmse if bh_rmse and math.isfinite(bh_rmse) else math.nan

        label, mask_label = kernel_label(cfg.model.space_kernel, cfg.model.time_kernel if fld.has_time else None,
                                         cfg.model.combine), f"{cfg.mask.regime} p={cfg.mask.p_missing:g}"
        figures: dict[str, Any] = {}
        if cfg.eval.pdf:
            title = f"{fld.name}: GP {label} ({fitted.inference}), mask {mask_label}"
            std = np.sqrt(var)
            pages = [plots.frame_figure(k, fld.values[k], observed[k], mean[k], std[k], fld.valid[k], title,
                                        per_frame["GP"][k]["rmse"])
                     for k in plots.pdf_frames(shape[0], cfg.eval.max_pdf_frames)]
            agg = plots.aggregate_figure(per_frame, fld.values[held], mean[held], std[held], title)
            png = Path(ctx.workdir) / "gp_aggregate.png"
            png.parent.mkdir(parents=True, exist_ok=True)
            agg.savefig(png, dpi=90)
            figures["gp_frames"] = plots.write_report_pdf(Path(ctx.workdir) / "gp_report.pdf", pages, agg)
            figures["gp_aggregate"] = png
        tables = {
            "kernel_combination": label,
            "mask_regime": mask_label,
            "inference": fitted.inference,
            "n_stations": int(len(obs_idx)),
            "n_held_out": int(len(held_idx)),
            "field": fld.name,
            "shape": list(shape),
            "per_frame": per_frame,
            "training": history,
            "hyperparameters": _hyperparameters(fitted),
            **notes,
        }
        ctx.log(f"gp: rmse={metrics['rmse']:.4g} (biharmonic {bh_rmse:.4g}) fit {fitted.fit_seconds:.1f}s")
        return RunResult(metrics={k: float(v) for k, v in metrics.items()}, figures=figures, tables=tables)
