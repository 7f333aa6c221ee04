"""Classification metrics: accuracy, balanced accuracy, macro/micro-F1, per-class F1, confusion matrix, per group.

Written in NumPy (no scikit-learn at run time) with scikit-learn's conventions, which the tests
check against: macro-F1 averages over the classes present in ``y_true`` or ``y_pred`` (a class
predicted but absent scores 0); balanced accuracy averages the recall of the classes present in
``y_true``.
"""

from __future__ import annotations

import math

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``(k, k)`` counts, rows = true class, columns = predicted class."""
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_f1(cm: np.ndarray) -> np.ndarray:
    """F1 of each class; NaN for a class neither present nor predicted."""
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(1), cm.sum(0)
    denom = support + predicted
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), np.nan)


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict[str, float]:
    """``accuracy``, ``balanced_accuracy``, ``f1_macro`` and ``f1_micro`` (NaN when ``y_true`` is empty).

    Micro-F1 pools every class's true and false positives; with one label per node it equals the
    accuracy, and is reported under its own name because that is what well-log papers quote.
    """
    if len(y_true) == 0:
        return {"accuracy": math.nan, "balanced_accuracy": math.nan, "f1_macro": math.nan, "f1_micro": math.nan}
    cm = confusion_matrix(y_true, y_pred, num_classes)
    support = cm.sum(1)
    present = support > 0
    recall = np.diag(cm)[present] / support[present]
    f1 = per_class_f1(cm)
    tp = float(np.trace(cm))
    fp = fn = float(cm.sum()) - tp  # every miss is one false positive and one false negative
    return {
        "accuracy": float(np.trace(cm) / cm.sum()),
        "balanced_accuracy": float(recall.mean()),
        "f1_macro": float(np.nanmean(f1)),
        "f1_micro": 2 * tp / (2 * tp + fp + fn),
    }


def per_group_metrics(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, roles: np.ndarray,
                      num_classes: int, order: list[str]) -> list[dict[str, object]]:
    """One row per group with labeled nodes: split, labeled and correct counts, accuracy, macro/micro-F1.

    Args:
        y_true: ``(n,)`` labels, ``-1`` for unlabeled nodes (left out).
        y_pred: ``(n,)`` predicted class.
        groups: ``(n,)`` group of each node.
        roles: ``(n,)`` split role of each node (the same within a group).
        num_classes: Number of classes.
        order: Groups in the order of the rows.
    """
    rows: list[dict[str, object]] = []
    for group in order:
        mask = (groups == group) & (y_true >= 0)
        if not mask.any():
            continue
        scores = classification_metrics(y_true[mask], y_pred[mask], num_classes)
        rows.append({"group": group, "split": str(roles[mask][0]), "labeled": int(mask.sum()),
                     "correct": int((y_true[mask] == y_pred[mask]).sum()), "accuracy": scores["accuracy"],
                     "f1_macro": scores["f1_macro"], "f1_micro": scores["f1_micro"]})
    return rows
