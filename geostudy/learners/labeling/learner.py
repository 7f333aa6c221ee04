"""The labeling learner: semi-supervised classification of survey points on a spatial graph.

Construction order: typed config -> survey -> features and splits -> graph -> model -> optimizer
and loss -> epochs (reporting validation metrics) -> evaluation, tables, figures, predictions.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from geostudy.errors import ConfigError
from geostudy.learners.base import REPO_ROOT, Learner, RunContext, RunResult
from geostudy.learners.labeling.config import LabelingConfig
from geostudy.learners.labeling.data import Survey, load_csv, synthetic_survey
from geostudy.learners.labeling.evaluate import (
    classification_metrics,
    confusion_matrix,
    per_class_f1,
    per_group_metrics,
)
from geostudy.learners.labeling.graph import build_edges, coord_scale
from geostudy.learners.labeling.model import NodeClassifier
from geostudy.learners.labeling.train import class_weights, resolve_features, split_roles, standardize
from geostudy.nn.device import resolve_device
from geostudy.nn.training import make_optimizer, run_epochs, seed_everything

SPLIT_METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "f1_micro")
logger = logging.getLogger("geostudy")


def load_survey(cfg: LabelingConfig) -> Survey:
    """The survey a config describes (synthetic, or CSV relative to the working directory / repo),
    with the derived features of ``data.derived`` appended."""
    if cfg.data.source == "synthetic":
        survey = synthetic_survey(cfg.data.synthetic, seed=cfg.seed)
    else:
        nodes = Path(cfg.data.csv.nodes or "")
        base = None if nodes.is_absolute() or nodes.exists() else REPO_ROOT
        survey = load_csv(cfg.data.csv, base=base, sequence=cfg.data.sequence)
    return survey.with_derived(list(cfg.data.derived), cfg.data.sequence)


def unseen_class_warnings(survey: Survey, roles: np.ndarray) -> list[str]:
    """Warnings for classes labeled only outside the training groups (the model cannot learn them)."""
    train = np.unique(survey.labels[(roles == "train") & (survey.labels >= 0)])
    other = np.unique(survey.labels[(roles != "train") & (survey.labels >= 0)])
    unseen = [survey.class_names[i] for i in np.setdiff1d(other, train)]
    if not unseen:
        return []
    return [f"{survey.source}: class(es) {', '.join(map(repr, unseen))} appear only outside the training groups, so "
            "the model never sees them and they count against macro-F1; fix the class list with data.csv.classes"]


class LabelingLearner(Learner):
    """Label survey nodes from a few labeled groups (flight lines, wells) with a GNN or an MLP."""

    name: ClassVar[str] = "labeling"
    metrics: ClassVar[Mapping[str, str]] = {
        "val_f1_macro": "maximize",
        "val_accuracy": "maximize",
        "val_balanced_accuracy": "maximize",
        "test_f1_macro": "maximize",
        "test_accuracy": "maximize",
        "test_balanced_accuracy": "maximize",
        "val_f1_micro": "maximize",
        "test_f1_micro": "maximize",
        "train_seconds": "minimize",
        "imputed_values": "minimize",
    }
    config_class = LabelingConfig

    def check_config(self, config: Mapping[str, Any], *, file: str | Path | None = None) -> None:
        """Types and ranges, then the data files, columns, features and splits (before any study starts)."""
        cfg: LabelingConfig = self.parse_config(config, file=file)
        try:
            survey = load_survey(cfg)  # the survey is cached, so the run re-uses it
            resolve_features(cfg.data, survey)
            split_roles(survey, cfg.split)
            if cfg.model.arch != "mlp" and cfg.graph.method in ("knn", "radius"):
                coord_scale(survey, cfg.graph)
        except ConfigError as err:
            if err.file is None and file is not None:  # name the config file the bad key came from
                raise ConfigError(err.message, file=file, key=err.key) from None
            raise

    def run(self, config: Mapping[str, Any], ctx: RunContext) -> RunResult:
        cfg: LabelingConfig = self.parse_config(config)
        seed_everything(cfg.seed)
        device = resolve_device(cfg.device)

        survey = load_survey(cfg)
        names = resolve_features(cfg.data, survey)
        roles = split_roles(survey, cfg.split)
        warnings = list(survey.warnings)
        if cfg.data.source == "csv" and cfg.data.csv.classes is None:
            for message in unseen_class_warnings(survey, roles):
                logger.warning("warning: %s", message)
                warnings.append(message)
        labeled = survey.labels >= 0
        masks = {r: torch.from_numpy((roles == r) & labeled) for r in ("train", "val", "test")}
        x_np, _, _ = standardize(survey.select(names), roles == "train")
        x = torch.from_numpy(x_np).to(device)
        y = torch.from_numpy(np.where(labeled, survey.labels, 0)).to(device)
        masks = {r: m.to(device) for r, m in masks.items()}

        graph = None
        if cfg.model.arch != "mlp":
            from geostudy.nn.gnn import Graph

            graph = Graph.from_numpy(build_edges(survey, cfg.graph), survey.num_nodes).to(device)

        torch.manual_seed(cfg.seed)  # the same initial weights whatever the data generation drew
        k = survey.num_classes
        m = cfg.model
        model = NodeClassifier(m.arch, m.backend, x.shape[1], m.hidden, k, layers=m.layers, dropout=m.dropout,
                               heads=m.heads, residual=m.residual).to(device)
        optimizer = make_optimizer(cfg.optim.name, model.parameters(), lr=cfg.optim.lr,
                                   weight_decay=cfg.optim.weight_decay)
        cw = class_weights(cfg.train.class_weights, survey.labels[masks["train"].cpu().numpy()], k)
        weight = None if cw is None else torch.from_numpy(cw).to(device)
        train_idx = masks["train"].nonzero().squeeze(1)

        best: dict[str, Any] = {"f1": -1.0, "epoch": -1, "state": None}

        def train_epoch(epoch: int) -> float:
            model.train()
            optimizer.zero_grad(set_to_none=True)
            logits = model(x, graph)
            loss = F.cross_entropy(logits[train_idx], y[train_idx], weight=weight)
            loss.backward()
            optimizer.step()
            return float(loss.detach())

        def predict() -> torch.Tensor:
            model.eval()
            with torch.no_grad():
                return model(x, graph)

        def split_metrics(pred: np.ndarray, role: str) -> dict[str, float]:
            mask = masks[role].cpu().numpy()
            scores = classification_metrics(survey.labels[mask], pred[mask], k)
            return {f"{role}_{name}": scores[name] for name in SPLIT_METRICS}

        def evaluate(epoch: int) -> dict[str, float]:
            pred = predict().argmax(1).cpu().numpy()
            scores = split_metrics(pred, "val")
            if cfg.train.restore_best and scores["val_f1_macro"] > best["f1"]:
                best.update(f1=scores["val_f1_macro"], epoch=epoch, state=copy.deepcopy(model.state_dict()))
            return scores

        start = time.perf_counter()
        run_epochs(cfg.train.epochs, train_epoch, evaluate, ctx, eval_every=cfg.train.eval_every)
        train_seconds = time.perf_counter() - start
        if best["state"] is not None:
            model.load_state_dict(best["state"])

        logits = predict()
        prob = torch.softmax(logits, 1).cpu().numpy()
        pred = prob.argmax(1)
        metrics = split_metrics(pred, "val")
        report_roles = ["val"]
        if ctx.final:
            metrics.update(split_metrics(pred, "test"))
            report_roles.append("test")
        metrics["train_seconds"] = train_seconds
        metrics["imputed_values"] = float(survey.imputed)

        tables: dict[str, Any] = {"classes": list(survey.class_names), "features": names,
                                  "best_epoch": int(best["epoch"]) if best["state"] is not None else cfg.train.epochs - 1,
                                  "num_nodes": survey.num_nodes, "num_edges": 0 if graph is None else graph.num_edges}
        cms = {}
        for role in report_roles:
            mask = masks[role].cpu().numpy()
            cm = confusion_matrix(survey.labels[mask], pred[mask], k)
            cms[role] = cm
            f1 = per_class_f1(cm)
            tables[f"{role}_per_class_f1"] = {c: (None if np.isnan(v) else float(v)) for c, v in zip(survey.class_names, f1)}
            tables[f"{role}_confusion"] = cm.tolist()
        if warnings:
            tables["warnings"] = warnings
        group_rows: list[dict[str, Any]] = []
        if ctx.final:
            group_rows = [r for r in per_group_metrics(survey.labels, pred, survey.groups, roles, k,
                                                       survey.group_names()) if r["split"] in report_roles]
            tables["per_group"] = group_rows

        figures: dict[str, Any] = {}
        if cfg.eval.figures:
            figures = self._figures(cfg, survey, pred, roles, cms, metrics)
        files: dict[str, Path] = {}
        if ctx.final:
            files["predictions"] = write_predictions(Path(ctx.workdir) / "predictions.csv", survey, roles, prob)
            files["per_group_metrics"] = write_rows(Path(ctx.workdir) / "per_group_metrics.csv", group_rows)
        return RunResult(metrics=metrics, figures=figures, files=files, tables=tables)

    @staticmethod
    def _figures(cfg: LabelingConfig, survey: Survey, pred: np.ndarray, roles: np.ndarray,
                 cms: dict[str, np.ndarray], metrics: dict[str, float]) -> dict[str, Any]:
        from geostudy.learners.labeling import plots

        role = "test" if "test" in cms else "val"
        group = cfg.eval.section_group
        if group is None:
            in_role = [g for g in survey.group_names() if (roles[survey.groups == g] == role).any()]
            group = in_role[0] if in_role else survey.group_names()[0]
        group = str(group)
        figures: dict[str, Any] = {}
        title = (f"{cfg.model.arch}/{cfg.model.backend}: {role} macro-F1 "
                 f"{metrics.get(f'{role}_f1_macro', float('nan')):.3f}")
        if survey.coords.shape[1] == 1:  # a borehole table: one strip per well, depth downwards
            wells = [str(cfg.eval.section_group)] if cfg.eval.section_group is not None else \
                [g for g in survey.group_names() if (roles[survey.groups == g] == role).any()]
            figures["log_strips"] = plots.log_strips(survey, pred, wells[:plots.MAX_STRIPS], title=title)
            return {**figures, **LabelingLearner._confusions(survey, cms, metrics)}
        if (survey.groups == group).any():
            figures["cross_section"] = plots.cross_section(survey, pred, group, title=title)
        figures["plan_view"] = plots.plan_view(survey, pred, roles, cfg.eval.plan_depth)
        return {**figures, **LabelingLearner._confusions(survey, cms, metrics)}

    @staticmethod
    def _confusions(survey: Survey, cms: dict[str, np.ndarray], metrics: dict[str, float]) -> dict[str, Any]:
        from geostudy.learners.labeling import plots

        figures: dict[str, Any] = {}
        for r, cm in cms.items():
            figures[f"confusion_{r}"] = plots.confusion_figure(cm, survey.class_names,
                                                               f"{r}: macro-F1 {metrics[f'{r}_f1_macro']:.3f}")
        return figures


def write_predictions(path: Path, survey: Survey, roles: np.ndarray, prob: np.ndarray) -> Path:
    """A CSV with every node (unlabeled too): the id column (under its own name), group, coordinates,
    split, label and prediction (class names; their codes too when ``data.csv.classes`` names them),
    and one probability column per class."""
    import pandas as pd

    columns: dict[str, Any] = {survey.id_name: survey.ids, "group": survey.groups}
    for i, name in enumerate(survey.coord_names):
        if name not in columns:
            columns[name] = survey.coords[:, i]
    names = np.asarray(survey.class_names, dtype=object)
    has = survey.labels >= 0
    pred = prob.argmax(1)
    columns["split"] = roles
    columns["label"] = np.where(has, names[np.maximum(survey.labels, 0)], "")
    columns["predicted"] = names[pred]
    codes = survey.class_codes
    if codes is not None and list(codes) != list(survey.class_names):
        code_arr = np.asarray(codes, dtype=object)
        columns["label_code"] = np.where(has, code_arr[np.maximum(survey.labels, 0)], "")
        columns["predicted_code"] = code_arr[pred]
    for i, c in enumerate(survey.class_names):
        columns[f"prob_{c}"] = np.round(prob[:, i], 6)
    pd.DataFrame(columns).to_csv(path, index=False)
    return path


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Per-group metrics as a CSV (one row per group with labeled nodes)."""
    import pandas as pd

    columns = ["group", "split", "labeled", "correct", "accuracy", "f1_macro", "f1_micro"]
    pd.DataFrame(rows, columns=columns).to_csv(path, index=False)
    return path
