"""``mode: invert``: a trained network (and least squares) on the user's own LOS map.

``python run.py --config configs/mogi.yaml --set mode=invert invert.checkpoint=PATH/mogi_model.pt invert.map=FILE``

1. The map is read (:mod:`geostudy.learners.mogi.observed`): units to metres, sign to "towards the
   satellite", per-pixel or constant geometry, invalid pixels left out.
2. The network sees a window of the training grid's size and spacing (``data.grid`` of the
   checkpoint) centred on the deformation peak: the map is resampled bilinearly onto that window
   (NaN-aware; a finer map is first smoothed by a Gaussian of 0.4 x the spacing ratio so it is
   averaged rather than aliased), pixels outside the map or invalid are holes. A map larger than the
   training extent is thus cropped around its peak, a smaller one padded with holes. Offset and ramp
   are removed before: the plane fitted to the whole map. The network's intervals are the quantiles
   of its validation residuals stored in the checkpoint, those of the quarter of the validation maps
   whose amplitude was closest to this window's (weak patterns are inverted less precisely).
3. ``invert.refine: true`` fits the same forward model plus offset and ramp to the valid pixels of
   the map at its own resolution (:mod:`geostudy.learners.mogi.refine`; a regular subsample of at
   most ``invert.max_pixels``), starting from the network's estimate, with sandwich intervals under
   the residual's own spatial covariance. The fit replaces the network's estimate and intervals when
   it is plausible (under the map, depth and ΔV within a factor of the prior's range) and at least
   twice as tight (standard deviations of depth and ΔV below half the network's): the map then
   constrains the source better than the network's training did (a strong signal, a geometry or
   spacing unlike the training maps). Otherwise the network's estimate stands: with weak signals in
   correlated noise the fit mostly follows the atmosphere, and its linearised intervals are too
   narrow there, while the network has learnt the prior (``estimates.json`` says which was used).

It writes ``estimates.json``, ``invert_fields.nc`` (observed, modelled and residual LOS in metres on
the map's grid and coordinates) and ``figures/invert_maps.png``.
"""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geostudy.errors import ConfigError, DataError
from geostudy.io.grid import sha256, write_netcdf
from geostudy.learners.base import RunContext, RunResult
from geostudy.learners.mogi.config import InvertConfig, MogiConfig
from geostudy.learners.mogi.data import Simulator
from geostudy.learners.mogi.evaluate import Predictor
from geostudy.learners.mogi.forward import grid_coords
from geostudy.learners.mogi.model import TargetTransform, map_features
from geostudy.learners.mogi.observed import ObservedMap, read_observed
from geostudy.learners.mogi.refine import (
    SourceModel,
    fit_source,
    intervals,
    nuisance_design,
    sandwich_covariance,
    sharper,
    start_vector,
    white_covariance,
)
from geostudy.learners.mogi.train import QUANTILE_LEVELS, load_checkpoint

SHARPER = 0.5  # the fit replaces the network's estimate when its depth and ΔV are this much tighter (sd ratio)
PEAK_SMOOTHING = 0.6  # x the prior's median depth: the Gaussian (km) the peak is searched on


def prepare(cfg: MogiConfig) -> tuple[Predictor, Simulator, ObservedMap]:
    """Load the checkpoint and read the map, raising the user's errors before anything is written."""
    inv = cfg.invert
    _, predictor, sim = load_checkpoint(inv.checkpoint or "", device=cfg.device, key="invert.checkpoint")
    if sim.wrapped:
        raise ConfigError("the checkpoint was trained on wrapped phase (data.los.wavelength_m set); invert needs a "
                          "network trained on unwrapped LOS maps", file=inv.checkpoint, key="invert.checkpoint")
    if predictor.residual_quantiles is None:
        raise DataError("checkpoint of format 1 (an older model version) has no interval calibration; retrain",
                        file=inv.checkpoint, key="invert.checkpoint")
    return predictor, sim, read_observed(inv, sim.cfg.los)


