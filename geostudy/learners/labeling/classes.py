"""Class codes of a node CSV: a fixed list (``data.csv.classes``, optional names) or the codes seen.

With ``classes`` set, the class set is exactly that list, in that order, whatever the wells hold; a
code outside it is a one-line error, or (``unknown_labels: unlabeled``) an unlabeled node with a
warning giving the count. Without it, the classes are the codes present in the label column.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from geostudy.errors import DataError
from geostudy.learners.labeling.missing import rows_text

logger = logging.getLogger("geostudy")


@dataclass
class ClassTable:
    """Codes (as written in the CSV) and display names, index = label."""

    codes: list[str]
    names: list[str]


def code_text(code: Any) -> str:
    """A class code as text, the same however it was written.

    YAML reads ``1`` as an int, a CSV has text, and a label column with empty cells comes back from
    pandas (or a spreadsheet) as ``1.0``: integral numbers are written without a fractional part.
    """
    text = str(code).strip()
    try:
        value = float(text)
    except ValueError:
        return text
    return str(int(value)) if value.is_integer() else text


def class_table(classes: list | dict | None, seen: list[str]) -> ClassTable:
    """The class table of ``data.csv.classes`` (list of codes or ``{code: name}``), else of the codes seen."""
    if classes is None:
        return ClassTable(codes=list(seen), names=list(seen))
    if isinstance(classes, dict):
        codes = [code_text(c) for c in classes]
        names = [str(v) if v is not None else code_text(c) for c, v in classes.items()]
        return ClassTable(codes=codes, names=names)
    codes = [code_text(c) for c in classes]
    return ClassTable(codes=codes, names=list(codes))


def encode_labels(raw: list[str | None], table: ClassTable, *, unknown: str, line_numbers: np.ndarray,
                  column: str, file: str) -> tuple[np.ndarray, list[str]]:
    """Label index per row (``-1``: unlabeled) and the warnings raised.

    Args:
        raw: Stripped label text per row, None or empty for an unlabeled row.
        table: The class table.
        unknown: ``error`` or ``unlabeled``: what a code outside the table does.
        line_numbers: File line number of each row, for messages.
        column: The label column, for messages.
        file: The CSV, for messages.

    Raises:
        DataError: a code outside the table and ``unknown`` is ``error``.
    """
    index = {c: i for i, c in enumerate(table.codes)}
    labels = np.full(len(raw), -1, dtype=np.int64)
    outside: dict[str, list[int]] = {}
    for row, text in enumerate(raw):
        if text is None or text == "":
            continue
        value = code_text(text)
        i = index.get(value)
        if i is None:
            outside.setdefault(value, []).append(row)
        else:
            labels[row] = i
    warnings: list[str] = []
    if outside:
        rows = np.sort(np.concatenate([np.asarray(r) for r in outside.values()]))
        codes = ", ".join(repr(c) for c in sorted(outside))
        if unknown == "error":
            raise DataError(f"column {column!r} holds code(s) {codes} outside data.csv.classes ({len(rows)} row(s), "
                            f"at rows {rows_text(line_numbers[rows])}); allowed: {', '.join(table.codes)}; add them "
                            "to data.csv.classes or set data.csv.unknown_labels: unlabeled", file=file,
                            key="data.csv.classes")
        message = (f"{file}: {len(rows)} label(s) with code(s) {codes} outside data.csv.classes are treated as "
                   "unlabeled")
        logger.warning("warning: %s", message)
        warnings.append(message)
    return labels, warnings
