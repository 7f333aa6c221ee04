"""The mogi learner: ``mode: train`` trains a network, ``matrix`` maps a checkpoint, ``invert`` inverts a map file."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from geostudy.learners.base import Learner, RunContext, RunResult
from geostudy.learners.mogi.config import MogiConfig
from geostudy.learners.mogi.data import Simulator
from geostudy.learners.mogi.evaluate import Predictor, target_metrics
from geostudy.nn.threads import torch_threads

METRIC_KINDS = ("mae", "rmse", "rel_error")


class MogiLearner(Learner):
    """Neural inversion of InSAR deformation maps for the depth and volume change of a Mogi source."""

    name: ClassVar[str] = "mogi"
    metrics: ClassVar[Mapping[str, str]] = {
        "val_loss": "minimize",
        **{f"val_{t}_{k}": "minimize" for t in ("depth", "dv") for k in METRIC_KINDS},
        "train_seconds": "minimize",
        "seconds_per_map": "minimize",
    }
    config_class = MogiConfig

    def check_config(self, config: Mapping[str, Any], *, file: str | Path | None = None) -> None:
        cfg: MogiConfig = self.parse_config(config, file=file)
        if cfg.mode == "matrix":
            from geostudy.learners.mogi.matrix import check_matrix
            from geostudy.learners.mogi.train import load_checkpoint

            check_matrix(cfg, load_checkpoint(cfg.matrix.checkpoint or "", device=cfg.device)[1])
        elif cfg.mode == "invert":
            from geostudy.learners.mogi.invert import prepare

            prepare(cfg)

    def run(self, config: Mapping[str, Any], ctx: RunContext) -> RunResult:
        cfg: MogiConfig = self.parse_config(config)
        with torch_threads(cfg.threads):
            if cfg.mode == "matrix":
                from geostudy.learners.mogi.matrix import run_matrix

                return run_matrix(cfg, ctx)
            if cfg.mode == "invert":
                from geostudy.learners.mogi.invert import run_invert

                return run_invert(cfg, ctx)
            return self._train(cfg, config, ctx)

    def _train(self, cfg: MogiConfig, config: Mapping[str, Any], ctx: RunContext) -> RunResult:
        from geostudy.learners.mogi.train import save_checkpoint, train_model

        sim = Simulator(cfg.data)
        predictor, info = train_model(cfg, sim, ctx)
        targets = cfg.model.targets
        val_values, val_maps = info["val_values"], info["val_maps"]
        metrics = dict(info["history"][-1])
        for k in ("epoch", "loss", "seconds"):
            metrics.pop(k, None)
        metrics["train_seconds"] = info["train_seconds"]
        metrics["seconds_per_map"] = predictor.seconds_per_map(val_maps)
        figures: dict[str, Any] = {}
        files: dict[str, Path] = {}
        tables: dict[str, Any] = {"history": info["history"]}
        if cfg.eval.figures:
            from geostudy.learners.mogi.plots import scatter_figure

            figures["val_pred_vs_true"] = scatter_figure(targets, predictor.predict(val_maps), val_values)
        if ctx.final:
            metrics.update(self._test(cfg, sim, predictor, ctx, figures, tables))
            work = Path(ctx.workdir)
            work.mkdir(parents=True, exist_ok=True)
            files["checkpoint"] = save_checkpoint(work / "mogi_model.pt", predictor, config)
        return RunResult(metrics={k: float(v) for k, v in metrics.items()}, figures=figures, files=files, tables=tables)

    @staticmethod
    def _test(cfg: MogiConfig, sim: Simulator, predictor: Predictor, ctx: RunContext, figures: dict[str, Any],
              tables: dict[str, Any]) -> dict[str, float]:
        """Test split (in and out of the training range) and the least-squares baseline on its first maps."""
        from geostudy.learners.mogi.baseline import fit_maps
        from geostudy.learners.mogi.plots import example_figure, scatter_figure

        targets = cfg.model.targets
        values, maps = sim.draw(np.random.default_rng([cfg.seed, 5]), cfg.train.n_test, "test")
        pred = predictor.predict(maps)
        inside = sim.spec.in_range(values)
        out: dict[str, float] = {"test_fraction_out": float(np.mean(~inside))}
        for name, sel in (("in", inside), ("out", ~inside)):
            out.update(target_metrics(targets, {t: pred[t][sel] for t in targets}, {t: values[t][sel] for t in targets},
                                      f"test_{name}_"))
        if cfg.eval.figures:
            figures["test_pred_vs_true"] = scatter_figure(targets, pred, values, inside, title="test (extrapolation)")
            figures["test_maps"] = example_figure(sim, maps, values)
        k = min(cfg.eval.baseline_maps, len(maps))
        if k:
            ctx.log(f"least-squares baseline on {k} test maps")
            start = time.perf_counter()
            ours = predictor.predict(maps[:k])
            ours_seconds = (time.perf_counter() - start) / k
            fits, lsq_seconds = fit_maps(sim, maps[:k], cfg.eval.baseline_bounds)
            truth = {t: values[t][:k] for t in targets}
            out.update(target_metrics(targets, {t: ours[t] for t in targets}, truth, "cmp_ours_"))
            out.update(target_metrics(targets, {t: fits[t] for t in targets if t in fits}, truth, "cmp_lsq_"))
            out["cmp_ours_seconds_per_map"] = ours_seconds
            out["cmp_lsq_seconds_per_map"] = lsq_seconds
            tables["baseline"] = {"maps": k, "bounds": cfg.eval.baseline_bounds,
                                  "name": "scipy.optimize.least_squares (trf, 2-point Jacobian)"}
        return out
