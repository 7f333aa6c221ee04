"""The matern learner: train the amortised estimator, evaluate it against the MLE, or apply it to a CSV."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from geostudy.errors import DataError
from geostudy.learners.base import Learner, RunContext, RunResult
from geostudy.learners.matern.calibrate import calibrate
from geostudy.learners.matern.config import MaternConfig
from geostudy.learners.matern.estimate import estimate_csv, save_checkpoint
from geostudy.learners.matern.evaluate import (
    Estimates,
    param_metrics,
    predict,
    refine,
    run_mle,
    true_log_params,
)
from geostudy.learners.matern.model import count_parameters
from geostudy.learners.matern.plots import range_error_figure, scatter_figure
from geostudy.learners.matern.priors import LOG_NAMES
from geostudy.learners.matern.simulate import simulate
from geostudy.learners.matern.train import build_model, graphs_for, train
from geostudy.nn.device import resolve_device
from geostudy.nn.training import seed_everything


def _metric_names() -> dict[str, str]:
    names: dict[str, str] = {}
    for split in ("val_", "test_", "refined_", "mle_"):
        for key in LOG_NAMES.values():
            names[f"{split}rmse_{key}"] = "minimize"
            names[f"{split}mae_{key}"] = "minimize"
            names[f"{split}bias_{key}"] = "minimize"
            if split != "mle_":
                names[f"{split}coverage_{key}"] = "maximize"
        names[f"{split}rmse_range"] = "minimize"
    names.update({"val_loss": "minimize", "param_count": "minimize", "train_seconds": "minimize",
                  "seconds_per_field": "minimize", "refined_seconds_per_field": "minimize",
                  "mle_seconds_per_field": "minimize"})
    return names


class MaternLearner(Learner):
    """Amortised GNN + DeepSets estimator of Matérn parameters (range, variance, nugget, time range).

    Metrics are per parameter on the log scale (``val_rmse_log_range`` is the study objective); those of
    parameters the config fixes, of the test split outside final runs and of the MLE and the refined
    estimates (``eval.refine_steps``; final runs only) are NaN. ``mode: estimate`` applies a checkpoint to a CSV of points instead of training.
    """

    name: ClassVar[str] = "matern"
    metrics: ClassVar[Mapping[str, str]] = _metric_names()
    config_class = MaternConfig

    def check_config(self, config: Mapping[str, Any], *, file: str | Path | None = None) -> None:
        cfg: MaternConfig = self.parse_config(config, file=file)
        resolve_device(cfg.device)
        if cfg.mode == "estimate":
            for what, path in (("checkpoint", cfg.estimate.checkpoint), ("CSV of points", cfg.estimate.csv)):
                if path and not Path(path).is_file():
                    raise DataError(f"{what} not found (key estimate.{'checkpoint' if what == 'checkpoint' else 'csv'})",
                                    file=path)

    def run(self, config: Mapping[str, Any], ctx: RunContext) -> RunResult:
        cfg: MaternConfig = self.parse_config(config)
        device = resolve_device(cfg.device)
        seed_everything(cfg.seed)
        metrics = {name: math.nan for name in self.metrics}
        if cfg.mode == "estimate":
            self.check_config(config)
            summary, written = estimate_csv(cfg, Path(ctx.workdir), device)
            for row in summary["parameters"]:
                metrics[f"estimate_{row['parameter']}"] = float(row["gnn"])
                metrics[f"estimate_mle_{row['parameter']}"] = float(row["mle"])
            return RunResult(metrics=metrics, files=written, tables={"estimates": summary})
        free = cfg.free_params()
        # Independent streams: the validation and test fields do not change with the training settings.
        val = simulate(cfg, cfg.data.val_size, np.random.default_rng([cfg.seed, 1]), device=device)
        val_graphs = graphs_for(cfg, val)
        val_truth = true_log_params(val, free)
        model = build_model(cfg).to(device)
        last: dict[str, float] = {}
        val_est: list[Estimates] = []

        def evaluate(epoch: int) -> dict[str, float]:
            est = predict(model, cfg, val, graphs=val_graphs, device=device)
            val_est[:] = [est]
            out = param_metrics(est, val_truth, free, "val_")
            out["val_loss"] = float(np.mean((est.point - val_truth) ** 2 / (model.half_width.cpu().numpy() ** 2)))
            last.clear()
            last.update(out)
            return out

        t0 = time.perf_counter()
        history = train(cfg, model, ctx, evaluate, rng=np.random.default_rng([cfg.seed, 0]), device=device)
        metrics.update(last)
        metrics["train_seconds"] = time.perf_counter() - t0
        calibration = calibrate(model, cfg, fields=cfg.eval.calibration_fields, rng=np.random.default_rng([cfg.seed, 3]),
                                device=device)
        if calibration is not None:
            ctx.log(f"calibrated the {cfg.eval.level:.0%} intervals on {calibration.fields} fresh fields per replicate "
                    f"count {calibration.replicates[0]}-{calibration.replicates[-1]}")
            if val_est:
                val_est[0] = calibration.apply(val_est[0], val)
                metrics.update(param_metrics(val_est[0], val_truth, free, "val_"))
        metrics["param_count"] = float(count_parameters(model))
        figures: dict[str, Any] = {}
        files: dict[str, Path] = {}
        tables: dict[str, Any] = {"history": history, "free_parameters": free,
                                  "interval_calibration": None if calibration is None else calibration.to_dict()}
        if not ctx.final:
            timing = predict(model, cfg, val, device=device)  # graphs built inside: the full cost
            metrics["seconds_per_field"] = timing.seconds / len(val)
            if cfg.eval.plots:
                figures["estimates_vs_true"] = scatter_figure(val_truth, val_est[0], None, free)
            return RunResult(metrics=metrics, figures=figures, tables=tables)

        test = simulate(cfg, cfg.data.test_size, np.random.default_rng([cfg.seed, 2]), device=device)
        test_truth = true_log_params(test, free)
        est = predict(model, cfg, test, device=device)
        metrics["seconds_per_field"] = est.seconds / len(test)
        if calibration is not None:
            est = calibration.apply(est, test)
        metrics.update(param_metrics(est, test_truth, free, "test_"))
        refined = None
        if cfg.eval.refine_steps > 0:
            refined = refine(cfg, test, est, cfg.eval.refine_steps)
            metrics["refined_seconds_per_field"] = refined.seconds / len(test)
            metrics.update(param_metrics(refined, test_truth, free, "refined_"))
        mle = None
        if cfg.eval.mle_fields > 0:
            ctx.log(f"MLE on {min(cfg.eval.mle_fields, len(test))} test fields...")
            mle = run_mle(cfg, test, limit=cfg.eval.mle_fields)
            count = len(mle.point)
            metrics["mle_seconds_per_field"] = mle.seconds / count
            metrics.update(param_metrics(mle, test_truth, free, "mle_"))
            same = Estimates(est.point[:count], None if est.interval is None else est.interval[:count], 0.0)
            tables["same_fields"] = {"fields": count, "gnn": param_metrics(same, test_truth, free, ""),
                                     "mle": param_metrics(mle, test_truth, free, "")}
            if refined is not None:
                tables["same_fields"]["refined"] = param_metrics(refined, test_truth[:count], free, "")
        if cfg.eval.plots:
            figures["estimates_vs_true"] = scatter_figure(test_truth, est, mle, free)
            if "range" in free:
                j = free.index("range")
                figures["range_error"] = range_error_figure(
                    np.exp(test_truth[:, j]), np.exp(est.point[:, j]), None if mle is None else np.exp(mle.point[:, j])
                )
        workdir = Path(ctx.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        files["checkpoint"] = save_checkpoint(workdir / "checkpoint.pt", model, config, calibration)
        return RunResult(metrics=metrics, figures=figures, files=files, tables=tables)


