"""Node classifiers: a stack of graph convolutions (gcn, sage, gat on DGL or PyG) or an MLP."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from geostudy.nn.gnn import Graph, make_conv


class _Dense(nn.Module):
    """An MLP layer with the conv-layer signature (input dropout, then linear); ignores the graph."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        self.lin = nn.Linear(in_dim, out_dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, graph: Graph | None = None) -> torch.Tensor:
        return self.lin(F.dropout(x, self.dropout, self.training))


class NodeClassifier(nn.Module):
    """``layers`` layers ``in -> hidden -> ... -> classes`` with ReLU between them.

    Args:
        arch: ``gcn``, ``sage``, ``gat`` or ``mlp`` (no graph).
        backend: ``dgl`` or ``pyg`` (ignored by ``mlp``).
        in_dim: Number of input features.
        hidden: Width of the hidden layers.
        num_classes: Number of output classes (logits).
        layers: Number of layers (1 = a single layer from features to logits).
        dropout: Dropout on every layer's input (and attention dropout for ``gat``).
        heads: Attention heads of the hidden ``gat`` layers; the output layer has one head.
        residual: Add a skip connection to every layer (identity when widths agree, else a
            bias-free linear projection).
    """

    def __init__(self, arch: str, backend: str, in_dim: int, hidden: int, num_classes: int, *, layers: int = 2,
                 dropout: float = 0.0, heads: int = 1, residual: bool = False) -> None:
        super().__init__()
        self.arch = arch
        dims = [in_dim] + [hidden] * (layers - 1) + [num_classes]
        self.convs = nn.ModuleList()
        self.skips = nn.ModuleList()
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            if arch == "mlp":
                self.convs.append(_Dense(a, b, dropout))
            else:
                last = i == len(dims) - 2
                self.convs.append(make_conv(backend, arch, a, b, heads=1 if last else heads, dropout=dropout))
            if residual:
                self.skips.append(nn.Identity() if a == b else nn.Linear(a, b, bias=False))

    def forward(self, x: torch.Tensor, graph: Graph | None) -> torch.Tensor:
        h = x
        for i, conv in enumerate(self.convs):
            out = conv(h, graph)
            if self.skips:
                out = out + self.skips[i](h)
            h = F.relu(out) if i < len(self.convs) - 1 else out
        return h
