"""Hard data from a CSV of wells: x, y and a facies code per row, placed on the target grid.

Coordinates are either grid units (``x`` = column index, ``y`` = row index, row 0 = smallest y) or
world coordinates with the grid's origin (centre of cell (0, 0), GSLIB's ``xmn, ymn``) and cell size.
A point falls in the cell whose centre is nearest.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from geostudy.errors import DataError
from geostudy.learners.ardm.data import HardData
from geostudy.learners.ardm.images import FaciesCodes


def read_hard_data_csv(path: str | Path, *, nx: int, ny: int, codes: FaciesCodes,
                       columns: Sequence[str] = ("x", "y", "facies"), coordinates: str = "grid",
                       origin: Sequence[float] = (0.0, 0.0), spacing: Sequence[float] = (1.0, 1.0),
                       key: str = "simulate.hard_data") -> HardData:
    """Wells from a CSV as :class:`HardData` in category indices on an ``ny x nx`` grid.

    Raises:
        DataError: the file is missing or unreadable, a column is missing, a value is not a number,
            a point lies outside the grid, a code is not a facies code of the training image, or one
            cell gets two different codes. The message names the CSV line (header = line 1).
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError("hard-data CSV not found", file=path, key=key)
    try:
        table = pd.read_csv(path, skipinitialspace=True)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise DataError(f"cannot read the CSV: {' '.join(str(err).split())}", file=path, key=key) from None
    cx, cy, cf = columns
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataError(f"has no column {missing[0]!r} (simulate.columns); its columns: "
                        f"{', '.join(map(str, table.columns))}", file=path, key=key)
    values = {}
    for name in columns:
        col = pd.to_numeric(table[name], errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(col))
        if len(bad):
            raise DataError(f"line {bad[0] + 2}: column {name!r} holds {table[name].iloc[bad[0]]!r}, not a number",
                            file=path, key=key)
        values[name] = col
    if coordinates == "world":
        fx = (values[cx] - origin[0]) / spacing[0]
        fy = (values[cy] - origin[1]) / spacing[1]
    else:
        fx, fy = values[cx], values[cy]
    cols = np.floor(fx + 0.5).astype(np.int64)  # nearest cell centre; halves go up, like GSLIB's getindx
    rows = np.floor(fy + 0.5).astype(np.int64)
    outside = np.flatnonzero((cols < 0) | (cols >= nx) | (rows < 0) | (rows >= ny))
    if len(outside):
        i = int(outside[0])
        units = "grid units" if coordinates == "grid" else f"world units, origin {list(origin)}, spacing {list(spacing)}"
        raise DataError(f"line {i + 2}: point ({cx} {values[cx][i]:g}, {cy} {values[cy][i]:g}; {units}) is outside "
                        f"the {nx}x{ny} grid (cell col {cols[i]}, row {rows[i]})", file=path, key=key)
    raw = values[cf]
    known = np.isin(raw, codes.codes)
    if not known.all():
        i = int(np.flatnonzero(~known)[0])
        allowed = ", ".join(f"{c:g}" for c in codes.codes.astype(np.float64))
        raise DataError(f"line {i + 2}: facies code {raw[i]:g} is not a code of the training image; allowed: "
                        f"{allowed}", file=path, key=key)
    cats = codes.encode(raw)
    seen: dict[tuple[int, int], tuple[int, int]] = {}
    for i, (r, c, k) in enumerate(zip(rows.tolist(), cols.tolist(), cats.tolist())):
        first = seen.setdefault((r, c), (k, i))
        if first[0] != k:
            raise DataError(f"line {i + 2}: cell (row {r}, col {c}) already has facies code "
                            f"{codes.codes[first[0]]:g} from line {first[1] + 2}", file=path, key=key)
    cells = np.array([[r, c, k] for (r, c), (k, _) in seen.items()], dtype=np.int64).reshape(-1, 3)
    return HardData(rows=cells[:, 0], cols=cells[:, 1], cats=cells[:, 2])
