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
