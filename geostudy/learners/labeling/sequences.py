"""Sequences of samples along the vertical coordinate: a well, or a station's column of depth cells.

Imputation and derived features work along these sequences, never across them, so nothing leaks
from one well (or line) into another. A sequence lies inside one group; it is either the whole group
(``group``: a well, possibly deviated, ordered along its last coordinate) or one column of the group
(``column``: the nodes sharing a group and a horizontal position, as under an airborne-EM station).
``auto`` takes ``column`` when the data have horizontal coordinates and every column holds at least
two samples, else ``group``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

SequenceMode = Literal["auto", "group", "column"]


@dataclass
class Sequences:
    """Nodes grouped into ordered sequences.

    Attributes:
        order: ``(n,)`` node indices sorted by sequence, then by the vertical coordinate (ascending).
        seq: ``(n,)`` sequence id of each node (0-based, in ``order`` runs).
        starts: ``(m + 1,)`` offsets into ``order`` where each sequence starts, plus ``n`` at the end.
        position: ``(n,)`` the vertical coordinate of each node (what "along" means).
        group_of: ``(m,)`` group name of each sequence.
    """

    order: np.ndarray
    seq: np.ndarray
    starts: np.ndarray
    position: np.ndarray
    group_of: np.ndarray

    @property
    def count(self) -> int:
        return len(self.starts) - 1

    def runs(self) -> list[np.ndarray]:
        """Node indices of each sequence, in order along the coordinate."""
        return [self.order[a:b] for a, b in zip(self.starts[:-1], self.starts[1:])]


def build_sequences(coords: np.ndarray, groups: np.ndarray, mode: SequenceMode = "auto") -> Sequences:
    """Split nodes into sequences (see the module docstring) ordered along the last coordinate.

    Args:
        coords: ``(n, d)`` coordinates; the last one is vertical.
        groups: ``(n,)`` group name of each node.
        mode: ``group``, ``column`` or ``auto``.
    """
    coords = np.asarray(coords, dtype=np.float64)
    n = len(coords)
    groups = np.asarray(groups).astype(str)
    _, group_id = np.unique(groups, return_inverse=True)
    group_id = group_id.reshape(-1)
    key = group_id
    if mode != "group" and coords.shape[1] >= 2 and n:
        horiz = coords[:, :-1]
        tol = max(float(np.ptp(horiz)), 1.0) * 1e-9
        _, col = np.unique(np.column_stack([group_id, np.round(horiz / tol)]), axis=0, return_inverse=True)
        col = col.reshape(-1)
        if mode == "column" or np.bincount(col).min() >= 2:
            key = col
    position = coords[:, -1] if n else np.zeros(0)
    order = np.lexsort((position, key))
    _, seq_sorted = np.unique(key[order], return_inverse=True)
    seq = np.empty(n, dtype=np.int64)
    seq[order] = seq_sorted.reshape(-1)
    counts = np.bincount(seq, minlength=int(seq.max()) + 1 if n else 0)
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    group_of = groups[order[starts[:-1]]] if n else np.zeros(0, dtype=str)
    return Sequences(order=order, seq=seq, starts=starts, position=position, group_of=group_of)
