"""The study engine end to end through optuna_hyper.py / run.py, on the toy learner."""

from __future__ import annotations

import json
import math

import optuna
import pytest
import yaml

from geostudy.cli import run_main, study_main
from geostudy.learners.toy import branin
from geostudy.study.components import ComponentSpec
from geostudy.study.pruners import list_pruners
from geostudy.study.samplers import list_samplers, make_sampler
from geostudy.study.space import SearchSpace
from tests.conftest import file_digest, toy_study


def load(out, name="s"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / name / f'{name}.db'}")


def test_quick_study_writes_db_artifacts_best_config_and_resumes(tmp_path, write_study, capsys):
    study_file = write_study(toy_study(set={"steps": 3, "figure": True}))
    out = tmp_path / "out"
    assert study_main(["--study", str(study_file), "--out", str(out), "--n-trials", "3", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    db = out / "s" / "s.db"
    assert db.is_file() and (out / "s" / "best_config.yaml").is_file() and (out / "s" / "trials.csv").is_file()
    assert f"optuna-dashboard sqlite:///{db}" in printed and "--artifact-dir" in printed
    study = load(out)
    assert len(study.trials) == 3
    trial = study.best_trial
    assert trial.user_attrs["config"]["x"] == pytest.approx(trial.params["x"])
    assert {"python", "torch", "dgl", "torch_geometric", "gpytorch", "optuna"} <= set(trial.user_attrs["versions"])
    artifacts = optuna.artifacts.get_all_artifact_meta(trial, storage=study._storage)
    assert artifacts and (out / "s" / "artifacts" / artifacts[0].artifact_id).is_file()
    # --n-trials is the study's total: asking for 5 adds 2, asking for 5 again adds none.
    assert study_main(["--study", str(study_file), "--out", str(out), "--n-trials", "5", "--no-progress"]) == 0
    assert study_main(["--study", str(study_file), "--out", str(out), "--n-trials", "5", "--no-progress"]) == 0
    assert len(load(out).trials) == 5


def test_resumed_seeded_sampler_does_not_replay_its_first_proposals(tmp_path, write_study, capsys):
    study_file = write_study(toy_study(sampler={"name": "random", "args": {"seed": 0}}))
    out = tmp_path / "out"
    for total in (3, 6):
        assert study_main(["--study", str(study_file), "--out", str(out), "--n-trials", str(total), "--no-progress"]) == 0
    xs = [t.params["x"] for t in load(out).trials]
    assert len(set(xs)) == 6, xs  # a sampler rebuilt with seed 0 would draw trials 0-2's x again
    # ... and the resumed proposals are reproducible: the same history gives the same next trials.
    again = tmp_path / "again"
    for total in (3, 6):
        assert study_main(["--study", str(study_file), "--out", str(again), "--n-trials", str(total), "--no-progress"]) == 0
    assert [t.params["x"] for t in load(again).trials] == xs


def test_workers_of_one_jobs_run_draw_from_different_seeds():
    spec, space = ComponentSpec("random", {"seed": 0}), SearchSpace.parse(toy_study()["space"])

    def first_x(sampler) -> float:
        study = optuna.create_study(sampler=sampler)
        return study.ask({"x": optuna.distributions.FloatDistribution(-5, 10)}).params["x"]

    plain = first_x(optuna.samplers.RandomSampler(seed=0))
    assert first_x(make_sampler(spec, space, 1)) == plain  # a fresh, single-process study keeps its seed
    others = [first_x(make_sampler(spec, space, 1, worker=w)) for w in (1, 2)] + [first_x(make_sampler(spec, space, 1, stored=3))]
    assert len({plain, *others}) == 4


def test_best_config_reruns_to_the_same_metric(tmp_path, write_study, capsys):
    study_file = write_study(toy_study(set={"steps": 3, "noise": 0.5}))
    out = tmp_path / "out"
    assert study_main(["--study", str(study_file), "--out", str(out), "--no-progress"]) == 0
    best = load(out).best_value
    assert run_main(["--config", str(out / "s" / "best_config.yaml"), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]
    assert metrics["value"] == pytest.approx(best, abs=1e-3)
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["noise"] == 0.5


def _space_for(sampler: str) -> dict:
    if sampler in ("grid", "bruteforce"):
        return {"x": {"type": "float", "low": 0, "high": 3, "step": 1.5}, "y": {"type": "int", "low": 1, "high": 2}}
    return toy_study()["space"]


@pytest.mark.parametrize("sampler", list_samplers())
def test_every_sampler_runs(sampler, tmp_path, write_study, capsys):
    multi = sampler in ("nsgaii", "nsgaiii")
    study = toy_study(sampler={"name": sampler}, space=_space_for(sampler), n_trials=4,
                      metrics=["value", "distance"] if multi else ["value"],
                      directions=["minimize", "minimize"] if multi else ["minimize"])
    out = tmp_path / "out"
    assert study_main(["--study", str(write_study(study)), "--out", str(out), "--no-progress"]) == 0
    trials = load(out).trials
    assert len([t for t in trials if t.state.is_finished()]) >= 4
    assert all(len(t.values) == (2 if multi else 1) for t in trials if t.values)


@pytest.mark.parametrize("pruner", list_pruners())
def test_every_pruner_runs(pruner, tmp_path, write_study, capsys):
    args = {"percentile": {"percentile": 25.0}, "threshold": {"upper": 50.0},
            "patient": {"patience": 1, "wrapped": {"name": "median", "args": {"n_startup_trials": 1}}}}.get(pruner, {})
    study = toy_study(pruner={"name": pruner, "args": args}, n_trials=6, set={"steps": 4})
    out = tmp_path / "out"
    assert study_main(["--study", str(write_study(study)), "--out", str(out), "--no-progress"]) == 0
    assert len(load(out).trials) >= 6


def test_threshold_pruner_prunes_bad_trials(tmp_path, write_study, capsys):
    study = toy_study(pruner={"name": "threshold", "args": {"upper": 20.0}}, n_trials=8, set={"steps": 4})
    out = tmp_path / "out"
    assert study_main(["--study", str(write_study(study)), "--out", str(out), "--no-progress"]) == 0
    pruned = [t for t in load(out).trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned and all(t.user_attrs["pruned_at_step"] == 0 for t in pruned)


def test_multi_objective_summary_lists_pareto_front(tmp_path, write_study, capsys):
    study = toy_study(metrics=["value", "distance"], directions=["minimize", "minimize"], sampler={"name": "tpe"})
    out = tmp_path / "out"
    assert study_main(["--study", str(write_study(study)), "--out", str(out), "--no-progress"]) == 0
    assert "Pareto front" in capsys.readouterr().out
    assert (out / "s" / "best_config.yaml").is_file()


@pytest.mark.parametrize("fail, words", [("nan", "NonFiniteLossError"), ("error", "RuntimeError"),
                                         ("memory", "out of memory")])
def test_failing_trials_are_failed_with_reason_and_study_goes_on(fail, words, tmp_path, write_study, capsys):
    study = toy_study(
        space={"fail": {"type": "categorical", "choices": ["none", fail]}, "x": {"type": "float", "low": 0, "high": 1}},
        enqueue=[{"fail": fail}, {"fail": "none"}], n_trials=2)
    out = tmp_path / "out"
    assert study_main(["--study", str(write_study(study)), "--out", str(out), "--no-progress"]) == 0
    trials = load(out).trials
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert failed and words in failed[0].user_attrs["fail_reason"]
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == 2


def test_all_failing_study_stops_with_error(tmp_path, write_study, capsys):
    study = toy_study(set={"fail": "error", "steps": 2}, n_trials=50)
    out = tmp_path / "out"
    assert study_main(["--study", str(write_study(study)), "--out", str(out), "--no-progress"]) == 1
    assert "failed trials in a row" in capsys.readouterr().err
    assert len(load(out).trials) == 10


BAD_STUDIES = {
    "malformed_yaml": ("learner: toy\nspace: {x: [1, 2\n", "malformed YAML"),
    "unknown_learner": (toy_study(learner="toyy"), "unknown learner 'toyy'; allowed: ardm, gp, labeling"),
    "unknown_sampler": (toy_study(sampler={"name": "tpee"}), "unknown sampler 'tpee'; allowed: tpe, random"),
    "unknown_pruner": (toy_study(pruner={"name": "medain"}), "unknown pruner 'medain'; allowed: median"),
    "bad_sampler_arg": (toy_study(sampler={"name": "tpe", "args": {"sed": 1}}), "unknown argument 'sed' for sampler tpe"),
    "unknown_key_in_set": (toy_study(set={"stepz": 3}), "closest existing key: 'steps'"),
    "unknown_key_in_space": (toy_study(space={"xx": {"type": "float", "low": 0, "high": 1}}), "closest existing key: 'x'"),
    "unknown_top_key": (toy_study(samplr="tpe"), "unknown key; allowed: name, learner"),
    "low_above_high": (toy_study(space={"x": {"type": "float", "low": 5, "high": 1}}), "low must be <= high"),
    "out_of_learner_range": (toy_study(space={"x": {"type": "float", "low": -50, "high": 1}}), "must be in [-5, 10]"),
    "unknown_metric": (toy_study(metrics=["val_f1"]), "unknown metric 'val_f1' for learner toy; allowed: value"),
    "bad_direction": (toy_study(directions=["down"]), "must be one of minimize/maximize"),
    "cmaes_multi": (toy_study(sampler={"name": "cmaes"}, metrics=["value", "distance"], directions=["minimize"] * 2),
                    "sampler cmaes handles one objective"),
    "missing_config_file": (toy_study(config="configs/nope.yaml"), "file not found"),
    "missing_data_file": ({"learner": "labeling", "set": {"data.source": "csv", "data.csv.nodes": "/nope/survey.csv"},
                           "metrics": ["val_f1_macro"], "n_trials": 2,
                           "space": {"optim.lr": {"type": "float", "low": 1e-3, "high": 0.1, "log": True}}},
                          "key 'data.csv.nodes': node file not found"),
}


@pytest.mark.parametrize("case", sorted(BAD_STUDIES))
def test_bad_study_is_one_line_exit_2_and_db_untouched(case, tmp_path, write_study, capsys):
    out = tmp_path / "out"
    good = write_study(toy_study(n_trials=2))
    assert study_main(["--study", str(good), "--out", str(out), "--no-progress"]) == 0
    db = out / "s" / "s.db"
    before = file_digest(db)
    capsys.readouterr()
    content, words = BAD_STUDIES[case]
    bad = write_study(content)  # same file name -> same study name and database
    assert study_main(["--study", str(bad), "--out", str(out), "--no-progress", "--n-trials", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert str(bad) in err or case == "missing_data_file"  # a data error names the data file instead
    assert words in err
    assert file_digest(db) == before
    # and a fresh output folder gets no database at all
    fresh = tmp_path / "fresh"
    assert study_main(["--study", str(bad), "--out", str(fresh), "--no-progress"]) == 2
    assert not (fresh / "s" / "s.db").exists()


@pytest.mark.parametrize("args, words", [
    (["--set", "steps"], "must look like key=value"),
    (["--set", "x=[1"], "not a valid YAML value"),
    (["--set", "nosuch=1"], "unknown key"),
    (["--set", "x=99"], "must be in [-5, 10]"),
    (["--n-trials", "zero"], "must be a positive integer"),
])
def test_bad_command_line_is_one_line_exit_2(args, words, tmp_path, write_study, capsys):
    study = toy_study(space={"y": {"type": "float", "low": 0, "high": 15}})
    with pytest.raises(SystemExit) if args[0] == "--n-trials" else _no_raise():
        code = study_main(["--study", str(write_study(study)), "--out", str(tmp_path / "o"), *args])
        assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err
    assert not (tmp_path / "o" / "s" / "s.db").exists()


class _no_raise:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_run_py_writes_resolved_config_and_metrics(tmp_path, root, capsys):
    assert run_main(["--config", str(root / "configs" / "toy.yaml"), "--set", "x=3.14", "y=2.27", "figure=true",
                     "--out", str(tmp_path), "--quiet"]) == 0
    record = json.loads((tmp_path / "metrics.json").read_text())
    # The toy converges as target * (1 + 2 / steps) after its last step (configs/toy.yaml: steps 5).
    assert math.isclose(record["metrics"]["value"], branin(3.14, 2.27) * (1 + 2 / 5), rel_tol=1e-9)
    assert (tmp_path / "figures" / "branin.png").is_file()
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["x"] == 3.14
    assert "value" in capsys.readouterr().out


def test_real_entry_points_error_without_traceback(cli, tmp_path):
    proc = cli("optuna_hyper.py", "--study", "no_such_study")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "no study named 'no_such_study'" in proc.stderr
    proc = cli("run.py", "--config", str(tmp_path / "missing.yaml"))
    assert proc.returncode == 2 and "file not found" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("where", ["file", "below_file"])
def test_out_that_is_a_file_is_one_line_exit_2(where, tmp_path, root, write_study, capsys):
    blocker = tmp_path / "taken.txt"
    blocker.write_text("not a folder")
    out = blocker if where == "file" else blocker / "sub"
    assert run_main(["--config", str(root / "configs" / "toy.yaml"), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: --out") and str(out) in err
    study = write_study(toy_study(n_trials=1))
    assert study_main(["--study", str(study), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: --out") and str(out) in err
    assert blocker.read_text() == "not a folder"


def test_out_on_a_file_through_the_real_entry_points(cli, tmp_path):
    blocker = tmp_path / "taken.txt"
    blocker.write_text("x")
    for script, args in (("run.py", ["--config", "configs/toy.yaml"]), ("optuna_hyper.py", ["--study", "toy_quick"])):
        proc = cli(script, *args, "--out", str(blocker))
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
        assert str(blocker) in proc.stderr
