"""Point patterns in the unit square: uniform, Poisson, clustered (Thomas) and grid."""

from __future__ import annotations

import math

import numpy as np

from geostudy.errors import ConfigError

PATTERNS = ("uniform", "poisson", "cluster", "grid")
MIN_POINTS = 10


def sample_locations(
    pattern: str,
    n: int,
    rng: np.random.Generator,
    *,
    cluster_parents: float = 8.0,
    cluster_scale: float = 0.05,
    min_points: int = MIN_POINTS,
) -> np.ndarray:
    """Draw one point pattern in ``[0, 1]^2``.

    Args:
        pattern: ``uniform`` (exactly ``n`` points), ``poisson`` (Poisson(n) points, uniform positions),
            ``cluster`` (Thomas process: Poisson(``cluster_parents``) parents, Poisson children around each,
            ``n`` points expected in all, Gaussian spread ``cluster_scale``; children outside the square are
            dropped) or ``grid`` (the ``ceil(sqrt(n))``-square regular grid, cell centres).
        n: Number of points, or its expectation for the random-count patterns.
        rng: NumPy generator.
        min_points: Random-count patterns are redrawn until they hold at least this many points.

    Returns:
        ``(k, 2)`` float64 coordinates.
    """
    if pattern == "uniform":
        return rng.random((n, 2))
    if pattern == "grid":
        side = max(2, math.ceil(math.sqrt(n)))
        g = (np.arange(side) + 0.5) / side
        xx, yy = np.meshgrid(g, g)
        return np.stack([xx.ravel(), yy.ravel()], axis=1)
    for _ in range(1000):
        if pattern == "poisson":
            pts = rng.random((rng.poisson(n), 2))
        elif pattern == "cluster":
            pts = _thomas(n, rng, cluster_parents, cluster_scale)
        else:
            raise ConfigError(f"must be one of {', '.join(PATTERNS)}, but got {pattern!r}", key="data.locations")
        if len(pts) >= min_points:
            return pts
    raise ConfigError(f"could not draw {min_points} points with n={n}; raise data.n", key="data.n")


def _thomas(n: int, rng: np.random.Generator, parents: float, scale: float) -> np.ndarray:
    n_parents = max(1, rng.poisson(parents))
    centres = rng.random((n_parents, 2))
    counts = rng.poisson(n / parents, size=n_parents)
    pts = np.repeat(centres, counts, axis=0) + scale * rng.standard_normal((int(counts.sum()), 2))
    inside = np.all((pts >= 0.0) & (pts <= 1.0), axis=1)
    return pts[inside]


def to_unit_square(coords: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Shift and isotropically scale coordinates into ``[0, 1]^2`` (the longer side becomes 1).

    Returns:
        ``(scaled, origin, scale)`` with ``scaled = (coords - origin) / scale``; a distance in the data's
        units is ``scale`` times a distance in the unit square.
    """
    origin = coords.min(axis=0)
    scale = float((coords.max(axis=0) - origin).max())
    if not scale > 0:
        raise ValueError("all points are at the same location")
    return (coords - origin) / scale, origin, scale
