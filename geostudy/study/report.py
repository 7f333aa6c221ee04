"""``report.html``: one self-contained page that says which settings won and why.

Plotly figures (plotly.js embedded once, inline: the page works offline and can be mailed), tables
of the best trials and the failures, and the best trial's learner figures embedded as images. Every
section shows what the study allows: a study with no complete trial, no parameters or one
objective still gives a page, with a line saying why a plot is absent.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from geostudy.study.export import MIN_TRIALS_FOR_IMPORTANCE, best_trials, display_path
from geostudy.study.spec import StudySpec

TOP_TRIALS = 10
SLICE_PARAMS = 4
CONTOUR_PARAMS = 3
PARALLEL_PARAMS = 10
EMBED_FILE_BYTES = 2 * 2**20  # non-image artifacts up to this size are embedded as download links
STATE_COLORS = {"COMPLETE": "#1f77b4", "PRUNED": "#d62728", "FAIL": "#7f7f7f", "RUNNING": "#2ca02c"}


@dataclass
class Section:
    """One part of the page: an anchor, a title and its HTML."""

    anchor: str
    title: str
    body: str


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.5g}" if math.isfinite(value) else str(value)
    return str(value)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _note(text: str) -> str:
    return f'<p class="absent">{_esc(text)}</p>'


def _objective(index: int) -> Callable[[FrozenTrial], float]:
    """Optuna's ``target=`` for the index-th objective (plots need one for multi-objective studies)."""
    return lambda trial: trial.values[index]


def _sign(study: optuna.Study, index: int) -> int:
    return 1 if study.directions[index] == StudyDirection.MINIMIZE else -1


class _Figures:
    """Turns plotly figures into page fragments; the first one's script is the only plotly.js."""

    def __init__(self) -> None:
        self.count = 0

    def html(self, figure: Any, height: int = 460) -> str:
        self.count += 1
        figure.update_layout(height=height, margin={"l": 60, "r": 30, "t": 60, "b": 50}, template="plotly_white")
        return figure.to_html(full_html=False, include_plotlyjs=False, div_id=f"plot-{self.count}",
                              config={"displaylogo": False, "responsive": True})

    def attempt(self, make: Callable[[], Any], height: int = 460) -> str:
        """A figure from an Optuna plotting function, or one line saying why it cannot be drawn."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                figure = make()
        except (ValueError, RuntimeError, ZeroDivisionError, KeyError, IndexError) as err:
            return _note(f"Not drawn: {' '.join(str(err).split())[:300]}")
        if not figure.data:
            return _note("Not drawn: nothing to plot for these trials.")
        return self.html(figure, height)


def compute_importances(study: optuna.Study, metrics: Sequence[str]) -> tuple[dict[str, dict[str, float]], str]:
    """fANOVA importances per objective, or ({}, why not)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not any(t.params for t in complete):
        return {}, "The study has no searched parameters."
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        return {}, f"Importances need at least {MIN_TRIALS_FOR_IMPORTANCE} complete trials; the study has {len(complete)}."
    result: dict[str, dict[str, float]] = {}
    for i, metric in enumerate(metrics):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result[metric] = optuna.importance.get_param_importances(study, target=_objective(i))
        except (RuntimeError, ValueError, ZeroDivisionError) as err:
            return {}, f"Importances could not be computed: {' '.join(str(err).split())[:200]}"
    return result, ""


def ranked_params(study: optuna.Study, importance: dict[str, dict[str, float]]) -> list[str]:
    """Parameters, most important first (by the first objective); else in order of first use."""
    if importance:
        first = next(iter(importance.values()))
        return sorted(first, key=lambda p: -first[p])
    seen: dict[str, None] = {}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        for name in trial.params:
            seen.setdefault(name, None)
    return list(seen)


def _importance_figure(importance: dict[str, dict[str, float]]) -> Any:
    import plotly.graph_objects as go

    params = list(next(iter(importance.values())))[::-1]  # most important on top
    figure = go.Figure()
    for metric, values in importance.items():
        figure.add_trace(go.Bar(x=[values.get(p, 0.0) for p in params], y=params, orientation="h", name=metric,
                                text=[f"{values.get(p, 0.0):.2f}" for p in params], textposition="outside"))
    figure.update_layout(title="Hyperparameter importances (fANOVA)", xaxis_title="importance", barmode="group",
                         showlegend=len(importance) > 1)
    return figure


