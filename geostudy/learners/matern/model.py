"""The amortised estimator: variogram message passing, graph convolutions, readout, DeepSets, heads.

Per replicate graph:
1. :class:`VariogramConv` (a PyG ``MessagePassing``): each node averages ``(z_i - z_j)^2`` over its
   neighbours under learnable radial basis functions of the edge length (and, for space-time, of the
   time lag): a local empirical variogram. With ``local_fit``, the residuals of local plane and
   quadratic fits join it (``localfit``). Their logs are the node's input features. On kNN graphs both
   are dense ``(N, k)`` gathers instead of message passing (same result, several times faster).
2. ``depth`` graph convolutions from the shared factory (``gcn``/``sage``/``gat`` on PyG or DGL), with
   residual connections; edge weights are a fixed or a learned function of the distance.
3. A readout over the graph's nodes (mean, sum or attention pooling), concatenated with the log of the
   graph-level binned variogram (the pooled sums of step 1, a classical summary statistic).
Per field, DeepSets: a replicate MLP ``phi``, the mean over the field's replicates, and an MLP ``psi``
giving the free parameters on the unconstrained (log) scale, plus the lower and upper quantiles of a
central interval when the quantile head is on. Every pooling is a permutation-invariant mean or sum,
so shuffling nodes or replicates does not change the estimate.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import softmax

from geostudy.learners.matern.config import GraphConfig, ModelConfig
from geostudy.learners.matern.data import GraphBatch
from geostudy.learners.matern.localfit import N_NODE_FEATURES, local_fit_features
from geostudy.learners.matern.neighbours import Neighbourhood, segment_mean, segment_sum
from geostudy.nn.gnn import Graph, make_conv

EPS = 1e-6


class RadialBasis(nn.Module):
    """``K`` Gaussian bumps of a length with learnable centres and widths, initialised on ``[0, scale]``."""

    def __init__(self, k: int, scale: float) -> None:
        super().__init__()
        self.centres = nn.Parameter(torch.linspace(0.0, scale, k))
        self.log_width = nn.Parameter(torch.full((k,), math.log(max(scale / k, 1e-4) * 1.5)))

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        width = torch.exp(self.log_width)
        return torch.exp(-0.5 * ((d[:, None] - self.centres) / width) ** 2)


class VariogramConv(MessagePassing):
    """Local binned variogram and residual of each node, per radial basis function ``b_k`` of the edge.

    Aggregates ``sum_j b_k (z_i - z_j)^2``, ``sum_j b_k`` and ``sum_j b_k z_j`` over the neighbours; from
    them the model takes the local variogram ``sum_j b_k (z_i - z_j)^2 / sum_j b_k`` and the squared
    residual from the local weighted mean ``(z_i - sum_j b_k z_j / sum_j b_k)^2`` (a graph Laplacian; for
    smooth fields it removes the local gradient and keeps the irregular part that identifies the range).
    Spatial edges (time lag 0) use the spatial basis of their length, temporal edges (same site) the
    temporal basis of their lag, so a space-time node has both a spatial and a temporal variogram.
    """

    def __init__(self, n_basis: int, scale: float, time_scale: float | None = None) -> None:
        super().__init__(aggr="sum")
        self.space = RadialBasis(n_basis, scale)
        self.time = RadialBasis(n_basis, time_scale) if time_scale is not None else None
        self.out_dim = n_basis * (2 if self.time is not None else 1)

    def basis(self, edge_attr: torch.Tensor) -> torch.Tensor:
        ds, dt = edge_attr[:, 0], edge_attr[:, 1]
        b = self.space(ds)
        if self.time is None:
            return b
        is_time = (dt > 0).to(b.dtype)[:, None]
        return torch.cat([b * (1 - is_time), self.time(dt) * is_time], dim=1)

    def forward(
        self, x: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor, edge_ptr: torch.Tensor,
        nbh: Neighbourhood | None = None,
    ) -> torch.Tensor:
        """Returns ``(N, 3 * out_dim)``: weighted squared increments, weight sums, weighted values.

        ``edge_index`` must be sorted by target with CSR offsets ``edge_ptr`` (see ``GraphBatch``). With a
        dense ``nbh`` (kNN graph) the sums are a gather and an einsum instead of message passing.
        """
        basis = self.basis(edge_attr)
        if nbh is None or not nbh.dense:
            return self.propagate(edge_index, x=x, basis=basis, edge_ptr=edge_ptr)
        b = nbh.per_edge(basis)  # (N, k, K)
        xj = nbh.source(x[:, 0])  # (N, k)
        sq = (x - xj) ** 2
        return torch.cat([torch.einsum("nk,nkb->nb", sq, b), b.sum(1), torch.einsum("nk,nkb->nb", xj, b)], dim=1)

    def aggregate(  # type: ignore[override]
        self, inputs: torch.Tensor, index: torch.Tensor, edge_ptr: torch.Tensor, dim_size: int | None = None
    ) -> torch.Tensor:
        return segment_sum(inputs, edge_ptr)

    def message(self, x_i: torch.Tensor, x_j: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
        diff = x_i - x_j
        sq = diff * diff
        return torch.cat([basis * sq, basis, basis * x_j], dim=1)


class Standardize(nn.Module):
    """Fixed affine standardisation of features, set from the first batch it sees in training.

    The log features lie far from zero with very different spreads (log residuals around -8, log
    distances around -3); standardised, Adam's first steps already move every input's weight.
    """

    mean: torch.Tensor
    std: torch.Tensor
    ready: torch.Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.register_buffer("ready", torch.zeros((), dtype=torch.bool))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not bool(self.ready):
            with torch.no_grad():
                self.mean.copy_(x.mean(0))
                self.std.copy_(x.std(0).nan_to_num(1.0).clamp_min(1e-3) if len(x) > 1 else torch.ones_like(self.std))
                self.ready.fill_(True)
        return (x - self.mean) / self.std


class EdgeWeight(nn.Module):
    """Edge weights from (length, lag): ``fixed`` ``exp(-d/s - lag/s_t)``, ``learned`` (a small MLP), or none."""

    def __init__(self, kind: str, scale: float, time_scale: float) -> None:
        super().__init__()
        self.kind, self.scale, self.time_scale = kind, scale, time_scale
        if kind == "learned":
            self.mlp = nn.Sequential(nn.Linear(2, 16), nn.SiLU(), nn.Linear(16, 1))

    def forward(self, edge_attr: torch.Tensor) -> torch.Tensor | None:
        if self.kind == "none":
            return None
        scaled = torch.stack([edge_attr[:, 0] / self.scale, edge_attr[:, 1] / self.time_scale], dim=1)
        if self.kind == "fixed":
            return torch.exp(-scaled.sum(1))
        return F.softplus(self.mlp(scaled)).squeeze(1) + 1e-3


class Readout(nn.Module):
    """Mean, sum or attention pooling of node features over each graph."""

    def __init__(self, kind: str, dim: int) -> None:
        super().__init__()
        self.kind = kind
        if kind == "attention":
            self.gate = nn.Linear(dim, 1)

    def forward(self, h: torch.Tensor, index: torch.Tensor, ptr: torch.Tensor) -> torch.Tensor:
        """Pool the node rows ``h`` of each graph; nodes are grouped by graph (``index`` sorted, offsets ``ptr``)."""
        if self.kind == "mean":
            return segment_mean(h, ptr)
        if self.kind == "sum":
            return segment_sum(h, ptr)
        alpha = softmax(self.gate(h), index, ptr=ptr)
        return segment_sum(alpha * h, ptr)


def mlp(dims: list[int], dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(nn.SiLU())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class MaternEstimator(nn.Module):
    """Graph-of-replicates -> log-parameters (see the module docstring).

    Args:
        mcfg, gcfg: Model and graph configs.
        n_out: Number of free parameters ``P``.
        center, half_width: ``(P,)`` the prior's log-scale centre and half-width; the network's raw
            output is mapped to ``center + half_width * raw``.
        length_scale: Typical edge length (initialises the radial bases and the fixed edge weights).
        spacetime: Build the temporal basis too.
    """

    center: torch.Tensor
    half_width: torch.Tensor

    def __init__(
        self, mcfg: ModelConfig, gcfg: GraphConfig, n_out: int, center: torch.Tensor, half_width: torch.Tensor,
        *, length_scale: float, spacetime: bool = False, time_scale: float = 0.5,
    ) -> None:
        super().__init__()
        self.n_out = n_out
        self.quantiles = mcfg.quantiles
        self.register_buffer("center", center.float().clone())
        self.register_buffer("half_width", half_width.float().clone())
        self.vario = VariogramConv(mcfg.n_basis, 2.0 * length_scale, time_scale if spacetime else None)
        k = self.vario.out_dim
        self.edge_weight = EdgeWeight(gcfg.edge_weight if mcfg.arch == "gcn" else "none",
                                      gcfg.weight_scale, time_scale)
        self.local_fit = mcfg.local_fit
        self.density_aware = mcfg.density_aware
        self.use_dense = True  # dense kNN aggregation when the batch allows it (tests compare both paths)
        n_fit = N_NODE_FEATURES if self.local_fit else 0
        n_stats = 2 * k + 1 + n_fit  # local variograms, local residuals, z^2, local fit residuals
        # Graph summaries: the binned variogram, mean residuals, mean z^2, and per local fit residual the log
        # of its mean raw, over s^2 and over s^3, the mean of its log over s^3, and the mean log s.
        n_vario = 2 * k + 1 + (9 if self.local_fit else 0)
        n_summary = n_vario + (1 if self.density_aware else 0)  # and the log spacing
        self.embed = nn.Sequential(Standardize(n_stats), nn.Linear(n_stats, mcfg.hidden), nn.SiLU())
        self.summary_scale = Standardize(n_vario)
        self.convs = nn.ModuleList(
            make_conv(mcfg.backend, mcfg.arch, mcfg.hidden, mcfg.hidden, heads=mcfg.heads, dropout=mcfg.dropout)
            for _ in range(mcfg.depth)
        )
        self.readout = Readout(mcfg.readout, mcfg.hidden)
        self.skip = mcfg.variogram_skip
        pooled = mcfg.hidden + (n_summary if self.skip else 1 if self.density_aware else 0)
        self.spacing_scale = Standardize(1)
        w = mcfg.deepsets_hidden
        n_heads = n_out * (3 if self.quantiles else 1)
        self.phi = mlp([pooled, w, w], mcfg.dropout)
        self.psi = mlp([w, w, n_heads], mcfg.dropout)
        # A linear path from the log binned variogram: for small lags log gamma(d) is close to linear in
        # log(range) and log(variance), so this gets the bulk of the answer from the first steps on.
        self.direct = nn.Linear(n_summary, n_heads) if self.skip else None
        if self.direct is not None:
            nn.init.zeros_(self.direct.weight)
            nn.init.zeros_(self.direct.bias)

    def forward(self, batch: GraphBatch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns the point estimates ``(B, P)`` and, with the quantile head, ``(B, P, 2)`` lower/upper
        interval ends, all on the log scale."""
        x, ei, ea = batch.x, batch.edge_index, batch.edge_attr
        n, g = x.shape[0], batch.num_graphs
        k = self.vario.out_dim
        log_spacing = None
        if self.density_aware:
            # Edge lengths in units of the graph's mean spatial edge length: at any n the kNN edges then
            # fall on the same radial bases; the spacing itself goes to the readout, since the range is
            # asked for in unit-square units.
            spacing = graph_spacing(ea, batch.edge_ptr, batch.node_ptr)
            ea = torch.stack([ea[:, 0] / spacing[batch.node_graph[ei[1]]], ea[:, 1]], dim=1)
            log_spacing = self.spacing_scale(torch.log(spacing)[:, None])
        nbh = Neighbourhood(batch, use_dense=self.use_dense)
        agg = self.vario(x, ei, ea, batch.edge_ptr, nbh)
        num, den, wsum = agg[:, :k], agg[:, k:2 * k], agg[:, 2 * k:]
        resid = (x - wsum / (den + EPS)) ** 2 * (den > EPS)
        node_feat = torch.log(torch.cat([num / (den + EPS), resid, x * x], dim=1) + EPS)
        fit = None
        if self.local_fit:
            is_space = ea[:, 1] == 0
            spatial = None if bool(is_space.all()) else nbh.per_edge(is_space.to(x.dtype))
            fit = local_fit_features(x[:, 0], batch.pos, spatial, nbh)
            node_feat = torch.cat([node_feat, fit], dim=1)
        h = self.embed(node_feat)
        if len(self.convs):
            graph = Graph(ei, n, batch=batch.node_graph, num_graphs=g)
            weight = self.edge_weight(ea)
            for conv in self.convs:
                h = h + F.silu(conv(h, graph, edge_weight=weight))
        pooled = self.readout(h, batch.node_graph, batch.node_ptr)
        log_vario = None
        if self.skip:
            sums = segment_sum(torch.cat([num, den, resid, x * x, torch.ones_like(x)], dim=1), batch.node_ptr)
            counts = sums[:, -1:]
            vario = sums[:, :k] / (sums[:, k:2 * k] + EPS)
            means = sums[:, 2 * k:-1] / counts  # mean residuals and mean z^2
            log_vario = torch.log(torch.cat([vario, means], dim=1) + EPS)
            if fit is not None:
                log_vario = torch.cat([log_vario, fit_summaries(fit, batch.node_ptr)], dim=1)
            log_vario = self.summary_scale(log_vario)
            if log_spacing is not None:
                log_vario = torch.cat([log_vario, log_spacing], dim=1)
            pooled = torch.cat([pooled, log_vario], dim=1)
        elif log_spacing is not None:
            pooled = torch.cat([pooled, log_spacing], dim=1)
        rep = self.phi(pooled)
        field = segment_mean(rep, batch.graph_ptr)
        out = self.psi(field)
        if self.direct is not None and log_vario is not None:
            mean_log = segment_mean(log_vario, batch.graph_ptr)
            out = out + self.direct(mean_log)
        p = self.n_out
        point = self.center + self.half_width * out[:, :p]
        if not self.quantiles:
            return point, None
        lo = point - self.half_width * F.softplus(out[:, p:2 * p])
        hi = point + self.half_width * F.softplus(out[:, 2 * p:])
        return point, torch.stack([lo, hi], dim=2)


