"""Learner registry: name -> Learner class, imported on first use.

Imports are lazy so that running the GP learner never imports DGL, and a study file with a typo in
``learner:`` fails before any heavy import.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from geostudy.errors import ConfigError
from geostudy.learners.base import Learner, RunContext, RunResult

__all__ = ["Learner", "RunContext", "RunResult", "get_learner", "list_learners"]

_REGISTRY: dict[str, str] = {
    "ardm": "geostudy.learners.ardm:ArdmLearner",
    "gp": "geostudy.learners.gp:GpLearner",
    "labeling": "geostudy.learners.labeling:LabelingLearner",
    "matern": "geostudy.learners.matern:MaternLearner",
    "mogi": "geostudy.learners.mogi:MogiLearner",
    "toy": "geostudy.learners.toy:ToyLearner",
}


def list_learners() -> list[str]:
    """Names accepted by ``learner:`` in configs and study files."""
    return sorted(_REGISTRY)


def get_learner(name: object, *, file: str | Path | None = None, key: str = "learner") -> Learner:
    """Instantiate the learner registered under exactly ``name``.

    Raises:
        ConfigError: ``name`` is not registered; the message lists the allowed names.
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ConfigError(f"unknown learner {name!r}; allowed: {', '.join(list_learners())}", file=file, key=key)
    module_name, _, class_name = _REGISTRY[name].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls()
