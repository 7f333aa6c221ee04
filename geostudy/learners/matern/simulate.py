"""Simulation of Matérn fields: parameters from the priors, locations, batched Cholesky in float64."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from geostudy.learners.matern.config import MaternConfig
from geostudy.learners.matern.covariance import cholesky_jitter, matern_correlation, pairwise_distances
from geostudy.learners.matern.locations import sample_locations
from geostudy.learners.matern.spectral import spectral_fields


@dataclass
class FieldSet:
    """A set of simulated (or observed) fields.

    Attributes:
        coords: Per field, ``(n_i, 2)`` node coordinates in the unit square (for space-time, one node per
            site and time, so a site repeats).
        values: Per field, ``(m_i, n_i)`` replicates.
        params: Parameter name -> ``(B,)`` true values (not logs); empty for observed data.
        times: Per field, ``(n_i,)`` node times in [0, 1], or None for purely spatial fields.
    """

    coords: list[np.ndarray]
    values: list[np.ndarray]
    params: dict[str, np.ndarray]
    times: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.coords)

    def subset(self, idx: np.ndarray | list[int]) -> FieldSet:
        idx = list(np.asarray(idx).tolist())
        return FieldSet(
            coords=[self.coords[i] for i in idx],
            values=[self.values[i] for i in idx],
            params={k: v[idx] for k, v in self.params.items()},
            times=None if self.times is None else [self.times[i] for i in idx],
        )


def sample_params(cfg: MaternConfig, size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw ``size`` parameter sets from the config's priors (fixed ones repeated)."""
    return {name: getattr(cfg.prior, name).sample(size, rng) for name in cfg.param_names()}


def sample_sizes(cfg: MaternConfig, size: int, rng: np.random.Generator) -> np.ndarray:
    """Per field, its (expected) number of sites: ``data.n``, or log-uniform in ``[data.n, data.n_max]``."""
    low, high = cfg.data.size_range()
    if high == low:
        return np.full(size, low)  # no draw: fixed-size configs keep their random streams
    return np.rint(np.exp(rng.uniform(np.log(low), np.log(high), size))).astype(int)


def sample_design(cfg: MaternConfig, rng: np.random.Generator, n: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """One field's node coordinates (and times for space-time); ``n`` sites instead of ``data.n``."""
    d = cfg.data
    sites = sample_locations(d.locations, d.n if n is None else n, rng, cluster_parents=d.cluster_parents,
                             cluster_scale=d.cluster_scale)
    if not d.spacetime:
        return sites, None
    t = np.linspace(0.0, 1.0, d.n_times)
    return np.repeat(sites, d.n_times, axis=0), np.tile(t, len(sites))


def simulate(
    cfg: MaternConfig,
    size: int,
    rng: np.random.Generator,
    *,
    device: torch.device | str = "cpu",
    params: dict[str, np.ndarray] | None = None,
    m: int | None = None,
    n: int | None = None,
    chunk: int = 64,
) -> FieldSet:
    """Simulate ``size`` fields from the config: priors, locations, replicates, batched Cholesky (or the
    spectral method, ``data.simulator``).

    Args:
        params: Use these parameter values instead of drawing from the priors.
        m: Replicates per field; by default uniform in ``[m_min, m_max]``.
        n: Sites per field; by default ``data.n`` or log-uniform in ``[data.n, data.n_max]``.
        chunk: Fields per batched Cholesky (bounds memory: ``chunk * n^2`` doubles).
    """
    params = sample_params(cfg, size, rng) if params is None else params
    sizes = np.full(size, n) if n is not None else sample_sizes(cfg, size, rng)
    coords: list[np.ndarray] = []
    times: list[np.ndarray] = []
    for i in range(size):
        c, t = sample_design(cfg, rng, int(sizes[i]))
        coords.append(c)
        if t is not None:
            times.append(t)
    reps = np.full(size, m) if m is not None else rng.integers(cfg.data.m_min, cfg.data.m_max + 1, size)
    seed = int(rng.integers(0, 2**62))
    gen = torch.Generator(device="cpu").manual_seed(seed)
    values: list[np.ndarray] = [np.empty(0)] * size
    if cfg.data.simulator == "spectral":
        for i in range(size):
            values[i] = spectral_fields(coords[i], float(params["range"][i]), float(params["variance"][i]),
                                        float(params["nugget"][i]), cfg.data.nu, int(reps[i]), gen,
                                        modes=cfg.data.spectral_modes)
        return FieldSet(coords=coords, values=values, params={k: np.asarray(v) for k, v in params.items()})
    # Chunks of similar sizes: a batched Cholesky pads every field to the largest of its chunk.
    order = np.argsort([len(c) for c in coords], kind="stable")
    for start in range(0, size, chunk):
        sl = order[start: start + chunk]
        drawn = simulate_fields(
            [coords[i] for i in sl], {k: np.asarray(v)[sl] for k, v in params.items()}, reps[sl], cfg.data.nu, gen,
            times=[times[i] for i in sl] if cfg.data.spacetime else None, nu_time=cfg.data.nu_time, device=device,
        )
        for i, v in zip(sl, drawn):
            values[i] = v
    return FieldSet(coords=coords, values=values, params={k: np.asarray(v) for k, v in params.items()},
                    times=times if cfg.data.spacetime else None)


def simulate_fields(
    coords: list[np.ndarray],
    params: dict[str, np.ndarray],
    reps: np.ndarray,
    nu: float,
    gen: torch.Generator,
    *,
    times: list[np.ndarray] | None = None,
    nu_time: float = 0.5,
    device: torch.device | str = "cpu",
) -> list[np.ndarray]:
    """Draw replicates of zero-mean Gaussian fields with Matérn covariance, one batched Cholesky.

    Fields of different sizes are padded to the largest: the padded block of the covariance is the
    identity, so the Cholesky factor of the real block is unchanged.

    Returns:
        Per field, ``(m_i, n_i)`` float64 values.
    """
    b = len(coords)
    sizes = np.array([len(c) for c in coords])
    n_max, m_max = int(sizes.max()), int(np.max(reps))
    pts = np.zeros((b, n_max, 2))
    tt = np.zeros((b, n_max))
    mask = np.zeros((b, n_max), dtype=bool)
    for i, c in enumerate(coords):
        pts[i, : len(c)] = c
        mask[i, : len(c)] = True
        if times is not None:
            tt[i, : len(c)] = times[i]
    dev = torch.device(device)
    x = torch.from_numpy(pts).to(dev)
    valid = torch.from_numpy(mask).to(dev)
    pair = valid[:, :, None] & valid[:, None, :]

    def col(name: str) -> torch.Tensor:
        return torch.as_tensor(params[name], dtype=torch.float64, device=dev).reshape(b, 1, 1)

    corr = matern_correlation(pairwise_distances(x), col("range"), nu)
    if times is not None:
        t = torch.from_numpy(tt).to(dev)
        corr = corr * matern_correlation((t[:, :, None] - t[:, None, :]).abs(), col("time_range"), nu_time)
    eye = torch.eye(n_max, dtype=torch.float64, device=dev)
    cov = torch.where(pair, col("variance") * corr + col("nugget") * eye, eye.expand(b, n_max, n_max))
    chol = cholesky_jitter(cov)
    z = torch.randn(b, n_max, m_max, dtype=torch.float64, generator=gen).to(dev)
    fields = (chol @ z).cpu().numpy()
    return [fields[i, : sizes[i], : reps[i]].T.copy() for i in range(b)]
