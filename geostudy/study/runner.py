"""Running a study: create or resume it in its storage, optimise until it holds N finished trials."""

from __future__ import annotations

import fcntl
import sys
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from geostudy.errors import ConfigError
from geostudy.study import interrupts
from geostudy.study.artifacts import artifact_dir
from geostudy.study.export import FINISHED
from geostudy.study.objective import Objective, interrupted_reason
from geostudy.study.spec import StudySpec
from geostudy.study.storage import (
    MAX_RETRY,
    TrialCallbacks,
    heartbeat_settings,
    open_storage,
    redact,
    sqlite_path,
)
from geostudy.study.workers import WORKER_KEY, describe_worker, fail_dead_trials

# A study whose trials all fail would otherwise loop forever; this many failures in a row stop it.
MAX_CONSECUTIVE_FAILURES = 10
# How often a worker that has nothing left to start looks again at the others' running trials.
WAIT_FOR_OTHERS_S = 1.0


@dataclass
class StudyPlan:
    """Where and how long a study runs, as resolved from the study file and the command line."""

    spec: StudySpec
    storage_url: str
    out_dir: Path
    n_trials: int | None
    timeout: float | None

    @property
    def study_dir(self) -> Path:
        return self.out_dir / self.spec.name

    @property
    def artifacts(self) -> Path:
        return artifact_dir(self.out_dir, self.spec.name)


def load_or_create(plan: StudyPlan, worker: int = 0) -> optuna.Study:
    """Open the study in its storage, creating it (and enqueuing ``enqueue:``) the first time.

    ``worker`` numbers the processes of one ``--jobs`` run (0 = the parent); see :func:`make_sampler`.
    """
    spec = plan.spec
    plan.study_dir.mkdir(parents=True, exist_ok=True)
    from geostudy.study.notes import StaleTrialNote

    interval, grace = heartbeat_settings(plan.storage_url, spec.heartbeat_interval, spec.grace_period)
    storage = open_storage(plan.storage_url, heartbeat_interval=interval, grace_period=grace, on_stale=StaleTrialNote(spec))
    existing = {s.study_name: s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    if spec.name in existing:
        have = [d.name.lower() for d in existing[spec.name].directions]
        if have != spec.directions:
            raise ConfigError(f"study {spec.name!r} in {redact(plan.storage_url)} has directions {have}, but the file "
                              f"asks for {spec.directions}; use another name or storage", file=spec.file, key="directions")
    # Neither a resume nor a sibling worker may replay the first proposals: the seed moves with both.
    stored = existing[spec.name].n_trials if spec.name in existing else 0
    study = optuna.create_study(storage=storage, study_name=spec.name, directions=list(spec.directions),  # type: ignore[arg-type]
                                sampler=spec.make_sampler(stored=stored, worker=worker), pruner=spec.make_pruner(),
                                load_if_exists=True)
    if spec.name not in existing:
        study.set_metric_names(spec.metrics)
        study.set_user_attr("learner", spec.learner.name)
        study.set_user_attr("study_file", str(spec.file))
        study.set_user_attr("base_config", spec.base_config)
        study.set_user_attr("fixed", spec.fixed)
        for params in spec.enqueue:
            study.enqueue_trial(params, skip_if_exists=True)
    return study


def load_existing(plan: StudyPlan) -> optuna.Study:
    """Open a study that must already exist (review commands never create one)."""
    db = sqlite_path(plan.storage_url)
    if db is not None and not db.is_file():
        raise ConfigError(f"no database at {db}: run the study first (optuna_hyper.py --study {plan.spec.name})",
                          file=plan.spec.file)
    storage = open_storage(plan.storage_url)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    if plan.spec.name not in names:
        raise ConfigError(f"study {plan.spec.name!r} is not in {redact(plan.storage_url)}; it holds: "
                          f"{', '.join(names) or 'no study'}", file=plan.spec.file)
    return optuna.load_study(study_name=plan.spec.name, storage=storage)


def trial_counts(study: optuna.Study) -> Counter[TrialState]:
    """The study's trials per state; O(1) on geostudy's storage (it keeps them), a scan elsewhere."""
    count = getattr(study._storage, "count_trials", None)
    if count is not None:
        return count(study._study_id)
    return Counter(t.state for t in study.get_trials(deepcopy=False))


def finished_count(study: optuna.Study) -> int:
    counts = trial_counts(study)
    return sum(counts[s] for s in FINISHED)


class Progress:
    """Trials done / total and the best value so far: a bar on a terminal, a line per trial in logs."""

    def __init__(self, study: optuna.Study, spec: StudySpec, total: int | None, enabled: bool = True) -> None:
        self.spec = spec
        self.total = total
        self.enabled = enabled
        self.bar = None
        self.started = time.perf_counter()
        if enabled and sys.stderr.isatty() and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=min(finished_count(study), total), desc=spec.name, unit="trial",
                            file=sys.stderr, dynamic_ncols=True)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if not self.enabled:
            return
        best = self._best(study)
        if self.bar is not None:
            if trial.state in FINISHED:
                self.bar.update(1)
            self.bar.set_postfix_str(best)
            return
        done = finished_count(study)
        total = f"/{self.total}" if self.total else ""
        value = ""
        if trial.state == TrialState.FAIL:
            value = f" ({trial.user_attrs.get('fail_reason', 'failed')})"
        elif trial.state == TrialState.PRUNED:
            value = f" at step {trial.user_attrs.get('pruned_at_step', '?')}"
        elif trial.values:
            value = " " + " ".join(f"{m}={v:.4g}" for m, v in zip(self.spec.metrics, trial.values))
        seconds = trial.duration.total_seconds() if trial.duration else 0.0
        print(f"[{done}{total}] trial #{trial.number} {trial.state.name.lower()}{value} ({seconds:.1f} s) {best}",
              file=sys.stderr, flush=True)

    def _best(self, study: optuna.Study) -> str:
        if self.spec.multi_objective:
            try:
                return f"pareto={len(study.best_trials)}"
            except ValueError:
                return ""
        try:
            return f"best={study.best_value:.4g}"
        except ValueError:
            return "best=-"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class FailureGuard:
    """Stops the worker after too many failed trials in a row (a broken config would loop forever)."""

    def __init__(self, limit: int = MAX_CONSECUTIVE_FAILURES) -> None:
        self.limit = limit
        self.in_a_row = 0
        self.tripped = False

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.in_a_row = self.in_a_row + 1 if trial.state == TrialState.FAIL else 0
        if self.in_a_row >= self.limit:
            self.tripped = True


