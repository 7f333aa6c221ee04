"""Graphs and graph-convolution layers on two backends (DGL and PyG) behind one interface.

:class:`Graph` holds an ``edge_index`` and caches the views each backend wants: a DGL graph (with or
without self loops) and the normalised sparse GCN operator (:class:`~geostudy.nn.sparse.SparseAdj`).
:func:`make_conv` builds a layer by name whose ``forward(x, graph, edge_weight=None)`` is the same
on both backends.

Layer semantics (both backends compute the same function; the parameters are initialised by each
library's own rule, so two fresh layers differ until their weights are copied):

- ``gcn``: ``D^-1/2 (A + I) D^-1/2 X W + b`` with weighted degrees and unit self loops
  (see :mod:`geostudy.nn.sparse`). Edge weights are honoured and may require grad. The product is
  taken on the narrower side (``(A X) W`` when ``in_dim <= out_dim``), as DGL's ``GraphConv`` does;
  mathematically the same as PyG's ``linear -> propagate -> bias``.
- ``sage``: ``X W_self + mean_{j in N(i)} x_j W_neigh + b`` (no self loops; isolated nodes get only
  the self term). Edge weights are ignored.
- ``gat``: graph attention with self loops added. With ``heads`` dividing ``out_dim`` the heads are
  concatenated, each ``out_dim // heads`` wide; otherwise each head is ``out_dim`` wide and the heads
  are averaged (the usual choice for an output layer). Edge weights are ignored.
- ``dropout``: dropout on the layer's input features (all archs), plus attention dropout for ``gat``.

Backend notes: the DGL ``gcn`` holds a ``dgl.nn.GraphConv`` (its ``weight`` and ``bias``) and runs
GraphConv's ``norm="both"`` arithmetic with DGL's ``copy_u_sum`` kernel on the cached self-loop graph,
the degree norms cached too (weighted: the normalised weights through ``dgl.ops.u_mul_e_sum``). The PyG ``gcn`` keeps PyG's parameter
layout (``lin`` without bias, then ``bias``) but propagates with a cached CSR operator and a
precomputed transpose for the backward (:func:`~geostudy.nn.sparse.spmm`), ~5-10x faster on the CPU
than ``GCNConv`` on an ``edge_index``. With edge weights that require grad it falls back to a
differentiable gather/scatter. PyG ``sage`` wraps ``SAGEConv``'s parameters around the cached
neighbour-mean operator; PyG ``gat`` is ``GATConv``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, overload

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geostudy.errors import ConfigError
from geostudy.nn.sparse import SparseAdj, gcn_norm, propagate, spmm

os.environ.setdefault("DGLBACKEND", "pytorch")

__all__ = ["BACKENDS", "CONV_ARCHS", "Graph", "make_conv"]

CONV_ARCHS: tuple[str, ...] = ("gcn", "sage", "gat")
BACKENDS: tuple[str, ...] = ("dgl", "pyg")


class _BatchField:
    """``Graph.batch(graphs)`` on the class (block-diagonal union); ``graph.batch`` (node -> graph id) on an instance."""

    @overload
    def __get__(self, obj: None, owner: type[Graph]) -> Callable[[Sequence[Graph]], Graph]: ...
    @overload
    def __get__(self, obj: Graph, owner: type[Graph]) -> torch.Tensor | None: ...
    def __get__(self, obj: Graph | None, owner: type[Graph]) -> Any:
        if obj is None:
            return owner.from_graphs
        return obj.__dict__.get("_batch")

    def __set__(self, obj: Graph, value: torch.Tensor | None) -> None:
        obj.__dict__["_batch"] = value


class Graph:
    """A graph of ``num_nodes`` nodes with directed edges ``edge_index[0] -> edge_index[1]``.

    Undirected graphs hold both directions. Self loops are not allowed (layers add them where
    their rule wants them). Treat a Graph as immutable: backend views are cached on first use.

    Args:
        edge_index: ``(2, E)`` long tensor of (source, target).
        num_nodes: Number of nodes (isolated nodes allowed).
        edge_weight: Optional ``(E,)`` float tensor; may require grad.
        batch: Optional ``(num_nodes,)`` long tensor, the graph id of each node (see :meth:`batch`).
        num_graphs: Number of graphs in a batch (1 for a single graph).
    """

    def __init__(
        self,
        edge_index: torch.Tensor,
        num_nodes: int,
        edge_weight: torch.Tensor | None = None,
        batch: torch.Tensor | None = None,
        num_graphs: int = 1,
    ) -> None:
        edge_index = torch.as_tensor(edge_index, dtype=torch.long)
        if edge_index.ndim != 2 or edge_index.shape[0] != 2:
            raise ValueError(f"edge_index must have shape (2, E), but got {tuple(edge_index.shape)}")
        if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= num_nodes):
            raise ValueError(f"edge_index must hold node ids in [0, {num_nodes}), but got "
                             f"[{int(edge_index.min())}, {int(edge_index.max())}]")
        if bool((edge_index[0] == edge_index[1]).any()):
            raise ValueError("edge_index must not hold self loops; layers add them where needed")
        if edge_weight is not None and edge_weight.shape != (edge_index.shape[1],):
            raise ValueError(f"edge_weight must have shape ({edge_index.shape[1]},), but got {tuple(edge_weight.shape)}")
        self.edge_index = edge_index
        self.num_nodes = int(num_nodes)
        self.edge_weight = edge_weight
        self.batch = batch
        self.num_graphs = int(num_graphs)
        self._cache: dict[Any, Any] = {}

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    @property
    def device(self) -> torch.device:
        return self.edge_index.device

    def __repr__(self) -> str:
        return (f"Graph(num_nodes={self.num_nodes}, num_edges={self.num_edges}, "
                f"weighted={self.edge_weight is not None}, num_graphs={self.num_graphs}, device={self.device})")

    @classmethod
    def from_numpy(cls, edges: np.ndarray, num_nodes: int, edge_weight: np.ndarray | None = None) -> Graph:
        """Build from a ``(2, E)`` integer array (e.g. from :mod:`geostudy.nn.graphs`)."""
        edges = np.asarray(edges, dtype=np.int64).reshape(2, -1)
        weight = None if edge_weight is None else torch.as_tensor(np.asarray(edge_weight), dtype=torch.float32)
        return cls(torch.from_numpy(np.ascontiguousarray(edges)), num_nodes, weight)

    batch = _BatchField()

    @classmethod
    def from_graphs(cls, graphs: Sequence[Graph]) -> Graph:
        """Block-diagonal union of ``graphs`` (also spelled ``Graph.batch(graphs)``).

        Node ids are offset graph after graph; the result's ``.batch`` gives each node's graph id and
        ``.num_graphs`` the number of graphs. Edge weights are concatenated (ones for unweighted graphs).
        """
        if not graphs:
            raise ValueError("graphs must hold at least one Graph, but got none")
        offsets = np.cumsum([0] + [g.num_nodes for g in graphs])
        edges = torch.cat([g.edge_index + int(off) for g, off in zip(graphs, offsets[:-1])], dim=1)
        weight = None
        if any(g.edge_weight is not None for g in graphs):
            weight = torch.cat([
                g.edge_weight if g.edge_weight is not None else torch.ones(g.num_edges, device=g.device)
                for g in graphs
            ])
        batch = torch.cat([torch.full((g.num_nodes,), i, dtype=torch.long, device=g.device) for i, g in enumerate(graphs)])
        return cls(edges, int(offsets[-1]), weight, batch=batch, num_graphs=len(graphs))

    def to(self, device: torch.device | str) -> Graph:
        """The same graph on ``device`` (cached views are rebuilt there on demand)."""
        device = torch.device(device)
        if device == self.device:
            return self
        return Graph(
            self.edge_index.to(device), self.num_nodes,
            None if self.edge_weight is None else self.edge_weight.to(device),
            None if self.batch is None else self.batch.to(device), self.num_graphs,
        )

    # -- cached backend views -----------------------------------------------------------------

    def _np_edges(self) -> np.ndarray:
        if "np" not in self._cache:
            self._cache["np"] = self.edge_index.detach().cpu().numpy()
        return self._cache["np"]

    def dgl(self, self_loops: bool = False) -> Any:
        """A ``dgl.DGLGraph`` on this device; with ``self_loops`` the ``n`` loops follow the ``E`` edges."""
        key = ("dgl", self_loops)
        if key not in self._cache:
            import dgl

            src, dst = self.edge_index[0], self.edge_index[1]
            if self_loops:
                loops = torch.arange(self.num_nodes, device=self.device)
                src, dst = torch.cat([src, loops]), torch.cat([dst, loops])
            try:
                g = dgl.graph((src, dst), num_nodes=self.num_nodes, device=self.device)
            except dgl.DGLError as err:
                if self.device.type == "cpu":
                    raise
                raise ConfigError(f"this DGL build cannot place graphs on {self.device} ({err}); "
                                  "use the pyg backend or device: cpu", key="model.backend") from None
            g.create_formats_()  # build CSR/CSC now, not inside the first timed epoch
            self._cache[key] = g
        return self._cache[key]

    def dgl_norms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(n, 1)`` ``deg_out^-1/2`` and ``deg_in^-1/2`` of the self-loop graph (GCN normalisation)."""
        if "dgl_norms" not in self._cache:
            g = self.dgl(self_loops=True)
            out = g.out_degrees().float().clamp(min=1).pow(-0.5).unsqueeze(1)
            inn = g.in_degrees().float().clamp(min=1).pow(-0.5).unsqueeze(1)
            self._cache["dgl_norms"] = (out, inn)
        return self._cache["dgl_norms"]

    def gcn_adj(self) -> SparseAdj:
        """The normalised ``D^-1/2 (A + I) D^-1/2`` with its transpose (uses ``edge_weight`` as fixed)."""
        if "gcn" not in self._cache:
            w = None if self.edge_weight is None else self.edge_weight.detach().cpu().numpy()
            self._cache["gcn"] = SparseAdj.gcn(self._np_edges(), self.num_nodes, w, device=self.device)
        return self._cache["gcn"]

    def mean_adj(self) -> SparseAdj:
        """The neighbour-mean operator ``D^-1 A`` with its transpose."""
        if "mean" not in self._cache:
            self._cache["mean"] = SparseAdj.mean(self._np_edges(), self.num_nodes, device=self.device)
        return self._cache["mean"]

    def gcn_norm(self, edge_weight: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Differentiable ``(src, dst, norm)`` with self loops last (see :func:`~geostudy.nn.sparse.gcn_norm`)."""
        return gcn_norm(self.edge_index, self.num_nodes, edge_weight)


def _weight_for(graph: Graph, edge_weight: torch.Tensor | None) -> torch.Tensor | None:
    return edge_weight if edge_weight is not None else graph.edge_weight


def _cacheable(graph: Graph, edge_weight: torch.Tensor | None) -> bool:
    """True when the cached operator of ``graph`` applies (no override, weights fixed)."""
    return edge_weight is None and (graph.edge_weight is None or not graph.edge_weight.requires_grad)


# --------------------------------------------------------------------------------------------------
# DGL layers


class DglGCN(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        from dgl.nn import GraphConv

        self.conv = GraphConv(in_dim, out_dim, norm="both", weight=True, bias=True, allow_zero_in_degree=True)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, graph: Graph, edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        x = F.dropout(x, self.dropout, self.training) if self.dropout else x
        import dgl

        g = graph.dgl(self_loops=True)
        w = self.conv.weight
        weight = _weight_for(graph, edge_weight)
        if weight is None:
            # GraphConv(norm="both")'s own arithmetic, with the degree norms cached on the graph
            # instead of recomputed by every layer in every epoch (~15% of an epoch at 100k nodes).
            norm_src, norm_dst = graph.dgl_norms()
            if x.shape[1] > w.shape[1]:
                h = dgl.ops.copy_u_sum(g, (x * norm_src) @ w) * norm_dst
            else:
                h = (dgl.ops.copy_u_sum(g, x * norm_src) * norm_dst) @ w
            return h + self.conv.bias
        _, _, norm = graph.gcn_norm(weight)
        if x.shape[1] > w.shape[1]:
            h = dgl.ops.u_mul_e_sum(g, x @ w, norm.unsqueeze(-1))
        else:
            h = dgl.ops.u_mul_e_sum(g, x, norm.unsqueeze(-1)) @ w
        return h + self.conv.bias


class DglSAGE(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        from dgl.nn import SAGEConv

        self.conv = SAGEConv(in_dim, out_dim, "mean")
        self.dropout = dropout

    def forward(self, x: torch.Tensor, graph: Graph, edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        x = F.dropout(x, self.dropout, self.training) if self.dropout else x
        return self.conv(graph.dgl(self_loops=False), x)


def _gat_dims(out_dim: int, heads: int) -> tuple[int, bool]:
    if heads < 1:
        raise ConfigError(f"heads must be >= 1, but got {heads}", key="model.heads")
    if out_dim % heads == 0:
        return out_dim // heads, True
    return out_dim, False


class DglGAT(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, heads: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        from dgl.nn import GATConv

        per_head, self.concat = _gat_dims(out_dim, heads)
        self.conv = GATConv(in_dim, per_head, heads, feat_drop=dropout, attn_drop=dropout, allow_zero_in_degree=True)

    def forward(self, x: torch.Tensor, graph: Graph, edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv(graph.dgl(self_loops=True), x)  # (n, heads, per_head)
        return h.flatten(1) if self.concat else h.mean(1)


# --------------------------------------------------------------------------------------------------
# PyG layers


class PygGCN(nn.Module):
    """PyG's ``GCNConv`` parameters (``lin`` without bias, ``bias``) on the cached sparse operator."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        from torch_geometric.nn.dense.linear import Linear

        self.lin = Linear(in_dim, out_dim, bias=False, weight_initializer="glorot")
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.dropout = dropout

    def forward(self, x: torch.Tensor, graph: Graph, edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        x = F.dropout(x, self.dropout, self.training) if self.dropout else x
        narrow_first = x.shape[1] > self.lin.out_channels
        if _cacheable(graph, edge_weight):
            adj = graph.gcn_adj()
            h = spmm(adj, self.lin(x)) if narrow_first else self.lin(spmm(adj, x))
        else:
            src, dst, norm = graph.gcn_norm(_weight_for(graph, edge_weight))
            if narrow_first:
                h = propagate(self.lin(x), src, dst, norm, graph.num_nodes)
            else:
                h = self.lin(propagate(x, src, dst, norm, graph.num_nodes))
        return h + self.bias


class PygSAGE(nn.Module):
    """PyG's ``SAGEConv`` (mean) parameters on the cached neighbour-mean operator."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        from torch_geometric.nn import SAGEConv

        self.conv = SAGEConv(in_dim, out_dim, aggr="mean")
        self.dropout = dropout

    def forward(self, x: torch.Tensor, graph: Graph, edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        x = F.dropout(x, self.dropout, self.training) if self.dropout else x
        return self.conv.lin_l(spmm(graph.mean_adj(), x)) + self.conv.lin_r(x)


class PygGAT(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, heads: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        from torch_geometric.nn import GATConv

        per_head, concat = _gat_dims(out_dim, heads)
        self.conv = GATConv(in_dim, per_head, heads=heads, concat=concat, dropout=dropout, add_self_loops=True)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, graph: Graph, edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        x = F.dropout(x, self.dropout, self.training) if self.dropout else x
        return self.conv(x, graph.edge_index)


_LAYERS: dict[tuple[str, str], type[nn.Module]] = {
    ("dgl", "gcn"): DglGCN, ("dgl", "sage"): DglSAGE, ("dgl", "gat"): DglGAT,
    ("pyg", "gcn"): PygGCN, ("pyg", "sage"): PygSAGE, ("pyg", "gat"): PygGAT,
}


def make_conv(
    backend: str, arch: str, in_dim: int, out_dim: int, *, heads: int = 1, dropout: float = 0.0
) -> nn.Module:
    """Build one graph-convolution layer.

    Args:
        backend: ``dgl`` or ``pyg``.
        arch: ``gcn``, ``sage`` or ``gat`` (semantics in the module docstring).
        in_dim: Input feature width.
        out_dim: Output width (for ``gat`` too, whatever ``heads``).
        heads: Attention heads (``gat`` only).
        dropout: Input-feature dropout (and attention dropout for ``gat``).

    Returns:
        A module called as ``layer(x, graph, edge_weight=None)``; ``edge_weight`` overrides
        ``graph.edge_weight``.

    Raises:
        ConfigError: unknown backend or arch; the message lists the allowed names.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown GNN backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    if arch not in CONV_ARCHS:
        raise ConfigError(f"unknown GNN architecture {arch!r}; allowed: {', '.join(CONV_ARCHS)}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), but got {dropout!r}")
    cls = _LAYERS[(backend, arch)]
    if arch == "gat":
        return cls(in_dim, out_dim, heads=heads, dropout=dropout)
    return cls(in_dim, out_dim, dropout=dropout)
