"""InSAR noise: spatially correlated (atmospheric) noise by FFT filtering, white noise, holes.

Correlated noise is a stationary Gaussian field with covariance

    exponential:  C(h) = σ² exp(−h / L)
    gaussian:     C(h) = σ² exp(−h² / L²)

(σ = ``amplitude``, L = ``length``, h the distance between pixels), drawn exactly on the grid by
circulant embedding: white noise on a periodic grid padded to at least the grid plus a few
correlation lengths is filtered in the Fourier domain by the square root of the covariance's
spectrum, and the grid is cut out of it. White noise (std ``white``) is added per pixel, so the
total covariance is C(h) + white² · [h = 0].

Decorrelation holes are pixels where the phase is lost (vegetation, layover): blobs thresholded from
a smooth random field so that about ``fraction`` of the pixels are masked (NaN in the map).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy.fft as sfft

COVARIANCES = ("exponential", "gaussian")


def covariance(h: np.ndarray | float, kind: str, length: float, amplitude: float) -> np.ndarray:
    """The covariance model C(h) of the correlated noise (module docstring)."""
    h = np.asarray(h, dtype=np.float64)
    if kind == "exponential":
        return amplitude**2 * np.exp(-h / length)
    if kind == "gaussian":
        return amplitude**2 * np.exp(-((h / length) ** 2))
    raise ValueError(f"covariance kind must be one of {', '.join(COVARIANCES)}, but got {kind!r}")


@functools.lru_cache(maxsize=16)
def _filter(n: int, dx: float, kind: str, length: float) -> tuple[np.ndarray, int]:
    """sqrt of the eigenvalues of the circulant embedding (unit amplitude), and the padded size."""
    # Padding: twice the grid, or the grid plus 3 lengths if more; C(3L) is 5 % (exponential) of C(0),
    # and the embedding's eigenvalues then stay non-negative (checked in the tests).
    m = int(2 ** math.ceil(math.log2(max(2 * n, n + 3.0 * length / dx))))
    m = min(m, 8 * 2 ** math.ceil(math.log2(n)))
    lag = np.minimum(np.arange(m), m - np.arange(m)) * dx
    h = np.hypot(lag[:, None], lag[None, :])
    eig = np.fft.rfft2(covariance(h, kind, length, 1.0)).real
    # With enough padding the embedding is positive definite; tiny negative round-off is clipped.
    return np.sqrt(np.clip(eig, 0.0, None)).astype(np.float32), m


def correlated_noise(
    rng: np.random.Generator, batch: int, n: int, dx: float, kind: str, length: float, amplitude: float
) -> np.ndarray:
    """``batch`` fields of shape ``(n, n)`` with covariance :func:`covariance` at pixel spacing ``dx``."""
    if amplitude == 0 or batch == 0:
        return np.zeros((batch, n, n), dtype=np.float32)
    sqrt_eig, m = _filter(n, float(dx), kind, float(length))
    white = rng.standard_normal((batch, m, m), dtype=np.float32)
    field = sfft.irfft2(sfft.rfft2(white, workers=-1) * sqrt_eig, s=(m, m), workers=-1)
    return amplitude * field[:, :n, :n]


def holes_mask(rng: np.random.Generator, batch: int, n: int, dx: float, fraction: float, size: float) -> np.ndarray:
    """Boolean masks ``(batch, n, n)``, True where a pixel is lost; blobs of about ``size`` (same unit as dx)."""
    if fraction <= 0:
        return np.zeros((batch, n, n), dtype=bool)
    field = correlated_noise(rng, batch, n, dx, "gaussian", size, 1.0)
    threshold = np.quantile(field.reshape(batch, -1), 1.0 - fraction, axis=1)
    return field > threshold[:, None, None]


def empirical_covariance(fields: np.ndarray, lags: list[tuple[int, int]]) -> np.ndarray:
    """Mean product of pixel pairs at integer lags ``(dy, dx)`` over a batch of zero-mean fields."""
    out = []
    for dy, dx in lags:
        a = fields[:, : fields.shape[1] - dy, : fields.shape[2] - dx]
        b = fields[:, dy:, dx:]
        out.append(float(np.mean(a * b)))
    return np.array(out)
