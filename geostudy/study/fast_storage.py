"""A write-behind cache in front of Optuna's RDB storage: one transaction per trial, not fifty.

Optuna's ``RDBStorage`` commits every ``suggest``, ``set_user_attr`` and ``report`` on its own,
each after looking the trial up again, and its ``_CachedStorage`` re-reads the database on every
``get_all_trials``. :class:`FastStorage` keeps Optuna's schema and its guarantees:

* a trial is created in the database at once (unique number, visible RUNNING, heartbeat-able);
* the params, user attributes and intermediate values of a trial this process runs are kept in
  memory and written, with its state and values, in ONE transaction when it finishes: a finished
  trial is in the database, whole, before the next one starts. Meanwhile a write (a report, an
  attribute) that comes ``flush_interval`` seconds or more after the last flush writes everything
  buffered, and so does each heartbeat, so a live dashboard sees progress; with a
  heartbeat, the params are written as soon as the trial's first attribute or report comes, so a
  trial re-run after its worker died gets the same params;
* trial system attributes (grid ids, artifacts, sampler bookkeeping that other workers read) and
  every state change of a trial owned by someone else (popping an enqueued trial, failing a stale
  one) are written through, atomically: a conditional ``UPDATE`` under the database's write lock;
* reads come from memory. Finished trials never change, so each is read once; other workers' new
  and changed trials are picked up by one small query (ids above the last seen, plus the ones known
  unfinished). On SQLite it runs only when ``PRAGMA data_version`` says another connection wrote
  since the last look (so a count taken under a lock is exact, and a lone worker never queries);
  elsewhere at most every ``refresh_interval`` seconds (0 from :meth:`FastStorage.open`: every
  read asks the server), and after each trial this process finishes;
* optuna-dashboard notes (study system attributes ``dashboard:<trial id>:note_*``, written by a
  callback after each trial) ride along with the next trial's creation, or are written (in one
  statement) when ``study.optimize`` returns, or before any read of study attributes: never two
  commits of their own per trial.

On SQLite every write transaction starts with ``BEGIN IMMEDIATE``, so two workers never both read
and then race to write (the "database is locked" of a deferred transaction upgrade); elsewhere the
study row is locked (``FOR UPDATE``) while a trial number is assigned, as Optuna does. On SQLite
the main thread keeps one connection, and the per-trial INSERTs and the finishing UPDATE go straight
to the sqlite3 driver (SQLAlchemy's per-statement cost was most of what was left).
"""

from __future__ import annotations

import atexit
import bisect
import copy
import enum
import json
import logging
import os
import re
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Container, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import optuna
import sqlalchemy as sa
from optuna import distributions as dists
from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.study import StudyDirection
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState

from geostudy.study._trial_rows import (
    CHUNK,
    PARAMS,
    STEPS,
    STUDY_ATTRS,
    SYSTEM,
    USER,
    VALUES,
    Sql,
    alembic_head,
    check_key,
    load_trials,
    models,
    read_alembic_version,
    stamp_if_new,
    to_db,
)

_log = logging.getLogger(__name__)
# optuna-dashboard's keys of a trial's note (``note_ver_key``, ``note_str_key_prefix``)
_DEFERRED_KEY = re.compile(r"dashboard:\d+:note_(ver|str:\d+)")
# TPESampler's (constant liar) record of a running trial's relative params (``_RELATIVE_PARAMS_KEY``):
# other workers read it only to "lie" about running trials, and the params it repeats are buffered too
# (flushed after ``flush_interval``, with a heartbeat, or at the finish), so it waits with them instead
# of costing a transaction of its own per trial.
_BUFFERED_SYSTEM_PREFIX = "tpe:relative_params:"


