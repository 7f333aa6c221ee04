"""Trial notes for optuna-dashboard: what a trial changed, what it scored, and why it ended.

A note is markdown stored the way optuna-dashboard stores the notes people type in its UI (study
system attributes ``dashboard:<trial_id>:note_ver`` and ``dashboard:<trial_id>:note_str:<i>``), so
the dashboard shows it on the trial's page. :class:`NoteWriter` writes it from a study callback.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from optuna_dashboard._note import SYSTEM_ATTR_MAX_LENGTH, note_str_key_prefix, note_ver_key

from geostudy.study.spec import StudySpec

ARTIFACT_ATTR_PREFIX = "artifacts:"  # optuna.artifacts stores each artifact's meta under this key
MAX_VALUE_CHARS = 60
MAX_REASON_CHARS = 600

_log = logging.getLogger("optuna")


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> ``{"a.b.c": leaf}``; lists and scalars are leaves."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()  # stands for a key one config has and the other lacks


def config_diff(base: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose value differs between two configs: key -> (base value, config value).

    A key missing on one side shows as :data:`MISSING` there.
    """
    flat_base, flat = flatten(base), flatten(config)
    keys = list(flat) + [k for k in flat_base if k not in flat]
    pairs = {k: (flat_base.get(k, MISSING), flat.get(k, MISSING)) for k in keys}
    return {k: (was, now) for k, (was, now) in pairs.items() if was is MISSING or now is MISSING or was != now}


def _fmt(value: Any) -> str:
    """A value for a markdown table cell: short, one line, no pipes."""
    if value is MISSING:
        return "—"
    if value is None:
        return "null"
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, float):
        text = f"{value:.6g}" if math.isfinite(value) else str(value)
    elif isinstance(value, (list, dict)):
        text = json.dumps(value, default=str)
    else:
        text = str(value)
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def trial_artifacts(trial: FrozenTrial) -> list[dict[str, str]]:
    """The artifact metas (``artifact_id``, ``filename``, ``mimetype``) stored on a trial."""
    metas = []
    for key, value in trial.system_attrs.items():
        if key.startswith(ARTIFACT_ATTR_PREFIX):
            try:
                metas.append(json.loads(value) if isinstance(value, str) else dict(value))
            except (TypeError, ValueError):
                continue
    return sorted(metas, key=lambda m: str(m.get("filename", "")))


def ending(trial: FrozenTrial) -> str:
    """Why a trial ended, in a few words: complete, pruned at step k, failed with the error."""
    if trial.state == TrialState.COMPLETE:
        return "complete"
    if trial.state == TrialState.PRUNED:
        step = trial.user_attrs.get("pruned_at_step", trial.last_step)
        return f"pruned at step {step}" if step is not None else "pruned"
    if trial.state == TrialState.FAIL:
        reason = trial.user_attrs.get("fail_reason")
        if not reason:
            return "failed (no reason stored: the worker was interrupted or died)"
        reason = " ".join(str(reason).split())
        if len(reason) > MAX_REASON_CHARS:
            reason = reason[: MAX_REASON_CHARS - 1] + "…"
        return f"failed: {reason}"
    return trial.state.name.lower()


def trial_note(trial: FrozenTrial, spec: StudySpec, *, study_id: int | None = None) -> str:
    """The markdown note of a finished trial.

    Args:
        trial: The finished trial (complete, pruned or failed).
        spec: The study it belongs to (base config, metrics, search space).
        study_id: The study's storage id; with it, artifacts link to the dashboard's artifact URL.
    """
    lines = [f"### Trial {trial.number}: {ending(trial)}", ""]
    if trial.duration is not None:
        lines += [f"Ran {trial.duration.total_seconds():.1f} s.", ""]

    # A pruned trial's value is only its last intermediate value: shown as such below, not as a metric.
    complete = trial.state == TrialState.COMPLETE
    objective = dict(zip(spec.metrics, trial.values)) if complete and trial.values else {}
    metrics: dict[str, Any] = dict(trial.user_attrs.get("metrics") or {})
    for name, value in objective.items():
        metrics.setdefault(name, value)
    if metrics:
        # Learners return NaN for what a run did not compute (test metrics outside a final run):
        # counted, not listed, so the note stays readable (and one storage write).
        shown = {k: v for k, v in metrics.items() if k in spec.metrics or not _is_nan(v)}
        lines += ["**Metrics**", "", "| metric | value |", "|---|---|"]
        lines += [f"| {'**' + name + '**' if name in spec.metrics else name} | {_fmt(value)} |"
                  for name, value in shown.items()]
        if len(shown) < len(metrics):
            lines += ["", f"{len(metrics) - len(shown)} more metrics are NaN (not computed in this run)."]
        lines.append("")
    elif trial.intermediate_values:
        step = max(trial.intermediate_values)
        lines += [f"Last reported {spec.metrics[0]}: {_fmt(trial.intermediate_values[step])} at step {step}.", ""]

    config = trial.user_attrs.get("config")
    if isinstance(config, Mapping):
        diff = config_diff(spec.base_config, config)
        source = spec.config_file.name
        if diff:
            lines += [f"**Config that differs from the base** (`{source}`)", "",
                      "| key | base | this trial | from |", "|---|---|---|---|"]
            # Searched parameters first (in suggestion order), then the study's fixed `set:` values.
            order = {k: i for i, k in enumerate(trial.params)}
            for key in sorted(diff, key=lambda k: (order.get(k, len(order)), k)):
                was, now = diff[key]
                origin = "space" if key in trial.params else ("set" if key in spec.fixed else "")
                lines.append(f"| `{key}` | {_fmt(was)} | {_fmt(now)} | {origin} |")
        else:
            lines.append(f"Config: the base config (`{source}`) unchanged.")
        lines.append("")
    else:
        lines += ["No resolved config stored (the trial failed before its parameters were set).", ""]

    artifacts = trial_artifacts(trial)
    if artifacts:
        lines += ["**Artifacts**", ""]
        for meta in artifacts:
            name = _fmt(meta.get("filename", meta.get("artifact_id", "?")))
            kind = meta.get("mimetype", "")
            if study_id is not None and meta.get("artifact_id"):
                url = f"/artifacts/{study_id}/{trial._trial_id}/{meta['artifact_id']}"
                lines.append(f"- [{name}]({url}) ({kind})")
            else:
                lines.append(f"- {name} ({kind})")
    else:
        lines.append("No artifacts.")
    return "\n".join(lines).rstrip() + "\n"


