"""Pieces shared by the neural learners: device choice, training helpers, graph builders."""

from geostudy.nn.device import resolve_device
from geostudy.nn.training import check_finite, make_optimizer, make_scheduler, seed_everything

__all__ = ["check_finite", "make_optimizer", "make_scheduler", "resolve_device", "seed_everything"]