def _intermediate_figure(study: optuna.Study, metric: str) -> Any:
    """Learning curves of every trial that reported, coloured by how it ended; x marks a pruning."""
    import plotly.graph_objects as go

    figure = go.Figure()
    shown: set[str] = set()
    for trial in study.get_trials(deepcopy=False):
        if not trial.intermediate_values:
            continue
        steps = sorted(trial.intermediate_values)
        state = trial.state.name
        symbols = ["circle"] * len(steps)
        if trial.state == TrialState.PRUNED:
            symbols[-1] = "x"
        figure.add_trace(go.Scatter(
            x=steps, y=[trial.intermediate_values[s] for s in steps], mode="lines+markers",
            name=state.lower(), legendgroup=state, showlegend=state not in shown,
            line={"color": STATE_COLORS.get(state, "#9467bd"), "width": 1.5,
                  "dash": "dot" if trial.state == TrialState.PRUNED else "solid"},
            marker={"symbol": symbols, "size": [6] * (len(steps) - 1) + [10]},
            hovertemplate=f"trial #{trial.number} ({state.lower()})<br>step %{{x}}<br>{metric} %{{y}}<extra></extra>"))
        shown.add(state)
    figure.update_layout(title=f"Intermediate values ({metric} per step; x = pruned there)", xaxis_title="step",
                         yaxis_title=metric)
    return figure


def _trial_table(trials: Sequence[FrozenTrial], spec: StudySpec, title_rank: bool = True) -> str:
    params = list(dict.fromkeys(p for t in trials for p in t.params))
    # The learner's other metrics, less those NaN in every row (not computed outside a final run).
    extra = [m for m in dict.fromkeys(m for t in trials for m in (t.user_attrs.get("metrics") or {}))
             if m not in spec.metrics and any(_finite((t.user_attrs.get("metrics") or {}).get(m)) for t in trials)]
    head = (["rank"] if title_rank else []) + ["trial", *spec.metrics, *params, *extra, "duration s"]
    rows = []
    for rank, t in enumerate(trials, 1):
        metrics = t.user_attrs.get("metrics") or {}
        duration = t.duration.total_seconds() if t.duration else None
        cells = ([rank] if title_rank else []) + [f"#{t.number}", *(t.values or [None] * len(spec.metrics)),
                                                    *[t.params.get(p) for p in params],
                                                    *[metrics.get(m) for m in extra], duration]
        rows.append("<tr>" + "".join(f"<td>{_esc(_fmt(c))}</td>" for c in cells) + "</tr>")
    header = "".join(f"<th>{_esc(h)}</th>" for h in head)
    return f'<div class="scroll"><table><thead><tr>{header}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def _failures_table(failed: Sequence[FrozenTrial]) -> str:
    rows = "".join(f"<tr><td>#{t.number}</td><td>{_esc(t.user_attrs.get('fail_reason', 'no reason stored'))}</td>"
                   f"<td>{_esc(', '.join(f'{k}={_fmt(v)}' for k, v in t.params.items()))}</td></tr>" for t in failed)
    return ('<div class="scroll"><table><thead><tr><th>trial</th><th>reason</th><th>params</th></tr></thead>'
            f"<tbody>{rows}</tbody></table></div>")


def _artifact_html(study: optuna.Study, trial: FrozenTrial, artifact_dir: Path, report_dir: Path) -> str:
    """The trial's image artifacts as embedded ``<img>``; other files as embedded downloads or links."""
    try:
        metas = get_all_artifact_meta(trial, storage=study._storage)
    except Exception as err:  # noqa: BLE001 - a storage without artifact support still gets a report
        return _note(f"Artifacts could not be listed: {err}")
    if not metas:
        return _note(f"Trial #{trial.number} has no artifacts: its run returned no figures or files.")
    store = FileSystemArtifactStore(base_path=str(artifact_dir))
    images, files = [], []
    for meta in sorted(metas, key=lambda m: m.filename):
        path = artifact_dir / meta.artifact_id
        name = _esc(meta.filename)
        if not path.is_file():
            files.append(f"<li>{name}: file missing at {_esc(path)} (was the artifact folder moved?)</li>")
            continue
        mimetype = meta.mimetype or "application/octet-stream"
        size = path.stat().st_size
        if mimetype.startswith("image/") or size <= EMBED_FILE_BYTES:
            with store.open_reader(meta.artifact_id) as fh:
                data = base64.b64encode(fh.read()).decode("ascii")
            uri = f"data:{mimetype};base64,{data}"
        else:  # big files (checkpoints) stay in the artifact folder, linked relative to the report
            uri = Path(os.path.relpath(path, report_dir)).as_posix()
        if mimetype.startswith("image/"):
            images.append(f'<figure class="artifact"><img src="{uri}" alt="{name}" title="{name}">'
                          f"<figcaption>{name}</figcaption></figure>")
        else:
            files.append(f'<li><a href="{uri}" download="{name}">{name}</a> ({_esc(mimetype)}, {size / 1024:.0f} kB)</li>')
    body = '<div class="artifacts">' + "".join(images) + "</div>" if images else ""
    if files:
        body += "<p>Files:</p><ul>" + "".join(files) + "</ul>"
    return body


