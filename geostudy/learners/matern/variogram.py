"""The geostatistician's quick estimator: an empirical variogram and a least-squares Matérn fit (gstools).

A baseline beside the MLE: gstools' Matheron estimator on its default bins (up to a third of the
box diagonal), then its ``fit_variogram`` (soft-L1 least squares) of the Matérn model with the
smoothness, variance and nugget held at their known values, as the network and the MLE hold them;
only the range is fitted, inside the same box as the MLE's. gstools writes the Matérn with
``sqrt(nu) d / len_scale`` where this package writes ``sqrt(2 nu) d / range``, so
``range = sqrt(2) len_scale``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import gstools as gs
import numpy as np

RANGE_PER_LEN_SCALE = math.sqrt(2.0)


@dataclass
class VariogramFit:
    """One field's fitted range (in the coordinates' units) and the seconds it took."""

    range: float
    seconds: float


def gstools_matern(rho: float, nu: float, variance: float = 1.0, nugget: float = 0.0) -> gs.Matern:
    """The gstools model equal to this package's Matérn of range ``rho``."""
    return gs.Matern(dim=2, var=variance, len_scale=rho / RANGE_PER_LEN_SCALE, nu=nu, nugget=nugget)


def fit_variogram_range(coords: np.ndarray, values: np.ndarray, *, nu: float, variance: float, nugget: float,
                        bounds: tuple[float, float]) -> VariogramFit:
    """Fit the range of a Matérn variogram to a field's empirical variogram.

    Args:
        coords: ``(n, 2)`` locations; ``values``: ``(m, n)`` replicates (or ``(n,)``).
        nu, variance, nugget: The known smoothness, variance and nugget (held fixed).
        bounds: ``(low, high)`` of the range.
    """
    t0 = time.perf_counter()
    z = np.atleast_2d(values)
    pos = (coords[:, 0], coords[:, 1])
    bin_center, gamma = gs.vario_estimate(pos, z if len(z) > 1 else z[0])
    model = gstools_matern(float(np.sqrt(bounds[0] * bounds[1])), nu, variance, nugget)
    model.len_scale_bounds = [bounds[0] / RANGE_PER_LEN_SCALE, bounds[1] / RANGE_PER_LEN_SCALE]
    model.fit_variogram(bin_center, gamma, var=False, nugget=False, nu=False)
    return VariogramFit(range=float(model.len_scale) * RANGE_PER_LEN_SCALE, seconds=time.perf_counter() - t0)
