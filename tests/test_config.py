"""Config loading, dotted overrides, --set parsing and typed validation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from geostudy.config import apply_overrides, load_yaml, parse_set, to_dataclass
from geostudy.errors import ConfigError


def test_load_yaml_reports_line_of_malformed_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("a: 1\nb: [1, 2\nc: 3\n")
    with pytest.raises(ConfigError) as err:
        load_yaml(path)
    assert str(path) in err.value.one_line() and "line" in err.value.one_line()


def test_load_yaml_rejects_non_mapping_and_missing(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_yaml(path)
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(tmp_path / "nope.yaml")


def test_load_yaml_is_safe(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("a: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_yaml(path)


def test_parse_set_types_and_errors():
    assert parse_set(["a.b=3", "c=0.5", "d=[x, y]", "e=true", "f=gcn"]) == {
        "a.b": 3, "c": 0.5, "d": ["x", "y"], "e": True, "f": "gcn"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_set(["novalue"])
    with pytest.raises(ConfigError, match="not a valid YAML value"):
        parse_set(["a=[1, 2"])
    with pytest.raises(ConfigError, match="dotted path"):
        parse_set(["a..b=1"])


def test_overrides_name_closest_key_and_do_not_mutate():
    base = {"model": {"hidden": 8, "arch": "gcn"}, "seed": 0}
    out = apply_overrides(base, {"model.hidden": 16})
    assert out["model"]["hidden"] == 16 and base["model"]["hidden"] == 8
    with pytest.raises(ConfigError) as err:
        apply_overrides(base, {"model.hiden": 16}, source="s.yaml")
    assert "model.hidden" in err.value.one_line() and "s.yaml" in err.value.one_line()


@dataclass
class Optim:
    lr: float = 0.01
    name: Literal["adam", "sgd"] = "adam"


@dataclass
class Cfg:
    seed: int = 0
    flags: list[int] = field(default_factory=list)
    optim: Optim = field(default_factory=Optim)
    on: bool = False


def test_to_dataclass_nested_types():
    cfg = to_dataclass(Cfg, {"seed": 3, "optim": {"lr": "1e-3", "name": "sgd"}, "flags": [1, 2]})
    assert cfg.optim.lr == pytest.approx(1e-3) and cfg.optim.name == "sgd" and cfg.flags == [1, 2]


@pytest.mark.parametrize(
    "data, key, words",
    [
        ({"optim": {"name": "adamw"}}, "optim.name", "one of 'adam', 'sgd'"),
        ({"optim": {"lrr": 1}}, "optim.lrr", "closest existing key: 'optim.lr'"),
        ({"seed": "x"}, "seed", "must be int"),
        ({"on": 1}, "on", "must be bool"),
        ({"flags": [1, "a"]}, "flags[1]", "must be int"),
    ],
)
def test_to_dataclass_errors_name_the_key(data, key, words):
    with pytest.raises(ConfigError) as err:
        to_dataclass(Cfg, data, file="c.yaml")
    line = err.value.one_line()
    assert f"key '{key}'" in line and words in line and line.startswith("c.yaml")
