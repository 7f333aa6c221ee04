"""The write-behind part of :class:`~geostudy.study.fast_storage.FastStorage`: what a trial this
process runs sets (params, attributes, reports) is kept in memory and written in few transactions,
and optuna-dashboard notes are deferred to ride along with the next write."""

from __future__ import annotations

import copy
import json
import re
import threading
import time
from typing import Any

import sqlalchemy as sa
from optuna import distributions as dists
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial

from geostudy.study._rdb_session import RdbSession, driver
from geostudy.study._trial_cache import OwnedTrial, StudyCache
from geostudy.study._trial_rows import PARAMS, STEPS, STUDY_ATTRS, SYSTEM, USER, Sql, check_key, models
from geostudy.study.workers import WORKER_KEY, this_worker

# optuna-dashboard's keys of a trial's note (``note_ver_key``, ``note_str_key_prefix``)
_DEFERRED_KEY = re.compile(r"dashboard:\d+:note_(ver|str:\d+)")
# TPESampler's (constant liar) record of a running trial's relative params (``_RELATIVE_PARAMS_KEY``):
# other workers read it only to "lie" about running trials, and the params it repeats are buffered too
# (flushed after ``flush_interval``, with a heartbeat, or at the finish), so it waits with them instead
# of costing a transaction of its own per trial.
_BUFFERED_SYSTEM_PREFIX = "tpe:relative_params:"


class WriteBehind(RdbSession):
    """Buffered writes of owned trials and deferred study attributes (the storage's state is set up
    by :class:`~geostudy.study.fast_storage.FastStorage`)."""

    _backend: RDBStorage
    _lock: threading.RLock
    _owned: dict[int, OwnedTrial]
    _where: dict[int, tuple[int, int]]
    _flush_s: float | None
    _study_attrs: dict[tuple[int, str], str]  # deferred dashboard notes: (study, key) -> json

    def _study(self, study_id: int) -> StudyCache:
        raise NotImplementedError

    def _add(self, study_id: int, trial: FrozenTrial) -> None:
        raise NotImplementedError

    def _mark_changed(self, trial_id: int) -> None:
        raise NotImplementedError

    def get_study_directions(self, study_id: int) -> Any:
        raise NotImplementedError

    # -- deferred study attributes (dashboard notes) -------------------------------------------

    def _has_deferred(self) -> bool:
        return bool(self._study_attrs)

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
            driver(conn).executemany(
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


    # -- buffered writes of owned trials -------------------------------------------------------

    def _owner(self, trial_id: int) -> OwnedTrial | None:
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

    def _record_worker(self, conn: sa.Connection, trial_id: int, number: int, replace: bool) -> Any:
        """Store which process runs trial ``number`` (``geostudy:worker``), in the transaction that
        makes it RUNNING, so that a worker on this machine can tell at once that it died (see
        :mod:`geostudy.study.workers`); return the record. ``replace``: a popped trial may carry the
        record of the trial it retries."""
        text = json.dumps(this_worker(number))
        row = {"b_trial": trial_id, "b_key": WORKER_KEY, "b_json": text}
        if not (replace and conn.execute(Sql.attr_update["system"], row).rowcount):
            self._insert(conn, SYSTEM, [{"trial_id": trial_id, "key": WORKER_KEY, "value_json": text}])
        return json.loads(text)

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

    def _flush_if_due(self, owned: OwnedTrial, force: bool = False) -> None:
        # A dead worker's trial is re-run with its params (workers.py, or the heartbeat): so they are
        # written as soon as the objective sets anything after suggesting them (one commit per trial).
        early = bool(owned.params)
        if force or early or (self._flush_s is not None and time.monotonic() - owned.last_flush >= self._flush_s):
            done = None
            with self._tx() as conn:
                if self._alive(conn, owned):
                    done = self._write_pending(conn, owned)
            self._flushed(owned, done)

    def _alive(self, conn: sa.Connection, owned: OwnedTrial) -> bool:
        state = conn.execute(Sql.state, {"b_trial": owned.trial._trial_id}).scalar()
        if state is not None and state.is_finished():
            owned.lost = True  # failed by another worker (stale heartbeat): nothing more may be written
        return not owned.lost

    def _write_pending(self, conn: sa.Connection, owned: OwnedTrial) -> tuple[Any, ...]:
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

    def _flushed(self, owned: OwnedTrial, done: tuple[Any, ...] | None) -> None:
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


    def flush(self) -> None:
        """Write every running trial's buffered data and the deferred notes now."""
        with self._lock:
            for owned in list(self._owned.values()):
                if owned.dirty() and not owned.lost:
                    self._flush_if_due(owned, force=True)
            self._flush_study_attrs()

