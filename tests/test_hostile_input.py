"""Property-based: hundreds of malformed or mutated study files and --set values.

Every one either runs, or exits 2 with one line on stderr that names the file; never a traceback;
and a study database that existed before is byte-for-byte unchanged when the input is rejected.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from geostudy.cli import study_main
from tests.conftest import file_digest, toy_study

# Values a hand-written file might hold by mistake. Numbers stay small so that a mutation which is
# still valid runs in moments (the toy learner's steps, sleep and fail are never fuzzed upwards).
JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 20), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "tpe", "x", "gcn", "1e-3", "[", "{a: 1}", "maximize", "minimize", "random", "float",
                     "categorical", "value", "configs/toy.yaml", "../../etc/passwd", "ä", "\t", "nop", "median"]),
    st.lists(st.integers(-2, 5), max_size=3),
    st.dictionaries(st.sampled_from(["name", "args", "type", "low", "high", "choices", "x", "y", "log"]),
                    st.one_of(st.integers(-2, 5), st.text(max_size=4)), max_size=3),
)
TOP_KEYS = ["learner", "config", "set", "metrics", "directions", "n_trials", "timeout", "sampler", "pruner",
            "space", "enqueue", "name", "heartbeat_interval", "grace_period", "bogus"]
SET_KEYS = ["x", "y", "steps", "noise", "figure", "seed", "learner", "nosuch", "x.y", "", "a b"]
SAFE = {"sleep", "fail"}  # never set by the fuzzer: a valid value there could sleep or fail on purpose


@st.composite
def mutated_study(draw) -> dict:
    study = toy_study(n_trials=1, set={"steps": 1})
    study["space"]["x"] = {"type": "float", "low": -5, "high": 10}
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["drop", "replace", "space", "set", "sampler", "pruner"]))
        key = draw(st.sampled_from(TOP_KEYS))
        if kind == "drop":
            study.pop(key, None)
        elif kind == "replace":
            study[key] = draw(JUNK)
        elif kind == "space":
            entry = copy.deepcopy(study.get("space") if isinstance(study.get("space"), dict) else {})
            path = draw(st.sampled_from(["x", "y", "steps", "noise", "nosuch", "x.y"]))
            entry[path] = draw(st.one_of(JUNK, st.fixed_dictionaries({
                "type": st.sampled_from(["float", "int", "categorical", "uniform"]),
                "low": st.one_of(st.integers(-10, 20), st.floats(-10, 20), JUNK),
                "high": st.one_of(st.integers(-10, 20), st.floats(-10, 20), JUNK)})))
            study["space"] = entry
        elif kind == "set":
            fixed = dict(study.get("set") if isinstance(study.get("set"), dict) else {})
            path = draw(st.sampled_from([k for k in SET_KEYS if k not in SAFE]))
            fixed[path] = draw(JUNK)
            study["set"] = fixed
        else:
            study[kind] = {"name": draw(st.sampled_from(["tpe", "random", "grid", "cmaes", "median", "nop", "hyperband",
                                                         "bogus", "", "TPE"])),
                           "args": draw(st.one_of(JUNK, st.dictionaries(st.sampled_from(["seed", "n_startup_trials",
                                                                                          "percentile", "x"]),
                                                                        st.integers(-2, 5), max_size=2)))}
    return study


def _text_corruption(text: str, data) -> str:
    """Cut or garble the YAML text itself (unbalanced brackets, bad indentation, stray tabs)."""
    pos = data.draw(st.integers(0, max(len(text) - 1, 0)))
    junk = data.draw(st.sampled_from(["[", "]", "{", ":", "\t", "  -", "\n  ", "'", '"', "&a", "*b", "!!python/name:os"]))
    return text[:pos] + junk + text[pos + data.draw(st.integers(0, 3)):]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """An output folder holding a real study 's' with two finished trials."""
    out = tmp_path_factory.mktemp("pristine")
    study = out / "s.yaml"
    study.write_text(yaml.safe_dump(toy_study(n_trials=2)))
    assert study_main(["--study", str(study), "--out", str(out / "out"), "--no-progress"]) == 0
    return out / "out"


def _check(study_text: str, sets: list[str], pristine: Path, tmp: Path, capsys) -> None:
    out = tmp / "out"
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(pristine, out)
    db = out / "s" / "s.db"
    before = file_digest(db)
    study_file = tmp / "s.yaml"
    study_file.write_text(study_text)
    capsys.readouterr()
    argv = ["--study", str(study_file), "--out", str(out), "--no-progress", "--n-trials", "3"]
    if sets:
        argv += ["--set", *sets]
    try:
        code = study_main(argv)
    except SystemExit as exit_:  # argparse refuses an argument: also exit 2
        code = exit_.code
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert code in (0, 2), captured.err
    event(f"exit {code}")
    if code == 2:
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
        assert str(study_file) in lines[0] or "--set" in lines[0] or "optuna_hyper.py" in lines[0], lines[0]
        assert file_digest(db) == before, "a rejected input changed the study database"


SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@SETTINGS
@given(study=mutated_study(), sets=st.lists(st.builds(lambda k, v: f"{k}={v}", st.sampled_from(
    [k for k in SET_KEYS if k not in SAFE]), st.sampled_from(["1", "-1", "0.5", "[", "true", "x", "", "{", "1e9"])),
    max_size=2))
def test_mutated_study_files_and_set_values(study, sets, pristine, tmp_path_factory, capsys):
    _check(yaml.safe_dump(study, sort_keys=False), sets, pristine, tmp_path_factory.mktemp("m"), capsys)


@SETTINGS
@given(data=st.data())
def test_corrupted_yaml_text(data, pristine, tmp_path_factory, capsys):
    text = yaml.safe_dump(toy_study(n_trials=1, set={"steps": 1}), sort_keys=False)
    for _ in range(data.draw(st.integers(1, 3))):
        text = _text_corruption(text, data)
    _check(text, [], pristine, tmp_path_factory.mktemp("c"), capsys)
