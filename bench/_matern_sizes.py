"""Bench ``matern``, the rows over field size: one variable-n network vs the MLE and a variogram fit.

Setting (issue 22): uniform locations, nu = 1.5, sigma2 = 1, tau2 = 0, range ~ U(0.05, 0.35), one
replicate. One network serves every n: trained on fields of n log-uniform in [128, 4096] (1 to 2
replicates), simulated by the spectral method (``data.simulator: spectral``; an exact Cholesky at
n = 4096 costs about a second per field on this CPU), with density-aware lengths (``model.density_aware``).
The test fields are exact (Cholesky) simulations at n = 256, 1024 and 4096, one replicate each,
``TEST_FIELDS`` of them (fewer at large n). Rows per n: ``range_rmse_n{N}`` and ``seconds_per_field_n{N}``
(ours: graph building and a batched forward pass, per field) against the MLE (exact likelihood up to
n = 1024, Vecchia's with 30 neighbours at 4096, where one exact fit takes minutes on this CPU), and
``range_rmse_variogram_n{N}``/``seconds_variogram_n{N}`` against gstools' empirical variogram and Matérn
fit (``geostudy/learners/matern/variogram.py``). The RMSE rows also carry ``refined_rmse``: the
network's estimate after two Fisher-scoring steps on the MLE's likelihood, and at n = 1024 the
Vecchia MLE's RMSE and seconds on the same fields (``vecchia_mle_*``). The seconds of the three
methods over n are drawn log-log in ``out/bench/matern_sizes_seconds.png``.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import gstools as gs
import numpy as np
import torch

from bench.matern import CACHE_DIR, MLE_NAME, REFINE_STEPS, _rmse, trained_network
from geostudy.config import to_dataclass
from geostudy.learners.matern.config import MaternConfig
from geostudy.learners.matern.evaluate import mle_bounds, predict, refine, run_mle, true_log_params
from geostudy.learners.matern.mle import likelihood_inputs, negative_log_likelihood
from geostudy.learners.matern.simulate import FieldSet, simulate
from geostudy.learners.matern.variogram import fit_variogram_range

SIZES = (256, 1024, 4096)
TEST_FIELDS = {256: 100, 1024: 24, 4096: 12}  # fewer at large n: an exact test field at 4096 is a 4096^2 Cholesky
QUICK_FIELDS = {256: 8, 1024: 4, 4096: 2}
EXACT_MLE_UP_TO = 1024  # beyond, the MLE maximises Vecchia's likelihood (exact: minutes per field here)
VECCHIA_CHECK_AT = 1024  # there the Vecchia MLE also runs on the same fields, beside the exact one
VARIOGRAM_NAME = "empirical variogram + Matérn least-squares fit (gstools)"


def sizes_settings(quick: bool) -> dict:
    return {
        "seed": 0,
        "device": "auto",
        "data": {"n": 128, "n_max": 4096, "locations": "uniform", "nu": 1.5, "m_min": 1, "m_max": 2,
                 "simulation": "on_the_fly", "reuse_epochs": 4, "train_size": 128 if quick else 1024,
                 "val_size": 32 if quick else 64, "simulator": "spectral", "spectral_modes": 500},
        "prior": {"range": {"dist": "uniform", "low": 0.05, "high": 0.35},
                  "variance": {"dist": "fixed", "value": 1.0}, "nugget": {"dist": "fixed", "value": 0.0}},
        "graph": {"kind": "knn", "k": 12, "edge_weight": "learned"},
        "model": {"backend": "pyg", "arch": "gcn", "hidden": 64, "depth": 0, "n_basis": 4, "readout": "mean",
                  "variogram_skip": True, "local_fit": True, "density_aware": True, "deepsets_hidden": 64,
                  "quantiles": True},
        "optim": {"name": "adam", "lr": 0.004},
        "train": {"epochs": 1000, "batch_size": 32, "max_seconds": 120 if quick else 2400,
                  "point_loss": "natural", "warmup_steps": 100},
        "eval": {"mle_bounds": "prior"},
    }


def sizes_config(quick: bool) -> MaternConfig:
    return to_dataclass(MaternConfig, sizes_settings(quick))


def size_rows(quick: bool, device: torch.device) -> list[dict]:
    """The ``*_n{N}`` rows and the seconds-vs-n figure (``out/bench/matern_sizes_seconds.png``)."""
    cfg = sizes_config(quick)
    model, train_seconds, trained_on = trained_network(cfg, device, f"matern_sizes_{'quick' if quick else 'full'}")
    gs.config.NUM_THREADS = 1  # the variogram estimator on one thread, as everything else here
    bounds = dict(mle_bounds(cfg))
    low, high = (math.exp(b) for b in bounds["range"])
    rows: list[dict] = []
    curve: dict[str, list[tuple[int, float]]] = {"network": [], "MLE": [], "variogram fit": []}
    for n in SIZES:
        fields = (QUICK_FIELDS if quick else TEST_FIELDS)[n]
        test = simulate(exact_simulator(cfg), fields, np.random.default_rng([cfg.seed, 22, n]), device=device,
                        m=1, n=n, chunk=max(1, 2**25 // n**2))  # a chunk's covariances in ~256 MB
        truth = np.exp(true_log_params(test, ["range"])[:, 0])
        predict(model, cfg, test.subset(np.arange(2)), device=device)  # warm-up (allocations, lazy imports)
        ours = predict(model, cfg, test, device=device)
        ours_rmse, ours_seconds = _rmse(np.exp(ours.point[:, 0]), truth), ours.seconds / fields
        mle_cfg = with_likelihood(cfg, "vecchia" if n > EXACT_MLE_UP_TO else "exact")
        mle = run_mle(mle_cfg, test)
        mle_name = (f"Vecchia-likelihood MLE ({cfg.eval.vecchia_neighbors} neighbours, scipy L-BFGS-B)"
                    if n > EXACT_MLE_UP_TO else MLE_NAME)
        mle_rmse, mle_seconds = _rmse(np.exp(mle.point[:, 0]), truth), mle.seconds / fields
        vario = [fit_variogram_range(c, v, nu=cfg.data.nu, variance=1.0, nugget=0.0, bounds=(low, high))
                 for c, v in zip(test.coords, test.values)]
        vario_rmse = _rmse(np.array([f.range for f in vario]), truth)
        vario_seconds = float(np.mean([f.seconds for f in vario]))
        common = {"lower_is_better": True, "fields": fields, "n": n, "train_seconds": round(train_seconds, 1),
                  "trained_on": trained_on, "trained_n": list(cfg.data.size_range())}
        refined = refine(mle_cfg, test, ours, REFINE_STEPS)  # network + Fisher steps on the MLE's likelihood
        extra: dict = {"refined_rmse": _rmse(np.exp(refined.point[:, 0]), truth),
                       "refined_seconds_per_field": refined.seconds / fields, "refine_steps": REFINE_STEPS}
        if n > EXACT_MLE_UP_TO:
            extra["exact_likelihood_seconds_per_evaluation"] = _exact_evaluation_seconds(test, cfg)
        if n == VECCHIA_CHECK_AT and not quick:
            vecchia = run_mle(with_likelihood(cfg, "vecchia"), test)
            extra.update(vecchia_mle_rmse=_rmse(np.exp(vecchia.point[:, 0]), truth),
                         vecchia_mle_seconds_per_field=vecchia.seconds / fields)
        rows += [
            {"work": f"range_rmse_n{n}", "unit": "range units", "ours": ours_rmse, "baseline": mle_rmse,
             "baseline_name": mle_name, "goal": "<= 1.1x", **common, **extra},
            {"work": f"seconds_per_field_n{n}", "unit": "s", "ours": ours_seconds, "baseline": mle_seconds,
             "baseline_name": mle_name, "goal": "<= 0.001x" if n >= 1024 else "(none at n < 1024)", **common,
             "torch_threads": torch.get_num_threads(), "device": str(device)},
            {"work": f"range_rmse_variogram_n{n}", "unit": "range units", "ours": ours_rmse, "baseline": vario_rmse,
             "baseline_name": VARIOGRAM_NAME, "goal": "<= 0.7x", **common},
            {"work": f"seconds_variogram_n{n}", "unit": "s", "ours": ours_seconds, "baseline": vario_seconds,
             "baseline_name": VARIOGRAM_NAME, "goal": "(none)", **common},
        ]
        curve["network"].append((n, ours_seconds))
        curve["MLE"].append((n, mle_seconds))
        curve["variogram fit"].append((n, vario_seconds))
        print(f"matern: n={n}: {fields} fields done", file=sys.stderr, flush=True)
    _plot(curve, CACHE_DIR / f"matern_sizes_seconds{'_quick' if quick else ''}.png")
    return rows


def _exact_evaluation_seconds(test: FieldSet, cfg: MaternConfig) -> float:
    """Seconds of one exact likelihood evaluation with its gradient on the first field (what each of the
    exact MLE's L-BFGS evaluations would cost at this n)."""
    z, dist, _, fixed = likelihood_inputs(test.coords[0], test.values[0], None, {"variance": 1.0, "nugget": 0.0})
    theta = torch.tensor(math.log(0.2), dtype=torch.float64, requires_grad=True)
    t0 = time.perf_counter()
    nll = negative_log_likelihood({**fixed, "range": theta}, z, dist, cfg.data.nu)
    nll.backward()
    return time.perf_counter() - t0


def exact_simulator(cfg: MaternConfig) -> MaternConfig:
    """``cfg`` simulating by exact Cholesky (the test fields), whatever trained the network."""
    return replace(cfg, data=replace(cfg.data, simulator="exact"))


def with_likelihood(cfg: MaternConfig, likelihood: str) -> MaternConfig:
    return replace(cfg, eval=replace(cfg.eval, likelihood=likelihood))  # type: ignore[arg-type]


def _plot(curve: dict[str, list[tuple[int, float]]], path: Path) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for label, points in curve.items():
        ns, secs = zip(*points)
        name = label if label != "MLE" else f"MLE (exact to n={EXACT_MLE_UP_TO}, then Vecchia)"
        ax.loglog(ns, secs, "o-", label=name)
    ax.set_xticks(SIZES, [str(n) for n in SIZES])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("points per field n")
    ax.set_ylabel("seconds per field (1 CPU thread)")
    ax.set_title("Matérn range estimation: cost over n")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"matern: wrote {path}", file=sys.stderr, flush=True)
