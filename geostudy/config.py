"""Config files: YAML loading, dotted paths, ``--set`` overrides and typed validation.

A config is a plain nested ``dict`` (what YAML gives). Learners read it through
:func:`to_dataclass`, which checks every key and type against a dataclass, so a typo or a wrong type
is a :class:`~geostudy.errors.ConfigError` naming the file and the key, never a ``KeyError`` deep
inside training.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from geostudy.errors import ConfigError

T = TypeVar("T")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with ``safe_load``.

    Raises:
        ConfigError: the file is missing, is not valid YAML, or is not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError("file not found", file=path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"malformed YAML{where}: {problem}", file=path) from None
    except UnicodeDecodeError:
        raise ConfigError("not a UTF-8 text file", file=path) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"must be a YAML mapping (key: value), but got {type(data).__name__}", file=path)
    return data


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any], *, schema: type | None = None) -> dict[str, Any]:
    """``over`` laid over ``base``: sections merge key by key, any other value of ``over`` replaces.

    This is how a user's config meets its learner's defaults (``configs/<learner>.yaml``): a short
    file names only what differs, and every documented key still exists in the merged whole, so
    ``--set`` and a study's ``space`` can reach it. Lists are values, not merged element-wise.

    Args:
        base: The defaults.
        over: The user's values.
        schema: The config dataclass, when there is one. Then only its sections (fields that are
            dataclasses) merge; a free-form mapping field (``dict``: class names, fixed values) is a
            value and is replaced whole, so that a resolved config written by a run reads back to
            the same config. Without a schema every pair of mappings merges.

    Neither input is changed.
    """
    hints = _type_hints(schema) if schema is not None and dataclasses.is_dataclass(schema) else None
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        section = _section_type(hints.get(key)) if hints is not None else None
        merge = isinstance(value, Mapping) and isinstance(out.get(key), Mapping) and (hints is None or section)
        out[key] = deep_merge(out[key], value, schema=section) if merge else copy.deepcopy(value)
    return out


def _section_type(tp: Any) -> type | None:
    """The dataclass a field holds (also inside ``X | None``), else None."""
    if dataclasses.is_dataclass(tp):
        return tp  # type: ignore[return-value]
    if get_origin(tp) in (typing.Union, types.UnionType):
        found = [a for a in get_args(tp) if dataclasses.is_dataclass(a)]
        return found[0] if found else None  # type: ignore[return-value]
    return None


def dump_yaml(data: Mapping[str, Any], path: str | Path) -> None:
    """Write a config as YAML, keys in their original order."""
    Path(path).write_text(yaml.safe_dump(dict(data), sort_keys=False), encoding="utf-8")


def parse_set(items: Iterable[str], *, source: str = "--set") -> dict[str, Any]:
    """Parse ``key=value`` strings; values are YAML scalars or flow collections (``[a, b]``)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"must look like key=value, but got {item!r}", file=source)
        if any(not part.isidentifier() for part in key.split(".")):
            raise ConfigError(f"key must be a dotted path of names, but got {key!r}", file=source)
        try:
            out[key] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"value {raw!r} is not a valid YAML value", file=source, key=key) from None
    return out


def _closest(key: str, choices: Iterable[str]) -> str:
    choices = list(choices)
    near = difflib.get_close_matches(key, choices, n=1, cutoff=0.0)
    hint = f"; closest existing key: '{near[0]}'" if near else ""
    return f"unknown key{hint}"


def flat_keys(config: Mapping[str, Any], prefix: str = "") -> list[str]:
    """All dotted leaf paths of a nested mapping (a mapping value counts as a leaf too)."""
    keys = []
    for name, value in config.items():
        path = f"{prefix}{name}"
        keys.append(path)
        if isinstance(value, Mapping):
            keys.extend(flat_keys(value, prefix=f"{path}."))
    return keys


def get_path(config: Mapping[str, Any], path: str) -> Any:
    node: Any = config
    for part in path.split("."):
        node = node[part]
    return node


