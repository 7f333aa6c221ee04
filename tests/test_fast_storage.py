"""FastStorage: each finished trial is in the SQLite file, whole, before the next starts; several
worker processes share one study safely (unique numbers, each sees the others' trials, enqueued
trials run once, a dead worker's trial is failed and re-run with its params)."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from geostudy.study.fast_storage import FastStorage
from geostudy.study.storage import open_storage

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

# A worker process: ``python -c WORKER url study n_trials name folder``; all start optimising at once
# (a "go" file in folder), and each trial records how many finished trials of the others it saw.
WORKER = textwrap.dedent("""
    import sys, time, optuna
    from pathlib import Path
    from geostudy.study.storage import open_storage
    url, name, n, me, folder = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], Path(sys.argv[5])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=open_storage(url), sampler=optuna.samplers.RandomSampler())
    (folder / me).touch()
    while not (folder / "go").exists():
        time.sleep(0.01)

    def objective(trial):
        others = [t for t in trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                  if t.user_attrs.get("worker") != me]
        trial.set_user_attr("worker", me)
        trial.set_user_attr("others_seen", len(others))
        x = trial.suggest_float("x", -5, 10)
        trial.report(x, 0)
        time.sleep(0.03)
        return x * x

    study.optimize(objective, n_trials=n)
""")


def _plain(url: str, name: str = "s") -> optuna.Study:
    """The study as Optuna itself (and optuna-dashboard) reads it from the file."""
    return optuna.load_study(study_name=name, storage=optuna.storages.RDBStorage(url))


def _workers(url: str, n_trials: int, folder: Path, count: int = 2) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, url, "s", str(n_trials), f"w{i}", str(folder)], env=env,
                              stderr=subprocess.PIPE, text=True) for i in range(count)]
    deadline = time.monotonic() + 50
    while not all((folder / f"w{i}").exists() for i in range(count)) and time.monotonic() < deadline:
        time.sleep(0.01)
    (folder / "go").touch()
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err


def test_open_storage_is_fast_storage(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'a.db'}")
    assert isinstance(storage, FastStorage)
    # A file FastStorage created passes Optuna's own schema check (alembic head stamped).
    optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'a.db'}")


def test_each_finished_trial_is_in_the_file_before_the_next_starts(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    study = optuna.create_study(storage=open_storage(url), study_name="s", sampler=optuna.samplers.RandomSampler(seed=0))
    checked = []

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -5, 10)
        trial.suggest_categorical("kind", ["a", "b"])
        trial.set_user_attr("config", {"x": x, "list": (1, 2)})
        for step in range(3):
            trial.report(x + step, step)
        if trial.number == 3:
            trial.set_user_attr("fail_reason", "ValueError: boom")
            raise ValueError("boom")
        return float("inf") if trial.number == 4 else x * x

    def check(study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        stored = _plain(url).trials[frozen.number]
        assert stored.state == frozen.state
        assert stored.params == frozen.params and len(stored.params) == 2
        assert stored.user_attrs == frozen.user_attrs and stored.user_attrs["config"]["list"] == [1, 2]
        assert stored.intermediate_values == {0: frozen.params["x"], 1: frozen.params["x"] + 1, 2: frozen.params["x"] + 2}
        assert stored.values == frozen.values
        assert (stored.datetime_start, stored.datetime_complete) == (frozen.datetime_start, frozen.datetime_complete)
        checked.append(frozen.number)

    study.optimize(objective, n_trials=6, callbacks=[check], catch=(ValueError,))
    assert checked == list(range(6))
    failed = _plain(url).trials[3]
    assert failed.state == TrialState.FAIL and failed.user_attrs["fail_reason"] == "ValueError: boom"
    assert study.best_trial.number == _plain(url).best_trial.number
    assert [t.params for t in study.trials] == [t.params for t in _plain(url).trials]


def test_running_trial_is_visible_and_flushed_periodically(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    storage = FastStorage(optuna.storages.RDBStorage(url), flush_interval=0.2)
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    assert _plain(url).trials[0].state == TrialState.RUNNING  # created at once
    trial.suggest_float("x", 0, 1)
    trial.report(0.5, 0)  # the params are written at once, with it: a dead worker's trial is re-run with them
    trial.report(0.25, 1)  # buffered
    first = _plain(url).trials[0]
    assert "x" in first.params and first.intermediate_values == {0: 0.5}
    time.sleep(0.3)
    trial.report(0.125, 2)  # a report after flush_interval writes what a live dashboard should see
    running = _plain(url).trials[0]
    assert running.state == TrialState.RUNNING and running.intermediate_values == {0: 0.5, 1: 0.25, 2: 0.125}
    trial.set_user_attr("late", 1)  # after a flush: written with the finish
    study.tell(trial, 1.0)
    done = _plain(url).trials[0]
    assert done.state == TrialState.COMPLETE and done.user_attrs == {"late": 1} and done.value == 1.0


def test_dashboard_notes_ride_along_with_the_next_trial(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    storage = open_storage(url)
    study = optuna.create_study(storage=storage, study_name="s")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    study._storage.set_study_system_attr(study._study_id, "dashboard:1:note_ver", 1)
    study._storage.set_study_system_attr(study._study_id, "other", 1)  # anything else: written through
    notes = optuna.storages.RDBStorage(url).get_study_system_attrs(study._study_id)
    assert "other" in notes and "dashboard:1:note_ver" not in notes
    study.ask()  # the next trial's creation writes it
    assert "dashboard:1:note_ver" in optuna.storages.RDBStorage(url).get_study_system_attrs(study._study_id)
    study._storage.set_study_system_attr(study._study_id, "dashboard:2:note_ver", 1)
    assert "dashboard:2:note_ver" in study._storage.get_study_system_attrs(study._study_id)  # a read writes first
    study._storage.set_study_system_attr(study._study_id, "dashboard:3:note_ver", 1)
    study._storage.remove_session()  # study.optimize returning: nothing deferred outlives it
    assert "dashboard:3:note_ver" in optuna.storages.RDBStorage(url).get_study_system_attrs(study._study_id)
    study._storage.set_study_system_attr(study._study_id, "dashboard:4:note_ver", 1)
    study_id = study._study_id
    del study, storage
    gc.collect()  # or when the storage goes
    assert "dashboard:4:note_ver" in optuna.storages.RDBStorage(url).get_study_system_attrs(study_id)


def test_two_processes_share_a_study(tmp_path: Path) -> None:
    """Unique numbers, each worker sees the other's trials, and each enqueued trial runs exactly once."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    study = optuna.create_study(storage=open_storage(url), study_name="s")
    for i in range(8):
        study.enqueue_trial({"x": float(i)})
    _workers(url, n_trials=12, folder=tmp_path)
    trials = _plain(url).trials
    assert sorted(t.number for t in trials) == list(range(24))
    assert all(t.state == TrialState.COMPLETE and len(t.intermediate_values) == 1 for t in trials)
    enqueued = sorted(t.params["x"] for t in trials if "fixed_params" in t.system_attrs)
    assert enqueued == [float(i) for i in range(8)]
    for me in ("w0", "w1"):
        mine = [t for t in trials if t.user_attrs["worker"] == me]
        assert len(mine) == 12
        # Both ran at once: each saw the other's finished trials while it ran.
        assert max(t.user_attrs["others_seen"] for t in mine) > 0