class _Owned:
    """A trial this process runs: its live state and what is not yet in the database."""

    def __init__(self, study_id: int, trial: FrozenTrial, beat_written: bool) -> None:
        self.study_id = study_id
        self.trial = trial
        self.params: dict[str, tuple[float, str]] = {}  # name -> (internal value, distribution json), unwritten
        self.attrs: dict[str, dict[str, str]] = {"user": {}, "system": {}}  # key -> json, unwritten
        self.written: dict[str, set[str]] = {"user": set(), "system": set()}
        self.steps: dict[int, float] = {}
        self.written_steps: set[int] = set()
        self.last_flush = time.monotonic()
        self.last_beat = time.monotonic() if beat_written else float("-inf")
        self.lost = False  # another process finished (failed) it

    def dirty(self) -> bool:
        return bool(self.params or self.steps or self.attrs["user"] or self.attrs["system"])


class _Study:
    """What this process knows of one study's trials, indexed so that every per-trial read is O(1)-ish.

    ``get_all_trials`` is called several times per trial (Optuna's ask, TPE, the runner's count):
    a fresh filtered list each time is an O(n) Python loop per call, which made the per-trial
    cost grow with the study. Instead each filter asked for keeps a view (the matching trials in
    number order) that :meth:`put` updates in place (a binary search and a C-level list edit), and
    the counts per state are kept as trials come and change.
    """

    MAX_VIEWS = 16  # distinct state filters kept; more (never seen in practice) are computed each time

    def __init__(self) -> None:
        self.by_number: list[FrozenTrial | None] = []
        self.state_of: list[TrialState | None] = []  # each trial's state when it was last put (owned ones change in place)
        self.counts: Counter[TrialState] = Counter()
        self.views: dict[frozenset[TrialState] | None, list[FrozenTrial]] = {}
        self.last_seen = -1  # highest trial id a refresh has seen
        self.unfinished: dict[int, float] = {}  # others' unfinished trial ids -> when their details were read
        self.stale = True  # refresh at the next read
        self.version: int | None = None  # SQLite's data_version at the last refresh
        self.refreshed_at = float("-inf")
        self.dists: dict[str, dists.BaseDistribution] = {}
        self.directions: list[StudyDirection] | None = None
        self.name: str | None = None
        self.best: FrozenTrial | None = None

    def put(self, trial: FrozenTrial) -> None:
        """Add ``trial`` or replace the one of its number, keeping the views and counts exact."""
        number = trial.number
        if number >= len(self.by_number):
            grow = number + 1 - len(self.by_number)
            self.by_number.extend([None] * grow)
            self.state_of.extend([None] * grow)
        was = self.state_of[number]
        self.by_number[number], self.state_of[number] = trial, trial.state
        if was is not None:
            self.counts[was] -= 1
        self.counts[trial.state] += 1
        for key, view in self.views.items():
            before = was is not None and (key is None or was in key)
            after = key is None or trial.state in key
            if not (before or after):
                continue
            i = bisect.bisect_left(view, number, key=_number)
            if before and after:
                view[i] = trial
            elif before:
                del view[i]
            else:
                view.insert(i, trial)

    def trials(self, states: Container[TrialState] | None) -> list[FrozenTrial]:
        """The known trials (in number order) whose state is in ``states`` (all if None): a new list."""
        try:
            key = None if states is None else frozenset(states)  # type: ignore[call-overload]
        except TypeError:  # a Container that cannot be iterated
            return [t for t in self.by_number if t is not None and t.state in states]  # type: ignore[operator]
        view = self.views.get(key)
        if view is None:
            view = [t for t, s in zip(self.by_number, self.state_of) if t is not None and (key is None or s in key)]
            if len(self.views) >= self.MAX_VIEWS:
                return view
            self.views[key] = view
        return list(view)


def _number(trial: FrozenTrial) -> int:
    return trial.number


