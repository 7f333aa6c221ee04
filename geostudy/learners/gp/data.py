"""Fields, their normalisation and the station masks.

A field is always held as ``(time, y, x)``; a 2-D source becomes one frame and remembers that it had
no time axis (so the model gets no time input). Points that are NaN in the source (land in an ocean
field, say) are invalid: never observed, never scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geostudy.errors import ConfigError, DataError
from geostudy.learners.gp.config import DataConfig, MaskConfig, SyntheticConfig

MIN_OBSERVED_PER_FRAME = 3  # griddata needs a triangle; a frame with fewer stations gets extra ones


@dataclass
class Field:
    """A gridded field and where it is valid.

    Attributes:
        values: ``(T, H, W)`` float64 values (NaN where invalid).
        valid: ``(T, H, W)`` bool, True where the source has a value.
        has_time: False for a 2-D source (one frame, no time input to the kernel).
        name: Where it came from, for plot titles.
    """

    values: np.ndarray
    valid: np.ndarray
    has_time: bool
    name: str

    @property
    def shape(self) -> tuple[int, int, int]:
        t, h, w = self.values.shape
        return int(t), int(h), int(w)


def _as_field(array: np.ndarray, *, has_time: bool, name: str, file: str | Path | None = None) -> Field:
    values = np.asarray(array, dtype=np.float64)
    if values.ndim == 2:
        values, has_time = values[None], False
    if values.ndim != 3:
        raise DataError(f"a field must be 2-D (y, x) or 3-D (time, y, x), but got shape {values.shape}", file=file)
    if min(values.shape[1:]) < 2:
        raise DataError(f"a field needs at least 2x2 points per frame, but got shape {values.shape}", file=file)
    valid = np.isfinite(values)
    if not valid.any():
        raise DataError("the field has no finite value", file=file)
    return Field(values=values, valid=valid, has_time=has_time, name=name)


def load_netcdf(path: str | Path, variable: str, *, time_dim: str | None, y_dim: str, x_dim: str) -> Field:
    """Read ``variable`` from a NetCDF file as ``(time, y, x)`` (or ``(y, x)`` without ``time_dim``).

    Raises:
        DataError: missing file, unreadable file, variable or dimension not in the file.
    """
    import xarray as xr

    path = Path(path)
    if not path.is_file():
        raise DataError("NetCDF file not found", file=path, key="data.path")
    try:
        ds = xr.open_dataset(path)
    except Exception as err:  # xarray raises many kinds for a bad file
        raise DataError(f"cannot read as NetCDF: {err}", file=path, key="data.path") from None
    with ds:
        if variable not in ds.data_vars:
            present = ", ".join(sorted(str(v) for v in ds.data_vars)) or "none"
            raise DataError(f"variable {variable!r} not in the file; variables present: {present}", file=path,
                            key="data.variable")
        da = ds[variable]
        wanted = [d for d in (time_dim, y_dim, x_dim) if d is not None]
        time_dim = time_dim if time_dim in da.dims else None
        for dim, key in ((y_dim, "data.y_dim"), (x_dim, "data.x_dim")):
            if dim not in da.dims:
                raise DataError(f"dimension {dim!r} not in variable {variable!r}; its dimensions: "
                                f"{', '.join(map(str, da.dims))}", file=path, key=key)
        order = [d for d in (time_dim, y_dim, x_dim) if d is not None]
        extra = [d for d in da.dims if d not in order]
        if extra:  # e.g. a length-1 level axis
            if any(da.sizes[d] != 1 for d in extra):
                raise DataError(f"variable {variable!r} has extra dimensions {extra} besides {wanted}", file=path,
                                key="data.variable")
            da = da.isel({d: 0 for d in extra})
        values = da.transpose(*order).values.astype(np.float64)
    return _as_field(values, has_time=time_dim is not None, name=f"{path.name}:{variable}", file=path)


def load_npy(path: str | Path) -> Field:
    """Read a ``(y, x)`` or ``(time, y, x)`` array from a ``.npy`` file."""
    path = Path(path)
    if not path.is_file():
        raise DataError("array file not found", file=path, key="data.path")
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as err:
        raise DataError(f"cannot read as .npy: {err}", file=path, key="data.path") from None
    return _as_field(array, has_time=np.ndim(array) == 3, name=path.name, file=path)


def load_image(image: str, size: list[int] | tuple[int, int] | None) -> Field:
    """A greyscale image from a file or a ``skimage.data`` name, resized, scaled to [0, 1]."""
    from skimage import color, data, io
    from skimage.transform import resize

    path = Path(image)
    if path.is_file():
        try:
            img = io.imread(path)
        except Exception as err:
            raise DataError(f"cannot read as an image: {err}", file=path, key="data.image") from None
    else:
        loader = getattr(data, image, None) if image.isidentifier() and not image.startswith("_") else None
        if loader is None or not callable(loader):
            raise DataError(f"{image!r} is neither an image file nor a skimage.data image (e.g. camera, moon, "
                            "coins, astronaut)", key="data.image")
        try:
            img = loader()
        except Exception as err:
            raise DataError(f"skimage.data.{image}() failed: {err}", key="data.image") from None
    img = np.asarray(img)
    if img.ndim == 3:
        img = color.rgb2gray(img[..., :3]) if img.shape[-1] >= 3 else img[..., 0]
    if img.ndim != 2:
        raise DataError(f"not a 2-D image: shape {img.shape}", key="data.image")
    img = img.astype(np.float64)
    if size is not None:
        img = resize(img, tuple(int(s) for s in size), anti_aliasing=True, preserve_range=True)
    lo, hi = float(img.min()), float(img.max())
    img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    return _as_field(img, has_time=False, name=f"image {path.name if path.is_file() else image}")


def _np_kernel(name: str, d: np.ndarray, lengthscale: float) -> np.ndarray:
    """Stationary correlation of distance ``d`` (unit variance)."""
    r = d / lengthscale
    if name == "rbf":
        return np.exp(-0.5 * r**2)
    if name == "matern12":
        return np.exp(-r)
    if name == "matern32":
        return (1 + np.sqrt(3) * r) * np.exp(-np.sqrt(3) * r)
    if name == "matern52":
        return (1 + np.sqrt(5) * r + 5 * r**2 / 3) * np.exp(-np.sqrt(5) * r)
    if name == "rq":
        return (1 + r**2 / 2) ** -1.0
    if name == "periodic":  # period 0.5 in normalised units, as the model's starting value
        return np.exp(-2 * np.sin(np.pi * d / 0.5) ** 2 / lengthscale**2)
    raise ConfigError(f"unknown synthetic kernel {name!r}", key="data.synthetic")


def synthetic_field(cfg: SyntheticConfig, seed: int) -> Field:
    """A draw from ``k_space(y, x) * k_time(t)`` on the grid (Kronecker sampling, exact)."""
    rng = np.random.default_rng(seed)
    t, h, w = cfg.frames, cfg.height, cfg.width
    s = space_coords(h, w)
    ds = np.sqrt(((s[:, None, :] - s[None, :, :]) ** 2).sum(-1))
    ks = _np_kernel(cfg.space_kernel, ds, cfg.space_lengthscale) + 1e-8 * np.eye(h * w)
    tt = time_coords(t)
    kt = _np_kernel(cfg.time_kernel, np.abs(tt[:, None] - tt[None, :]), cfg.time_lengthscale) + 1e-8 * np.eye(t)
    ls, lt = np.linalg.cholesky(ks), np.linalg.cholesky(kt)
    z = rng.standard_normal((t, h * w))
    values = (lt @ z @ ls.T).reshape(t, h, w)
    if cfg.noise > 0:
        values = values + cfg.noise * rng.standard_normal(values.shape)
    name = f"synthetic {cfg.space_kernel}*{cfg.time_kernel}"
    return Field(values=values, valid=np.ones(values.shape, bool), has_time=t > 1, name=name)


def load_field(cfg: DataConfig, seed: int) -> Field:
    """The field the config names (see ``configs/gp.yaml``)."""
    if cfg.source == "synthetic":
        fld = synthetic_field(cfg.synthetic, seed)
    elif cfg.source == "netcdf":
        fld = load_netcdf(str(cfg.path), str(cfg.variable), time_dim=cfg.time_dim, y_dim=cfg.y_dim, x_dim=cfg.x_dim)
    elif cfg.source == "npy":
        fld = load_npy(str(cfg.path))
    else:
        fld = load_image(cfg.path or cfg.image, cfg.size)
    if cfg.max_frames is not None and fld.shape[0] > cfg.max_frames:
        fld = Field(fld.values[: cfg.max_frames], fld.valid[: cfg.max_frames], fld.has_time, fld.name)
    return fld


# --------------------------------------------------------------------------------------------------
# Coordinates and normalisation


def space_coords(h: int, w: int) -> np.ndarray:
    """``(h*w, 2)`` normalised (y, x): grid index over ``max(h, w) - 1``, so pixels stay square."""
    scale = max(h, w) - 1
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.stack([yy.ravel(), xx.ravel()], axis=1) / scale


def time_coords(t: int) -> np.ndarray:
    """``(t,)`` normalised time in [0, 1]."""
    return np.arange(t) / max(t - 1, 1)


def grid_inputs(shape: tuple[int, int, int], has_time: bool) -> np.ndarray:
    """Model inputs for every grid point in ``(T, H, W)`` order: columns (y, x) or (y, x, t)."""
    t, h, w = shape
    s = np.tile(space_coords(h, w), (t, 1))
    if not has_time:
        return s
    tt = np.repeat(time_coords(t), h * w)[:, None]
    return np.concatenate([s, tt], axis=1)


@dataclass
class Scaler:
    """Value normalisation fitted on observed values; :meth:`inverse` undoes it."""

    mean: float
    std: float

    @classmethod
    def fit(cls, y: np.ndarray) -> Scaler:
        std = float(np.std(y))
        return cls(mean=float(np.mean(y)), std=std if std > 0 else 1.0)

    def transform(self, y: np.ndarray) -> np.ndarray:
        return (y - self.mean) / self.std

    def inverse(self, y: np.ndarray) -> np.ndarray:
        return y * self.std + self.mean

    def inverse_std(self, s: np.ndarray) -> np.ndarray:
        return s * self.std


# --------------------------------------------------------------------------------------------------
# Masks


def make_mask(shape: tuple[int, int, int], cfg: MaskConfig, seed: int, valid: np.ndarray | None = None) -> np.ndarray:
    """Observed-station mask, ``(T, H, W)`` bool (True = observed).

    ``fixed`` draws one set of stations for every frame; ``dynamic`` draws each frame anew. Each
    valid point is missing with probability ``p_missing``; a frame left with fewer than
    :data:`MIN_OBSERVED_PER_FRAME` stations gets random extra ones so every method can run.

    Raises:
        ConfigError: ``p_missing`` outside [0, 1).
    """
    if not 0 <= cfg.p_missing < 1:
        raise ConfigError(f"must be in [0, 1), but got {cfg.p_missing!r}", key="mask.p_missing")
    rng = np.random.default_rng(cfg.seed if cfg.seed is not None else seed)
    t, h, w = shape
    if cfg.regime == "fixed":
        observed = np.broadcast_to(rng.random((h, w)) >= cfg.p_missing, shape).copy()
    elif cfg.regime == "dynamic":
        observed = rng.random(shape) >= cfg.p_missing
    else:
        raise ConfigError(f"unknown mask regime {cfg.regime!r}; allowed: fixed, dynamic", key="mask.regime")
    if valid is not None:
        observed &= valid
    for k in range(t):
        frame_valid = valid[k] if valid is not None else np.ones((h, w), bool)
        need = min(MIN_OBSERVED_PER_FRAME, int(frame_valid.sum())) - int(observed[k].sum())
        if need > 0:
            free = np.flatnonzero(frame_valid.ravel() & ~observed[k].ravel())
            pick = rng.choice(free, size=need, replace=False)
            if cfg.regime == "fixed":  # keep the stations the same at every step
                observed.reshape(t, -1)[:, pick] = True
                observed &= valid if valid is not None else True
            else:
                observed[k].ravel()[pick] = True  # a view: observed is C-contiguous
    return observed
