"""The classical inversion: non-linear least squares of the same forward model on the same map.

``scipy.optimize.least_squares`` (trust-region reflective, analytic-free 2-point Jacobian) fits the
varying source parameters among x0, y0, depth and log10 ΔV (ν stays at its fixed or central value),
from a reasonable start: the centre of the training distributions (the prior medians), within
``physical`` bounds (depth 0.05-100 km, ΔV 1e3-1e12 m³, the epicentre inside the map) or, with
``bounds="prior"``, within the training ranges of the spec (the same prior knowledge the network
has; the stronger baseline when the truth lies in those ranges). The misfit is
the plain (white-noise) residual on valid pixels; for a wrapped map it is the wrapped phase
difference.
"""

from __future__ import annotations

import math
import time

import numpy as np
from scipy.optimize import least_squares

from geostudy.learners.mogi.data import Simulator
from geostudy.learners.mogi.forward import mogi_displacements, project_los, wrap_phase

FIT_VARS = ("x0_km", "y0_km", "depth_km", "dv_m3")


def fit_map(sim: Simulator, obs: np.ndarray, bounds: str = "physical") -> dict[str, float]:
    """Least-squares estimate of the source parameters of one ``(n, n)`` map.

    Args:
        sim: The simulator whose forward model and geometry are fitted.
        obs: The observed map (NaN where masked).
        bounds: ``physical`` or ``prior`` (module docstring).
    """
    spec, cfg = sim.spec, sim.cfg
    free = [v for v in FIT_VARS if v in spec.distributions]
    start = {v: spec.central(v) for v in ("x0_km", "y0_km", "depth_km", "dv_m3", "nu")}
    half = cfg.grid.extent_km / 2
    limits = {"x0_km": (-half, half), "y0_km": (-half, half), "depth_km": (0.05, 100.0), "dv_m3": (3.0, 12.0)}
    if bounds == "prior":
        for v in free:
            lo, hi = spec.value_range(v)
            if v == "dv_m3":
                lo, hi = math.log10(lo), math.log10(hi)
            limits[v] = (max(float(lo), limits[v][0]), min(float(hi), limits[v][1]))
    valid = ~np.isnan(obs)
    xs, ys, data = sim.x[valid], sim.y[valid], obs[valid].astype(np.float64)

    def unpack(p: np.ndarray) -> dict[str, float]:
        out = dict(start)
        for name, value in zip(free, p):
            out[name] = 10.0 ** value if name == "dv_m3" else value
        return out

    def residual(p: np.ndarray) -> np.ndarray:
        v = unpack(p)
        ux, uy, uz = mogi_displacements(xs, ys, v["x0_km"], v["y0_km"], v["depth_km"], v["dv_m3"], v["nu"])
        los = project_los(ux, uy, uz, cfg.los.incidence_deg, cfg.los.heading_deg)
        if sim.wrapped:
            diff = wrap_phase(los, cfg.los.wavelength_m) - data  # type: ignore[arg-type]
            return (diff + math.pi) % (2 * math.pi) - math.pi
        return los - data

    p0 = np.array([math.log10(start[v]) if v == "dv_m3" else start[v] for v in free])
    low = np.array([limits[v][0] for v in free])
    high = np.array([limits[v][1] for v in free])
    result = least_squares(residual, np.clip(p0, low, high), bounds=(low, high), x_scale="jac", method="trf")
    return unpack(result.x)


def fit_maps(sim: Simulator, maps: np.ndarray, bounds: str = "physical") -> tuple[dict[str, np.ndarray], float]:
    """Fit every map; returns the estimates (arrays per variable) and the seconds per map."""
    start = time.perf_counter()
    fits = [fit_map(sim, m, bounds) for m in maps]
    seconds = (time.perf_counter() - start) / max(len(maps), 1)
    return {k: np.array([f[k] for f in fits]) for k in fits[0]} if fits else {}, seconds


def fit_observed(x_km: np.ndarray, y_km: np.ndarray, data: np.ndarray, e: np.ndarray, spec, *, half_extent_km: float,
                 offset: bool = True, ramp: bool = True) -> dict[str, float]:
    """The classical inversion of a user's map: least squares of source + offset + ramp from the prior medians.

    The same ``least_squares`` set-up as :func:`fit_map` (trust-region reflective, 2-point Jacobian,
    depth and ΔV bounded to the prior's ranges, the epicentre inside the map), with the nuisance terms
    of :mod:`geostudy.learners.mogi.refine` as extra parameters starting at zero, on the valid pixels
    ``(x_km, y_km)`` (km from the map's centre) with unit vectors ``e`` to the satellite.
    """
    from geostudy.learners.mogi.refine import nuisance_design

    design, names = nuisance_design(x_km, y_km, offset, ramp)
    nu = float(spec.central("nu"))
    (d_lo, d_hi), (v_lo, v_hi) = spec.value_range("depth_km"), spec.value_range("dv_m3")
    p0 = np.array([0.0, 0.0, spec.central("depth_km"), math.log10(spec.central("dv_m3"))] + [0.0] * len(names))
    low = np.array([-half_extent_km, -half_extent_km, d_lo, math.log10(v_lo)] + [-np.inf] * len(names))
    high = np.array([half_extent_km, half_extent_km, d_hi, math.log10(v_hi)] + [np.inf] * len(names))

    def residual(p: np.ndarray) -> np.ndarray:
        ux, uy, uz = mogi_displacements(x_km, y_km, p[0], p[1], p[2], 10.0 ** p[3], nu)
        return e[0] * ux + e[1] * uy + e[2] * uz + design @ p[4:] - data

    result = least_squares(residual, np.clip(p0, low, high), bounds=(low, high), x_scale="jac", method="trf")
    p = result.x
    return {"x0_km": float(p[0]), "y0_km": float(p[1]), "depth_km": float(p[2]), "dv_m3": float(10.0 ** p[3]),
            **{n: float(v) for n, v in zip(names, p[4:])}}
