"""Categorical training images: PNG loading, the procedural generator, patches and hard data.

An image is a 2-D ``int64`` array of category indices ``0..K-1``. The bottom ``val_fraction`` of its
rows is held out for validation (patches, reference statistics and hard data come from there); the
rest feeds training patches.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geostudy.errors import ConfigError, DataError
from geostudy.learners.ardm.config import DataConfig, GeneratorConfig
from geostudy.learners.ardm.images import FaciesCodes, read_training_file
from geostudy.learners.base import REPO_ROOT


def resolve_path(path: str | Path) -> Path:
    """A data path as written in a config: absolute, or relative to the repository root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (REPO_ROOT / p).resolve()


def load_png(path: str | Path, n_categories: int, thresholds: Sequence[float] | None = None) -> np.ndarray:
    """Read a PNG (any mode; converted to 8-bit grey) as category indices.

    Args:
        path: The image file.
        n_categories: K, the number of categories the model has.
        thresholds: ``K-1`` increasing grey levels; a pixel's category is how many of them are
            ``<=`` its grey value. Without them each distinct grey level is one category, darkest
            first, and an image with more than K levels is an error.

    Raises:
        DataError: the file is missing or unreadable, or has more grey levels than categories.
    """
    return read_training_file(Path(path), n_categories, thresholds=thresholds)[0]


def procedural_image(cfg: GeneratorConfig, n_categories: int, seed: int) -> np.ndarray:
    """A synthetic training image: sinuous channels and/or elliptical lenses on background 0.

    Channels (category 1) follow a sum of two sines along a random direction; ellipses take
    category 2 when K >= 3 (else 1). The same seed gives the same image.
    """
    rng = np.random.default_rng(seed)
    n = cfg.size
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
    img = np.zeros((n, n), dtype=np.int64)
    if cfg.kind in ("channels", "mixed"):
        for _ in range(cfg.n_channels):
            theta = rng.uniform(0, np.pi)
            u = xx * np.cos(theta) + yy * np.sin(theta)
            v = -xx * np.sin(theta) + yy * np.cos(theta)
            lo, hi = v.min(), v.max()
            centre = rng.uniform(lo, hi)
            for _ in range(2):
                wavelength = rng.uniform(0.3, 1.0) * n
                amplitude = rng.uniform(0.02, 0.08) * n
                centre = centre + amplitude * np.sin(2 * np.pi * u / wavelength + rng.uniform(0, 2 * np.pi))
            width = cfg.channel_width * rng.uniform(0.75, 1.25)
            img[np.abs(v - centre) < width / 2] = 1
    if cfg.kind in ("ellipses", "mixed"):
        cat = 2 if n_categories >= 3 else 1
        a_lo, a_hi = cfg.ellipse_axes
        for _ in range(cfg.n_ellipses):
            cy, cx = rng.uniform(0, n, size=2)
            a, b = sorted(rng.uniform(a_lo, a_hi, size=2), reverse=True)
            phi = rng.uniform(0, np.pi)
            du, dv = xx - cx, yy - cy
            ru = du * np.cos(phi) + dv * np.sin(phi)
            rv = -du * np.sin(phi) + dv * np.cos(phi)
            img[(ru / a) ** 2 + (rv / b) ** 2 <= 1] = cat
    return img


