"""The dataset spec: which source parameters are fixed, how the others are drawn, what the test probes.

A spec (the ``data.spec`` section of ``configs/mogi.yaml``)::

    fixed: {x0_km: 0.0, nu: 0.25}              # constant values
    distributions:                              # the varying ones
      depth_km: {dist: uniform, low: 2.0, high: 8.0}
      dv_m3:    {dist: loguniform, low: 1.0e6, high: 1.0e8}
    train: {}                                   # optional quantile interval per variable
    test:  {depth_km: [-0.15, 1.15]}            # quantile intervals of the test draws

Distributions and their parameters (``dist`` names one):

==============  ========================  ==============================================
``uniform``     ``low``, ``high``         quantile q ↦ low + q (high − low)
``loguniform``  ``low``, ``high`` (> 0)   quantile q ↦ low (high / low)^q
``normal``      ``mean``, ``std``         scipy.stats.norm
``lognormal``   ``mu``, ``sigma``         log(value) ~ normal(mu, sigma) (natural log)
``exponential`` ``scale``, ``loc`` (0)    value − loc ~ exponential with mean ``scale``
==============  ========================  ==============================================

Draws use the inverse CDF: a variable with training interval ``[a, b]`` (quantiles, default
``[0, 1]``) is drawn as Q(U(a, b)), i.e. truncated to its training range [Q(a), Q(b)]. A ``test``
interval ``[a, b]`` draws the test set as Q(U(a, b)); for ``uniform`` and ``loguniform`` the
quantile function is extended linearly (in log for loguniform) beyond [0, 1], so ``[-0.2, 1.2]``
reaches 20 % of the range past each end and probes extrapolation. The other distributions take
quantiles in [0, 1] only (open ends where they are unbounded): truncate their training draws with
``train`` to leave room for the test. A test sample is *in range* when every varying variable lies
in its training range.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from geostudy.errors import ConfigError

# Source parameters of the simulator and their defaults when neither fixed nor distributed.
VARIABLES: dict[str, float] = {"x0_km": 0.0, "y0_km": 0.0, "depth_km": 5.0, "dv_m3": 1.0e7, "nu": 0.25}
# Parameters each distribution takes (required, then optional with defaults).
DISTRIBUTIONS: dict[str, tuple[tuple[str, ...], dict[str, float]]] = {
    "uniform": (("low", "high"), {}),
    "loguniform": (("low", "high"), {}),
    "normal": (("mean", "std"), {}),
    "lognormal": (("mu", "sigma"), {}),
    "exponential": (("scale",), {"loc": 0.0}),
}
# Physical lower bounds: a variable's training and test ranges must stay above these.
POSITIVE = {"depth_km": "depth must be > 0 km (below the surface)", "dv_m3": "volume change must be > 0 m³ (inflation; log ΔV is a target)"}


@dataclass(frozen=True)
class Distribution:
    """One named distribution with its parameters; quantile function extended where documented."""

    name: str
    params: dict[str, float]

    @property
    def extrapolates(self) -> bool:
        """True when quantiles outside [0, 1] are allowed (uniform and loguniform)."""
        return self.name in ("uniform", "loguniform")

    @property
    def log_scale(self) -> bool:
        """True when the variable is naturally shown and gridded on a log axis."""
        return self.name in ("loguniform", "lognormal")

    def ppf(self, q: np.ndarray | float | list[float]) -> np.ndarray:
        """Quantile function Q(q)."""
        q = np.asarray(q, dtype=np.float64)
        p = self.params
        if self.name == "uniform":
            return p["low"] + q * (p["high"] - p["low"])
        if self.name == "loguniform":
            return np.exp(math.log(p["low"]) + q * (math.log(p["high"]) - math.log(p["low"])))
        if self.name == "normal":
            return stats.norm.ppf(q, loc=p["mean"], scale=p["std"])
        if self.name == "lognormal":
            return stats.lognorm.ppf(q, s=p["sigma"], scale=math.exp(p["mu"]))
        return stats.expon.ppf(q, loc=p["loc"], scale=p["scale"])


def parse_distribution(var: str, raw: Any, *, file: str | Path | None, key: str) -> Distribution:
    """Validate ``{dist: NAME, PARAM: value, ...}``; errors name the key and list what is allowed."""
    if not isinstance(raw, Mapping) or "dist" not in raw:
        raise ConfigError(f"must be a mapping with 'dist' (one of {', '.join(DISTRIBUTIONS)}), but got {raw!r}",
                          file=file, key=key)
    name = raw["dist"]
    if name not in DISTRIBUTIONS:
        raise ConfigError(f"unknown distribution {name!r}; allowed: {', '.join(DISTRIBUTIONS)}", file=file, key=f"{key}.dist")
    required, optional = DISTRIBUTIONS[name]
    allowed = (*required, *optional)
    params: dict[str, float] = dict(optional)
    for pname, value in raw.items():
        if pname == "dist":
            continue
        if pname not in allowed:
            raise ConfigError(f"unknown parameter {pname!r} of {name}; allowed: {', '.join(allowed)}", file=file,
                              key=f"{key}.{pname}")
        try:
            params[pname] = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"must be a number, but got {value!r}", file=file, key=f"{key}.{pname}") from None
        if not math.isfinite(params[pname]):
            raise ConfigError(f"must be finite, but got {value!r}", file=file, key=f"{key}.{pname}")
    missing = [r for r in required if r not in params]
    if missing:
        raise ConfigError(f"{name} needs {', '.join(required)}; missing {', '.join(missing)}", file=file, key=key)
    if name in ("uniform", "loguniform") and not params["low"] < params["high"]:
        raise ConfigError(f"low must be < high, but got low={params['low']!r}, high={params['high']!r}", file=file, key=key)
    if name == "loguniform" and params["low"] <= 0:
        raise ConfigError(f"loguniform needs low > 0, but got {params['low']!r}", file=file, key=f"{key}.low")
    for scale in ("std", "sigma", "scale"):
        if scale in params and params[scale] <= 0:
            raise ConfigError(f"must be > 0, but got {params[scale]!r}", file=file, key=f"{key}.{scale}")
    return Distribution(name, params)


@dataclass(frozen=True)
class DatasetSpec:
    """A validated spec: fixed values, distributions, training and test quantile intervals."""

    fixed: dict[str, float]
    distributions: dict[str, Distribution]
    train: dict[str, tuple[float, float]]
    test: dict[str, tuple[float, float]]

    @property
    def varying(self) -> list[str]:
        return list(self.distributions)

    def value_range(self, var: str, split: str = "train") -> tuple[float, float]:
        """[Q(a), Q(b)] of a varying variable's ``train`` or ``test`` quantile interval."""
        a, b = (self.train if split == "train" else self.test)[var]
        lo, hi = self.distributions[var].ppf([a, b])
        return float(lo), float(hi)

    def central(self, var: str) -> float:
        """The fixed value, or the median of the training draws (quantile mid-point)."""
        if var in self.fixed:
            return self.fixed[var]
        a, b = self.train[var]
        return float(self.distributions[var].ppf(0.5 * (a + b)))

    def sample(self, rng: np.random.Generator, n: int, split: str = "train") -> dict[str, np.ndarray]:
        """``n`` draws of every variable (fixed ones repeated), from the train or test intervals."""
        out = {var: np.full(n, self.fixed.get(var, default)) for var, default in VARIABLES.items()}
        for var, dist in self.distributions.items():
            a, b = (self.train if split == "train" else self.test)[var]
            out[var] = dist.ppf(rng.uniform(a, b, size=n))
        return out

    def in_range(self, values: Mapping[str, np.ndarray]) -> np.ndarray:
        """Boolean per sample: every varying variable within its training range."""
        n = len(next(iter(values.values())))
        ok = np.ones(n, dtype=bool)
        for var in self.distributions:
            lo, hi = self.value_range(var, "train")
            ok &= (values[var] >= lo) & (values[var] <= hi)
        return ok


