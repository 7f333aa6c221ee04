"""Shared GNN pieces: Graph, the sparse GCN product and the two backends of make_conv."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geostudy.errors import ConfigError
from geostudy.nn.gnn import BACKENDS, CONV_ARCHS, Graph, make_conv
from geostudy.nn.sparse import SparseAdj, gcn_norm, propagate, spmm

# A 5-node undirected graph: a path 0-1-2-3 plus the chord 1-3 and the pendant 4-0.
UNDIRECTED = [(0, 1), (1, 2), (2, 3), (1, 3), (4, 0)]


def five_node_graph(weights: bool = False) -> Graph:
    pairs = np.array(UNDIRECTED).T
    edges = np.concatenate([pairs, pairs[::-1]], axis=1)
    w = None
    if weights:
        half = np.array([0.5, 2.0, 1.0, 3.0, 0.25])
        w = np.concatenate([half, half])  # symmetric weights
    return Graph.from_numpy(edges, 5, w)


def dense_gcn(graph: Graph, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
              edge_weight: torch.Tensor | None = None) -> torch.Tensor:
    n = graph.num_nodes
    a = torch.zeros(n, n, dtype=x.dtype)
    w = edge_weight if edge_weight is not None else torch.ones(graph.num_edges, dtype=x.dtype)
    a = a.index_put((graph.edge_index[1], graph.edge_index[0]), w.to(x.dtype), accumulate=True)
    a = a + torch.eye(n, dtype=x.dtype)
    # Rows are targets: D_in^-1/2 (A + I) D_out^-1/2, i.e. D^-1/2 (A + I) D^-1/2 when A is symmetric.
    d_in, d_out = a.sum(1).rsqrt(), a.sum(0).rsqrt()
    return (d_in[:, None] * a * d_out[None, :]) @ x @ weight + bias


def copy_gcn_params(layer: torch.nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """Set a gcn layer's W (in, out) and b, whatever its backend's layout."""
    with torch.no_grad():
        if hasattr(layer, "conv"):  # DGL GraphConv: weight is (in, out)
            layer.conv.weight.copy_(weight)
            layer.conv.bias.copy_(bias)
        else:  # PyG layout: lin.weight is (out, in)
            layer.lin.weight.copy_(weight.T)
            layer.bias.copy_(bias)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("in_dim,out_dim", [(3, 4), (6, 2)])  # both product orders
def test_gcn_backends_match_dense_reference(weighted: bool, in_dim: int, out_dim: int) -> None:
    torch.manual_seed(0)
    graph = five_node_graph(weights=weighted)
    x = torch.randn(5, in_dim)
    weight, bias = torch.randn(in_dim, out_dim), torch.randn(out_dim)
    expected = dense_gcn(graph, x, weight, bias, graph.edge_weight)
    outs = {}
    for backend in BACKENDS:
        layer = make_conv(backend, "gcn", in_dim, out_dim)
        copy_gcn_params(layer, weight, bias)
        outs[backend] = layer(x, graph)
        torch.testing.assert_close(outs[backend], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outs["dgl"], outs["pyg"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gcn_edge_weight_override_is_differentiable(backend: str) -> None:
    torch.manual_seed(1)
    graph = five_node_graph()
    x = torch.randn(5, 3)
    weight, bias = torch.randn(3, 4), torch.randn(4)
    w = torch.rand(graph.num_edges, dtype=torch.float64, requires_grad=True)
    layer = make_conv(backend, "gcn", 3, 4)
    copy_gcn_params(layer, weight, bias)
    out = layer(x, graph, edge_weight=w.float())
    ref_w = w.detach().clone().requires_grad_(True)
    ref = dense_gcn(graph, x.double(), weight.double(), bias.double(), ref_w)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
    out.sum().backward()
    ref.sum().backward()
    assert w.grad is not None
    torch.testing.assert_close(w.grad, ref_w.grad, atol=1e-5, rtol=1e-4)


def test_sparse_product_gradient_matches_dense() -> None:
    torch.manual_seed(2)
    # A directed graph, so that A != A^T and the transpose in the backward matters.
    edges = np.array([[0, 1, 2, 3, 4, 0], [1, 2, 3, 4, 0, 2]])
    adj = SparseAdj.gcn(edges, 5)
    assert adj.mat_t is not adj.mat
    dense = adj.mat.to_dense()
    x = torch.randn(5, 3, dtype=torch.float32, requires_grad=True)
    g = torch.randn(5, 3)
    (spmm(adj, x) * g).sum().backward()
    x_ref = x.detach().clone().requires_grad_(True)
    (dense @ x_ref * g).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)
    # The differentiable gather/scatter uses the same normalisation.
    src, dst, norm = gcn_norm(torch.from_numpy(edges), 5)
    torch.testing.assert_close(propagate(x.detach(), src, dst, norm, 5), dense @ x.detach())


def test_sparse_symmetric_shares_transpose() -> None:
    graph = five_node_graph()
    adj = graph.gcn_adj()
    assert adj.mat_t is adj.mat
    assert graph.gcn_adj() is adj  # cached


def test_batch_is_block_diagonal() -> None:
    a = Graph.from_numpy(np.array([[0, 1], [1, 0]]), 2)
    b = five_node_graph()
    batched = Graph.batch([a, b, a])
    assert batched.num_nodes == 9 and batched.num_graphs == 3
    assert batched.batch.tolist() == [0, 0, 1, 1, 1, 1, 1, 2, 2]
    dense = torch.zeros(9, 9)
    dense[batched.edge_index[1], batched.edge_index[0]] = 1
    blocks = [(0, 2), (2, 7), (7, 9)]
    for i, (lo, hi) in enumerate(blocks):
        for j, (lo2, hi2) in enumerate(blocks):
            if i != j:
                assert dense[lo:hi, lo2:hi2].sum() == 0
    assert torch.equal(dense[2:7, 2:7], torch.zeros(5, 5).index_put_((b.edge_index[1], b.edge_index[0]), torch.ones(b.num_edges)))
    # A layer on the batch equals the layer on each graph alone.
    torch.manual_seed(3)
    layer = make_conv("pyg", "gcn", 3, 2)
    xs = [torch.randn(g.num_nodes, 3) for g in (a, b, a)]
    out = layer(torch.cat(xs), batched)
    torch.testing.assert_close(out, torch.cat([layer(x, g) for x, g in zip(xs, (a, b, a))]))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("arch", CONV_ARCHS)
@pytest.mark.parametrize("heads", [1, 2, 3])
def test_every_layer_shapes_and_backward(backend: str, arch: str, heads: int) -> None:
    torch.manual_seed(4)
    graph = five_node_graph()
    layer = make_conv(backend, arch, 3, 4, heads=heads, dropout=0.1)
    x = torch.randn(5, 3, requires_grad=True)
    out = layer(x, graph)
    assert out.shape == (5, 4)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_sage_backends_match() -> None:
    torch.manual_seed(5)
    graph = five_node_graph()
    x = torch.randn(5, 3)
    dgl_layer, pyg_layer = make_conv("dgl", "sage", 3, 4), make_conv("pyg", "sage", 3, 4)
    with torch.no_grad():
        pyg_layer.conv.lin_l.weight.copy_(dgl_layer.conv.fc_neigh.weight)
        pyg_layer.conv.lin_l.bias.copy_(dgl_layer.conv.fc_self.bias)
        pyg_layer.conv.lin_r.weight.copy_(dgl_layer.conv.fc_self.weight)
    torch.testing.assert_close(dgl_layer(x, graph), pyg_layer(x, graph), atol=1e-5, rtol=1e-5)


def test_unknown_names_list_allowed() -> None:
    with pytest.raises(ConfigError, match="allowed: gcn, sage, gat"):
        make_conv("dgl", "gin", 3, 4)
    with pytest.raises(ConfigError, match="allowed: dgl, pyg"):
        make_conv("jax", "gcn", 3, 4)


def test_graph_rejects_self_loops_and_bad_ids() -> None:
    with pytest.raises(ValueError, match="self loops"):
        Graph.from_numpy(np.array([[0, 1], [0, 0]]), 2)
    with pytest.raises(ValueError, match="node ids"):
        Graph.from_numpy(np.array([[0], [5]]), 2)
