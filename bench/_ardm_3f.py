"""ARDM bench rows on the procedural three-facies image (background, channels, lenses).

- ``variogram_mismatch_3f`` / ``connectivity_mismatch_3f``: conditional realisations (32 sets of
  wells, 20 each, drawn from held-out patches) against held-out patches of the training image; ours
  vs tiling random training patches, and (``*_sis`` rows) ours vs sequential indicator simulation
  with indicator variograms fitted to the training image. Goal: ours below both, wells honoured 100 %.
- ``*_3f_floor``: ours vs the noise floor, as many other held-out patches of the training image
  measured the same way (no generator can beat it on average; it says how much of a gap is noise).
- ``connectivity_mismatch_3f_train_patches``: ours vs real training patches (no wells): what a perfect
  model of the training rows would score against the held-out reference.
- ``hard_data_honoured_3f``: ours vs SIS (both must be 1.0).
- ``sample_seconds_256``: one 256x256 realisation conditioned on 100 wells, ours vs SIS.
- ``variogram_mismatch_3f_grid128`` / ``_grid256``: patch-sized crops of realisations on grids larger
  than the training patch vs ours at the patch size (the limits of applying the UNet to larger grids).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from bench._ardm_cache import cached_fit
from geostudy.config import apply_overrides, load_yaml
from geostudy.learners.ardm.config import ArdmConfig
from geostudy.learners.ardm.data import HardData, procedural_image, random_patches
from geostudy.learners.ardm.evaluate import image_stats, mismatch
from geostudy.learners.ardm.learner import ArdmLearner
from geostudy.learners.ardm.sampling import sample
from geostudy.learners.ardm.sis import sis_realisations
from geostudy.learners.base import CONFIG_DIR
from geostudy.nn.device import sync_device
from geostudy.nn.threads import torch_threads

# eval.temperature stays at the config's 1.0. 0.8 was better on other wells/seeds of the held-out rows
# (variogram 0.255 -> 0.103, connectivity 0.120 -> 0.104), but on the scoring draws below it lowered the
# connectivity mismatch (0.111 -> 0.085) and raised the variogram mismatch (0.112 -> 0.286): the two
# draws disagree by more than the effect, so the gain is not established.
SIZES_3F = {
    # quick: 32x32 patches, a few minutes of training on a CPU; full: longer training, more realisations.
    True: {"threads": 1, "data.patch": 32, "data.generator.size": 320, "model.base_width": 16, "model.depth": 1,
           "train.epochs": 4, "train.steps_per_epoch": 50, "train.batch_size": 16, "train.val_patches": 16,
           "train.val_repeats": 2, "eval.call_budget": 64},
    False: {"threads": 1, "data.patch": 32, "data.generator.size": 384, "model.base_width": 16, "model.depth": 2,
            "train.epochs": 10, "train.steps_per_epoch": 100, "train.batch_size": 16, "train.val_patches": 32,
            "train.val_repeats": 2, "eval.call_budget": 128},
}
N_SETS, N_WELLS = 32, 20  # one set of wells per pair of realisations, so that the truths average out


def config_3f(quick: bool) -> ArdmConfig:
    base = load_yaml(CONFIG_DIR / "ardm.yaml")  # the default: procedural, mixed, three facies
    return ArdmLearner().parse_config(apply_overrides(base, {"device": "cpu", **SIZES_3F[quick]}))


def _crops(images: np.ndarray, size: int) -> np.ndarray:
    """Non-overlapping ``size x size`` crops of every image."""
    n, h, w = images.shape
    return images[:, : h - h % size, : w - w % size].reshape(n, h // size, size, w // size, size) \
        .transpose(0, 1, 3, 2, 4).reshape(-1, size, size)


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def run_3f(quick: bool) -> list[dict]:
    cfg = config_3f(quick)
    with torch_threads(cfg.threads):
        return _run_3f(cfg, quick)


def _run_3f(cfg: ArdmConfig, quick: bool) -> list[dict]:
    from bench.ardm import tiling_baseline  # the baseline of the two-facies rows, the same here

    size, k, budget, temp = cfg.data.patch, cfg.data.n_categories, cfg.eval.call_budget, cfg.eval.temperature
    fit = cached_fit(cfg, "3f")
    model, device, split = fit.model, fit.device, fit.split
    rng = np.random.default_rng(cfg.seed + 20)
    n_per = 2
    max_lag = size // 2

    # Conditional realisations, four sets of wells; SIS with variograms fitted to the training region.
    ours, sis_imgs, tiled, honoured_ours, honoured_sis = [], [], [], [], []
    for g in range(N_SETS):
        hard = HardData.draw(random_patches(split.val, 1, size, rng)[0], N_WELLS, rng)
        o = sample(model, n_per, size, budget=budget, hard=hard, seed=cfg.seed + 30 + g, batch_size=n_per,
                   device=device, temperature=temp).images
        s_, _ = sis_realisations(n_per, (size, size), split.train, k, hard=hard, max_lag=max_lag, seed=cfg.seed + g)
        ours.append(o)
        sis_imgs.append(s_)
        tiled.append(tiling_baseline(split.train, n_per, size, size // 2, rng))
        honoured_ours.append(hard.honoured(o))
        honoured_sis.append(hard.honoured(s_))
    reference = random_patches(split.val, 64, size, rng)
    ref = image_stats(reference, k, max_lag)
    # The noise floor: as many other held-out patches as we have realisations, against the same reference.
    floor = mismatch(image_stats(random_patches(split.val, N_SETS * n_per, size, rng), k, max_lag), ref)
    # What a perfect model of the training region would score: real training patches, unconditioned.
    # The held-out rows are a narrow strip whose patches overlap the reference's, so the floor above
    # is optimistic for anything that learned from the training rows.
    train_patches = random_patches(split.train, N_SETS * n_per, size, np.random.default_rng(cfg.seed + 21))
    mm = {name: mismatch(image_stats(np.concatenate(imgs), k, max_lag), ref)
          for name, imgs in (("ours", ours), ("sis", sis_imgs), ("tiled", tiled), ("train", [train_patches]))}

    # One 256x256 realisation conditioned on 100 wells of an unseen procedural image.
    big = 256
    truth = procedural_image(dataclasses.replace(cfg.data.generator, size=big), k, cfg.seed + 99)
    wells = HardData.draw(truth, 100, rng)
    big_budget = 32 if quick else 128
    sync_device(device)
    big_ours, t_ours = _timed(lambda: sample(model, 1, big, budget=big_budget, hard=wells, seed=cfg.seed + 40,
                                             batch_size=1, device=device, temperature=temp).images)
    sync_device(device)
    (big_sis, _), t_sis = _timed(lambda: sis_realisations(1, (big, big), split.train, k, hard=wells,
                                                         max_lag=max_lag, seed=cfg.seed + 41))

    # Larger grids: patch-sized crops of 128x128 realisations and of the 256x256 one.
    n128 = 1 if quick else 2
    grid128 = sample(model, n128, 128, budget=big_budget, seed=cfg.seed + 50, batch_size=n128, device=device,
                     temperature=temp).images
    mm128 = mismatch(image_stats(_crops(grid128, size), k, max_lag), ref)
    mm256 = mismatch(image_stats(_crops(big_ours, size), k, max_lag), ref)

    where = (f"3 facies, {size}x{size} patches, {N_SETS}x{n_per} conditional realisations on {N_SETS} sets of "
             f"{N_WELLS} wells, {budget} calls at temperature {temp:g}, val_bpp {fit.history[-1]['val_bpp']:.3f}")
    honoured = float(np.mean(honoured_ours))
    rows = []
    for stat in ("variogram_mismatch", "connectivity_mismatch"):
        rows.append({"work": f"{stat}_3f", "unit": "relative L1" if stat.startswith("vario") else "mean |diff|",
                     "ours": mm["ours"][stat], "baseline": mm["tiled"][stat],
                     "baseline_name": f"tiling random {size // 2}x{size // 2} training patches ({where})",
                     "lower_is_better": True, "goal": "ours < both baselines, wells honoured 100%"})
        rows.append({"work": f"{stat}_3f_sis", "unit": rows[-1]["unit"], "ours": mm["ours"][stat],
                     "baseline": mm["sis"][stat],
                     "baseline_name": "SIS, indicator variograms fitted to the training image (16 neighbours)",
                     "lower_is_better": True, "goal": "ours < both baselines, wells honoured 100%"})
    rows += [
        {"work": "variogram_mismatch_3f_floor", "unit": "relative L1", "ours": mm["ours"]["variogram_mismatch"],
         "baseline": floor["variogram_mismatch"],
         "baseline_name": f"noise floor: {N_SETS * n_per} other held-out patches of the training image",
         "lower_is_better": True},
        {"work": "connectivity_mismatch_3f_floor", "unit": "mean |diff|", "ours": mm["ours"]["connectivity_mismatch"],
         "baseline": floor["connectivity_mismatch"],
         "baseline_name": f"noise floor: {N_SETS * n_per} other held-out patches of the training image",
         "lower_is_better": True},
        {"work": "connectivity_mismatch_3f_train_patches", "unit": "mean |diff|",
         "ours": mm["ours"]["connectivity_mismatch"], "baseline": mm["train"]["connectivity_mismatch"],
         "baseline_name": f"{N_SETS * n_per} random training patches (a perfect model of the training rows, no wells)",
         "lower_is_better": True},
        {"work": "proportion_error_3f_sis", "unit": "max |diff|", "ours": mm["ours"]["proportion_error"],
         "baseline": mm["sis"]["proportion_error"], "baseline_name": "SIS", "lower_is_better": True},
        {"work": "hard_data_honoured_3f", "unit": "fraction", "ours": honoured, "baseline": float(np.mean(honoured_sis)),
         "baseline_name": "SIS", "lower_is_better": False, "goal": "ours = 1.0"},
        {"work": "sample_seconds_256", "unit": "s", "ours": t_ours, "baseline": t_sis,
         "baseline_name": f"SIS, one 256x256 realisation, 100 wells (ours: {big_budget} calls, CPU, 1 thread; "
                          f"wells honoured ours {wells.honoured(big_ours):.3f}, SIS {wells.honoured(big_sis):.3f})",
         "lower_is_better": True},
        {"work": "variogram_mismatch_3f_grid128", "unit": "relative L1", "ours": mm128["variogram_mismatch"],
         "baseline": mm["ours"]["variogram_mismatch"],
         "baseline_name": f"ours at the {size}x{size} patch size ({size}x{size} crops of {n128} unconditional 128x128)",
         "lower_is_better": True},
        {"work": "variogram_mismatch_3f_grid256", "unit": "relative L1", "ours": mm256["variogram_mismatch"],
         "baseline": mm["ours"]["variogram_mismatch"],
         "baseline_name": f"ours at the {size}x{size} patch size ({size}x{size} crops of the 256x256 conditional one)",
         "lower_is_better": True},
        {"work": "proportion_error_3f_grid256", "unit": "max |diff|", "ours": mm256["proportion_error"],
         "baseline": mm["ours"]["proportion_error"], "baseline_name": f"ours at the {size}x{size} patch size",
         "lower_is_better": True},
    ]
    return rows
