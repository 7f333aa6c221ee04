"""Training: data (fixed or drawn on the fly), the loop, checkpoints."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from geostudy.errors import DataError
from geostudy.learners.base import RunContext
from geostudy.learners.mogi.config import MogiConfig
from geostudy.learners.mogi.data import Simulator
from geostudy.learners.mogi.evaluate import Predictor, target_metrics
from geostudy.learners.mogi.model import TargetTransform, build_model, in_channels, map_features
from geostudy.nn.device import resolve_device
from geostudy.nn.training import make_optimizer, make_scheduler, run_epochs, seed_everything

CHECKPOINT_FORMAT = 2  # 2: + learner name and the validation residual quantiles (network intervals)
READABLE_FORMATS = (1, 2)
QUANTILE_LEVELS = np.linspace(0.0, 1.0, 201)  # of the validation residuals stored in a checkpoint
AMPLITUDE_BINS = 4  # ... per quarter of the validation maps' log RMS


def _uses_mask(sim: Simulator) -> bool:
    return sim.cfg.noise.holes_fraction > 0


def train_model(cfg: MogiConfig, sim: Simulator, ctx: RunContext) -> tuple[Predictor, dict[str, Any]]:
    """Train a network on maps from ``sim``; report validation metrics every epoch.

    Returns:
        The predictor and a dict with the validation set (``values``, ``maps``), the training
        history and ``train_seconds``.
    """
    generator = seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    tc, targets = cfg.train, cfg.model.targets
    rng_val = np.random.default_rng([cfg.seed, 1])
    rng_train = np.random.default_rng([cfg.seed, 2])
    wrapped, mask = sim.wrapped, _uses_mask(sim)

    # Transforms from the spec: target mean/std from a large draw, log-RMS statistics from a training batch.
    transform = TargetTransform.fit(targets, sim.spec.sample(np.random.default_rng([cfg.seed, 3]), 20000))
    _, probe = sim.draw(np.random.default_rng([cfg.seed, 4]), min(1024, tc.n_train))
    s = map_features(probe, wrapped, mask)[1]
    scalar_mean, scalar_std = float(s.mean()), float(max(s.std(), 1e-6))

    model = build_model(cfg.model, in_channels(wrapped, mask), cfg.data.grid.n).to(device)
    predictor = Predictor(model, transform, scalar_mean, scalar_std, wrapped, mask, device)
    val_values, val_maps = sim.draw(rng_val, tc.n_val)
    val_y = transform.encode(val_values)
    optimizer = make_optimizer(cfg.optim.name, model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    steps_per_epoch = math.ceil(tc.n_train / tc.batch_size)
    scheduler = make_scheduler(cfg.optim.schedule, optimizer, tc.epochs * steps_per_epoch)
    loss_fn: nn.Module = nn.MSELoss() if tc.loss == "mse" else nn.L1Loss()

    def dataset() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        values, maps = sim.draw(rng_train, tc.n_train)
        x, s = predictor.inputs(maps)
        return x, s, torch.from_numpy(transform.encode(values))

    fixed = dataset() if tc.data == "fixed" else None

    def train_epoch(epoch: int) -> float:
        x, s, y = fixed if fixed is not None else dataset()
        model.train()
        order = torch.randperm(len(y), generator=generator)
        total, count = 0.0, 0
        for start in range(0, len(y), tc.batch_size):
            idx = order[start:start + tc.batch_size]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            pred = model(x[idx].to(device), s[idx].to(device))
            loss = loss_fn(pred, y[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        return total / max(count, 1)

    def evaluate(epoch: int) -> dict[str, float]:
        z = predictor.standardised(val_maps)
        val_loss = float(loss_fn(torch.from_numpy(z), torch.from_numpy(val_y)))
        zt = transform.decode_transformed(z)
        pred = {v: TargetTransform.physical(v, zt[:, i]) for i, v in enumerate(targets)}
        return {"val_loss": val_loss, **target_metrics(targets, pred, val_values, "val_")}

    start = time.perf_counter()
    history = run_epochs(tc.epochs, train_epoch, evaluate, ctx)
    predictor.freeze()
    # Residuals (truth - estimate, in the network's units) on the validation maps: the network's intervals,
    # per quarter of the maps' amplitude (the log-RMS input), since a weak pattern is harder to invert.
    zt = transform.decode_transformed(predictor.standardised(val_maps))
    amplitude = map_features(val_maps, wrapped, mask)[1][:, 0]
    edges = np.quantile(amplitude, np.linspace(0.0, 1.0, AMPLITUDE_BINS + 1)[1:-1])
    which = np.searchsorted(edges, amplitude)
    predictor.residual_edges = edges.tolist()
    predictor.residual_quantiles = {}
    for i, v in enumerate(targets):
        res = transform.transformed(v, val_values[v]) - zt[:, i]
        predictor.residual_quantiles[v] = [
            np.quantile(res[which == b] if (which == b).sum() >= 20 else res, QUANTILE_LEVELS).tolist()
            for b in range(AMPLITUDE_BINS)]
    return predictor, {"val_values": val_values, "val_maps": val_maps, "history": history,
                       "train_seconds": time.perf_counter() - start}


def save_checkpoint(path: Path, predictor: Predictor, config: Mapping[str, Any]) -> Path:
    """A state dict plus everything needed to rebuild the predictor; loads with ``weights_only=True``."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "learner": "mogi",
        "residual_quantiles": predictor.residual_quantiles,
        "residual_edges": predictor.residual_edges,
        "state_dict": {k: v.detach().cpu() for k, v in predictor.model.state_dict().items()},
        "config": dict(config),
        "transform": predictor.transform.state(),
        "scalar": [predictor.scalar_mean, predictor.scalar_std],
    }
    torch.save(state, path)
    return path


