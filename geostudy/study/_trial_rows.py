"""The SQL under :class:`~geostudy.study.fast_storage.FastStorage`: Optuna 5.0's tables, statements
built once, whole trials read in a few queries, and the schema stamp of a fresh database."""

from __future__ import annotations

import functools
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from optuna import distributions as dists
from optuna.exceptions import StorageInternalError
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.dialects import postgresql, sqlite

try:  # optuna is pinned to 5.0.*; its ORM models are internal, so fail loudly if they move
    from optuna.storages._rdb import models
except ImportError as err:  # pragma: no cover
    raise ImportError(f"geostudy's FastStorage needs optuna 5.0's RDB models ({err}); install optuna==5.0.*") from err

TRIALS = models.TrialModel.__table__
PARAMS = models.TrialParamModel.__table__
VALUES = models.TrialValueModel.__table__
USER = models.TrialUserAttributeModel.__table__
SYSTEM = models.TrialSystemAttributeModel.__table__
STEPS = models.TrialIntermediateValueModel.__table__
BEATS = models.TrialHeartbeatModel.__table__
STUDY_ATTRS = {"user": models.StudyUserAttributeModel.__table__, "system": models.StudySystemAttributeModel.__table__}
MAX_KEY = models.MAX_INDEXED_STRING_LENGTH
CHUNK = 500  # ids per IN (...) list
_B = sa.bindparam


class Sql:
    """Statements built once: SQLAlchemy then only looks their compiled form up (no rebuilding per call)."""

    count = sa.select(sa.func.count()).select_from(TRIALS).where(TRIALS.c.study_id == _B("b_study"))
    insert_trial = TRIALS.insert().values(study_id=_B("b_study"), state=TrialState.RUNNING,
                                           datetime_start=_B("b_start"))
    # Number = trials of the study so far, in the INSERT itself (SQLite's write lock / the study row lock held).
    insert_numbered = insert_trial.values(number=count.scalar_subquery()).returning(TRIALS.c.trial_id,
                                                                                    TRIALS.c.number)
    state = sa.select(TRIALS.c.state).where(TRIALS.c.trial_id == _B("b_trial"))
    study_of = sa.select(TRIALS.c.study_id).where(TRIALS.c.trial_id == _B("b_trial"))
    start = TRIALS.update().where((TRIALS.c.trial_id == _B("b_trial")) & (TRIALS.c.state == TrialState.WAITING)
                                   ).values(state=TrialState.RUNNING, datetime_start=_B("b_when"))
    finish = TRIALS.update().where(
        (TRIALS.c.trial_id == _B("b_trial")) & TRIALS.c.state.in_([TrialState.RUNNING, TrialState.WAITING])
    ).values(state=_B("b_state"), datetime_complete=_B("b_when"))
    delete_values = VALUES.delete().where(VALUES.c.trial_id == _B("b_trial"))
    beat = BEATS.update().where(BEATS.c.trial_id == _B("b_trial")).values(heartbeat=sa.func.now())
    first_beat = BEATS.insert().values(trial_id=_B("b_trial"), heartbeat=sa.func.now())
    seen = sa.select(TRIALS.c.trial_id, TRIALS.c.state).where(
        (TRIALS.c.study_id == _B("b_study")) & (TRIALS.c.trial_id > _B("b_last")))
    seen_or = sa.select(TRIALS.c.trial_id, TRIALS.c.state).where(
        (TRIALS.c.study_id == _B("b_study"))
        & ((TRIALS.c.trial_id > _B("b_last")) | TRIALS.c.trial_id.in_(_B("b_ids", expanding=True))))
    rows = {name: sa.select(table).where(table.c.trial_id.in_(_B("b_ids", expanding=True))).order_by(order)
            for name, table, order in (("trials", TRIALS, TRIALS.c.trial_id), ("params", PARAMS, PARAMS.c.param_id),
                                       ("values", VALUES, VALUES.c.objective),
                                       ("user", USER, USER.c.trial_user_attribute_id),
                                       ("system", SYSTEM, SYSTEM.c.trial_system_attribute_id),
                                       ("steps", STEPS, STEPS.c.step))}
    attr_update = {kind: t.update().where((t.c.trial_id == _B("b_trial")) & (t.c.key == _B("b_key")))
                   .values(value_json=_B("b_json")) for kind, t in (("user", USER), ("system", SYSTEM))}
    step_update = STEPS.update().where((STEPS.c.trial_id == _B("b_trial")) & (STEPS.c.step == _B("b_step"))).values(
        intermediate_value=_B("b_value"), intermediate_value_type=_B("b_type"))
    insert = {t.name: t.insert() for t in (PARAMS, VALUES, USER, SYSTEM, STEPS, *STUDY_ATTRS.values())}
    upsert = {}
    for _dialect, _insert in (("sqlite", sqlite.insert), ("postgresql", postgresql.insert)):
        for _kind, _table in STUDY_ATTRS.items():
            _stmt = _insert(_table)
            upsert[_dialect, _kind] = _stmt.on_conflict_do_update(index_elements=[_table.c.study_id, _table.c.key],
                                                                  set_={"value_json": _stmt.excluded.value_json})
    study_attr_update = {kind: t.update().where((t.c.study_id == _B("b_study")) & (t.c.key == _B("b_key")))
                         .values(value_json=_B("b_json")) for kind, t in STUDY_ATTRS.items()}


