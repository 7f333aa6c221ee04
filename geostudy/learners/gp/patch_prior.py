"""A patch prior learnt from other images, and the pilot reconstruction it gives the steering kernel.

The steering kernel reads each pixel's covariance off a pilot reconstruction, and biharmonic
inpainting blurs exactly the edges the kernel should follow. Here the pilot comes from a Gaussian
mixture over small image patches (mean removed), fitted to *other* images, and expected patch log
likelihood restoration (EPLL; Zoran & Weiss 2011, "From learning models of natural image patches to
whole image restoration"): starting from the biharmonic fill, every overlapping patch is replaced by
its Wiener estimate under its most likely mixture component, the patches are averaged back, the
stations are put back, and the assumed noise shrinks from round to round. At 90% missing, with a
prior fitted to 14 other skimage images, this pilot lowered the steering GP's RMSE on each of the
three images measured that the prior had not seen (camera, astronaut, coins; see bench/gp.py).

Make a prior with ``python -m geostudy.learners.gp.make_prior --out prior.npz IMAGE...`` (files or
``skimage.data`` names); a study uses it with ``model.steering.pilot: patch_prior`` and
``model.steering.patch_prior: prior.npz``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.linalg import solve_triangular

from geostudy.errors import DataError

SCALES = (0.2, 0.25, 0.3, 0.4, 0.5)  # image sizes the patches are taken at (fractions of the original)
NOISE_SCHEDULE = tuple(np.geomspace(0.06, 0.001, 14))  # assumed noise std per round (values in [0, 1])
# A prior must not have seen the image it restores, under any name: images are compared by content, at
# 16x16 with the mean removed. Distinct skimage images correlate at most 0.63 there; the same picture
# resized, renamed (cat/chelsea), with noise added or a few pixels cropped, above 0.99.
FINGERPRINT_SIZE = 16
SAME_IMAGE_CORRELATION = 0.95


def fingerprint(image: np.ndarray) -> np.ndarray:
    """``image`` (2-D; NaN where invalid) shrunk to 16x16, mean removed, unit norm, flattened."""
    from skimage.transform import resize

    image = np.asarray(image, dtype=np.float64)
    valid = np.isfinite(image)
    image = np.where(valid, image, image[valid].mean() if valid.any() else 0.0)
    small = resize(image, (FINGERPRINT_SIZE, FINGERPRINT_SIZE), anti_aliasing=True).ravel()
    small -= small.mean()
    norm = np.linalg.norm(small)
    return small / norm if norm > 1e-12 else small  # a flat image matches nothing


@dataclass
class PatchPrior:
    """A Gaussian mixture over ``patch x patch`` patches with their mean removed.

    Attributes:
        weights: ``(K,)`` mixture weights.
        means: ``(K, patch**2)`` component means.
        covariances: ``(K, patch**2, patch**2)`` component covariances.
        trained_on: The images the mixture was fitted to (names or file names).
        fingerprints: ``(len(trained_on), 256)``: their :func:`fingerprint`, so that a run can refuse to
            score a reconstruction of an image the prior has seen (:meth:`seen`).
    """

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    trained_on: list[str]
    fingerprints: np.ndarray

    def seen(self, image: np.ndarray) -> str | None:
        """The name of the training image that ``image`` is (by content), or None."""
        if not len(self.fingerprints):
            return None
        correlation = self.fingerprints @ fingerprint(image)
        best = int(np.argmax(correlation))
        return self.trained_on[best] if correlation[best] >= SAME_IMAGE_CORRELATION else None

    @property
    def patch(self) -> int:
        return int(round(np.sqrt(self.means.shape[1])))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:  # np.savez would append ".npz" to any other suffix
            np.savez(f, weights=self.weights, means=self.means, covariances=self.covariances,
                     trained_on=np.array(json.dumps(self.trained_on)), fingerprints=self.fingerprints)
        return path

    @classmethod
    def load(cls, path: str | Path) -> PatchPrior:
        """Read a prior written by :meth:`save`; anything else is a one-line :class:`DataError`."""
        try:
            with np.load(path, allow_pickle=False) as z:
                fingerprints = z["fingerprints"] if "fingerprints" in z.files else None
                prior = cls(z["weights"], z["means"], z["covariances"], json.loads(str(z["trained_on"])),
                            np.zeros((0, FINGERPRINT_SIZE ** 2)) if fingerprints is None else fingerprints)
        except FileNotFoundError:
            raise DataError("no such patch prior; make one with python -m geostudy.learners.gp.make_prior",
                            file=path) from None
        except (OSError, ValueError, KeyError) as err:
            raise DataError(f"not a patch prior written by geostudy.learners.gp.make_prior ({err})", file=path) from None
        if fingerprints is None:  # the first format (2026-12-01) named its images only
            raise DataError("a patch prior from an older geostudy (it does not record its images' content); "
                            "fit it again with python -m geostudy.learners.gp.make_prior", file=path)
        k, d = prior.means.shape if prior.means.ndim == 2 else (0, 0)
        if not (k and prior.patch ** 2 == d and prior.weights.shape == (k,) and prior.covariances.shape == (k, d, d)
                and prior.fingerprints.shape == (len(prior.trained_on), FINGERPRINT_SIZE ** 2)):
            raise DataError(f"inconsistent patch prior shapes: weights {prior.weights.shape}, means "
                            f"{prior.means.shape}, covariances {prior.covariances.shape}, fingerprints "
                            f"{prior.fingerprints.shape} of {len(prior.trained_on)} images", file=path)
        return prior


def training_patches(images: Sequence[np.ndarray], patch: int, count: int, seed: int) -> np.ndarray:
    """``count`` random patches (mean removed) from every image at every size in :data:`SCALES`."""
    from skimage.transform import resize

    rng = np.random.default_rng(seed)
    per = max(1, count // (len(images) * len(SCALES)))
    out = []
    for image in images:
        for scale in SCALES:
            shape = (int(image.shape[0] * scale), int(image.shape[1] * scale))
            if min(shape) < 2 * patch:
                continue
            small = resize(image, shape, anti_aliasing=True)
            windows = sliding_window_view(small, (patch, patch)).reshape(-1, patch * patch)
            out.append(windows[rng.choice(len(windows), size=min(per, len(windows)), replace=False)])
    if not out:
        raise ValueError(f"the images are too small for {patch}x{patch} patches at sizes {SCALES}")
    x = np.concatenate(out)
    return x - x.mean(axis=1, keepdims=True)


def fit_patch_prior(images: Sequence[np.ndarray], names: Sequence[str], *, patch: int = 8, components: int = 32,
                    patches: int = 60000, iterations: int = 40, seed: int = 0) -> PatchPrior:
    """Fit the mixture (scikit-learn, full covariances) to patches of ``images`` (values in [0, 1])."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    x = training_patches(images, patch, patches, seed)
    gmm = GaussianMixture(components, covariance_type="full", max_iter=iterations, reg_covar=1e-6, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a fixed budget of EM iterations, by design
        gmm.fit(x)
    return PatchPrior(gmm.weights_, gmm.means_, gmm.covariances_, list(names),
                      np.stack([fingerprint(image) for image in images]))


def _patch_estimates(prior: PatchPrior, image: np.ndarray, noise_var: float) -> np.ndarray:
    """Each overlapping patch's Wiener estimate under its most likely component (EPLL's patch step)."""
    d = prior.means.shape[1]
    p = prior.patch
    patches = sliding_window_view(image, (p, p)).reshape(-1, d)
    dc = patches.mean(axis=1, keepdims=True)
    centred = patches - dc
    best = np.full(len(patches), -np.inf)
    estimate = np.empty_like(patches)
    eye = np.eye(d)
    for w, mu, cov in zip(prior.weights, prior.means, prior.covariances, strict=True):
        chol = np.linalg.cholesky(cov + noise_var * eye)
        # Triangular solves on the factor (np.linalg.solve would factorise it again as a general matrix).
        whitened = solve_triangular(chol, (centred - mu).T, lower=True, check_finite=False)
        loglik = np.log(w) - 0.5 * np.einsum("ij,ij->j", whitened, whitened) - np.log(np.diag(chol)).sum()
        better = loglik > best
        best = np.where(better, loglik, best)
        if better.any():
            inverse_times_r = solve_triangular(chol, whitened[:, better], lower=True, trans="T", check_finite=False)
            estimate[better] = mu + (cov @ inverse_times_r).T
    return estimate + dc


def _average_patches(estimate: np.ndarray, shape: tuple[int, int], p: int) -> np.ndarray:
    """Each pixel's mean over the patch estimates that cover it."""
    h, w = shape[0] - p + 1, shape[1] - p + 1
    blocks = estimate.reshape(h, w, p, p)
    total, count = np.zeros(shape), np.zeros(shape)
    for i in range(p):
        for j in range(p):
            total[i:i + h, j:j + w] += blocks[:, :, i, j]
            count[i:i + h, j:j + w] += 1
    return total / count


def restore(prior: PatchPrior, image: np.ndarray, observed: np.ndarray, start: np.ndarray,
            noise_schedule: Sequence[float] = NOISE_SCHEDULE, inner: int = 2,
            log: Callable[[str], None] | None = None) -> np.ndarray:
    """EPLL inpainting of the 2-D ``image`` at ``observed`` pixels, from the reconstruction ``start``.

    The stations are kept exactly (noise-free data); only the missing pixels change.
    """
    if min(image.shape) < prior.patch:
        raise DataError(f"the patch prior's {prior.patch}x{prior.patch} patches do not fit in this {image.shape} field",
                        key="model.steering.patch_prior")
    x = np.where(observed, image, start).astype(np.float64)
    began = time.perf_counter()
    for sigma in noise_schedule:
        for _ in range(inner):
            x = _average_patches(_patch_estimates(prior, x, float(sigma) ** 2), x.shape, prior.patch)
            x[observed] = image[observed]
    if log is not None:
        log(f"gp: patch-prior pilot ({len(noise_schedule)} x {inner} EPLL rounds) in {time.perf_counter() - began:.1f}s")
    return x
