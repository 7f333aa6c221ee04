"""Mogi learner: forward model, LOS, noise covariance, dataset spec, training, matrix, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from geostudy.config import apply_overrides, load_yaml, to_dataclass
from geostudy.errors import ConfigError, DataError
from geostudy.learners import get_learner
from geostudy.learners.base import REPO_ROOT, RunContext
from geostudy.learners.mogi import los_vector, mogi_displacements, parse_spec, project_los, wrap_phase
from geostudy.learners.mogi.config import parse_config
from geostudy.learners.mogi.data import DataConfig, Simulator
from geostudy.learners.mogi.noise import (
    _filter,
    correlated_noise,
    covariance,
    empirical_covariance,
    holes_mask,
)

# Tiny runs: 16 x 16 maps, a few dozen samples, two epochs.
TINY = {"data.grid.n": 16, "model.pool": 1, "model.width": 4, "model.depth": 2, "model.hidden": 8,
        "train.n_train": 48, "train.n_val": 16, "train.n_test": 24, "train.epochs": 2, "train.batch_size": 16,
        "eval.baseline_maps": 2, "eval.figures": False}


def tiny_config(**extra: object) -> dict:
    return apply_overrides(get_learner("mogi").default_config(), {**TINY, **extra})


# ------------------------------------------------------------------------------------- forward model


def test_uz_at_epicentre_is_hand_value() -> None:
    nu, dv, d = 0.25, 1.0e6, 2.0
    ux, uy, uz = mogi_displacements(np.array([[1.5]]), np.array([[-2.0]]), 1.5, -2.0, d, dv, nu)
    expected = (1 - nu) * dv / (math.pi * (d * 1000) ** 2)  # 0.0596831 m
    assert uz[0, 0] == pytest.approx(expected, rel=1e-12)
    assert uz[0, 0] == pytest.approx(0.0596831, rel=1e-6)
    assert ux[0, 0] == 0 and uy[0, 0] == 0


def test_displacements_off_axis_hand_values() -> None:
    # d = 4 km, r = 3 km east -> R = 5 km; C = 0.75e6 / pi = 238732.41
    ux, uy, uz = mogi_displacements(np.array([3.0]), np.array([0.0]), 0.0, 0.0, 4.0, 1.0e6, 0.25)
    assert uz[0] == pytest.approx(238732.414 * 4000 / 5000**3, rel=1e-6)  # 0.00763944
    assert ux[0] == pytest.approx(0.00572958, rel=1e-5)
    assert uy[0] == pytest.approx(0.0, abs=1e-15)
    # r = d: uz = ur = uz(0) / 2^1.5, here to the north-west (ux = uy < 0 components)
    s = 2.0 / math.sqrt(2)
    ux, uy, uz = mogi_displacements(np.array([-s]), np.array([s]), 0.0, 0.0, 2.0, 1.0e6, 0.25)
    assert uz[0] == pytest.approx(0.0596831 / 2**1.5, rel=1e-6)
    assert math.hypot(ux[0], uy[0]) == pytest.approx(uz[0], rel=1e-12)
    assert ux[0] < 0 < uy[0]


def test_displacements_batch_matches_single_and_float32() -> None:
    x, y = np.meshgrid(np.linspace(-5, 5, 7), np.linspace(-5, 5, 7))
    batch = mogi_displacements(x, y, np.array([0.0, 1.0]), np.array([0.0, -1.0]), np.array([2.0, 5.0]),
                               np.array([1e6, 1e7]), np.array([0.25, 0.3]))
    single = mogi_displacements(x, y, 1.0, -1.0, 5.0, 1e7, 0.3)
    assert batch[2].shape == (2, 7, 7)
    np.testing.assert_allclose(batch[2][1], single[2], rtol=1e-12)
    f32 = mogi_displacements(x.astype(np.float32), y.astype(np.float32), 1.0, -1.0, 5.0, 1e7, 0.3)
    assert f32[2].dtype == np.float32
    np.testing.assert_allclose(f32[2], single[2], rtol=1e-5)


# --------------------------------------------------------------------------------- line of sight


def test_los_hand_cases() -> None:
    # Vertical look: LOS is uz.
    assert project_los(1.0, 2.0, 3.0, 0.0, 37.0) == pytest.approx(3.0)
    # Flying north (heading 0), right-looking east, incidence 30: the satellite is to the west.
    np.testing.assert_allclose(los_vector(30.0, 0.0), [-0.5, 0.0, math.sqrt(3) / 2], atol=1e-12)
    assert project_los(1.0, 0.0, 0.0, 30.0, 0.0) == pytest.approx(-0.5)  # east = away from the satellite
    # Flying east (heading 90), looking south: the satellite is to the north.
    assert project_los(0.0, 1.0, 0.0, 30.0, 90.0) == pytest.approx(0.5)
    # Sentinel-1 ascending (heading -10, incidence 34): uplift 1 m -> cos 34; east 1 m -> -sin 34 cos 10.
    assert project_los(0.0, 0.0, 1.0, 34.0, -10.0) == pytest.approx(math.cos(math.radians(34)))
    assert project_los(1.0, 0.0, 0.0, 34.0, -10.0) == pytest.approx(-math.sin(math.radians(34)) * math.cos(math.radians(10)))
    assert np.linalg.norm(los_vector(34.0, -10.0)) == pytest.approx(1.0)


def test_wrap_phase() -> None:
    lam = 0.0555
    np.testing.assert_allclose(wrap_phase(np.array([0.0, lam / 8, -lam / 8, lam / 2, lam / 4 + 1e-9]), lam),
                               [0.0, math.pi / 2, -math.pi / 2, 0.0, -math.pi], atol=1e-6)
    assert np.all(np.abs(wrap_phase(np.linspace(-1, 1, 1001), lam)) <= math.pi)


# ---------------------------------------------------------------------------------------- noise


@pytest.mark.parametrize("kind", ["exponential", "gaussian"])
def test_noise_covariance_matches_model(kind: str) -> None:
    rng = np.random.default_rng(0)
    dx, length, amp = 1.0, 4.0, 2.0
    fields = correlated_noise(rng, 300, 48, dx, kind, length, amp)
    lags = [(0, 0), (0, 1), (1, 0), (0, 3), (2, 2), (0, 6), (5, 0)]
    emp = empirical_covariance(fields, lags)
    model = covariance(np.array([math.hypot(a, b) * dx for a, b in lags]), kind, length, amp)
    np.testing.assert_allclose(emp, model, atol=0.06 * amp**2)


def test_white_noise_adds_at_lag_zero_only() -> None:
    cfg = to_dataclass(DataConfig, {"grid": {"n": 32, "extent_km": 32.0},
                                    "noise": {"kind": "gaussian", "length_km": 3.0, "amplitude_m": 0.01, "white_m": 0.01},
                                    "spec": {"distributions": {"depth_km": {"dist": "uniform", "low": 2, "high": 3}}}})
    fields = Simulator(cfg).noise(np.random.default_rng(1), 400)
    emp = empirical_covariance(fields, [(0, 0), (0, 2)])
    assert emp[0] == pytest.approx(2e-4, rel=0.06)  # 0.01² correlated + 0.01² white
    assert emp[1] == pytest.approx(1e-4 * math.exp(-4 / 9), rel=0.12)


def test_embedding_is_positive_and_holes_fraction() -> None:
    for kind, length in [("exponential", 6.0), ("exponential", 30.0), ("gaussian", 10.0)]:
        sqrt_eig, m = _filter(64, 0.625, kind, length)
        assert m >= 128 and np.all(np.isfinite(sqrt_eig))
    mask = holes_mask(np.random.default_rng(0), 8, 32, 1.0, 0.2, 3.0)
    assert mask.shape == (8, 32, 32)
    assert mask.mean() == pytest.approx(0.2, abs=0.02)


# ------------------------------------------------------------------------------------ dataset spec

SPEC = {
    "fixed": {"nu": 0.25, "x0_km": 1.0},
    "distributions": {
        "depth_km": {"dist": "uniform", "low": 2.0, "high": 8.0},
        "dv_m3": {"dist": "loguniform", "low": 1.0e6, "high": 1.0e8},
        "y0_km": {"dist": "normal", "mean": 0.0, "std": 2.0},
    },
    "train": {"y0_km": [0.1, 0.9]},
    "test": {"depth_km": [-0.25, 1.25], "dv_m3": [-0.5, 1.5], "y0_km": [0.0001, 0.9999]},
}


def test_spec_quantile_intervals_give_ranges() -> None:
    from scipy import stats

    spec = parse_spec(SPEC)
    assert spec.value_range("depth_km") == pytest.approx((2.0, 8.0))
    assert spec.value_range("depth_km", "test") == pytest.approx((0.5, 9.5))
    assert spec.value_range("dv_m3", "test") == pytest.approx((1.0e5, 1.0e9), rel=1e-9)
    assert spec.value_range("y0_km") == pytest.approx((stats.norm.ppf(0.1, 0, 2), stats.norm.ppf(0.9, 0, 2)))
    rng = np.random.default_rng(0)
    train, test = spec.sample(rng, 4000), spec.sample(rng, 4000, "test")
    assert np.all(train["x0_km"] == 1.0) and np.all(train["nu"] == 0.25)
    assert train["depth_km"].min() >= 2.0 and train["depth_km"].max() <= 8.0
    assert abs(train["y0_km"]).max() <= stats.norm.ppf(0.9, 0, 2) + 1e-12
    assert spec.in_range(train).all()
    assert test["depth_km"].min() < 2.0 and test["depth_km"].max() > 8.0
    assert test["dv_m3"].min() >= 1e5 and test["dv_m3"].max() <= 1e9
    # Out of range: depth 1/3, dv 1/2, y0 ~0.2 of the draws, independently.
    expected_in = (2 / 3) * (1 / 2) * 0.8
    assert spec.in_range(test).mean() == pytest.approx(expected_in, abs=0.03)
    # Log-uniform: half the draws below the geometric mid-point.
    assert np.mean(train["dv_m3"] < 1e7) == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize("dist", [{"dist": "lognormal", "mu": 1.5, "sigma": 0.3}, {"dist": "exponential", "scale": 2.0, "loc": 1.0}])
def test_spec_other_distributions(dist: dict) -> None:
    spec = parse_spec({"distributions": {"depth_km": dist, "dv_m3": {"dist": "uniform", "low": 1e6, "high": 2e6}},
                       "train": {"depth_km": [0.05, 0.95]}})
    lo, hi = spec.value_range("depth_km")
    draws = spec.sample(np.random.default_rng(0), 2000)["depth_km"]
    assert lo > 0 and draws.min() >= lo and draws.max() <= hi
    assert np.median(draws) == pytest.approx(spec.central("depth_km"), rel=0.05)


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"distributions": {"depth_km": {"dist": "gamma", "a": 2}}}, ["unknown distribution 'gamma'", "uniform, loguniform, normal, lognormal, exponential", "depth_km.dist"]),
        ({"distributions": {"depth_km": {"dist": "uniform", "low": -1.0, "high": 5.0}}}, ["depth must be > 0", "depth_km"]),
        ({"distributions": {"depth_km": {"dist": "uniform", "low": 0.5, "high": 5.0}}, "test": {"depth_km": [-0.2, 1.0]}},
         ["depth must be > 0", "test.depth_km"]),
        ({"distributions": {"depth_km": {"dist": "normal", "mean": 5.0, "std": 1.0}}}, ["depth must be > 0"]),
        ({"distributions": {"depth_km": {"dist": "normal", "mean": 5.0, "std": 1.0}}, "test": {"depth_km": [0.1, 1.2]}},
         ["must lie in [0, 1]"]),
        ({"distributions": {"depth": {"dist": "uniform", "low": 1, "high": 2}}}, ["unknown variable 'depth'", "depth_km"]),
        ({"distributions": {"depth_km": {"dist": "uniform", "low": 1}}}, ["needs low, high"]),
        ({"distributions": {"dv_m3": {"dist": "uniform", "low": 1, "high": 2, "mean": 3}}}, ["unknown parameter 'mean'"]),
    ],
)
def test_spec_bad_input(spec: dict, words: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        parse_spec(spec)
    text = _one_line(err)
    for word in words:
        assert word in text


def test_config_bad_input_is_config_error() -> None:
    learner = get_learner("mogi")
    bad = tiny_config(**{"data.spec.distributions.depth_km": {"dist": "weibull", "k": 1}})
    with pytest.raises(ConfigError, match="unknown distribution 'weibull'; allowed: uniform"):
        learner.check_config(bad)
    with pytest.raises(ConfigError, match="model.targets"):
        learner.check_config(tiny_config(**{"model.targets": ["depth_km"]}))
    with pytest.raises(ConfigError, match="matrix.checkpoint"):
        learner.check_config(tiny_config(mode="matrix"))


# ------------------------------------------------------------------------- training and the matrix


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    work = tmp_path_factory.mktemp("mogi_train")
    steps: list[int] = []
    result = get_learner("mogi").run(tiny_config(), RunContext(workdir=work, report=lambda s, m: steps.append(s), final=True))
    assert steps == [0, 1]
    return work, result


def test_tiny_training_run_metrics_and_checkpoint(tiny_run: tuple[Path, object]) -> None:
    work, result = tiny_run
    learner = get_learner("mogi")
    for name in learner.metrics:
        assert math.isfinite(result.metrics[name]), name  # type: ignore[attr-defined]
    for name in ("test_in_depth_rmse", "test_out_dv_rel_error", "cmp_lsq_depth_rmse", "cmp_lsq_seconds_per_map"):
        assert name in result.metrics  # type: ignore[attr-defined]
    assert result.files["checkpoint"] == work / "mogi_model.pt"  # type: ignore[attr-defined]
    import torch

    state = torch.load(work / "mogi_model.pt", weights_only=True)
    assert state["transform"]["targets"] == ["depth_km", "dv_m3"]
    # Same seed, same numbers.
    again = learner.run(tiny_config(), RunContext(workdir=work / "again"))
    assert again.metrics["val_loss"] == pytest.approx(result.metrics["val_loss"], rel=1e-6)  # type: ignore[attr-defined]


def test_matrix_output_shapes(tiny_run: tuple[Path, object], tmp_path: Path) -> None:
    work, _ = tiny_run
    cfg = tiny_config(mode="matrix", **{"matrix.checkpoint": str(work / "mogi_model.pt"), "matrix.x.n": 6,
                                         "matrix.y.n": 5, "matrix.y.low": 2.0e6, "matrix.y.high": 5.0e7})
    learner = get_learner("mogi")
    learner.check_config(cfg)
    result = learner.run(cfg, RunContext(workdir=tmp_path, final=True))
    for target in ("depth_km", "dv_m3"):
        for kind in ("pred", "diff", "reldiff"):
            arr = np.load(tmp_path / f"matrix_{kind}_{target}.npy")
            assert arr.shape == (5, 6) and np.isfinite(arr).all()
        assert (tmp_path / f"matrix_{target}.png").stat().st_size > 0
    xs = np.load(tmp_path / "matrix_axis_x_depth_km.npy")
    ys = np.load(tmp_path / "matrix_axis_y_dv_m3.npy")
    assert xs[0] == pytest.approx(2.0 - 0.15 * 6) and xs[-1] == pytest.approx(8.0 + 0.15 * 6)  # default: test range
    np.testing.assert_allclose(ys, np.geomspace(2.0e6, 5.0e7, 5))  # loguniform: log spacing
    # diff is pred - truth in km (depth) and log10 m³ (dv)
    pred = np.load(tmp_path / "matrix_pred_depth_km.npy")
    np.testing.assert_allclose(np.load(tmp_path / "matrix_diff_depth_km.npy"), pred - xs[None, :], rtol=1e-9)
    assert "matrix_depth_rmse" in result.metrics


def test_matrix_bad_input(tiny_run: tuple[Path, object], tmp_path: Path) -> None:
    work, _ = tiny_run
    learner = get_learner("mogi")
    cfg = tiny_config(mode="matrix", **{"matrix.checkpoint": str(work / "mogi_model.pt"), "matrix.x.var": "x0_km"})
    with pytest.raises(ConfigError) as err:
        learner.check_config(cfg)
    assert "does not predict 'x0_km'; it predicts: depth_km, dv_m3" in _one_line(err)
    with pytest.raises(ConfigError):
        learner.run(cfg, RunContext(workdir=tmp_path))
    with pytest.raises(ConfigError, match="unknown variable 'depth'"):
        learner.check_config(tiny_config(mode="matrix", **{"matrix.checkpoint": "x.pt", "matrix.y.var": "depth"}))
    with pytest.raises(DataError, match="checkpoint not found"):
        learner.check_config(tiny_config(mode="matrix", **{"matrix.checkpoint": str(tmp_path / "none.pt")}))


def test_wrapped_maps_with_holes_train(tmp_path: Path) -> None:
    cfg = tiny_config(**{"data.los.wavelength_m": 0.0555, "data.noise.holes_fraction": 0.1, "model.arch": "mlp",
                         "eval.baseline_maps": 0})
    result = get_learner("mogi").run(cfg, RunContext(workdir=tmp_path))
    assert math.isfinite(result.metrics["val_loss"])
    sim = Simulator(parse_config(cfg).data)
    _, maps = sim.draw(np.random.default_rng(0), 4)
    assert np.isnan(maps).any() and np.nanmax(np.abs(maps)) <= math.pi


def test_config_files_parse() -> None:
    parse_config(load_yaml(REPO_ROOT / "configs" / "mogi.yaml"))
    for name in ("mogi_quick", "mogi"):
        study = load_yaml(REPO_ROOT / "studies" / f"{name}.yaml")
        assert study["learner"] == "mogi"
        config = apply_overrides(load_yaml(REPO_ROOT / study["config"]), study.get("set") or {})
        for entry in study.get("enqueue") or []:
            parse_config(apply_overrides(config, entry))


# ------------------------------------------------------------------------------------ through the CLIs


def test_quick_study_runs(tmp_path: Path) -> None:
    from geostudy.cli import study_main

    out = tmp_path / "out"
    assert study_main(["--study", "mogi_quick", "--out", str(out), "--n-trials", "2", "--no-progress", "--set",
                       "data.grid.n=16", "train.n_train=64", "train.n_val=32", "train.epochs=2"]) == 0
    assert (out / "mogi_quick" / "best_config.yaml").is_file()


def test_run_cli_matrix_unknown_target_is_one_line(tiny_run: tuple[Path, object], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from geostudy.cli import run_main

    work, _ = tiny_run
    code = run_main(["--config", str(REPO_ROOT / "configs" / "mogi.yaml"), "--out", str(tmp_path / "m"), "--set",
                     "mode=matrix", f"matrix.checkpoint={work / 'mogi_model.pt'}", "matrix.y.var=y0_km"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "does not predict 'y0_km'" in err