def build_sections(study: optuna.Study, spec: StudySpec, artifact_dir: Path, report_dir: Path) -> list[Section]:
    """Every section of the report, in page order."""
    from optuna import visualization as vis

    figs = _Figures()
    metrics = list(spec.metrics)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    has_params = any(t.params for t in complete)
    multi = len(metrics) > 1
    importance, importance_why = compute_importances(study, metrics)
    params = ranked_params(study, importance)
    none_complete = _note("No trial completed: there is nothing to plot yet.")
    no_params = _note("The study has no searched parameters.")
    sections: list[Section] = []

    best = best_trials(study)
    if best:
        head = (f"Trial #{best[0].number}" if not multi else
                f"Trial #{best[0].number}, the Pareto-optimal trial with the best {metrics[0]} "
                f"({len(best)} on the front)")
        values = ", ".join(f"{m} = {_fmt(v)}" for m, v in zip(metrics, best[0].values))
        body = (f"<p><b>{_esc(head)}</b>: {_esc(values)}</p>"
                + _trial_table(best[:TOP_TRIALS], spec, title_rank=False)
                + "<h3>Its learner figures</h3>" + _artifact_html(study, best[0], artifact_dir, report_dir))
    else:
        body = none_complete
    sections.append(Section("best", "Best trial" if not multi else "Best trials (Pareto front)", body))

    if complete:
        sign = _sign(study, 0)
        top = sorted(complete, key=lambda t: sign * t.values[0])[:TOP_TRIALS]
        body = f"<p>The {len(top)} best complete trials by {_esc(metrics[0])}.</p>" + _trial_table(top, spec)
    else:
        body = none_complete
    sections.append(Section("top", "Top trials", body))

    if complete:
        parts = [figs.attempt(lambda i=i, m=m: vis.plot_optimization_history(  # type: ignore[misc]
            study, target=_objective(i) if multi else None, target_name=m)) for i, m in enumerate(metrics)]
        body = "".join(parts)
    else:
        body = none_complete
    sections.append(Section("history", "Optimisation history", body))

    body = figs.html(_importance_figure(importance), height=max(300, 60 + 40 * len(params))) if importance \
        else _note(importance_why)
    sections.append(Section("importance", "Parameter importances", body))

    if not complete:
        body = none_complete
    elif not has_params:
        body = no_params
    else:
        target = _objective(0) if multi else None
        body = figs.attempt(lambda: vis.plot_parallel_coordinate(study, params=params[:PARALLEL_PARAMS],
                                                                target=target, target_name=metrics[0]))
    sections.append(Section("parallel", "Parallel coordinates", body))

    if not complete:
        body = none_complete
    elif not has_params:
        body = no_params
    else:
        top_params = params[:SLICE_PARAMS]
        target = _objective(0) if multi else None
        lead = (f"<p>The {len(top_params)} most important parameter(s) against {_esc(metrics[0])}.</p>"
                if importance else f"<p>Parameters against {_esc(metrics[0])} (too few trials to rank them).</p>")
        slice_html = figs.attempt(lambda: vis.plot_slice(study, params=top_params, target=target,
                                                         target_name=metrics[0]))
        contour_params = params[:CONTOUR_PARAMS]
        if len(contour_params) < 2:
            contour_html = _note("A contour needs two parameters; the study searches one.")
        elif len(complete) < 2:
            contour_html = _note("A contour needs at least two complete trials.")
        else:
            contour_html = figs.attempt(lambda: vis.plot_contour(study, params=contour_params, target=target,
                                                                 target_name=metrics[0]),
                                        height=460 if len(contour_params) == 2 else 760)
        body = lead + slice_html + contour_html
    sections.append(Section("slice", "Slice and contour of the top parameters", body))

    if any(t.intermediate_values for t in trials):
        body = figs.html(_intermediate_figure(study, metrics[0]))
    elif multi:
        body = _note("No intermediate values: multi-objective studies report no per-step values (Optuna cannot "
                     "prune them).")
    else:
        body = _note("No trial reported intermediate values.")
    sections.append(Section("intermediate", "Intermediate values (pruned trials included)", body))

    if multi:
        if len(complete) < 1:
            body = none_complete
        elif len(metrics) <= 3:
            body = figs.attempt(lambda: vis.plot_pareto_front(study, target_names=metrics))
        else:
            body = (_note(f"{len(metrics)} objectives: the front is drawn over the first two.")
                    + figs.attempt(lambda: vis.plot_pareto_front(
                        study, targets=lambda t: (t.values[0], t.values[1]), target_names=metrics[:2])))
        sections.append(Section("pareto", "Pareto front", body))

    if trials:
        body = figs.attempt(lambda: vis.plot_timeline(study), height=max(300, min(900, 80 + 18 * len(trials))))
    else:
        body = _note("The study holds no trials.")
    sections.append(Section("timeline", "Timeline", body))

    if failed:
        sections.append(Section("failed", f"Failed trials ({len(failed)})", _failures_table(failed)))
    return sections


