"""The matern learner's typed config (every key of ``configs/matern.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from geostudy.config import check_range
from geostudy.errors import ConfigError
from geostudy.learners.matern.priors import Prior
from geostudy.nn.training import OptimConfig as BaseOptimConfig


@dataclass
class DataConfig:
    n: int = 256
    n_max: int | None = None  # variable size: each field's n log-uniform in [n, n_max]
    locations: Literal["uniform", "poisson", "cluster", "grid"] = "uniform"
    cluster_parents: float = 8.0
    cluster_scale: float = 0.05
    nu: float = 1.5
    m_min: int = 1
    m_max: int = 1
    spacetime: bool = False
    n_times: int = 6
    nu_time: float = 0.5
    simulation: Literal["on_the_fly", "fixed"] = "on_the_fly"
    simulator: Literal["exact", "spectral"] = "exact"
    spectral_modes: int = 1000
    reuse_epochs: int = 1
    train_size: int = 4096
    val_size: int = 256
    test_size: int = 256

    def validate(self, file: str | Path | None, prefix: str) -> None:
        check_range(self.n, f"{prefix}n", file=file, low=10)
        if self.n_max is not None and self.n_max < self.n:
            raise ConfigError(f"must be >= n ({self.n}) or null, but got {self.n_max}", file=file, key=f"{prefix}n_max")
        check_range(self.spectral_modes, f"{prefix}spectral_modes", file=file, low=1)
        if self.simulator == "spectral" and self.spacetime:
            raise ConfigError("the spectral simulator is for spatial fields; use exact with spacetime: true",
                              file=file, key=f"{prefix}simulator")
        check_range(self.nu, f"{prefix}nu", file=file, low=0, low_open=True)
        check_range(self.nu_time, f"{prefix}nu_time", file=file, low=0, low_open=True)
        check_range(self.cluster_parents, f"{prefix}cluster_parents", file=file, low=0, low_open=True)
        check_range(self.cluster_scale, f"{prefix}cluster_scale", file=file, low=0, low_open=True)
        check_range(self.m_min, f"{prefix}m_min", file=file, low=1)
        if self.m_max < self.m_min:
            raise ConfigError(f"must be >= m_min ({self.m_min}), but got {self.m_max}", file=file, key=f"{prefix}m_max")
        check_range(self.n_times, f"{prefix}n_times", file=file, low=2)
        check_range(self.reuse_epochs, f"{prefix}reuse_epochs", file=file, low=1)
        for name in ("train_size", "val_size", "test_size"):
            check_range(getattr(self, name), f"{prefix}{name}", file=file, low=1)

    def size_range(self) -> tuple[int, int]:
        """The smallest and largest ``n`` of the fields this config simulates (trains on)."""
        return self.n, self.n if self.n_max is None else self.n_max


@dataclass
class PriorConfig:
    range: Prior = field(default_factory=lambda: Prior("uniform", 0.05, 0.35))
    time_range: Prior = field(default_factory=lambda: Prior("uniform", 0.1, 1.0))
    variance: Prior = field(default_factory=lambda: Prior("fixed", value=1.0))
    nugget: Prior = field(default_factory=lambda: Prior("fixed", value=0.0))


@dataclass
class GraphConfig:
    kind: Literal["knn", "radius"] = "knn"
    k: int = 8
    radius: float = 0.1
    max_neighbors: int = 32
    time_k: int = 1
    edge_weight: Literal["fixed", "learned", "none"] = "learned"
    weight_scale: float = 0.1

    def validate(self, file: str | Path | None, prefix: str) -> None:
        check_range(self.k, f"{prefix}k", file=file, low=1)
        check_range(self.radius, f"{prefix}radius", file=file, low=0, low_open=True)
        check_range(self.max_neighbors, f"{prefix}max_neighbors", file=file, low=1)
        check_range(self.time_k, f"{prefix}time_k", file=file, low=1)
        check_range(self.weight_scale, f"{prefix}weight_scale", file=file, low=0, low_open=True)


@dataclass
class ModelConfig:
    backend: Literal["pyg", "dgl"] = "pyg"
    arch: Literal["gcn", "sage", "gat"] = "gcn"
    hidden: int = 64
    depth: int = 1
    heads: int = 1
    n_basis: int = 12
    readout: Literal["mean", "sum", "attention"] = "mean"
    variogram_skip: bool = True
    local_fit: bool = True
    density_aware: bool = False
    deepsets_hidden: int = 64
    dropout: float = 0.0
    quantiles: bool = True

    def validate(self, file: str | Path | None, prefix: str) -> None:
        check_range(self.hidden, f"{prefix}hidden", file=file, low=1)
        check_range(self.depth, f"{prefix}depth", file=file, low=0)
        check_range(self.heads, f"{prefix}heads", file=file, low=1)
        check_range(self.n_basis, f"{prefix}n_basis", file=file, low=1)
        check_range(self.deepsets_hidden, f"{prefix}deepsets_hidden", file=file, low=1)
        check_range(self.dropout, f"{prefix}dropout", file=file, low=0, high=1, high_open=True)


@dataclass
class OptimConfig(BaseOptimConfig):
    name: Literal["adam", "adamw", "adamax", "sgd"] = "adam"
    lr: float = 2e-3
    weight_decay: float = 0.0


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    quantile_weight: float = 0.5
    point_loss: Literal["log", "natural"] = "log"
    warmup_steps: int = 0
    lr_decay: bool = True
    max_seconds: float | None = None

    def validate(self, file: str | Path | None, prefix: str) -> None:
        check_range(self.epochs, f"{prefix}epochs", file=file, low=1)
        check_range(self.batch_size, f"{prefix}batch_size", file=file, low=1)
        check_range(self.quantile_weight, f"{prefix}quantile_weight", file=file, low=0)
        check_range(self.warmup_steps, f"{prefix}warmup_steps", file=file, low=0)


MAX_REFINE_STEPS = 10  # from a consistent start the steps converge in 2-3; more means a bad start


@dataclass
class EvalConfig:
    level: float = 0.9
    mle_fields: int = 64
    mle_bounds: Literal["prior", "wide"] = "prior"
    refine_steps: int = 0  # Fisher-scoring steps on the exact likelihood from the network's estimate (refine.py)
    calibration_fields: int = 200  # fresh fields per replicate count that calibrate the intervals (calibrate.py); 0: off
    likelihood: Literal["auto", "exact", "vecchia"] = "auto"  # of the MLE and the refinement steps
    vecchia_from: int = 2000  # auto: Vecchia's likelihood for fields of more points than this
    vecchia_neighbors: int = 30
    plots: bool = True

    def validate(self, file: str | Path | None, prefix: str) -> None:
        check_range(self.level, f"{prefix}level", file=file, low=0, high=1, low_open=True, high_open=True)
        check_range(self.mle_fields, f"{prefix}mle_fields", file=file, low=0)
        check_range(self.refine_steps, f"{prefix}refine_steps", file=file, low=0, high=MAX_REFINE_STEPS)
        check_range(self.calibration_fields, f"{prefix}calibration_fields", file=file, low=0)
        check_range(self.vecchia_from, f"{prefix}vecchia_from", file=file, low=1)
        check_range(self.vecchia_neighbors, f"{prefix}vecchia_neighbors", file=file, low=1)

    def vecchia_neighbors_for(self, n: int, spacetime: bool) -> int | None:
        """Vecchia's conditioning-set size for a field of ``n`` points, or None for the exact likelihood."""
        use = self.likelihood == "vecchia" or (self.likelihood == "auto" and n > self.vecchia_from)
        return self.vecchia_neighbors if use and not spacetime else None


