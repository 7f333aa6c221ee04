"""Missing values in feature columns: ``error``, ``drop_rows`` or ``impute`` (``data.csv.missing``).

Logs go missing over whole intervals (a tool not run in every well, a bad hole section). ``impute``
fills a gap along the vertical coordinate inside its sequence (a well, a station's column): linear
interpolation between the nearest valid samples above and below. Where a gap has valid samples on
one side only, or the sequence none, it takes the median of the group (the well or line); a group
without any valid value takes the global median. A sample is never filled from another group unless
its whole group lacks the column.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geostudy.errors import DataError
from geostudy.learners.labeling.sequences import Sequences

FIRST_ROWS = 5


@dataclass
class Imputed:
    """The outcome of :func:`impute`.

    Attributes:
        values: ``(n, f)`` the features with every NaN filled.
        missing: ``(n, f)`` bool, True where a value was filled.
        count: Number of values filled.
    """

    values: np.ndarray
    missing: np.ndarray
    count: int


def impute(values: np.ndarray, seqs: Sequences, groups: np.ndarray) -> Imputed:
    """Fill the NaNs of ``values`` (``(n, f)``) as described in the module docstring."""
    values = np.array(values, dtype=np.float64, copy=True)
    missing = np.isnan(values)
    groups = np.asarray(groups).astype(str)
    for j in np.flatnonzero(missing.any(0)):
        col = values[:, j]
        for run in seqs.runs():
            gaps = missing[run, j]
            if not gaps.any() or gaps.all():
                continue
            pos = seqs.position[run]
            known = ~gaps
            inside = gaps & (pos > pos[known].min()) & (pos < pos[known].max())
            if inside.any():
                col[run[inside]] = np.interp(pos[inside], pos[known], col[run[known]])
        still = np.isnan(col)
        if still.any():
            global_median = np.nanmedian(col[~missing[:, j]])
            for g in np.unique(groups[still]):
                in_group = groups == g
                valid = in_group & ~missing[:, j]
                fill = float(np.median(col[valid])) if valid.any() else float(global_median)
                col[still & in_group] = fill
        values[:, j] = col
    return Imputed(values=values, missing=missing, count=int(missing.sum()))


def rows_text(rows: np.ndarray) -> str:
    """``"5, 6, 7, ..."``: the first few file line numbers as plain integers."""
    shown = ", ".join(str(int(r)) for r in rows[:FIRST_ROWS])
    return shown + (", ..." if len(rows) > FIRST_ROWS else "")


def raise_on_missing(values: np.ndarray, names: list[str], line_numbers: np.ndarray, file: str) -> None:
    """``missing: error``: one line naming the first column with gaps, their count and first rows.

    Args:
        values: ``(n, f)`` feature values, NaN where missing.
        names: The feature column names.
        line_numbers: ``(n,)`` line number of each row in the file (header = line 1).
        file: The CSV, for the message.
    """
    missing = np.isnan(values)
    for j, name in enumerate(names):
        rows = line_numbers[missing[:, j]]
        if len(rows):
            others = int(missing.any(0).sum()) - 1
            more = f"; {others} other column(s) have gaps too" if others > 0 else ""
            raise DataError(f"column {name!r} has {len(rows)} missing value(s), at rows {rows_text(rows)} (line "
                            f"numbers){more}; set data.csv.missing to impute or drop_rows to accept gaps", file=file,
                            key="data.csv.missing")
