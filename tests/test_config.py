"""Config loading, dotted overrides, --set parsing and typed validation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest
import yaml

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


# --------------------------------------------------------------------------------------------------
# A user's config laid over the learner's defaults


def test_deep_merge_merges_mappings_and_replaces_the_rest():
    from geostudy.config import deep_merge

    base = {"a": 1, "m": {"x": 1, "y": [1, 2], "n": {"p": 1, "q": 2}}, "l": [1, 2]}
    over = {"m": {"y": [3], "n": {"q": 5}}, "l": [9], "b": None}
    out = deep_merge(base, over)
    assert out == {"a": 1, "m": {"x": 1, "y": [3], "n": {"p": 1, "q": 5}}, "l": [9], "b": None}
    assert base["m"]["n"]["q"] == 2 and over == {"m": {"y": [3], "n": {"q": 5}}, "l": [9], "b": None}


@dataclass
class Section:
    lr: float = 0.01
    fixed: dict = field(default_factory=dict)


@dataclass
class WithSections:
    seed: int = 0
    optim: Section = field(default_factory=Section)
    maybe: Section | None = None


def test_deep_merge_with_a_schema_replaces_free_form_mappings():
    """A resolved config whose free-form mapping dropped a default key must read back unchanged."""
    from geostudy.config import deep_merge

    base = {"seed": 0, "optim": {"lr": 0.01, "fixed": {"nu": 0.25}}, "maybe": {"lr": 1.0, "fixed": {}}}
    over = {"optim": {"fixed": {"x": 1.0}}, "maybe": {"lr": 2.0}}
    out = deep_merge(base, over, schema=WithSections)
    assert out == {"seed": 0, "optim": {"lr": 0.01, "fixed": {"x": 1.0}}, "maybe": {"lr": 2.0, "fixed": {}}}
    assert deep_merge(base, over)["optim"]["fixed"] == {"nu": 0.25, "x": 1.0}  # no schema: every mapping merges


def _omitted_leaf(defaults: dict) -> tuple[str, object]:
    """A documented leaf key, inside a section where there are any, of the defaults (what a short user file leaves out)."""
    from geostudy.config import flat_keys, get_path

    leaves = [k for k in flat_keys(defaults) if k not in ("learner", "seed") and not isinstance(get_path(defaults, k), dict)]
    key = next((k for k in leaves if "." in k), leaves[0])  # a flat config (toy) has top-level leaves only
    return key, get_path(defaults, key)


def _learners() -> list[str]:
    from geostudy.learners import list_learners

    return list_learners()


@pytest.mark.parametrize("name", _learners())
def test_short_user_config_accepts_set_of_a_key_it_omits(name, tmp_path, monkeypatch, capsys):
    """run.py lays a short config over configs/<learner>.yaml, so --set reaches keys the file leaves out."""

    from geostudy.cli import run_main
    from geostudy.config import dump_yaml, flat_keys
    from geostudy.learners import RunResult, get_learner
    from tests.conftest import check_config_or_skip

    learner = get_learner(name)
    defaults = learner.default_config()
    key, value = _omitted_leaf(defaults)
    short = tmp_path / "mine.yaml"
    dump_yaml({"learner": name, "seed": 7}, short)
    seen: list[dict] = []

    def fake_run(self, config, ctx):  # the merge is under test, not the training
        seen.append(config)
        return RunResult(metrics={m: 0.0 for m in self.metrics})

    monkeypatch.setattr(type(learner), "run", fake_run)
    check_config_or_skip(learner, defaults)
    text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
    code = run_main(["--config", str(short), "--set", f"{key}={text}", "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 0, capsys.readouterr().err
    (config,) = seen
    assert set(flat_keys(defaults)) <= set(flat_keys(config)) and config["seed"] == 7
    written = load_yaml(tmp_path / "run" / "config.yaml")
    assert written["seed"] == 7 and set(flat_keys(defaults)) <= set(flat_keys(written))


def test_short_labeling_config_in_run_and_study(tmp_path, capsys):
    """The issue's case: a short well-log config, --set eval.figures=false, a study searching model.hidden."""
    from geostudy.cli import run_main
    from geostudy.config import dump_yaml
    from geostudy.study.spec import parse_study

    short = tmp_path / "wells.yaml"
    dump_yaml({"learner": "labeling", "data": {"synthetic": {"n_lines": 4, "stations_per_line": 6, "n_depths": 4}},
               "model": {"arch": "sage"}, "train": {"epochs": 2}, "device": "cpu"}, short)
    assert run_main(["--config", str(short), "--set", "eval.figures=false", "model.hidden=8", "--out",
                     str(tmp_path / "run"), "--quiet"]) == 0, capsys.readouterr().err
    written = load_yaml(tmp_path / "run" / "config.yaml")
    assert written["eval"]["figures"] is False and written["model"]["arch"] == "sage" and written["optim"]["lr"] == 0.01
    study = tmp_path / "s.yaml"
    dump_yaml({"learner": "labeling", "config": str(short), "metrics": ["val_f1_macro"], "n_trials": 1,
               "space": {"model.hidden": {"type": "int", "low": 4, "high": 8}}}, study)
    spec = parse_study(study, {"eval.figures": False})
    config = spec.config_for({"model.hidden": 5})
    assert config["model"]["hidden"] == 5 and config["model"]["arch"] == "sage" and config["eval"]["figures"] is False
