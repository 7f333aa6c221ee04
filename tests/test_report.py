"""Trial notes and report.html, without a browser: stored note text, page sections, degenerate studies."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from optuna_dashboard._note import get_note_from_system_attrs

from geostudy.cli import study_main
from geostudy.study.notes import MISSING, NoteWriter, config_diff, flatten, trial_note, write_trial_note
from geostudy.study.report import write_report
from geostudy.study.runner import StudyPlan, load_or_create
from geostudy.study.spec import parse_study
from tests.conftest import toy_study

SPACE_WITH_FAIL = {
    "x": {"type": "float", "low": -5, "high": 10},
    "y": {"type": "float", "low": 0, "high": 15},
    "fail": {"type": "categorical", "choices": ["none", "error"]},
}
# Trial 0 completes, 1 is pruned at its first report (Branin there is ~145 > 50), 2 fails, 3 completes.
ENQUEUE = [
    {"x": 3.14, "y": 2.27, "fail": "none"},
    {"x": -5.0, "y": 0.0, "fail": "none"},
    {"x": 1.0, "y": 5.0, "fail": "error"},
    {"x": 9.4, "y": 2.5, "fail": "none"},
]


def _load(out: Path, name: str = "s") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / name / f'{name}.db'}")


def _notes(study: optuna.Study) -> dict[int, str]:
    """Each trial's note as the dashboard itself reads it (trial number -> markdown)."""
    attrs = study._storage.get_study_system_attrs(study._study_id)
    return {t.number: get_note_from_system_attrs(attrs, t._trial_id)["body"] for t in study.get_trials()}


@pytest.fixture(scope="module")
def mixed_study(tmp_path_factory) -> tuple[Path, optuna.Study]:
    """A finished toy study with complete, pruned and failed trials (and figures). Tests only read it."""
    spec = toy_study(space=SPACE_WITH_FAIL, enqueue=ENQUEUE, n_trials=3, set={"steps": 4, "figure": True},
                     pruner={"name": "threshold", "args": {"upper": 50.0}})
    folder = tmp_path_factory.mktemp("mixed")
    (folder / "s.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    out = folder / "out"
    assert study_main(["--study", str(folder / "s.yaml"), "--out", str(out), "--no-progress"]) == 0
    study = _load(out)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL,
                                               TrialState.COMPLETE]
    return out, study


def test_flatten_and_config_diff():
    base = {"learner": "toy", "model": {"hidden": 64, "arch": "gcn"}, "tags": [1, 2]}
    config = {"learner": "toy", "model": {"hidden": 32, "arch": "gcn", "heads": 4}, "tags": [1, 2]}
    assert flatten(base) == {"learner": "toy", "model.hidden": 64, "model.arch": "gcn", "tags": [1, 2]}
    assert config_diff(base, config) == {"model.hidden": (64, 32), "model.heads": (MISSING, 4)}
    assert config_diff({"a": None}, {"a": "all"}) == {"a": (None, "all")}


def test_notes_say_config_metrics_ending_and_artifacts(mixed_study):
    _, study = mixed_study
    notes = _notes(study)
    complete, pruned, failed = notes[0], notes[1], notes[2]

    assert complete.startswith("### Trial 0: complete")
    value = study.trials[0].values[0]
    assert f"| **value** | {value:.6g} |" in complete
    assert "| distance |" in complete  # the learner's other metrics too
    assert "| `x` | 0 | 3.14 | space |" in complete
    assert "| `figure` | false | true | set |" in complete  # the study's fixed `set:` differs from the base
    assert "| `fail` |" not in complete  # equal to the base config: not listed
    assert re.search(r"- \[branin\.png\]\(/artifacts/\d+/\d+/[0-9a-f-]+\) \(image/png\)", complete)

    assert pruned.startswith("### Trial 1: pruned at step 0")
    assert "Last reported value:" in pruned and "at step 0" in pruned
    assert "**Metrics**" not in pruned  # a pruned trial's value is no final metric
    assert "No artifacts." in pruned

    assert failed.startswith("### Trial 2: failed: RuntimeError: toy learner failed on purpose")
    assert "| `fail` | none | error | space |" in failed
    assert "No artifacts." in failed
    assert all(len(n) < 2045 for n in notes.values())  # one text chunk each


def _in_memory_trial() -> tuple[optuna.Study, optuna.trial.FrozenTrial]:
    study = optuna.create_study()
    study.tell(study.ask(), 1.0)
    return study, study.trials[0]


def test_note_costs_two_writes_and_no_read():
    study, trial = _in_memory_trial()
    calls: list[str] = []
    storage = study._storage

    class Counting:
        def set_study_system_attr(self, *args):
            calls.append("write")
            storage.set_study_system_attr(*args)

        def get_study_system_attrs(self, *args):
            calls.append("read")
            return storage.get_study_system_attrs(*args)

    study._storage = Counting()
    try:
        write_trial_note(study, trial, "short note")
    finally:
        study._storage = storage
    assert calls == ["write", "write"]
    assert _notes(study)[0] == "short note"


def test_long_note_is_split_and_read_back_whole():
    study, trial = _in_memory_trial()
    body = "".join(f"line {i} " + "x" * 90 + "\n" for i in range(60))  # ~6 kB: three chunks
    write_trial_note(study, trial, body)
    assert _notes(study)[0] == body


def test_note_writer_never_stops_a_study(tmp_path, write_study):
    study, trial = _in_memory_trial()
    spec = parse_study(write_study(toy_study()))

    class Broken:
        def set_study_system_attr(self, *args):
            raise RuntimeError("storage went away")

    storage, study._storage = study._storage, Broken()
    try:
        NoteWriter(spec)(study, trial)  # logs a warning, raises nothing
    finally:
        study._storage = storage