def downsample(image: np.ndarray, factor: int, n_categories: int) -> np.ndarray:
    """Coarsen by ``factor`` taking each block's most frequent category (ties to the lower index)."""
    if factor == 1:
        return image
    h, w = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    blocks = image[:h, :w].reshape(h // factor, factor, w // factor, factor)
    counts = np.stack([(blocks == k).sum(axis=(1, 3)) for k in range(n_categories)])
    return counts.argmax(axis=0).astype(np.int64)


@dataclass
class TrainingImage:
    """A training image as category indices ``(H, W)`` and the facies codes of those indices."""

    image: np.ndarray
    codes: FaciesCodes


def _read_file(cfg: DataConfig) -> tuple[np.ndarray, FaciesCodes]:
    return read_training_file(resolve_path(cfg.path or ""), cfg.n_categories, thresholds=cfg.thresholds, codes=cfg.codes,
                              variable=cfg.variable, grid=cfg.grid, missing=cfg.missing)


def _tuple(values: Sequence[float] | Sequence[int] | None) -> tuple | None:
    return tuple(values) if values is not None else None


@functools.lru_cache(maxsize=8)
def _checked_shape(path: Path, mtime_ns: int, n_categories: int, thresholds: tuple | None, codes: tuple | None,
                   variable: str | int, grid: tuple | None, missing: float | None) -> tuple[int, int]:
    image, _ = read_training_file(path, n_categories, thresholds=thresholds, codes=codes, variable=variable, grid=grid,
                                  missing=missing)
    return image.shape  # type: ignore[return-value]


def check_training_image(cfg: DataConfig, min_size: int) -> None:
    """Check that the configured image loads and its split fits ``min_size`` patches, without training.

    A file's check is cached by its reading settings and modification time: a study checks every
    trial's config.
    """
    if cfg.source == "file":
        path = resolve_path(cfg.path or "")
        if not path.is_file():
            _read_file(cfg)  # raises the DataError naming the file
        h, w = _checked_shape(path, path.stat().st_mtime_ns, cfg.n_categories, _tuple(cfg.thresholds),
                              _tuple(cfg.codes), cfg.variable, _tuple(cfg.grid), cfg.missing)
    else:
        h = w = cfg.generator.size
    check_split((h // cfg.downsample, w // cfg.downsample), cfg.val_fraction, min_size)


def load_training_image(cfg: DataConfig, seed: int) -> TrainingImage:
    """The configured training image as category indices, downsampled as asked, with its codes."""
    if cfg.source == "procedural":
        image, codes = procedural_image(cfg.generator, cfg.n_categories, seed), FaciesCodes.identity(cfg.n_categories)
    else:
        image, codes = _read_file(cfg)
    return TrainingImage(image=downsample(image, cfg.downsample, cfg.n_categories), codes=codes)


@dataclass
class Split:
    """Training and held-out (validation) regions of one training image."""

    train: np.ndarray
    val: np.ndarray


def _val_rows(height: int, val_fraction: float) -> int:
    return int(round(height * val_fraction))


def check_split(shape: tuple[int, int], val_fraction: float, patch: int) -> None:
    """Raise :class:`DataError` unless both regions of an image of ``shape`` fit a ``patch``."""
    h, w = shape
    n_val = _val_rows(h, val_fraction)
    for name, rows in (("training", h - n_val), ("held-out", n_val)):
        if min(rows, w) < patch:
            raise DataError(f"the {name} region is {rows}x{w} pixels, smaller than the {patch}x{patch} patches it "
                            f"must supply (data.patch, eval.sample_size); use a bigger image, a smaller "
                            f"data.downsample or patch, or another data.val_fraction")


def split_image(image: np.ndarray, val_fraction: float, patch: int) -> Split:
    """Hold out the bottom ``val_fraction`` of the rows; both parts must fit a patch."""
    check_split(image.shape, val_fraction, patch)  # type: ignore[arg-type]
    n_val = _val_rows(image.shape[0], val_fraction)
    return Split(train=image[: image.shape[0] - n_val], val=image[image.shape[0] - n_val:])


def random_patches(region: np.ndarray, n: int, size: int, rng: np.random.Generator, *, flips: bool = False,
                   rot90: bool = False) -> np.ndarray:
    """``n`` random ``size x size`` crops of ``region``, optionally flipped and rotated by 90°."""
    rows = rng.integers(0, region.shape[0] - size + 1, size=n)
    cols = rng.integers(0, region.shape[1] - size + 1, size=n)
    out = np.empty((n, size, size), dtype=np.int64)
    for i, (r, c) in enumerate(zip(rows, cols)):
        p = region[r: r + size, c: c + size]
        if flips:
            if rng.random() < 0.5:
                p = p[:, ::-1]
            if rng.random() < 0.5:
                p = p[::-1, :]
        if rot90:
            p = np.rot90(p, k=int(rng.integers(0, 4)))
        out[i] = p
    return out


@dataclass
class HardData:
    """Conditioning data: pixel ``(rows[i], cols[i])`` must hold category ``cats[i]``."""

    rows: np.ndarray
    cols: np.ndarray
    cats: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def from_list(cls, data: Sequence[Sequence[int]], size: int, n_categories: int,
                  key: str = "eval.hard_data") -> HardData:
        """Validated hard data from ``[[row, col, category], ...]`` on a ``size x size`` image.

        Raises:
            ConfigError: a datum is outside the image, has an unknown category, or repeats a pixel
                with another category.
        """
        seen: dict[tuple[int, int], int] = {}
        for i, datum in enumerate(data):
            if len(datum) != 3:
                raise ConfigError(f"must be [row, col, category], but got {list(datum)!r}", key=f"{key}[{i}]")
            r, c, k = (int(v) for v in datum)
            if not (0 <= r < size and 0 <= c < size):
                raise ConfigError(f"position (row {r}, col {c}) is outside the {size}x{size} image "
                                  f"(rows and cols must be in 0..{size - 1})", key=f"{key}[{i}]")
            if not 0 <= k < n_categories:
                raise ConfigError(f"category must be in 0..{n_categories - 1}, but got {k}", key=f"{key}[{i}]")
            if seen.get((r, c), k) != k:
                raise ConfigError(f"pixel ({r}, {c}) is given twice with categories {seen[(r, c)]} and {k}",
                                  key=f"{key}[{i}]")
            seen[(r, c)] = k
        arr = np.array([[r, c, k] for (r, c), k in seen.items()], dtype=np.int64).reshape(-1, 3)
        return cls(rows=arr[:, 0], cols=arr[:, 1], cats=arr[:, 2])

    @classmethod
    def draw(cls, image: np.ndarray, n: int, rng: np.random.Generator) -> HardData:
        """``n`` distinct random pixels of ``image`` with their categories (synthetic wells)."""
        flat = rng.choice(image.size, size=min(n, image.size), replace=False)
        rows, cols = np.unravel_index(flat, image.shape)
        return cls(rows=rows.astype(np.int64), cols=cols.astype(np.int64), cats=image[rows, cols].astype(np.int64))

    def honoured(self, images: np.ndarray) -> float:
        """Fraction of (image, datum) pairs where the image holds the datum's category."""
        if len(self) == 0:
            return 1.0
        return float((images[:, self.rows, self.cols] == self.cats[None, :]).mean())
