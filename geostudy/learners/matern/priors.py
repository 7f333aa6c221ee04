"""Priors on the Matérn parameters and their unconstrained (log) parametrisation."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from geostudy.errors import ConfigError


@dataclass
class Prior:
    """One parameter's prior.

    Attributes:
        dist: ``uniform`` on [low, high], ``loguniform`` (uniform in log) or ``fixed`` (always ``value``,
            not estimated).
        low, high: Bounds, > 0 (parameters are estimated on the log scale).
        value: The value when ``dist: fixed`` (>= 0; a fixed nugget may be 0).
    """

    dist: Literal["uniform", "loguniform", "fixed"] = "uniform"
    low: float = 0.05
    high: float = 0.35
    value: float = 1.0

    def validate(self, file: str | Path | None, prefix: str) -> None:
        if self.dist == "fixed":
            if not self.value >= 0:
                raise ConfigError(f"must be >= 0, but got {self.value!r}", file=file, key=f"{prefix}value")
            return
        if not self.low > 0:
            raise ConfigError(f"prior bound must be > 0 (parameters are estimated on the log scale), "
                              f"but got {self.low!r}", file=file, key=f"{prefix}low")
        if not self.high > self.low:
            raise ConfigError(f"must be > low ({self.low!r}), but got {self.high!r}", file=file, key=f"{prefix}high")

    @property
    def free(self) -> bool:
        return self.dist != "fixed"

    def sample(self, size: int, rng: np.random.Generator) -> np.ndarray:
        if self.dist == "fixed":
            return np.full(size, self.value)
        if self.dist == "uniform":
            return rng.uniform(self.low, self.high, size)
        return np.exp(rng.uniform(math.log(self.low), math.log(self.high), size))

    def log_bounds(self) -> tuple[float, float]:
        """Bounds of the log-parameter (for clamping and plots)."""
        if self.dist == "fixed":
            v = math.log(max(self.value, 1e-300))
            return v, v
        return math.log(self.low), math.log(self.high)


# Every parameter the simulator knows, in this order; the estimator outputs the free ones.
PARAM_NAMES = ("range", "time_range", "variance", "nugget")
# Metric/short names, used in metric keys such as val_rmse_log_range.
LOG_NAMES = {"range": "log_range", "time_range": "log_time_range", "variance": "log_variance",
             "nugget": "log_nugget"}