def test_dead_worker_trial_is_failed_and_rerun_with_its_params(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    optuna.create_study(storage=open_storage(url, heartbeat_interval=1, grace_period=2), study_name="s")
    script = textwrap.dedent("""
        import sys, time, optuna
        from geostudy.study.storage import open_storage
        study = optuna.load_study(study_name="s", storage=open_storage(sys.argv[1], heartbeat_interval=1, grace_period=2))

        def objective(trial):
            trial.suggest_float("x", 0, 1)
            trial.set_user_attr("started", True)
            print("running", flush=True)
            time.sleep(60)

        study.optimize(objective, n_trials=1)
    """)
    proc = subprocess.Popen([sys.executable, "-W", "ignore", "-c", script, url], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "running"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    running = _plain(url).trials[0]
    assert running.state == TrialState.RUNNING and "x" in running.params  # params written early (heartbeat on)
    study = optuna.load_study(study_name="s", storage=open_storage(url, heartbeat_interval=1, grace_period=2))
    time.sleep(3.5)  # past the grace period
    optuna.storages.fail_stale_trials(study)
    trials = _plain(url).trials
    assert trials[0].state == TrialState.FAIL
    assert trials[1].state == TrialState.WAITING and trials[1].params == running.params  # the retry

    def rerun(trial: optuna.Trial) -> float:
        trial.set_user_attr("started", "again")  # the retry brought the attribute along: an update
        trial.report(0.5, 0)
        return trial.suggest_float("x", 0, 1)

    study.optimize(rerun, n_trials=1)
    retried = _plain(url).trials[1]
    assert retried.state == TrialState.COMPLETE and retried.user_attrs["started"] == "again"
    assert retried.params == running.params


def test_filtered_reads_and_counts_follow_every_change(tmp_path: Path) -> None:
    """The per-filter views and state counts stay equal to a fresh scan of the file through enqueued,
    failed, pruned and other workers' trials."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    mine = optuna.create_study(storage=open_storage(url), study_name="s", sampler=optuna.samplers.RandomSampler(seed=0))
    other = optuna.load_study(study_name="s", storage=open_storage(url))  # a second worker on the same file
    filters = [None, (TrialState.COMPLETE,), (TrialState.WAITING,), (TrialState.COMPLETE, TrialState.PRUNED),
               (TrialState.RUNNING, TrialState.FAIL)]

    def same() -> None:
        for study in (mine, other):
            for states in filters:
                expected = [(t.number, t.state) for t in _plain(url).get_trials(states=states)]
                assert [(t.number, t.state) for t in study.get_trials(deepcopy=False, states=states)] == expected
            counts = study._storage.count_trials(study._study_id)
            assert counts == Counter(t.state for t in _plain(url).trials)

    same()  # the views exist from here on: later changes must update them in place
    mine.enqueue_trial({"x": 0.5})
    mine.enqueue_trial({"x": 0.25})
    held = other.ask()  # pops the first enqueued trial: RUNNING in the other worker
    same()
    for i, outcome in enumerate(["ok", "fail", "prune", "ok"]):
        trial = mine.ask()
        trial.suggest_float("x", 0, 1)
        state = {"ok": TrialState.COMPLETE, "fail": TrialState.FAIL, "prune": TrialState.PRUNED}[outcome]
        mine.tell(trial, float(i) if state == TrialState.COMPLETE else None, state=state)
        same()
    other.tell(held, 3.0)
    same()
