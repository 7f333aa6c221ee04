"""Bench ``matern``: the amortised GNN estimator vs the exact-likelihood MLE on the same test fields.

Setting (issue 4): n = 256 uniform locations, nu = 1.5 fixed, sigma2 = 1, tau2 = 0, range ~ U(0.05, 0.35);
at least 200 test fields shared by both methods, with m = 1 and with m = 5 replicates. One network is
trained (on the GPU when there is one) with 1 to 5 replicates per field, so that it serves both rows;
it is the variogram and local-fit layer on directed 12-NN graphs (dense gathers) + readout + DeepSets,
with no further graph convolutions (``model.depth: 0``): on this CPU a GCN layer cost ~7x the inference
time per field. The point head is trained on the squared error in range units (the metric); each
simulated set of 2048 training fields serves 3 epochs (simulating a field costs more than a step on it).
Rows: ``range_rmse`` (RMSE of the range in its units, m = 1), ``seconds_per_field`` (ours: graph building
and a batched forward pass, per field; MLE: one L-BFGS fit per field), ``graph_build_floor`` (building the
kNN graphs alone, per field: no graph estimator can be faster on this machine), ``range_rmse_m5`` (m = 5),
and the ``*_refined`` rows: the network's estimates after two Fisher-scoring steps on the exact likelihood
(``geostudy/learners/matern/refine.py``), their RMSE and their total seconds per field; the RMSE rows
also carry ``coverage``, the share of 90% Wald intervals holding the true range, beside the network's
quantile intervals' (``network_coverage``) and theirs once calibrated per replicate count on fresh
simulations (``network_coverage_calibrated``; ``geostudy/learners/matern/calibrate.py``).
On the CPU everything runs on one torch thread (and one kNN query thread): on this shared 2-core machine
two threads made inference 3-5x slower. The training time is printed; the full run's training budget
is 50 minutes on a 2-core CPU (under an hour with the MLE fits), ``--quick`` trains for 2 minutes. The
trained network is kept in ``out/bench/`` and reused by later runs while the resolved config, torch's
version and the training code are unchanged (the rows then carry its original training time); delete
the file to train again.

The ``*_n{N}`` rows (issue 22: one network for every field size, against the MLE and a variogram fit at
n = 256, 1024, 4096) come from ``bench/_matern_sizes.py``, with a network of their own (40 minutes of
training on one CPU thread, cached the same way). ``MATERN_BENCH_ROWS=sizes`` (or ``fixed``) runs one
part alone.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from geostudy.config import to_dataclass
from geostudy.learners.base import RunContext
from geostudy.learners.matern.calibrate import calibrate
from geostudy.learners.matern.config import MaternConfig
from geostudy.learners.matern.evaluate import param_metrics, predict, refine, run_mle, true_log_params
from geostudy.learners.matern.model import MaternEstimator, count_parameters
from geostudy.learners.matern.simulate import simulate
from geostudy.learners.matern.train import build_model, graphs_for, train
from geostudy.nn.device import resolve_device
from geostudy.nn.threads import torch_threads
from geostudy.nn.training import seed_everything

TEST_FIELDS = 200
REFINE_STEPS = 2  # Fisher-scoring steps from the network's estimate (*_refined rows): two reach the MLE
CACHE_DIR = Path(__file__).resolve().parents[1] / "out" / "bench"  # the trained network, reused while its config and training code are unchanged
MLE_NAME = "exact-likelihood MLE (scipy L-BFGS-B)"


def bench_settings(quick: bool) -> dict:
    return {
        "seed": 0,
        "device": "auto",
        "data": {"n": 256, "locations": "uniform", "nu": 1.5, "m_min": 1, "m_max": 5,
                 "simulation": "on_the_fly", "reuse_epochs": 3, "train_size": 128 if quick else 2048,
                 "val_size": 128},
        "prior": {"range": {"dist": "uniform", "low": 0.05, "high": 0.35},
                  "variance": {"dist": "fixed", "value": 1.0}, "nugget": {"dist": "fixed", "value": 0.0}},
        "graph": {"kind": "knn", "k": 12, "edge_weight": "learned"},
        "model": {"backend": "pyg", "arch": "gcn", "hidden": 64, "depth": 0, "n_basis": 4, "readout": "mean",
                  "variogram_skip": True, "local_fit": True, "deepsets_hidden": 64, "quantiles": True},
        "optim": {"name": "adam", "lr": 0.004},
        "train": {"epochs": 1000, "batch_size": 64, "max_seconds": 120 if quick else 3000,
                  "point_loss": "natural", "warmup_steps": 100},
        "eval": {"mle_bounds": "prior"},
    }


def bench_config(quick: bool) -> MaternConfig:
    return to_dataclass(MaternConfig, bench_settings(quick))


# What the trained network depends on: a cached one is reused only while these files are unchanged.
TRAINING_SOURCES = ("covariance.py", "data.py", "locations.py", "localfit.py", "model.py",
                    "neighbours.py", "priors.py", "simulate.py", "spectral.py", "train.py")


def _training_key(cfg: MaternConfig) -> str:
    """The resolved config (all but its eval/estimate sections), torch's version and the training code."""
    import dataclasses
    import hashlib
    import json

    import geostudy.learners.matern as package

    resolved = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("eval", "estimate")}
    digest = hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode())
    digest.update(torch.__version__.encode())
    for name in TRAINING_SOURCES:
        digest.update((Path(package.__file__).parent / name).read_bytes())
    return digest.hexdigest()