class SlotLock:
    """Serialises "count the trials, then start one" across workers, so N means exactly N.

    Held from the count until the new trial is RUNNING in the storage (the objective releases it
    as its first act). SQLite workers share a machine: a file lock beside the database. PostgreSQL
    workers may not: a session-level advisory lock. Other databases run without it and may end a
    trial or two above N.
    """

    def __init__(self, storage_url: str, study_name: str) -> None:
        self._file: IO[str] | None = None
        self._pg_conn: Any = None
        self._key = zlib.crc32(study_name.encode())
        db = sqlite_path(storage_url)
        if db is not None:
            self._path: Path | None = db.with_name(db.name + ".slot.lock")
        else:
            self._path = None
            if storage_url.startswith("postgresql"):
                import sqlalchemy

                self._engine = sqlalchemy.create_engine(storage_url, poolclass=sqlalchemy.pool.NullPool)
        self.held = False

    def acquire(self) -> None:
        if self._path is not None:
            handle = open(self._path, "a+")  # noqa: SIM115 (held across calls on purpose)
            fcntl.flock(handle, fcntl.LOCK_EX)
            self._file = handle
        elif hasattr(self, "_engine"):
            import sqlalchemy

            self._pg_conn = self._engine.connect()
            self._pg_conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": self._key})
        self.held = True

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        if self._pg_conn is not None:
            import sqlalchemy

            self._pg_conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
            self._pg_conn.close()
            self._pg_conn = None


