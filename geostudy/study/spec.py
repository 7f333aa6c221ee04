"""Study files (``studies/*.yaml``) -> a validated :class:`StudySpec`.

Everything a study needs is checked here, before any storage is opened, so that a bad study file
never creates or changes a database.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geostudy.config import apply_overrides, load_yaml
from geostudy.errors import ConfigError, GeostudyError
from geostudy.learners import Learner, get_learner
from geostudy.learners.base import REPO_ROOT
from geostudy.study.components import ComponentSpec
from geostudy.study.pruners import list_pruners, make_pruner
from geostudy.study.samplers import list_samplers, make_sampler
from geostudy.study.space import SearchSpace

STUDY_DIR = REPO_ROOT / "studies"
STUDY_KEYS = ("name", "learner", "config", "set", "metrics", "directions", "n_trials", "timeout", "sampler",
              "pruner", "space", "enqueue", "heartbeat_interval", "grace_period", "description")
DIRECTIONS = ("minimize", "maximize")


@dataclass
class StudySpec:
    """A validated study file."""

    name: str
    file: Path
    learner: Learner
    config_file: Path
    base_config: dict[str, Any]
    fixed: dict[str, Any]
    metrics: list[str]
    directions: list[str]
    sampler: ComponentSpec
    pruner: ComponentSpec
    space: SearchSpace
    n_trials: int | None = None
    timeout: float | None = None
    enqueue: list[dict[str, Any]] = field(default_factory=list)
    heartbeat_interval: int | None = None
    grace_period: int | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def multi_objective(self) -> bool:
        return len(self.metrics) > 1

    def config_for(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The fully resolved config of a trial: base config, fixed overrides, then the trial's params."""
        return apply_overrides(self.base_config, {**self.fixed, **params}, source=self.file)

    def make_sampler(self, stored: int = 0, worker: int = 0):
        return make_sampler(self.sampler, self.space, len(self.metrics), file=self.file, stored=stored, worker=worker)

    def make_pruner(self):
        return make_pruner(self.pruner, file=self.file)


def resolve_study_path(name_or_path: str) -> Path:
    """``labeling_quick`` -> ``studies/labeling_quick.yaml``; a path is taken as it is."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or "/" in name_or_path:
        if not candidate.is_file():
            raise ConfigError("study file not found", file=candidate)
        return candidate
    for base in (Path("studies"), STUDY_DIR):
        path = base / f"{name_or_path}.yaml"
        if path.is_file():
            return path
    known = sorted(p.stem for p in STUDY_DIR.glob("*.yaml"))
    raise ConfigError(f"no study named {name_or_path!r} in {STUDY_DIR}; known: {', '.join(known)}", file="--study")


def resolve_config_path(raw: str, study_file: Path) -> Path:
    """A study's ``config:`` relative to the working directory, the repo root, or the study file."""
    path = Path(raw)
    if path.is_absolute():
        return path
    for base in (Path.cwd(), REPO_ROOT, study_file.parent):
        if (base / path).is_file():
            return base / path
    return path


