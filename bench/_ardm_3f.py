"""ARDM bench rows on the procedural three-facies image (background, channels, lenses).

The measurement is built so that its noise is smaller than the differences it judges:

- **References**: the training image is one draw of the procedural generator, so the main reference
  is ``groups`` *other* draws of it (fresh seeds, each image cut into non-overlapping patches): a
  large, independent held-out set. The ``*_heldout`` rows use the training image's own held-out
  bottom rows instead (one strip; only the realisation noise varies between groups there).
- **Realisations**: every method draws the same number of patch-sized realisations in every group
  (conditional ones on ``sets`` sets of 20 wells from the held-out rows, ``per_set`` each); every
  method is compared with the same references.
- **Errors**: the mismatch of the pooled realisations with the pooled references, its delete-one-group
  jackknife standard error, and the paired difference ours - baseline with its error and the number
  of groups where ours is lower (``bench/_ardm_compare.py``; printed beside the ratio).

Rows: ``variogram_mismatch_3f`` / ``connectivity_mismatch_3f``: ours vs tiling random training patches,
and (``*_sis``) vs sequential indicator simulation with indicator variograms fitted to the training
image; goal: ours below both, wells honoured 100 %. ``*_tiling_aug``: vs tiling patches flipped and
rotated as the network's training patches are. ``*_floor``: vs patches of further generator draws (a
perfect model of the generator, as many images: the noise floor). ``*_train_patches``: vs training
patches (augmented as in training: a perfect model of what the network saw). ``hard_data_honoured_3f``,
``sample_seconds_256`` (one 256x256 realisation on 100 wells, ours vs SIS), ``*_grid128`` / ``*_grid256``
(patch-sized crops of realisations on grids larger than the patch; row group ``3f_grids``),
``*_grid128_window`` (attention within patch-sized windows vs over the whole grid, the same draws) and
``network_call_seconds_256`` (one call on 256x256, windows vs whole grid).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from bench._ardm_cache import cached_fit
from bench._ardm_compare import Comparison, compare
from geostudy.config import apply_overrides, load_yaml
from geostudy.learners.ardm.config import ArdmConfig
from geostudy.learners.ardm.data import HardData, procedural_image, random_patches
from geostudy.learners.ardm.evaluate import ImageStats, image_stats, mismatch
from geostudy.learners.ardm.learner import ArdmLearner, FittedModel, draw_settings
from geostudy.learners.ardm.sampling import sample
from geostudy.learners.ardm.sis import sis_realisations
from geostudy.learners.base import CONFIG_DIR
from geostudy.nn.device import sync_device
from geostudy.nn.threads import torch_threads

# Training sizes: these (and only these, with the default config) decide the cached network.
# eval.temperature and eval.servo stay at the config's 0.9 and 0.25 (README: ARDM, sampling temperature,
# servosystem).
SIZES_3F = {
    # quick: 32x32 patches, a few minutes of training on a CPU; full: a deeper UNet, 5x the steps.
    True: {"threads": 1, "data.patch": 32, "data.generator.size": 320, "model.base_width": 16, "model.depth": 1,
           "train.epochs": 4, "train.steps_per_epoch": 50, "train.batch_size": 16, "train.val_patches": 16,
           "train.val_repeats": 2, "eval.call_budget": 64},
    False: {"threads": 1, "data.patch": 32, "data.generator.size": 384, "model.base_width": 16, "model.depth": 2,
            "train.epochs": 20, "train.steps_per_epoch": 100, "train.batch_size": 16, "train.val_patches": 32,
            "train.val_repeats": 2, "optim.schedule": "cosine", "eval.call_budget": 256},
}
# Evaluation sizes (not part of the network's cache key): reference groups, well sets per group,
# realisations per well set, and the budget / count of the larger grids.
EVAL_3F = {
    True: {"groups": 8, "sets": 4, "per_set": 2, "big_budget": 32, "n128": 1},
    # full: 512 realisations per method (a mismatch difference of 0.03 is then about 2-3 standard errors)
    False: {"groups": 32, "sets": 4, "per_set": 4, "big_budget": 128, "n128": 4},
}
N_WELLS = 20
REF_SEED, FLOOR_SEED = 1000, 2000  # generator seeds (offsets) of the references and of the floor's images


def config_3f(quick: bool) -> ArdmConfig:
    base = load_yaml(CONFIG_DIR / "ardm.yaml")  # the default: procedural, mixed, three facies
    return ArdmLearner().parse_config(apply_overrides(base, {"device": "cpu", **SIZES_3F[quick]}))


def crops(images: np.ndarray, size: int) -> np.ndarray:
    """Non-overlapping ``size x size`` crops of every image."""
    n, h, w = images.shape
    return images[:, : h - h % size, : w - w % size].reshape(n, h // size, size, w // size, size) \
        .transpose(0, 1, 3, 2, 4).reshape(-1, size, size)


def generator_images(cfg: ArdmConfig, groups: int, offset: int) -> list[np.ndarray]:
    """Per group, a fresh draw of the training image's generator (seeds other than the training image's)."""
    return [procedural_image(cfg.data.generator, cfg.data.n_categories, cfg.seed + offset + g) for g in range(groups)]


def heldout_reference(region: np.ndarray, size: int, stride: int) -> np.ndarray:
    """All ``size x size`` crops of ``region`` on a ``stride`` lattice."""
    return np.stack([region[r: r + size, c: c + size] for r in range(0, region.shape[0] - size + 1, stride)
                     for c in range(0, region.shape[1] - size + 1, stride)])


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def run_3f(quick: bool, grids: bool = True, stats: bool = True) -> list[dict]:
    cfg = config_3f(quick)
    with torch_threads(cfg.threads):
        fit = cached_fit(cfg, "3f")
        refs = [image_stats(crops(img[None], cfg.data.patch), cfg.data.n_categories, cfg.data.patch // 2)
                for img in generator_images(cfg, EVAL_3F[quick]["groups"], REF_SEED)]
        rows = _stat_rows(cfg, fit, refs, EVAL_3F[quick]) if stats else []
        return rows + (_grid_rows(cfg, fit, refs, EVAL_3F[quick]) if grids else [])


def _call_seconds(model, side: int, device, repeats: int = 3) -> float:
    """Median seconds of one network call on a ``side x side`` grid, half revealed."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, model.n_classes, (1, side, side), generator=g).to(device)
    mask = (torch.rand(1, side, side, generator=g) < 0.5).to(device)

    def call() -> None:
        model(x, mask)
        sync_device(device)

    with torch.inference_mode():
        sync_device(device)
        times = [_timed(call)[1] for _ in range(repeats)]
    return float(np.median(times))


