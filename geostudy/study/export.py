"""What a study leaves behind: the summary table, ``best_config.yaml``, ``trials.csv``."""

from __future__ import annotations

import csv
import math
import os
import warnings
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from geostudy.study.spec import StudySpec
from geostudy.study.storage import redact, sqlite_path

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
MIN_TRIALS_FOR_IMPORTANCE = 5


def best_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Single objective: the best trial; several: the Pareto front sorted by the first objective."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return []
    if len(study.directions) == 1:
        return [study.best_trial]
    front = study.best_trials
    sign = 1 if study.directions[0] == optuna.study.StudyDirection.MINIMIZE else -1
    return sorted(front, key=lambda t: sign * t.values[0])


def top_trials(study: optuna.Study, k: int = 5) -> list[FrozenTrial]:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    sign = 1 if study.directions[0] == optuna.study.StudyDirection.MINIMIZE else -1
    return sorted(complete, key=lambda t: sign * t.values[0])[:k]


def importances(study: optuna.Study) -> dict[str, float]:
    """fANOVA importances of the first objective, or {} when there are too few trials."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE or not any(t.params for t in complete):
        return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.importance.get_param_importances(study, target=lambda t: t.values[0])
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}  # e.g. every trial took the same value: nothing to attribute


def write_best_config(study: optuna.Study, spec: StudySpec, path: Path) -> FrozenTrial | None:
    """Write the best trial's full resolved config, re-runnable with ``run.py --config``."""
    best = best_trials(study)
    if not best:
        return None
    trial = best[0]
    config = trial.user_attrs.get("config")
    if config is None:
        return None
    values = ", ".join(f"{m}={v:.6g}" for m, v in zip(spec.metrics, trial.values))
    header = (f"# Best trial #{trial.number} of study '{study.study_name}' ({values}).\n"
              f"# Re-run: python run.py --config {display_path(path)}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return trial


def write_trials_csv(study: optuna.Study, spec: StudySpec, path: Path) -> int:
    """One row per trial: number, state, values, params, duration, failure reason."""
    trials = study.get_trials(deepcopy=False)
    params = sorted({p for t in trials for p in t.params})
    header = ["number", "state", *spec.metrics, *[f"params_{p}" for p in params], "duration_s", "fail_reason"]
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for t in trials:
            values = list(t.values) if t.values else [None] * len(spec.metrics)
            duration = t.duration.total_seconds() if t.duration else None
            writer.writerow([t.number, t.state.name, *values, *[t.params.get(p) for p in params], duration,
                             t.user_attrs.get("fail_reason", "")])
    return len(trials)


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (shorter commands)."""
    try:
        return os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd()) else str(path)
    except ValueError:
        return str(path)


def dashboard_command(storage_url: str, artifacts: Path) -> str:
    db = sqlite_path(storage_url)
    url = f"sqlite:///{display_path(db)}" if db is not None else redact(storage_url)
    return f"optuna-dashboard {url} --artifact-dir {display_path(artifacts)}"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def summary_text(study: optuna.Study, spec: StudySpec) -> str:
    """The human summary printed at the end of a study."""
    trials = study.get_trials(deepcopy=False)
    counts = {s: sum(t.state == s for t in trials) for s in TrialState}
    lines = [f"Study '{study.study_name}' (learner {spec.learner.name}): {len(trials)} trials — "
             f"{counts[TrialState.COMPLETE]} complete, {counts[TrialState.PRUNED]} pruned, "
             f"{counts[TrialState.FAIL]} failed, {counts[TrialState.RUNNING]} running"]
    objective = ", ".join(f"{m} ({d})" for m, d in zip(spec.metrics, spec.directions))
    lines.append(f"Objective: {objective}")
    best = best_trials(study)
    if not best:
        lines.append("No trial completed.")
        fails = [t for t in trials if t.state == TrialState.FAIL and "fail_reason" in t.user_attrs]
        if fails:
            lines.append(f"Last failure (trial #{fails[-1].number}): {fails[-1].user_attrs['fail_reason']}")
        return "\n".join(lines)
    title = f"Pareto front ({len(best)} trials)" if spec.multi_objective else "Best trial"
    lines.append(f"{title}:")
    for t in best[:10]:
        values = "  ".join(f"{m}={_fmt(v)}" for m, v in zip(spec.metrics, t.values))
        params = "  ".join(f"{k}={_fmt(v)}" for k, v in t.params.items())
        lines.append(f"  #{t.number}: {values}   {params}")
    top = top_trials(study)
    if len(top) > 1:
        names = sorted({p for t in top for p in t.params})
        header = ["#", spec.metrics[0], *names]
        rows = [[str(t.number), _fmt(t.values[0]), *[_fmt(t.params.get(n, "-")) for n in names]] for t in top]
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        lines.append(f"Top {len(top)} by {spec.metrics[0]}:")
        lines.append("  " + "  ".join(h.ljust(w) for h, w in zip(header, widths)))
        lines.extend("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)
    imp = importances(study)
    if imp:
        lines.append(f"Parameter importances for {spec.metrics[0]} (fANOVA):")
        lines.extend(f"  {name:<32} {value:.3f}" for name, value in imp.items())
    return "\n".join(lines)