def has_path(config: Mapping[str, Any], path: str) -> bool:
    node: Any = config
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def set_path(config: dict[str, Any], path: str, value: Any, *, source: str | Path | None = None) -> None:
    """Set an existing dotted path in place.

    Raises:
        ConfigError: the path does not exist in ``config``; the message names the closest key.
    """
    if not has_path(config, path):
        raise ConfigError(_closest(path, flat_keys(config)), file=source, key=path)
    parts = path.split(".")
    node = config
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value


def apply_overrides(
    config: Mapping[str, Any], overrides: Mapping[str, Any], *, source: str | Path | None = None
) -> dict[str, Any]:
    """Return a deep copy of ``config`` with dotted ``overrides`` applied (paths must exist)."""
    out = copy.deepcopy(dict(config))
    for path, value in overrides.items():
        set_path(out, path, copy.deepcopy(value), source=source)
    return out


# --------------------------------------------------------------------------------------------------
# Typed views of a config


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin in (list, tuple):
        args = get_args(tp)
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if origin is dict:
        return "a mapping"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, file: str | Path | None) -> Any:
    origin = get_origin(tp)
    bad = ConfigError(f"must be {_type_name(tp)}, but got {value!r}", file=file, key=key)
    if tp is Any:
        return value
    if origin is Literal:
        # Compare types too: in Python True == 1, and a config must not confuse them.
        if any(value == a and type(value) is type(a) for a in get_args(tp)):
            return value
        raise bad
    if origin in (typing.Union, types.UnionType):
        for arg in get_args(tp):
            try:
                return _coerce(value, arg, key, file)
            except ConfigError:
                continue
        raise bad
    if tp is type(None):
        if value is None:
            return None
        raise bad
    if dataclasses.is_dataclass(tp):
        return to_dataclass(tp, value, file=file, prefix=f"{key}.")  # type: ignore[arg-type]
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise bad
        args = get_args(tp)
        items = [_coerce(v, args[0], f"{key}[{i}]", file) for i, v in enumerate(value)] if args else list(value)
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise bad
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise bad
    return value


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)  # slow (evaluates annotations); a config parse runs per trial


def to_dataclass(cls: type[T], data: Any, *, file: str | Path | None = None, prefix: str = "") -> T:
    """Build a (nested) dataclass from a mapping, checking keys and types.

    Missing keys take the dataclass defaults; unknown keys and wrong types raise
    :class:`ConfigError` naming the dotted key. Dataclasses may define ``validate(self, file, prefix)``
    for range checks; it is called after construction.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"must be a mapping, but got {data!r}", file=file, key=prefix.rstrip(".") or None)
    hints = _type_hints(cls)  # type: ignore[arg-type]
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for name in data:
        if name not in fields:
            raise ConfigError(_closest(f"{prefix}{name}", [f"{prefix}{n}" for n in fields]), file=file,
                              key=f"{prefix}{name}")
    kwargs = {}
    for name, field in fields.items():
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], f"{prefix}{name}", file)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError("required key is missing", file=file, key=f"{prefix}{name}")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate(file=file, prefix=prefix)
    return obj


def check_range(value: float | int, key: str, *, file: str | Path | None = None, low: float | None = None,
                high: float | None = None, low_open: bool = False, high_open: bool = False) -> None:
    """Raise :class:`ConfigError` unless ``low <= value <= high`` (open ends when asked)."""
    ok = True
    if low is not None:
        ok &= value > low if low_open else value >= low
    if high is not None:
        ok &= value < high if high_open else value <= high
    if not ok:
        lo = "" if low is None else f"{'(' if low_open else '['}{low}"
        hi = "" if high is None else f"{high}{')' if high_open else ']'}"
        raise ConfigError(f"must be in {lo or '(-inf'}, {hi or 'inf)'}, but got {value!r}", file=file, key=key)