def optimize(plan: StudyPlan, study: optuna.Study, *, progress: bool = True, catch: bool = True,
             wait: bool = True) -> FailureGuard:
    """Run trials until the study holds ``plan.n_trials`` finished (complete or pruned) trials.

    Re-running the same command resumes: the count includes trials stored by earlier runs and by
    other workers sharing the storage. Before each trial, the RUNNING trials of workers on this
    machine that died are failed and re-run with the same parameters (:mod:`geostudy.study.workers`).
    With several workers, one whose next trial would pass the target waits for the others' running
    trials instead (saying so once; ``wait=False`` ends the worker then): if one of them dies, its
    trial is failed (at once on this machine, by the heartbeat check elsewhere) and re-run by a
    waiting worker, and the study still ends with exactly N finished.
    """
    from geostudy.study.notes import NoteWriter

    guard = FailureGuard()
    bar = Progress(study, plan.spec, plan.n_trials, enabled=progress)
    # The note first, so a trial's explanation is stored before the progress line announces it.
    # Called here after each study.optimize, not as Optuna callbacks: Optuna deep-copies the finished
    # trial for each callback, and the note (deferred by the storage) then rides along with the next
    # trial's creation instead of a commit of its own when study.optimize returns.
    after_trial = TrialCallbacks([guard, NoteWriter(plan.spec), bar])
    lock = SlotLock(plan.storage_url, plan.spec.name)

    def started() -> None:
        lock.release()
        interrupts.release()  # a signal held during Optuna's ask fails the trial now, as any interrupt

    objective = Objective(plan.spec, plan.artifacts, on_start=started, on_end=interrupts.hold)
    deadline = None if plan.timeout is None else time.monotonic() + plan.timeout
    heartbeat = getattr(study._storage, "get_heartbeat_interval", lambda: None)() is not None
    retry_dead = DeadWorkerRetry(plan.spec)
    local = sqlite_path(plan.storage_url) is not None
    told = False  # the one line about waiting for the others is printed
    try:
        while not guard.tripped and (deadline is None or time.monotonic() < deadline):
            if plan.n_trials is not None:
                lock.acquire()
            with interrupts.held():  # a signal must not come between failing a dead trial and its retry
                fail_dead_trials(study, retry_dead, local=local)  # before counting: their retries are WAITING then
            if plan.n_trials is not None:
                counts = trial_counts(study)
                finished = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]
                if finished >= plan.n_trials:
                    break
                if counts[TrialState.WAITING] == 0 and finished + counts[TrialState.RUNNING] >= plan.n_trials:
                    lock.release()
                    if not told or not wait:
                        print(wait_line(study, finished, plan.n_trials, wait=wait), file=sys.stderr, flush=True)
                        told = True
                    if not wait:
                        break
                    if heartbeat:
                        optuna.storages.fail_stale_trials(study)
                    time.sleep(WAIT_FOR_OTHERS_S)
                    continue
            told = False
            objective.trial_id = None
            # A Ctrl-C / SIGTERM outside the objective waits for it to start, or for the trial to be
            # stored and its callbacks run; one during the objective fails the trial as always.
            with interrupts.held():
                try:
                    study.optimize(objective, n_trials=1, catch=(Exception,) if catch else ())
                except KeyboardInterrupt as err:
                    _note_interrupted(study, objective.trial_id, after_trial, err)
                    raise
                lock.release()
                if objective.trial_id is not None:
                    # The finished trial as the storage keeps it (read-only for the callbacks).
                    after_trial(study, study._storage.get_trial(objective.trial_id))
    finally:
        lock.release()
        bar.close()
    return guard


class DeadWorkerRetry:
    """What is done with a trial failed because its worker died: re-run its parameters (Optuna's
    heartbeat retry, so ``failed_trial`` names it), store why and its note, and say so."""

    def __init__(self, spec: StudySpec) -> None:
        from geostudy.study.notes import StaleTrialNote

        self.retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
        self.note = StaleTrialNote(spec)

    def __call__(self, study: optuna.Study, trial: FrozenTrial, reason: str) -> None:
        self.retry(study, trial)  # first, so that the re-run does not inherit the reason
        self.note(study, trial, reason)
        print(f"trial #{trial.number} failed: {reason}; its parameters are run again", file=sys.stderr, flush=True)


def wait_line(study: optuna.Study, finished: int, n_trials: int, *, wait: bool = True) -> str:
    """The one line a worker prints when it has nothing left to start and waits for others' trials:
    which trials, since when, run by which workers, and how the wait ends."""
    storage = study._storage
    running = storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.RUNNING,))
    shown = [f"#{t.number} since {t.datetime_start:%H:%M:%S} ({describe_worker(t.system_attrs.get(WORKER_KEY))})"
             for t in running[:5] if t.datetime_start is not None]
    if len(running) > len(shown):
        shown.append(f"{len(running) - len(shown)} more")
    head = f"{finished}/{n_trials} trials finished, none left to start; {len(running)} running in other workers: "
    if not wait:
        return f"not waiting (--no-wait) though {head}{', '.join(shown)}; the same command finishes the study later"
    backend = getattr(storage, "backend", None)
    grace = getattr(backend, "grace_period", None)
    interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
    if interval is not None:
        elsewhere = f"elsewhere {grace or 2 * interval} s after its last heartbeat"
    else:
        elsewhere = "elsewhere never (no heartbeats: set heartbeat_interval in the study file)"
    return (f"waiting: {head}{', '.join(shown)}. The wait ends when they end; a trial whose worker died is "
            f"re-run here (a worker found dead on this machine at once, {elsewhere}); --no-wait stops waiting")


def _note_interrupted(study: optuna.Study, trial_id: int | None, after_trial: TrialCallbacks,
                      err: KeyboardInterrupt) -> None:
    """Ctrl-C: Optuna marked the running trial FAIL; give it its reason and its note (no callback runs)."""
    from geostudy.study.notes import with_fail_reason

    if trial_id is None:
        return
    try:
        trial = study._storage.get_trial(trial_id)
        if trial.state != TrialState.FAIL:
            return
        # The objective stores the reason itself unless the interrupt came before it could.
        trial = with_fail_reason(study, trial, interrupted_reason(err))
        for callback in after_trial.callbacks:
            if not isinstance(callback, FailureGuard):
                callback(study, trial)
    except Exception as err:  # noqa: BLE001 - the interrupt goes on; a missing note is no reason to fail
        print(f"warning: could not store why trial {trial_id} stopped: {err}", file=sys.stderr)
