"""One Fisher-scoring update, shared by the exact (``refine.py``) and Vecchia (``vecchia.py``) likelihoods.

Both score the same log-parameters inside the same bounds; they differ only in how the score and the
information matrix are computed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def bound_arrays(free: Sequence[str], bounds: Mapping[str, tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of the ``free`` log-parameters, in their order."""
    return np.array([bounds[name][0] for name in free]), np.array([bounds[name][1] for name in free])


def scoring_step(theta: np.ndarray, score: np.ndarray, information: np.ndarray, lower: np.ndarray,
                 upper: np.ndarray) -> np.ndarray | None:
    """``theta + information^-1 score`` kept in the bounds; None when the information is singular or the step
    is not finite (the caller then stops where it is)."""
    try:
        delta = np.linalg.solve(information, score)
    except np.linalg.LinAlgError:
        return None
    if not np.all(np.isfinite(delta)):
        return None
    return np.clip(theta + delta, lower, upper)
