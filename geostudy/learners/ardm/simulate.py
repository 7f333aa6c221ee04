"""``mode: simulate``: N conditional realisations of a trained checkpoint on a target grid.

Writes the realisations (facies codes) as one multi-variable GSLIB grid file (one variable per
realisation, x fastest) and a NetCDF with ``facies(realisation, y, x)``, one e-type
``probability_<code>(y, x)`` per facies (the share of realisations holding it) and the Shannon
``entropy(y, x)`` of those shares in bits (0 where every realisation agrees, as at the wells).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from geostudy.errors import ConfigError
from geostudy.io.gslib import write_gslib_grid
from geostudy.learners.ardm import plots
from geostudy.learners.ardm.checkpoint import Checkpoint, load_checkpoint
from geostudy.learners.ardm.config import ArdmConfig, SimulateConfig
from geostudy.learners.ardm.data import HardData
from geostudy.learners.ardm.images import FaciesCodes
from geostudy.learners.ardm.sampling import sample
from geostudy.learners.ardm.wells import read_hard_data_csv
from geostudy.learners.base import RunContext, RunResult
from geostudy.nn import resolve_device


def target_proportions(sim: SimulateConfig, ckpt: Checkpoint) -> np.ndarray | None:
    """The servosystem's target: ``simulate.proportions`` if given, else the checkpoint's training image's."""
    if sim.proportions is not None:
        if len(sim.proportions) != len(ckpt.codes):
            raise ConfigError(f"needs one share per facies code {[float(c) for c in ckpt.codes.codes]} of the "
                              f"checkpoint, but got {len(sim.proportions)}", key="simulate.proportions")
        return np.asarray(sim.proportions, dtype=np.float64)
    if sim.servo > 0 and ckpt.proportions is None:
        raise ConfigError("the checkpoint predates stored training proportions; give simulate.proportions (one "
                          "share per facies) or set simulate.servo: 0", key="simulate.servo")
    return ckpt.proportions


def check_simulation(cfg: ArdmConfig) -> tuple[Checkpoint, HardData | None]:
    """Load the checkpoint and the wells, and check the grid fits the network, before any output."""
    sim = cfg.simulate
    ckpt = load_checkpoint(sim.checkpoint or "", device="cpu")
    target_proportions(sim, ckpt)
    for key, n in (("nx", sim.nx), ("ny", sim.ny)):
        if n % ckpt.size_factor:
            raise ConfigError(f"must be a multiple of {ckpt.size_factor} for the checkpoint's UNet with "
                              f"{ckpt.model.n_levels} levels, but got {n}", key=f"simulate.{key}")
    hard = None
    if sim.hard_data:
        hard = read_hard_data_csv(sim.hard_data, nx=sim.nx, ny=sim.ny, codes=ckpt.codes, columns=sim.columns,
                                  coordinates=sim.coordinates, origin=sim.origin, spacing=sim.spacing)
    return ckpt, hard


def facies_probabilities(images: np.ndarray, n_classes: int) -> np.ndarray:
    """``(K, H, W)`` share of the realisations ``(N, H, W)`` holding each category (sums to 1 per cell)."""
    return np.stack([(images == k).mean(axis=0) for k in range(n_classes)])


