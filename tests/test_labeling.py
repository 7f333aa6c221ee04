"""The labeling learner: data, graphs, splits, metrics, models on both backends, outputs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from geostudy.config import apply_overrides
from geostudy.errors import ConfigError, DataError
from geostudy.learners import RunContext, get_learner
from geostudy.learners.labeling import LabelingLearner, load_csv, synthetic_survey
from geostudy.learners.labeling.config import CsvConfig, GraphConfig, SplitConfig, SyntheticConfig
from geostudy.learners.labeling.evaluate import classification_metrics, confusion_matrix, per_class_f1
from geostudy.learners.labeling.graph import build_edges, lattice_edges
from geostudy.learners.labeling.train import class_weights, split_roles, standardize

TINY = {
    "data.synthetic.n_lines": 4,
    "data.synthetic.stations_per_line": 10,
    "data.synthetic.n_depths": 6,
    "train.epochs": 4,
    "model.hidden": 8,
    "device": "cpu",
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny graphs gain nothing from threads, and on a shared CPU spinning OpenMP threads cost 10x."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_config(**sets: Any) -> dict:
    learner = LabelingLearner()
    return apply_overrides(learner.default_config(), {**TINY, **sets})


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[int, dict]] = []

    def __call__(self, step: int, metrics: dict) -> None:
        self.calls.append((step, dict(metrics)))


# --------------------------------------------------------------------------------------------------
# Metrics


def test_metrics_hand_computed() -> None:
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2])
    cm = confusion_matrix(y_true, y_pred, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    # F1: class 0: 2*2/(3+2)=0.8; class 1: 2*1/(2+2)=0.5; class 2: 2*1/(1+2)=2/3.
    np.testing.assert_allclose(per_class_f1(cm), [0.8, 0.5, 2 / 3])
    m = classification_metrics(y_true, y_pred, 3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m["f1_macro"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert math.isnan(classification_metrics(np.array([], int), np.array([], int), 3)["accuracy"])


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_sklearn(seed: int) -> None:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    rng = np.random.default_rng(seed)
    k = 5
    y_true = rng.integers(0, k - 1, 60)  # class 4 never true ...
    y_pred = np.where(rng.random(60) < 0.6, y_true, rng.integers(0, k, 60))  # ... but may be predicted
    m = classification_metrics(y_true, y_pred, k)
    assert m["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    with pytest.warns(UserWarning) if 4 in y_pred else _nothing():
        assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert m["f1_macro"] == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0))


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None


# --------------------------------------------------------------------------------------------------
# Data


def test_synthetic_survey_structure_and_seed() -> None:
    cfg = SyntheticConfig(n_lines=3, stations_per_line=5, n_depths=4)
    s = synthetic_survey(cfg, seed=1)
    assert s.num_nodes == 60 and s.features.shape == (60, 4) and s.coords.shape == (60, 3)
    assert s.group_names() == ["L01", "L02", "L03"]
    assert set(np.unique(s.truth)) <= set(range(len(s.class_names)))
    again = synthetic_survey(SyntheticConfig(n_lines=3, stations_per_line=5, n_depths=4), seed=1)
    np.testing.assert_array_equal(s.features, again.features)
    other = synthetic_survey(cfg, seed=2)
    assert not np.array_equal(s.features, other.features)
    unl = synthetic_survey(SyntheticConfig(n_lines=3, stations_per_line=20, n_depths=4, unlabeled_fraction=0.5), seed=0)
    assert 0 < (unl.labels < 0).mean() < 1


def write_node_csv(path: Path, n_lines: int = 3, per_line: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for line in range(n_lines):
        for st in range(per_line):
            for d in range(2):
                z = -5.0 * d
                label = "sand" if d == 0 else ("clay" if st < per_line // 2 else "gravel")
                rows.append({"pid": f"p{line}-{st}-{d}", "X": 10.0 * st, "Y": 100.0 * line, "Z": z,
                             "rho": rng.normal(0 if d == 0 else 2, 0.1), "other": rng.random(),
                             "geo": label, "line": f"line{line}"})
    frame = pd.DataFrame(rows)
    frame.loc[[1, 5], "geo"] = ""  # unlabeled
    frame.to_csv(path, index=False)
    return frame


def csv_cfg(path: Path, **kw: Any) -> CsvConfig:
    base = dict(nodes=str(path), id="pid", coords=["X", "Y", "Z"], features=["rho", "other"], label="geo", group="line")
    base.update(kw)
    return CsvConfig(**base)


def test_csv_import_strings_unlabeled_and_edges(tmp_path: Path) -> None:
    nodes = tmp_path / "nodes.csv"
    frame = write_node_csv(nodes)
    pd.DataFrame({"U": [0, 1, 2], "V": [1, 2, 3]}).to_csv(tmp_path / "edges.csv", index=False)
    s = load_csv(csv_cfg(nodes, edges=str(tmp_path / "edges.csv")))
    assert s.class_names == ["clay", "gravel", "sand"]
    assert (s.labels < 0).sum() == 2 and s.labels[1] == -1 and s.labels[0] == 2
    assert s.feature_names == ["rho", "other"] and s.features.shape == (len(frame), 2)
    assert s.edges.tolist() == [[0, 1, 2], [1, 2, 3]]
    assert s.group_names() == ["line0", "line1", "line2"]
    # features: null takes every other numeric column.
    assert load_csv(csv_cfg(nodes, features=None)).feature_names == ["rho", "other"]


def test_csv_errors_name_file_and_column(tmp_path: Path) -> None:
    nodes = tmp_path / "nodes.csv"
    write_node_csv(nodes)
    with pytest.raises(DataError, match="missing.csv.*not found"):
        load_csv(csv_cfg(tmp_path / "missing.csv"))
    with pytest.raises(DataError) as err:
        load_csv(csv_cfg(nodes, label="lithology"))
    text = str(err.value)
    assert "nodes.csv" in text and "'lithology'" in text and "columns present: pid, X, Y, Z, rho, other, geo, line" in text
    assert "\n" not in text
    with pytest.raises(DataError, match="'depth'.*columns present"):
        load_csv(csv_cfg(nodes, features=["rho", "depth"]))
    pd.DataFrame({"A": [0], "B": [1]}).to_csv(tmp_path / "bad_edges.csv", index=False)
    with pytest.raises(DataError, match="bad_edges.csv.*'U'.*columns present: A, B"):
        load_csv(csv_cfg(nodes, edges=str(tmp_path / "bad_edges.csv")))
    pd.DataFrame({"U": [0], "V": [999]}).to_csv(tmp_path / "far_edges.csv", index=False)
    with pytest.raises(DataError, match="0-based"):
        load_csv(csv_cfg(nodes, edges=str(tmp_path / "far_edges.csv")))


def test_check_config_reports_missing_csv_before_running(tmp_path: Path) -> None:
    learner = get_learner("labeling")
    cfg = tiny_config(**{"data.source": "csv", "data.csv.nodes": str(tmp_path / "nope.csv")})
    with pytest.raises(DataError, match="nope.csv"):
        learner.check_config(cfg)
    with pytest.raises(ConfigError, match="model.arch"):
        learner.check_config(tiny_config(**{"model.arch": "transformer"}))
    with pytest.raises(ConfigError, match=r"^study.yaml: key 'data.features': unknown feature 'gamma'; available: log_cond"):
        learner.check_config(tiny_config(**{"data.features": ["log_cond", "gamma"]}), file="study.yaml")
    nodes = tmp_path / "one_group.csv"
    write_node_csv(nodes)
    one_group = tiny_config(**{"data.source": "csv", "data.csv.nodes": str(nodes), "data.csv.label": "geo",
                               "data.csv.coords": ["X", "Y", "Z"]})
    with pytest.raises(DataError, match="one_group.csv.*name a group column"):
        learner.check_config(one_group)


# --------------------------------------------------------------------------------------------------
# Graphs, splits, standardisation


def test_lattice_links_columns_stations_and_adjacent_lines() -> None:
    s = synthetic_survey(SyntheticConfig(n_lines=3, stations_per_line=4, n_depths=3), seed=0)
    edges = lattice_edges(s.coords, s.groups)
    pairs = set(map(tuple, edges.T.tolist()))
    node = lambda line, st, d: (line * 4 + st) * 3 + d  # noqa: E731  (generator order)
    assert (node(0, 0, 0), node(0, 0, 1)) in pairs  # vertical
    assert (node(0, 0, 0), node(0, 0, 2)) not in pairs
    assert (node(0, 1, 2), node(0, 2, 2)) in pairs  # along the line, same depth
    assert (node(0, 1, 2), node(0, 2, 1)) not in pairs
    # The nearest station of each adjacent line, same depth (stations are jittered, so it may be a
    # diagonal one), and never a line further.
    across = [v for u, v in pairs if u == node(1, 1, 1) and s.groups[v] != "L02"]
    assert {s.groups[v] for v in across} == {"L01", "L03"}
    assert all(v % 3 == 1 and abs(s.coords[v, 0] - s.coords[node(1, 1, 1), 0]) < 40 for v in across)
    assert not any(s.groups[u] == "L01" and s.groups[v] == "L03" for u, v in pairs)
    assert all((v, u) in pairs for u, v in pairs)  # symmetric
    inner = lattice_edges(s.coords, s.groups, within_group=True)
    assert (s.groups[inner[0]] == s.groups[inner[1]]).all()
    # Interior node: 2 vertical + 2 along + at least one on each adjacent line.
    assert 6 <= (edges[1] == node(1, 1, 1)).sum() <= 8


def test_graph_methods_within_group_and_cache(tmp_path: Path) -> None:
    s = synthetic_survey(SyntheticConfig(n_lines=3, stations_per_line=5, n_depths=3), seed=0)
    knn = build_edges(s, GraphConfig(method="knn", k=4, within_group=True, cache_dir=str(tmp_path)))
    assert (s.groups[knn[0]] == s.groups[knn[1]]).all() and (knn[0] != knn[1]).all()
    assert len(list(tmp_path.glob("graph-*.npz"))) == 1
    assert build_edges(s, GraphConfig(method="knn", k=4, within_group=True, cache_dir=str(tmp_path))) is knn
    radius = build_edges(s, GraphConfig(method="radius", radius=30.0, coord_scale=[1, 1, 5], max_neighbors=None))
    d = np.linalg.norm((s.coords[radius[0]] - s.coords[radius[1]]) * [1, 1, 5], axis=1)
    assert radius.shape[1] > 0 and (d < 30.0).all()
    with pytest.raises(ConfigError, match="data.csv.edges"):
        build_edges(s, GraphConfig(method="file"))


def test_splits_alternate_explicit_and_standardisation() -> None:
    s = synthetic_survey(SyntheticConfig(n_lines=6, stations_per_line=3, n_depths=2), seed=0)
    roles = split_roles(s, SplitConfig(mode="alternate", cycle=["train", "val", "test"]))
    by_group = {g: roles[s.groups == g][0] for g in s.group_names()}
    assert by_group == {"L01": "train", "L02": "val", "L03": "test", "L04": "train", "L05": "val", "L06": "test"}
    roles = split_roles(s, SplitConfig(mode="explicit", train=["L01", "L02"], val=["L06"]))
    assert {g: roles[s.groups == g][0] for g in s.group_names()}["L04"] == "test"
    with pytest.raises(ConfigError, match="'L09' is not in the data"):
        split_roles(s, SplitConfig(mode="explicit", train=["L09"], val=["L06"]))
    x = s.features
    z, mean, _ = standardize(x, roles == "train")
    np.testing.assert_allclose(z[roles == "train"].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(mean, x[roles == "train"].mean(0), rtol=1e-5)
    assert not np.allclose(z[roles == "test"].mean(0), 0, atol=1e-3)
    w = class_weights("balanced", np.array([0, 0, 0, 1]), 3)
    np.testing.assert_allclose(w, [4 / 6, 2.0, 0.0])


# --------------------------------------------------------------------------------------------------
# Runs


@pytest.mark.parametrize("backend", ["dgl", "pyg"])
@pytest.mark.parametrize("arch", ["gcn", "sage", "gat", "mlp"])
def test_every_model_runs_and_reports(arch: str, backend: str, tmp_path: Path) -> None:
    learner = get_learner("labeling")
    rec = Recorder()
    cfg = tiny_config(**{"model.arch": arch, "model.backend": backend, "model.residual": arch == "sage",
                         "model.layers": 3 if arch == "gat" else 2, "eval.figures": False, "optim.name": "adamw"})
    result = learner.run(cfg, RunContext(workdir=tmp_path, report=rec))
    assert [step for step, _ in rec.calls] == [0, 1, 2, 3]
    assert all("val_f1_macro" in m for _, m in rec.calls)
    assert {"val_accuracy", "val_balanced_accuracy", "val_f1_macro", "train_seconds"} <= set(result.metrics)
    assert not any(k.startswith("test_") for k in result.metrics)
    assert 0 <= result.metrics["val_f1_macro"] <= 1
    assert "test_confusion" not in result.tables and len(result.tables["val_confusion"]) == 5


def test_final_run_outputs_and_reproducibility(tmp_path: Path) -> None:
    learner = get_learner("labeling")
    cfg = tiny_config(**{"data.synthetic.unlabeled_fraction": 0.3, "data.features": "cond_depth",
                         "optim.name": "adamax"})
    first = learner.run(cfg, RunContext(workdir=tmp_path, final=True))
    assert {"test_accuracy", "test_balanced_accuracy", "test_f1_macro"} <= set(first.metrics)
    assert set(first.figures) == {"cross_section", "plan_view", "confusion_val", "confusion_test"}
    preds = pd.read_csv(first.files["predictions"], keep_default_na=False)
    assert len(preds) == 4 * 10 * 6
    probs = preds[[c for c in preds.columns if c.startswith("prob_")]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-4)
    assert (preds["label"] == "").any() and (preds.loc[preds["label"] == "", "predicted"] != "").all()
    assert set(preds["split"]) == {"train", "val", "test"}
    assert first.tables["features"] == ["log_cond", "log_cond_std", "depth"]
    assert set(first.tables["test_per_class_f1"]) == set(first.tables["classes"])
    second = learner.run(cfg, RunContext(workdir=tmp_path, final=True))
    assert {k: v for k, v in first.metrics.items() if k != "train_seconds"} == \
        {k: v for k, v in second.metrics.items() if k != "train_seconds"}
    import matplotlib.pyplot as plt

    plt.close("all")


def test_feature_subsets() -> None:
    learner = get_learner("labeling")
    for spec, expected in [("log_cond+depth", ["log_cond", "depth"]), (["elevation"], ["elevation"]),
                           ("conductivity", ["log_cond", "log_cond_std"])]:
        cfg = tiny_config(**{"data.features": spec, "train.epochs": 1, "eval.figures": False, "model.arch": "mlp"})
        assert learner.run(cfg, RunContext(workdir=Path("."))).tables["features"] == expected
    with pytest.raises(ConfigError, match="available features: log_cond, log_cond_std, depth, elevation"):
        learner.run(tiny_config(**{"data.features": "log_cond+conductance"}), RunContext(workdir=Path(".")))


def test_csv_end_to_end_with_edge_file(tmp_path: Path) -> None:
    nodes = tmp_path / "nodes.csv"
    frame = write_node_csv(nodes, n_lines=4, per_line=6)
    n = len(frame)
    u = np.arange(n - 1)
    pd.DataFrame({"U": u, "V": u + 1}).to_csv(tmp_path / "edges.csv", index=False)
    cfg = tiny_config(**{
        "data.source": "csv", "data.csv.nodes": str(nodes), "data.csv.edges": str(tmp_path / "edges.csv"),
        "data.csv.id": "pid", "data.csv.coords": ["X", "Y", "Z"], "data.csv.features": ["rho"],
        "data.csv.label": "geo", "data.csv.group": "line", "graph.method": "file",
        "split.mode": "explicit", "split.train": ["line0", "line2"], "split.val": ["line1"], "train.epochs": 3,
    })
    learner = get_learner("labeling")
    learner.check_config(cfg)
    result = learner.run(cfg, RunContext(workdir=tmp_path, final=True))
    preds = pd.read_csv(result.files["predictions"], keep_default_na=False)
    assert preds["pid"].tolist() == frame["pid"].tolist()  # the id column under its own name
    assert set(preds["predicted"]) <= {"clay", "gravel", "sand"}
    assert {"prob_clay", "prob_gravel", "prob_sand"} <= set(preds.columns)
    assert result.tables["num_edges"] == 2 * (n - 1)
    import matplotlib.pyplot as plt

    plt.close("all")


def test_nonfinite_loss_fails_cleanly(tmp_path: Path) -> None:
    from geostudy.errors import NonFiniteLossError

    cfg = tiny_config(**{"optim.lr": 1.0e30, "train.epochs": 30, "eval.figures": False, "model.arch": "mlp",
                         "train.class_weights": "none", "optim.weight_decay": 0.0})
    with pytest.raises(NonFiniteLossError, match="loss became"):
        get_learner("labeling").run(cfg, RunContext(workdir=tmp_path))


# --------------------------------------------------------------------------------------------------
# Well logs: missing values, derived features, classes, per-group results (issue 23)


def write_wells(path: Path, rows: list[dict[str, Any]]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def well_cfg(path: Path, **kw: Any) -> CsvConfig:
    base = dict(nodes=str(path), coords=["depth"], features=["gr"], label="facies", group="well")
    base.update(kw)
    return CsvConfig(**base)


def two_wells(path: Path) -> Path:
    """Well A: gr = 10 * depth with gaps at depths 2-3 and at the top; well B: gr around 1000, one gap."""
    nan = float("nan")
    rows = [{"well": "A", "depth": d, "gr": (nan if d in (0, 2, 3) else 10.0 * d), "facies": 1 + d % 2}
            for d in range(6)]
    rows += [{"well": "B", "depth": d + 0.5, "gr": (nan if d == 1 else 1000.0 + d), "facies": 1 + d % 2}
             for d in range(4)]
    return write_wells(path, rows)


def test_impute_interpolates_within_the_well_only(tmp_path: Path) -> None:
    s = load_csv(well_cfg(two_wells(tmp_path / "w.csv")))
    gr = s.select(["gr"])[:, 0]
    a, b = s.groups == "A", s.groups == "B"
    # A: depths 2 and 3 lie between valid samples at 1 (10) and 4 (40): linear interpolation.
    np.testing.assert_allclose(gr[a], [40.0, 10.0, 20.0, 30.0, 40.0, 50.0])
    # ... and depth 0, above the first valid sample, takes A's median of its valid values (10, 40, 50) = 40 —
    # never a value of well B, whose samples lie at depths in between.
    # B: depth 1.5 between 1000 (0.5) and 1002 (2.5).
    np.testing.assert_allclose(gr[b], [1000.0, 1001.0, 1002.0, 1003.0])
    assert s.imputed == 4
    # The indicator: 1 exactly where a value was filled.
    assert s.feature_names == ["gr", "gr_missing"]
    np.testing.assert_array_equal(s.select(["gr_missing"])[:, 0], [1, 0, 1, 1, 0, 0, 0, 1, 0, 0])
    no_flag = load_csv(well_cfg(tmp_path / "w.csv", missing_indicator=False))
    assert no_flag.feature_names == ["gr"]


def test_impute_group_then_global_median(tmp_path: Path) -> None:
    from geostudy.learners.labeling.missing import impute
    from geostudy.learners.labeling.sequences import build_sequences

    nan = float("nan")
    coords = np.array([[0.0], [1.0], [2.0], [0.0], [1.0], [0.0], [1.0]])
    groups = np.array(["A", "A", "A", "B", "B", "C", "C"])
    values = np.array([[nan], [4.0], [nan], [nan], [nan], [7.0], [9.0]])
    out = impute(values, build_sequences(coords, groups), groups)
    # A: both gaps are at an end -> A's median (4); B has nothing -> the global median of (4, 7, 9) = 7.
    np.testing.assert_allclose(out.values[:, 0], [4.0, 4.0, 4.0, 7.0, 7.0, 7.0, 9.0])
    assert out.count == 4 and out.missing[:, 0].tolist() == [True, False, True, True, True, False, False]


def test_missing_error_mode_lists_column_count_and_rows(tmp_path: Path) -> None:
    path = two_wells(tmp_path / "w.csv")
    with pytest.raises(DataError) as err:
        load_csv(well_cfg(path, missing="error"))
    text = err.value.one_line()
    # Rows are file line numbers (header = 1): A's depths 0, 2, 3 are lines 2, 4, 5; B's depth 1.5 is line 9.
    assert "column 'gr' has 4 missing value(s), at rows 2, 4, 5, 9 (line numbers)" in text
    assert "w.csv" in text and "data.csv.missing" in text and "np." not in text and "\n" not in text
    dropped = load_csv(well_cfg(path, missing="drop_rows"))
    assert dropped.num_nodes == 6 and not np.isnan(dropped.features).any() and dropped.imputed == 0
    assert dropped.ids.tolist() == [1, 4, 5, 6, 8, 9]  # the row numbers of the rows kept


def test_derived_features_hand_computed_and_restart_at_each_group() -> None:
    from geostudy.learners.labeling.derived import derive
    from geostudy.learners.labeling.sequences import build_sequences

    # Two wells, rows shuffled: W1 at depths 0, 1, 2, 4 with v = 1, 3, 7, 9; W2 at depths 0, 2 with v = 100, 104.
    depth = np.array([2.0, 0.0, 0.0, 4.0, 1.0, 2.0])
    groups = np.array(["W1", "W1", "W2", "W1", "W1", "W2"])
    v = np.array([[7.0], [1.0], [100.0], [9.0], [3.0], [104.0]])
    seqs = build_sequences(depth[:, None], groups)
    names = ["v_diff", "v_grad", "v_mean3", "v_std3", "relpos", "v_mean2"]
    out = derive(names, v, ["v"], seqs)
    w1 = [1, 4, 0, 3]  # rows of W1 in depth order
    w2 = [2, 5]
    col = {n: out[:, i] for i, n in enumerate(names)}
    np.testing.assert_allclose(col["v_diff"][w1], [0, 2, 4, 2])
    np.testing.assert_allclose(col["v_diff"][w2], [0, 4])  # restarts: no 100 - 9
    # gradient against depth: ends one-sided, inside numpy.gradient's non-uniform central difference.
    np.testing.assert_allclose(col["v_grad"][w1], np.gradient([1.0, 3, 7, 9], [0.0, 1, 2, 4]))
    np.testing.assert_allclose(col["v_grad"][w2], [2.0, 2.0])
    np.testing.assert_allclose(col["v_mean3"][w1], [2, 11 / 3, 19 / 3, 8])
    np.testing.assert_allclose(col["v_mean3"][w2], [102, 102])
    np.testing.assert_allclose(col["v_std3"][w1], [1, np.std([1, 3, 7]), np.std([3, 7, 9]), 1])
    np.testing.assert_allclose(col["v_mean2"][w1], [1, 2, 5, 8])  # window: 1 before, 0 after
    np.testing.assert_allclose(col["relpos"][w1], [0, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(col["relpos"][w2], [0, 1])


def test_derived_feature_names_are_checked_and_usable() -> None:
    learner = get_learner("labeling")
    cfg = tiny_config(**{"data.derived": ["log_cond_grad", "log_cond_mean3", "relpos"],
                         "data.features": "log_cond+log_cond_grad+relpos", "eval.figures": False})
    result = learner.run(cfg, RunContext(workdir=Path(".")))
    assert result.tables["features"] == ["log_cond", "log_cond_grad", "relpos"]
    for bad, words in [(["log_cond_mean"], "window"), (["gamma_grad"], "unknown feature 'gamma'"),
                       (["log_cond_median3"], "not a derived feature")]:
        with pytest.raises(ConfigError, match=words):
            learner.check_config(tiny_config(**{"data.derived": bad}))
    with pytest.raises(ConfigError, match="unknown feature 'relpos'"):
        learner.check_config(tiny_config(**{"data.features": ["log_cond", "relpos"]}))


def facies_table(path: Path, n_wells: int = 4, n: int = 20, extra: dict[str, int] | None = None) -> Path:
    """Wells W1..Wn with gr tracking facies 1/2/3 in layers; ``extra`` puts code 9 into one well."""
    rng = np.random.default_rng(0)
    rows = []
    for w in range(n_wells):
        for d in range(n):
            facies = 1 + (d * 3) // n
            rows.append({"uwi": f"id{w}-{d}", "well": f"W{w + 1}", "depth": 100.0 + d, "facies": facies,
                         "gr": 20.0 * facies + rng.normal(0, 3), "rt": rng.normal(0, 1)})
    frame = pd.DataFrame(rows)
    for well, count in (extra or {}).items():
        frame.loc[frame.index[frame["well"] == well][:count], "facies"] = 9
    frame.to_csv(path, index=False)
    return path


def test_unknown_class_code_error_or_unlabeled(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = facies_table(tmp_path / "f.csv", extra={"W2": 3})
    classes = {1: "SS", 2: "CSiS", 3: "FSiS"}
    with pytest.raises(DataError) as err:
        load_csv(well_cfg(path, features=["gr"], classes=classes))
    text = err.value.one_line()
    assert "'9' outside data.csv.classes (3 row(s), at rows 22, 23, 24)" in text and "allowed: 1, 2, 3" in text
    with caplog.at_level("WARNING", logger="geostudy"):
        s = load_csv(well_cfg(path, features=["gr"], classes=classes, unknown_labels="unlabeled"))
    assert s.class_names == ["SS", "CSiS", "FSiS"] and s.class_codes == ["1", "2", "3"]
    assert (s.labels == -1).sum() == 3 and "3 label(s) with code(s) '9'" in caplog.text
    # A fixed list keeps a class that no well holds.
    s = load_csv(well_cfg(facies_table(tmp_path / "g.csv"), features=["gr"], classes=[1, 2, 3, 4]))
    assert s.class_names == ["1", "2", "3", "4"]


def test_class_only_outside_training_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = facies_table(tmp_path / "f.csv", extra={"W4": 2})
    cfg = tiny_config(**{"data.source": "csv", "data.csv.nodes": str(path), "data.csv.coords": ["depth"],
                         "data.csv.features": ["gr", "rt"], "data.csv.label": "facies", "data.csv.group": "well",
                         "graph.method": "knn", "graph.k": 2, "split.mode": "explicit", "split.train": ["W1", "W2"],
                         "split.val": ["W3"], "eval.figures": False})
    with caplog.at_level("WARNING", logger="geostudy"):
        result = get_learner("labeling").run(cfg, RunContext(workdir=tmp_path))
    assert "class(es) '9' appear only outside the training groups" in caplog.text
    assert any("'9'" in w for w in result.tables["warnings"])


def test_well_table_end_to_end_per_group_metrics_and_predictions(tmp_path: Path) -> None:
    path = facies_table(tmp_path / "f.csv", n_wells=5)
    frame = pd.read_csv(path)
    frame.loc[5:9, "gr"] = np.nan  # a log missing over an interval of W1
    frame.loc[30, "facies"] = np.nan  # an unlabeled sample in W2
    frame.to_csv(path, index=False)
    cfg = tiny_config(**{"data.source": "csv", "data.csv.nodes": str(path), "data.csv.id": "uwi",
                         "data.csv.coords": ["depth"], "data.csv.features": ["gr", "rt"], "data.csv.label": "facies",
                         "data.csv.group": "well", "data.csv.classes": {1: "SS", 2: "CSiS", 3: "FSiS"},
                         "data.derived": ["gr_mean3", "relpos"], "graph.method": "lattice", "split.mode": "explicit",
                         "split.train": ["W1", "W2"], "split.val": ["W3"], "train.epochs": 5})
    learner = get_learner("labeling")
    learner.check_config(cfg)
    result = learner.run(cfg, RunContext(workdir=tmp_path, final=True))
    assert result.metrics["imputed_values"] == 5
    assert result.tables["features"] == ["gr", "rt", "gr_missing", "gr_mean3", "relpos"]
    assert result.tables["num_edges"] == 2 * 5 * 19  # lattice on depth alone: consecutive samples of each well
    rows = result.tables["per_group"]
    assert [r["group"] for r in rows] == ["W3", "W4", "W5"]  # val, then the test wells (every other group)
    for role in ("val", "test"):
        mine = [r for r in rows if r["split"] == role]
        labeled = sum(r["labeled"] for r in mine)
        assert labeled == 20 * len(mine)
        assert sum(r["correct"] for r in mine) / labeled == pytest.approx(result.metrics[f"{role}_accuracy"])
        assert all(r["f1_micro"] == pytest.approx(r["accuracy"]) for r in mine)
    assert result.metrics["test_f1_micro"] == pytest.approx(result.metrics["test_accuracy"])
    per_group = pd.read_csv(result.files["per_group_metrics"])
    assert per_group["labeled"].sum() == 60
    preds = pd.read_csv(result.files["predictions"], keep_default_na=False)
    assert len(preds) == 100 and preds["uwi"].tolist() == frame["uwi"].tolist()
    assert {"prob_SS", "prob_CSiS", "prob_FSiS", "label_code", "predicted_code"} <= set(preds.columns)
    assert set(preds["predicted"]) <= {"SS", "CSiS", "FSiS"} and preds.loc[30, "label"] == ""
    assert set(result.figures) == {"log_strips", "confusion_val", "confusion_test"}
    import matplotlib.pyplot as plt

    fig = result.figures["log_strips"]
    first = fig.axes[0]
    assert first.yaxis_inverted() and first.get_title() == "W4"  # depth downwards; the test wells
    plt.close("all")


def test_coord_scale_must_match_the_coordinates(tmp_path: Path) -> None:
    path = facies_table(tmp_path / "f.csv")
    cfg = tiny_config(**{"data.source": "csv", "data.csv.nodes": str(path), "data.csv.coords": ["depth"],
                         "data.csv.features": ["gr"], "data.csv.label": "facies", "data.csv.group": "well",
                         "graph.method": "knn", "graph.coord_scale": [1.0, 1.0, 5.0]})
    with pytest.raises(ConfigError, match=r"graph.coord_scale.*one factor per coordinate \(1: depth\)"):
        get_learner("labeling").check_config(cfg)
    get_learner("labeling").check_config(apply_overrides(cfg, {"graph.coord_scale": [2.0]}))
    get_learner("labeling").check_config(apply_overrides(cfg, {"graph.coord_scale": None}))


def test_study_pruners_wait_for_learning() -> None:
    """No labeling study prunes a trial in its first tenth of epochs, nor before it has peers to compare with."""
    import yaml

    from geostudy.learners.base import REPO_ROOT

    files = sorted((REPO_ROOT / "studies").glob("labeling*.yaml"))
    assert files
    for path in files:
        study = yaml.safe_load(path.read_text())
        epochs = study.get("set", {}).get("train.epochs", 150)
        pruner = study.get("pruner") or {"name": "nop"}
        while pruner["name"] == "patient":
            pruner = pruner["args"]["wrapped"]
        args = pruner.get("args", {})
        if pruner["name"] in ("median", "percentile", "wilcoxon"):
            assert args.get("n_warmup_steps", 0) >= epochs / 10 and args.get("n_startup_trials", 5) >= 2, path
        elif pruner["name"] in ("hyperband", "successive_halving"):
            assert args.get("min_resource", 1) >= epochs / 10, path
        else:
            assert pruner["name"] == "nop" or study.get("metrics", [None])[1:], path
