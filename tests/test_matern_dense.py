"""The matern learner's fast paths: batched kNN graphs, dense kNN aggregation, local fit residuals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geostudy.config import to_dataclass
from geostudy.learners.matern.config import MaternConfig
from geostudy.learners.matern.data import FieldGraph, build_graph, build_graphs, collate
from geostudy.learners.matern.localfit import local_fit_features
from geostudy.learners.matern.model import estimator_loss
from geostudy.learners.matern.neighbours import Neighbourhood
from geostudy.learners.matern.simulate import FieldSet, simulate
from geostudy.learners.matern.train import build_model
from geostudy.nn.graphs import knn_neighbors


def _cfg(**raw) -> MaternConfig:
    return to_dataclass(MaternConfig, raw)


def test_one_query_gives_every_fields_own_knn_graph():
    rng = np.random.default_rng(0)
    # Fields of different sizes, one far from the unit square (the shift must exceed every extent).
    coords = [rng.random((30, 2)), rng.random((45, 2)) * 5 + 100, rng.random((13, 2))]
    cfg = _cfg(graph={"k": 12})
    together = build_graphs(coords, cfg.graph)
    for c, g in zip(coords, together):
        alone = build_graph(c, cfg.graph)
        d = np.linalg.norm(c[:, None] - c[None], axis=2) + np.eye(len(c)) * 1e9
        assert np.array_equal(g.neighbors, np.argsort(d, axis=1)[:, :12])
        assert np.array_equal(g.edges, alone.edges) and np.allclose(g.attr, alone.attr)
        assert np.allclose(g.attr[:, 0], np.sort(d, axis=1)[:, :12].ravel(), atol=1e-6)
    with pytest.raises(ValueError, match="more than k=12"):
        knn_neighbors([rng.random((12, 2))], 12)


def _batch(cfg: MaternConfig, count: int, seed: int = 0):
    fs = simulate(cfg, count, np.random.default_rng(seed))
    graphs = build_graphs(fs.coords, cfg.graph)
    return fs, graphs, collate(fs, graphs, cfg.free_params())


def test_whole_array_collate_equals_the_general_one():
    cfg = _cfg(data={"n": 40, "m_min": 1, "m_max": 4}, graph={"k": 6})
    fs, graphs, fast = _batch(cfg, 5)
    general = collate(fs, [FieldGraph(g.edges, g.attr) for g in graphs], cfg.free_params())
    assert fast.neighbors is not None and general.neighbors is None
    for name in ("x", "pos", "edge_index", "edge_attr", "node_graph", "graph_field", "edge_ptr", "node_ptr",
                 "graph_ptr", "target"):
        assert torch.equal(getattr(fast, name), getattr(general, name)), name


@pytest.mark.parametrize("depth", [0, 1])
def test_dense_knn_aggregation_equals_message_passing(depth):
    cfg = _cfg(data={"n": 60, "m_min": 1, "m_max": 3}, graph={"k": 10},
               model={"depth": depth, "hidden": 16, "deepsets_hidden": 16, "n_basis": 5})
    _, _, batch = _batch(cfg, 4)
    model = build_model(cfg)
    model.train()
    model(batch)  # sets the standardisation from this batch, as training would
    model.eval()
    with torch.no_grad():
        dense = model(batch)
        model.use_dense = False
        general = model(batch)
    assert torch.allclose(dense[0], general[0], atol=1e-5) and torch.allclose(dense[1], general[1], atol=1e-5)
    assert not torch.allclose(dense[0], torch.zeros_like(dense[0]))


def _fit(coords: np.ndarray, values: np.ndarray, k: int = 12) -> np.ndarray:
    fs = FieldSet([coords], [values[None, :]], {})
    cfg = _cfg(graph={"k": k})
    batch = collate(fs, build_graphs(fs.coords, cfg.graph))
    out = []
    for dense in (True, False):
        nbh = Neighbourhood(batch, use_dense=dense)
        out.append(local_fit_features(batch.x[:, 0].double(), batch.pos.double(), None, nbh).numpy())
    assert np.allclose(out[0], out[1], atol=1e-6)
    return out[0]


def test_local_fits_remove_planes_and_quadratics():
    rng = np.random.default_rng(1)
    c = rng.random((80, 2))
    x, y = c[:, 0], c[:, 1]
    plane = _fit(c, 1.0 + 2 * x - 3 * y)
    quad = _fit(c, 1.0 + 2 * x - 3 * y + 4 * x * x - x * y + 2 * y * y)
    # Residuals near zero where the model contains the field (the ridge leaves a tiny bias), not otherwise.
    assert np.all(plane[:, :2] < np.log(1e-5)) and np.all(quad[:, 1] < np.log(1e-5))
    assert np.median(quad[:, 0]) > np.log(1e-4) > np.median(quad[:, 1]) + 10
    # And on a random field, the quadratic fit's intercept is the least-squares one.
    z = rng.standard_normal(80)
    got = _fit(c, z)
    d = np.linalg.norm(c[:, None] - c[None], axis=2) + np.eye(80) * 9
    nb = np.argsort(d, axis=1)[:, :12]
    dx = c[nb] - c[:, None]
    a = np.concatenate([np.ones((80, 12, 1)), dx, dx[..., :1] ** 2, dx[..., :1] * dx[..., 1:], dx[..., 1:] ** 2], 2)
    icept = np.array([np.linalg.lstsq(a[i], z[nb[i]], rcond=None)[0][0] for i in range(80)])
    assert np.median(np.abs(np.log((z - icept) ** 2 + 1e-10) - got[:, 1])) < 1e-2
    assert np.allclose(got[:, 2], np.log(np.sort(d, axis=1)[:, :12].mean(1)), atol=1e-6)


def test_natural_point_loss_is_the_squared_error_in_parameter_units():
    center, half = torch.tensor([np.log(0.2)]), torch.tensor([1.0])
    target = torch.log(torch.tensor([[0.1], [0.3]]))
    point = torch.log(torch.tensor([[0.12], [0.25]]))
    loss = estimator_loss(point, None, target, center, half, level=0.9, quantile_weight=0.0, point_loss="natural")
    assert float(loss) == pytest.approx(((0.02**2 + 0.05**2) / 2) / 0.2**2, rel=1e-5)
    log_loss = estimator_loss(point, None, target, center, half, level=0.9, quantile_weight=0.0)
    assert float(log_loss) == pytest.approx(float(((point - target) ** 2).mean()), rel=1e-6)


def test_on_the_fly_sets_serve_reuse_epochs_epochs(monkeypatch):
    from pathlib import Path

    import geostudy.learners.matern.train as train_mod
    from geostudy.learners.base import RunContext

    calls = []
    real = train_mod.simulate

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "simulate", counting)
    for reuse, expected in ((1, 5), (2, 3)):
        calls.clear()
        cfg = _cfg(data={"n": 20, "train_size": 8, "reuse_epochs": reuse}, graph={"k": 4},
                   model={"hidden": 8, "deepsets_hidden": 8, "n_basis": 3, "depth": 0},
                   train={"epochs": 5, "batch_size": 8, "warmup_steps": 2})
        model = build_model(cfg)
        history = train_mod.train(cfg, model, RunContext(workdir=Path(".")), lambda epoch: {},
                                  rng=np.random.default_rng(0), device=torch.device("cpu"))
        assert len(calls) == expected and len(history) == 5
