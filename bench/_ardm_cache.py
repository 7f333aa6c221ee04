"""Trained ARDM networks of the bench, cached under ``out/bench/cache/`` by a hash of their config.

Training is the slow part of the ARDM bench on a CPU; sampling and the statistics are what a re-run
measures again. A cached network is the checkpoint the learner writes plus its epoch history.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
from pathlib import Path

from geostudy.learners.ardm.checkpoint import load_checkpoint, save_checkpoint
from geostudy.learners.ardm.config import ArdmConfig
from geostudy.learners.ardm.data import load_training_image, split_image
from geostudy.learners.ardm.learner import FittedModel, train_model
from geostudy.learners.base import REPO_ROOT, RunContext
from geostudy.nn import resolve_device

CACHE_DIR = REPO_ROOT / "out" / "bench" / "cache"


def _key(cfg: ArdmConfig) -> str:
    """What decides the trained weights: everything but the evaluation settings."""
    shown = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("eval", "simulate", "mode", "threads")}
    return hashlib.sha1(json.dumps(shown, sort_keys=True, default=str).encode()).hexdigest()[:12]


def cached_fit(cfg: ArdmConfig, tag: str) -> FittedModel:
    """Train ``cfg`` once (progress on stderr) and reuse the weights on later runs."""
    path = CACHE_DIR / f"ardm_{tag}_{_key(cfg)}.pt"
    history_path = path.with_suffix(".json")
    if path.is_file() and history_path.is_file():
        device = resolve_device(cfg.device)
        ckpt = load_checkpoint(path, device)
        ti = load_training_image(cfg.data, cfg.seed)
        split = split_image(ti.image, cfg.data.val_fraction, max(cfg.data.patch, cfg.sample_size))
        print(f"ardm bench: reusing the network trained earlier ({path})", flush=True)
        return FittedModel(model=ckpt.model, split=split, history=json.loads(history_path.read_text()),
                           device=device, codes=ti.codes)
    with tempfile.TemporaryDirectory() as tmp:
        fit = train_model(cfg, RunContext(workdir=Path(tmp), verbose=True))
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, fit.model, cfg, fit.codes, fit.proportions)
    history_path.write_text(json.dumps(fit.history))
    return fit