def write_trial_note(study: optuna.Study, trial: FrozenTrial, body: str) -> None:
    """Store ``body`` as the trial's dashboard note.

    ``optuna_dashboard.save_note`` needs a live ``Trial`` and re-reads every study system attribute
    (twice), which grows with the study; a finished trial's first note needs no read: the version
    and the text chunk(s) are written directly, in the dashboard's format (two writes for a note
    under ~2 kB).
    """
    storage, study_id, trial_id = study._storage, study._study_id, trial._trial_id
    storage.set_study_system_attr(study_id, note_ver_key(trial_id), 1)
    prefix = note_str_key_prefix(trial_id)
    for i in range(max(1, math.ceil(len(body) / SYSTEM_ATTR_MAX_LENGTH))):
        chunk = body[i * SYSTEM_ATTR_MAX_LENGTH:(i + 1) * SYSTEM_ATTR_MAX_LENGTH]
        storage.set_study_system_attr(study_id, f"{prefix}{i}", chunk)


class NoteWriter:
    """Study callback: writes each finished trial's note (config diff, metrics, ending, artifacts).

    A note that cannot be written is logged and skipped: a note never stops a study.

    Args:
        spec: The study's validated spec (its base config is what the diff is taken against).
    """

    def __init__(self, spec: StudySpec) -> None:
        self.spec = spec

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state not in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
            return
        try:
            write_trial_note(study, trial, trial_note(trial, self.spec, study_id=study._study_id))
        except Exception as err:  # noqa: BLE001 - a note is a convenience, the study must go on
            _log.warning("could not write the note of trial %d: %s: %s", trial.number, type(err).__name__, err)


STALE_REASON = "worker stopped sending heartbeats (killed or hung); failed by another worker's heartbeat check"


class StaleTrialNote:
    """Stores why another worker's trial was failed here (``fail_reason``) and writes its note.

    Used as the heartbeat stale-trial callback (with :data:`STALE_REASON`) and for trials whose
    worker died (:mod:`geostudy.study.workers`, with the reason given): Optuna runs no study
    callback for such a trial, so without this it would be a FAIL without a word.
    """

    def __init__(self, spec: StudySpec) -> None:
        self.note = NoteWriter(spec)

    def __call__(self, study: optuna.Study, trial: FrozenTrial, reason: str = STALE_REASON) -> None:
        try:
            trial = with_fail_reason(study, trial, reason)
        except Exception as err:  # noqa: BLE001 - the study goes on without the reason
            _log.warning("could not store why trial %d failed: %s: %s", trial.number, type(err).__name__, err)
        self.note(study, trial)


def with_fail_reason(study: optuna.Study, trial: FrozenTrial, reason: str) -> FrozenTrial:
    """``trial`` with ``fail_reason`` stored, unless it already has one.

    Optuna refuses user attributes on a finished trial, so this writes through geostudy's storage
    (other storages: nothing is stored). Returns a copy that carries the reason: the trial may be
    shared with the storage's readers, or belong to another worker and not yet be refreshed here.
    """
    set_attr = getattr(study._storage, "set_finished_trial_user_attr", None)
    if set_attr is None or "fail_reason" in trial.user_attrs:
        return trial
    set_attr(trial._trial_id, "fail_reason", reason)
    fresh = copy.copy(trial)
    fresh.user_attrs = {**trial.user_attrs, "fail_reason": reason}
    return fresh
