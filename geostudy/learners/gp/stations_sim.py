"""Synthetic station series on a space×time field with known truth (tests, the quick study, the bench).

The field over a square of side ``extent_m`` metres is

    f(s, t) = g(s, t) + cycle * (a(s) cos 2πt + b(s) sin 2πt) + trend * (t - t_mid) / span

with ``t`` in days: ``g`` a draw from Matérn 3/2 (range ``space_lengthscale * extent_m``) × rbf (``time_lengthscale``
steps), and ``a``, ``b`` smooth Matérn 3/2 fields (twice the range), so the daily cycle's amplitude and phase
vary in space. Stations sit at uniform random places; each value is missing with probability ``p_missing``
and observed with Gaussian noise of std ``noise``. Extra stations (``n_heldout``) get the noise-free truth,
for scoring.

:func:`true_posterior_mean` is the field's conditional mean given the observed values under the
simulator's own covariance and trend: the least mean-square-error prediction any method can make on
average, which bounds what a better kernel or mean could buy on these data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geostudy.io.stations import StationTable
from geostudy.learners.gp.stations_config import StationSimConfig

SIM_ORIGIN = "2024-01-01T00:00:00"


@dataclass
class SimStations:
    """The observed table, the same stations' noise-free truth, and held-out stations' truth (``None`` if none)."""

    observed: StationTable
    truth: np.ndarray
    heldout: StationTable | None


def _space_time(cfg: StationSimConfig, xy: np.ndarray, days: np.ndarray):  # noqa: ANN202
    """The simulator's covariances: field space/time, cycle space/time (see the module docstring)."""
    dist = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1))
    ks = _matern32(dist / (cfg.space_lengthscale * cfg.extent_m))
    ks_cycle = _matern32(dist / (2 * cfg.space_lengthscale * cfg.extent_m))
    steps = np.arange(len(days), dtype=float)
    kt = np.exp(-0.5 * ((steps[:, None] - steps[None]) / cfg.time_lengthscale) ** 2)
    return ks, kt, ks_cycle, np.cos(2 * np.pi * (days[:, None] - days[None]))


def _trend(cfg: StationSimConfig, days: np.ndarray) -> np.ndarray:
    span = max(float(days[-1] - days[0]), 1e-9)
    return cfg.trend * (days - days.mean()) / span


def _matern32(d: np.ndarray) -> np.ndarray:
    r = np.sqrt(3.0) * d
    return (1 + r) * np.exp(-r)


def _chol(k: np.ndarray) -> np.ndarray:
    return np.linalg.cholesky(k + 1e-8 * np.trace(k) / len(k) * np.eye(len(k)))


def simulate_stations(cfg: StationSimConfig, seed: int, n_heldout: int = 0) -> SimStations:
    """Draw the field at ``cfg.n_stations + n_heldout`` random places and ``cfg.n_times`` times (see the module)."""
    rng = np.random.default_rng(seed)
    n = cfg.n_stations + n_heldout
    xy = rng.random((n, 2)) * cfg.extent_m
    days = np.arange(cfg.n_times) * cfg.step_hours / 24.0
    ks, kt, ks_cycle, _ = _space_time(cfg, xy, days)
    ls, ls_cycle, lt = _chol(ks), _chol(ks_cycle), _chol(kt)
    g = lt @ rng.standard_normal((cfg.n_times, n)) @ ls.T
    a, b = ls_cycle @ rng.standard_normal(n), ls_cycle @ rng.standard_normal(n)
    phase = 2 * np.pi * days[:, None]
    cycle = cfg.cycle * (a[None] * np.cos(phase) + b[None] * np.sin(phase))
    trend = _trend(cfg, days)
    truth = g + cycle + trend[:, None]
    noisy = truth + cfg.noise * rng.standard_normal(truth.shape)
    keep = cfg.n_stations
    observed = noisy[:, :keep].copy()
    observed[rng.random(observed.shape) < cfg.p_missing] = np.nan
    for s in np.flatnonzero(~np.isfinite(observed).any(0)):  # every station keeps at least one value
        observed[0, s] = noisy[0, s]
    ids = np.array([f"S{i:04d}" for i in range(n)])
    table = StationTable(ids=ids[:keep], x=xy[:keep, 0], y=xy[:keep, 1], times=days, values=observed,
                         source="synthetic stations", variable="value", units="K", time_origin=SIM_ORIGIN)
    held = None
    if n_heldout:
        held = StationTable(ids=ids[keep:], x=xy[keep:, 0], y=xy[keep:, 1], times=days, values=truth[:, keep:],
                            source="synthetic held-out stations", variable="value", units="K", time_origin=SIM_ORIGIN)
    return SimStations(observed=table, truth=truth[:, :keep], heldout=held)


def true_posterior_mean(cfg: StationSimConfig, observed: StationTable, targets: np.ndarray) -> np.ndarray:
    """``(T, P)`` mean of the true field at ``targets`` (metres) given ``observed`` under the simulator's own model.

    The covariance of the observed values is ``Kt ⊗ Ks + cycle² C ⊗ Kc + noise² I`` (``C`` the cosine of
    the time differences in days: the daily cycle's draw) restricted to the observed values, and the
    trend is known; the system is solved by conjugate gradients preconditioned with the first term
    (:func:`~geostudy.learners.gp.kron._cg`), so nothing of size ``(T S)²`` is formed.
    """
    from geostudy.learners.gp.kron import _cg

    n_s = observed.n_stations
    ks, kt, ks_cycle, kc = _space_time(cfg, np.concatenate([observed.coords, np.asarray(targets, float)]),
                                       observed.times)
    kc = cfg.cycle**2 * kc
    trend = _trend(cfg, observed.times)[:, None]
    mask = np.isfinite(observed.values)
    n2 = max(cfg.noise**2, 1e-10)
    ks_obs, kc_obs = ks[:n_s, :n_s], ks_cycle[:n_s, :n_s]
    lt, qt = np.linalg.eigh(kt)
    ls, qs = np.linalg.eigh(ks_obs)
    w = 1.0 / (np.maximum(lt, 0.0)[:, None] * np.maximum(ls, 0.0)[None, :] + n2)

    def matvec(v: np.ndarray) -> np.ndarray:
        return np.where(mask, kt @ v @ ks_obs + kc @ v @ kc_obs + n2 * v, 0.0)

    def precond(v: np.ndarray) -> np.ndarray:
        return np.where(mask, qt @ ((qt.T @ v @ qs) * w) @ qs.T, 0.0)

    alpha, _ = _cg(matvec, precond, np.where(mask, observed.values - trend, 0.0))
    return trend + kt @ alpha @ ks[:n_s, n_s:] + kc @ alpha @ ks_cycle[:n_s, n_s:]
