"""Device choice: ``auto`` takes the GPU when there is one, so no learner repeats this."""

from __future__ import annotations

import torch

from geostudy.errors import ConfigError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(spec: str = "auto", *, key: str = "device") -> torch.device:
    """Map a config's ``device`` value to a torch device.

    Args:
        spec: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        key: Config key, for the error message.
    """
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if isinstance(spec, str) and spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"{spec!r} asked for, but no CUDA device is available; use 'auto' or 'cpu'", key=key)
        return torch.device(spec)
    raise ConfigError(f"must be one of {', '.join(DEVICE_CHOICES)} (or cuda:N), but got {spec!r}", key=key)


def sync_device(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings measure it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
