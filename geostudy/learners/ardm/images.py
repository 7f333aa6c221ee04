"""Training-image files as category indices: PNG, NumPy ``.npy`` and GSLIB grids, with facies codes.

Geomodellers code facies with their own numbers (e.g. 0 shale, 2 sand, 5 crevasse). The network works
with indices ``0..K-1``; :class:`FaciesCodes` maps codes to indices on the way in (training image, well
data) and indices back to codes on the way out (realisations).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geostudy.errors import ConfigError, DataError
from geostudy.io.gslib import grid_shape_from_title, read_gslib

GSLIB_SUFFIXES = (".dat", ".gslib", ".sgems", ".txt", ".out", ".gs", ".geoeas")


@dataclass
class FaciesCodes:
    """``codes[k]`` is the user's code of category index ``k`` (sorted ascending unless configured)."""

    codes: np.ndarray

    def __len__(self) -> int:
        return len(self.codes)

    @classmethod
    def identity(cls, n_categories: int) -> FaciesCodes:
        return cls(codes=np.arange(n_categories, dtype=np.int64))

    def encode(self, values: np.ndarray, *, what: str = "value", file: str | Path | None = None,
               key: str | None = None) -> np.ndarray:
        """Category indices of ``values`` (codes).

        Raises:
            DataError: a value is not one of the codes; the message names the first one and where it is.
        """
        values = np.asarray(values)
        order = np.argsort(self.codes)
        pos = np.clip(np.searchsorted(self.codes[order], values), 0, len(self.codes) - 1)
        known = self.codes[order][pos] == values
        if not known.all():
            i = int(np.flatnonzero(~known.ravel())[0])
            where = np.unravel_index(i, values.shape)
            raise DataError(f"{what} {_fmt(values.ravel()[i])} at {tuple(int(w) for w in where)} is not a facies code; "
                            f"allowed: {', '.join(_fmt(c) for c in self.codes)}", file=file, key=key)
        return order[pos].astype(np.int64)

    def decode(self, indices: np.ndarray) -> np.ndarray:
        """The codes of category indices (same shape)."""
        return self.codes[np.asarray(indices)]


def _fmt(v: float | np.number) -> str:
    return str(int(v)) if float(v).is_integer() else f"{float(v):g}"


def codes_of(values: np.ndarray, n_categories: int, configured: Sequence[float] | None, *, file: str | Path,
             what: str) -> FaciesCodes:
    """The codes of a training image: ``configured`` (in category order), or its distinct values sorted.

    Fewer distinct values than K is fine (the extra categories get unused codes above the largest);
    more is an error that says how to fix it.
    """
    if configured is not None:
        if len(configured) != n_categories:
            raise ConfigError(f"must list n_categories = {n_categories} codes, but got {len(configured)}",
                              key="data.codes")
        return FaciesCodes(codes=np.asarray(configured, dtype=np.float64 if _has_fraction(configured) else np.int64))
    distinct = np.unique(values)
    if len(distinct) > n_categories:
        shown = ", ".join(_fmt(v) for v in distinct[:8]) + (", ..." if len(distinct) > 8 else "")
        raise DataError(f"has {len(distinct)} distinct {what}s ({shown}) but data.n_categories is {n_categories}; "
                        f"raise data.n_categories or set data.thresholds/data.codes", file=file)
    if np.all(distinct == np.round(distinct)):
        distinct = distinct.astype(np.int64)
    extra = np.arange(1, n_categories - len(distinct) + 1) + (distinct.max() if len(distinct) else -1)
    return FaciesCodes(codes=np.concatenate([distinct, extra.astype(distinct.dtype)]))


def _has_fraction(values: Sequence[float]) -> bool:
    return any(not float(v).is_integer() for v in values)