def realisations(cfg: ArdmConfig, fit: FittedModel, sizes: dict, *, sis: bool = True, budget: int | None = None,
                 seed_offset: int = 0, **settings) -> dict[str, list[np.ndarray]]:
    """Per group: ours, SIS (optional), tiling, augmented tiling and augmented training patches, the same
    number of each; ours and SIS conditioned on the same well sets. Also ``honoured_*`` fractions."""
    from bench.ardm import tiling_baseline  # the baseline of the two-facies rows, the same here

    size, k = cfg.data.patch, cfg.data.n_categories
    budget = cfg.eval.call_budget if budget is None else budget
    settings = {**draw_settings(cfg, fit), **settings}  # e.g. servo=0 to compare with the plain network
    split = fit.split
    rng = np.random.default_rng(cfg.seed + 20 + seed_offset)
    n = sizes["sets"] * sizes["per_set"]
    out: dict[str, list] = {m: [] for m in ("ours", "sis", "tiled", "tiled_aug", "train", "honoured_ours",
                                            "honoured_sis")}
    aug = {"flips": cfg.data.flips, "rot90": cfg.data.rot90}
    for g in range(sizes["groups"]):
        ours, sis_ = [], []
        for s in range(sizes["sets"]):
            hard = HardData.draw(random_patches(split.val, 1, size, rng)[0], N_WELLS, rng)
            seed = cfg.seed + seed_offset + 1000 * g + s
            o = sample(fit.model, sizes["per_set"], size, budget=budget, hard=hard, seed=seed,
                       batch_size=sizes["per_set"], device=fit.device, **settings).images
            ours.append(o)
            out["honoured_ours"].append(hard.honoured(o))
            if sis:
                x, _ = sis_realisations(sizes["per_set"], (size, size), split.train, k, hard=hard, max_lag=size // 2,
                                        seed=seed)
                sis_.append(x)
                out["honoured_sis"].append(hard.honoured(x))
        out["ours"].append(np.concatenate(ours))
        if sis:
            out["sis"].append(np.concatenate(sis_))
        out["tiled"].append(tiling_baseline(split.train, n, size, size // 2, rng))
        out["tiled_aug"].append(tiling_baseline(split.train, n, size, size // 2, rng, **aug))
        out["train"].append(random_patches(split.train, n, size, rng, **aug))
    return out


def _stat_rows(cfg: ArdmConfig, fit: FittedModel, refs: list[ImageStats], sizes: dict) -> list[dict]:
    size, k = cfg.data.patch, cfg.data.n_categories
    max_lag = size // 2
    imgs = realisations(cfg, fit, sizes)
    n = sizes["sets"] * sizes["per_set"]
    floor_imgs = [random_patches(r, n, size, np.random.default_rng(cfg.seed + FLOOR_SEED + g))
                  for g, r in enumerate(generator_images(cfg, sizes["groups"], FLOOR_SEED))]
    methods = {m: [image_stats(x, k, max_lag) for x in imgs[m]] for m in ("ours", "sis", "tiled", "tiled_aug", "train")}
    methods["floor"] = [image_stats(x, k, max_lag) for x in floor_imgs]
    gen = compare(methods, refs)
    strip = image_stats(heldout_reference(fit.split.val, size, 8), k, max_lag)
    held = compare({m: methods[m] for m in ("ours", "sis", "tiled")}, [strip] * len(refs))

    n_refs = sum(len(r) for r in refs)
    where = (f"{sizes['groups']} groups x {n} realisations of {size}x{size} per method ({sizes['sets']} sets of "
             f"{N_WELLS} wells each), vs {n_refs} patches of {sizes['groups']} other draws of the generator; "
             f"{cfg.eval.call_budget} calls, T {cfg.eval.temperature:g}, servo {cfg.eval.servo:g}, "
             f"val_bpp {fit.history[-1]['val_bpp']:.3f}")
    goal = "ours < both baselines, wells honoured 100%"
    units = {"variogram_mismatch": "relative L1", "connectivity_mismatch": "mean |diff|", "proportion_error": "max |diff|"}

    def row(c: Comparison, work: str, stat: str, base: str, name: str, **extra) -> dict:
        return {"work": work, "unit": units[stat], "ours": c.value["ours"][stat], "baseline": c.value[base][stat],
                "baseline_name": name, "lower_is_better": True, **c.row_extras("ours", base, stat), **extra}

    rows = []
    for stat in ("variogram_mismatch", "connectivity_mismatch"):
        rows += [row(gen, f"{stat}_3f", stat, "tiled", f"tiling random {size // 2}x{size // 2} training patches ({where})",
                     goal=goal),
                 row(gen, f"{stat}_3f_sis", stat, "sis", "SIS, indicator variograms fitted to the training image "
                     "(16 neighbours), same wells", goal=goal),
                 row(gen, f"{stat}_3f_tiling_aug", stat, "tiled_aug", "tiling training patches flipped/rotated as in training"),
                 row(gen, f"{stat}_3f_floor", stat, "floor", f"noise floor: {n} patches per group of further draws of "
                     "the generator"),
                 row(gen, f"{stat}_3f_train_patches", stat, "train", "random training patches, augmented as in training "
                     "(a perfect model of what the network saw; no wells)"),
                 row(held, f"{stat}_3f_heldout", stat, "tiled", f"tiling, against the training image's held-out "
                     f"{fit.split.val.shape[0]}-row strip (one reference: realisation noise only)")]
    rows += [
        row(gen, "proportion_error_3f_sis", "proportion_error", "sis", "SIS"),
        {"work": "hard_data_honoured_3f", "unit": "fraction", "ours": float(np.mean(imgs["honoured_ours"])),
         "baseline": float(np.mean(imgs["honoured_sis"])), "baseline_name": "SIS", "lower_is_better": False,
         "goal": "ours = 1.0"},
    ]
    return rows


def _grid_rows(cfg: ArdmConfig, fit: FittedModel, refs: list[ImageStats], sizes: dict) -> list[dict]:
    """The time of one 256x256 conditional realisation, and statistics of realisations on larger grids."""
    size, k, settings = cfg.data.patch, cfg.data.n_categories, draw_settings(cfg, fit)
    max_lag, model, device, split = size // 2, fit.model, fit.device, fit.split
    ref = ImageStats.concat(refs)
    rng = np.random.default_rng(cfg.seed + 60)
    big, big_budget, n128 = 256, sizes["big_budget"], sizes["n128"]
    truth = procedural_image(dataclasses.replace(cfg.data.generator, size=big), k, cfg.seed + 99)
    wells = HardData.draw(truth, 100, rng)
    sync_device(device)
    big_ours, t_ours = _timed(lambda: sample(model, 1, big, budget=big_budget, hard=wells, seed=cfg.seed + 40,
                                             batch_size=1, device=device, **settings).images)
    sync_device(device)
    (big_sis, _), t_sis = _timed(lambda: sis_realisations(1, (big, big), split.train, k, hard=wells,
                                                         max_lag=max_lag, seed=cfg.seed + 41))
    grid128 = sample(model, n128, 128, budget=big_budget, seed=cfg.seed + 50, batch_size=n128, device=device,
                     **settings).images
    call_window = _call_seconds(model, big, device)
    window = model.attention_window
    model.set_attention_window(None)  # the same draws with attention over the whole grid (simulate.attention)
    try:
        grid128_global = sample(model, n128, 128, budget=big_budget, seed=cfg.seed + 50, batch_size=n128,
                                device=device, **settings).images
        call_global = _call_seconds(model, big, device)
    finally:
        model.set_attention_window(window)
    # At the patch size: unconditional realisations, as many crops as the larger grids give.
    small = sample(model, 16, size, budget=big_budget, seed=cfg.seed + 51, batch_size=16, device=device,
                   **settings).images
    mm = {name: mismatch(image_stats(x, k, max_lag), ref)
          for name, x in (("128", crops(grid128, size)), ("128_global", crops(grid128_global, size)),
                          ("256", crops(big_ours, size)), ("patch", small))}
    at_patch = f"ours at the {size}x{size} patch size (16 unconditional, {big_budget} calls)"
    return [
        {"work": "sample_seconds_256", "unit": "s", "ours": t_ours, "baseline": t_sis,
         "baseline_name": f"SIS, one 256x256 realisation, 100 wells (ours: {big_budget} calls, attention within "
                          f"{size}x{size} windows, CPU, 1 thread; "
                          f"wells honoured ours {wells.honoured(big_ours):.3f}, SIS {wells.honoured(big_sis):.3f})",
         "lower_is_better": True},
        {"work": "network_call_seconds_256", "unit": "s", "ours": call_window, "baseline": call_global,
         "baseline_name": f"one network call on 256x256 with attention over the whole grid (ours: within {size}x{size} "
                          "windows; median of 3)", "lower_is_better": True},
        {"work": "variogram_mismatch_3f_grid128", "unit": "relative L1", "ours": mm["128"]["variogram_mismatch"],
         "baseline": mm["patch"]["variogram_mismatch"],
         "baseline_name": f"{at_patch}; ours: {size}x{size} crops of {n128} unconditional 128x128", "lower_is_better": True},
        {"work": "connectivity_mismatch_3f_grid128", "unit": "mean |diff|", "ours": mm["128"]["connectivity_mismatch"],
         "baseline": mm["patch"]["connectivity_mismatch"], "baseline_name": at_patch, "lower_is_better": True},
        {"work": "variogram_mismatch_3f_grid128_window", "unit": "relative L1", "ours": mm["128"]["variogram_mismatch"],
         "baseline": mm["128_global"]["variogram_mismatch"],
         "baseline_name": "the same 128x128 draws with attention over the whole grid (simulate.attention: global)",
         "lower_is_better": True},
        {"work": "connectivity_mismatch_3f_grid128_window", "unit": "mean |diff|",
         "ours": mm["128"]["connectivity_mismatch"], "baseline": mm["128_global"]["connectivity_mismatch"],
         "baseline_name": "the same 128x128 draws with attention over the whole grid", "lower_is_better": True},
        {"work": "variogram_mismatch_3f_grid256", "unit": "relative L1", "ours": mm["256"]["variogram_mismatch"],
         "baseline": mm["patch"]["variogram_mismatch"],
         "baseline_name": f"{at_patch}; ours: {size}x{size} crops of the 256x256 conditional one", "lower_is_better": True},
        {"work": "proportion_error_3f_grid256", "unit": "max |diff|", "ours": mm["256"]["proportion_error"],
         "baseline": mm["patch"]["proportion_error"], "baseline_name": at_patch, "lower_is_better": True},
    ]
