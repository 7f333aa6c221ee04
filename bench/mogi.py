"""Bench ``mogi``: the trained network vs least squares on the same noisy maps.

A CNN is trained here on the default config (``configs/mogi.yaml``: 64 x 64 maps, exponential
correlated noise of 1 cm over 6 km plus 2 mm white noise, source anywhere within ±4 km of the centre,
depth 2-8 km, ΔV 1e6-1e8 m³), then both invert the same test maps drawn from that distribution:

- ``depth_rmse`` (km) and ``dv_rel_error`` (mean |ΔV̂ − ΔV| / ΔV): goal ours ≤ 1.0x least squares
  bounded to the training ranges (the prior the network has too; the stronger of the two baselines);
  the ``*_vs_physical_bounds`` rows give the same least squares within physical bounds only;
- ``seconds_per_map``: ours batched (1024 maps a batch, input transform included) vs
  ``scipy.optimize.least_squares`` per map; goal ours ≥ 100x faster. Both on one CPU thread
  (``threads: 1``), so neither gains from cores the other cannot use.

``--quick`` trains on 4096 fixed maps for 8 epochs (about 1 minute on a quiet 2-core CPU, 5 when it is
shared); the full run trains on 12288 fresh maps every epoch (``data: on_the_fly``) for 10 epochs
(about 5 minutes on a quiet 2-core CPU, 19 when it is shared).

The ``invert_*`` rows (``mode: invert`` on GeoTIFF/NetCDF files at another spacing and extent, with
offset, ramp and holes; ours = network + least squares vs least squares from the prior medians) are
described in ``bench/_mogi_invert.py``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

from bench._mogi_invert import rows as invert_rows
from geostudy.config import apply_overrides
from geostudy.learners import get_learner
from geostudy.learners.base import RunContext
from geostudy.learners.mogi.baseline import fit_maps
from geostudy.learners.mogi.config import parse_config
from geostudy.learners.mogi.data import Simulator
from geostudy.learners.mogi.learner import torch_threads
from geostudy.learners.mogi.train import train_model

QUICK = {"train.n_train": 4096, "train.epochs": 8, "train.data": "fixed"}
FULL = {"train.n_train": 12288, "train.epochs": 10, "train.data": "on_the_fly"}


def run(quick: bool) -> list[dict]:
    learner = get_learner("mogi")
    config = apply_overrides(learner.default_config(), QUICK if quick else FULL)
    cfg = parse_config(config)
    sim = Simulator(cfg.data)
    n_maps = 200 if quick else 400
    with torch_threads(cfg.threads):
        ctx = RunContext(workdir=Path(tempfile.mkdtemp(prefix="bench_mogi_")), verbose=True)
        predictor, _ = train_model(cfg, sim, ctx)
        values, maps = sim.draw(np.random.default_rng([cfg.seed, 99]), n_maps, "train")
        ours = predictor.predict(maps)
        ours_seconds = predictor.seconds_per_map(maps)
    print(f"least squares on {n_maps} maps, twice ...", file=sys.stderr, flush=True)
    lsq, lsq_seconds = fit_maps(sim, maps, bounds="prior")
    lsq_wide, _ = fit_maps(sim, maps, bounds="physical")

    def depth_rmse(est: dict[str, np.ndarray]) -> float:
        return float(np.sqrt(np.mean((est["depth_km"] - values["depth_km"]) ** 2)))

    def dv_rel(est: dict[str, np.ndarray]) -> float:
        return float(np.mean(np.abs(est["dv_m3"] - values["dv_m3"]) / values["dv_m3"]))

    base = "scipy.optimize.least_squares, same forward model, start at the prior medians, bounded to the training ranges"
    wide = "the same least squares within physical bounds only (depth 0.05-100 km, ΔV 1e3-1e12 m³)"
    rows = [
        {"work": "depth_rmse", "unit": "km", "ours": depth_rmse(ours), "baseline": depth_rmse(lsq),
         "baseline_name": base, "lower_is_better": True, "goal": "ours <= 1.0x"},
        {"work": "dv_rel_error", "unit": "", "ours": dv_rel(ours), "baseline": dv_rel(lsq),
         "baseline_name": base, "lower_is_better": True, "goal": "ours <= 1.0x"},
        {"work": "seconds_per_map", "unit": "s", "ours": ours_seconds, "baseline": lsq_seconds,
         "baseline_name": base, "lower_is_better": True, "goal": "ours <= 0.01x (100x faster)"},
        {"work": "depth_rmse_vs_physical_bounds", "unit": "km", "ours": depth_rmse(ours), "baseline": depth_rmse(lsq_wide),
         "baseline_name": wide, "lower_is_better": True, "goal": "(context)"},
        {"work": "dv_rel_error_vs_physical_bounds", "unit": "", "ours": dv_rel(ours), "baseline": dv_rel(lsq_wide),
         "baseline_name": wide, "lower_is_better": True, "goal": "(context)"},
    ]
    return rows + invert_rows(quick)
