"""The ARDM checkpoint: EMA weights plus what ``mode: simulate`` needs to rebuild and decode them.

Plain tensors, numbers, strings and lists only, so that it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from geostudy.errors import DataError
from geostudy.learners.ardm.config import ArdmConfig
from geostudy.learners.ardm.images import FaciesCodes
from geostudy.learners.ardm.model import UNet

FORMAT = "geostudy-ardm/1"


@dataclass
class Checkpoint:
    """A trained network (eval mode), its facies codes, the side of its training patches and the facies
    proportions of its training region (``None`` in checkpoints written before they were stored)."""

    model: UNet
    codes: FaciesCodes
    patch: int
    proportions: np.ndarray | None = None

    @property
    def size_factor(self) -> int:
        """Grid sides must be multiples of this (the UNet halves them ``levels - 1`` times)."""
        return 2 ** (self.model.n_levels - 1)


def save_checkpoint(path: str | Path, model: torch.nn.Module, cfg: ArdmConfig, codes: FaciesCodes,
                    proportions: np.ndarray) -> Path:
    """Write the weights with the UNet's shape, the codes, the patch side and the training proportions."""
    m = cfg.model
    state = {
        "format": FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "n_categories": cfg.data.n_categories,
        "widths": list(m.widths),
        "depth": m.depth,
        "attention_levels": m.attention_levels(),
        "codes": [float(c) for c in codes.codes],
        "integer_codes": bool(np.issubdtype(codes.codes.dtype, np.integer)),
        "patch": cfg.data.patch,
        "proportions": [float(p) for p in proportions],
    }
    path = Path(path)
    torch.save(state, path)
    return path


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> Checkpoint:
    """Rebuild the network of a :func:`save_checkpoint` file.

    Raises:
        DataError: the file is missing, not a checkpoint of this learner, or does not fit its UNet.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("checkpoint not found; a train run writes checkpoint.pt in its output folder", file=path,
                        key="simulate.checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types (pickle, zip, runtime) on a file that is not its own
        raise DataError(f"cannot read the checkpoint: {' '.join(str(err).split())[:200]}", file=path,
                        key="simulate.checkpoint") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise DataError(f"not an ARDM checkpoint ({FORMAT}); use the checkpoint.pt a train run writes", file=path,
                        key="simulate.checkpoint")
    model = UNet(int(state["n_categories"]), [int(w) for w in state["widths"]], depth=int(state["depth"]),
                 attention_levels=[int(a) for a in state["attention_levels"]], attention_window=int(state["patch"]))
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as err:
        raise DataError(f"the weights do not fit the UNet they describe: {str(err).splitlines()[0]}", file=path,
                        key="simulate.checkpoint") from None
    dtype = np.int64 if state.get("integer_codes", True) else np.float64
    codes = FaciesCodes(codes=np.asarray(state["codes"], dtype=np.float64).astype(dtype))
    props = state.get("proportions")
    return Checkpoint(model=model.to(device).eval(), codes=codes, patch=int(state["patch"]),
                      proportions=None if props is None else np.asarray(props, dtype=np.float64))
