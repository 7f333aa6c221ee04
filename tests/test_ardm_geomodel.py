"""ARDM for geomodellers: GSLIB files, facies codes, well CSVs, simulate mode on a grid larger than the
patch (GSLIB + NetCDF outputs), and the SIS baseline against a known variogram."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from geostudy.config import apply_overrides, load_yaml
from geostudy.errors import ConfigError, DataError
from geostudy.io.gslib import grid_shape_from_title, read_gslib, write_gslib, write_gslib_grid
from geostudy.learners import get_learner
from geostudy.learners.ardm.checkpoint import load_checkpoint
from geostudy.learners.ardm.config import GeneratorConfig
from geostudy.learners.ardm.data import HardData, procedural_image
from geostudy.learners.ardm.evaluate import indicator_variograms
from geostudy.learners.ardm.images import FaciesCodes, read_training_file
from geostudy.learners.ardm.simulate import entropy_bits, facies_probabilities
from geostudy.learners.ardm.sis import IndicatorVariogram, fit_indicator_variograms, sis
from geostudy.learners.ardm.wells import read_hard_data_csv
from geostudy.learners.base import RunContext
from geostudy.nn.threads import torch_threads

ROOT = Path(__file__).resolve().parents[1]
CODES = [10, 20, 35]  # facies codes that are not 0..K-1

TINY = {
    "device": "cpu", "threads": 1, "data.source": "file", "data.n_categories": 3, "data.downsample": 1,
    "data.patch": 8, "model.base_width": 4, "model.channel_mult": [1, 2], "model.depth": 1, "train.epochs": 1,
    "train.steps_per_epoch": 3, "train.batch_size": 4, "train.val_patches": 4, "train.val_repeats": 1,
    "eval.n_samples": 2, "eval.batch_size": 2, "eval.call_budget": 4, "eval.n_conditional": 2,
    "eval.n_reference": 4, "eval.n_hard": 3,
}


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def coded_image() -> np.ndarray:
    """A three-facies procedural image written in the codes of CODES."""
    idx = procedural_image(GeneratorConfig(kind="mixed", size=40, n_channels=5, n_ellipses=12), 3, seed=1)
    return np.asarray(CODES)[idx]


# ---------------------------------------------------------------------------------------------------
# GSLIB


def test_gslib_round_trip(tmp_path: Path) -> None:
    values = np.array([[1.5, 2, -999], [3.25, 4, 7]])
    path = write_gslib(tmp_path / "wells.dat", "two   wells", ["x", "facies code", "porosity"], values)
    text = path.read_text().splitlines()
    assert text[:5] == ["two wells", "3", "x", "facies code", "porosity"]
    data = read_gslib(path)
    assert data.title == "two wells" and data.names == ["x", "facies code", "porosity"]
    np.testing.assert_array_equal(data.values, values)
    np.testing.assert_array_equal(data.column("Facies Code"), [2, 4])
    # A grid: x fastest, nx ny nz in the title.
    grids = np.arange(2 * 3 * 4).reshape(2, 3, 4)  # (nvar, ny, nx)
    grid_path = write_gslib_grid(tmp_path / "g.gslib", "demo", ["a", "b"], grids)
    back = read_gslib(grid_path)
    assert grid_shape_from_title(back.title) == (4, 3, 1)
    assert back.values[:5, 0].tolist() == [0, 1, 2, 3, 4]  # x fastest
    np.testing.assert_array_equal(back.values.T.reshape(2, 3, 4), grids)
    assert "." not in grid_path.read_text().splitlines()[-1]  # whole numbers are written as integers


@pytest.mark.parametrize("body, expected", [
    ("t\n2\na\nb\n1 2\n3\n", "line 6 has 1 values but the header declares 2 variables"),
    ("t\n2\na\nb\n1 2\n3 x\n", "line 6: 'x' is not a number"),
    ("t\nnot a number\n", "line 2 must give the number of variables"),
    ("t\n3\na\n", "announces 3 variables"),
])
def test_malformed_gslib_is_one_line(tmp_path: Path, body: str, expected: str) -> None:
    path = tmp_path / "bad.dat"
    path.write_text(body)
    with pytest.raises(DataError) as err:
        read_gslib(path)
    msg = str(err.value)
    assert "\n" not in msg and "bad.dat" in msg and expected in msg
    with pytest.raises(DataError, match="not found"):
        read_gslib(tmp_path / "missing.dat")


# ---------------------------------------------------------------------------------------------------
# Training images and codes


def test_codes_are_mapped_and_restored(tmp_path: Path) -> None:
    coded = coded_image()
    np.save(tmp_path / "ti.npy", coded)
    write_gslib_grid(tmp_path / "ti.gslib", "facies", ["porosity", "facies"], np.stack([coded * 0.01, coded]))
    for path, kwargs in ((tmp_path / "ti.npy", {}), (tmp_path / "ti.gslib", {"variable": "facies"})):
        idx, codes = read_training_file(path, 3, **kwargs)  # type: ignore[arg-type]
        assert idx.dtype == np.int64 and set(np.unique(idx)) == {0, 1, 2}
        assert codes.codes.tolist() == CODES
        np.testing.assert_array_equal(codes.decode(idx), coded)
    # Configured codes set the category order; a code outside them is an error naming it.
    idx, codes = read_training_file(tmp_path / "ti.npy", 3, codes=[35, 10, 20])
    assert (idx[coded == 35] == 0).all() and (codes.decode(idx) == coded).all()
    with pytest.raises(DataError, match=r"facies code 20 at \(\d+, \d+\) is not a facies code; allowed: 35, 10, 99"):
        read_training_file(tmp_path / "ti.npy", 3, codes=[35, 10, 99])
    with pytest.raises(DataError, match="3 distinct facies codes .* data.n_categories is 2"):
        read_training_file(tmp_path / "ti.npy", 2)
    # A GSLIB grid without nx ny in its title needs data.grid.
    write_gslib(tmp_path / "plain.dat", "no grid here", ["f"], coded.reshape(-1, 1))
    with pytest.raises(DataError, match="set data.grid"):
        read_training_file(tmp_path / "plain.dat", 3)
    idx, _ = read_training_file(tmp_path / "plain.dat", 3, grid=[40, 40])
    assert idx.shape == (40, 40)
    # GSLIB's missing-value flag (-999) in a training image: one line naming the first such cell.
    holed = coded.copy()
    holed[2, 5] = holed[7, 1] = -999
    write_gslib_grid(tmp_path / "holed.gslib", "facies", ["facies"], holed[None])
    with pytest.raises(DataError, match=r"2 cells hold a missing-value flag .* ix 6, iy 3 \(record 86\)") as err:
        read_training_file(tmp_path / "holed.gslib", 3)
    assert "\n" not in str(err.value) and "holed.gslib" in str(err.value)
    idx, codes = read_training_file(tmp_path / "holed.gslib", 4, missing=None)  # -999 as a fourth code
    assert codes.codes.tolist() == [-999, *CODES]
    # Through the learner, before anything runs: one line naming the file.
    cfg = apply_overrides(load_yaml(ROOT / "configs" / "ardm.yaml"),
                          {**TINY, "data.path": str(tmp_path / "ti.gslib"), "data.n_categories": 2})
    with pytest.raises(DataError) as err:
        get_learner("ardm").check_config(cfg)
    assert "\n" not in str(err.value) and "ti.gslib" in str(err.value) and "distinct facies codes" in str(err.value)


# ---------------------------------------------------------------------------------------------------
# Wells


def test_hard_data_csv_grid_and_world(tmp_path: Path) -> None:
    codes = FaciesCodes(codes=np.array(CODES))
    csv = tmp_path / "wells.csv"
    csv.write_text("x,y,facies\n104.0,200.0,35\n149.9,290,10\n")
    hard = read_hard_data_csv(csv, nx=8, ny=12, codes=codes, coordinates="world", origin=[100, 200], spacing=[10, 25])
    assert hard.cols.tolist() == [0, 5] and hard.rows.tolist() == [0, 4] and hard.cats.tolist() == [2, 0]
    csv.write_text("x,y,facies\n1,2,20\n7,11,10\n")
    hard = read_hard_data_csv(csv, nx=8, ny=12, codes=codes)
    assert hard.rows.tolist() == [2, 11] and hard.cols.tolist() == [1, 7] and hard.cats.tolist() == [1, 0]


@pytest.mark.parametrize("body, expected", [
    ("x,y,facies\n1,2,20\n8,3,10\n", "line 3: point (x 8, y 3; grid units) is outside the 8x12 grid"),
    ("x,y,facies\n1,2,20\n1,-1,10\n", "line 3: point (x 1, y -1; grid units) is outside"),
    ("x,y,facies\n1,2,20\n3,3,20\n4,4,21\n", "line 4: facies code 21 is not a code of the training image; "
                                            "allowed: 10, 20, 35"),
    ("x,y,facies\n1,2,20\n1,2,35\n", "line 3: cell (row 2, col 1) already has facies code 20 from line 2"),
    ("x,y,facies\n1,2,sand\n", "line 2: column 'facies' holds 'sand', not a number"),
    ("east,y,facies\n1,2,20\n", "has no column 'x'"),
])
def test_bad_well_rows_are_one_line_errors(tmp_path: Path, body: str, expected: str) -> None:
    csv = tmp_path / "wells.csv"
    csv.write_text(body)
    with pytest.raises(DataError) as err:
        read_hard_data_csv(csv, nx=8, ny=12, codes=FaciesCodes(codes=np.array(CODES)))
    msg = str(err.value)
    assert "\n" not in msg and "wells.csv" in msg and expected in msg


# ---------------------------------------------------------------------------------------------------
# Train on a coded .npy, then simulate on a grid larger than the patch


def test_simulate_mode_larger_grid_honours_wells_and_writes_gslib_netcdf(tmp_path: Path) -> None:
    import xarray as xr

    np.save(tmp_path / "ti.npy", coded_image())
    learner = get_learner("ardm")
    base = load_yaml(ROOT / "configs" / "ardm.yaml")
    train_cfg = apply_overrides(base, {**TINY, "data.path": str(tmp_path / "ti.npy")})
    learner.check_config(train_cfg)
    trained = learner.run(train_cfg, RunContext(workdir=tmp_path / "train"))
    ckpt = trained.files["checkpoint"]

    # 24 x 16 cells from 8 x 8 patches; wells in world coordinates.
    wells = [(1005.0, 503.0, 35), (1057.0, 532.0, 10), (1112.0, 570.0, 20), (1002.0, 570.0, 35), (1030, 540, 20)]
    csv = tmp_path / "wells.csv"
    csv.write_text("easting,northing,code\n" + "".join(f"{x},{y},{f}\n" for x, y, f in wells))
    sim_cfg = apply_overrides(base, {"device": "cpu", "threads": 1, "mode": "simulate", "simulate.checkpoint": str(ckpt),
                                     "simulate.n_realisations": 5, "simulate.nx": 24, "simulate.ny": 16,
                                     "simulate.origin": [1000.0, 500.0], "simulate.spacing": [5.0, 5.0],
                                     "simulate.hard_data": str(csv), "simulate.columns": ["easting", "northing", "code"],
                                     "simulate.coordinates": "world", "simulate.call_budget": 6,
                                     "simulate.batch_size": 3})
    learner.check_config(sim_cfg)
    result = learner.run(sim_cfg, RunContext(workdir=tmp_path / "sim"))
    assert result.metrics["hard_data_honoured"] == 1.0
    assert {"realisations", "facies_probability", "entropy"} <= set(result.figures)

    cells = [(round((y - 500) / 5), round((x - 1000) / 5), f) for x, y, f in wells]
    ds = xr.open_dataset(result.files["realisations_netcdf"])
    facies = ds["facies"].values
    assert facies.shape == (5, 16, 24) and set(np.unique(facies)) <= set(CODES)
    for r, c, f in cells:
        assert (facies[:, r, c] == f).all()
    np.testing.assert_allclose(ds["x"].values[[0, -1]], [1000.0, 1115.0])
    prob = np.stack([ds[f"probability_{c}"].values for c in CODES])
    np.testing.assert_allclose(prob.sum(axis=0), 1.0, atol=1e-6)
    entropy = ds["entropy"].values
    assert all(entropy[r, c] == 0 for r, c, _ in cells) and (entropy >= 0).all()
    assert entropy.max() > 0  # away from the wells the realisations differ
    ds.close()

    gs = read_gslib(result.files["realisations_gslib"])
    assert grid_shape_from_title(gs.title) == (24, 16, 1) and len(gs.names) == 5
    np.testing.assert_array_equal(gs.values.T.reshape(5, 16, 24), facies)

    # Attention over the whole grid instead of patch-sized windows: the wells are honoured all the same.
    whole = learner.run(apply_overrides(sim_cfg, {"simulate.attention": "global"}), RunContext(workdir=tmp_path / "g"))
    assert whole.metrics["hard_data_honoured"] == 1.0

    # The servosystem steers toward the training proportions the checkpoint stores, or to the configured ones.
    stored = load_checkpoint(ckpt).proportions
    assert stored is not None and stored.sum() == pytest.approx(1.0) and (stored > 0).all()
    steered = learner.run(apply_overrides(sim_cfg, {"simulate.servo": 0.5, "simulate.proportions": [0.2, 0.3, 0.5]}),
                          RunContext(workdir=tmp_path / "servo"))
    assert steered.metrics["hard_data_honoured"] == 1.0
    shares = [np.array([r.tables["mean_probability"][str(c)] for c in CODES]) for r in (result, steered)]
    assert np.abs(shares[1] - [0.2, 0.3, 0.5]).sum() < np.abs(shares[0] - [0.2, 0.3, 0.5]).sum()
    with pytest.raises(ConfigError, match="simulate.proportions.*one share per facies code"):
        learner.check_config(apply_overrides(sim_cfg, {"simulate.proportions": [0.5, 0.5]}))
    with pytest.raises(ConfigError, match="simulate.proportions.*summing to 1"):
        learner.check_config(apply_overrides(sim_cfg, {"simulate.proportions": [0.5, 0.5, 0.5]}))
    old = torch.load(ckpt, weights_only=True)
    del old["proportions"]  # a checkpoint written before the proportions were stored
    torch.save(old, tmp_path / "old.pt")
    old_cfg = apply_overrides(sim_cfg, {"simulate.checkpoint": str(tmp_path / "old.pt")})
    learner.check_config(apply_overrides(old_cfg, {"simulate.servo": 0.0}))
    learner.check_config(apply_overrides(old_cfg, {"simulate.proportions": [0.2, 0.3, 0.5]}))
    with pytest.raises(ConfigError, match="simulate.servo.*predates") as err:
        learner.check_config(old_cfg)
    assert "\n" not in str(err.value)


def test_simulate_mode_bad_input_is_one_line(tmp_path: Path) -> None:
    learner = get_learner("ardm")
    base = load_yaml(ROOT / "configs" / "ardm.yaml")
    with pytest.raises(ConfigError, match="simulate.checkpoint"):
        learner.check_config(apply_overrides(base, {"mode": "simulate"}))
    with pytest.raises(DataError, match="checkpoint not found"):
        learner.check_config(apply_overrides(base, {"mode": "simulate", "simulate.checkpoint": str(tmp_path / "c.pt")}))
    (tmp_path / "c.pt").write_text("not a checkpoint")
    with pytest.raises(DataError) as err:
        learner.check_config(apply_overrides(base, {"mode": "simulate", "simulate.checkpoint": str(tmp_path / "c.pt")}))
    assert "\n" not in str(err.value) and "cannot read the checkpoint" in str(err.value)


# ---------------------------------------------------------------------------------------------------
# Probabilities, entropy, and the SIS baseline


def test_probabilities_and_entropy_by_hand() -> None:
    images = np.array([[[0, 1]], [[0, 2]], [[0, 1]], [[0, 0]]])  # (N=4, 1, 2)
    prob = facies_probabilities(images, 3)
    np.testing.assert_allclose(prob[:, 0, 1], [0.25, 0.5, 0.25])
    np.testing.assert_allclose(prob[:, 0, 0], [1, 0, 0])
    ent = entropy_bits(prob)
    assert ent[0, 0] == 0 and ent[0, 1] == pytest.approx(1.5)


def test_sis_reproduces_a_known_variogram_and_honours_hard_data() -> None:
    # Binary, p = 0.5, exponential indicator variogram, practical range 12 cells (isotropic).
    model = IndicatorVariogram("exponential", 0.25, 12.0, 12.0)
    rng = np.random.default_rng(0)
    hard = HardData(rows=np.array([0, 10, 30]), cols=np.array([0, 20, 5]), cats=np.array([1, 0, 1]))
    images = np.stack([sis((40, 40), [model, model], np.array([0.5, 0.5]), hard=hard, radius=16, rng=rng)
                       for _ in range(5)])
    assert hard.honoured(images) == 1.0
    assert abs(images.mean() - 0.5) < 0.1
    lags = np.arange(1, 13)
    gamma = indicator_variograms(images, 2, 12).mean(axis=0)[1]  # (2 axes, 12 lags)
    expected = model.gamma(lags, 0 * lags)
    np.testing.assert_allclose(gamma[0], expected, atol=0.03)
    np.testing.assert_allclose(gamma[1], expected, atol=0.03)
    # Fitting recovers the range from a realisation-sized sample within 30 %.
    fit = fit_indicator_variograms(images[0], 2, 16)[1]
    assert fit.range_x == pytest.approx(12, rel=0.3) and fit.range_y == pytest.approx(12, rel=0.3)
