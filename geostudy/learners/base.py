"""The learner contract: what every learner gives the study engine, and what it gets back.

A learner never touches Optuna, storage or the CLI; the engine never knows a learner's internals.
"""

from __future__ import annotations

import logging
import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from geostudy.config import deep_merge, load_yaml, to_dataclass

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / "configs"

# Metrics the engine adds to every run, whatever the learner.
COMMON_METRICS: dict[str, str] = {"run_seconds": "minimize"}

logger = logging.getLogger("geostudy")


class Reporter(Protocol):
    """Called once per epoch (or evaluation) with that step's metrics.

    Under a study, the engine forwards the study's metric to ``trial.report`` and raises
    ``optuna.TrialPruned`` out of this call when the pruner says so; a learner lets it propagate.
    """

    def __call__(self, step: int, metrics: Mapping[str, float]) -> None: ...


def _log_report(step: int, metrics: Mapping[str, float]) -> None:
    logger.debug("step %d %s", step, dict(metrics))


@dataclass
class RunContext:
    """What the engine hands a learner for one run.

    Attributes:
        workdir: A folder the learner may write files into (predictions, checkpoints, PDFs).
        report: Per-step metric reporter (see :class:`Reporter`).
        final: True for a final run (``run.py``): evaluate the test split too. Studies optimise
            validation metrics and leave it False.
        verbose: Print progress lines (epochs, losses) to stderr.
    """

    workdir: Path
    report: Reporter = _log_report
    final: bool = False
    verbose: bool = False

    def log(self, message: str) -> None:
        """Progress output for long work, shown by ``run.py`` and silent inside studies."""
        if self.verbose:
            print(message, file=sys.stderr, flush=True)


@dataclass
class RunResult:
    """The outcome of one run.

    Attributes:
        metrics: Final metrics, name -> float. Must contain every name in ``Learner.metrics``.
        figures: name -> matplotlib Figure (saved as PNG) or a Path to a file in the workdir
            (PNG, PDF, HTML...). Uploaded as trial artifacts, written to the run folder by run.py.
        files: name -> Path of other outputs in the workdir (predictions CSV, checkpoints).
        tables: Optional extra results that are not scalars (per-class F1, confusion matrix), kept
            JSON-serialisable; stored as ``metrics.json`` extras and in the trial note.
    """

    metrics: dict[str, float]
    figures: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    tables: dict[str, Any] = field(default_factory=dict)


class Learner(ABC):
    """Base class of every learner: one required method, :meth:`run`.

    Class attributes:
        name: Registry name; the default config is ``configs/<name>.yaml``.
        metrics: Every metric name the learner returns, mapped to its natural direction
            (``"maximize"`` or ``"minimize"``). Study files may only name these.
        config_class: Optional dataclass describing the config; when set, :meth:`check_config`
            validates every key and type against it (see :func:`geostudy.config.to_dataclass`).
    """

    name: ClassVar[str]
    metrics: ClassVar[Mapping[str, str]]
    config_class: ClassVar[type | None] = None

    def default_config_path(self) -> Path:
        return CONFIG_DIR / f"{self.name}.yaml"

    def default_config(self) -> dict[str, Any]:
        return load_yaml(self.default_config_path())

    def with_defaults(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """``config`` (a user's file, possibly short) merged over this learner's default config.

        See :func:`geostudy.config.deep_merge`; a fully resolved config comes back unchanged.
        """
        return deep_merge(self.default_config(), config, schema=self.config_class)

    def parse_config(self, config: Mapping[str, Any], *, file: str | Path | None = None) -> Any:
        """Typed view of ``config`` (the ``config_class`` instance), validated."""
        if self.config_class is None:
            return dict(config)
        return to_dataclass(self.config_class, config, file=file)

    def check_config(self, config: Mapping[str, Any], *, file: str | Path | None = None) -> None:
        """Raise :class:`~geostudy.errors.GeostudyError` if ``config`` cannot run.

        Called before a study creates its database and before ``run.py`` starts, so that bad
        input never reaches storage. Override to also check data files exist.
        """
        self.parse_config(config, file=file)

    def all_metrics(self) -> dict[str, str]:
        return {**self.metrics, **COMMON_METRICS}

    @abstractmethod
    def run(self, config: Mapping[str, Any], ctx: RunContext) -> RunResult:
        """Train and evaluate once with a fully resolved config."""
