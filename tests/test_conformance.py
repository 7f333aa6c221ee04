"""The contract every registered learner must honour, run against each one (STYLE.md point 7).

For each learner: its default config is complete and valid; its quick study runs end to end on the
CPU, reports per step, stores config/versions/metrics and uploads figures; ``best_config.yaml``
re-runs to the best trial's metric; a pruning signal from the reporter propagates out of ``run``.
"""

from __future__ import annotations

import contextlib
import io
import json

import optuna
import pytest

from geostudy.cli import run_main, study_main
from geostudy.learners import RunContext, get_learner, list_learners
from geostudy.study.spec import STUDY_DIR, parse_study
from tests.conftest import check_config_or_skip

LEARNERS = list_learners()
# The end-to-end test runs the first trials of each quick study: enough for a best trial, the artifacts and a
# re-run; `make demo` and the learners' own tests run whole studies.
END_TO_END_TRIALS = 3


@pytest.mark.parametrize("name", LEARNERS)
def test_default_config_is_complete_and_valid(name):
    learner = get_learner(name)
    config = learner.default_config()
    assert list(config)[:2] == ["learner", "seed"] and config["learner"] == name
    check_config_or_skip(learner, config)
    assert learner.metrics and set(learner.metrics.values()) <= {"minimize", "maximize"}


@pytest.mark.parametrize("name", LEARNERS)
def test_every_study_file_of_the_learner_validates(name):
    files = sorted(STUDY_DIR.glob(f"{name}*.yaml"))
    assert any(f.stem == f"{name}_quick" for f in files), f"studies/{name}_quick.yaml is missing"
    for path in files:
        spec = parse_study(path)
        assert spec.learner.name == name and (spec.n_trials or spec.timeout)


@pytest.mark.parametrize("name", LEARNERS)
def test_reporter_prune_signal_propagates(name, tmp_path):
    spec = parse_study(STUDY_DIR / f"{name}_quick.yaml")
    calls = []

    def report(step, metrics):
        calls.append((step, dict(metrics)))
        raise optuna.TrialPruned("pruned by the test")

    with pytest.raises(optuna.TrialPruned):
        spec.learner.run(spec.config_for({}), RunContext(workdir=tmp_path, report=report))
    assert len(calls) == 1 and spec.metrics[0] in calls[0][1] or spec.multi_objective


@pytest.mark.parametrize("name", LEARNERS)
def test_quick_study_end_to_end_and_best_config_reproduces(name, tmp_path):
    out = tmp_path / "out"
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert study_main(["--study", f"{name}_quick", "--out", str(out), "--no-progress",
                           "--n-trials", str(END_TO_END_TRIALS)]) == 0
    spec = parse_study(STUDY_DIR / f"{name}_quick.yaml")
    db = out / spec.name / f"{spec.name}.db"
    assert f"optuna-dashboard sqlite:///{db}" in printed.getvalue()
    study = optuna.load_study(study_name=spec.name, storage=f"sqlite:///{db}")
    finished = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(finished) == min(END_TO_END_TRIALS, spec.n_trials)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete, [t.user_attrs.get("fail_reason") for t in study.trials]
    for trial in complete:
        assert trial.user_attrs["config"]["learner"] == name and "torch" in trial.user_attrs["versions"]
        assert set(spec.metrics) <= set(trial.user_attrs["metrics"])
        if not spec.multi_objective:
            assert trial.intermediate_values, "the learner must report per epoch"
    artifacts = optuna.artifacts.get_all_artifact_meta(complete[0], storage=study._storage)
    assert artifacts, "every trial should upload its figures"

    best_trial = study.best_trials[0] if spec.multi_objective else study.best_trial
    run_dir = tmp_path / "rerun"
    assert run_main(["--config", str(out / spec.name / "best_config.yaml"), "--out", str(run_dir), "--quiet"]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    assert metrics[spec.metrics[0]] == pytest.approx(best_trial.values[0], abs=1e-3)
    assert list((run_dir / "figures").iterdir())