def _rmse(est: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sqrt(np.mean((est - truth) ** 2)))


def run(quick: bool) -> list[dict]:
    """Today's fixed-n rows, then the ``*_n{N}`` rows of the variable-n network (``bench/_matern_sizes.py``).

    ``MATERN_BENCH_ROWS=fixed`` or ``=sizes`` runs one part alone (each trains its own network).
    """
    from bench._matern_sizes import size_rows  # it imports this module's helpers

    part = os.environ.get("MATERN_BENCH_ROWS", "all")
    if part not in ("all", "fixed", "sizes"):
        raise ValueError(f"MATERN_BENCH_ROWS must be all, fixed or sizes, but got {part!r}")
    cfg = bench_config(quick)
    device = resolve_device(cfg.device)
    rows: list[dict] = []
    with torch_threads(1 if device.type == "cpu" else None):
        if part in ("all", "fixed"):
            rows += _run(cfg, device, quick)
        if part in ("all", "sizes"):
            rows += size_rows(quick, device)
    return rows


def trained_network(cfg: MaternConfig, device: torch.device, cache_name: str, val_m: int = 1
                    ) -> tuple[MaternEstimator, float, str]:
    """The bench network of ``cfg``: from ``out/bench/<cache_name>.pt`` when its key matches, else trained.

    Returns the model, its training seconds and the device it was trained on.
    """
    seed_everything(cfg.seed)
    val = simulate(cfg, cfg.data.val_size, np.random.default_rng([cfg.seed, 1]), device=device, m=val_m)
    val_graphs = graphs_for(cfg, val)
    val_truth = np.exp(true_log_params(val, ["range"])[:, 0])
    model = build_model(cfg).to(device)

    def evaluate(epoch: int) -> dict[str, float]:
        est = predict(model, cfg, val, graphs=val_graphs, device=device)
        return {"val_rmse_range": _rmse(np.exp(est.point[:, 0]), val_truth)}

    key = _training_key(cfg)
    cache = CACHE_DIR / f"{cache_name}.pt"
    cached = torch.load(cache, map_location=device, weights_only=True) if cache.is_file() else None
    if cached is not None and cached.get("key") == key:
        model.load_state_dict(cached["state_dict"])
        train_seconds, trained_on = float(cached["train_seconds"]), str(cached["device"])
        print(f"matern: reusing the network trained by an earlier run ({cache}; {train_seconds:.0f} s on "
              f"{trained_on}); delete it to train again", file=sys.stderr, flush=True)
        return model, train_seconds, trained_on
    ctx = RunContext(workdir=Path("."), verbose=True)
    t0 = time.perf_counter()
    train(cfg, model, ctx, evaluate, rng=np.random.default_rng([cfg.seed, 0]), device=device)
    train_seconds, trained_on = time.perf_counter() - t0, str(device)
    print(f"matern: trained {count_parameters(model)} parameters in {train_seconds:.0f} s on {device}",
          file=sys.stderr, flush=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"key": key, "state_dict": model.state_dict(), "train_seconds": train_seconds,
                "device": trained_on}, cache)
    return model, train_seconds, trained_on