def read_png(path: Path) -> np.ndarray:
    """An image file as 8-bit grey levels (any PIL mode)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"cannot read the image: {err}", file=path) from None


def read_npy(path: Path) -> np.ndarray:
    """A 2-D NumPy array of facies codes (integers, or floats with whole values)."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read the array: {err}", file=path) from None
    arr = np.squeeze(arr)
    if arr.ndim != 2 or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise DataError(f"must hold a 2-D numeric array of facies codes, but has shape {arr.shape} and dtype "
                        f"{arr.dtype}", file=path)
    if not np.isfinite(arr).all():
        raise DataError("holds NaN or infinite values; a training image must code every cell", file=path)
    return arr


def read_gslib_grid(path: Path, variable: str | int, grid: Sequence[int] | None,
                    missing: float | None = -999.0) -> np.ndarray:
    """A GSLIB grid file's variable as a ``(ny, nx)`` array (row 0 = the first record row, smallest y).

    The grid size comes from ``grid`` (``[nx, ny]``), else from a title starting with ``nx ny nz``.
    Values at or below ``missing`` are GSLIB's missing-value flags (its trimming limit); a training
    image must code every cell, so any is an error naming the first such cell.
    """
    data = read_gslib(path)
    values = data.column(variable, file=path, key="data.variable")
    if grid is not None:
        nx, ny = int(grid[0]), int(grid[1])
    else:
        shape = grid_shape_from_title(data.title)
        if shape is None:
            raise DataError(f"the title {data.title!r} does not start with 'nx ny nz'; set data.grid: [nx, ny]",
                            file=path)
        nx, ny = shape[0], shape[1]
    if nx * ny > len(values) or len(values) % (nx * ny):
        raise DataError(f"holds {len(values)} records, not a whole number of {nx}x{ny} slices (data.grid)", file=path)
    if not np.isfinite(values).all():
        raise DataError("holds NaN or infinite values; a training image must code every cell", file=path)
    image = values[: nx * ny].reshape(ny, nx)  # x fastest; a 3-D file gives its first slice
    if missing is not None and (image <= missing).any():
        n = int((image <= missing).sum())
        row, col = np.argwhere(image <= missing)[0]
        raise DataError(f"{n} cells hold a missing-value flag (<= {missing:g}, data.missing), the first at ix {col + 1}, "
                        f"iy {row + 1} (record {row * nx + col + 1}); a training image must code every cell: fill "
                        f"or crop them, or set data.missing if {missing:g} is a facies code", file=path)
    return image


def image_format(path: Path) -> str:
    """``png`` (any image PIL reads), ``npy`` or ``gslib``, from the file's suffix."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return "npy"
    if suffix in GSLIB_SUFFIXES:
        return "gslib"
    return "png"


def read_training_file(path: Path, n_categories: int, *, thresholds: Sequence[float] | None = None,
                       codes: Sequence[float] | None = None, variable: str | int = 0,
                       grid: Sequence[int] | None = None, missing: float | None = -999.0) -> tuple[np.ndarray, FaciesCodes]:
    """A training image file as ``(category indices (H, W), codes)``.

    Raises:
        DataError: the file is missing or unreadable, or holds more categories than configured.
    """
    if not path.is_file():
        raise DataError("training image not found; put the file there, or set data.source: procedural", file=path)
    kind = image_format(path)
    if kind == "png":
        raw: np.ndarray = read_png(path)
        if thresholds is not None:
            if len(thresholds) != n_categories - 1:
                raise ConfigError(f"must hold n_categories - 1 = {n_categories - 1} grey levels, but got "
                                  f"{len(thresholds)}", key="data.thresholds")
            return np.digitize(raw, np.asarray(thresholds, dtype=np.float64)).astype(np.int64), \
                FaciesCodes.identity(n_categories)
        what = "grey level"
    else:
        raw = read_npy(path) if kind == "npy" else read_gslib_grid(path, variable, grid, missing)
        what = "facies code"
    facies = codes_of(raw, n_categories, codes, file=path, what=what)
    return facies.encode(raw, what=what, file=path), facies
