"""A killed study finishes when the same command runs again, with no settings; nobody waits silently.

Real processes and real signals: workers are killed with SIGKILL mid-trial (as the OOM killer or a
pre-empted node does) and the dead worker's trial must be failed with a reason and re-run with
its parameters, by whoever runs next on the same machine (geostudy/study/workers.py).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import yaml

from geostudy.study import workers
from geostudy.study.workers import WORKER_KEY, process_start, worker_alive
from tests.conftest import ROOT, toy_study
from tests.test_parallel import WORKER, _notes, _wait_for_running

HOST = socket.gethostname()


def _write(tmp_path: Path, **overrides) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(toy_study(**overrides), sort_keys=False))
    return path


def _trials(url: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="s", storage=url).trials


def _check_killed_and_retried(trials: list[optuna.trial.FrozenTrial], pid: int, n: int) -> None:
    """The study holds n complete trials, the killed worker's trial FAIL with its reason, retried once."""
    states = Counter(t.state.name for t in trials)
    assert states == {"COMPLETE": n, "FAIL": 1}, states  # none RUNNING
    assert sorted(t.number for t in trials) == list(range(n + 1))  # no duplicate numbers
    [failed] = [t for t in trials if t.state.name == "FAIL"]
    assert failed.user_attrs["fail_reason"].startswith(f"worker {pid} on {HOST} died")
    [retry] = [t for t in trials if t.system_attrs.get("failed_trial") == failed.number]
    assert retry.state.name == "COMPLETE" and retry.params == failed.params and retry.params
    assert retry.system_attrs[WORKER_KEY]["pid"] != pid  # the record is its own worker's, not inherited


def test_a_process_record_tells_live_dead_and_reused_pids_apart():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = {**workers._machine(), "pid": child.pid, "start": process_start(child.pid)[1], "trial": 7}
        assert record["start"] is not None
        assert worker_alive(record, 7) is True
        assert worker_alive({**record, "start": record["start"] + 1}, 7) is False  # the pid, reused by another process
        assert worker_alive(record, 8) is None  # a record a retry inherited says nothing of its own worker
        assert worker_alive({**record, "host": "elsewhere"}, 7) is None  # another machine: the heartbeat's job
        assert worker_alive({**record, "pidns": "pid:[1]"}, 7) is None  # another container's pids
        rebooted = {**record, "boot": "an earlier boot"}
        assert worker_alive(rebooted, 7, local=True) is False  # a SQLite file here: this machine rebooted since
        assert worker_alive(rebooted, 7) is None  # on a server database it may be a clone of this machine
        child.kill()
        time.sleep(0.2)
        assert worker_alive(record, 7) is False  # a zombie (not reaped yet) is dead
    finally:
        child.kill()
        child.wait()
    assert worker_alive(record, 7) is False
    assert worker_alive(None, 7) is None  # a trial of an older geostudy: cannot tell


def test_sigkill_mid_trial_then_the_same_command_finishes_the_study(tmp_path):
    n = 4
    study = _write(tmp_path, set={"steps": 6, "sleep": 0.5}, n_trials=n)  # 3 s trials: the kill lands inside one
    out = tmp_path / "out"
    url = f"sqlite:///{out / 's' / 's.db'}"
    cmd = [*WORKER, "--study", str(study), "--out", str(out), "--no-progress"]
    first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_running(url, proc=first)
    time.sleep(0.6)  # inside the learner: its params are stored
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert Counter(t.state.name for t in _trials(url))["RUNNING"] == 1  # what a kill leaves
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "\nwaiting: " not in again.stderr  # the dead worker's trial is known dead at once
    trials = _trials(url)
    _check_killed_and_retried(trials, first.pid, n)
    failed = next(t for t in trials if t.state.name == "FAIL")
    assert f"trial #{failed.number} failed: worker {first.pid} on {HOST} died" in again.stderr
    assert "died" in _notes(url)[failed._trial_id]


def test_jobs_3_with_one_worker_sigkilled_the_others_finish(tmp_path):
    # 4 s trials, and enough of them that the parent cannot finish alone while its workers start.
    n = 12
    study = _write(tmp_path, set={"steps": 8, "sleep": 0.5}, n_trials=n)
    out = tmp_path / "out"
    url = f"sqlite:///{out / 's' / 's.db'}"
    parent = subprocess.Popen([*WORKER, "--study", str(study), "--out", str(out), "--no-progress", "--jobs", "3"],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_running(url, count=3, proc=parent)
    running = [t for t in _trials(url) if t.state.name == "RUNNING"]
    victim = next(t.system_attrs[WORKER_KEY]["pid"] for t in running if t.system_attrs[WORKER_KEY]["pid"] != parent.pid)
    time.sleep(0.3)
    subprocess.run(["kill", "-KILL", str(victim)], check=True)  # one of the parent's workers
    _, stderr = parent.communicate(timeout=600)
    assert parent.returncode == 0, stderr[-2000:]
    _check_killed_and_retried(_trials(url), victim, n)


def test_a_resume_that_must_wait_says_so_once_and_no_wait_ends_it(tmp_path):
    study = _write(tmp_path, set={"steps": 120, "sleep": 0.5}, n_trials=1)  # 60 s, cut short by the kill below
    out = tmp_path / "out"
    url = f"sqlite:///{out / 's' / 's.db'}"
    cmd = [*WORKER, "--study", str(study), "--out", str(out), "--no-progress"]
    first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_running(url, proc=first)
        # Both while the first worker's (long) trial runs: nothing is left to start for them.
        waiter = subprocess.Popen([*cmd, "--set", "sleep=0"], cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        impatient = subprocess.run([*cmd, "--no-wait"], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert impatient.returncode == 0, impatient.stderr[-2000:]
        [line] = [x for x in impatient.stderr.splitlines() if x.startswith("not waiting")]
        assert line.startswith("not waiting (--no-wait) though 0/1 trials finished") and "#0 since " in line and f"worker {first.pid} on {HOST}" in line
        assert waiter.stderr is not None
        lines = []
        while not any(x.startswith("waiting") for x in lines):
            lines.append(waiter.stderr.readline())
            assert lines[-1], "the waiting worker ended without saying it waits"
        line = lines[-1]
        assert line.startswith("waiting: 0/1 trials finished") and "#0 since " in line
        assert f"(worker {first.pid} on {HOST})" in line and "--no-wait" in line and "at once" in line
        first.send_signal(signal.SIGKILL)  # the wait ends: the waiting worker re-runs the dead worker's trial
        first.wait()
        _, rest = waiter.communicate(timeout=300)
        assert waiter.returncode == 0, rest[-2000:]
        assert "\nwaiting" not in rest and not rest.startswith("waiting")  # said once
    finally:
        first.kill()
        first.wait()
    _check_killed_and_retried(_trials(url), first.pid, 1)
