"""GSLIB ("GEO-EAS") plain-text files: read and write, learner-agnostic.

The format (Deutsch & Journel, *GSLIB*, 1998)::

    title line (free text; SGeMS and many tools put "nx ny nz" first on it)
    nvar
    name of variable 1
    ...
    name of variable nvar
    v1 v2 ... vnvar        <- one record per line, whitespace separated
    ...

A gridded file holds one record per cell, x fastest, then y, then z, starting at the cell with the
smallest coordinates. Missing values are a sentinel chosen by the user (often -999 or -99).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np

from geostudy.errors import DataError

__all__ = ["GslibData", "grid_shape_from_title", "read_gslib", "write_gslib", "write_gslib_grid"]


@dataclass
class GslibData:
    """A GSLIB file's content: its title, variable names and a ``(n_records, n_vars)`` float array."""

    title: str
    names: list[str]
    values: np.ndarray

    def column(self, variable: str | int, *, file: str | Path | None = None, key: str | None = None) -> np.ndarray:
        """One variable's values, by name (case-insensitive) or by 0-based index.

        Raises:
            DataError: no such variable; the message lists those the file has.
        """
        if isinstance(variable, int):
            if not 0 <= variable < len(self.names):
                raise DataError(f"variable index {variable} is out of range; the file has {len(self.names)} "
                                f"variables: {', '.join(self.names)}", file=file, key=key)
            return self.values[:, variable]
        lowered = [n.lower() for n in self.names]
        if variable.lower() not in lowered:
            raise DataError(f"no variable named {variable!r}; the file has: {', '.join(self.names)}", file=file,
                            key=key)
        return self.values[:, lowered.index(variable.lower())]


def read_gslib(path: str | Path) -> GslibData:
    """Read a GSLIB / GEO-EAS file.

    Raises:
        DataError: the file is missing or malformed (a bad header, a record with the wrong number of
            values or a value that is not a number); the message names the line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("GSLIB file not found", file=path)
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as err:
        raise DataError(f"cannot read the file: {err}", file=path) from None
    if len(lines) < 2:
        raise DataError("not a GSLIB file: it needs a title line and a line with the number of variables", file=path)
    title = lines[0].strip()
    head = lines[1].split()
    try:
        nvar = int(head[0]) if head else -1
    except ValueError:
        nvar = -1
    if nvar < 1:
        raise DataError(f"line 2 must give the number of variables (an integer >= 1), but got {lines[1].strip()!r}",
                        file=path)
    if len(lines) < 2 + nvar:
        raise DataError(f"line 2 announces {nvar} variables but the file ends after {len(lines) - 2} name lines",
                        file=path)
    names = [line.strip() or f"var{i + 1}" for i, line in enumerate(lines[2: 2 + nvar])]
    body = lines[2 + nvar:]
    try:
        # The fast path: a clean numeric table.
        flat = np.array(" ".join(body).split(), dtype=np.float64)
    except ValueError:
        flat = None
    if flat is None or flat.size % nvar:
        _locate_bad_record(body, nvar, first_line=3 + nvar, path=path)
    return GslibData(title=title, names=names, values=flat.reshape(-1, nvar))


def _locate_bad_record(body: Sequence[str], nvar: int, *, first_line: int, path: Path) -> NoReturn:
    """Raise the DataError naming the first malformed record (slow path, only on bad files)."""
    for i, line in enumerate(body):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != nvar:
            raise DataError(f"line {first_line + i} has {len(fields)} values but the header declares {nvar} "
                            f"variables", file=path)
        for f in fields:
            try:
                float(f)
            except ValueError:
                raise DataError(f"line {first_line + i}: {f!r} is not a number", file=path) from None
    raise DataError(f"the values do not split into records of {nvar} variables", file=path)


def grid_shape_from_title(title: str) -> tuple[int, int, int] | None:
    """``(nx, ny, nz)`` from a title that starts with three positive integers (the SGeMS habit), else None."""
    match = re.match(r"\s*(\d+)\s+(\d+)\s+(\d+)\b", title)
    if not match:
        return None
    nx, ny, nz = (int(g) for g in match.groups())
    return (nx, ny, nz) if min(nx, ny, nz) > 0 else None


def _format(values: np.ndarray) -> str:
    integral = np.all(np.isfinite(values)) and np.all(values == np.round(values))
    fmt = "%d" if integral else "%.6g"
    rows = values.astype(np.int64) if integral else values
    return "\n".join(" ".join(fmt % v for v in row) for row in rows)


def write_gslib(path: str | Path, title: str, names: Sequence[str], values: np.ndarray) -> Path:
    """Write ``values`` ``(n_records, n_vars)`` as a GSLIB file (integers when all values are whole)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2 or values.shape[1] != len(names):
        raise ValueError(f"values must be (n_records, {len(names)}), but got shape {values.shape}")
    path = Path(path)
    text = "\n".join([" ".join(title.split()), str(len(names)), *names, _format(values)])
    path.write_text(text + "\n")
    return path


def write_gslib_grid(path: str | Path, title: str, names: Sequence[str], grids: np.ndarray) -> Path:
    """Write 2-D grids ``(n_vars, ny, nx)`` (row 0 = smallest y) as one record per cell, x fastest.

    The title starts with ``nx ny 1`` so that SGeMS and :func:`grid_shape_from_title` recover the grid.
    """
    grids = np.asarray(grids)
    if grids.ndim == 2:
        grids = grids[None]
    n_vars, ny, nx = grids.shape
    values = grids.reshape(n_vars, ny * nx).T  # row-major (y, x): x varies fastest
    return write_gslib(path, f"{nx} {ny} 1 {title}", names, values)
