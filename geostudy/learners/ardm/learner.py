"""The ARDM learner: train an OA-ARDM on a categorical training image, sample, and evaluate."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from geostudy.learners.ardm import plots
from geostudy.learners.ardm.checkpoint import save_checkpoint
from geostudy.learners.ardm.config import ArdmConfig
from geostudy.learners.ardm.data import (
    HardData,
    Split,
    check_training_image,
    load_training_image,
    random_patches,
    split_image,
)
from geostudy.learners.ardm.evaluate import image_stats, mismatch, proportions
from geostudy.learners.ardm.images import FaciesCodes
from geostudy.learners.ardm.model import UNet
from geostudy.learners.ardm.sampling import sample
from geostudy.learners.ardm.simulate import check_simulation, run_simulation
from geostudy.learners.ardm.train import Ema, bits_per_pixel, train_step
from geostudy.learners.base import Learner, RunContext, RunResult
from geostudy.nn import make_optimizer, make_scheduler, resolve_device, seed_everything
from geostudy.nn.device import sync_device
from geostudy.nn.threads import torch_threads
from geostudy.nn.training import run_epochs


def build_model(cfg: ArdmConfig) -> UNet:
    m = cfg.model
    return UNet(cfg.data.n_categories, m.widths, depth=m.depth, attention_levels=m.attention_levels(),
                dropout=m.dropout, attention_window=cfg.data.patch)


def hard_data_for(cfg: ArdmConfig, held_out: np.ndarray, rng: np.random.Generator) -> tuple[HardData, np.ndarray | None]:
    """The configured hard data, or ``eval.n_hard`` pixels of a random held-out patch (returned too)."""
    size = cfg.sample_size
    if cfg.eval.hard_data is not None:
        return HardData.from_list(cfg.eval.hard_data, size, cfg.data.n_categories), None
    truth = random_patches(held_out, 1, size, rng)[0]
    return HardData.draw(truth, cfg.eval.n_hard, rng), truth


@dataclass
class FittedModel:
    """A trained network (the EMA weights, in eval mode), its data split and its epoch history."""

    model: torch.nn.Module
    split: Split
    history: list[dict[str, float]]
    device: torch.device
    codes: FaciesCodes

    @property
    def proportions(self) -> np.ndarray:
        """Facies proportions of the training region: the servosystem's target and the checkpoint's."""
        return proportions(self.split.train, len(self.codes))


def draw_settings(cfg: ArdmConfig, fit: FittedModel) -> dict[str, Any]:
    """How train-mode evaluation (and the bench) draws realisations: ``eval.temperature`` and the
    servosystem (``eval.servo``) toward the training proportions; keyword arguments of :func:`sample`."""
    return {"temperature": cfg.eval.temperature, "servo": cfg.eval.servo, "proportions": fit.proportions}


def train_model(cfg: ArdmConfig, ctx: RunContext) -> FittedModel:
    """Load the data, build the UNet and train it with AdamW, EMA and gradient clipping.

    ``val_bpp`` (validation NLL bound, bits per pixel, EMA weights) is reported every epoch through
    ``ctx.report``, which may raise ``optuna.TrialPruned``.
    """
    generator = seed_everything(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = resolve_device(cfg.device)
    ti = load_training_image(cfg.data, cfg.seed)
    image = ti.image
    split = split_image(image, cfg.data.val_fraction, max(cfg.data.patch, cfg.sample_size))
    val = torch.as_tensor(random_patches(split.val, cfg.train.val_patches, cfg.data.patch,
                                         np.random.default_rng(cfg.seed + 1)), device=device)

    model = build_model(cfg).to(device)
    ema = Ema(model, cfg.optim.ema)
    optimizer = make_optimizer("adamw", model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    scheduler = make_scheduler(cfg.optim.schedule, optimizer, cfg.train.epochs * cfg.train.steps_per_epoch)

    def train_epoch(epoch: int) -> float:
        model.train()
        losses = []
        for _ in range(cfg.train.steps_per_epoch):
            batch = random_patches(split.train, cfg.train.batch_size, cfg.data.patch, rng, flips=cfg.data.flips,
                                   rot90=cfg.data.rot90)
            losses.append(train_step(model, optimizer, torch.as_tensor(batch, device=device), generator,
                                     cfg.optim.grad_clip))
            if scheduler is not None:
                scheduler.step()
            ema.update(model)
        return float(np.mean(losses))

    def evaluate(epoch: int) -> dict[str, float]:
        return {"val_bpp": bits_per_pixel(ema.model, val, repeats=cfg.train.val_repeats, seed=cfg.seed + 3,
                                          batch_size=cfg.train.batch_size)}

    history = run_epochs(cfg.train.epochs, train_epoch, evaluate, ctx)
    return FittedModel(model=ema.model.eval(), split=split, history=history, device=device, codes=ti.codes)


def _json_list(values: np.ndarray) -> list[float | None]:
    """Per-class values for JSON: NaN (a class absent from every image) becomes null."""
    return [float(v) if np.isfinite(v) else None for v in values]


class ArdmLearner(Learner):
    """Order-agnostic autoregressive diffusion (OA-ARDM) on categorical training images."""

    name: ClassVar[str] = "ardm"
    metrics: ClassVar[Mapping[str, str]] = {
        "val_bpp": "minimize",
        "variogram_mismatch": "minimize",
        "connectivity_mismatch": "minimize",
        "proportion_error": "minimize",
        "hard_data_honoured": "maximize",
        "sample_seconds": "minimize",
        "sample_pixels_per_second": "maximize",
    }
    config_class = ArdmConfig

    def check_config(self, config: Mapping[str, Any], *, file: str | Path | None = None) -> None:
        cfg: ArdmConfig = self.parse_config(config, file=file)
        if cfg.mode == "simulate":
            check_simulation(cfg)  # the checkpoint, the grid and the wells; no training image needed
            return
        # A missing file, one with too many grey levels or a split too small fails before any storage.
        check_training_image(cfg.data, max(cfg.data.patch, cfg.sample_size))
        if cfg.eval.hard_data is not None:
            HardData.from_list(cfg.eval.hard_data, cfg.sample_size, cfg.data.n_categories)

    def run(self, config: Mapping[str, Any], ctx: RunContext) -> RunResult:
        cfg: ArdmConfig = self.parse_config(config)
        with torch_threads(cfg.threads):
            if cfg.mode == "simulate":
                return run_simulation(cfg, ctx, list(self.metrics))
            return self._run(cfg, ctx)

    def _run(self, cfg: ArdmConfig, ctx: RunContext) -> RunResult:
        size, n_classes = cfg.sample_size, cfg.data.n_categories
        fit = train_model(cfg, ctx)
        device, split, history = fit.device, fit.split, fit.history
        hard, hard_truth = hard_data_for(cfg, split.val, np.random.default_rng(cfg.seed + 2))

        # Sampling: unconditional (timed) and conditional on the hard data.
        ctx.log(f"sampling {cfg.eval.n_samples} realisations of {size}x{size} in {cfg.eval.call_budget} calls")
        draw = draw_settings(cfg, fit)
        sync_device(device)
        start = time.perf_counter()
        uncond = sample(fit.model, cfg.eval.n_samples, size, budget=cfg.eval.call_budget, seed=cfg.seed + 4,
                        batch_size=cfg.eval.batch_size, device=device, **draw)
        sync_device(device)
        seconds = time.perf_counter() - start
        cond = sample(fit.model, cfg.eval.n_conditional, size, budget=cfg.eval.call_budget, hard=hard,
                      seed=cfg.seed + 5, batch_size=cfg.eval.batch_size, device=device, **draw)

        # Evaluation against held-out patches of the training image.
        max_lag = cfg.eval.max_lag or size // 2
        reference = random_patches(split.val, cfg.eval.n_reference, size, np.random.default_rng(cfg.seed + 6))
        ours_stats = image_stats(uncond.images, n_classes, max_lag)
        ref_stats = image_stats(reference, n_classes, max_lag)
        metrics = {
            "val_bpp": history[-1]["val_bpp"],
            **mismatch(ours_stats, ref_stats),
            "hard_data_honoured": hard.honoured(cond.images),
            "sample_seconds": seconds,
            "sample_pixels_per_second": uncond.images.size / seconds,
        }

        workdir = Path(ctx.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        files = {"samples": workdir / "samples.npy", "conditional_samples": workdir / "conditional_samples.npy",
                 "checkpoint": save_checkpoint(workdir / "checkpoint.pt", fit.model, cfg, fit.codes,
                                               fit.proportions)}
        # Category indices (0..K-1), as the statistics use them; mode: simulate writes facies codes.
        np.save(files["samples"], uncond.images.astype(np.uint8))
        np.save(files["conditional_samples"], cond.images.astype(np.uint8))

        shown = {k: metrics[k] for k in ("variogram_mismatch", "connectivity_mismatch", "proportion_error")}
        figures = {
            "samples": plots.samples_grid(uncond.images, n_classes, f"unconditional samples ({uncond.calls} calls)",
                                          reference=reference[0]),
            "conditional_samples": plots.samples_grid(
                cond.images, n_classes, f"conditional on {len(hard)} hard data (red rings)", hard=hard,
                reference=hard_truth),
            "entropy_map": plots.entropy_map(cond.entropy, hard, n_classes),
            "variogram_comparison": plots.statistics_comparison(ours_stats, ref_stats, shown),
        }
        tables = {
            "history": history,
            "calls_per_sample": uncond.calls,
            **{name: {"samples": _json_list(getattr(ours_stats, attr)),
                      "training_image": _json_list(getattr(ref_stats, attr))}
               for name, attr in (("proportions", "proportions"), ("largest_component", "largest"),
                                  ("connected_pairs", "connected_pairs"))},
        }
        return RunResult(metrics={k: float(v) for k, v in metrics.items()}, figures=figures, files=files, tables=tables)
