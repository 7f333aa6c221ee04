"""The GP learner's typed config (``configs/gp.yaml`` documents every key)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from geostudy.config import check_range
from geostudy.errors import ConfigError
from geostudy.learners.gp.crossval import OBJECTIVES
from geostudy.learners.gp.kernels import COMBINE_NAMES, check_kernel_name
from geostudy.learners.gp.stations_config import OutputConfig, StationsConfig
from geostudy.learners.gp.steering import CORRELATIONS


@dataclass
class SyntheticConfig:
    """A space-time field drawn from a known kernel (the truth for kernel-recovery tests)."""

    frames: int = 4
    height: int = 20
    width: int = 20
    space_kernel: str = "matern12"
    time_kernel: str = "rbf"
    space_lengthscale: float = 0.2
    time_lengthscale: float = 0.5
    noise: float = 0.0

    def validate(self, file: str | Path | None, prefix: str) -> None:
        check_range(self.frames, f"{prefix}frames", file=file, low=1)
        check_range(self.height, f"{prefix}height", file=file, low=2)
        check_range(self.width, f"{prefix}width", file=file, low=2)
        for name in ("space_kernel", "time_kernel"):
            value = getattr(self, name)
            if value not in ("rbf", "matern12", "matern32", "matern52", "periodic", "rq"):
                raise ConfigError(f"must be one of rbf, matern12, matern32, matern52, periodic, rq, but got {value!r}",
                                  file=file, key=f"{prefix}{name}")
        check_range(self.space_lengthscale, f"{prefix}space_lengthscale", file=file, low=0, low_open=True)
        check_range(self.time_lengthscale, f"{prefix}time_lengthscale", file=file, low=0, low_open=True)
        check_range(self.noise, f"{prefix}noise", file=file, low=0)


@dataclass
class DataConfig:
    source: Literal["synthetic", "netcdf", "npy", "image", "stations"] = "synthetic"
    path: str | None = None
    variable: str | None = None
    time_dim: str | None = "time"
    y_dim: str = "lat"
    x_dim: str = "lon"
    image: str = "camera"
    size: list[int] | None = None
    max_frames: int | None = None
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    stations: StationsConfig = field(default_factory=StationsConfig)

    def validate(self, file: str | Path | None, prefix: str) -> None:
        if self.source in ("netcdf", "npy") and not self.path:
            raise ConfigError(f"data.source {self.source!r} needs a file path", file=file, key=f"{prefix}path")
        if self.source == "netcdf" and not self.variable:
            raise ConfigError("data.source 'netcdf' needs the variable name", file=file, key=f"{prefix}variable")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 2):
            raise ConfigError(f"must be [height, width] with both >= 2, but got {self.size!r}", file=file,
                              key=f"{prefix}size")
        if self.max_frames is not None:
            check_range(self.max_frames, f"{prefix}max_frames", file=file, low=1)


@dataclass
class MaskConfig:
    regime: Literal["fixed", "dynamic"] = "fixed"
    p_missing: float = 0.8
    seed: int | None = None

    def validate(self, file: str | Path | None, prefix: str) -> None:
        check_range(self.p_missing, f"{prefix}p_missing", file=file, low=0, high=1, high_open=True)


@dataclass
class LocalConfig:
    """Moving-window (local) kriging: each point is predicted from its nearest stations only.

    Hyperparameters are still fitted globally; the posterior at a point conditions on its
    ``neighbours`` nearest stations, so memory and time grow linearly with the grid and, with as many
    neighbours as stations, the prediction equals the global GP's.
    """

    enabled: bool = False
    neighbours: int = 64

    def validate(self, file: str | Path | None, prefix: str) -> None:
        check_range(self.neighbours, f"{prefix}neighbours", file=file, low=1)


@dataclass
class SteeringConfig:
    """The edge-adaptive nonstationary kernel (``model.nonstationary: steering``, 2-D fields only).

    Each pixel's kernel covariance comes from the structure tensor of a pilot reconstruction
    (``pilot``: biharmonic inpainting of the stations, or that refined with the patch prior in the
    file ``patch_prior``, :mod:`geostudy.learners.gp.patch_prior`; then the previous round's GP
    mean); see :mod:`geostudy.learners.gp.steering` for the formulas. With ``choose_rounds`` the reconstruction
    is the round (of 1..``rounds``) with the lowest out-of-fold error on the stations
    (:mod:`geostudy.learners.gp.rounds`, ``train.folds`` folds).
    """

    rounds: int = 1
    smooth: float = 2.5
    elongation_reg: float = 0.3
    elongation_power: float = 1.0
    energy_power: float = 0.5
    energy_reg: float = 0.01
    choose_rounds: bool = False
    pilot: str = "biharmonic"
    patch_prior: str | None = None

    def validate(self, file: str | Path | None, prefix: str) -> None:
        if self.pilot not in PILOT_NAMES:
            raise ConfigError(f"unknown pilot {self.pilot!r}; allowed: {', '.join(PILOT_NAMES)}", file=file,
                              key=f"{prefix}pilot")
        if self.pilot == "patch_prior" and not self.patch_prior:
            raise ConfigError("pilot 'patch_prior' needs the prior's file here (make one with python -m "
                              "geostudy.learners.gp.make_prior)", file=file, key=f"{prefix}patch_prior")
        check_range(self.rounds, f"{prefix}rounds", file=file, low=1, high=10)
        check_range(self.smooth, f"{prefix}smooth", file=file, low=0, low_open=True, high=50)
        check_range(self.elongation_reg, f"{prefix}elongation_reg", file=file, low=0, low_open=True)
        check_range(self.elongation_power, f"{prefix}elongation_power", file=file, low=0, high=4)
        check_range(self.energy_power, f"{prefix}energy_power", file=file, low=0, high=4)
        check_range(self.energy_reg, f"{prefix}energy_reg", file=file, low=0, low_open=True)


MEAN_NAMES: tuple[str, ...] = ("constant", "linear")  # station data's prior mean (gp/kron.py)
NONSTATIONARY_NAMES: tuple[str, ...] = ("none", "steering")
PILOT_NAMES: tuple[str, ...] = ("biharmonic", "patch_prior")


@dataclass
class ModelConfig:
    space_kernel: str = "matern32"
    time_kernel: str = "rbf"
    combine: str = "product"
    ard: bool = True
    num_mixtures: int = 4
    space_lengthscale: float = 0.1
    time_lengthscale: float = 0.3
    min_lengthscale: float = 0.0
    noise_lower_bound: float = 1.0e-4
    inference: Literal["auto", "exact", "svgp", "kronecker"] = "auto"
    exact_max_n: int = 3000
    inducing_points: int = 256
    batch_size: int = 1024
    init_from_data: bool = False
    time_period: float | None = None
    mean: str = "constant"
    local: LocalConfig = field(default_factory=LocalConfig)
    nonstationary: str = "none"
    steering: SteeringConfig = field(default_factory=SteeringConfig)

    @property
    def uses_patch_prior(self) -> bool:
        """Whether the steering kernel's pilot comes from a patch prior file."""
        return self.nonstationary == "steering" and self.steering.pilot == "patch_prior"

    def validate(self, file: str | Path | None, prefix: str) -> None:
        try:
            check_kernel_name(self.space_kernel, f"{prefix}space_kernel")
            check_kernel_name(self.time_kernel, f"{prefix}time_kernel")
        except ConfigError as err:
            raise ConfigError(err.message, file=file, key=err.key) from None
        if self.combine not in COMBINE_NAMES:
            raise ConfigError(f"unknown combination {self.combine!r}; allowed: {', '.join(COMBINE_NAMES)}",
                              file=file, key=f"{prefix}combine")
        check_range(self.num_mixtures, f"{prefix}num_mixtures", file=file, low=1)
        check_range(self.space_lengthscale, f"{prefix}space_lengthscale", file=file, low=0, low_open=True)
        check_range(self.time_lengthscale, f"{prefix}time_lengthscale", file=file, low=0, low_open=True)
        check_range(self.min_lengthscale, f"{prefix}min_lengthscale", file=file, low=0)
        check_range(self.noise_lower_bound, f"{prefix}noise_lower_bound", file=file, low=0, low_open=True)
        check_range(self.exact_max_n, f"{prefix}exact_max_n", file=file, low=1)
        if self.mean not in MEAN_NAMES:
            raise ConfigError(f"unknown mean {self.mean!r}; allowed: {', '.join(MEAN_NAMES)}", file=file,
                              key=f"{prefix}mean")
        if self.time_period is not None:
            check_range(self.time_period, f"{prefix}time_period", file=file, low=0, low_open=True)
        check_range(self.inducing_points, f"{prefix}inducing_points", file=file, low=1)
        check_range(self.batch_size, f"{prefix}batch_size", file=file, low=1)
        if self.nonstationary not in NONSTATIONARY_NAMES:
            raise ConfigError(f"unknown nonstationary kernel {self.nonstationary!r}; allowed: "
                              f"{', '.join(NONSTATIONARY_NAMES)}", file=file, key=f"{prefix}nonstationary")
        if self.nonstationary == "steering":
            if self.space_kernel not in CORRELATIONS:
                raise ConfigError(f"nonstationary 'steering' needs one of {', '.join(CORRELATIONS)}, but got "
                                  f"{self.space_kernel!r}", file=file, key=f"{prefix}space_kernel")
            if self.inference == "svgp":
                raise ConfigError("nonstationary 'steering' needs exact inference (auto or exact), but got 'svgp'",
                                  file=file, key=f"{prefix}inference")