def to_db(moment: datetime) -> datetime:
    """Local naive time -> the naive UTC Optuna's schema stores."""
    return moment.astimezone(UTC).replace(tzinfo=None)


def from_db(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.replace(tzinfo=UTC).astimezone().replace(tzinfo=None)


def check_key(key: str) -> None:
    if len(key) > MAX_KEY:
        raise StorageInternalError(f"key must have at most {MAX_KEY} characters, but got {len(key)}: {key[:40]!r}...")



def load_trials(conn: sa.Connection, trial_ids: list[int]) -> list[FrozenTrial]:
    """Whole trials by id, in a few queries per chunk of ids."""
    out: list[FrozenTrial] = []
    for i in range(0, len(trial_ids), CHUNK):
        ids = trial_ids[i:i + CHUNK]
        parts: dict[str, dict[int, list[Any]]] = {}
        for name, query in Sql.rows.items():
            grouped: dict[int, list[Any]] = {}
            for r in conn.execute(query, {"b_ids": ids}):
                grouped.setdefault(r.trial_id, []).append(r)
            parts[name] = grouped
        rows = {trial_id: found[0] for trial_id, found in parts["trials"].items()}
        for trial_id in ids:
            if trial_id not in rows:
                continue
            row = rows[trial_id]
            params = {p.param_name: (p.param_value, dists.json_to_distribution(p.distribution_json))
                      for p in parts["params"].get(trial_id, [])}
            values = [models.TrialValueModel.stored_repr_to_value(v.value, v.value_type)
                      for v in parts["values"].get(trial_id, [])]
            out.append(FrozenTrial(
                number=row.number, state=row.state, value=None, values=values or None,
                datetime_start=from_db(row.datetime_start), datetime_complete=from_db(row.datetime_complete),
                params={k: d.to_external_repr(v) for k, (v, d) in params.items()},
                distributions={k: d for k, (_, d) in params.items()},
                user_attrs={a.key: json.loads(a.value_json) for a in parts["user"].get(trial_id, [])},
                system_attrs={a.key: json.loads(a.value_json) for a in parts["system"].get(trial_id, [])},
                intermediate_values={s.step: models.TrialIntermediateValueModel.stored_repr_to_intermediate_value(
                    s.intermediate_value, s.intermediate_value_type) for s in parts["steps"].get(trial_id, [])},
                trial_id=trial_id))
    return out


ALEMBIC = sa.Table("alembic_version", sa.MetaData(), sa.Column("version_num", sa.String(32), nullable=False),
                    sa.PrimaryKeyConstraint("version_num", name="alembic_version_pkc"))


@functools.cache
def alembic_head() -> str | None:
    """The newest schema revision of the installed Optuna, read from its migration scripts' text."""
    revisions, parents = set(), set()
    for script in (Path(models.__file__).parent / "alembic" / "versions").glob("*.py"):
        text = script.read_text(encoding="utf-8")
        rev = re.search(r"^revision\s*=\s*[\"']([^\"']+)[\"']", text, re.M)
        down = re.search(r"^down_revision\s*=\s*(None|[\"']([^\"']+)[\"'])", text, re.M)
        if rev is None or down is None:
            return None
        revisions.add(rev.group(1))
        if down.group(2):
            parents.add(down.group(2))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def stamp_if_new(engine: sa.Engine, head: str) -> None:
    """On a database without Optuna's tables: create them and record ``head`` as alembic would."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # two workers creating the same file: one at a time
        inspector = sa.inspect(conn)
        if inspector.has_table(TRIALS.name) or inspector.has_table(ALEMBIC.name):
            return
        models.BaseModel.metadata.create_all(conn)
        ALEMBIC.create(conn)
        conn.execute(ALEMBIC.insert().values(version_num=head))
        conn.commit()


def read_alembic_version(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return conn.execute(sa.select(ALEMBIC.c.version_num)).scalar()
