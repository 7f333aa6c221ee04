"""A write-behind cache in front of Optuna's RDB storage: one transaction per trial, not fifty.

Optuna's ``RDBStorage`` commits every ``suggest``, ``set_user_attr`` and ``report`` on its own,
each after looking the trial up again, and its ``_CachedStorage`` re-reads the database on every
``get_all_trials``. :class:`FastStorage` keeps Optuna's schema and its guarantees:

* a trial is created in the database at once (unique number, visible RUNNING, heartbeat-able),
  with the record of the process that runs it (``geostudy:worker``, also when it pops an enqueued
  trial), so that a worker on the same machine can tell it died (:mod:`geostudy.study.workers`);
* the params, user attributes and intermediate values of a trial this process runs are kept in
  memory and written, with its state and values, in ONE transaction when it finishes: a finished
  trial is in the database, whole, before the next one starts. Meanwhile a write (a report, an
  attribute) that comes ``flush_interval`` seconds or more after the last flush writes everything
  buffered, and so does each heartbeat, so a live dashboard sees progress; the params are
  written as soon as the trial's first attribute or report comes, so a trial re-run after its
  worker died gets the same params;
* trial system attributes (grid ids, artifacts, sampler bookkeeping that other workers read) and
  every state change of a trial owned by someone else (popping an enqueued trial, failing a stale
  one) are written through, atomically: a conditional ``UPDATE`` under the database's write lock
  (TPE's copy of the params it sampled excepted: it waits with the params it repeats);
* reads come from memory, from per-state-filter views kept up to date in place (no per-read scan
  of the study). Finished trials never change, so each is read once; other workers' new
  and changed trials are picked up by one small query (ids above the last seen, plus the ones known
  unfinished). On SQLite it runs only when ``PRAGMA data_version`` says another connection wrote
  since the last look (so a count taken under a lock is exact, and a lone worker never queries);
  elsewhere at most every ``refresh_interval`` seconds (0 from :meth:`FastStorage.open`: every
  read asks the server), and after each trial this process finishes;
* optuna-dashboard notes (study system attributes ``dashboard:<trial id>:note_*``, written by a
  callback after each trial) ride along with the next trial's creation, or are written (in one
  statement) when ``study.optimize`` returns, or before any read of study attributes: never two
  commits of their own per trial.

The parts: :mod:`geostudy.study._trial_cache` (what is kept in memory, indexed so that reads are
O(1)-ish), :mod:`geostudy.study._write_behind` (buffered writes of owned trials, deferred notes),
:mod:`geostudy.study._rdb_session` (connections and transactions), :mod:`geostudy.study._trial_rows`
(the SQL); this module ties them into Optuna's storage API (trial creation, state changes, reads,
other workers' changes, heartbeats).
"""

from __future__ import annotations

import atexit
import copy
import logging
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Container, Sequence
from datetime import datetime
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.study import StudyDirection
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState

from geostudy.study._rdb_session import CREATE_SQLITE, FINISH_SQLITE, driver, raw_value
from geostudy.study._trial_cache import OwnedTrial, StudyCache
from geostudy.study._trial_rows import (
    CHUNK,
    VALUES,
    Sql,
    alembic_head,
    load_trials,
    models,
    read_alembic_version,
    stamp_if_new,
    to_db,
)
from geostudy.study._write_behind import WriteBehind
from geostudy.study.workers import WORKER_KEY

_log = logging.getLogger(__name__)


