"""Kernel construction: one kernel per dimension group (space, time), combined by product or sum.

Inputs are laid out as ``(y, x)`` for a 2-D field and ``(y, x, t)`` for a space-time field, so the
space group is always the active dims ``(0, 1)`` and the time group ``(2,)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import gpytorch
import torch
from gpytorch.constraints import GreaterThan
from gpytorch.kernels import (
    Kernel,
    MaternKernel,
    PeriodicKernel,
    ProductKernel,
    RBFKernel,
    RQKernel,
    ScaleKernel,
    SpectralMixtureKernel,
)

from geostudy.errors import ConfigError
from geostudy.learners.gp.steering import SteeringKernel

KERNEL_NAMES: tuple[str, ...] = (
    "rbf",
    "matern12",
    "matern32",
    "matern52",
    "periodic",
    "rq",
    "spectral_mixture",
    "soft_disabled",
    "disabled",
)
COMBINE_NAMES: tuple[str, ...] = ("product", "sum")
SPACE_DIMS: tuple[int, ...] = (0, 1)
TIME_DIMS: tuple[int, ...] = (2,)
# A lengthscale this large (inputs live in [0, 1]) makes a stationary kernel constant over its group.
SOFT_DISABLED_LENGTHSCALE = 1.0e4


def check_kernel_name(name: object, key: str) -> str:
    """Return ``name`` if it is a known kernel, else raise a one-line :class:`ConfigError`."""
    if not isinstance(name, str) or name not in KERNEL_NAMES:
        raise ConfigError(f"unknown kernel {name!r}; allowed: {', '.join(KERNEL_NAMES)}", key=key)
    return name


def _lengthscale_constraint(min_lengthscale: float) -> GreaterThan | None:
    return GreaterThan(min_lengthscale) if min_lengthscale > 0 else None


def base_kernel(
    name: str,
    active_dims: Sequence[int],
    *,
    ard: bool = True,
    num_mixtures: int = 4,
    init_lengthscale: float = 0.1,
    min_lengthscale: float = 0.0,
    key: str = "model.kernel",
) -> Kernel | None:
    """One group's kernel, or None for ``disabled``.

    Args:
        name: One of :data:`KERNEL_NAMES`.
        active_dims: The input columns this kernel sees.
        ard: One lengthscale per input column (else one shared).
        num_mixtures: Components of the spectral mixture kernel.
        init_lengthscale: Starting lengthscale, in normalised coordinates.
        min_lengthscale: Lower bound on the learnt lengthscale (0: GPyTorch's default positive bound).
        key: Config key, for the error message.
    """
    check_kernel_name(name, key)
    dims = tuple(int(d) for d in active_dims)
    constraint = _lengthscale_constraint(min_lengthscale)
    common: dict = {"active_dims": dims, "lengthscale_constraint": constraint}
    if ard and len(dims) > 1:
        common["ard_num_dims"] = len(dims)
    kernel: Kernel
    if name == "disabled":
        return None
    if name == "rbf":
        kernel = RBFKernel(**common)
    elif name.startswith("matern"):
        nu = {"matern12": 0.5, "matern32": 1.5, "matern52": 2.5}[name]
        kernel = MaternKernel(nu=nu, **common)
    elif name == "periodic":
        kernel = PeriodicKernel(**common)
        kernel.period_length = 0.5
    elif name == "rq":
        kernel = RQKernel(**common)
    elif name == "spectral_mixture":
        if num_mixtures < 1:
            raise ConfigError(f"must be >= 1, but got {num_mixtures}", key="model.num_mixtures")
        return SpectralMixtureKernel(num_mixtures=num_mixtures, ard_num_dims=len(dims), active_dims=dims)
    else:  # soft_disabled
        kernel = RBFKernel(active_dims=dims)
        kernel.lengthscale = SOFT_DISABLED_LENGTHSCALE
        kernel.raw_lengthscale.requires_grad_(False)
        return kernel
    kernel.lengthscale = max(init_lengthscale, 2 * min_lengthscale)
    return kernel


def build_kernel(
    space: str,
    time: str | None,
    *,
    combine: str = "product",
    ard: bool = True,
    num_mixtures: int = 4,
    space_lengthscale: float = 0.1,
    time_lengthscale: float = 0.3,
    min_lengthscale: float = 0.0,
    nonstationary: str = "none",
) -> ScaleKernel:
    """The full covariance: ``scale * (k_space ∘ k_time)`` with ∘ a product or a sum.

    Args:
        space: Kernel name for the (y, x) group.
        time: Kernel name for the time group, or None for a 2-D field (no time input).
        combine: ``product`` or ``sum`` of the group kernels.
        ard: Separate lengthscales for y and x.
        num_mixtures: Components of any spectral mixture kernel.
        space_lengthscale: Starting lengthscale of the space kernel.
        time_lengthscale: Starting lengthscale of the time kernel.
        min_lengthscale: Lower bound on learnt lengthscales.
        nonstationary: ``none``, or ``steering``: the space kernel becomes the edge-adaptive
            :class:`~geostudy.learners.gp.steering.SteeringKernel` with the space kernel's correlation
            (2-D fields only; inputs then carry each point's covariance).

    Raises:
        ConfigError: unknown kernel or combination name, every group disabled, or a steering kernel
            asked with a time group or a correlation it lacks.
    """
    check_kernel_name(space, "model.space_kernel")
    if nonstationary == "steering":
        if time is not None:
            raise ConfigError("nonstationary 'steering' works on 2-D fields (image, (y, x) arrays), but this field "
                              "has a time axis", key="model.nonstationary")
        steer = SteeringKernel(space, lengthscale_constraint=_lengthscale_constraint(min_lengthscale))
        steer.lengthscale = max(space_lengthscale, 2 * min_lengthscale)
        return ScaleKernel(steer)
    if nonstationary != "none":
        raise ConfigError(f"unknown nonstationary kernel {nonstationary!r}; allowed: none, steering",
                          key="model.nonstationary")
    if combine not in COMBINE_NAMES:
        raise ConfigError(f"unknown combination {combine!r}; allowed: {', '.join(COMBINE_NAMES)}", key="model.combine")
    parts = [base_kernel(space, SPACE_DIMS, ard=ard, num_mixtures=num_mixtures, init_lengthscale=space_lengthscale,
                         min_lengthscale=min_lengthscale, key="model.space_kernel")]
    if time is not None:
        check_kernel_name(time, "model.time_kernel")
        parts.append(base_kernel(time, TIME_DIMS, ard=False, num_mixtures=num_mixtures,
                                 init_lengthscale=time_lengthscale, min_lengthscale=min_lengthscale,
                                 key="model.time_kernel"))
    kernels = [k for k in parts if k is not None]
    if not kernels:
        raise ConfigError("every kernel group is 'disabled'; enable space_kernel or time_kernel",
                          key="model.space_kernel")
    inner: Kernel
    if len(kernels) == 1:
        inner = kernels[0]
    elif combine == "product":
        inner = ProductKernel(*kernels)
    else:
        inner = gpytorch.kernels.AdditiveKernel(*kernels)
    return ScaleKernel(inner)


def spectral_mixture_parts(kernel: Kernel) -> list[SpectralMixtureKernel]:
    """Every spectral mixture kernel inside ``kernel`` (they need data-driven initialisation)."""
    return [m for m in kernel.modules() if isinstance(m, SpectralMixtureKernel)]


def init_spectral_mixtures(kernel: Kernel, x: torch.Tensor, y: torch.Tensor) -> None:
    """Initialise spectral mixture components from the data (GPyTorch's recommended start)."""
    for sm in spectral_mixture_parts(kernel):
        sm.initialize_from_data(x, y)


def kernel_label(space: str, time: str | None, combine: str) -> str:
    """Short name of a combination for tables and plots, e.g. ``matern32*rbf`` or ``rbf+periodic``."""
    if time is None:
        return space
    return f"{space}{'*' if combine == 'product' else '+'}{time}"
