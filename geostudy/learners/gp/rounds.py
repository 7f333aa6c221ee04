"""How many steering rounds: the out-of-fold error of each round's reconstruction, stations only.

Each steering round re-reads the structure tensor from the previous round's GP mean. A sharper pilot
helps on some images and hurts on others, and the choice must be made without held-out truth. The
stations are split into folds; for each fold the whole chain (biharmonic pilot, then every round's GP
mean as the next pilot) is rebuilt from the other stations only, with each round's fitted
hyperparameters, and the fold's stations are predicted by each round. Rebuilding the pilots matters:
a pilot that saw a station's value shapes the kernel around it, and the plain leave-one-out error of
a steering GP is then far too optimistic (e.g. 0.092 against a real 0.102 on astronaut).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from geostudy.learners.gp.model import FittedGP, station_system

# inputs_of(pilot) -> the (h*w, d) model inputs of every pixel for that pilot (its steering covariances).
InputsFn = Callable[[np.ndarray], np.ndarray]


def posterior_mean(fitted: FittedGP, x_train: np.ndarray, y_train: np.ndarray, x: np.ndarray,
                   batch: int = 4096) -> np.ndarray:
    """The exact GP mean at ``x`` given ``(x_train, y_train)`` with ``fitted``'s kernel, mean and noise (fixed)."""
    model = fitted.model
    param = next(model.parameters())
    as_t = lambda a: torch.as_tensor(a, dtype=param.dtype, device=param.device)  # noqa: E731
    with torch.no_grad():
        xt = as_t(x_train)
        k, r = station_system(model, fitted.likelihood, xt, as_t(y_train))
        alpha = torch.cholesky_solve(r[:, None], torch.linalg.cholesky(k))
        out = []
        for lo in range(0, len(x), batch):
            xb = as_t(x[lo: lo + batch])
            out.append((model.covar_module(xb, xt).to_dense() @ alpha).squeeze(-1) + model.mean_module(xb))
    return torch.cat(out).cpu().numpy().astype(np.float64) if out else np.zeros(0)


def round_errors(fits: list[FittedGP], inputs_of: InputsFn, inpaint: Callable[[np.ndarray], np.ndarray],
                 shape: tuple[int, int], obs_idx: np.ndarray, y_obs: np.ndarray, folds: int,
                 seed: int) -> np.ndarray:
    """Out-of-fold RMSE (normalised units) of each round, ``(len(fits),)``.

    Args:
        fits: The GP of each round, fitted on all stations (their hyperparameters are reused).
        inputs_of: Model inputs of every pixel for a pilot image (its steering covariances).
        inpaint: The first pilot from a ``(h, w)`` mask of the stations to use (the run's pilot_of).
        shape: ``(h, w)`` of the image.
        obs_idx: Flat pixel indices of the stations; ``y_obs`` their normalised values.
        folds: Number of folds; ``seed`` seeds the split.
    """
    fold_of = np.random.default_rng(seed).permutation(len(obs_idx)) % folds
    sse = np.zeros(len(fits))
    for f in range(folds):
        held, kept = fold_of == f, fold_of != f
        if not held.any():
            continue
        mask = np.zeros(shape[0] * shape[1], dtype=bool)
        mask[obs_idx[kept]] = True
        pilot = inpaint(mask.reshape(shape))
        for r, fitted in enumerate(fits):
            x_model = inputs_of(pilot)
            x_kept = x_model[obs_idx[kept]]
            pred = posterior_mean(fitted, x_kept, y_obs[kept], x_model[obs_idx[held]])
            sse[r] += float(((pred - y_obs[held]) ** 2).sum())
            if r < len(fits) - 1:  # normalised units: the steering covariances ignore the pilot's scale
                pilot = posterior_mean(fitted, x_kept, y_obs[kept], x_model).reshape(shape)
    return np.sqrt(sse / len(obs_idx))