class FastStorage(WriteBehind, BaseStorage, BaseHeartbeat):
    """Optuna storage over an :class:`~optuna.storages.RDBStorage`, with a write-behind trial cache.

    Args:
        backend: The RDB storage whose database (and schema) this storage reads and writes.
        flush_interval: A write to a running trial (a report, an attribute) this many seconds or
            more after its last flush writes everything it buffered, although it has not finished
            (a live dashboard shows it); ``None``: only heartbeats and the finish write.
        refresh_interval: Seconds after which reads look again for other workers' trials even
            though this process finished no trial since the last look.
    """

    def __init__(self, backend: RDBStorage, *, flush_interval: float | None = 2.0, refresh_interval: float = 0.5) -> None:
        if not isinstance(backend, RDBStorage):
            raise TypeError(f"backend must be an optuna RDBStorage, but got {type(backend).__name__}")
        if flush_interval is not None and not flush_interval > 0:
            raise ValueError(f"flush_interval must be > 0 or None, but got {flush_interval!r}")
        self._backend = backend
        self._flush_s = flush_interval
        self._refresh_s = refresh_interval
        self._init_state()
        _LIVE.add(self)

    def _init_state(self) -> None:
        self._init_session(self._backend.engine)
        self._lock = threading.RLock()
        self._studies: dict[int, StudyCache] = {}
        self._where: dict[int, tuple[int, int]] = {}  # trial id -> (study id, number)
        self._owned: dict[int, OwnedTrial] = {}
        self._study_attrs: dict[tuple[int, str], str] = {}  # deferred dashboard notes: (study, key) -> json
        self._stale_looked: dict[int, float] = {}  # study id -> when its stale trials were last looked for

    @classmethod
    def open(cls, url: str, *, engine_kwargs: dict[str, Any] | None = None, **rdb_kwargs: Any) -> FastStorage:
        """An :class:`~optuna.storages.RDBStorage` on ``url`` (tables created if needed) behind a FastStorage.

        Optuna checks the schema version with alembic, which imports all its migration scripts
        (0.2 s to 1 s per open, a fresh database twice): here a fresh database is stamped with the
        head revision directly, an existing one is compared with it, and only a mismatch goes to
        Optuna's own check (for its message and advice).

        Args:
            url: Database URL.
            engine_kwargs: Passed to ``sqlalchemy.create_engine``.
            **rdb_kwargs: Passed to ``RDBStorage`` (heartbeat settings).
        """
        head = alembic_head()
        # A server database has no cheap "anything changed?": every read asks (one small query),
        # so a count taken under a lock (exactly N trials across workers) is exact there too.
        refresh = 0.5 if url.startswith("sqlite") else 0.0
        if head is None:  # an Optuna whose scripts this cannot read: its own, slower way
            return cls(RDBStorage(url, engine_kwargs=engine_kwargs, **rdb_kwargs), refresh_interval=refresh)
        engine = sa.create_engine(url, **(engine_kwargs or {}))
        try:
            stamp_if_new(engine, head)
        finally:
            engine.dispose()
        backend = RDBStorage(url, engine_kwargs=engine_kwargs, skip_compatibility_check=True, **rdb_kwargs)
        current = read_alembic_version(backend.engine)
        if current != head:
            backend._version_manager.check_table_schema_compatibility()
        return cls(backend, refresh_interval=refresh)

    def __getstate__(self) -> dict[str, Any]:
        return {"_backend": self._backend, "_flush_s": self._flush_s, "_refresh_s": self._refresh_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_state()
        _LIVE.add(self)

    @property
    def backend(self) -> RDBStorage:
        return self._backend

    @property
    def url(self) -> str:
        return self._backend.url

    # -- studies: Optuna's own code, except the per-trial ones ------------------------------

    def _study(self, study_id: int) -> StudyCache:
        st = self._studies.get(study_id)
        if st is None:
            st = self._studies[study_id] = StudyCache()
        return st

    def create_new_study(self, directions: Sequence[StudyDirection], study_name: str | None = None) -> int:
        study_id = self._backend.create_new_study(directions, study_name)
        with self._lock:
            st = self._study(study_id)
            st.directions, st.name = list(directions), study_name
        return study_id

    def delete_study(self, study_id: int) -> None:
        with self._lock:
            self._studies.pop(study_id, None)
            for trial_id in [t for t, (s, _) in self._where.items() if s == study_id]:
                self._where.pop(trial_id)
                self._owned.pop(trial_id, None)
        self._backend.delete_study(study_id)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._set_study_attr("user", study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self._set_study_attr("system", study_id, key, value)

    def close(self) -> None:
        """Write what is deferred, then close every connection.

        On SQLite the last connection to close checkpoints the WAL into the database file; doing it
        here, when a command ends, means the file is complete and no longer changes afterwards
        (not later, whenever a garbage collector happens to close a forgotten connection).
        """
        self.flush()
        with self._lock:
            if self._conn is not None and not self._conn.closed:
                self._conn.close()
            self._conn = None
        self._engine.dispose()

    def __del__(self) -> None:
        # Best effort, and quick: a collector may run this while another storage on the same file
        # holds its write lock in this very thread, so wait 0.2 s for the lock, not a minute.
        try:
            if self._study_attrs and self._sqlite:
                with self._engine.connect() as conn:
                    conn.exec_driver_sql("PRAGMA busy_timeout=200")
                    try:
                        conn.exec_driver_sql("BEGIN IMMEDIATE")
                        self._write_study_attrs(conn)
                        conn.commit()
                    finally:
                        conn.exec_driver_sql("PRAGMA busy_timeout=60000")
            elif self._study_attrs:
                self._flush_study_attrs()
        except Exception:  # noqa: BLE001, S110 - a lost note at teardown is not worth a traceback
            pass

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._backend.get_study_id_from_name(study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        st = self._study(study_id)
        if st.name is None:
            st.name = self._backend.get_study_name_from_id(study_id)
        return st.name

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        st = self._study(study_id)
        if st.directions is None:
            st.directions = self._backend.get_study_directions(study_id)
        return st.directions

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self._backend.get_study_user_attrs(study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        self._flush_study_attrs()
        return self._backend.get_study_system_attrs(study_id)

    def get_all_studies(self) -> list[FrozenStudy]:
        self._flush_study_attrs()
        return self._backend.get_all_studies()

    def remove_session(self) -> None:
        """Optuna calls this when ``study.optimize`` returns: nothing deferred may outlive it."""
        self._flush_study_attrs()
        self._backend.remove_session()

    # -- creating trials -----------------------------------------------------------------------

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        if template_trial is not None:  # enqueue_trial, add_trial, copy_study, retries: rare, Optuna's code
            frozen = self._backend._create_new_trial(study_id, template_trial)
            with self._lock:
                self._add(study_id, frozen)
            return frozen._trial_id
        self.get_study_directions(study_id)  # KeyError for a study that does not exist
        start = datetime.now()
        row = {"b_study": study_id, "b_start": to_db(start)}
        beat = self._backend.heartbeat_interval is not None
        with self._tx(lock_study=study_id, deferred=True) as conn:
            if self._sqlite:
                trial_id, number = driver(conn).execute(
                    CREATE_SQLITE, (study_id, study_id, raw_value(row["b_start"]))).fetchone()
            elif self._returning:
                trial_id, number = conn.execute(Sql.insert_numbered, row).one()
            else:  # MySQL: no RETURNING, and no subquery on the table being inserted into
                number = conn.execute(Sql.count, row).scalar_one()
                key = conn.execute(Sql.insert_trial, {**row, "number": number}).inserted_primary_key
                trial_id = key[0] if key is not None else None
            if beat:  # the heartbeat thread's first beat, already: it then skips it
                conn.execute(Sql.first_beat, {"b_trial": trial_id})
            trial = FrozenTrial(number=number, state=TrialState.RUNNING, value=None, datetime_start=start,
                                datetime_complete=None, params={}, distributions={}, user_attrs={}, system_attrs={},
                                intermediate_values={}, trial_id=trial_id)
            trial.system_attrs[WORKER_KEY] = self._record_worker(conn, trial_id, number, replace=False)
        owned = OwnedTrial(study_id, trial, beat_written=beat)
        owned.written["system"].add(WORKER_KEY)
        with self._lock:
            self._owned[trial_id] = owned
            self._add(study_id, trial)
        return trial_id

    def _add(self, study_id: int, trial: FrozenTrial) -> None:
        """Put a trial in the cache (lock held)."""
        st = self._study(study_id)
        self._where[trial._trial_id] = (study_id, trial.number)
        st.put(trial)
        for name, dist in trial.distributions.items():
            st.dists.setdefault(name, dist)
        if trial._trial_id not in self._owned:
            if trial.state.is_finished():
                st.unfinished.pop(trial._trial_id, None)
            else:
                st.unfinished[trial._trial_id] = time.monotonic()
        if trial.state == TrialState.COMPLETE and trial.values and len(trial.values) == 1:
            directions = self.get_study_directions(study_id)
            if len(directions) > 1:
                return
            better = min if directions[0] == StudyDirection.MINIMIZE else max
            if st.best is None or better(trial.values[0], st.best.values[0]) != st.best.values[0]:
                st.best = trial

    # -- state changes -------------------------------------------------------------------------

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        with self._lock:
            owned = self._owner(trial_id)
            if owned is not None and state == TrialState.RUNNING:
                return False
            if state == TrialState.WAITING:  # back to the queue: nothing of ours does that; Optuna's code
                if owned is not None:
                    self._flush_if_due(owned, force=True)
                    del self._owned[trial_id]
                changed = self._backend.set_trial_state_values(trial_id, state, values)
                self._mark_changed(trial_id)
                return changed
            now = datetime.now()
            change = {"b_trial": trial_id, "b_state": state, "b_when": to_db(now)}
            done = None
            try:
                with self._tx(deferred=True) as conn:
                    if self._sqlite and state != TrialState.RUNNING:
                        updated = driver(conn).execute(FINISH_SQLITE, (state.name, raw_value(change["b_when"]),
                                                                         trial_id)).rowcount
                    else:
                        updated = conn.execute(Sql.start if state == TrialState.RUNNING else Sql.finish, change).rowcount
                    if updated == 0:
                        current = conn.execute(Sql.state, change).scalar()
                        if current is None:
                            raise KeyError(models.NOT_FOUND_MSG)
                        if current.is_finished():
                            raise UpdateFinishedTrialError(f"Trial with id {trial_id} has already finished and can not be updated.")
                        return False  # popping a trial another worker popped first
                    if values is not None:
                        if owned is None:
                            conn.execute(Sql.delete_values, change)
                        self._insert(conn, VALUES, [
                            dict(zip(("value", "value_type"), models.TrialValueModel.value_to_stored_repr(v)),
                                 trial_id=trial_id, objective=i) for i, v in enumerate(values)])
                    if owned is not None:
                        done = self._write_pending(conn, owned)
                    elif state == TrialState.RUNNING:  # popped an enqueued (or retried) trial: it is ours now
                        where = self._where.get(trial_id)
                        number = where[1] if where is not None else self._load_one(trial_id, conn).number
                        self._record_worker(conn, trial_id, number, replace=True)
            except UpdateFinishedTrialError:
                if owned is not None:
                    owned.lost = True
                    self._owned.pop(trial_id, None)
                    self._study(owned.study_id).stale = True
                raise
            if owned is None:
                if state == TrialState.RUNNING:  # popped an enqueued trial: it is ours now
                    trial = self._load_one(trial_id)
                    study_id = self._where[trial_id][0]
                    owned = self._owned[trial_id] = OwnedTrial(study_id, trial, beat_written=False)
                    # What it brought along (enqueued or retried attributes, reports) is in the database.
                    owned.written = {"user": set(trial.user_attrs), "system": set(trial.system_attrs)}
                    owned.written_steps = set(trial.intermediate_values)
                    self._study(study_id).unfinished.pop(trial_id, None)
                else:
                    self._mark_changed(trial_id)
                return True
            self._flushed(owned, done)
            trial = owned.trial
            trial.state, trial.values = state, values
            if state.is_finished():
                trial.datetime_complete = now
                del self._owned[trial_id]
                st = self._study(owned.study_id)
                # The next read looks for what the other workers did meanwhile (SQLite's main thread
                # needs no hint: its data_version tells).
                st.stale = st.stale or not (self._sqlite and threading.current_thread() is threading.main_thread())
                self._add(owned.study_id, trial)
            return True

    def _mark_changed(self, trial_id: int) -> None:
        """A write-through change to a trial this process does not run: read it again when asked."""
        where = self._where.get(trial_id)
        if where is not None:
            st = self._study(where[0])
            st.unfinished[trial_id] = float("-inf")
            st.stale = True

    # -- reads ---------------------------------------------------------------------------------

    def get_trial(self, trial_id: int) -> FrozenTrial:
        with self._lock:
            owned = self._owned.get(trial_id)
            if owned is not None:  # Trial keeps and edits what it gets: a copy of the dicts, not a deep copy
                t = owned.trial
                return FrozenTrial(number=t.number, state=t.state, value=None, values=t.values,
                                   datetime_start=t.datetime_start, datetime_complete=t.datetime_complete,
                                   params=dict(t.params), distributions=dict(t.distributions),
                                   user_attrs=dict(t.user_attrs), system_attrs=dict(t.system_attrs),
                                   intermediate_values=dict(t.intermediate_values), trial_id=t._trial_id)
            where = self._where.get(trial_id)
            if where is not None:
                trial = self._study(where[0]).by_number[where[1]]
                if trial is not None and trial.state.is_finished() and trial._trial_id == trial_id:
                    return trial
            return self._load_one(trial_id)

    def _load_one(self, trial_id: int, conn: sa.Connection | None = None) -> FrozenTrial:
        """Read one trial (in ``conn``'s transaction if given) into the cache."""
        if conn is None:
            with self._read() as conn:
                return self._load_one(trial_id, conn)
        study_id = conn.execute(Sql.study_of, {"b_trial": trial_id}).scalar()
        if study_id is None:
            raise KeyError(models.NOT_FOUND_MSG)
        (trial,) = load_trials(conn, [trial_id])
        self._add(study_id, trial)
        return trial

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        with self._lock:
            st = self._study(study_id)
            if trial_number < len(st.by_number) and st.by_number[trial_number] is not None:
                return st.by_number[trial_number]._trial_id  # type: ignore[union-attr]
        return self._backend.get_trial_id_from_study_id_trial_number(study_id, trial_number)

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        with self._lock:
            self._refresh(study_id)
            trials = self._study(study_id).trials(states)
        return copy.deepcopy(trials) if deepcopy else trials

    def count_trials(self, study_id: int) -> Counter[TrialState]:
        """The study's trials per state (other workers' included), without listing them."""
        with self._lock:
            self._refresh(study_id)
            return +self._study(study_id).counts  # a copy, without the states that dropped to 0

    def get_best_trial(self, study_id: int) -> FrozenTrial:
        if len(self.get_study_directions(study_id)) > 1:
            raise RuntimeError("Best trial can be obtained only for single-objective optimization.")
        with self._lock:
            self._refresh(study_id)
            best = self._study(study_id).best
        if best is None:
            raise ValueError(models.NOT_FOUND_MSG)
        return best

    def _refresh(self, study_id: int) -> None:
        """Read other workers' new and changed trials (lock held): one small query, rarely more."""
        st = self._study(study_id)
        now = time.monotonic()
        version = self._data_version()
        if version is not None:  # SQLite knows whether anyone else wrote since: exact and nearly free
            if version == st.version and not st.stale:
                return
        elif not st.stale and now - st.refreshed_at < self._refresh_s:
            return
        self.get_study_directions(study_id)
        watch = sorted(st.unfinished)
        query: dict[str, Any] = {"b_study": study_id, "b_last": st.last_seen}
        if len(watch) > CHUNK:  # e.g. thousands of enqueued trials: everything from the oldest on
            query["b_last"] = min(st.last_seen, watch[0] - 1)
        elif watch:
            query["b_ids"] = watch
        with self._read() as conn:
            rows = conn.execute(Sql.seen_or if "b_ids" in query else Sql.seen, query).all()
            load = []
            for trial_id, state in rows:
                st.last_seen = max(st.last_seen, trial_id)
                if trial_id in self._owned:
                    continue
                read_at = st.unfinished.get(trial_id)
                where_known = self._where.get(trial_id)
                cached = None if where_known is None else st.by_number[where_known[1]]
                if read_at is None:
                    if where_known is None or not state.is_finished() or cached is None or cached.state != state:
                        load.append(trial_id)
                elif state.is_finished() or cached is None or cached.state != state:
                    load.append(trial_id)  # e.g. an enqueued trial another worker popped: counts must be exact
                elif now - read_at >= 4 * self._refresh_s:
                    load.append(trial_id)  # a running trial's params and reports, now and then
            for trial in load_trials(conn, load):
                self._add(study_id, trial)
        st.stale, st.refreshed_at, st.version = False, now, version

    # -- heartbeat -----------------------------------------------------------------------------

    def record_heartbeat(self, trial_id: int) -> None:
        with self._lock:
            owned = self._owned.get(trial_id)
            if owned is not None and owned.lost:
                return
            if owned is not None and time.monotonic() - owned.last_beat < 1.0:
                # Written with the trial a moment ago (what it buffered since: with the next beat, or
                # with the params, which the objective's first write takes along).
                return
            done = None
            with self._tx() as conn:
                if conn.execute(Sql.beat, {"b_trial": trial_id}).rowcount == 0:
                    conn.execute(Sql.first_beat, {"b_trial": trial_id})
                if owned is not None and owned.dirty() and self._alive(conn, owned):
                    done = self._write_pending(conn, owned)
            if owned is not None:
                owned.last_beat = time.monotonic()
                if done is not None or owned.lost:
                    self._flushed(owned, done)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        # Optuna looks before every trial; a trial goes stale only a grace period (>= one interval)
        # after its last beat, so looking once per heartbeat interval finds the same trials, at most
        # one interval later, and spares a query (an ORM session) per trial.
        now, interval = time.monotonic(), self._backend.heartbeat_interval or 0
        with self._lock:
            if now - self._stale_looked.get(study_id, float("-inf")) < interval:
                return []
            self._stale_looked[study_id] = now
            mine = set(self._owned)
        return [t for t in self._backend._get_stale_trial_ids(study_id) if t not in mine]

    def get_heartbeat_interval(self) -> int | None:
        return self._backend.get_heartbeat_interval()

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self._backend.get_heartbeat_stale_trial_callback()


_LIVE: weakref.WeakSet[FastStorage] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    """The last trial's note (running trials' data is moot: their trials stay RUNNING)."""
    for storage in list(_LIVE):
        try:
            storage._flush_study_attrs()
        except Exception as err:  # noqa: BLE001 - exiting anyway
            _log.warning("could not write the last dashboard notes: %s", err)
