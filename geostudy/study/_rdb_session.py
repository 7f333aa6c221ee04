"""Connections and transactions of :class:`~geostudy.study.fast_storage.FastStorage`.

On SQLite every write transaction starts with ``BEGIN IMMEDIATE``, so two workers never both read
and then race to write (the "database is locked" of a deferred transaction upgrade); elsewhere the
study row is locked (``FOR UPDATE``) while a trial number is assigned, as Optuna does. On SQLite
the main thread keeps one connection, and the per-trial INSERTs and the finishing UPDATE go straight
to the sqlite3 driver (SQLAlchemy's per-statement cost was most of what was left).
"""

from __future__ import annotations

import enum
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from optuna.exceptions import StorageInternalError

from geostudy.study._trial_rows import Sql, models

CREATE_SQLITE = ("INSERT INTO trials (number, study_id, state, datetime_start) VALUES "
                 "((SELECT count(*) FROM trials WHERE study_id = ?), ?, 'RUNNING', ?) RETURNING trial_id, number")
FINISH_SQLITE = ("UPDATE trials SET state = ?, datetime_complete = ? "
                 "WHERE trial_id = ? AND state IN ('RUNNING', 'WAITING')")


class RdbSession:
    """The database side: one kept connection on SQLite's main thread, write transactions, reads,
    and INSERTs that skip SQLAlchemy on SQLite. Set up by :meth:`_init_session`."""

    _engine: sa.Engine

    def _init_session(self, engine: sa.Engine) -> None:
        self._engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        self._returning = bool(engine.dialect.insert_returning) and engine.dialect.name != "mysql"
        self._conn: sa.Connection | None = None
        self._conn_pid = -1
        self._conn_busy = False

    def _has_deferred(self) -> bool:
        """Whether writes wait for the next transaction (the write-behind layer's notes)."""
        return False

    def _write_study_attrs(self, conn: sa.Connection) -> None:
        """Write what is deferred in ``conn``'s transaction."""

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
                    driver(conn).execute("BEGIN IMMEDIATE")
                elif lock_study is not None:
                    study = models.StudyModel.__table__
                    conn.execute(sa.select(study.c.study_id).where(study.c.study_id == lock_study).with_for_update())
                if deferred and self._has_deferred():
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


    def _insert(self, conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        """INSERT rows; on SQLite straight through the driver (a tenth of SQLAlchemy's cost per call)."""
        if not self._sqlite:
            conn.execute(Sql.insert[table.name], rows)
            return
        columns = list(rows[0])
        driver(conn).executemany(f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                        [tuple(raw_value(row[c]) for c in columns) for row in rows])



def raw_value(value: Any) -> Any:
    """A value as SQLAlchemy binds it in Optuna's SQLite schema: enums by name, times as text."""
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def driver(conn: sa.Connection) -> Any:
    """The sqlite3 connection under ``conn`` (same transaction)."""
    return conn.connection.dbapi_connection