def _header(study: optuna.Study, spec: StudySpec) -> str:
    trials = study.get_trials(deepcopy=False)
    counts = {s: sum(t.state == s for t in trials) for s in TrialState}
    objective = ", ".join(f"{m} ({d})" for m, d in zip(spec.metrics, spec.directions))
    items = [
        ("learner", spec.learner.name),
        ("study file", display_path(spec.file)),
        ("base config", display_path(spec.config_file)),
        ("objective", objective),
        ("sampler / pruner", f"{spec.sampler.name} / {spec.pruner.name}"),
        ("trials", f"{len(trials)}: {counts[TrialState.COMPLETE]} complete, {counts[TrialState.PRUNED]} pruned, "
                   f"{counts[TrialState.FAIL]} failed, {counts[TrialState.RUNNING]} running"),
        ("written", dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z") + f" by optuna {optuna.__version__}"),
    ]
    return "<dl>" + "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in items) + "</dl>"


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#222;background:#fafafa}
header,main{max-width:1200px;margin:auto;padding:0 20px}
header{padding-top:16px}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid #ddd;padding:8px 20px;z-index:10;
    font-size:14px;text-align:center}
nav a{margin-right:14px;color:#1f5fa8;text-decoration:none}
section{background:#fff;border:1px solid #e3e3e3;border-radius:6px;margin:18px 0;padding:6px 18px 14px}
h1{margin:8px 0}
h2{border-bottom:1px solid #eee;padding-bottom:4px}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 16px;font-size:14px}
dt{font-weight:600;color:#555}dd{margin:0}
table{border-collapse:collapse;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#f0f3f7}
td:nth-child(2){text-align:left}
.scroll{overflow-x:auto}
.absent{color:#777;font-style:italic}
.artifacts{display:flex;flex-wrap:wrap;gap:16px}
figure.artifact{margin:0;text-align:center}
figure.artifact img{max-width:560px;max-height:520px;border:1px solid #ddd}
figcaption{font-size:13px;color:#555}
"""


def render(study: optuna.Study, spec: StudySpec, sections: Sequence[Section]) -> str:
    """The whole page: plotly.js once in the head, then the sections."""
    from plotly.offline import get_plotlyjs

    nav = "".join(f'<a href="#{s.anchor}">{_esc(s.title.split(" (")[0])}</a>' for s in sections)
    body = "".join(f'<section id="{s.anchor}"><h2>{_esc(s.title)}</h2>{s.body}</section>' for s in sections)
    title = f"Study {study.study_name}"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{_esc(title)}</title>"
            f"<style>{CSS}</style><script>{get_plotlyjs()}</script></head><body>"
            f"<header><h1>{_esc(title)}</h1>{_header(study, spec)}</header><nav>{nav}</nav>"
            f"<main>{body}</main></body></html>\n")


def write_report(study: optuna.Study, spec: StudySpec, path: Path, artifact_dir: Path) -> Path:
    """Write the study's self-contained HTML report.

    Args:
        study: The stored study (any number of trials, in any state).
        spec: Its study file (metrics, directions, base config).
        path: Where to write, e.g. ``out/S/report.html``.
        artifact_dir: The study's artifact store folder (the best trial's figures are read from it).

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # no plot warnings (e.g. one-valued params) on the terminal
    try:
        sections = build_sections(study, spec, Path(artifact_dir), path.parent.resolve())
    finally:
        optuna.logging.set_verbosity(verbosity)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render(study, spec, sections), encoding="utf-8")
    tmp.replace(path)  # a reader never sees half a report
    return path
