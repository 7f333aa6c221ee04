"""Shared machinery of the sampler and pruner factories: ``{name, args}`` -> object."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geostudy.errors import ConfigError


@dataclass(frozen=True)
class ComponentSpec:
    """A sampler or pruner as a study file declares it: ``{name: tpe, args: {seed: 0}}``."""

    name: str
    args: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: Any, *, section: str, allowed: list[str], default: str, file: str | Path | None) -> ComponentSpec:
        if raw is None:
            return cls(default)
        if isinstance(raw, str):
            raw = {"name": raw}
        if not isinstance(raw, Mapping):
            raise ConfigError(f"must be a mapping {{name: ..., args: {{...}}}}, but got {raw!r}", file=file, key=section)
        unknown = set(raw) - {"name", "args"}
        if unknown:
            raise ConfigError(f"unknown field {sorted(unknown)[0]!r}; allowed: name, args", file=file, key=section)
        name = raw.get("name")
        if name not in allowed:
            raise ConfigError(f"unknown {section} {name!r}; allowed: {', '.join(allowed)}", file=file, key=f"{section}.name")
        args = raw.get("args") or {}
        if not isinstance(args, Mapping):
            raise ConfigError(f"must be a mapping, but got {args!r}", file=file, key=f"{section}.args")
        return cls(str(name), dict(args))


def build(factory: Callable[..., Any], args: Mapping[str, Any], *, section: str, name: str,
          file: str | Path | None, fixed: Mapping[str, Any] | None = None) -> Any:
    """Call ``factory(**args)``; a wrong argument name or value becomes a :class:`ConfigError`.

    ``fixed`` holds arguments the engine supplies itself (e.g. the grid's search space); the study
    file may not set them.
    """
    fixed = dict(fixed or {})
    params = inspect.signature(factory).parameters
    accepted = [p for p in params if p not in ("self", "args", "kwargs") and p not in fixed]
    for arg in args:
        if arg not in accepted:
            raise ConfigError(f"unknown argument {arg!r} for {section} {name}; allowed: {', '.join(accepted) or 'none'}",
                              file=file, key=f"{section}.args.{arg}")
    try:
        return factory(**fixed, **args)
    except (TypeError, ValueError) as err:
        text = " ".join(str(err).split())
        raise ConfigError(f"invalid arguments for {section} {name}: {text}", file=file, key=f"{section}.args") from None
