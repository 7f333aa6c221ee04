"""ARDM bench: trains a small OA-ARDM, then measures

- ``sample_pixels_per_second``: our sampler at the default call budget vs one network call per pixel
  (exact ancestral sampling), same model, same batch;
- ``variogram_mismatch``: our samples vs a baseline that tiles random patches of the training region,
  both against held-out patches of the training image (lower is better);
- ``hard_data_honoured``: share of hard data reproduced by our conditional samples (must be 1.0) vs the
  tiling baseline, which ignores them.

Uses ``../shared/data/channels_ti.png`` when present (downsampled), else the procedural channel image.

Then, on the procedural three-facies image (channels and lenses; ``bench/_ardm_3f.py``): conditional
realisations vs tiling random patches and vs sequential indicator simulation (SIS) with variograms
fitted to the training image (``*_3f`` rows), the time of one 256x256 conditional realisation, and the
statistics of realisations on grids larger than the training patch (``*_grid128``, ``*_grid256``).

Row groups (``--rows``): ``channels``, ``3f``, ``3f_grids``. Trained networks are cached under
``out/bench/cache/`` (keyed by their training config), so a re-run only samples.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from bench._ardm_cache import cached_fit
from geostudy.config import apply_overrides, load_yaml
from geostudy.learners.ardm.config import ArdmConfig
from geostudy.learners.ardm.data import HardData, random_patches, resolve_path
from geostudy.learners.ardm.evaluate import image_stats, mismatch
from geostudy.learners.ardm.learner import ArdmLearner, draw_settings
from geostudy.learners.ardm.sampling import sample
from geostudy.learners.base import CONFIG_DIR
from geostudy.nn.device import sync_device
from geostudy.nn.threads import torch_threads

SHARED_TI = resolve_path("../shared/data/channels_ti.png")  # benches may read ../shared; products never

SIZES = {
    # quick: a 32x32 model trained for a few minutes on a CPU; full: the default config's model.
    True: {"threads": 1, "data.patch": 32, "model.base_width": 16, "model.depth": 1, "train.epochs": 4,
           "train.steps_per_epoch": 50, "train.batch_size": 16, "train.val_patches": 16, "train.val_repeats": 2},
    False: {"data.patch": 64, "train.epochs": 20, "train.steps_per_epoch": 200},
}


def bench_config(quick: bool) -> ArdmConfig:
    base = load_yaml(CONFIG_DIR / "ardm.yaml")
    overrides = dict(SIZES[quick])
    overrides.update({"data.n_categories": 2, "data.generator.kind": "channels"})  # two facies, as before
    if SHARED_TI.is_file():
        overrides.update({"data.source": "file", "data.path": str(SHARED_TI), "data.downsample": 4 if quick else 2,
                          "data.rot90": False})
    else:
        overrides.update({"data.source": "procedural", "data.downsample": 1, "data.rot90": True,
                          "data.generator.size": 256})
    return ArdmLearner().parse_config(apply_overrides(base, overrides))


def tiling_baseline(region: np.ndarray, n: int, size: int, tile: int, rng: np.random.Generator, *,
                    flips: bool = False, rot90: bool = False) -> np.ndarray:
    """``n`` images of ``size x size`` pieced together from random ``tile x tile`` patches of ``region``
    (optionally flipped and rotated, as :func:`random_patches`)."""
    per_side = -(-size // tile)
    out = np.empty((n, per_side * tile, per_side * tile), dtype=np.int64)
    for i in range(n):
        tiles = random_patches(region, per_side * per_side, tile, rng, flips=flips, rot90=rot90)
        out[i] = tiles.reshape(per_side, per_side, tile, tile).transpose(0, 2, 1, 3).reshape(per_side * tile, -1)
    return out[:, :size, :size]


def _timed_sample(model, n: int, size: int, budget: int, cfg: ArdmConfig, device: torch.device) -> tuple[float, int]:
    sync_device(device)
    start = time.perf_counter()
    out = sample(model, n, size, budget=budget, seed=cfg.seed, batch_size=n, device=device)
    sync_device(device)
    return out.images.size / (time.perf_counter() - start), out.calls


ROW_GROUPS = ("channels", "3f", "3f_grids")


def run(quick: bool, rows: str | None = None) -> list[dict]:
    """All rows, or one group of them: ``channels`` (two facies), ``3f`` (three-facies statistics against
    the generator's draws), ``3f_grids`` (256x256 timing, statistics on larger grids)."""
    from bench._ardm_3f import run_3f

    if rows is not None and rows not in ROW_GROUPS:
        raise SystemExit(f"error: unknown row group {rows!r} of bench ardm; allowed: {', '.join(ROW_GROUPS)}")
    out = []
    if rows in (None, "channels"):
        cfg = bench_config(quick)
        with torch_threads(cfg.threads):
            out += _run(cfg)
    if rows in (None, "3f", "3f_grids"):
        out += run_3f(quick, stats=rows != "3f_grids", grids=rows != "3f")
    return out


def _run(cfg: ArdmConfig) -> list[dict]:
    size, k = cfg.sample_size, cfg.data.n_categories
    fit = cached_fit(cfg, "channels")
    model, device, split = fit.model, fit.device, fit.split
    rng = np.random.default_rng(cfg.seed + 10)

    # Sampling speed: the default budget vs one call per pixel, same batch.
    n_speed = 8
    ours_pps, ours_calls = _timed_sample(model, n_speed, size, cfg.eval.call_budget, cfg, device)
    base_pps, base_calls = _timed_sample(model, n_speed, size, size * size, cfg, device)

    # Two-point statistics: our samples vs tiled training patches, both against held-out patches.
    n_eval, max_lag = 32, size // 2
    settings = draw_settings(cfg, fit)  # eval.temperature and the servosystem, as train-mode evaluation draws
    ours = sample(model, n_eval, size, budget=cfg.eval.call_budget, seed=cfg.seed + 1,
                  batch_size=cfg.eval.batch_size, device=device, **settings).images
    tiled = tiling_baseline(split.train, n_eval, size, size // 2, rng)
    reference = random_patches(split.val, cfg.eval.n_reference, size, rng)
    ref_stats = image_stats(reference, k, max_lag)
    ours_mm = mismatch(image_stats(ours, k, max_lag), ref_stats)["variogram_mismatch"]
    tiled_mm = mismatch(image_stats(tiled, k, max_lag), ref_stats)["variogram_mismatch"]

    # Hard data: 20 pixels of a held-out patch.
    hard = HardData.draw(random_patches(split.val, 1, size, rng)[0], cfg.eval.n_hard, rng)
    cond = sample(model, cfg.eval.n_conditional, size, budget=cfg.eval.call_budget, hard=hard, seed=cfg.seed + 2,
                  batch_size=cfg.eval.batch_size, device=device, **settings).images

    data = "channels_ti.png" if cfg.data.source == "file" else "procedural channels"
    where = f"{size}x{size} {data}, val_bpp {fit.history[-1]['val_bpp']:.3f}"
    return [
        {"work": "sample_pixels_per_second", "unit": "pixels/s", "ours": ours_pps, "baseline": base_pps,
         "baseline_name": f"one call per pixel ({base_calls} calls vs our {ours_calls}; {where})",
         "lower_is_better": False},
        {"work": "variogram_mismatch", "unit": "relative L1", "ours": ours_mm, "baseline": tiled_mm,
         "baseline_name": f"tiling random {size // 2}x{size // 2} training patches", "lower_is_better": True},
        {"work": "hard_data_honoured", "unit": "fraction", "ours": hard.honoured(cond),
         "baseline": hard.honoured(tiled), "baseline_name": f"tiling baseline, {len(hard)} hard data",
         "lower_is_better": False, "goal": "ours = 1.0"},
    ]