def _int_or_none(raw: Mapping[str, Any], key: str, file: Path, low: int) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"must be an integer >= {low} (or null), but got {value!r}", file=file, key=key)
    return value


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def parse_study(path: Path, overrides: Mapping[str, Any] | None = None) -> StudySpec:
    """Read and validate a study file, its base config and any ``--set`` overrides.

    Args:
        path: The study YAML file.
        overrides: ``--set`` values from the command line, applied on top of the file's ``set:``.

    Raises:
        GeostudyError: anything wrong, naming the file and the key.
    """
    raw = load_yaml(path)
    unknown = [k for k in raw if k not in STUDY_KEYS]
    if unknown:
        raise ConfigError(f"unknown key; allowed: {', '.join(STUDY_KEYS)}", file=path, key=str(unknown[0]))
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not name or any(c in name for c in "/\\ ") or name.startswith("."):
        raise ConfigError(f"must be a non-empty name without spaces or slashes, but got {name!r}", file=path, key="name")
    if "learner" not in raw:
        raise ConfigError("required key is missing", file=path, key="learner")
    learner = get_learner(raw["learner"], file=path)

    config_raw = raw.get("config")
    if config_raw is None:
        config_file = learner.default_config_path()
    elif isinstance(config_raw, str):
        config_file = resolve_config_path(config_raw, path)
    else:
        raise ConfigError(f"must be a path to a config file, but got {config_raw!r}", file=path, key="config")
    if not config_file.is_file():
        raise ConfigError(f"config file not found: {config_file}", file=path, key="config")
    base = load_yaml(config_file)
    if base.get("learner", learner.name) != learner.name:
        raise ConfigError(f"config {config_file} is for learner {base.get('learner')!r}, but the study's learner is "
                          f"{learner.name!r}", file=path, key="config")
    base = learner.with_defaults(base)  # a short user config still has every documented key

    fixed_raw = raw.get("set") or {}
    if not isinstance(fixed_raw, Mapping):
        raise ConfigError(f"must be a mapping of config paths to values, but got {fixed_raw!r}", file=path, key="set")
    fixed = {str(k): v for k, v in fixed_raw.items()}
    if "learner" in fixed or "learner" in (overrides or {}):
        raise ConfigError("the learner is fixed by the study's 'learner:'", file=path, key="set.learner")
    # Unknown paths fail here, naming the closest key.
    config = apply_overrides(base, fixed, source=path)
    config = apply_overrides(config, overrides or {}, source="--set")
    fixed.update(overrides or {})

    metrics_raw = raw.get("metrics")
    metrics = [str(m) for m in _as_list(metrics_raw)] if metrics_raw is not None else []
    if not metrics:
        raise ConfigError(f"required: one or more of {', '.join(learner.all_metrics())}", file=path, key="metrics")
    for metric in metrics:
        if metric not in learner.all_metrics():
            raise ConfigError(f"unknown metric {metric!r} for learner {learner.name}; allowed: "
                              f"{', '.join(learner.all_metrics())}", file=path, key="metrics")
    if len(set(metrics)) != len(metrics):
        raise ConfigError(f"metrics must be distinct, but got {metrics}", file=path, key="metrics")
    directions_raw = raw.get("directions")
    directions = [learner.all_metrics()[m] for m in metrics] if directions_raw is None else _as_list(directions_raw)
    if len(directions) != len(metrics) or any(d not in DIRECTIONS for d in directions):
        raise ConfigError(f"must be one of {'/'.join(DIRECTIONS)} per metric ({len(metrics)}), but got {directions_raw!r}",
                          file=path, key="directions")

    n_trials = _int_or_none(raw, "n_trials", path, 1)
    timeout = raw.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise ConfigError(f"must be a number of seconds > 0 (or null), but got {timeout!r}", file=path, key="timeout")

    space = SearchSpace.parse(raw.get("space"), file=path)
    for param in space.params:
        if param.path in fixed:
            raise ConfigError("is both searched (space) and fixed (set/--set); remove one", file=path, key=f"space.{param.path}")
    spec = StudySpec(
        name=name, file=path, learner=learner, config_file=config_file, base_config=base, fixed=fixed,
        metrics=metrics, directions=[str(d) for d in directions],
        sampler=ComponentSpec.parse(raw.get("sampler"), section="sampler", allowed=list_samplers(), default="tpe", file=path),
        pruner=ComponentSpec.parse(raw.get("pruner"), section="pruner", allowed=list_pruners(), default="nop", file=path),
        space=space, n_trials=n_trials, timeout=float(timeout) if timeout is not None else None,
        heartbeat_interval=_int_or_none(raw, "heartbeat_interval", path, 1),
        grace_period=_int_or_none(raw, "grace_period", path, 1), raw=copy.deepcopy(raw),
    )
    spec.enqueue = _parse_enqueue(raw.get("enqueue"), spec, path)
    # Build them once now so a bad argument fails before the database exists.
    spec.make_sampler()
    spec.make_pruner()
    _check_configs(spec, config)
    return spec


def _parse_enqueue(raw: Any, spec: StudySpec, path: Path) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(e, Mapping) for e in raw):
        raise ConfigError(f"must be a list of {{param: value}} mappings, but got {raw!r}", file=path, key="enqueue")
    return [spec.space.encode(entry, file=path, key=f"enqueue[{i}]") for i, entry in enumerate(raw)]


def _check_configs(spec: StudySpec, config: dict[str, Any]) -> None:
    """The resolved config must be valid, and so must every edge of the search space."""
    spec.learner.check_config(config, file=spec.config_file if not spec.fixed else spec.file)
    for path, value in spec.space.corner_values():
        try:
            candidate = apply_overrides(config, {path: value}, source=spec.file)
        except ConfigError as err:
            raise ConfigError(err.message, file=spec.file, key=f"space.{path}") from None
        try:
            spec.learner.check_config(candidate, file=spec.file)
        except GeostudyError as err:
            raise ConfigError(f"value {value!r} is not allowed: {err.message}", file=spec.file, key=f"space.{path}") from None
