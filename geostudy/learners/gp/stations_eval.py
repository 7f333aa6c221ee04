"""Held-out-station evaluation: k-fold over whole stations (optionally spatially blocked) and its baseline.

A fold holds out whole stations: the model of that fold is fitted (hyperparameters, value scaling and
posterior) on the other stations only and predicts the held-out stations' whole series. RMSE, MAE, NLPD
and 95% coverage are then taken over every observed value of every station, each predicted by the fold
that held it out. The baseline is what a user would otherwise grid each time step with: a verde
``Spline`` (biharmonic) per time step, its damping chosen by verde's own cross-validation, on the same
folds.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from geostudy.errors import ConfigError

SPLINE_DAMPINGS: tuple[float | None, ...] = (None, 1e-6, 1e-4, 1e-2)


def station_folds(coords: np.ndarray, k: int, seed: int, block_spacing: float | None = None) -> list[np.ndarray]:
    """Indices of the held-out stations of each of ``k`` folds (every station in exactly one fold).

    Args:
        coords: ``(S, 2)`` station coordinates in metres.
        k: Number of folds (at most the number of stations).
        seed: Seeds the shuffling.
        block_spacing: None for random folds; else squares of this side (metres) are held out together,
            as verde's ``BlockKFold`` does, so a held-out station's close neighbours are held out with it.

    Raises:
        ConfigError: more folds than stations (or blocks).
    """
    n = len(coords)
    if k > n:
        raise ConfigError(f"must be at most the number of stations ({n}), but got {k}", key="eval.station_folds")
    if block_spacing is None:
        order = np.random.default_rng(seed).permutation(n)
        return [np.sort(part) for part in np.array_split(order, k)]
    import verde as vd

    try:
        splitter = vd.BlockKFold(spacing=block_spacing, n_splits=k, shuffle=True, random_state=seed, balance=True)
        folds = [np.sort(test) for _, test in splitter.split(coords)]
    except ValueError as err:
        raise ConfigError(f"{block_spacing} m blocks cannot make {k} folds: {err}", key="eval.block_spacing") from None
    return [f for f in folds if len(f)]


@dataclass
class CrossValidation:
    """Out-of-fold predictions ``(T, S)`` (latent mean, predictive variance) and the folds used."""

    mean: np.ndarray
    var: np.ndarray
    folds: list[np.ndarray]


def cross_validate(values: np.ndarray, folds: list[np.ndarray],
                   fit_predict: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
                   log: Callable[[str], None] | None = None) -> CrossValidation:
    """Run ``fit_predict(train_idx, test_idx) -> (mean, predictive var)`` ``(T, len(test))`` per fold."""
    n_t, n_s = values.shape
    mean, var = np.full((n_t, n_s), np.nan), np.full((n_t, n_s), np.nan)
    every = np.arange(n_s)
    for i, test in enumerate(folds):
        train = np.setdiff1d(every, test)
        m, v = fit_predict(train, test)
        mean[:, test], var[:, test] = m, v
        if log:
            log(f"gp stations: fold {i + 1}/{len(folds)} done ({len(test)} held-out stations)")
    return CrossValidation(mean=mean, var=var, folds=folds)


def spline_per_time(coords: np.ndarray, values: np.ndarray, targets: np.ndarray, *,
                    dampings: tuple[float | None, ...] = SPLINE_DAMPINGS, per_step_cv: bool = False,
                    cv_steps: int = 5) -> np.ndarray:
    """verde's biharmonic ``Spline`` fitted at each time step on the stations that have a value.

    The damping is chosen by verde's ``SplineCV`` (5-fold) among ``dampings``: at every time step
    with ``per_step_cv``, else once, as the most frequent choice over ``cv_steps`` evenly spaced steps
    (a fraction of the cost). Times with fewer than 3 values predict their mean (NaN with none).

    Args:
        coords: ``(S, 2)`` station coordinates (metres).
        values: ``(T, S)`` values, NaN where missing.
        targets: ``(P, 2)`` coordinates to predict.

    Returns:
        ``(T, P)`` predictions.
    """
    import verde as vd

    n_t = values.shape[0]
    counts = np.isfinite(values).sum(1)

    def choose(t: int) -> float | None:
        ok = np.isfinite(values[t])
        if ok.sum() < 10 or len(dampings) == 1:
            return dampings[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cv = vd.SplineCV(dampings=dampings).fit((coords[ok, 0], coords[ok, 1]), values[t, ok])
        return cv.damping_

    fixed: float | None = dampings[0]
    if not per_step_cv:
        steps = [int(t) for t in np.unique(np.linspace(0, n_t - 1, min(cv_steps, n_t)).round()) if counts[int(t)] >= 10]
        picks = [choose(t) for t in steps]
        fixed = max(set(picks), key=picks.count, default=dampings[0]) if picks else dampings[0]
    out = np.full((n_t, len(targets)), np.nan)
    for t in range(n_t):
        ok = np.isfinite(values[t])
        if ok.sum() < 3:
            out[t] = np.nanmean(values[t]) if ok.any() else np.nan
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            spline = vd.Spline(damping=choose(t) if per_step_cv else fixed).fit((coords[ok, 0], coords[ok, 1]),
                                                                               values[t, ok])
            out[t] = spline.predict((targets[:, 0], targets[:, 1]))
    return out


def series_metrics(truth: np.ndarray, mean: np.ndarray, var: np.ndarray | None) -> dict[str, float]:
    """Point metrics over every finite value of ``truth`` (see :func:`~geostudy.learners.gp.evaluate.point_metrics`)."""
    from geostudy.learners.gp.evaluate import point_metrics

    ok = np.isfinite(truth) & np.isfinite(mean)
    return point_metrics(truth[ok], mean[ok], None if var is None else var[ok])


def nearest_distance(coords: np.ndarray, folds: list[np.ndarray]) -> np.ndarray:
    """``(S,)`` distance from each station to the nearest station that its fold trained on."""
    from scipy.spatial import cKDTree

    out = np.full(len(coords), np.nan)
    every = np.arange(len(coords))
    for test in folds:
        train = np.setdiff1d(every, test)
        if len(train):
            out[test] = cKDTree(coords[train]).query(coords[test])[0]
    return out
