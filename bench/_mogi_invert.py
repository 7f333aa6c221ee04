"""The ``invert_*`` rows of bench ``mogi``: ``mode: invert`` on map files unlike the training maps.

A network is trained on the default grid (64 x 64 pixels over 40 km) with 10 % holes (so it has the
mask channel) and x0/y0 among its targets, and kept in ``out/bench/mogi_invert_{quick,full}.pt``
(reused while its config and the learner's source files are unchanged). Then 100 maps are written, half GeoTIFF and half NetCDF (mm), at 1.5x the training spacing over 2x its
extent (85 x 85 pixels of 937.5 m; also with ``--quick``), each with a source anywhere within ±12 km of the centre, depth
and ΔV from the training prior, exponential correlated noise (1 cm over 6 km) plus 2 mm white noise,
10 % NaN pixels, an offset (±3 cm) and a ramp (±0.5 mm/km each way). Each is read back through
``mode: invert`` (:func:`~geostudy.learners.mogi.invert.prepare`) and inverted by

- ours: the network, then least squares from its estimate (``invert.refine: true``), and
- the baseline: least squares of the same model (source, offset, ramp) from the prior medians,
  bounded to the prior's depth and ΔV ranges (:func:`~geostudy.learners.mogi.baseline.fit_observed`),

both timed on the map already read (reading is the same for both).
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from geostudy.config import apply_overrides
from geostudy.learners import get_learner
from geostudy.learners.base import REPO_ROOT, RunContext
from geostudy.learners.mogi.baseline import fit_observed
from geostudy.learners.mogi.config import parse_config
from geostudy.learners.mogi.data import Simulator
from geostudy.learners.mogi.invert import invert_map, prepare
from geostudy.learners.mogi.learner import torch_threads
from geostudy.learners.mogi.synthetic_map import MapSpec, synthetic_los, write_map
from geostudy.learners.mogi.train import save_checkpoint, train_model

CACHE_DIR = REPO_ROOT / "out" / "bench"
NETWORK = {"data.noise.holes_fraction": 0.1, "model.targets": ["depth_km", "dv_m3", "x0_km", "y0_km"]}
QUICK = {"train.n_train": 4096, "train.epochs": 8, "train.data": "fixed"}
FULL = {"train.n_train": 12288, "train.epochs": 10, "train.data": "on_the_fly"}
SOURCES = ["geostudy/learners/mogi/" + f for f in ("model.py", "train.py", "data.py", "noise.py", "forward.py", "spec.py")]


def _checkpoint(quick: bool) -> Path:
    learner = get_learner("mogi")
    config = apply_overrides(learner.default_config(), {**NETWORK, **(QUICK if quick else FULL)})
    trained_by = {k: config[k] for k in ("seed", "data", "model", "optim", "train")}  # not invert's keys
    h = hashlib.sha256(json.dumps(trained_by, sort_keys=True).encode())
    for name in SOURCES:
        h.update((REPO_ROOT / name).read_bytes())
    h.update(torch.__version__.encode())
    path = CACHE_DIR / f"mogi_invert_{'quick' if quick else 'full'}.pt"
    key_file = path.with_suffix(".key")
    if path.is_file() and key_file.is_file() and key_file.read_text() == h.hexdigest():
        print(f"mogi invert: reusing the network trained by an earlier run ({path})", file=sys.stderr, flush=True)
        return path
    cfg = parse_config(config)
    with torch_threads(cfg.threads):
        ctx = RunContext(workdir=Path(tempfile.mkdtemp(prefix="bench_mogi_inv_")), verbose=True)
        predictor, _ = train_model(cfg, Simulator(cfg.data), ctx)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, predictor, config)
    key_file.write_text(h.hexdigest())
    return path


def _maps(folder: Path, n: int, rng: np.random.Generator) -> list[tuple[Path, dict[str, float]]]:
    """``n`` map files (alternately GeoTIFF and NetCDF) and their true sources (x0/y0 km from the map's centre)."""
    out = []
    side, spacing = 85, 937.5
    for i in range(n):
        origin = (rng.uniform(3e5, 7e5), rng.uniform(4e6, 5e6))
        centre = (origin[0] + spacing * (side - 1) / 2, origin[1] + spacing * (side - 1) / 2)
        truth = {"x0_km": rng.uniform(-12, 12), "y0_km": rng.uniform(-12, 12), "depth_km": rng.uniform(2, 8),
                 "dv_m3": 10 ** rng.uniform(6, 8)}
        spec = MapSpec(nx=side, ny=side, spacing_m=spacing, origin=origin,
                       source={"x0": centre[0] + 1000 * truth["x0_km"], "y0": centre[1] + 1000 * truth["y0_km"],
                               "depth_km": truth["depth_km"], "dv_m3": truth["dv_m3"], "nu": 0.25},
                       noise_m=0.01, noise_length_km=6.0, white_m=0.002, offset_m=rng.uniform(-0.03, 0.03),
                       ramp_per_km=(rng.uniform(-5e-4, 5e-4), rng.uniform(-5e-4, 5e-4)), nan_fraction=0.1)
        x, y, los = synthetic_los(spec, rng)
        path = write_map(folder / f"map{i:03d}.{'tif' if i % 2 == 0 else 'nc'}", x, y, los)
        out.append((path, truth))
    return out


def rows(quick: bool) -> list[dict]:
    checkpoint = _checkpoint(quick)
    n_maps = 100  # a minute or two: the same with --quick, which only trains a smaller network
    folder = Path(tempfile.mkdtemp(prefix="bench_mogi_maps_"))
    maps = _maps(folder, n_maps, np.random.default_rng(2026))
    learner = get_learner("mogi")
    ours, base, inside = [], [], []
    ours_s = base_s = 0.0
    print(f"mogi invert: {n_maps} map files, ours and least squares ...", file=sys.stderr, flush=True)
    with torch_threads(1):
        for path, truth in maps:
            config = apply_overrides(learner.default_config(), {"mode": "invert", "invert.checkpoint": str(checkpoint),
                                                                "invert.map": str(path)})
            cfg = parse_config(config)
            predictor, sim, obs = prepare(cfg)
            res = invert_map(predictor, sim, obs, cfg.invert)
            ours.append(res.estimate)
            ours_s += res.seconds
            inside += [res.intervals[v][0] <= truth[v] <= res.intervals[v][1]  # type: ignore[index]
                       for v in ("depth_km", "dv_m3")]
            valid = np.isfinite(obs.los)
            gx, gy = np.meshgrid(obs.x_km, obs.y_km)
            start = time.perf_counter()
            base.append(fit_observed(gx[valid], gy[valid], obs.los[valid], obs.e, sim.spec,
                                     half_extent_km=float(obs.x_km[-1])))
            base_s += time.perf_counter() - start
    true_d = np.array([t["depth_km"] for _, t in maps])
    true_v = np.array([t["dv_m3"] for _, t in maps])

    def depth_rmse(est: list[dict]) -> float:
        return float(np.sqrt(np.mean((np.array([e["depth_km"] for e in est]) - true_d) ** 2)))

    def dv_rel(est: list[dict]) -> float:
        return float(np.mean(np.abs(np.array([e["dv_m3"] for e in est]) - true_v) / true_v))

    name = ("scipy.optimize.least_squares (trf, 2-point Jacobian) of source + offset + ramp from the prior medians, "
            "depth/ΔV bounded to the prior, same files read the same way")
    cover = np.array(inside).reshape(-1, 2)
    return [
        {"work": "invert_files_depth_rmse", "unit": "km", "ours": depth_rmse(ours), "baseline": depth_rmse(base),
         "baseline_name": name, "lower_is_better": True, "goal": "ours <= 0.8x"},
        {"work": "invert_files_dv_rel_error", "unit": "", "ours": dv_rel(ours), "baseline": dv_rel(base),
         "baseline_name": name, "lower_is_better": True, "goal": "ours <= 0.8x"},
        {"work": "invert_files_seconds_per_map", "unit": "s", "ours": ours_s / n_maps, "baseline": base_s / n_maps,
         "baseline_name": name + " (the map already read, for both)", "lower_is_better": True, "goal": "ours <= 0.2x"},
        {"work": "invert_coverage", "unit": "", "ours": float(cover.mean()), "baseline": 0.90,
         "baseline_name": "nominal level of the intervals (invert.level)", "lower_is_better": False,
         "goal": "ours in [0.85, 0.95]"},
        {"work": "invert_coverage_depth", "unit": "", "ours": float(cover[:, 0].mean()), "baseline": 0.90,
         "baseline_name": "nominal level", "lower_is_better": False, "goal": "(context)"},
        {"work": "invert_coverage_dv", "unit": "", "ours": float(cover[:, 1].mean()), "baseline": 0.90,
         "baseline_name": "nominal level", "lower_is_better": False, "goal": "(context)"},
    ]