class FastStorage(BaseStorage, BaseHeartbeat):
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
        self._engine = self._backend.engine
        self._sqlite = self._engine.dialect.name == "sqlite"
        self._returning = bool(self._engine.dialect.insert_returning) and self._engine.dialect.name != "mysql"
        self._lock = threading.RLock()
        self._studies: dict[int, _Study] = {}
        self._where: dict[int, tuple[int, int]] = {}  # trial id -> (study id, number)
        self._owned: dict[int, _Owned] = {}
        self._conn: sa.Connection | None = None
        self._conn_pid = -1
        self._conn_busy = False
        self._study_attrs: dict[tuple[int, str], str] = {}  # deferred dashboard notes: (study, key) -> json

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

    # -- transactions ------------------------------------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[sa.Connection]:
        """The main thread keeps one SQLite connection (checking one out costs as much as a query);
        other threads (heartbeat, dashboard requests) and server databases check one out each time."""
        if not self._sqlite or threading.current_thread() is not threading.main_thread() or self._conn_busy:
            with self._engine.connect() as conn:
                yield conn
            return
        if self._conn is None or self._conn.closed or self._conn_pid != os.getpid():
            self._conn, self._conn_pid = self._engine.connect(), os.getpid()
        self._conn_busy = True
        try:
            yield self._conn
        except BaseException:
            self._conn.close()  # whatever state it is in, a fresh one next time
            self._conn = None
            raise
        finally:
            self._conn_busy = False

    def _data_version(self) -> int | None:
        """SQLite's ``PRAGMA data_version`` on the main thread's connection: it changes exactly when
        another connection (another worker, or this one's heartbeat thread) commits. None elsewhere."""
        if not self._sqlite or threading.current_thread() is not threading.main_thread() or self._conn_busy:
            return None
        try:
            conn = self._conn
            if conn is None or conn.closed or self._conn_pid != os.getpid():  # rare: open it the usual way
                with self._connection() as conn:
                    pass
            raw = conn.connection.dbapi_connection
            if raw is None or raw.in_transaction:
                return None
            return int(raw.execute("PRAGMA data_version").fetchone()[0])
        except Exception:  # noqa: BLE001 - then the time-based rule decides
            return None

    @contextmanager
    def _tx(self, lock_study: int | None = None, deferred: bool = False) -> Iterator[sa.Connection]:
        """One write transaction: SQLite's write lock from the start, or the study row locked.

        With ``deferred``, the deferred study attributes (dashboard notes) are written in it too.
        """
        try:
            with self._connection() as conn:
                if self._sqlite:
                    if not conn.in_transaction():
                        conn.begin()  # SQLAlchemy's side of it (nothing is sent); then the driver's, directly
                    _driver(conn).execute("BEGIN IMMEDIATE")
                elif lock_study is not None:
                    study = models.StudyModel.__table__
                    conn.execute(sa.select(study.c.study_id).where(study.c.study_id == lock_study).with_for_update())
                if deferred and self._study_attrs:
                    self._write_study_attrs(conn)
                try:
                    yield conn
                except BaseException:
                    conn.rollback()
                    raise
                conn.commit()
        except sa.exc.SQLAlchemyError as err:
            raise StorageInternalError(f"storage write failed: {type(err).__name__}: {err}") from err

    @contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        try:
            with self._connection() as conn:
                try:
                    yield conn
                finally:
                    conn.rollback()  # end the read (SQLAlchemy begins one; a server keeps it open)
        except sa.exc.SQLAlchemyError as err:
            raise StorageInternalError(f"storage read failed: {type(err).__name__}: {err}") from err

    # -- studies: Optuna's own code, except the per-trial ones ------------------------------

    def _study(self, study_id: int) -> _Study:
        st = self._studies.get(study_id)
        if st is None:
            st = self._studies[study_id] = _Study()
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

    def _set_study_attr(self, kind: str, study_id: int, key: str, value: Any) -> None:
        if self._study(study_id).directions is None:
            self.get_study_directions(study_id)  # raises KeyError for a study that does not exist
        check_key(key)
        text = json.dumps(value)
        with self._lock:
            if kind == "system" and _DEFERRED_KEY.fullmatch(key):
                # A finished trial's dashboard note: written with this process's next trial, or when
                # study.optimize returns, or before study attributes are read (or when this storage
                # is flushed or collected, or at exit).
                self._study_attrs[(study_id, key)] = text
                return
            with self._tx() as conn:
                self._upsert_study_attrs(conn, kind, [{"study_id": study_id, "key": key, "value_json": text}])

    def _upsert_study_attrs(self, conn: sa.Connection, kind: str, rows: list[dict[str, Any]]) -> None:
        table, dialect = STUDY_ATTRS[kind], self._engine.dialect.name
        if dialect == "sqlite":  # one statement for all: INSERT ... ON CONFLICT DO UPDATE
            _driver(conn).executemany(
                f"INSERT INTO {table.name} (study_id, key, value_json) VALUES (?, ?, ?) "
                "ON CONFLICT (study_id, key) DO UPDATE SET value_json = excluded.value_json",
                [(r["study_id"], r["key"], r["value_json"]) for r in rows])
            return
        if dialect == "postgresql":
            conn.execute(Sql.upsert[dialect, kind], rows)
            return
        for row in rows:
            update = {"b_study": row["study_id"], "b_key": row["key"], "b_json": row["value_json"]}
            if conn.execute(Sql.study_attr_update[kind], update).rowcount == 0:
                conn.execute(Sql.insert[table.name], row)

    def _write_study_attrs(self, conn: sa.Connection) -> None:
        """Write the deferred study attributes in ``conn``'s transaction."""
        with self._lock:
            pending = dict(self._study_attrs)
            self._study_attrs.clear()
        try:
            self._upsert_study_attrs(conn, "system", [{"study_id": study_id, "key": key, "value_json": text}
                                                      for (study_id, key), text in pending.items()])
        except BaseException:
            with self._lock:
                self._study_attrs.update({k: v for k, v in pending.items() if k not in self._study_attrs})
            raise

    def _flush_study_attrs(self) -> None:
        if self._study_attrs:
            with self._tx(deferred=True):
                pass

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
                trial_id, number = _driver(conn).execute(
                    _CREATE_SQLITE, (study_id, study_id, _raw_value(row["b_start"]))).fetchone()
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
        with self._lock:
            self._owned[trial_id] = _Owned(study_id, trial, beat_written=beat)
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

    # -- buffered writes of owned trials -------------------------------------------------------

    def _owner(self, trial_id: int) -> _Owned | None:
        owned = self._owned.get(trial_id)
        if owned is not None and owned.lost:  # from now on Optuna's own checks answer for it
            del self._owned[trial_id]
            self._mark_changed(trial_id)
            raise UpdateFinishedTrialError(f"Trial#{owned.trial.number} has already finished and can not be updated.")
        return owned

    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                        distribution: dists.BaseDistribution) -> None:
        with self._lock:
            owned = self._owner(trial_id)
            if owned is None:
                self._backend.set_trial_param(trial_id, param_name, param_value_internal, distribution)
                self._mark_changed(trial_id)
                return
            check_key(param_name)
            st = self._study(owned.study_id)
            previous = st.dists.get(param_name)
            if previous is not None:
                dists.check_distribution_compatibility(previous, distribution)
            if param_name in owned.trial.distributions:
                return  # as the RDB does: the first value stays
            owned.trial.params[param_name] = distribution.to_external_repr(param_value_internal)
            owned.trial.distributions[param_name] = distribution
            owned.params[param_name] = (param_value_internal, dists.distribution_to_json(distribution))
            st.dists.setdefault(param_name, distribution)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._set_trial_attr("user", trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._set_trial_attr("system", trial_id, key, value)

    def _set_trial_attr(self, kind: str, trial_id: int, key: str, value: Any) -> None:
        with self._lock:
            owned = self._owner(trial_id)
            if owned is None:
                setter = self._backend.set_trial_user_attr if kind == "user" else self._backend.set_trial_system_attr
                setter(trial_id, key, value)
                self._mark_changed(trial_id)
                return
            check_key(key)
            text = json.dumps(value)  # fails here, not at the flush, for a value JSON cannot hold
            (owned.trial.user_attrs if kind == "user" else owned.trial.system_attrs)[key] = json.loads(text)
            owned.attrs[kind][key] = text
            # System attributes are how samplers and artifacts talk to other workers: written through,
            # except TPE's copy of the params it sampled, which is buffered like the params themselves.
            self._flush_if_due(owned, force=kind == "system" and not key.startswith(_BUFFERED_SYSTEM_PREFIX))

    def set_finished_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        """A user attribute on a finished trial (why a stale or interrupted trial failed), which
        Optuna's API refuses once a trial is finished. Written through, at once."""
        check_key(key)
        text = json.dumps(value)
        with self._lock:
            with self._tx() as conn:
                update = {"b_trial": trial_id, "b_key": key, "b_json": text}
                if conn.execute(Sql.attr_update["user"], update).rowcount == 0:
                    self._insert(conn, USER, [{"trial_id": trial_id, "key": key, "value_json": text}])
            where = self._where.get(trial_id)
            cached = None if where is None else self._study(where[0]).by_number[where[1]]
            if where is not None and cached is not None and cached._trial_id == trial_id:
                # Finished trials are shared with readers as they are: replace, never edit.
                fresh = copy.copy(cached)
                fresh.user_attrs = {**cached.user_attrs, key: json.loads(text)}
                self._add(where[0], fresh)

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        with self._lock:
            owned = self._owner(trial_id)
            if owned is None:
                self._backend.set_trial_intermediate_value(trial_id, step, intermediate_value)
                self._mark_changed(trial_id)
                return
            owned.trial.intermediate_values[step] = intermediate_value
            owned.steps[step] = intermediate_value
            self._flush_if_due(owned)

    def _flush_if_due(self, owned: _Owned, force: bool = False) -> None:
        # With a heartbeat a dead worker's trial is re-run with its params: write them early.
        early = bool(owned.params) and self._backend.heartbeat_interval is not None
        if force or early or (self._flush_s is not None and time.monotonic() - owned.last_flush >= self._flush_s):
            done = None
            with self._tx() as conn:
                if self._alive(conn, owned):
                    done = self._write_pending(conn, owned)
            self._flushed(owned, done)

    def _alive(self, conn: sa.Connection, owned: _Owned) -> bool:
        state = conn.execute(Sql.state, {"b_trial": owned.trial._trial_id}).scalar()
        if state is not None and state.is_finished():
            owned.lost = True  # failed by another worker (stale heartbeat): nothing more may be written
        return not owned.lost

    def _write_pending(self, conn: sa.Connection, owned: _Owned) -> tuple[Any, ...]:
        """Write what ``owned`` holds unwritten, in ``conn``'s transaction; return what was written."""
        trial_id = owned.trial._trial_id
        params, attrs, steps = dict(owned.params), {k: dict(v) for k, v in owned.attrs.items()}, dict(owned.steps)
        if params:
            self._insert(conn, PARAMS, [{"trial_id": trial_id, "param_name": name, "param_value": value,
                                         "distribution_json": dist} for name, (value, dist) in params.items()])
        for kind, table in (("user", USER), ("system", SYSTEM)):
            new = [{"trial_id": trial_id, "key": k, "value_json": v} for k, v in attrs[kind].items()
                   if k not in owned.written[kind]]
            if new:
                self._insert(conn, table, new)
            old = [{"b_trial": trial_id, "b_key": k, "b_json": v} for k, v in attrs[kind].items()
                   if k in owned.written[kind]]
            if old:
                conn.execute(Sql.attr_update[kind], old)
        new_steps = []
        for step, value in steps.items():
            stored, kind_ = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(value)
            if step in owned.written_steps:
                conn.execute(Sql.step_update, {"b_trial": trial_id, "b_step": step, "b_value": stored, "b_type": kind_})
            else:
                new_steps.append({"trial_id": trial_id, "step": step, "intermediate_value": stored,
                                  "intermediate_value_type": kind_})
        if new_steps:
            self._insert(conn, STEPS, new_steps)
        return params, attrs, steps

    def _insert(self, conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        """INSERT rows; on SQLite straight through the driver (a tenth of SQLAlchemy's cost per call)."""
        if not self._sqlite:
            conn.execute(Sql.insert[table.name], rows)
            return
        columns = list(rows[0])
        _driver(conn).executemany(f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                        [tuple(_raw_value(row[c]) for c in columns) for row in rows])

    def _flushed(self, owned: _Owned, done: tuple[Any, ...] | None) -> None:
        """After a commit: forget what was written (unless it changed meanwhile)."""
        owned.last_flush = time.monotonic()
        if done is None:  # lost to another worker: nothing of it may be written any more
            if owned.lost:
                owned.params.clear()
                owned.steps.clear()
                owned.attrs = {"user": {}, "system": {}}
            return
        params, attrs, steps = done
        for name in params:
            owned.params.pop(name, None)
        for kind in attrs:
            for key, text in attrs[kind].items():
                owned.written[kind].add(key)
                if owned.attrs[kind].get(key) == text:
                    del owned.attrs[kind][key]
        for step, value in steps.items():
            owned.written_steps.add(step)
            if owned.steps.get(step) == value:
                del owned.steps[step]

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
                        updated = _driver(conn).execute(_FINISH_SQLITE, (state.name, _raw_value(change["b_when"]),
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
                    owned = self._owned[trial_id] = _Owned(study_id, trial, beat_written=False)
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

    def _load_one(self, trial_id: int) -> FrozenTrial:
        with self._read() as conn:
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
            if owned is not None and time.monotonic() - owned.last_beat < 1.0 and not owned.dirty():
                return  # written with the trial a moment ago
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
        with self._lock:
            mine = set(self._owned)
        return [t for t in self._backend._get_stale_trial_ids(study_id) if t not in mine]

    def get_heartbeat_interval(self) -> int | None:
        return self._backend.get_heartbeat_interval()

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self._backend.get_heartbeat_stale_trial_callback()

    # -- flushing --------------------------------------------------------------------------------

    def flush(self) -> None:
        """Write every running trial's buffered data and the deferred notes now."""
        with self._lock:
            for owned in list(self._owned.values()):
                if owned.dirty() and not owned.lost:
                    self._flush_if_due(owned, force=True)
            self._flush_study_attrs()


def _raw_value(value: Any) -> Any:
    """A value as SQLAlchemy binds it in Optuna's SQLite schema: enums by name, times as text."""
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def _driver(conn: sa.Connection) -> Any:
    """The sqlite3 connection under ``conn`` (same transaction)."""
    return conn.connection.dbapi_connection


_CREATE_SQLITE = ("INSERT INTO trials (number, study_id, state, datetime_start) VALUES "
                  "((SELECT count(*) FROM trials WHERE study_id = ?), ?, 'RUNNING', ?) RETURNING trial_id, number")
_FINISH_SQLITE = ("UPDATE trials SET state = ?, datetime_complete = ? "
                  "WHERE trial_id = ? AND state IN ('RUNNING', 'WAITING')")


_LIVE: weakref.WeakSet[FastStorage] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    """The last trial's note (running trials' data is moot: their trials stay RUNNING)."""
    for storage in list(_LIVE):
        try:
            storage._flush_study_attrs()
        except Exception as err:  # noqa: BLE001 - exiting anyway
            _log.warning("could not write the last dashboard notes: %s", err)
