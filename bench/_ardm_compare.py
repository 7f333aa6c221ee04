"""Generators compared on several independent reference groups, with jackknife standard errors.

Each group ``g`` has its own reference images and, for every method, its own realisations; the
methods' statistics are pooled over all groups and compared with the pooled references. Leaving one
group out at a time (the delete-one jackknife over groups) gives the standard error of each
method's mismatch and of the paired difference between two methods, which carries both the
reference noise and the realisation noise. Per-group mismatches give a sign count (in how many
groups one method is below the other).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from geostudy.learners.ardm.evaluate import ImageStats, mismatch


def _pooled(stats: Sequence[ImageStats], refs: Sequence[ImageStats], keep: Sequence[int]) -> dict[str, float]:
    return mismatch(ImageStats.concat([stats[g] for g in keep]), ImageStats.concat([refs[g] for g in keep]))


def jackknife_se(leave_one_out: np.ndarray) -> float:
    """Delete-one jackknife standard error from the ``R`` leave-one-out values."""
    r = len(leave_one_out)
    if r < 2:
        return float("nan")
    return float(np.sqrt((r - 1) / r * ((leave_one_out - leave_one_out.mean()) ** 2).sum()))


@dataclass
class Comparison:
    """Pooled mismatches of every method with their jackknife errors, for one reference set."""

    stats: tuple[str, ...]
    value: dict[str, dict[str, float]]  # method -> statistic -> pooled mismatch
    loo: dict[str, dict[str, np.ndarray]]  # method -> statistic -> leave-one-group-out values (R,)
    per_group: dict[str, dict[str, np.ndarray]]  # method -> statistic -> mismatch within each group (R,)

    def row_extras(self, ours: str, base: str, stat: str) -> dict[str, float | str]:
        """What a bench row carries beside ``ours`` and ``baseline``: both standard errors, the paired
        difference ours - baseline with its standard error, and the groups where ours is lower."""
        wins = int((self.per_group[ours][stat] < self.per_group[base][stat]).sum())
        return {"ours_se": jackknife_se(self.loo[ours][stat]), "baseline_se": jackknife_se(self.loo[base][stat]),
                "diff": self.value[ours][stat] - self.value[base][stat],
                "diff_se": jackknife_se(self.loo[ours][stat] - self.loo[base][stat]),
                "groups_lower": f"{wins}/{len(self.per_group[ours][stat])}"}


def compare(methods: Mapping[str, Sequence[ImageStats]], refs: Sequence[ImageStats],
            stats: Sequence[str] = ("variogram_mismatch", "connectivity_mismatch", "proportion_error")) -> Comparison:
    """Compare every method's per-group statistics with the per-group references.

    Args:
        methods: Method name -> one :class:`ImageStats` per group (same number of groups as ``refs``).
        refs: The reference statistics of each group (the same object repeated for a shared reference).
        stats: Keys of :func:`mismatch` to keep.
    """
    r = len(refs)
    everything = list(range(r))
    value, loo, per_group = {}, {}, {}
    for name, groups in methods.items():
        if len(groups) != r:
            raise ValueError(f"method {name!r} has {len(groups)} groups, the references {r}")
        full = _pooled(groups, refs, everything)
        drops = [_pooled(groups, refs, [h for h in everything if h != g]) for g in everything] if r > 1 else []
        alone = [mismatch(groups[g], refs[g]) for g in everything]
        value[name] = {s: full[s] for s in stats}
        loo[name] = {s: np.array([d[s] for d in drops]) for s in stats}
        per_group[name] = {s: np.array([a[s] for a in alone]) for s in stats}
    return Comparison(stats=tuple(stats), value=value, loo=loo, per_group=per_group)