def _run(cfg: MaternConfig, device: torch.device, quick: bool) -> list[dict]:
    model, train_seconds, trained_on = trained_network(
        cfg, device, f"matern_estimator_{'quick' if quick else 'full'}")
    calibration = calibrate(model, cfg, fields=cfg.eval.calibration_fields, rng=np.random.default_rng([cfg.seed, 3]),
                            device=device)
    rows, refined_rows = [], []
    for m, work in ((1, "range_rmse"), (5, "range_rmse_m5")):
        test = simulate(cfg, TEST_FIELDS, np.random.default_rng([cfg.seed, 2, m]), device=device, m=m)
        log_truth = true_log_params(test, ["range"])
        truth = np.exp(log_truth[:, 0])
        predict(model, cfg, test.subset(np.arange(8)), device=device)  # warm-up (allocations, lazy imports)
        ours = predict(model, cfg, test, device=device)
        refined = refine(cfg, test, ours, REFINE_STEPS)
        mle = run_mle(cfg, test)
        mle_rmse, mle_seconds = _rmse(np.exp(mle.point[:, 0]), truth), mle.seconds / TEST_FIELDS
        common = {"baseline_name": MLE_NAME, "lower_is_better": True, "fields": TEST_FIELDS}
        rows.append({"work": work, "unit": "range units", "ours": _rmse(np.exp(ours.point[:, 0]), truth),
                     "baseline": mle_rmse, "goal": "<= 1.0x", **common, "train_seconds": round(train_seconds, 1),
                     "trained_on": trained_on})
        refined_rows.append({"work": f"{work}_refined", "unit": "range units",
                             "ours": _rmse(np.exp(refined.point[:, 0]), truth), "baseline": mle_rmse,
                             "goal": "<= 1.0x", **common, "refine_steps": REFINE_STEPS,
                             "coverage": param_metrics(refined, log_truth, ["range"], "")["coverage_log_range"],
                             "network_coverage": param_metrics(ours, log_truth, ["range"], "")["coverage_log_range"],
                             "network_coverage_calibrated": param_metrics(
                                 calibration.apply(ours, test), log_truth, ["range"],
                                 "")["coverage_log_range"] if calibration is not None else None})
        if m == 1:
            rows.append({"work": "seconds_per_field", "unit": "s", "ours": ours.seconds / TEST_FIELDS,
                         "baseline": mle_seconds, "goal": "<= 0.001x (1000x faster)", **common,
                         "device": str(device), "torch_threads": torch.get_num_threads()})
            # The floor under any graph estimator here: building the test fields' graphs, nothing else.
            # Its ratio to the MLE is the best speed-up a network on these graphs could reach.
            t0 = time.perf_counter()
            graphs_for(cfg, test)
            rows.append({"work": "graph_build_floor", "unit": "s", "ours": (time.perf_counter() - t0) / TEST_FIELDS,
                         "baseline": mle_seconds, "goal": "(none: the kNN graphs alone, a lower bound of "
                         "seconds_per_field)", **common, "k": cfg.graph.k})
            refined_rows.append({"work": "seconds_per_field_refined", "unit": "s",
                                 "ours": refined.seconds / TEST_FIELDS, "baseline": mle_seconds,
                                 "goal": "(none: network + Fisher steps)", **common, "refine_steps": REFINE_STEPS})
    rows += refined_rows
    print(f"matern: training time {train_seconds:.0f} s", flush=True)
    return rows