def _interval(raw: Any, dist: Distribution, *, file: str | Path | None, key: str) -> tuple[float, float]:
    if not (isinstance(raw, (list, tuple)) and len(raw) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                                    for v in raw)):
        raise ConfigError(f"must be a quantile interval [low, high], but got {raw!r}", file=file, key=key)
    a, b = float(raw[0]), float(raw[1])
    if not a < b:
        raise ConfigError(f"low must be < high, but got [{a!r}, {b!r}]", file=file, key=key)
    if not dist.extrapolates and (a < 0 or b > 1):
        raise ConfigError(f"quantiles of a {dist.name} distribution must lie in [0, 1], but got [{a!r}, {b!r}] "
                          "(only uniform and loguniform extrapolate)", file=file, key=key)
    lo, hi = dist.ppf([a, b])
    if not (np.isfinite(lo) or np.isfinite(hi)):
        raise ConfigError(f"interval [{a!r}, {b!r}] is unbounded on both sides", file=file, key=key)
    return a, b


def parse_spec(raw: Any, *, file: str | Path | None = None, key: str = "data.spec") -> DatasetSpec:
    """Validate the spec section (module docstring); every error is a one-line :class:`ConfigError`."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"must be a mapping, but got {raw!r}", file=file, key=key)
    for section in raw:
        if section not in ("fixed", "distributions", "train", "test"):
            raise ConfigError("unknown key; allowed: fixed, distributions, train, test", file=file, key=f"{key}.{section}")

    def names(section: str) -> Mapping[str, Any]:
        part = raw.get(section) or {}
        if not isinstance(part, Mapping):
            raise ConfigError(f"must be a mapping, but got {part!r}", file=file, key=f"{key}.{section}")
        for var in part:
            if var not in VARIABLES:
                raise ConfigError(f"unknown variable {var!r}; allowed: {', '.join(VARIABLES)}", file=file,
                                  key=f"{key}.{section}.{var}")
        return part

    fixed_raw, dist_raw = names("fixed"), names("distributions")
    both = sorted(set(fixed_raw) & set(dist_raw))
    if both:
        raise ConfigError(f"{', '.join(both)} both fixed and distributed; give each variable one", file=file, key=key)
    fixed: dict[str, float] = {}
    for var, value in fixed_raw.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise ConfigError(f"must be a finite number, but got {value!r}", file=file, key=f"{key}.fixed.{var}")
        if var in POSITIVE and value <= 0:
            raise ConfigError(f"{POSITIVE[var]}, but got {value!r}", file=file, key=f"{key}.fixed.{var}")
        if var == "nu" and not -1 < value < 0.5:
            raise ConfigError(f"Poisson ratio must lie in (-1, 0.5), but got {value!r}", file=file, key=f"{key}.fixed.{var}")
        fixed[var] = float(value)
    dists = {var: parse_distribution(var, d, file=file, key=f"{key}.distributions.{var}") for var, d in dist_raw.items()}
    if not dists:
        raise ConfigError("no varying variable: give at least one distribution", file=file, key=f"{key}.distributions")

    intervals: dict[str, dict[str, tuple[float, float]]] = {}
    for split in ("train", "test"):
        part = names(split)
        extra = [v for v in part if v not in dists]
        if extra:
            raise ConfigError(f"{extra[0]!r} has no distribution; intervals apply to: {', '.join(dists)}", file=file,
                              key=f"{key}.{split}.{extra[0]}")
        intervals[split] = {}
        for var, dist in dists.items():
            if var in part:
                intervals[split][var] = _interval(part[var], dist, file=file, key=f"{key}.{split}.{var}")
            else:  # test defaults to the training interval
                intervals[split][var] = intervals["train"][var] if split == "test" else (0.0, 1.0)
    spec = DatasetSpec(fixed, dists, intervals["train"], intervals["test"])
    for var in dists:
        for split in ("train", "test"):
            lo, _ = spec.value_range(var, split)
            if var in POSITIVE and not lo > 0:
                where = f"{key}.{split}.{var}" if var in (raw.get(split) or {}) else f"{key}.distributions.{var}"
                raise ConfigError(f"{POSITIVE[var]}, but the {split} range starts at {lo:.6g}", file=file, key=where)
        if var == "nu":
            for split in ("train", "test"):
                lo, hi = spec.value_range(var, split)
                if not (-1 < lo and hi < 0.5):
                    raise ConfigError(f"Poisson ratio must lie in (-1, 0.5), but the {split} range is [{lo:.4g}, {hi:.4g}]",
                                      file=file, key=f"{key}.distributions.{var}")
    return spec
