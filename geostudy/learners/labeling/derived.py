"""Derived features along each sequence (a well, a station's column), declared by name in the config.

``data.derived`` lists names; each is computed inside every sequence (see
:mod:`geostudy.learners.labeling.sequences`) and restarts at the next one, so no value mixes wells:

- ``<feature>_diff``: first difference down the sequence, ``v[i] - v[i-1]`` (0 at its first sample);
- ``<feature>_grad``: gradient against the vertical coordinate (``numpy.gradient``: central
  differences inside, one-sided at the ends; 0 for a one-sample sequence);
- ``<feature>_mean<k>`` / ``<feature>_std<k>``: mean / standard deviation over a centred window of
  ``k`` samples (``k // 2`` before, ``k - 1 - k // 2`` after), shrunk at the ends of the sequence;
- ``relpos``: relative position along the sequence, 0 at its lowest coordinate value, 1 at its highest.

Once declared, the names are features like any other: ``data.features`` and ``data.feature_sets``
may list them, and a study may search ``data.derived`` (e.g. as categorical lists of names).
"""

from __future__ import annotations

import re

import numpy as np

from geostudy.errors import ConfigError
from geostudy.learners.labeling.sequences import Sequences

_NAME = re.compile(r"^(?P<base>.+)_(?P<op>diff|grad|mean|std)(?P<k>\d*)$")


def parse_name(name: str, features: list[str], *, key: str = "data.derived") -> tuple[str | None, str, int]:
    """``(base feature, operation, window)`` of a derived feature name; raise a ConfigError if malformed."""
    if name == "relpos":
        return None, "relpos", 0
    match = _NAME.match(name)
    if match is None:
        raise ConfigError(f"{name!r} is not a derived feature; allowed: <feature>_diff, <feature>_grad, "
                          "<feature>_mean<k>, <feature>_std<k> (k >= 2 samples), relpos", key=key)
    base, op, k = match["base"], match["op"], match["k"]
    if base not in features:
        raise ConfigError(f"{name!r} derives from unknown feature {base!r}; available: {', '.join(features)}", key=key)
    if op in ("mean", "std"):
        if not k or int(k) < 2:
            raise ConfigError(f"{name!r} needs a window of k >= 2 samples, e.g. {base}_{op}5", key=key)
        return base, op, int(k)
    if k:
        raise ConfigError(f"{name!r}: {op} takes no window; use {base}_{op}", key=key)
    return base, op, 0


def derive(names: list[str], features: np.ndarray, feature_names: list[str], seqs: Sequences) -> np.ndarray:
    """The ``(n, len(names))`` derived features of ``features`` (``(n, f)``) along ``seqs``."""
    n = len(features)
    out = np.zeros((n, len(names)), dtype=np.float64)
    order, starts = seqs.order, seqs.starts
    seq_sorted = seqs.seq[order]
    first = starts[seq_sorted]  # first sorted index of each sorted node's sequence
    last = starts[seq_sorted + 1] - 1
    idx = np.arange(n)
    for j, name in enumerate(names):
        base, op, k = parse_name(name, feature_names)
        if op == "relpos":
            length = last - first
            out[order, j] = np.where(length > 0, (idx - first) / np.maximum(length, 1), 0.0)
            continue
        v = features[order, feature_names.index(str(base))].astype(np.float64)
        if op == "diff":
            d = np.zeros(n)
            d[1:] = v[1:] - v[:-1]
            d[idx == first] = 0.0
            out[order, j] = d
        elif op == "grad":
            g = np.zeros(n)
            pos = seqs.position[order]
            for a, b in zip(starts[:-1], starts[1:]):
                if b - a >= 2:
                    p = pos[a:b]
                    spacing = p if np.all(np.diff(p) > 0) else np.arange(b - a, dtype=np.float64)
                    g[a:b] = np.gradient(v[a:b], spacing)
            out[order, j] = g
        else:
            lo = np.maximum(idx - k // 2, first)
            hi = np.minimum(idx + (k - 1 - k // 2), last)
            cs = np.concatenate([[0.0], np.cumsum(v)])
            cs2 = np.concatenate([[0.0], np.cumsum(v * v)])
            count = hi - lo + 1
            mean = (cs[hi + 1] - cs[lo]) / count
            if op == "mean":
                out[order, j] = mean
            else:
                var = (cs2[hi + 1] - cs2[lo]) / count - mean**2
                out[order, j] = np.sqrt(np.maximum(var, 0.0))
    return out
