"""Which process runs a trial, and whether it still lives: a dead worker's trial is failed and re-run.

A worker killed mid-trial (SIGKILL, the OOM killer, a pre-empted node) cannot mark its trial
finished: the trial stays RUNNING, and a study that waits for its running trials would wait for
it forever. So :class:`~geostudy.study.fast_storage.FastStorage` stores with every trial, in the
transaction that makes it RUNNING, the system attribute ``geostudy:worker``: the host name, the
machine id, the boot id, the pid namespace, the pid and the process's start time. A worker on the
same machine then tells at once whether that process is gone (no ``/proc/<pid>``, a zombie, or a
pid reused by a process that started at another time: pids are recycled) and fails the trial
with ``fail_reason: worker <pid> on <host> died``, then re-runs its parameters the way Optuna's
heartbeat path does (:class:`optuna.storages.RetryHeartbeatStaleTrialCallback`: the retry's
system attribute ``failed_trial`` names the original).

A worker on another machine (or another pid namespace: a container) cannot be seen from here: its
trials are left to the heartbeat check, which geostudy turns on by default for server databases.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

WORKER_KEY = "geostudy:worker"  # the trial system attribute that names its worker


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip() or None
    except OSError:
        return None


@cache
def _machine() -> dict[str, str | None]:
    """What identifies this machine, this boot of it and this pid namespace (None where unknown)."""
    try:
        pidns: str | None = os.readlink("/proc/self/ns/pid")
    except OSError:
        pidns = None
    return {"host": socket.gethostname(), "machine": _read("/etc/machine-id"),
            "boot": _read("/proc/sys/kernel/random/boot_id"), "pidns": pidns}


def process_start(pid: int) -> tuple[bool, float | None]:
    """Whether process ``pid`` runs (a zombie does not), and its start time (None if unknown).

    The start time is ``/proc/<pid>/stat``'s ``starttime`` (clock ticks since boot) on Linux,
    psutil's ``create_time`` elsewhere when psutil is installed; without either, only whether the
    pid exists can be told, not whether it was reused.
    """
    stat = _read(f"/proc/{pid}/stat")
    if stat is not None:
        # "pid (comm) state ppid ... starttime ...": comm may hold spaces and parentheses.
        fields = stat[stat.rindex(")") + 2:].split()
        return fields[0] not in ("Z", "X"), float(fields[19])
    if Path("/proc/self/stat").is_file():
        return False, None  # /proc works here, and this pid is not in it
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            process = psutil.Process(pid)
            return process.status() != psutil.STATUS_ZOMBIE, round(process.create_time(), 2)
        except psutil.Error:
            return False, None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False, None
    except PermissionError:
        pass
    return True, None


@cache
def _this_process(pid: int) -> dict[str, Any]:
    return {**_machine(), "pid": pid, "start": process_start(pid)[1]}


def this_worker(number: int) -> dict[str, Any]:
    """The ``geostudy:worker`` record of trial ``number`` run by this process.

    The trial number is part of it: a retried trial inherits its original's system attributes,
    and a record made for another trial says nothing of who runs this one.
    """
    return {**_this_process(os.getpid()), "trial": number}


def worker_alive(record: Any, number: int, *, local: bool = False) -> bool | None:
    """Whether the worker a trial's record names is alive: True, False, or None (cannot tell here).

    Args:
        record: The trial's ``geostudy:worker`` system attribute.
        number: The trial's number.
        local: Whether the storage is a file on this machine (SQLite). Only then does a record of
            this host and machine id but another boot mean "this machine rebooted since" (its
            workers are gone): on a server database it may be a cloned machine that kept both.
    """
    if not isinstance(record, dict) or record.get("trial") != number or not isinstance(record.get("pid"), int):
        return None
    here = _machine()
    if record.get("host") != here["host"] or record.get("machine") != here["machine"] or here["machine"] is None:
        return None  # another machine (or one that cannot be told apart): the heartbeat's job
    if record.get("boot") != here["boot"]:
        # This machine rebooted since: every process of that boot is gone.
        return False if local and here["boot"] is not None else None
    if record.get("pidns") != here["pidns"]:
        return None  # another container's pids are not ours to look up
    running, start = process_start(record["pid"])
    if not running:
        return False
    return record.get("start") is None or start is None or start == record["start"]


def describe_worker(record: Any) -> str:
    """``worker 1234 on host`` (or ``an unknown worker``) for messages."""
    if isinstance(record, dict) and "pid" in record:
        return f"worker {record['pid']} on {record.get('host', '?')}"
    return "an unknown worker"


def fail_dead_trials(study: optuna.Study, on_failed: Callable[[optuna.Study, FrozenTrial, str], None], *,
                     local: bool = False) -> list[int]:
    """Fail the RUNNING trials whose worker on this machine is gone; ``on_failed`` re-runs and notes each.

    Safe with any number of workers doing the same at once: a trial is failed by a conditional
    update, so exactly one of them wins and calls ``on_failed`` (which retries it once).
    Returns the numbers of the trials failed here. ``local``: as for :func:`worker_alive`.
    """
    storage = study._storage
    running = storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.RUNNING,))
    dead = [t for t in running if worker_alive(t.system_attrs.get(WORKER_KEY), t.number, local=local) is False]
    failed = []
    for trial in dead:
        try:
            if not storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:  # it finished (or another worker failed it) meanwhile
            continue
        failed.append(trial.number)
        reason = f"{describe_worker(trial.system_attrs.get(WORKER_KEY))} died; failed by another worker on that host"
        on_failed(study, storage.get_trial(trial._trial_id), reason)
    return failed
