"""Several workers on one study: --jobs on SQLite, PostgreSQL, SIGKILL mid-trial, Ctrl-C, resume."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
import yaml

from geostudy.study.notes import STALE_REASON
from tests.conftest import ROOT, toy_study

WORKER = [sys.executable, str(ROOT / "optuna_hyper.py")]


def _states(url: str, name: str = "s") -> Counter:
    return Counter(t.state.name for t in optuna.load_study(study_name=name, storage=url).trials)


def _notes(url: str, name: str = "s") -> dict[int, str]:
    """The optuna-dashboard note of each trial that has one, by trial id."""
    study = optuna.load_study(study_name=name, storage=url)
    attrs = study._storage.get_study_system_attrs(study._study_id)
    chunks = sorted((k, v) for k, v in attrs.items() if k.startswith("dashboard:") and ":note_str:" in k)
    notes: dict[int, str] = {}
    for key, text in chunks:
        trial_id = int(key.split(":")[1])
        notes[trial_id] = notes.get(trial_id, "") + text
    return notes


def _write(tmp_path: Path, **overrides) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(toy_study(**overrides), sort_keys=False))
    return path


def test_sqlite_jobs_4_runs_200_trials_without_lock_errors(tmp_path):
    study = _write(tmp_path, set={"steps": 1}, n_trials=200)
    proc = subprocess.run([*WORKER, "--study", str(study), "--out", str(tmp_path / "out"), "--jobs", "4",
                           "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "database is locked" not in proc.stderr + proc.stdout
    url = f"sqlite:///{tmp_path / 'out' / 's' / 's.db'}"
    trials = optuna.load_study(study_name="s", storage=url).trials
    assert Counter(t.state.name for t in trials) == {"COMPLETE": 200}
    assert sorted(t.number for t in trials) == list(range(200))
    # The study's random sampler is seeded; each worker offsets the seed, so none replays another's draws.
    assert len({t.params["x"] for t in trials}) == 200


def test_postgres_workers_share_one_study(tmp_path, fresh_pg_db):
    study = _write(tmp_path, set={"steps": 2}, n_trials=24, sampler={"name": "tpe", "args": {"seed": 1}})
    cmd = [*WORKER, "--study", str(study), "--out", str(tmp_path / "out"), "--storage", fresh_pg_db, "--no-progress"]
    # Two independent commands, as on two machines, plus --jobs 2 in one of them.
    first = subprocess.Popen([*cmd, "--jobs", "2"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    second = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outs = [p.communicate(timeout=600) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outs
    trials = optuna.load_study(study_name="s", storage=fresh_pg_db).trials
    assert Counter(t.state.name for t in trials) == {"COMPLETE": 24}
    assert len({t.number for t in trials}) == 24
    # copy the finished study into a per-study SQLite file for dashboard review
    target = tmp_path / "review.db"
    proc = subprocess.run([*cmd, "--copy-to", f"sqlite:///{target}"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert len(optuna.load_study(study_name="s", storage=f"sqlite:///{target}").trials) == 24
    assert f"optuna-dashboard sqlite:///{target}" in proc.stdout


def _running_count(url: str) -> int:
    """RUNNING trials, read with plain SQL: opening an Optuna storage here could create the tables
    while the worker is creating them."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sqlalchemy.text("SELECT count(*) FROM trials WHERE state = 'RUNNING'")).scalar())
    except sqlalchemy.exc.DBAPIError:  # no database or no tables yet
        return 0
    finally:
        engine.dispose()


def _wait_for_running(url: str, count: int = 1, timeout: float = 120, proc: subprocess.Popen | None = None) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"worker exited early with {proc.returncode}")
        db = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite") else None
        # Never open a SQLite file the worker has not created: that would create it here.
        if (db is None or db.is_file()) and _running_count(url) >= count:
            return
        time.sleep(0.2)
    raise TimeoutError("no trial started")


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_sigkill_of_a_worker_mid_trial_is_retried_once(backend, tmp_path, request):
    # No heartbeat settings: on this machine a dead worker is seen at once by its process record (on
    # PostgreSQL the default heartbeats are on too; both ways retry the trial once).
    url = request.getfixturevalue("fresh_pg_db") if backend == "postgres" else f"sqlite:///{tmp_path / 'k.db'}"
    n = 12
    # 3 s trials: the kill, 0.5 s after the trial is seen RUNNING, lands inside it even on a busy machine.
    study = _write(tmp_path, set={"steps": 6, "sleep": 0.5}, n_trials=n)
    cmd = [*WORKER, "--study", str(study), "--out", str(tmp_path / "out"), "--storage", url, "--no-progress"]
    first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=(tmp_path / "first.err").open("w"))
    _wait_for_running(url, proc=first)  # the first worker created the study and is inside a trial
    others = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for _ in range(3)]
    time.sleep(0.5)
    first.send_signal(signal.SIGKILL)
    first.wait()
    errs = []
    for proc in others:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
        errs.append(err)
    trials = optuna.load_study(study_name="s", storage=url).trials
    states = Counter(t.state.name for t in trials)
    assert states["RUNNING"] == 0 and states["COMPLETE"] == n
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    [failed] = [t for t in trials if t.state.name == "FAIL"]
    assert failed.user_attrs["fail_reason"].startswith(f"worker {first.pid} on {socket.gethostname()} died")
    [retry] = [t for t in trials if t.system_attrs.get("failed_trial") == failed.number]  # retried once
    assert retry.state.name == "COMPLETE" and retry.params == failed.params and "fail_reason" not in retry.user_attrs
    assert "died" in _notes(url)[failed._trial_id]  # its dashboard note says why
    assert sum(f"trial #{failed.number} failed: worker {first.pid}" in err for err in errs) == 1