def entropy_bits(prob: np.ndarray) -> np.ndarray:
    """Shannon entropy in bits over the first axis of ``prob`` (0 log 0 = 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(prob > 0, -prob * np.log2(np.where(prob > 0, prob, 1.0)), 0.0)
    return np.abs(terms.sum(axis=0))  # abs: -0.0 where one facies holds every realisation


def _code_name(code: float) -> str:
    return str(int(code)) if float(code).is_integer() else f"{code:g}".replace(".", "p").replace("-", "m")


def write_netcdf(path: Path, codes_img: np.ndarray, prob: np.ndarray, entropy: np.ndarray, codes: FaciesCodes,
                 cfg: ArdmConfig) -> Path:
    """The NetCDF of a simulation: realisations, per-facies probabilities, entropy, world coordinates."""
    import xarray as xr

    sim = cfg.simulate
    n, ny, nx = codes_img.shape
    x = sim.origin[0] + sim.spacing[0] * np.arange(nx)
    y = sim.origin[1] + sim.spacing[1] * np.arange(ny)
    data: dict[str, Any] = {"facies": (("realisation", "y", "x"), codes_img,
                       {"long_name": "facies code", "flag_values": codes.codes, "units": "1"})}
    for k, code in enumerate(codes.codes):
        data[f"probability_{_code_name(code)}"] = (("y", "x"), prob[k].astype(np.float32), {
            "long_name": f"share of realisations with facies {code:g} (e-type)", "units": "1",
            "facies_code": float(code)})
    data["entropy"] = (("y", "x"), entropy.astype(np.float32),
                       {"long_name": "Shannon entropy of the facies shares", "units": "bit"})
    ds = xr.Dataset(data, coords={"realisation": np.arange(1, n + 1), "y": y, "x": x},
                    attrs={"title": "ARDM conditional realisations", "source": "geostudy ardm, mode: simulate",
                           "checkpoint": str(sim.checkpoint), "seed": cfg.seed,
                           "hard_data": str(sim.hard_data or "none"),
                           "conventions_note": "x, y are cell centres; y increases with the row index"})
    ds.to_netcdf(path)
    return path


def run_simulation(cfg: ArdmConfig, ctx: RunContext, metric_names: list[str]) -> RunResult:
    """Draw ``simulate.n_realisations`` realisations and write GSLIB, NetCDF and figures."""
    ckpt, hard = check_simulation(cfg)
    sim = cfg.simulate
    device = resolve_device(cfg.device)
    model = ckpt.model.to(device)
    if sim.attention == "global":
        model.set_attention_window(None)
    k = len(ckpt.codes)
    ctx.log(f"simulating {sim.n_realisations} realisations of {sim.nx}x{sim.ny} cells (network trained on "
            f"{ckpt.patch}x{ckpt.patch} patches) with {len(hard) if hard else 0} hard data, {sim.call_budget} calls each"
            + (f", servosystem {sim.servo:g}" if sim.servo > 0 else ""))
    start = time.perf_counter()
    out = sample(model, sim.n_realisations, (sim.ny, sim.nx), budget=sim.call_budget, hard=hard, seed=cfg.seed,
                 batch_size=sim.batch_size, device=device, progress=ctx.log, temperature=sim.temperature,
                 proportions=target_proportions(sim, ckpt), servo=sim.servo)
    seconds = time.perf_counter() - start
    prob = facies_probabilities(out.images, k)
    entropy = entropy_bits(prob)
    codes_img = ckpt.codes.decode(out.images)

    workdir = Path(ctx.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    names = [f"realisation_{i + 1}" for i in range(len(codes_img))]
    files = {
        "realisations_gslib": write_gslib_grid(workdir / "realisations.gslib", "ARDM realisations (facies codes)",
                                               names, codes_img),
        "realisations_netcdf": write_netcdf(workdir / "realisations.nc", codes_img, prob, entropy, ckpt.codes, cfg),
    }
    metrics = {name: math.nan for name in metric_names}
    metrics.update({
        "hard_data_honoured": hard.honoured(out.images) if hard is not None else 1.0,
        "sample_seconds": seconds,
        "sample_pixels_per_second": out.images.size / seconds,
    })
    extent = (sim.origin[0] - sim.spacing[0] / 2, sim.origin[0] + sim.spacing[0] * (sim.nx - 0.5),
              sim.origin[1] - sim.spacing[1] / 2, sim.origin[1] + sim.spacing[1] * (sim.ny - 0.5))
    figures = {
        "realisations": plots.realisation_maps(out.images[:6], ckpt.codes.codes, extent, hard),
        "facies_probability": plots.probability_maps(prob, ckpt.codes.codes, extent, hard),
        "entropy": plots.entropy_world_map(entropy, k, extent, hard),
    }
    ctx.log(f"wrote {', '.join(str(p) for p in files.values())} in {seconds:.1f} s of sampling")
    tables = {"codes": [float(c) for c in ckpt.codes.codes], "calls_per_realisation": out.calls,
              "mean_probability": {_code_name(c): float(prob[i].mean()) for i, c in enumerate(ckpt.codes.codes)}}
    return RunResult(metrics=metrics, figures=figures, files=files, tables=tables)