def graph_spacing(edge_attr: torch.Tensor, edge_ptr: torch.Tensor, node_ptr: torch.Tensor) -> torch.Tensor:
    """``(G,)`` mean length of each graph's spatial edges (time lag 0): the field's point spacing.

    Edges are sorted by target and nodes by graph, so a graph's edges are one contiguous segment.
    """
    spatial = (edge_attr[:, 1] == 0).to(edge_attr.dtype)
    graph_edges = edge_ptr[node_ptr]
    total = segment_sum(torch.stack([edge_attr[:, 0] * spatial, spatial], dim=1), graph_edges)
    return (total[:, 0] / total[:, 1].clamp_min(1.0)).clamp_min(1e-12)


def fit_summaries(fit: torch.Tensor, node_ptr: torch.Tensor) -> torch.Tensor:
    """``(G, 9)`` graph summaries of the local fit features ``(N, 3)`` (see ``MaternEstimator``)."""
    log_s = fit[:, 2:3]
    cols = []
    for j in range(2):
        log_r = fit[:, j:j + 1]
        cols += [log_r, log_r - 2 * log_s, log_r - 3 * log_s]
    raw = segment_mean(torch.exp(torch.cat(cols, dim=1)), node_ptr)
    logs = segment_mean(torch.cat([fit[:, :1] - 3 * log_s, fit[:, 1:2] - 3 * log_s, log_s], dim=1), node_ptr)
    return torch.cat([torch.log(raw + 1e-10), logs], dim=1)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def pinball(pred: torch.Tensor, target: torch.Tensor, q: float) -> torch.Tensor:
    """Quantile (pinball) loss of level ``q``, mean over elements."""
    diff = target - pred
    return torch.maximum(q * diff, (q - 1) * diff).mean()


def estimator_loss(
    point: torch.Tensor, interval: torch.Tensor | None, target: torch.Tensor, center: torch.Tensor,
    half_width: torch.Tensor, *, level: float, quantile_weight: float, point_loss: str = "log",
) -> torch.Tensor:
    """Squared error of the point estimates plus the pinball losses of the interval ends.

    ``point_loss="log"``: of the log-parameters standardised by the prior's half-width; ``"natural"``: of
    the parameters in their own units, over the prior's centre (the posterior mean, which minimises it,
    is then the target: right for an RMSE in range units, which large ranges dominate).
    """
    if point_loss == "natural":
        loss = (((torch.exp(point) - torch.exp(target)) / torch.exp(center)) ** 2).mean()
    else:
        loss = (((point - target) / half_width) ** 2).mean()
    if interval is not None and quantile_weight > 0:
        a = (1 - level) / 2
        lo, hi = interval[..., 0] / half_width, interval[..., 1] / half_width
        t = target / half_width
        loss = loss + quantile_weight * (pinball(lo, t, a) + pinball(hi, t, 1 - a))
    return loss