def load_checkpoint(path: str | Path, *, device: str = "auto", key: str = "matrix.checkpoint") -> tuple[dict[str, Any], Predictor, Simulator]:
    """Rebuild ``(config, predictor, simulator)`` from :func:`save_checkpoint`'s file."""
    from geostudy.learners.mogi.config import parse_config

    path = Path(path)
    if not path.is_file():
        raise DataError("checkpoint not found; train with run.py (a final run saves mogi_model.pt in its folder)",
                        file=path, key=key)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (any unreadable file is the user's to fix)
        raise DataError(f"not a readable mogi checkpoint ({type(err).__name__})", file=path, key=key) from None
    learner = state.get("config", {}).get("learner") if isinstance(state, dict) and isinstance(state.get("config"), dict) else None
    if not isinstance(state, dict) or learner != "mogi" or state.get("learner", "mogi") != "mogi":
        raise DataError(f"not a mogi checkpoint (its learner: {learner or 'unknown'}); train one with "
                        "run.py --config configs/mogi.yaml", file=path, key=key)
    if state.get("format") not in READABLE_FORMATS:
        raise DataError(f"a mogi checkpoint of format {state.get('format')!r} (another model version); this version "
                        f"reads formats {', '.join(map(str, READABLE_FORMATS))}: retrain", file=path, key=key)
    config = state["config"]
    cfg = parse_config(config, file=path)
    sim = Simulator(cfg.data, file=path)
    mask = _uses_mask(sim)
    model = build_model(cfg.model, in_channels(sim.wrapped, mask), cfg.data.grid.n)
    model.load_state_dict(state["state_dict"])
    t = state["transform"]
    transform = TargetTransform(t["targets"], t["mean"], t["std"])
    torch_device = resolve_device(device)
    predictor = Predictor(model.to(torch_device), transform, float(state["scalar"][0]), float(state["scalar"][1]),
                          sim.wrapped, mask, torch_device).freeze()
    predictor.residual_quantiles = state.get("residual_quantiles")
    predictor.residual_edges = state.get("residual_edges") or []
    return config, predictor, sim