@dataclass
class EstimateConfig:
    checkpoint: str | None = None
    csv: str | None = None
    x: str = "x"
    y: str = "y"
    value: str = "value"
    replicate: str | None = None
    t: str | None = None
    mle: bool = True


@dataclass
class MaternConfig:
    learner: str = "matern"
    seed: int = 0
    mode: Literal["train", "estimate"] = "train"
    device: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    estimate: EstimateConfig = field(default_factory=EstimateConfig)

    def validate(self, file: str | Path | None, prefix: str) -> None:
        if self.mode == "estimate" and not self.estimate.checkpoint:
            raise ConfigError("mode: estimate needs a checkpoint path", file=file, key=f"{prefix}estimate.checkpoint")
        if self.mode == "estimate" and not self.estimate.csv:
            raise ConfigError("mode: estimate needs a CSV of points", file=file, key=f"{prefix}estimate.csv")
        if self.eval.likelihood == "vecchia" and self.data.spacetime:
            raise ConfigError("Vecchia's likelihood is for spatial fields; use exact or auto with spacetime: true",
                              file=file, key=f"{prefix}eval.likelihood")
        if self.model.readout == "sum" and self.data.n_max not in (None, self.data.n):
            raise ConfigError("sum pooling grows with n; with data.n_max set use mean or attention",
                              file=file, key=f"{prefix}model.readout")
        if not self.free_params():
            raise ConfigError("every parameter is fixed; give at least one a uniform or loguniform prior",
                              file=file, key=f"{prefix}prior")

    def param_names(self) -> list[str]:
        """Parameters of the simulator for this config (time_range only for space-time)."""
        names = ["range", "variance", "nugget"]
        return ["range", "time_range", "variance", "nugget"] if self.data.spacetime else names

    def free_params(self) -> list[str]:
        """The estimated parameters, in output order."""
        return [n for n in self.param_names() if getattr(self.prior, n).free]
