"""Bench of the labeling learner: GCN epoch time on both backends vs raw DGL, and GCN vs MLP macro-F1.

Rows:
    epoch_seconds_dgl: one training epoch (forward + backward + Adam step) of a 2-layer GCN through
        our DGL path (``make_conv("dgl", "gcn")`` on a cached :class:`~geostudy.nn.gnn.Graph`) vs a
        raw ``dgl.nn.GraphConv`` loop on the same self-loop graph, features, widths and loss.
        Goal: <= 1.05x.
    epoch_seconds_pyg: the same through our PyG path (cached normalised CSR with a precomputed
        transpose) vs the same raw DGL loop. Goal: <= 1.2x.
    gcn_vs_mlp_f1: validation macro-F1 of the labeling learner with a GCN vs with an MLP on the
        synthetic survey (the graph must help: GCN >= MLP + 0.05).
    gnn_vs_boosted_trees_f1(_wells, _wells_lateral), missing_impute_f1, derived_features_f1: against tabular practice
        (gradient-boosted trees, dropping rows with gaps, no derived features); see
        ``bench/_labeling_tabular.py``.

Only the last three (minutes): ``python bench/labeling.py --quick --only tabular`` (writes
``out/bench/labeling_tabular.json``).

Timings: the graph is a symmetric kNN graph on random 2-D points (100k nodes / ~2M edges; quick:
20k nodes), 16 input features, hidden 64, 5 classes. After warm-up, the three loops run
interleaved (raw, dgl, pyg, raw, ...) so that load from other processes hits them alike; each row
gives the median epoch.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from tempfile import TemporaryDirectory

# Busy-waiting OpenMP threads collapse when the CPU is shared; passive waiting keeps timings fair.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("DGLBACKEND", "pytorch")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

IN_DIM, HIDDEN, CLASSES = 16, 64, 5


def _graph(n: int, k: int, seed: int = 0) -> np.ndarray:
    from geostudy.nn.graphs import knn_edges

    pts = np.random.default_rng(seed).random((n, 2))
    return knn_edges(pts, k)


def epoch_times(n: int, k: int, rounds: int, warmup: int = 2) -> dict[str, list[float]]:
    """Median-ready epoch times of raw DGL GraphConv, our DGL path and our PyG path, interleaved."""
    import dgl
    from dgl.nn import GraphConv

    from geostudy.learners.labeling.model import NodeClassifier
    from geostudy.nn.gnn import Graph

    edges = _graph(n, k)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, IN_DIM, generator=gen)
    y = torch.randint(0, CLASSES, (n,), generator=gen)

    # Raw DGL: the textbook loop, graph with self loops, GraphConv(norm="both").
    raw_graph = dgl.add_self_loop(dgl.graph((torch.from_numpy(edges[0]), torch.from_numpy(edges[1])), num_nodes=n))
    raw_layers = torch.nn.ModuleList([GraphConv(IN_DIM, HIDDEN), GraphConv(HIDDEN, CLASSES)])
    raw_opt = torch.optim.Adam(raw_layers.parameters(), lr=0.01)

    def raw_epoch() -> None:
        raw_opt.zero_grad()
        h = F.relu(raw_layers[0](raw_graph, x))
        loss = F.cross_entropy(raw_layers[1](raw_graph, h), y)
        loss.backward()
        raw_opt.step()

    graph = Graph.from_numpy(edges, n)
    ours = {}
    for backend in ("dgl", "pyg"):
        model = NodeClassifier("gcn", backend, IN_DIM, HIDDEN, CLASSES, layers=2, dropout=0.0)
        opt = torch.optim.Adam(model.parameters(), lr=0.01)

        def epoch(model=model, opt=opt) -> None:
            opt.zero_grad()
            loss = F.cross_entropy(model(x, graph), y)
            loss.backward()
            opt.step()

        ours[backend] = epoch

    loops = {"raw": raw_epoch, "dgl": ours["dgl"], "pyg": ours["pyg"]}
    times: dict[str, list[float]] = {name: [] for name in loops}
    for i in range(warmup + rounds):
        for name, fn in loops.items():
            start = time.perf_counter()
            fn()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    times["edges"] = [float(edges.shape[1])]
    return times


def f1_gap(quick: bool) -> tuple[float, float]:
    """Validation macro-F1 of the learner with a GCN and with an MLP, same data and training."""
    from geostudy.config import apply_overrides
    from geostudy.learners import RunContext, get_learner

    learner = get_learner("labeling")
    base = learner.default_config()
    sets = {"eval.figures": False, "model.backend": "pyg"}
    if quick:
        sets.update({"data.synthetic.n_lines": 8, "data.synthetic.stations_per_line": 40, "train.epochs": 60})
    scores = []
    for arch in ("gcn", "mlp"):
        config = apply_overrides(base, {**sets, "model.arch": arch})
        with TemporaryDirectory() as tmp:
            result = learner.run(config, RunContext(workdir=Path(tmp)))
        scores.append(result.metrics["val_f1_macro"])
    return scores[0], scores[1]


def run(quick: bool = False) -> list[dict]:
    from bench import _labeling_tabular

    n, rounds = (20_000, 15) if quick else (100_000, 11)
    times = epoch_times(n, k=18, rounds=rounds)
    raw = statistics.median(times["raw"])
    size = f"{n // 1000}k nodes / {times['edges'][0] / 1e6:.2f}M edges"
    gcn, mlp = f1_gap(quick)
    return [
        {"work": "epoch_seconds_dgl", "unit": "s", "ours": statistics.median(times["dgl"]), "baseline": raw,
         "baseline_name": f"raw DGL GraphConv loop ({size})", "lower_is_better": True, "goal": "<= 1.05x"},
        {"work": "epoch_seconds_pyg", "unit": "s", "ours": statistics.median(times["pyg"]), "baseline": raw,
         "baseline_name": f"raw DGL GraphConv loop ({size})", "lower_is_better": True, "goal": "<= 1.2x"},
        {"work": "gcn_vs_mlp_f1", "unit": "macro-F1", "ours": gcn, "baseline": mlp,
         "baseline_name": "our MLP (no graph), same data/training", "lower_is_better": False,
         "goal": "GCN >= MLP + 0.05"},
        *_labeling_tabular.run(quick),
    ]


if __name__ == "__main__":
    import argparse
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    parser = argparse.ArgumentParser(description="The labeling bench, or only its rows against tabular practice.")
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--only", choices=["tabular"], help="tabular: gnn_vs_boosted_trees_f1, missing_impute_f1, "
                        "derived_features_f1")
    args = parser.parse_args()
    from bench import run as bench_run

    if args.only:
        import types

        from bench import _labeling_tabular

        # run_bench imports bench.<name>: register the tabular rows under their own name, so they get
        # the same table and out/bench/labeling_tabular.json without a bench of their own in `all`.
        sys.modules["bench.labeling_tabular"] = types.SimpleNamespace(run=_labeling_tabular.run)  # type: ignore[assignment]
        bench_run.run_bench("labeling_tabular", args.quick, bench_run.ROOT / "out" / "bench")
    else:
        bench_run.run_bench("labeling", args.quick, bench_run.ROOT / "out" / "bench")
