"""Mogi point source in an elastic half-space, radar line-of-sight projection and phase wrapping.

Coordinates are east (x), north (y), up (z); horizontal positions in km, displacements in metres,
volume change in m³. For a source at (x0, y0) and depth d with volume change ΔV and Poisson ratio ν,
with r the horizontal distance to the epicentre and R² = r² + d² (Mogi 1958):

    uz = (1 − ν) ΔV d / (π R³),   ur = (1 − ν) ΔV r / (π R³),   ux = ur (x − x0) / r,   uy = ur (y − y0) / r

so that uz at the epicentre is (1 − ν) ΔV / (π d²).

Line-of-sight convention (:func:`los_vector`)
---------------------------------------------
``heading_deg`` is the azimuth of the satellite's flight direction, clockwise from north (about
-10° ascending, about -170° or 190° descending for Sentinel-1); the radar is right-looking, so it
looks towards azimuth heading + 90° and sits on the opposite side, towards heading − 90°.
``incidence_deg`` is the angle between the look direction and the vertical at the ground. The unit
vector from the ground to the satellite is

    e = (−sin θ cos h,  sin θ sin h,  cos θ)     (east, north, up)

and the LOS displacement ``d_los = e · (ux, uy, uz)`` is positive for motion *towards* the
satellite (range decrease): pure uplift gives cos θ · uz.

Phase (:func:`wrap_phase`): ``φ = 4π d_los / λ`` wrapped to [−π, π), so a positive phase is motion
towards the satellite and one fringe (2π) is λ/2 of LOS motion.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

KM = 1000.0


def grid_coords(n: int, extent_km: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (km) of an ``n × n`` grid covering ``[-extent/2, extent/2]²``.

    Returns:
        ``(x, y)`` arrays of shape ``(n, n)``: rows run south to north (y increases with the row
        index), columns west to east.
    """
    dx = extent_km / n
    axis = -extent_km / 2 + dx * (np.arange(n) + 0.5)
    x, y = np.meshgrid(axis, axis)
    return x, y


def mogi_displacements(
    x_km: np.ndarray,
    y_km: np.ndarray,
    x0_km: np.ndarray | float,
    y0_km: np.ndarray | float,
    depth_km: np.ndarray | float,
    dv_m3: np.ndarray | float,
    nu: np.ndarray | float = 0.25,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Surface displacements (m) of Mogi sources, broadcast over a batch.

    Args:
        x_km, y_km: Observation points (km), e.g. from :func:`grid_coords`, shape ``(ny, nx)``.
        x0_km, y0_km, depth_km, dv_m3, nu: Source parameters, scalars or arrays of shape ``(B,)``;
            depth positive downwards.

    Returns:
        ``(ux, uy, uz)``, each of shape ``(ny, nx)`` for scalar parameters or ``(B, ny, nx)``.
    """
    x_arr = np.asarray(x_km)
    dtype = np.float32 if x_arr.dtype == np.float32 else np.float64  # float32 grids: fast batches
    params: list[Any] = [np.asarray(p, dtype=dtype) for p in (x0_km, y0_km, depth_km, dv_m3, nu)]
    batched = any(p.ndim > 0 for p in params)
    x0, y0, d, dv, nu_ = (p.reshape(-1, 1, 1) if batched else p for p in params)
    km, pi = np.asarray(KM, dtype=dtype), np.asarray(math.pi, dtype=dtype)
    dx = (x_arr - x0) * km
    dy = (np.asarray(y_km) - y0) * km
    dz = d * km
    r2 = dx * dx + dy * dy + dz * dz
    c = (1 - nu_) * dv / (pi * r2 * np.sqrt(r2))
    return c * dx, c * dy, c * dz


def los_vector(incidence_deg: float, heading_deg: float) -> np.ndarray:
    """Unit vector (east, north, up) from the ground to a right-looking satellite (module docstring)."""
    t, h = math.radians(incidence_deg), math.radians(heading_deg)
    return np.array([-math.sin(t) * math.cos(h), math.sin(t) * math.sin(h), math.cos(t)])


def project_los(ux: np.ndarray, uy: np.ndarray, uz: np.ndarray, incidence_deg: float, heading_deg: float) -> np.ndarray:
    """LOS displacement, positive towards the satellite (see the module docstring)."""
    e = los_vector(incidence_deg, heading_deg)
    return e[0] * ux + e[1] * uy + e[2] * uz


def wrap_phase(los_m: np.ndarray, wavelength_m: float) -> np.ndarray:
    """Interferometric phase ``4π d_los / λ`` wrapped to [−π, π)."""
    phase = 4.0 * math.pi * np.asarray(los_m) / wavelength_m
    return (phase + math.pi) % (2.0 * math.pi) - math.pi