def test_note_of_trial_without_config(tmp_path, write_study):
    spec = parse_study(write_study(toy_study()))
    study = optuna.create_study()
    trial = study.ask()
    study.tell(trial, state=TrialState.FAIL)
    text = trial_note(study.trials[0], spec)
    assert "failed (no reason stored" in text and "No resolved config stored" in text


def test_report_is_self_contained_with_every_section(mixed_study, capsys):
    out, study = mixed_study
    before = len(study.trials)
    assert study_main(["--study", str(out.parent / "s.yaml"), "--out", str(out), "--report"]) == 0
    assert len(_load(out).trials) == before  # review only: no new trial
    printed = capsys.readouterr().out
    report = out / "s" / "report.html"
    assert "Report:" in printed and report.is_file() and (out / "s" / "trials.csv").is_file()
    page = report.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]+src=", page), "the report must not load scripts from anywhere"
    assert page.count("* plotly.js v") == 1  # plotly.js inline, once
    for anchor in ("best", "top", "history", "importance", "parallel", "slice", "intermediate", "timeline",
                   "failed"):
        assert f'<section id="{anchor}">' in page, anchor
    assert '<section id="pareto">' not in page  # single objective
    assert page.count("Plotly.newPlot(") >= 5
    assert "data:image/png;base64," in page  # the best trial's figure, embedded
    assert "toy learner failed on purpose" in page  # the failures table
    # 3 complete trials: too few for importances, and the page says so.
    assert "Importances need at least 5 complete trials" in page


def _empty_study(tmp_path: Path, write_study, **kwargs) -> tuple[optuna.Study, StudyPlan]:
    spec = parse_study(write_study(toy_study(**kwargs)))
    plan = StudyPlan(spec=spec, storage_url=f"sqlite:///{tmp_path / 'e.db'}", out_dir=tmp_path / "out",
                     n_trials=None, timeout=None)
    return load_or_create(plan), plan


def test_report_of_a_study_without_trials(tmp_path, write_study):
    study, plan = _empty_study(tmp_path, write_study)
    page = write_report(study, plan.spec, tmp_path / "r.html", plan.artifacts).read_text(encoding="utf-8")
    assert "No trial completed" in page and "The study holds no trials." in page
    assert "Plotly.newPlot(" not in page


def test_report_of_an_all_failed_study(tmp_path, write_study):
    study, plan = _empty_study(tmp_path, write_study)
    for _ in range(3):
        trial = study.ask()
        trial.set_user_attr("fail_reason", "RuntimeError: boom")
        study.tell(trial, state=TrialState.FAIL)
    page = write_report(study, plan.spec, tmp_path / "r.html", plan.artifacts).read_text(encoding="utf-8")
    assert "No trial completed" in page and '<section id="failed">' in page and "RuntimeError: boom" in page
    assert page.count("Plotly.newPlot(") == 1  # the timeline alone


def test_report_of_one_complete_trial(tmp_path, write_study):
    study, plan = _empty_study(tmp_path, write_study)
    study.enqueue_trial({"x": 1.0, "y": 2.0})
    trial = study.ask()
    trial.suggest_float("x", -5, 10)
    trial.suggest_float("y", 0, 15)
    trial.report(5.0, 0)
    study.tell(trial, 3.0)
    page = write_report(study, plan.spec, tmp_path / "r.html", plan.artifacts).read_text(encoding="utf-8")
    assert "Trial #0" in page and "has no artifacts" in page
    assert "A contour needs at least two complete trials" in page
    assert '<section id="intermediate">' in page


def test_report_of_a_study_without_parameters(tmp_path, write_study):
    study, plan = _empty_study(tmp_path, write_study)
    for value in (1.0, 2.0):
        trial = study.ask()
        study.tell(trial, value)
    page = write_report(study, plan.spec, tmp_path / "r.html", plan.artifacts).read_text(encoding="utf-8")
    assert page.count("The study has no searched parameters.") >= 3


def test_report_of_a_multi_objective_study_has_the_pareto_front(tmp_path, write_study, capsys):
    spec = toy_study(metrics=["value", "distance"], directions=["minimize", "minimize"], n_trials=6)
    out = tmp_path / "out"
    path = write_study(spec)
    assert study_main(["--study", str(path), "--out", str(out), "--no-progress"]) == 0
    assert study_main(["--study", str(path), "--out", str(out), "--report"]) == 0
    page = (out / "s" / "report.html").read_text(encoding="utf-8")
    pareto = page.split('<section id="pareto">')[1].split("</section>")[0]
    assert "Plotly.newPlot(" in pareto
    assert "multi-objective studies report no per-step values" in page
    importance = page.split('<section id="importance">')[1].split("</section>")[0]
    assert "Plotly.newPlot(" in importance  # 6 complete trials: drawn, one bar per objective
    assert '"name":"value"' in importance and '"name":"distance"' in importance
    assert page.count("Optimization History Plot") == 2  # one per objective


def test_note_counts_nan_metrics_instead_of_listing_them(tmp_path, write_study):
    spec = parse_study(write_study(toy_study()))
    trial = optuna.trial.create_trial(value=1.5, user_attrs={
        "metrics": {"value": 1.5, "distance": 0.2, "test_value": float("nan"), "test_distance": float("nan")},
        "config": spec.config_for({"x": 1.0, "y": 2.0})})
    text = trial_note(trial, spec)
    assert "| **value** | 1.5 |" in text and "| distance | 0.2 |" in text
    assert "test_value" not in text and "2 more metrics are NaN" in text
