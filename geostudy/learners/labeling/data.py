"""Survey data for the labeling learner: a synthetic airborne-EM survey, or any node CSV.

Both give a :class:`Survey`: one row per node (a depth cell under a station, a well sample...), with
coordinates, features, an integer label (``-1`` = unlabeled), the class names and the group
(flight line or well) each node belongs to, which is what the splits are made of.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from geostudy.errors import ConfigError, DataError
from geostudy.learners.labeling.classes import class_table, code_text, encode_labels
from geostudy.learners.labeling.config import CsvConfig, SyntheticConfig
from geostudy.learners.labeling.missing import impute, raise_on_missing
from geostudy.learners.labeling.sequences import SequenceMode, build_sequences

logger = logging.getLogger("geostudy")

SYNTHETIC_CLASSES = ("cover", "clay", "sand", "basement", "channel")
SYNTHETIC_FEATURES = ("log_cond", "log_cond_std", "depth", "elevation")
# log10 conductivity (S/m) of each class: the channel (gravel) is more resistive than the clay it cuts.
_LOG_COND = np.array([-1.2, -0.6, -1.7, -2.4, -1.3])


@dataclass
class Survey:
    """Nodes of a survey.

    Attributes:
        ids: ``(n,)`` node ids (written back in the predictions CSV).
        coords: ``(n, d)`` coordinates; for the synthetic survey ``x, y, z`` with ``z`` the elevation.
        coord_names: Names of the coordinate columns.
        features: ``(n, f)`` float features (all available ones; :meth:`select` picks a subset).
        feature_names: Names of the feature columns.
        labels: ``(n,)`` int64 class index, ``-1`` for unlabeled nodes.
        class_names: Class names, index = label.
        groups: ``(n,)`` group name (str) of each node.
        edges: ``(2, E)`` edges read from an edge file, if any.
        source: Where the data came from (file name or ``synthetic``), for messages.
        truth: ``(n,)`` full ground truth when known (synthetic), else None.
        class_codes: The class codes as written in the data (index = label); the names when None.
        id_name: Name of the id column (the predictions CSV uses it).
        imputed: Number of feature values filled by ``data.csv.missing: impute``.
        warnings: Things the user should know about the data (also logged when read).
    """

    ids: np.ndarray
    coords: np.ndarray
    coord_names: list[str]
    features: np.ndarray
    feature_names: list[str]
    labels: np.ndarray
    class_names: list[str]
    groups: np.ndarray
    edges: np.ndarray | None = None
    source: str = "synthetic"
    truth: np.ndarray | None = None
    class_codes: list[str] | None = None
    id_name: str = "id"
    imputed: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def num_nodes(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def group_names(self) -> list[str]:
        """Distinct groups in natural order (numeric order when all names are numbers)."""
        return natural_sorted(np.unique(self.groups).tolist())

    def fingerprint(self) -> str:
        """Hash of coordinates and groups: the key of cached graphs."""
        h = hashlib.sha1()
        h.update(np.ascontiguousarray(self.coords, dtype=np.float64).tobytes())
        h.update("\0".join(self.groups.astype(str).tolist()).encode())
        return h.hexdigest()[:16]

    def with_derived(self, names: list[str], sequence: SequenceMode = "auto") -> Survey:
        """A copy with the derived features ``names`` appended (see :mod:`~geostudy.learners.labeling.derived`)."""
        if not names:
            return self
        from geostudy.learners.labeling.derived import derive, parse_name

        for name in names:
            parse_name(name, self.feature_names)
        taken = [n for n in names if n in self.feature_names]
        if taken or len(set(names)) != len(names):
            raise ConfigError(f"derived feature {(taken or names)[0]!r} is listed twice or is already a column",
                              key="data.derived")
        seqs = build_sequences(self.coords, self.groups, sequence)
        extra = derive(names, self.features, self.feature_names, seqs).astype(np.float32)
        return replace(self, features=np.concatenate([self.features, extra], axis=1),
                       feature_names=[*self.feature_names, *names])

    def select(self, names: list[str], *, key: str = "data.features") -> np.ndarray:
        """The ``(n, len(names))`` feature matrix of the named features."""
        missing = [n for n in names if n not in self.feature_names]
        if missing:
            raise ConfigError(f"unknown feature {missing[0]!r}; available: {', '.join(self.feature_names)}", key=key)
        if not names:
            raise ConfigError("must name at least one feature, but got none", key=key)
        return self.features[:, [self.feature_names.index(n) for n in names]]


def natural_sorted(values: list[str]) -> list[str]:
    try:
        return sorted(values, key=float)
    except ValueError:
        return sorted(values)


# --------------------------------------------------------------------------------------------------
# Synthetic airborne-EM survey

_SYNTHETIC_CACHE: dict[tuple, Survey] = {}


def synthetic_survey(cfg: SyntheticConfig, seed: int = 0) -> Survey:
    """A synthetic airborne-EM survey over dipping layers cut by a buried channel.

    Flight lines run along x, ``line_spacing`` apart; each station carries a column of depth cells.
    The geology (cover, clay, sand, basement dipping at ``dip_deg`` with undulations, and a
    sinuous channel incised into the clay) sets a log-conductivity; an "inversion" blurs it
    vertically (more with depth) and adds noise whose standard deviation, ``noise`` times the
    depth-growing uncertainty, is reported as ``log_cond_std``. Labels are the geology with a
    fraction ``label_noise`` replaced at random; a fraction ``unlabeled_fraction`` of the stations
    is left unlabeled. A single cell is ambiguous; its neighbours are not, which is why the graph helps.

    Args:
        cfg: The ``data.synthetic`` config.
        seed: Used when ``cfg.seed`` is None (the run's seed).
    """
    seed = seed if cfg.seed is None else cfg.seed
    key = (tuple(sorted(vars(cfg).items())), seed)
    if key in _SYNTHETIC_CACHE:
        return _SYNTHETIC_CACHE[key]
    rng = np.random.default_rng(seed)
    n_l, n_s, n_d = cfg.n_lines, cfg.stations_per_line, cfg.n_depths
    x_len, y_len = (n_s - 1) * cfg.station_spacing, (n_l - 1) * cfg.line_spacing
    line = np.arange(n_l)[:, None, None]
    station = np.arange(n_s)[None, :, None]
    cell = np.arange(n_d)[None, None, :]
    x = np.broadcast_to(station * cfg.station_spacing + rng.normal(0, 2.0, (n_l, n_s, 1)), (n_l, n_s, n_d))
    y = np.broadcast_to(line * cfg.line_spacing + rng.normal(0, 5.0, (n_l, n_s, 1)), (n_l, n_s, n_d))
    depth = np.broadcast_to((cell + 0.5) * cfg.depth_step, (n_l, n_s, n_d))
    total = n_d * cfg.depth_step
    u, v = x / max(x_len, 1e-9), y / max(y_len, 1e-9)  # 0..1 across the survey
    phase = rng.uniform(0, 2 * np.pi, 4)
    topo = 100.0 + 6.0 * np.sin(2 * np.pi * 1.3 * u + phase[0]) + 4.0 * np.cos(2 * np.pi * v + phase[1])
    elevation = topo - depth

    # Dipping interfaces (depth below surface), with gentle undulations.
    tilt = np.tan(np.radians(cfg.dip_deg)) * ((x - x_len / 2) * 0.8 + (y - y_len / 2) * 0.6)
    wave = 0.06 * total * np.sin(2 * np.pi * (1.7 * u + 0.9 * v) + phase[2])
    cover_base = 0.08 * total + 0.03 * total * np.sin(2 * np.pi * 3.1 * u + phase[3])
    clay_base = 0.38 * total + tilt * 0.5 + wave
    sand_base = 0.70 * total + tilt + wave * 0.5
    geology = np.full((n_l, n_s, n_d), 3, dtype=np.int64)
    geology[depth < sand_base] = 2
    geology[depth < clay_base] = 1
    geology[depth < cover_base] = 0
    if cfg.channel:
        centre = x_len * (0.45 + 0.15 * np.sin(2 * np.pi * 1.2 * v + phase[1]))
        half_width = 0.07 * x_len + 2.5 * cfg.station_spacing
        rel = np.abs(x - centre) / half_width
        top, thickness = 0.14 * total, 0.30 * total
        inside = (rel < 1) & (depth > top) & (depth < top + thickness * np.sqrt(np.clip(1 - rel**2, 0, 1)))
        geology[inside] = 4

    # True log-conductivity: class value plus a smooth within-class variation.
    smooth = 0.12 * np.sin(2 * np.pi * (2.3 * u - 1.1 * v) + phase[0]) * np.cos(2 * np.pi * depth / total)
    log_cond_true = _LOG_COND[geology] + smooth
    # An inversion's view: vertically blurred (resolution falls with depth) and noisy.
    rel_depth = depth / total
    uncertainty = 0.12 + 0.55 * rel_depth**1.5
    blurred = _blur_columns(log_cond_true, rel_depth[0, 0])
    log_cond = blurred + cfg.noise * uncertainty * rng.standard_normal(blurred.shape)
    log_cond_std = uncertainty * (1 + 0.1 * rng.standard_normal(blurred.shape))

    truth = geology.reshape(-1)
    labels = truth.copy()
    flip = rng.random(labels.shape) < cfg.label_noise
    labels[flip] = rng.integers(0, len(SYNTHETIC_CLASSES), int(flip.sum()))
    if cfg.unlabeled_fraction > 0:
        unl = rng.random((n_l, n_s, 1)) < cfg.unlabeled_fraction
        labels[np.broadcast_to(unl, (n_l, n_s, n_d)).reshape(-1)] = -1

    groups = np.broadcast_to(np.array([f"L{i + 1:02d}" for i in range(n_l)])[:, None, None], (n_l, n_s, n_d))
    features = np.stack([log_cond, log_cond_std, depth, elevation], axis=-1).reshape(-1, 4)
    survey = Survey(
        ids=np.arange(n_l * n_s * n_d),
        coords=np.stack([x, y, elevation], axis=-1).reshape(-1, 3).astype(np.float64),
        coord_names=["x", "y", "z"],
        features=features.astype(np.float32),
        feature_names=list(SYNTHETIC_FEATURES),
        labels=labels,
        class_names=list(SYNTHETIC_CLASSES),
        groups=groups.reshape(-1).astype(str),
        truth=truth,
    )
    _SYNTHETIC_CACHE.clear()  # keep one survey: a study re-uses the same data trial after trial
    _SYNTHETIC_CACHE[key] = survey
    return survey


def _blur_columns(values: np.ndarray, rel_depth: np.ndarray) -> np.ndarray:
    """Blur each column along its last axis with a Gaussian widening with depth."""
    n_d = values.shape[-1]
    idx = np.arange(n_d)
    sigma = 0.4 + 1.6 * rel_depth  # in cells
    kernel = np.exp(-0.5 * ((idx[None, :] - idx[:, None]) / sigma[:, None]) ** 2)
    kernel /= kernel.sum(axis=1, keepdims=True)
    return values @ kernel.T


# --------------------------------------------------------------------------------------------------
# CSV import


def _read_csv(path: Path, what: str, key: str, dtype: dict | None = None):
    import pandas as pd

    if not path.is_file():
        raise DataError(f"{what} file not found; set {key} to an existing CSV", file=path, key=key)
    try:
        return pd.read_csv(path, dtype=dtype, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {what} CSV: {' '.join(str(err).split())}", file=path) from None


def _require_columns(frame, names: list[str], path: Path, key: str) -> None:
    present = [str(c) for c in frame.columns]
    for name in names:
        if name not in frame.columns:
            raise DataError(f"column {name!r} (from {key}) not found; columns present: {', '.join(present)}", file=path)


_CSV_CACHE: dict[tuple, Survey] = {}


def load_csv(cfg: CsvConfig, *, base: Path | None = None, sequence: SequenceMode = "auto") -> Survey:
    """Read a node CSV (and an optional edge CSV) into a :class:`Survey`, cached while the files are unchanged.

    A study reads the same table trial after trial; the cache keeps one survey, keyed by the files'
    size and modification time and the column mapping.

    Args:
        cfg: Column mapping. ``features: null`` takes every numeric column that is not the id, a
            coordinate, the label or the group. Labels are read as strings; an empty label marks an
            unlabeled node. Edge CSV columns ``U,V`` are 0-based row numbers of the node CSV.
        base: Folder relative paths are resolved against (default: the working directory).
        sequence: How ``missing: impute`` finds the samples along the vertical coordinate
            (``data.sequence``; see :mod:`~geostudy.learners.labeling.sequences`).

    Raises:
        DataError: a file or column is missing (the message names the file, the column and the
            columns present), or values are malformed.
    """

    def resolve(p: str) -> Path:
        path = Path(p).expanduser()
        return path if path.is_absolute() or base is None else base / path

    if not cfg.nodes:
        raise ConfigError("a node CSV path is required when data.source is 'csv'", key="data.csv.nodes")
    path = resolve(cfg.nodes)
    key = (repr(cfg), str(base), sequence, *(_stat(resolve(p)) for p in (cfg.nodes, cfg.edges) if p))
    if key in _CSV_CACHE:
        return _CSV_CACHE[key]  # its warnings were logged when it was read
    survey = _load_csv(cfg, path, resolve, sequence)
    _CSV_CACHE.clear()
    _CSV_CACHE[key] = survey
    return survey


def _stat(path: Path) -> tuple:
    try:
        st = path.stat()
    except OSError:
        return (str(path), None)
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def _load_csv(cfg: CsvConfig, path: Path, resolve: Callable[[str], Path], sequence: SequenceMode) -> Survey:
    import pandas as pd

    frame = _read_csv(path, "node", "data.csv.nodes", dtype={cfg.label: str} if cfg.label else None)
    if not cfg.coords:
        raise ConfigError("must name at least one coordinate column, but got none", key="data.csv.coords")
    _require_columns(frame, [cfg.label], path, "data.csv.label")
    _require_columns(frame, list(cfg.coords), path, "data.csv.coords")
    if cfg.id:
        _require_columns(frame, [cfg.id], path, "data.csv.id")
    if cfg.group:
        _require_columns(frame, [cfg.group], path, "data.csv.group")
    reserved = {cfg.id, cfg.label, cfg.group, *cfg.coords}
    if cfg.features is None:
        features = [str(c) for c in frame.columns if c not in reserved and pd.api.types.is_numeric_dtype(frame[c])]
        if not features:
            raise DataError(f"no numeric feature columns besides id/coords/label/group; columns present: "
                            f"{', '.join(map(str, frame.columns))}", file=path)
    else:
        features = list(cfg.features)
        _require_columns(frame, features, path, "data.csv.features")

    line_numbers = np.arange(len(frame)) + 2  # header = line 1

    def numeric(cols: list[str], *, allow_missing: bool) -> np.ndarray:
        out = np.empty((len(frame), len(cols)), dtype=np.float64)
        for i, c in enumerate(cols):
            vals = pd.to_numeric(frame[c], errors="coerce")
            bad = (vals.isna() & frame[c].notna()) | (vals.isna() & (not allow_missing))
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                held = frame[c].iloc[row]
                held_text = "nothing" if pd.isna(held) else repr(str(held))
                raise DataError(f"column {c!r} must hold numbers, but row {row + 2} holds {held_text}", file=path)
            out[:, i] = vals.to_numpy(dtype=np.float64)
        return out

    coords = numeric(list(cfg.coords), allow_missing=False)
    feats = numeric(features, allow_missing=True)
    raw = frame[cfg.label].astype("string").str.strip()
    raw_list = [None if v is pd.NA else str(v) for v in raw.tolist()]
    seen = natural_sorted(sorted({code_text(v) for v in raw_list if v}))
    table = class_table(cfg.classes, seen)
    if len(table.codes) < 2:
        raise DataError(f"column {cfg.label!r} must hold at least 2 classes, but got {table.codes!r}", file=path)
    labels, warnings = encode_labels(raw_list, table, unknown=cfg.unknown_labels, line_numbers=line_numbers,
                                     column=cfg.label, file=str(path))
    groups = frame[cfg.group].astype(str).to_numpy() if cfg.group else np.full(len(frame), "all")
    ids = frame[cfg.id].to_numpy() if cfg.id else np.arange(len(frame))
    edges = None
    if cfg.edges:
        epath = resolve(cfg.edges)
        eframe = _read_csv(epath, "edge", "data.csv.edges")
        _require_columns(eframe, ["U", "V"], epath, "data.csv.edges")
        try:
            edges = eframe[["U", "V"]].to_numpy(dtype=np.int64).T
        except (ValueError, TypeError):
            raise DataError("columns 'U' and 'V' must hold integer row numbers", file=epath) from None
        if edges.size and (edges.min() < 0 or edges.max() >= len(frame)):
            raise DataError(f"edges must be 0-based row numbers in [0, {len(frame)}), but got "
                            f"[{edges.min()}, {edges.max()}]", file=epath)
    survey = Survey(ids=ids, coords=coords, coord_names=list(cfg.coords), features=feats.astype(np.float32),
                    feature_names=features, labels=labels, class_names=table.names, groups=groups.astype(str),
                    edges=edges, source=str(path), class_codes=table.codes, id_name=cfg.id or "id", warnings=warnings)
    return _handle_missing(survey, feats, cfg, line_numbers, sequence)


def _handle_missing(survey: Survey, feats: np.ndarray, cfg: CsvConfig, line_numbers: np.ndarray,
                    sequence: SequenceMode) -> Survey:
    """Apply ``data.csv.missing`` to the NaNs of the feature columns (see :mod:`.missing`)."""
    gaps = np.isnan(feats)
    if not gaps.any():
        return survey
    if cfg.missing == "error":
        raise_on_missing(feats, survey.feature_names, line_numbers, survey.source)
    empty = [n for n, all_gap in zip(survey.feature_names, gaps.all(0)) if all_gap]
    if empty:
        raise DataError(f"column {empty[0]!r} holds no number at all; leave it out of data.csv.features",
                        file=survey.source, key="data.csv.features")
    if cfg.missing == "drop_rows":
        keep = ~gaps.any(1)
        if keep.sum() == 0:
            raise DataError("every row has a missing feature value, so data.csv.missing: drop_rows leaves nothing; "
                            "use impute", file=survey.source, key="data.csv.missing")
        new_index = np.cumsum(keep) - 1
        edges = survey.edges
        if edges is not None:
            edges = new_index[edges[:, keep[edges[0]] & keep[edges[1]]]]
        return replace(survey, ids=survey.ids[keep], coords=survey.coords[keep], features=survey.features[keep],
                       labels=survey.labels[keep], groups=survey.groups[keep], edges=edges)
    filled = impute(feats, build_sequences(survey.coords, survey.groups, sequence), survey.groups)
    names = list(survey.feature_names)
    values = filled.values
    if cfg.missing_indicator:
        affected = np.flatnonzero(gaps.any(0))
        values = np.concatenate([values, gaps[:, affected].astype(np.float64)], axis=1)
        names += [f"{survey.feature_names[j]}_missing" for j in affected]
    return replace(survey, features=values.astype(np.float32), feature_names=names, imputed=filled.count)
