"""Storage URLs: the per-study SQLite default, SQLite tuning, PostgreSQL, and password hiding."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial
from sqlalchemy.engine import make_url

from geostudy.errors import ConfigError

# A trial whose worker died (found by a heartbeat check or by workers.py) is re-run this many times at most.
MAX_RETRY = 3
# Heartbeats by default on server databases, the ones workers on several machines share: a worker on
# another machine can only be known dead by its silence. A beat is one UPDATE every 30 s per worker
# (and Optuna looks for stale trials, one query, before each trial); a dead worker's trial is failed
# and re-run 120 s after its last beat, long enough that a busy or briefly stalled worker is not taken
# for dead. SQLite's workers share one machine, where workers.py sees a dead worker at once: none there.
SERVER_HEARTBEAT_INTERVAL = 30
SERVER_GRACE_PERIOD = 120

SUPPORTED_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg", "postgresql+psycopg2", "mysql", "mysql+pymysql")


def default_storage_url(out_dir: Path, study_name: str) -> str:
    """``sqlite:///<out>/<study>/<study>.db`` with an absolute path."""
    return f"sqlite:///{(out_dir / study_name / f'{study_name}.db').resolve()}"


def redact(url: str) -> str:
    """The URL with any password replaced by ``***``: safe to print and log."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparseable URL may still hold a secret: print none of it
        return "<storage URL>"


def check_url(url: str) -> None:
    """Reject a malformed storage URL before anything connects."""
    try:
        parsed = make_url(url)
    except Exception:
        raise ConfigError(f"not a database URL: {redact(url)!r}; expected e.g. sqlite:///path.db or "
                          "postgresql+psycopg://user@host/db", file="--storage") from None
    if parsed.drivername not in SUPPORTED_SCHEMES:
        raise ConfigError(f"unsupported database {parsed.drivername!r}; allowed: {', '.join(SUPPORTED_SCHEMES)}",
                          file="--storage")
    if parsed.drivername == "sqlite" and parsed.database and parsed.database != ":memory:":
        parent = Path(parsed.database).parent
        if not parent.is_dir():
            raise ConfigError(f"folder {parent} does not exist", file="--storage")


def heartbeat_settings(url: str, interval: int | None, grace: int | None) -> tuple[int | None, int | None]:
    """The heartbeat interval and grace period a study runs with: the study file's, else the defaults
    (:data:`SERVER_HEARTBEAT_INTERVAL` and :data:`SERVER_GRACE_PERIOD` on a server database, none on SQLite)."""
    if interval is None and not url.startswith("sqlite"):
        interval, grace = SERVER_HEARTBEAT_INTERVAL, grace or SERVER_GRACE_PERIOD
    return interval, grace


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.drivername == "sqlite" and parsed.database and parsed.database != ":memory:":
        return Path(parsed.database)
    return None


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers (the dashboard, other workers) run while a worker writes; NORMAL sync is
    # durable across process crashes in WAL mode (only an OS crash may lose the last commit).
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=60000")
    # Checkpoints (copying the WAL into the database file, with two fsyncs) every 10000 pages (~40 MB
    # of WAL, some 2000 trials) instead of SQLite's 1000: a trial rewrites the same few pages (the
    # trials table's last page, its indexes, the notes), which a checkpoint then copies once, not ten
    # times; at 1000 trials this saved ~1 ms per trial. Durability is the WAL's, unchanged; closing
    # the storage checkpoints what is left, so the file is complete when a command ends.
    cursor.execute("PRAGMA wal_autocheckpoint=10000")
    cursor.close()


def open_storage(url: str, *, heartbeat_interval: int | None = None, grace_period: int | None = None,
                 retry_stale: int | None = MAX_RETRY,
                 on_stale: Callable[[optuna.Study, FrozenTrial], None] | None = None) -> optuna.storages.BaseStorage:
    """Open (creating if needed) an RDB storage, behind geostudy's write-behind trial cache.

    SQLite gets WAL, a long busy timeout and NORMAL sync so several local workers share one file
    without "database is locked". With a heartbeat, a trial whose worker died is marked FAIL by
    the others and re-run with the same parameters (``RetryHeartbeatStaleTrialCallback``). The
    :class:`~geostudy.study.fast_storage.FastStorage` in front writes each trial in one
    transaction when it finishes and serves reads from memory (design in its module). ``on_stale``
    is called after the retry with each trial the heartbeat check failed (to store why).
    """
    from geostudy.study.fast_storage import FastStorage

    check_url(url)
    engine_kwargs: dict[str, Any] = {}
    is_sqlite = url.startswith("sqlite")
    if is_sqlite:
        engine_kwargs["connect_args"] = {"timeout": 60}
        if not sqlalchemy.event.contains(sqlalchemy.engine.Engine, "connect", _sqlite_listener):
            sqlalchemy.event.listen(sqlalchemy.engine.Engine, "connect", _sqlite_listener)
    else:
        engine_kwargs["pool_pre_ping"] = True
    callback: Callable[[optuna.Study, FrozenTrial], None] | None = None
    if heartbeat_interval is not None:
        callback = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=retry_stale)
        if on_stale is not None:
            # The retry first, so the re-run trial does not inherit what on_stale stores on the failed one.
            callback = TrialCallbacks([callback, on_stale])
    try:
        return FastStorage.open(
            url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
            heartbeat_stale_trial_callback=callback,
        )
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.ArgumentError, ImportError) as err:
        text = " ".join(str(getattr(err, "orig", err) or err).split())[:300]
        raise ConfigError(f"cannot open storage {redact(url)}: {text}", file="--storage") from None


def _sqlite_listener(dbapi_connection: Any, record: Any) -> None:
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        _tune_sqlite(dbapi_connection, record)


class TrialCallbacks:
    """Several trial callbacks behind one, called in order (Optuna's stale-trial hook takes one; the
    runner's trial-end callbacks are another such list)."""

    def __init__(self, callbacks: list[Callable[[optuna.Study, FrozenTrial], None]]) -> None:
        self.callbacks = callbacks

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        for callback in self.callbacks:
            callback(study, trial)