@dataclass
class TrainConfig:
    iterations: int = 100
    lr: float = 0.05
    report_every: int = 10
    report_points: int = 2000
    optim: Literal["adam", "lbfgs"] = "adam"
    hyper_subsample: int = 0
    refine_steps: int = 0
    objective: str = "mll"
    folds: int = 10
    hyper_block: int = 2000
    station_calibration: bool = True

    def validate(self, file: str | Path | None, prefix: str) -> None:
        check_range(self.iterations, f"{prefix}iterations", file=file, low=1)
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"unknown objective {self.objective!r}; allowed: {', '.join(OBJECTIVES)}", file=file,
                              key=f"{prefix}objective")
        check_range(self.folds, f"{prefix}folds", file=file, low=2)
        check_range(self.hyper_block, f"{prefix}hyper_block", file=file, low=10)
        check_range(self.hyper_subsample, f"{prefix}hyper_subsample", file=file, low=0)
        check_range(self.refine_steps, f"{prefix}refine_steps", file=file, low=0)
        check_range(self.lr, f"{prefix}lr", file=file, low=0, low_open=True)
        check_range(self.report_every, f"{prefix}report_every", file=file, low=1)
        check_range(self.report_points, f"{prefix}report_points", file=file, low=1)


@dataclass
class EvalConfig:
    predict_batch: int = 4096
    biharmonic: bool = True
    griddata: bool = True
    sklearn_gpr: bool = False
    sklearn_max_n: int = 1500
    pdf: bool = True
    max_pdf_frames: int = 24
    station_folds: int = 5
    block_spacing: float | None = None
    spline: bool = True
    map_times: int = 3
    series_figures: int = 4

    def validate(self, file: str | Path | None, prefix: str) -> None:
        check_range(self.predict_batch, f"{prefix}predict_batch", file=file, low=1)
        if self.station_folds != 0:
            check_range(self.station_folds, f"{prefix}station_folds", file=file, low=2)
        if self.block_spacing is not None:
            check_range(self.block_spacing, f"{prefix}block_spacing", file=file, low=0, low_open=True)
        check_range(self.map_times, f"{prefix}map_times", file=file, low=1)
        check_range(self.series_figures, f"{prefix}series_figures", file=file, low=0)
        check_range(self.sklearn_max_n, f"{prefix}sklearn_max_n", file=file, low=1)
        check_range(self.max_pdf_frames, f"{prefix}max_pdf_frames", file=file, low=1)


@dataclass
class GpConfig:
    learner: str = "gp"
    seed: int = 0
    device: str = "auto"
    dtype: Literal["float32", "float64"] = "float64"
    data: DataConfig = field(default_factory=DataConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
