"""Sums over each node's in-edges, for a general (CSR) graph or a dense kNN graph alike.

A general graph's edges are sorted by target (``GraphBatch.edge_ptr``), so a node's in-edges are a
contiguous segment and their sum is a segment sum. A kNN graph has exactly ``k`` in-edges per node, so
per-edge values can be laid out as ``(N, k, ...)`` and summed over axis 1: a gather and a dense
reduction, several times faster on the CPU than the segment sum. :class:`Neighbourhood` hides which.
"""

from __future__ import annotations

import torch

from geostudy.learners.matern.data import GraphBatch


def segment_sum(src: torch.Tensor, ptr: torch.Tensor) -> torch.Tensor:
    """Sums of contiguous row segments ``src[ptr[i]:ptr[i + 1]]`` (0 for an empty one)."""
    return torch.segment_reduce(src, "sum", offsets=ptr, axis=0)


def segment_mean(src: torch.Tensor, ptr: torch.Tensor) -> torch.Tensor:
    counts = (ptr[1:] - ptr[:-1]).clamp_min(1).to(src.dtype).unsqueeze(-1)
    return segment_sum(src, ptr) / counts


class Neighbourhood:
    """Per-edge tensors of a batch and their sums into the target nodes.

    Per-edge tensors are ``(N, k, ...)`` in the dense layout (``dense=True``: the batch has ``neighbors``
    and ``use_dense``) and ``(E, ...)`` otherwise; the same code serves both.
    """

    def __init__(self, batch: GraphBatch, *, use_dense: bool = True) -> None:
        self.dense = use_dense and batch.neighbors is not None
        self.num_nodes = batch.x.shape[0]
        if self.dense and batch.neighbors is not None:
            self.neighbors = batch.neighbors
            self.k = batch.neighbors.shape[1]
        else:
            self.src, self.dst = batch.edge_index[0], batch.edge_index[1]
            self.ptr = batch.edge_ptr

    def source(self, node_values: torch.Tensor) -> torch.Tensor:
        """The value of each edge's source node."""
        return node_values[self.neighbors] if self.dense else node_values[self.src]

    def target(self, node_values: torch.Tensor) -> torch.Tensor:
        """The value of each edge's target node (a broadcast view in the dense layout)."""
        return node_values[:, None] if self.dense else node_values[self.dst]

    def per_edge(self, flat: torch.Tensor) -> torch.Tensor:
        """An ``(E, ...)`` tensor in the edge order of ``edge_index``, in this layout."""
        return flat.reshape(self.num_nodes, self.k, *flat.shape[1:]) if self.dense else flat

    def sum(self, edge_values: torch.Tensor) -> torch.Tensor:
        """``(N, ...)`` sums over each node's in-edges."""
        return edge_values.sum(1) if self.dense else segment_sum(edge_values, self.ptr)
