"""Search spaces: parsing, suggestion (with conditionals and list choices), grids, enqueue encoding."""

from __future__ import annotations

import optuna
import pytest

from geostudy.errors import ConfigError
from geostudy.study.space import SearchSpace

SPACE = {
    "model.arch": {"type": "categorical", "choices": ["gcn", "gat"]},
    "model.hidden": {"type": "int", "low": 8, "high": 64, "log": True},
    "optim.lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
    "model.heads": {"type": "int", "low": 1, "high": 4, "when": {"model.arch": "gat"}},
    "data.features": {"type": "categorical", "choices": [["a", "b"], ["a"]]},
}


def test_suggest_respects_bounds_conditionals_and_list_choices():
    space = SearchSpace.parse(SPACE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen_heads = {"gcn": 0, "gat": 0}
    for _ in range(30):
        trial = study.ask()
        params = space.suggest(trial)
        assert 8 <= params["model.hidden"] <= 64 and 1e-4 <= params["optim.lr"] <= 0.1
        assert params["data.features"] in (["a", "b"], ["a"])
        if "model.heads" in params:
            seen_heads[params["model.arch"]] += 1
        study.tell(trial, 0.0)
    assert seen_heads["gcn"] == 0 and seen_heads["gat"] > 0


@pytest.mark.parametrize(
    "entry, words",
    [
        ({"type": "float", "low": 1, "high": 0}, "low must be <= high"),
        ({"type": "float", "low": 0, "high": 1, "log": True}, "low must be > 0"),
        ({"type": "int", "low": 0.5, "high": 3}, "integer"),
        ({"type": "uniform", "low": 0, "high": 1}, "type must be one of float, int, categorical"),
        ({"type": "categorical", "choices": []}, "non-empty list"),
        ({"type": "float", "low": 0, "high": 1, "step": -1}, "step must be > 0"),
        ({"type": "float", "low": 0, "high": 1, "choices": [1]}, "unknown field 'choices'"),
        ({"type": "float", "high": 1}, "'low' is required"),
        ({"type": "float", "low": 0, "high": 1, "when": {"other": 1}}, "declared above"),
    ],
)
def test_bad_entries_are_one_line_errors(entry, words):
    with pytest.raises(ConfigError) as err:
        SearchSpace.parse({"a.b": entry}, file="s.yaml")
    assert words in err.value.one_line() and "s.yaml" in err.value.one_line() and "space.a.b" in err.value.one_line()


def test_grid_values_and_encode():
    space = SearchSpace.parse({"k": {"type": "int", "low": 2, "high": 8, "step": 3},
                               "r": {"type": "float", "low": 0.1, "high": 0.3, "step": 0.1},
                               "f": {"type": "categorical", "choices": [["a"], ["a", "b"]]}})
    grid = space.grid()
    assert grid["k"] == [2, 5, 8] and grid["r"] == pytest.approx([0.1, 0.2, 0.3]) and len(grid["f"]) == 2
    assert space.encode({"k": 5, "f": ["a", "b"]}) == {"k": 5, "f": '["a","b"]'}
    with pytest.raises(ConfigError, match=r"must be in \[2, 8\]"):
        space.encode({"k": 9})
    with pytest.raises(ConfigError, match="not a parameter"):
        space.encode({"zz": 1})


def test_grid_needs_step_for_floats():
    space = SearchSpace.parse({"lr": {"type": "float", "low": 0.1, "high": 0.3}})
    with pytest.raises(ConfigError, match="step"):
        space.grid()