@functools.lru_cache(maxsize=16)
def _gaussian_matrix(n: int, sigma: float) -> np.ndarray:
    """``(n, n)`` matrix of a 1-D Gaussian filter (``ndimage.gaussian_filter1d``'s kernel, truncated at 4 sigma,
    zero beyond the edges), so that a 2-D smoothing is two small matrix products (cached: read only)."""
    radius = int(4.0 * sigma + 0.5)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    offset = np.arange(n)[None, :] - np.arange(n)[:, None]  # column - row
    inside = np.abs(offset) <= radius
    return np.where(inside, taps[np.clip(offset + radius, 0, 2 * radius)], 0.0)


def _smooth(values: np.ndarray, valid: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """NaN-aware Gaussian smoothing: the smoothed values and the smoothed weight of valid pixels."""
    filled = np.where(valid, values, 0.0)
    w = valid.astype(np.float64)
    if sigma <= 0.3:
        return filled, w
    gy, gx = _gaussian_matrix(values.shape[0], float(sigma)), _gaussian_matrix(values.shape[1], float(sigma))
    num, den = gy @ np.stack([filled, w]) @ gx.T  # both fields in one pair of products
    return np.where(den > 1e-6, num / np.where(den > 1e-6, den, 1.0), 0.0) * (den > 1e-6), np.clip(den, 0.0, 1.0)


def _interpolate(a: np.ndarray, coords: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of ``a`` along ``axis`` at fractional indices ``coords``; a point outside
    ``[0, n - 1]`` is 0 (as ``ndimage.map_coordinates(order=1, mode="constant")``, one axis at a time)."""
    n = a.shape[axis]
    inside = (coords >= 0) & (coords <= n - 1)
    low = np.clip(np.floor(coords), 0, n - 1).astype(int)
    high = np.minimum(low + 1, n - 1)
    frac = np.where(inside, coords - low, 0.0)
    shape = [1] * a.ndim
    shape[axis] = len(coords)
    w_low, w_high = (np.where(inside, 1.0 - frac, 0.0).reshape(shape), np.where(high > low, frac, 0.0).reshape(shape))
    return np.take(a, low, axis=axis) * w_low + np.take(a, high, axis=axis) * w_high


def window(obs: ObservedMap, field: np.ndarray, centre_km: tuple[float, float], n: int, extent_km: float) -> np.ndarray:
    """``field`` (on the map's grid) resampled onto the training grid centred at ``centre_km``; NaN = hole.

    Bilinear and NaN-aware: values and valid weight are interpolated alike (a regular grid: along rows,
    then along columns) and a window pixel is a hole where under half of its weight is valid.
    """
    valid = np.isfinite(field)
    ratio = (extent_km / n) / obs.spacing_km
    smooth, weight = _smooth(field, valid, 0.4 * ratio if ratio > 1.3 else 0.0)
    axis = grid_coords(n, extent_km)[0][0]
    s = obs.spacing_km
    both = _interpolate(np.stack([smooth * weight, weight]), (axis + centre_km[1] - obs.y_km[0]) / s, 1)
    num, den = _interpolate(both, (axis + centre_km[0] - obs.x_km[0]) / s, 2)
    return np.where(den >= 0.5, num / np.where(den > 0, den, 1.0), np.nan)


def peak(obs: ObservedMap, field: np.ndarray, sigma_km: float) -> tuple[float, float]:
    """km position of the maximum of the field smoothed over ``sigma_km`` (inflation: the LOS peak).

    Smoothing over about the width of a typical source's pattern (a matched filter, roughly) keeps
    the atmosphere's small blobs from being taken for the source.
    """
    valid = np.isfinite(field)
    smooth, weight = _smooth(field, valid, sigma_km / obs.spacing_km)
    i, j = np.unravel_index(np.argmax(np.where(weight > 0.5, smooth, -np.inf)), field.shape)
    return float(obs.x_km[j]), float(obs.y_km[i])


@dataclass
class Inversion:
    """Estimates in km / m³ (positions from the map's centre), nuisance coefficients and the fitted fields."""

    network: dict[str, float]
    network_intervals: dict[str, tuple[float, float] | None]
    estimate: dict[str, float]
    intervals: dict[str, tuple[float, float] | None]
    nuisance: dict[str, float]
    modelled: np.ndarray  # on the map's grid (m), source + nuisance
    crop_centre_km: tuple[float, float]
    fitted_pixels: int
    seconds: float
    refined: bool  # the least-squares fit was used (refine on, and its source plausible)


def _points(obs: ObservedMap, stride: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Valid pixels (of a regular subsample): x, y (km), data, e per point, and the mask on the subsampled grid."""
    los = obs.los[::stride, ::stride]
    valid = np.isfinite(los)
    gx, gy = np.meshgrid(obs.x_km[::stride], obs.y_km[::stride])
    e = obs.e[:, ::stride, ::stride][:, valid] if obs.e.ndim == 3 else obs.e
    return gx[valid], gy[valid], los[valid], e, valid


class _MapGrid:
    """What every step of one inversion needs of the map's grid, computed once: pixel coordinates (km),
    the nuisance design and its normal equations on the valid pixels (the offset/ramp fit is linear,
    so each of its fits is one product and a k x k solve)."""

    def __init__(self, obs: ObservedMap, inv: InvertConfig, nu: float) -> None:
        self.shape = (len(obs.y_km), len(obs.x_km))
        self.x, self.y = np.tile(obs.x_km, self.shape[0]), np.repeat(obs.y_km, self.shape[1])  # flat rows, as meshgrid
        self.valid = np.isfinite(obs.los).ravel()
        self.los = obs.los.ravel()
        self.design, self.names = nuisance_design(self.x, self.y, inv.nuisance.offset, inv.nuisance.ramp)
        # invalid rows weighted 0 rather than indexed out: no copy of the design per fit
        self.weighted = self.design * self.valid[:, None]
        self.normal = self.weighted.T @ self.design  # a handful of well-scaled columns (x, y in km from the centre)
        self.model = SourceModel(self.x, self.y, obs.e.reshape(3, -1) if obs.e.ndim == 3 else obs.e, nu)

    def nuisance_field(self, nuisance: dict[str, float]) -> np.ndarray:
        """Offset + ramp on the whole grid (flat)."""
        return self.design @ np.array([nuisance.get(n, 0.0) for n in self.names])

    def fit_nuisance(self, resid: np.ndarray) -> dict[str, float]:
        """Least-squares offset and ramp of a flat field over the valid pixels."""
        if not self.names:
            return {}
        rhs = self.weighted.T @ np.where(self.valid, resid, 0.0)
        return dict(zip(self.names, np.linalg.solve(self.normal, rhs).tolist()))

    def source(self, p: np.ndarray) -> np.ndarray:
        """LOS of the source ``p`` (as in :mod:`refine`) on the whole grid (flat)."""
        return self.model.los(p)


def network_intervals(predictor: Predictor, est: dict[str, float], level: float,
                      amplitude: float) -> dict[str, tuple[float, float] | None]:
    """``est`` plus the validation residual quantiles (network units) at the central ``level``, of the
    validation maps whose amplitude (log-RMS input) was like this map's."""
    out: dict[str, tuple[float, float] | None] = {v: None for v in ("x0_km", "y0_km", "depth_km", "dv_m3")}
    k = int(np.searchsorted(predictor.residual_edges, amplitude))
    for var, per_bin in (predictor.residual_quantiles or {}).items():
        lo, hi = np.interp([0.5 - level / 2, 0.5 + level / 2], QUANTILE_LEVELS, per_bin[min(k, len(per_bin) - 1)])
        t = TargetTransform.transformed(var, np.array([est[var]]))[0]
        low, high = TargetTransform.physical(var, np.array([t + lo, t + hi]))
        out[var] = (float(low), float(high))
    return out


def _plausible(source: dict[str, float], obs: ObservedMap, sim: Simulator) -> bool:
    """Whether a least-squares source is one to use instead of the network's: under the map, depth and ΔV
    within a factor of the prior's range (a fit that wandered off along the depth-ΔV trade-off, or
    onto the atmosphere, is left out and the network's estimate stands)."""
    (d_lo, d_hi), (v_lo, v_hi) = sim.spec.value_range("depth_km"), sim.spec.value_range("dv_m3")
    finite = all(math.isfinite(v) for v in source.values())
    return (finite and obs.x_km[0] <= source["x0_km"] <= obs.x_km[-1] and obs.y_km[0] <= source["y0_km"] <= obs.y_km[-1]
            and d_lo / 2 <= source["depth_km"] <= 2 * d_hi and v_lo / 10 <= source["dv_m3"] <= 10 * v_hi)


def invert_map(predictor: Predictor, sim: Simulator, obs: ObservedMap, inv: InvertConfig) -> Inversion:
    """The network's estimate, then (``inv.refine``) least squares from it; see the module docstring."""
    start = time.perf_counter()
    grid, nu = sim.cfg.grid, float(sim.spec.central("nu"))
    g = _MapGrid(obs, inv, nu)
    field = (g.los - g.nuisance_field(g.fit_nuisance(g.los))).reshape(g.shape)  # the map less its plane
    centre = peak(obs, field, PEAK_SMOOTHING * float(sim.spec.central("depth_km")))
    win = window(obs, field, centre, grid.n, grid.extent_km)[None]
    features, scalar = map_features(win, False, predictor.mask)  # once for the net and the amplitude (not wrapped: prepare)
    pred = predictor.predict_features(features, scalar)
    guess = {v: float(pred[v][0]) for v in pred}
    net = {"x0_km": centre[0] + guess.get("x0_km", 0.0), "y0_km": centre[1] + guess.get("y0_km", 0.0),
           "depth_km": guess["depth_km"], "dv_m3": guess["dv_m3"]}
    net_int = network_intervals(predictor, {**guess, **net}, inv.level, float(scalar[0, 0]))
    p = start_vector(net)
    source = g.source(p)
    nuisance = g.fit_nuisance(g.los - source)  # the plane under the network's source (the refinement starts there)
    est, result_int = net, dict(net_int)
    fitted = int(g.valid.sum())
    used = False
    if inv.refine:
        stride = max(1, math.ceil(math.sqrt(fitted / inv.max_pixels)))
        x, y, data, e, valid = _points(obs, stride)
        fit = fit_source(x, y, data, e, net, nuisance, offset=inv.nuisance.offset, ramp=inv.nuisance.ramp, nu=nu)
        prior = {v: (net[v], *iv) for v, iv in net_int.items() if iv is not None}
        if _plausible(fit.source, obs, sim) and sharper(white_covariance(fit.jac, fit.residual), prior, inv.level, SHARPER):
            cov = sandwich_covariance(fit.jac, fit.residual, valid)
            if np.isfinite(cov).all() and sharper(cov, prior, inv.level, SHARPER):
                p, nuisance, fitted, used = fit.p[:4], fit.nuisance, len(data), True
                result_int = dict(intervals(fit.p, cov, inv.level))
                est = fit.source
                source = g.source(p)
    modelled = (source + g.nuisance_field(nuisance)).reshape(g.shape)
    return Inversion(net, net_int, {v: est[v] for v in net}, result_int, nuisance, modelled, centre, fitted,
                     time.perf_counter() - start, used)


def _entry(value: float, interval: tuple[float, float] | None, scale: float = 1.0, shift: float = 0.0) -> dict[str, Any]:
    lo, hi = (None, None) if interval is None else (shift + interval[0] * scale, shift + interval[1] * scale)
    return {"estimate": shift + value * scale, "low": lo, "high": hi}


def estimates_record(cfg: MogiConfig, sim: Simulator, obs: ObservedMap, res: Inversion) -> dict[str, Any]:
    """The content of ``estimates.json`` (positions in the map's own coordinates and unit)."""
    inv = cfg.invert
    c = 1000.0 / obs.raster.coord_m  # map units per km
    rate = "/yr" if obs.rate else ""

    def block(est: dict[str, float], ints: dict[str, tuple[float, float] | None]) -> dict[str, Any]:
        return {"depth_km": _entry(est["depth_km"], ints["depth_km"]), "dv_m3": _entry(est["dv_m3"], ints["dv_m3"]),
                "x0": _entry(est["x0_km"], ints["x0_km"], c, obs.ref[0]), "y0": _entry(est["y0_km"], ints["y0_km"], c, obs.ref[1])}

    valid = np.isfinite(obs.los)
    resid = (obs.los - res.modelled)[valid]
    scale = {"offset": 1000.0, "ramp_x": 1000.0, "ramp_y": 1000.0}
    names = {"offset": f"offset_mm{rate}", "ramp_x": f"ramp_east_mm{rate}_per_km", "ramp_y": f"ramp_north_mm{rate}_per_km"}
    return {
        "method": "network + least squares" if res.refined else "network",
        "refine": {"asked": inv.refine, "used": res.refined},
        "level": inv.level,
        **block(res.estimate, res.intervals),
        "dv_unit": f"m3{rate}",
        "position_unit": obs.raster.coord_unit,
        "interval_method": ("linearised least squares, sandwich covariance under the residual's spatial covariance"
                            if res.refined
                            else "quantiles of the network's validation residuals"),
        "network": block(res.network, res.network_intervals),
        "nuisance": {names[k]: v * scale[k] for k, v in res.nuisance.items()},
        "nuisance_reference": {"x": obs.ref[0], "y": obs.ref[1], "note": "offset at the map's centre; ramps per km east/north"},
        "rms_misfit_mm": float(np.sqrt(np.mean(resid**2)) * 1000.0),
        "pixels": int(obs.los.size), "valid_pixels": int(valid.sum()), "fitted_pixels": res.fitted_pixels,
        "network_window": {"centre": list(obs.to_map_units(*res.crop_centre_km)), "n": sim.cfg.grid.n,
                           "extent_km": sim.cfg.grid.extent_km},
        "seconds": res.seconds,
        "checkpoint": {"path": str(Path(inv.checkpoint or "").resolve()), "sha256": sha256(inv.checkpoint or "")},
        "map": {"path": str(Path(inv.map or "").resolve()), "sha256": obs.sha256, "units": obs.raster.units,
                "sign": inv.geometry.sign, "crs": obs.raster.crs},
    }


def run_invert(cfg: MogiConfig, ctx: RunContext) -> RunResult:
    """Read, invert, write (module docstring)."""
    from geostudy.learners.mogi.plots import invert_figure, save_figure

    predictor, sim, obs = prepare(cfg)
    ctx.log(f"invert: {obs.raster.values.shape[1]} x {obs.raster.values.shape[0]} map, "
            f"{int(np.isfinite(obs.los).sum())} valid pixels")
    # The checkpoint's simulator (its grid, prior, ν) is used, not the data section of this run's config.
    res = invert_map(predictor, sim, obs, cfg.invert)
    record = estimates_record(cfg, sim, obs, res)
    work = Path(ctx.workdir)
    work.mkdir(parents=True, exist_ok=True)
    (work / "estimates.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    r = obs.raster
    observed = np.where(np.isfinite(obs.los), obs.los, np.nan)
    nc = write_netcdf(work / "invert_fields.nc", {"observed": observed, "modelled": res.modelled,
                                                   "residual": observed - res.modelled}, r.x, r.y,
                      coord_units=r.coord_unit, units={k: "m/yr" if obs.rate else "m" for k in ("observed", "modelled", "residual")},
                      crs=r.crs, attrs={"source": "geostudy mogi invert", "sign": "positive towards the satellite",
                                        "map": str(cfg.invert.map)})
    figures: dict[str, Any] = {}
    if cfg.invert.figures:
        png = work / "invert_maps.png"
        figures["invert_maps"] = save_figure(invert_figure(obs, res.modelled, record), png)
    metrics = {
        "depth_km": record["depth_km"]["estimate"], "depth_km_low": record["depth_km"]["low"],
        "depth_km_high": record["depth_km"]["high"],
        "dv_m3": res.estimate["dv_m3"], "x0": record["x0"]["estimate"], "y0": record["y0"]["estimate"],
        "rms_misfit_mm": record["rms_misfit_mm"], "valid_pixels": record["valid_pixels"], "invert_seconds": res.seconds,
    }
    if res.intervals["dv_m3"] is not None:
        metrics["dv_m3_low"], metrics["dv_m3_high"] = res.intervals["dv_m3"]
    return RunResult(metrics={k: float(v) for k, v in metrics.items() if v is not None}, figures=figures,
                     files={"estimates": work / "estimates.json", "fields": nc}, tables={"invert": record})
