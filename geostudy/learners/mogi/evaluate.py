"""Metrics per target (MAE, RMSE, relative error) and batched prediction with a trained network."""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from geostudy.learners.mogi.model import TargetTransform, map_features
from geostudy.nn.device import sync_device

SHORT = {"depth_km": "depth", "dv_m3": "dv", "x0_km": "x0", "y0_km": "y0", "nu": "nu"}
NO_RELATIVE = {"x0_km", "y0_km"}  # positions near 0: a relative error means nothing


def target_metrics(targets: Sequence[str], pred: Mapping[str, np.ndarray], true: Mapping[str, np.ndarray],
                   prefix: str) -> dict[str, float]:
    """``{prefix}{short}_{mae,rmse,rel_error}`` per target.

    MAE and RMSE are in the target's transformed unit (km for depth, log10 m³ for ΔV); the relative
    error is the mean of |pred − true| / |true| in physical units. Empty inputs give NaN.
    """
    out: dict[str, float] = {}
    for var in targets:
        p, t = np.asarray(pred[var], dtype=np.float64), np.asarray(true[var], dtype=np.float64)
        name = f"{prefix}{SHORT[var]}"
        if len(t) == 0:
            out.update({f"{name}_mae": float("nan"), f"{name}_rmse": float("nan")})
            if var not in NO_RELATIVE:
                out[f"{name}_rel_error"] = float("nan")
            continue
        err = TargetTransform.transformed(var, p) - TargetTransform.transformed(var, t)
        out[f"{name}_mae"] = float(np.mean(np.abs(err)))
        out[f"{name}_rmse"] = float(np.sqrt(np.mean(err**2)))
        if var not in NO_RELATIVE:
            out[f"{name}_rel_error"] = float(np.mean(np.abs(p - t) / np.abs(t)))
    return out


class Predictor:
    """A network with its transforms: maps in, physical source parameters out (batched)."""

    def __init__(self, model: nn.Module, transform: TargetTransform, scalar_mean: float, scalar_std: float,
                 wrapped: bool, mask: bool, device: torch.device) -> None:
        self.model, self.transform = model, transform
        self.scalar_mean, self.scalar_std = scalar_mean, scalar_std
        self.wrapped, self.mask, self.device = wrapped, mask, device
        self._frozen: nn.Module | None = None
        # Quantiles of truth - estimate on validation maps per target (train.QUANTILE_LEVELS), one list per
        # amplitude bin (log-RMS input between residual_edges), once trained.
        self.residual_quantiles: dict[str, list[list[float]]] | None = None
        self.residual_edges: list[float] = []

    def freeze(self) -> Predictor:
        """Switch to an inference copy with each BatchNorm folded into its convolution (10-20 % faster).

        The trainable ``model`` (and what checkpoints save) stays as it is; call after training.
        """
        with warnings.catch_warnings():  # its import touches the deprecated torch.jit.script_method
            warnings.simplefilter("ignore", DeprecationWarning)
            import torch.fx.experimental.optimization as fx_opt

        self.model.eval()
        self._frozen = fx_opt.fuse(self.model).eval()
        return self

    def inputs(self, maps: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x, s = map_features(maps, self.wrapped, self.mask)
        s = (s - self.scalar_mean) / self.scalar_std
        return torch.from_numpy(x), torch.from_numpy(s.astype(np.float32))

    @torch.inference_mode()
    def standardised(self, maps: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        outs = [self.standardised_features(*map_features(maps[start:start + batch_size], self.wrapped, self.mask))
                for start in range(0, len(maps), batch_size)]
        return np.concatenate(outs) if outs else np.zeros((0, len(self.transform.targets)), np.float32)

    @torch.inference_mode()
    def standardised_features(self, x: np.ndarray, scalar: np.ndarray) -> np.ndarray:
        """Standardised outputs of :func:`~geostudy.learners.mogi.model.map_features`' channels and raw scalar."""
        if self._frozen is not None:
            net = self._frozen  # in eval mode since :meth:`freeze`; ``eval()`` on every call costs more than the net
        else:
            self.model.eval()
            net = self.model
        s = ((scalar - self.scalar_mean) / self.scalar_std).astype(np.float32)
        return net(torch.from_numpy(x).to(self.device), torch.from_numpy(s).to(self.device)).float().cpu().numpy()

    def predict(self, maps: np.ndarray, batch_size: int = 1024) -> dict[str, np.ndarray]:
        """Physical estimates per target (km, m³, ...)."""
        return self.physical(self.standardised(maps, batch_size))

    def predict_features(self, x: np.ndarray, scalar: np.ndarray) -> dict[str, np.ndarray]:
        """:meth:`predict` of inputs already through :func:`~geostudy.learners.mogi.model.map_features` (one batch)."""
        return self.physical(self.standardised_features(x, scalar))

    def physical(self, z: np.ndarray) -> dict[str, np.ndarray]:
        """Standardised outputs ``(B, T)`` -> physical estimates per target."""
        t = self.transform.decode_transformed(z)
        return {v: TargetTransform.physical(v, t[:, i]) for i, v in enumerate(self.transform.targets)}

    def seconds_per_map(self, maps: np.ndarray, batch_size: int = 1024) -> float:
        """Wall time per map of batched inference (input transform included), best of three passes."""
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            self.predict(maps, batch_size)
            sync_device(self.device)
            best = min(best, time.perf_counter() - start)
        return best / max(len(maps), 1)
