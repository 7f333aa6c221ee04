"""Edge-adaptive (steering) nonstationary kernel for 2-D fields.

A stationary kernel smooths across an image's edges as much as along them, so on an image it ends
up no better than biharmonic inpainting. Here every pixel carries its own anisotropic covariance
``Sigma(x)``, read off the local structure tensor of a pilot reconstruction (Takeda, Farsiu &
Milanfar 2007, "Kernel regression for image processing and reconstruction"): long along an edge,
short across it, and small where the local gradient energy is high. Two points are correlated by
Paciorek & Schervish's (2006) nonstationary form, which is positive definite for any field of
``Sigma``::

    k(x, x') = |S_x|^1/4 |S_x'|^1/4 |(S_x + S_x')/2|^-1/2 R(sqrt(Q)),
    Q = (x - x')^T (l^2 (S_x + S_x')/2)^-1 (x - x'),

with ``R`` a stationary correlation (exponential, Matérn 3/2 or 5/2, Gaussian, or rational quadratic,
a scale mixture of Gaussians with a learnt shape ``alpha``) and ``l`` one learnt global lengthscale. With every ``Sigma`` equal to the identity it is exactly the stationary
isotropic kernel ``R(|x - x'| / l)``.

Inputs carry their ``Sigma``: each row is ``(y, x, s_yy, s_yx, s_xx)``, so the kernel works
unchanged inside GPyTorch's exact GP, batched and moving-window prediction.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from gpytorch.constraints import Positive
from gpytorch.kernels import Kernel

from geostudy.errors import ConfigError

# Correlation functions R(r) of the scaled distance r, by the name of the matching stationary kernel.
CORRELATIONS: tuple[str, ...] = ("matern12", "matern32", "matern52", "rbf", "rq")
SIGMA_COLUMNS = 3  # s_yy, s_yx, s_xx appended to the (y, x) coordinates


def check_correlation(name: str, key: str) -> str:
    """``name`` if it has a nonstationary (steering) form, else a one-line :class:`ConfigError`."""
    if name not in CORRELATIONS:
        raise ConfigError(f"the steering kernel needs one of {', '.join(CORRELATIONS)} as the space kernel, "
                          f"but got {name!r}", key=key)
    return name


def correlation(name: str, r2: torch.Tensor, alpha: torch.Tensor | None = None) -> torch.Tensor:
    """``R`` at squared scaled distance ``r2`` (``alpha``: the rational quadratic's shape)."""
    if name == "rq":
        if alpha is None:
            raise ValueError("the rational quadratic correlation needs alpha")
        return (1 + r2 / (2 * alpha)).pow(-alpha)
    if name == "rbf":
        return torch.exp(-0.5 * r2)
    r = (r2 + 1e-12).sqrt()  # the epsilon keeps the gradient finite at r = 0
    if name == "matern12":
        return torch.exp(-r)
    if name == "matern32":
        return (1 + math.sqrt(3) * r) * torch.exp(-math.sqrt(3) * r)
    return (1 + math.sqrt(5) * r + 5.0 / 3.0 * r2) * torch.exp(-math.sqrt(5) * r)


class SteeringKernel(Kernel):
    """Paciorek-Schervish nonstationary kernel over ``(y, x, s_yy, s_yx, s_xx)`` inputs.

    Args:
        correlation: One of :data:`CORRELATIONS`.
        **kwargs: Passed to :class:`gpytorch.kernels.Kernel` (``lengthscale_constraint``...).
    """

    has_lengthscale = True

    def __init__(self, correlation: str = "matern12", **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.correlation = check_correlation(correlation, "model.space_kernel")
        if self.correlation == "rq":
            self.register_parameter("raw_alpha", torch.nn.Parameter(torch.zeros(*self.batch_shape, 1)))
            self.register_constraint("raw_alpha", Positive())

    @property
    def alpha(self) -> torch.Tensor | None:
        """The rational quadratic's shape (None for the other correlations)."""
        if self.correlation != "rq":
            return None
        return self.raw_alpha_constraint.transform(self.raw_alpha)  # type: ignore[attr-defined]

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, diag: bool = False, **params: object) -> torch.Tensor:
        if x1.shape[-1] != 2 + SIGMA_COLUMNS or x2.shape[-1] != 2 + SIGMA_COLUMNS:
            raise ValueError(f"steering kernel inputs must have 5 columns (y, x, s_yy, s_yx, s_xx), but got "
                             f"{x1.shape[-1]} and {x2.shape[-1]}")
        ls2 = self.lengthscale.reshape(*self.lengthscale.shape[:-2], 1, 1) ** 2
        if diag:
            left, right = x1, x2
        else:
            left, right = x1.unsqueeze(-2), x2.unsqueeze(-3)
        d = left[..., :2] - right[..., :2]
        a = 0.5 * (left[..., 2] + right[..., 2])
        b = 0.5 * (left[..., 3] + right[..., 3])
        c = 0.5 * (left[..., 4] + right[..., 4])
        det = a * c - b * b
        det_left = left[..., 2] * left[..., 4] - left[..., 3] ** 2
        det_right = right[..., 2] * right[..., 4] - right[..., 3] ** 2
        q = (c * d[..., 0] ** 2 - 2 * b * d[..., 0] * d[..., 1] + a * d[..., 1] ** 2) / det
        prefactor = (det_left * det_right).pow(0.25) / det.sqrt()
        alpha = self.alpha
        if diag:
            ls2 = ls2.squeeze(-1)
        elif alpha is not None:
            alpha = alpha.unsqueeze(-1)
        return prefactor * correlation(self.correlation, q / ls2, alpha)


def structure_sigmas(pilot: np.ndarray, *, smooth: float, elongation_reg: float, elongation_power: float,
                     energy_power: float, energy_reg: float) -> np.ndarray:
    """Per-pixel steering covariances ``(h, w, 3)`` (s_yy, s_yx, s_xx) from a pilot image.

    The structure tensor (Gaussian-smoothed outer product of the pilot's gradients) has eigenvalues
    ``s1^2 >= s2^2`` with eigenvectors ``v1`` (across the edge) and ``v2`` (along it). Following
    Takeda et al. (2007), ``Sigma = (v1 v1^T / e + e v2 v2^T) / g`` with the elongation
    ``e = ((s1 + r1) / (s2 + r1))^elongation_power`` and the energy scale
    ``g = ((s1 s2 + r2) / geometric mean)^energy_power``; ``r1``, ``r2`` are the regularisers
    (relative to the image means of ``s1`` and ``s1 s2``), which keep flat regions isotropic and
    finite. Units are relative: the GP's lengthscale sets the absolute size.

    Args:
        pilot: ``(h, w)`` image, e.g. a biharmonic or a previous GP reconstruction.
        smooth: Standard deviation, in pixels, of the smoothing of the structure tensor.
        elongation_reg: ``r1`` over the mean of ``s1`` (larger: rounder kernels).
        elongation_power: Exponent of the elongation (0: isotropic).
        energy_power: Exponent of the energy scale (0: the same size everywhere).
        energy_reg: ``r2`` over the mean of ``s1 s2``.
    """
    from scipy import ndimage

    gy, gx = np.gradient(np.asarray(pilot, dtype=np.float64))
    jyy = ndimage.gaussian_filter(gy * gy, smooth)
    jyx = ndimage.gaussian_filter(gy * gx, smooth)
    jxx = ndimage.gaussian_filter(gx * gx, smooth)
    tensor = np.stack([np.stack([jyy, jyx], -1), np.stack([jyx, jxx], -1)], -2)
    evals, evecs = np.linalg.eigh(tensor)  # ascending: column 1 is the gradient direction
    s2, s1 = np.sqrt(np.clip(evals[..., 0], 0, None)), np.sqrt(np.clip(evals[..., 1], 0, None))
    across, along = evecs[..., :, 1], evecs[..., :, 0]
    r1 = elongation_reg * float(s1.mean()) + 1e-12
    elong = ((s1 + r1) / (s2 + r1)) ** elongation_power
    energy = s1 * s2 + energy_reg * float((s1 * s2).mean()) + 1e-12
    scale = (energy / np.exp(np.log(energy).mean())) ** energy_power
    sigma = ((1 / (elong * scale))[..., None, None] * across[..., :, None] * across[..., None, :]
             + (elong / scale)[..., None, None] * along[..., :, None] * along[..., None, :])
    return np.stack([sigma[..., 0, 0], sigma[..., 0, 1], sigma[..., 1, 1]], -1)


def steering_inputs(coords: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """``(h*w, 5)`` kernel inputs: the ``(h*w, 2)`` pixel coordinates and their flattened ``sigmas``."""
    return np.concatenate([coords, sigmas.reshape(-1, SIGMA_COLUMNS)], axis=1)