def _write_locked(db: Path) -> bool:
    """Whether another connection holds the SQLite file's write lock (or the runner's slot lock) now."""
    import fcntl
    import sqlite3

    with open(db.with_name(db.name + ".slot.lock"), "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    conn = sqlite3.connect(db, timeout=0)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.rollback()
        return False
    except sqlite3.OperationalError:
        return True
    finally:
        conn.close()


def test_a_hung_worker_is_failed_by_the_heartbeat_check_and_retried(tmp_path):
    # SIGSTOP: the process lives on (so no process check can call it dead) but sends no heartbeat,
    # as a hung worker or one on a lost machine.
    db = tmp_path / "k.db"
    url = f"sqlite:///{db}"
    n = 8
    study = _write(tmp_path, set={"steps": 6, "sleep": 0.5}, n_trials=n, heartbeat_interval=1, grace_period=3)
    cmd = [*WORKER, "--study", str(study), "--out", str(tmp_path / "out"), "--storage", url, "--no-progress"]
    first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=(tmp_path / "first.err").open("w"))
    try:
        _wait_for_running(url, proc=first)
        time.sleep(0.3)
        for _ in range(50):  # stopped while it holds no lock, or the others would wait for it
            first.send_signal(signal.SIGSTOP)
            if not _write_locked(db):
                break
            first.send_signal(signal.SIGCONT)
            time.sleep(0.05)
        others = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                  for _ in range(2)]
        for proc in others:
            out, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err[-2000:]
    finally:
        first.kill()
        first.wait()
    trials = optuna.load_study(study_name="s", storage=url).trials
    states = Counter(t.state.name for t in trials)
    assert states["RUNNING"] == 0 and states["COMPLETE"] == n
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert failed, "the hung worker's trial should have been failed by the heartbeat check"
    retried = [t for t in trials if t.system_attrs.get("failed_trial") in {f.number for f in failed}]
    assert retried and all(r.params == trials[r.system_attrs["failed_trial"]].params for r in retried)
    # Optuna runs no callback for a trial failed by the heartbeat check: ours stores why, and its note.
    assert all(f.user_attrs.get("fail_reason") == STALE_REASON for f in failed)
    assert all("fail_reason" not in r.user_attrs for r in retried)  # the retry does not inherit it
    notes = _notes(url)
    assert all("heartbeats" in notes.get(f._trial_id, "") for f in failed)


def test_ctrl_c_fails_running_trial_prints_summary_and_resumes(tmp_path):
    study = _write(tmp_path, set={"steps": 6, "sleep": 0.3}, n_trials=3)
    out = tmp_path / "out"
    url = f"sqlite:///{out / 's' / 's.db'}"
    cmd = [*WORKER, "--study", str(study), "--out", str(out), "--no-progress"]
    # The child gets Python's Ctrl-C handling even where the suite runs with SIGINT ignored (a background job).
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _wait_for_running(url)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Study 's'" in stdout and "Traceback" not in stderr
    trials = optuna.load_study(study_name="s", storage=url).trials
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert len(failed) == 1 and "interrupted" in failed[0].user_attrs["fail_reason"]
    assert "failed: interrupted" in _notes(url)[failed[0]._trial_id]  # its dashboard note says so too
    assert _states(url)["RUNNING"] == 0
    resumed = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    states = _states(url)
    assert states["COMPLETE"] == 3 and states["RUNNING"] == 0


def test_sigterm_is_handled_like_ctrl_c(tmp_path):
    study = _write(tmp_path, set={"steps": 6, "sleep": 0.3}, n_trials=3)
    out = tmp_path / "out"
    url = f"sqlite:///{out / 's' / 's.db'}"
    proc = subprocess.Popen([*WORKER, "--study", str(study), "--out", str(out), "--no-progress"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_running(url)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in stderr
    assert _states(url)["RUNNING"] == 0


def test_sigterm_to_a_jobs_parent_reaches_its_workers(tmp_path):
    # Enough trials that the parent cannot end the study alone while its worker starts (seconds on a busy
    # machine: with 4 it once did, and no second trial ever ran); the signal ends it long before.
    study = _write(tmp_path, set={"steps": 6, "sleep": 0.5}, n_trials=40)
    out = tmp_path / "out"
    url = f"sqlite:///{out / 's' / 's.db'}"
    proc = subprocess.Popen([*WORKER, "--study", str(study), "--out", str(out), "--no-progress", "--jobs", "2"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_running(url, count=2, proc=proc)  # the parent's trial and its worker's
    proc.send_signal(signal.SIGTERM)  # as a scheduler does: to the parent only
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr[-2000:]
    trials = optuna.load_study(study_name="s", storage=url).trials
    # A worker the signal never reached would be killed after 60 s, its trial left RUNNING. (A trial
    # that was being stored when the signal came is kept COMPLETE: hence no exact count of FAIL.)
    assert not [t for t in trials if t.state.name == "RUNNING"]
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert failed and all("interrupted (signal 15)" in t.user_attrs["fail_reason"] for t in failed)


def test_storage_password_is_never_printed(tmp_path, postgres_url):
    secret_url = postgres_url.replace("postgres:@", "postgres:hunter2secret@", 1)
    study = _write(tmp_path, n_trials=1)
    proc = subprocess.run([*WORKER, "--study", str(study), "--out", str(tmp_path / "o"), "--storage", secret_url,
                           "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ})
    assert "hunter2secret" not in proc.stdout + proc.stderr
