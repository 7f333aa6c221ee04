"""Typed config of the labeling learner (every key is documented in ``configs/labeling.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from geostudy.config import check_range
from geostudy.errors import ConfigError
from geostudy.nn.training import OptimConfig as BaseOptimConfig

ARCHS = ("gcn", "sage", "gat", "mlp")
GRAPH_METHODS = ("knn", "radius", "lattice", "file")
ROLES = ("train", "val", "test", "none")


@dataclass
class SyntheticConfig:
    """The synthetic airborne-EM survey (see :mod:`geostudy.learners.labeling.data`)."""

    n_lines: int = 12
    stations_per_line: int = 60
    n_depths: int = 20
    line_spacing: float = 200.0
    station_spacing: float = 25.0
    depth_step: float = 5.0
    dip_deg: float = 4.0
    channel: bool = True
    noise: float = 1.5
    label_noise: float = 0.03
    unlabeled_fraction: float = 0.0
    seed: int | None = None

    def validate(self, file: str | Path | None, prefix: str) -> None:
        check_range(self.n_lines, f"{prefix}n_lines", file=file, low=3)
        check_range(self.stations_per_line, f"{prefix}stations_per_line", file=file, low=2)
        check_range(self.n_depths, f"{prefix}n_depths", file=file, low=2)
        for name in ("line_spacing", "station_spacing", "depth_step"):
            check_range(getattr(self, name), f"{prefix}{name}", file=file, low=0, low_open=True)
        check_range(self.dip_deg, f"{prefix}dip_deg", file=file, low=-45, high=45)
        check_range(self.noise, f"{prefix}noise", file=file, low=0)
        check_range(self.label_noise, f"{prefix}label_noise", file=file, low=0, high=1)
        check_range(self.unlabeled_fraction, f"{prefix}unlabeled_fraction", file=file, low=0, high=1, high_open=True)


@dataclass
class CsvConfig:
    """Column mapping of a node CSV (and an optional ``U,V`` edge CSV, 0-based row numbers)."""

    nodes: str | None = None
    edges: str | None = None
    id: str | None = None
    coords: list[str] = field(default_factory=lambda: ["x", "y", "z"])
    features: list[str] | None = None
    label: str = "label"
    group: str | None = None
    missing: Literal["error", "drop_rows", "impute"] = "impute"
    missing_indicator: bool = True
    classes: list[str | int] | dict | None = None
    unknown_labels: Literal["error", "unlabeled"] = "error"

    def validate(self, file: str | Path | None, prefix: str) -> None:
        codes = list(self.classes) if self.classes is not None else []
        if self.classes is not None and len(codes) < 2:
            raise ConfigError(f"must list at least 2 class codes (or be null), but got {self.classes!r}", file=file,
                              key=f"{prefix}classes")
        if len({str(c) for c in codes}) != len(codes):
            raise ConfigError(f"class codes must be distinct, but got {codes!r}", file=file, key=f"{prefix}classes")
        if isinstance(self.classes, dict):
            names = [str(v) if v is not None else str(c) for c, v in self.classes.items()]
            if len(set(names)) != len(names):
                raise ConfigError(f"class names must be distinct, but got {names!r}", file=file, key=f"{prefix}classes")


@dataclass
class DataConfig:
    source: Literal["synthetic", "csv"] = "synthetic"
    features: list[str] | str | None = None
    feature_sets: dict = field(default_factory=dict)
    derived: list[str] = field(default_factory=list)
    sequence: Literal["auto", "group", "column"] = "auto"
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    csv: CsvConfig = field(default_factory=CsvConfig)

    def validate(self, file: str | Path | None, prefix: str) -> None:
        if self.source == "csv" and not self.csv.nodes:
            raise ConfigError("data.source is 'csv', so a node CSV path is required", file=file, key=f"{prefix}csv.nodes")


@dataclass
class GraphConfig:
    method: Literal["knn", "radius", "lattice", "file"] = "lattice"
    k: int = 8
    radius: float = 30.0
    max_neighbors: int | None = 32
    within_group: bool = False
    coord_scale: list[float] | None = None
    cache_dir: str | None = None

    def validate(self, file: str | Path | None, prefix: str) -> None:
        check_range(self.k, f"{prefix}k", file=file, low=1)
        check_range(self.radius, f"{prefix}radius", file=file, low=0, low_open=True)
        if self.max_neighbors is not None:
            check_range(self.max_neighbors, f"{prefix}max_neighbors", file=file, low=1)
        for i, s in enumerate(self.coord_scale or []):
            check_range(s, f"{prefix}coord_scale[{i}]", file=file, low=0, low_open=True)


@dataclass
class SplitConfig:
    mode: Literal["alternate", "explicit"] = "alternate"
    cycle: list[str] = field(default_factory=lambda: ["train", "val", "train", "test"])
    train: list[str | int] = field(default_factory=list)
    val: list[str | int] = field(default_factory=list)
    test: list[str | int] | None = None

    def validate(self, file: str | Path | None, prefix: str) -> None:
        bad = [r for r in self.cycle if r not in ROLES]
        if bad or not self.cycle:
            raise ConfigError(f"must be a non-empty list of {', '.join(ROLES)}, but got {self.cycle!r}",
                              file=file, key=f"{prefix}cycle")
        if self.mode == "alternate" and not {"train", "val"} <= set(self.cycle):
            raise ConfigError(f"must name both train and val, but got {self.cycle!r}", file=file, key=f"{prefix}cycle")
        if self.mode == "explicit" and (not self.train or not self.val):
            raise ConfigError("split.mode is 'explicit', so split.train and split.val must list groups",
                              file=file, key=f"{prefix}train" if not self.train else f"{prefix}val")


@dataclass
class ModelConfig:
    arch: Literal["gcn", "sage", "gat", "mlp"] = "gcn"
    backend: Literal["dgl", "pyg"] = "pyg"
    hidden: int = 64
    layers: int = 2
    dropout: float = 0.3
    heads: int = 4
    residual: bool = False

    def validate(self, file: str | Path | None, prefix: str) -> None:
        check_range(self.hidden, f"{prefix}hidden", file=file, low=1)
        check_range(self.layers, f"{prefix}layers", file=file, low=1)
        check_range(self.dropout, f"{prefix}dropout", file=file, low=0, high=1, high_open=True)
        check_range(self.heads, f"{prefix}heads", file=file, low=1)


@dataclass
class OptimConfig(BaseOptimConfig):
    name: Literal["adam", "adamw", "adamax"] = "adam"
    lr: float = 0.01
    weight_decay: float = 5.0e-4


@dataclass
class TrainConfig:
    epochs: int = 150
    class_weights: Literal["none", "balanced"] | list[float] = "balanced"
    eval_every: int = 1
    restore_best: bool = True

    def validate(self, file: str | Path | None, prefix: str) -> None:
        check_range(self.epochs, f"{prefix}epochs", file=file, low=1)
        check_range(self.eval_every, f"{prefix}eval_every", file=file, low=1)
        if isinstance(self.class_weights, list):
            for i, w in enumerate(self.class_weights):
                check_range(w, f"{prefix}class_weights[{i}]", file=file, low=0)


@dataclass
class EvalConfig:
    figures: bool = True
    section_group: str | int | None = None
    plan_depth: float | None = None


@dataclass
class LabelingConfig:
    learner: str = "labeling"
    seed: int = 0
    device: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
