"""Search spaces: the ``space:`` section of a study file -> ``trial.suggest_*`` calls.

Each entry maps a dotted config path to a distribution::

    model.hidden: {type: int, low: 8, high: 256, log: true}
    optim.lr:     {type: float, low: 1.0e-4, high: 0.1, log: true}
    model.arch:   {type: categorical, choices: [gcn, sage, gat]}
    model.heads:  {type: int, low: 1, high: 8, when: {model.arch: gat}}

``when`` makes a parameter conditional on parameters declared before it (a value or a list of
values). Categorical choices may be lists or mappings (e.g. feature subsets); Optuna only stores
scalars, so such choices are suggested under a stable text label and mapped back.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from geostudy.errors import ConfigError

PARAM_TYPES = ("float", "int", "categorical")
_KEYS = {
    "float": {"type", "low", "high", "log", "step", "when"},
    "int": {"type", "low", "high", "log", "step", "when"},
    "categorical": {"type", "choices", "when"},
}
_SCALARS = (type(None), bool, int, float, str)


def _label(choice: Any) -> Any:
    """The value Optuna stores for a categorical choice."""
    if isinstance(choice, _SCALARS):
        return choice
    return json.dumps(choice, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Param:
    """One searchable config path."""

    path: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()
    when: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    def labels(self) -> list[Any]:
        return [_label(c) for c in self.choices]

    def decode(self, stored: Any) -> Any:
        """Map a stored Optuna value back to the config value."""
        if self.type != "categorical":
            return stored
        for choice in self.choices:
            if _label(choice) == stored:
                return choice
        raise ConfigError(f"value {stored!r} is not among the choices {list(self.choices)!r}", key=self.path)

    def encode(self, value: Any) -> Any:
        """Map a config value (e.g. from ``enqueue:``) to what Optuna stores, checking it is allowed."""
        if self.type == "categorical":
            if _label(value) not in self.labels():
                raise ConfigError(f"must be one of {list(self.choices)!r}, but got {value!r}", key=self.path)
            return _label(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"must be a number, but got {value!r}", key=self.path)
        if self.type == "int" and not float(value).is_integer():
            raise ConfigError(f"must be an integer, but got {value!r}", key=self.path)
        assert self.low is not None and self.high is not None  # set for numeric params by parse
        if not self.low <= value <= self.high:
            raise ConfigError(f"must be in [{self.low}, {self.high}], but got {value!r}", key=self.path)
        return int(value) if self.type == "int" else float(value)

    def active(self, chosen: Mapping[str, Any]) -> bool:
        return all(path in chosen and chosen[path] in values for path, values in self.when.items())

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.type == "float":
            return trial.suggest_float(self.path, self.low, self.high, log=self.log, step=self.step)  # type: ignore[arg-type]
        if self.type == "int":
            return trial.suggest_int(self.path, self.low, self.high, log=self.log, step=self.step or 1)  # type: ignore[arg-type]
        return self.decode(trial.suggest_categorical(self.path, self.labels()))

    def grid_values(self) -> list[Any]:
        """Every value of a discrete parameter (grid and brute-force samplers)."""
        if self.type == "categorical":
            return self.labels()
        if self.step is None and self.type == "float":
            raise ConfigError("a float needs a 'step' for the grid sampler", key=f"space.{self.path}")
        assert self.low is not None and self.high is not None
        step = self.step or 1
        count = int(math.floor((self.high - self.low) / step + 1e-9)) + 1
        values = [self.low + i * step for i in range(count)]
        return [int(v) for v in values] if self.type == "int" else [float(v) for v in values]


def _number(raw: Mapping[str, Any], key: str, path: str, kind: str, file: str | Path | None) -> float | int:
    if key not in raw:
        raise ConfigError(f"'{key}' is required for type {kind}", file=file, key=f"space.{path}.{key}")
    value = raw[key]
    if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"must be a finite number, but got {raw[key]!r}", file=file, key=f"space.{path}.{key}")
    if kind == "int" and not float(value).is_integer():
        raise ConfigError(f"must be an integer for type int, but got {value!r}", file=file, key=f"space.{path}.{key}")
    return int(value) if kind == "int" else float(value)


def parse_param(path: str, raw: Any, earlier: Mapping[str, Param], file: str | Path | None = None) -> Param:
    """Validate one ``space:`` entry."""
    where = f"space.{path}"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"must be a mapping like {{type: float, low: 0, high: 1}}, but got {raw!r}", file=file, key=where)
    kind = raw.get("type")
    if kind not in PARAM_TYPES:
        raise ConfigError(f"type must be one of {', '.join(PARAM_TYPES)}, but got {kind!r}", file=file, key=f"{where}.type")
    unknown = set(raw) - _KEYS[kind]
    if unknown:
        raise ConfigError(f"unknown field {sorted(unknown)[0]!r} for type {kind}; allowed: {', '.join(sorted(_KEYS[kind]))}",
                          file=file, key=where)
    when = _parse_when(raw.get("when"), path, earlier, file)
    if kind == "categorical":
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"choices must be a non-empty list, but got {choices!r}", file=file, key=f"{where}.choices")
        labels = [_label(c) for c in choices]
        if len(set(map(repr, labels))) != len(labels):
            raise ConfigError(f"choices must be distinct, but got {choices!r}", file=file, key=f"{where}.choices")
        return Param(path, kind, choices=tuple(choices), when=when)
    low = _number(raw, "low", path, kind, file)
    high = _number(raw, "high", path, kind, file)
    if low > high:
        raise ConfigError(f"low must be <= high, but got low={low} > high={high}", file=file, key=where)
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"log must be true or false, but got {log!r}", file=file, key=f"{where}.log")
    step = _number(raw, "step", path, kind, file) if raw.get("step") is not None else None
    if step is not None and step <= 0:
        raise ConfigError(f"step must be > 0, but got {step}", file=file, key=f"{where}.step")
    if log and low <= 0:
        raise ConfigError(f"low must be > 0 when log is true, but got {low}", file=file, key=f"{where}.low")
    if log and step is not None and (kind == "float" or step != 1):
        raise ConfigError("log and step cannot be combined (Optuna allows only step 1 with log ints)", file=file, key=where)
    return Param(path, kind, low=low, high=high, log=log, step=step, when=when)


def _parse_when(raw: Any, path: str, earlier: Mapping[str, Param], file: str | Path | None) -> dict[str, tuple[Any, ...]]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(f"when must be a mapping {{param: value}}, but got {raw!r}", file=file, key=f"space.{path}.when")
    out: dict[str, tuple[Any, ...]] = {}
    for other, values in raw.items():
        if other not in earlier:
            allowed = ", ".join(earlier) or "none declared before it"
            raise ConfigError(f"'when' refers to {other!r}, which must be a parameter declared above; declared: {allowed}",
                              file=file, key=f"space.{path}.when")
        values = tuple(values) if isinstance(values, list) else (values,)
        for value in values:
            try:
                earlier[other].encode(value)
            except ConfigError as err:
                raise ConfigError(f"condition on {other!r}: {err.message}", file=file, key=f"space.{path}.when") from None
        out[str(other)] = values
    return out


class SearchSpace:
    """Ordered set of :class:`Param`; suggests a trial's overrides."""

    def __init__(self, params: list[Param]) -> None:
        self.params = params
        self.by_path = {p.path: p for p in params}

    @classmethod
    def parse(cls, raw: Any, file: str | Path | None = None) -> SearchSpace:
        if raw is None:
            return cls([])
        if not isinstance(raw, Mapping):
            raise ConfigError(f"must be a mapping of config paths to distributions, but got {raw!r}", file=file, key="space")
        params: dict[str, Param] = {}
        for path, entry in raw.items():
            if not isinstance(path, str) or any(not part.isidentifier() for part in path.split(".")):
                raise ConfigError(f"keys must be dotted config paths, but got {path!r}", file=file, key="space")
            params[path] = parse_param(path, entry, params, file)
        return cls(list(params.values()))

    def __len__(self) -> int:
        return len(self.params)

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Suggest every active parameter in order; returns dotted path -> config value."""
        chosen: dict[str, Any] = {}
        for param in self.params:
            if param.active(chosen):
                chosen[param.path] = param.suggest(trial)
        return chosen

    def decode(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Config values of a finished trial's stored params."""
        return {k: self.by_path[k].decode(v) if k in self.by_path else v for k, v in params.items()}

    def encode(self, values: Mapping[str, Any], file: str | Path | None = None, key: str = "enqueue") -> dict[str, Any]:
        out = {}
        for path, value in values.items():
            if path not in self.by_path:
                raise ConfigError(f"{path!r} is not a parameter of the space; parameters: {', '.join(self.by_path)}",
                                  file=file, key=key)
            try:
                out[path] = self.by_path[path].encode(value)
            except ConfigError as err:
                raise ConfigError(err.message, file=file, key=f"{key}.{path}") from None
        return out

    def grid(self) -> dict[str, list[Any]]:
        return {p.path: p.grid_values() for p in self.params}

    def corner_values(self) -> list[tuple[str, Any]]:
        """(path, value) pairs at the edges of the space, used to check ranges before a study starts."""
        pairs: list[tuple[str, Any]] = []
        for p in self.params:
            if p.type == "categorical":
                pairs.extend((p.path, c) for c in p.choices)
            else:
                pairs.extend([(p.path, p.low), (p.path, p.high)])
        return pairs
