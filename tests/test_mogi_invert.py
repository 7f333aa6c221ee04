"""Mogi ``mode: invert``: raster readers, LOS sign, offset/ramp fit, recovery from files, bad input.

Recovery tolerance (maps with 1 mm white noise, an offset, a ramp and 10 % NaN, read through each
format): depth within 3 %, ΔV within 5 %, position within 0.2 km, and the truth inside the 90 %
intervals. The coverage of the intervals under correlated (atmospheric) noise is measured by the
bench (``invert_coverage``), over 100 maps: one map cannot check it.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from geostudy.config import apply_overrides
from geostudy.errors import ConfigError, DataError, GeostudyError
from geostudy.io.grid import read_geotiff, read_netcdf, read_npy, unit_scale, write_geotiff, write_netcdf
from geostudy.learners import get_learner
from geostudy.learners.base import REPO_ROOT, RunContext
from geostudy.learners.mogi.forward import los_vector, mogi_displacements, project_los
from geostudy.learners.mogi.refine import fit_source, source_los, start_vector
from geostudy.learners.mogi.synthetic_map import MapSpec, synthetic_los, write_map
from tests.test_mogi import tiny_config

QUIET = MapSpec(noise_m=0.0, white_m=0.001)  # 30 x 25 km at 500 m; the tiny network's grid: 40 km at 2.5 km


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("mogi_inv_train")
    get_learner("mogi").run(tiny_config(**{"eval.baseline_maps": 0}), RunContext(workdir=work, final=True))
    return work / "mogi_model.pt"


def invert_config(checkpoint: Path, path: Path, **extra: object) -> dict:
    return apply_overrides(get_learner("mogi").default_config(),
                           {"mode": "invert", "invert.checkpoint": str(checkpoint), "invert.map": str(path), **extra})


def run_invert(config: dict, work: Path) -> dict:
    learner = get_learner("mogi")
    learner.check_config(config)
    learner.run(config, RunContext(workdir=work, final=True))
    return json.loads((work / "estimates.json").read_text())


# ----------------------------------------------------------------------------------------- readers


def test_readers_round_trip_coordinates_units_nodata(tmp_path: Path) -> None:
    x, y = 1000.0 + 100.0 * np.arange(5), 5000.0 + 100.0 * np.arange(4)
    values = np.arange(20.0).reshape(4, 5)
    values[1, 2] = np.nan
    tif = read_geotiff(write_geotiff(tmp_path / "a.tif", values, x, y, "EPSG:32633", nodata=-9999.0, units="mm"))
    nc = read_netcdf(write_netcdf(tmp_path / "a.nc", {"los": values}, x, y, units={"los": "cm/yr"}), "los")
    np.save(tmp_path / "a.npy", values[::-1])  # north-up rows
    npy = read_npy(tmp_path / "a.npy", spacing=100.0, origin=(1000.0, 5300.0))
    for r in (tif, nc, npy):
        np.testing.assert_array_equal(r.values, values)  # NaN/nodata in the same place; rows south to north
        np.testing.assert_allclose(r.x, x)
        np.testing.assert_allclose(r.y, y)
    assert (tif.units, nc.units, tif.coord_m) == ("mm", "cm/yr", 1.0)
    assert "UTM zone 33N" in (tif.crs or "")
    km = read_netcdf(write_netcdf(tmp_path / "k.nc", {"los": values}, x / 1000, y / 1000, coord_units="km"), "los")
    assert km.coord_m == 1000.0


@pytest.mark.parametrize(("unit", "scale", "rate"), [("m", 1.0, False), ("mm", 1e-3, False), ("cm", 1e-2, False),
                                                      ("m/yr", 1.0, True), ("mm/year", 1e-3, True), ("cm a-1", 1e-2, True)])
def test_unit_scale(unit: str, scale: float, rate: bool) -> None:
    assert unit_scale(unit) == (pytest.approx(scale), rate)


def test_unit_scale_unknown_unit() -> None:
    with pytest.raises(DataError, match="unknown unit 'rad'"):
        unit_scale("rad", file="m.nc", key="invert.map")


# --------------------------------------------------------------------------- LOS sign, offset, ramp


def test_los_vector_hand_values() -> None:
    # Heading 0 (flying north), right-looking east: the satellite is to the west and up.
    np.testing.assert_allclose(los_vector(30.0, 0.0), [-0.5, 0.0, math.sqrt(3) / 2], atol=1e-12)


def test_sign_away_hand_pixel(checkpoint: Path, tmp_path: Path) -> None:
    """A map stored as 'positive away' is read as its negative; the epicentre pixel is a hand value."""
    spec = replace(QUIET, noise_m=0.0, white_m=0.0, offset_m=0.0, ramp_per_km=(0.0, 0.0), nan_fraction=0.0,
                   source={"x0": 515250.0, "y0": 4010250.0, "depth_km": 2.0, "dv_m3": 1.0e6, "nu": 0.25})
    x, y, los = synthetic_los(spec, np.random.default_rng(0))
    write_map(tmp_path / "away.nc", x, y, -los, units="m")
    record = run_invert(invert_config(checkpoint, tmp_path / "away.nc", **{"invert.geometry.sign": "away"}), tmp_path / "o")
    # uz at the epicentre (1 - ν) ΔV / (π d²) = 0.0596831 m, towards the satellite cos 34° of it: 0.0494800 m.
    hand = 0.0596831 * math.cos(math.radians(34.0))
    import xarray as xr

    with xr.open_dataset(tmp_path / "o" / "invert_fields.nc") as ds:
        pixel = {"x": 515250.0, "y": 4010250.0}
        assert float(ds["observed"].sel(pixel)) == pytest.approx(hand, rel=1e-5)
        assert float(ds["modelled"].sel(pixel)) == pytest.approx(hand, rel=1e-3)
    assert record["depth_km"]["estimate"] == pytest.approx(2.0, rel=1e-3)
    assert record["dv_m3"]["estimate"] == pytest.approx(1.0e6, rel=1e-3)


def test_offset_and_ramp_fit_hand_case() -> None:
    gx, gy = np.meshgrid(np.linspace(-20, 20, 41), np.linspace(-15, 15, 31))
    x, y = gx.ravel(), gy.ravel()
    e = los_vector(34.0, -10.0)
    truth = {"x0_km": 1.0, "y0_km": -2.0, "depth_km": 3.0, "dv_m3": 5.0e6}
    ux, uy, uz = mogi_displacements(x, y, 1.0, -2.0, 3.0, 5.0e6, 0.25)
    data = project_los(ux, uy, uz, 34.0, -10.0) + 0.01 + 0.002 * x - 0.001 * y  # 1 cm + 2 and -1 mm/km
    start = {"x0_km": 0.0, "y0_km": 0.0, "depth_km": 5.0, "dv_m3": 1.0e7}
    fit = fit_source(x, y, data, e, start, {}, offset=True, ramp=True)
    assert fit.nuisance == pytest.approx({"offset": 0.01, "ramp_x": 0.002, "ramp_y": -0.001}, abs=1e-9)
    assert fit.source == pytest.approx(truth, rel=1e-6)
    # Without the nuisance terms the same data cannot be fitted.
    bare = fit_source(x, y, data, e, start, {}, offset=False, ramp=False)
    assert np.sqrt(np.mean(bare.residual**2)) > 1e-3


def test_jacobian_matches_finite_differences() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.uniform(-10, 10, 50), rng.uniform(-10, 10, 50)
    e = np.stack([rng.normal(size=50), rng.normal(size=50), np.full(50, 2.0)])
    e /= np.linalg.norm(e, axis=0)
    p = start_vector({"x0_km": 0.5, "y0_km": -1.0, "depth_km": 3.0, "dv_m3": 2.0e6})
    _, jac = source_los(p, x, y, e, 0.25, jacobian=True)
    for k in range(4):
        h = np.zeros(4)
        h[k] = 1e-6
        fd = (source_los(p + h, x, y, e, 0.25)[0] - source_los(p - h, x, y, e, 0.25)[0]) / 2e-6
        np.testing.assert_allclose(jac[:, k], fd, rtol=1e-5, atol=1e-12)  # type: ignore[index]


# ------------------------------------------------------------------------------ recovery from files


@pytest.mark.parametrize("name", ["map.tif", "map.nc", "map.npy"])
def test_invert_recovers_known_source(checkpoint: Path, tmp_path: Path, name: str) -> None:
    x, y, los = synthetic_los(QUIET, np.random.default_rng(3))
    path = write_map(tmp_path / name, x, y, los)
    extra = {"invert.grid.spacing": QUIET.spacing_m, "invert.grid.origin": [float(x[0]), float(y[-1])]} if name.endswith("npy") else {}
    record = run_invert(invert_config(checkpoint, path, **extra), tmp_path / "out")
    s = QUIET.source
    assert record["depth_km"]["estimate"] == pytest.approx(s["depth_km"], rel=0.03)
    assert record["dv_m3"]["estimate"] == pytest.approx(s["dv_m3"], rel=0.05)
    assert abs(record["x0"]["estimate"] - s["x0"]) < 200 and abs(record["y0"]["estimate"] - s["y0"]) < 200
    for key, true in (("depth_km", s["depth_km"]), ("dv_m3", s["dv_m3"]), ("x0", s["x0"]), ("y0", s["y0"])):
        assert record[key]["low"] <= true <= record[key]["high"], key
    assert record["nuisance"]["offset_mm"] == pytest.approx(1000 * QUIET.offset_m, abs=3.0)
    assert record["rms_misfit_mm"] < 2.0 and record["valid_pixels"] < record["pixels"]
    assert record["map"]["sha256"] and record["checkpoint"]["sha256"] and record["position_unit"] == "m"
    assert record["refine"] == {"asked": True, "used": True}  # the tiny network is far less sure than the fit
    assert (tmp_path / "out" / "invert_maps.png").stat().st_size > 0
    import xarray as xr

    with xr.open_dataset(tmp_path / "out" / "invert_fields.nc") as ds:
        assert ds["residual"].shape == (QUIET.ny, QUIET.nx) and set(ds.data_vars) >= {"modelled", "residual"}


def test_per_pixel_geometry_and_network_only(checkpoint: Path, tmp_path: Path) -> None:
    x, y, los = synthetic_los(QUIET, np.random.default_rng(4))
    path = write_map(tmp_path / "m.tif", x, y, los)
    e = np.broadcast_to(los_vector(34.0, -10.0)[:, None, None], (3, QUIET.ny, QUIET.nx))
    write_geotiff(tmp_path / "los.tif", e, x, y, "EPSG:32633")
    write_geotiff(tmp_path / "inc.tif", np.full(los.shape, 34.0), x, y, "EPSG:32633")
    by_vector = run_invert(invert_config(checkpoint, path, **{"invert.geometry.los_map": str(tmp_path / "los.tif")}), tmp_path / "a")
    by_angles = run_invert(invert_config(checkpoint, path, **{"invert.geometry.incidence_map": str(tmp_path / "inc.tif"),
                                                              "invert.geometry.heading_deg": -10.0}), tmp_path / "b")
    constant = run_invert(invert_config(checkpoint, path), tmp_path / "c")
    for rec in (by_vector, by_angles):
        assert rec["depth_km"]["estimate"] == pytest.approx(constant["depth_km"]["estimate"], rel=1e-4)
    rate = run_invert(invert_config(checkpoint, write_map(tmp_path / "v.nc", x, y, los, units="mm"),
                                    **{"invert.units": "mm/yr", "invert.figures": False}), tmp_path / "v")
    assert rate["dv_unit"] == "m3/yr" and "offset_mm/yr" in rate["nuisance"]
    assert rate["depth_km"]["estimate"] == pytest.approx(constant["depth_km"]["estimate"], rel=1e-6)
    network = run_invert(invert_config(checkpoint, path, **{"invert.refine": False}), tmp_path / "d")
    assert network["method"] == "network" and network["depth_km"]["low"] < network["depth_km"]["high"]
    assert network["depth_km"] == network["network"]["depth_km"]


def test_readme_invert_command_runs(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's commands: the one-liner that writes a map, then run.py in invert mode."""
    from geostudy.cli import run_main
    from geostudy.learners.mogi.synthetic_map import main

    assert main([str(tmp_path / "volcano_los.tif")]) == 0
    truth = json.loads(capsys.readouterr().out)
    code = run_main(["--config", str(REPO_ROOT / "configs" / "mogi.yaml"), "--out", str(tmp_path / "run"), "--quiet", "--set",
                     "mode=invert", f"invert.checkpoint={checkpoint}", f"invert.map={tmp_path / 'volcano_los.tif'}"])
    assert code == 0
    record = json.loads((tmp_path / "run" / "estimates.json").read_text())
    assert record["depth_km"]["estimate"] == pytest.approx(truth["depth_km"], rel=0.25)  # 1 cm correlated noise
    assert "depth_km" in capsys.readouterr().out


# ------------------------------------------------------------------------------------- bad input


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


@pytest.fixture
def files(checkpoint: Path, tmp_path: Path) -> dict[str, Path]:
    x, y, los = synthetic_los(QUIET, np.random.default_rng(5))
    out = {"tif": write_map(tmp_path / "m.tif", x, y, los), "nc": write_map(tmp_path / "m.nc", x, y, los)}
    out["nan"] = write_map(tmp_path / "nan.tif", x, y, np.full_like(los, np.nan))
    sparse = np.full_like(los, np.nan)
    sparse[:5, :5] = 0.01
    out["sparse"] = write_map(tmp_path / "sparse.nc", x, y, sparse)
    out["geographic"] = write_geotiff(tmp_path / "geo.tif", los, x / 1e5, y / 1e5, "EPSG:4326")
    import rasterio

    for name, crs, transform in (("nogeo", None, None), ("nocrs", None, rasterio.transform.from_origin(0, 0, 500, 500))):
        with rasterio.open(tmp_path / f"{name}.tif", "w", driver="GTiff", width=4, height=3, count=1, dtype="float32",
                           crs=crs, transform=transform) as dst:
            dst.write(np.ones((1, 3, 4), np.float32))
        out[name] = tmp_path / f"{name}.tif"
    out["inc"] = write_geotiff(tmp_path / "inc.tif", np.full(los.shape, 95.0), x, y, "EPSG:32633")
    out["small"] = write_geotiff(tmp_path / "small.tif", np.full((10, 10), 34.0), x[:10], y[:10], "EPSG:32633")
    out["badlos"] = write_geotiff(tmp_path / "badlos.tif", np.ones((3, *los.shape)), x, y, "EPSG:32633")
    out["degrees"] = write_netcdf(tmp_path / "deg.nc", {"los": los}, x / 1e5, y / 1e5, coord_units="degrees_east")
    out["npy"] = tmp_path / "m.npy"
    np.save(out["npy"], los)
    state = torch.load(checkpoint, weights_only=True)
    torch.save({**state, "format": 7}, tmp_path / "future.pt")
    torch.save({k: v for k, v in state.items() if k not in ("residual_quantiles",)} | {"format": 1}, tmp_path / "old.pt")
    torch.save({"format": 1, "state_dict": {}, "config": {"learner": "matern"}}, tmp_path / "matern.pt")
    out.update({k: tmp_path / f"{k}.pt" for k in ("future", "old", "matern")})
    out["checkpoint"] = checkpoint
    return out


BAD = [  # (map, overrides, error, words in the one line)
    ("missing", {}, DataError, ["missing.tif", "key 'invert.map'", "file not found"]),
    ("nc", {"invert.netcdf.variable": "velocity"}, DataError, ["key 'invert.map'", "'velocity' is not in the file", "los"]),
    ("nogeo", {}, DataError, ["nogeo.tif", "no geotransform"]),
    ("nocrs", {}, DataError, ["nocrs.tif", "no CRS"]),
    ("geographic", {}, DataError, ["geo.tif", "geographic", "reproject"]),
    ("nan", {}, DataError, ["nan.tif", "no valid pixel", "3000"]),
    ("sparse", {}, DataError, ["only 25 valid pixels of 3000", "invert.min_valid"]),
    ("tif", {"invert.geometry.incidence_deg": 95.0}, ConfigError, ["invert.geometry.incidence_deg", "95"]),
    ("tif", {"invert.geometry.incidence_map": "inc"}, DataError, ["inc.tif", "incidence_map", "3000 pixel(s)", "[0, 90)"]),
    ("tif", {"invert.checkpoint": "future"}, DataError, ["future.pt", "invert.checkpoint", "format 7", "retrain"]),
    ("tif", {"invert.checkpoint": "old"}, DataError, ["old.pt", "invert.checkpoint", "format 1", "retrain"]),
    ("tif", {"invert.checkpoint": "matern"}, DataError, ["matern.pt", "not a mogi checkpoint", "matern"]),
    ("tif", {"invert.checkpoint": "missing"}, DataError, ["invert.checkpoint", "not found"]),
    ("npy", {}, DataError, ["m.npy", "invert.grid", "spacing"]),
    ("degrees", {}, DataError, ["deg.nc", "invert.map", "degrees", "reproject"]),
    ("tif", {"invert.geometry.incidence_map": "small"}, DataError, ["small.tif", "incidence_map", "(10, 10)", "map's"]),
    ("tif", {"invert.geometry.los_map": "badlos"}, DataError, ["badlos.tif", "los_map", "unit vectors"]),
    ("tif", {"invert.units": "rad"}, ConfigError, ["invert.units", "'rad'"]),
    ("tif", {"invert.units": "m/yr", "invert.map": None}, ConfigError, ["invert.map", "mode: invert needs"]),
]


@pytest.mark.parametrize(("name", "extra", "kind", "words"), BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_one_line(files: dict[str, Path], tmp_path: Path, name: str, extra: dict, kind: type, words: list[str]) -> None:
    resolved = {k: str(files.get(str(v), tmp_path / f"{v}.pt")) if k == "invert.checkpoint" else
                str(files[str(v)]) if k.endswith("_map") else v for k, v in extra.items()}
    config = invert_config(files["checkpoint"], files.get(name, tmp_path / f"{name}.tif"), **resolved)
    with pytest.raises(kind) as err:
        get_learner("mogi").check_config(config)
    text = _one_line(err)
    for word in words:
        assert word in text, text


def test_bad_input_cli_exit_2_nothing_written(files: dict[str, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from geostudy.cli import run_main

    for name in ("nan", "geographic", "missing"):
        out = tmp_path / f"run_{name}"
        code = run_main(["--config", str(REPO_ROOT / "configs" / "mogi.yaml"), "--out", str(out), "--set", "mode=invert",
                         f"invert.checkpoint={files['checkpoint']}", f"invert.map={files.get(name, tmp_path / 'missing.tif')}"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.count("\n") == 0 and "invert.map" in err, err
        assert not out.exists()
    assert issubclass(DataError, GeostudyError)


def _median_residual_covariance_fit(**settings: int) -> np.ndarray:
    """Median (sill, length, nugget) fitted to 8 residuals of exponential noise (sill 1, length 4 px) plus
    white noise (variance 0.49) on a 48x48 map with 10% holes, offset and ramp projected out."""
    from geostudy.learners.mogi.noise import correlated_noise
    from geostudy.learners.mogi.refine import fit_residual_covariance

    rng = np.random.default_rng(0)
    gx, gy = np.meshgrid(np.arange(48.0), np.arange(48.0))
    valid = rng.random((48, 48)) > 0.1
    jac = np.stack([np.ones(valid.sum()), gx[valid], gy[valid]], axis=1)
    fits = []
    for _ in range(8):
        noise = correlated_noise(rng, 1, 48, 1.0, "exponential", 4.0, 1.0)[0] + 0.7 * rng.standard_normal((48, 48))
        resid = noise[valid] - jac @ np.linalg.lstsq(jac, noise[valid], rcond=None)[0]
        fits.append(fit_residual_covariance(jac, resid, valid, **settings))
    return np.median(np.array(fits), axis=0)


def test_residual_covariance_fit_recovers_exponential_noise() -> None:
    """The covariance fitted to a fit's residual (offset and ramp projected out) matches the noise's."""
    sill, length, nugget = _median_residual_covariance_fit(n_lengths=16, max_side=48)
    assert sill == pytest.approx(1.0, rel=0.3) and length == pytest.approx(4.0, rel=0.35)
    assert nugget == pytest.approx(0.49, rel=0.3)


def test_residual_covariance_fit_on_a_subsample_recovers_exponential_noise() -> None:
    """As in ``mode: invert`` (``refine.COVARIANCE_SIDE``): fitted on every 3rd row and column of the
    map with as few candidate lengths, the length comes back in pixels of the full map and the variance is kept."""
    from geostudy.learners.mogi.refine import COVARIANCE_LENGTHS, COVARIANCE_SIDE

    sill, length, nugget = _median_residual_covariance_fit(max_side=COVARIANCE_SIDE, n_lengths=COVARIANCE_LENGTHS)
    assert COVARIANCE_SIDE == 16  # 48 pixels a side: a stride of 3
    assert sill == pytest.approx(1.0, rel=0.3) and length == pytest.approx(4.0, rel=0.35)
    assert sill + nugget == pytest.approx(1.49, rel=0.2)


def test_netcdf_without_coordinate_values_is_refused(tmp_path: Path) -> None:
    import xarray as xr

    xr.Dataset({"los": (("y", "x"), np.zeros((4, 5)))}).to_netcdf(tmp_path / "bare.nc")
    with pytest.raises(DataError, match="'x' has no coordinate values"):
        read_netcdf(tmp_path / "bare.nc", "los", key="invert.map")


# ------------------------------------------------------------------- speed-ups that must not change results


def _textbook_lm(x: np.ndarray, y: np.ndarray, data: np.ndarray, e: np.ndarray, start: dict[str, float],
                 max_iter: int = 12, tol: float = 1e-6) -> tuple[np.ndarray, np.ndarray, int]:
    """The Levenberg–Marquardt of ``refine`` written plainly: residual and Jacobian at every trial step."""
    from geostudy.learners.mogi.refine import nuisance_design

    design, _ = nuisance_design(x, y, True, True)
    p = np.concatenate([start_vector(start), np.zeros(design.shape[1])])

    def evaluate(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ux, uy, uz = mogi_displacements(x, y, p[0], p[1], math.exp(p[2]), 10.0 ** p[3], 0.25)
        jac = np.empty((len(x), 4))
        for k in range(4):  # central differences: independent of refine's analytic Jacobian
            h = np.zeros(len(p))
            h[k] = 1e-7
            plus = mogi_displacements(x, y, *(p + h)[:2], math.exp((p + h)[2]), 10.0 ** (p + h)[3], 0.25)
            minus = mogi_displacements(x, y, *(p - h)[:2], math.exp((p - h)[2]), 10.0 ** (p - h)[3], 0.25)
            jac[:, k] = (e @ np.stack(plus) - e @ np.stack(minus)) / 2e-7
        return e @ np.stack([ux, uy, uz]) + design @ p[4:] - data, np.hstack([jac, design])

    r, jac = evaluate(p)
    cost, lam, rejected = float(r @ r), 1e-3, 0
    for _ in range(max_iter):
        a = jac.T @ jac
        step = np.linalg.solve(a + lam * np.diag(np.maximum(np.diag(a), 1e-30)), -jac.T @ r)
        r_new, jac_new = evaluate(p + step)
        cost_new = float(r_new @ r_new)
        if cost_new <= cost:
            done = cost - cost_new <= tol * cost
            p, r, jac, cost, lam = p + step, r_new, jac_new, cost_new, max(lam / 3.0, 1e-12)
            if done:
                break
        else:
            lam, rejected = lam * 4.0, rejected + 1
    return p, -r, rejected


def test_lm_without_jacobians_at_rejected_steps_gives_the_textbook_result() -> None:
    """``fit_source`` computes the Jacobian only at accepted steps, from the residual's intermediates: on a
    noisy hand-made case whose start makes Levenberg–Marquardt reject steps it ends where the plain
    algorithm (every trial evaluated in full, a finite-difference Jacobian) ends."""
    gx, gy = np.meshgrid(np.linspace(-20, 20, 41), np.linspace(-15, 15, 31))
    x, y = gx.ravel(), gy.ravel()
    e = los_vector(34.0, -10.0)
    ux, uy, uz = mogi_displacements(x, y, 1.0, -2.0, 3.0, 5.0e6, 0.25)
    data = project_los(ux, uy, uz, 34.0, -10.0) + 0.01 + 0.002 * x + 0.003 * np.random.default_rng(3).standard_normal(x.size)
    start = {"x0_km": 6.0, "y0_km": 5.0, "depth_km": 9.0, "dv_m3": 1.0e8}
    p, resid, rejected = _textbook_lm(x, y, data, e, start)
    assert rejected >= 3  # the case exercises rejected steps
    fit = fit_source(x, y, data, e, start, {}, offset=True, ramp=True)
    np.testing.assert_allclose(fit.p, p, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(fit.residual, resid, rtol=0, atol=1e-9)
    assert fit.source == pytest.approx({"x0_km": 1.0, "y0_km": -2.0, "depth_km": 3.0, "dv_m3": 5.0e6}, rel=0.05, abs=0.05)
    # the LOS of refine's model is the closed form's, with one unit vector or one per point
    per_point = np.repeat(e[:, None], len(x), axis=1)
    for vectors in (e, per_point):
        np.testing.assert_allclose(source_los(fit.p[:4], x, y, vectors, 0.25)[0],
                                   e @ np.stack(mogi_displacements(x, y, fit.p[0], fit.p[1], math.exp(fit.p[2]),
                                                                   10.0 ** fit.p[3], 0.25)), rtol=1e-12, atol=1e-15)


def test_window_and_peak_smoothing_match_ndimage() -> None:
    """The network's window (bilinear, NaN-aware, by per-axis interpolation) and the peak's Gaussian
    smoothing (by two small matrix products) are ``ndimage.map_coordinates(order=1, mode="constant")``
    and ``ndimage.gaussian_filter(mode="constant")``, also for window pixels on the map's edge."""
    from scipy import ndimage

    from geostudy.learners.mogi.forward import grid_coords
    from geostudy.learners.mogi.invert import _smooth, window
    from geostudy.learners.mogi.observed import ObservedMap

    rng = np.random.default_rng(5)
    for ny, nx, spacing, centre in ((85, 85, 0.9375, (3.1, -7.4)), (40, 57, 1.0, (0.0, 0.5)), (30, 30, 2.0, (-25.0, 20.0))):
        obs = ObservedMap.__new__(ObservedMap)
        obs.x_km, obs.y_km = (np.arange(nx) - (nx - 1) / 2) * spacing, (np.arange(ny) - (ny - 1) / 2) * spacing
        field = rng.standard_normal((ny, nx))
        field[rng.random((ny, nx)) < 0.15] = np.nan
        valid = np.isfinite(field)
        filled, w = np.where(valid, field, 0.0), valid.astype(float)
        for sigma in (0.8, 3.2):
            num, den = ndimage.gaussian_filter(np.stack([filled, w]), (0.0, sigma, sigma), mode="constant")
            ours = _smooth(field, valid, sigma)
            np.testing.assert_allclose(ours[1], np.clip(den, 0, 1), atol=1e-12)
            np.testing.assert_allclose(ours[0], np.where(den > 1e-6, num / np.where(den > 1e-6, den, 1.0), 0.0), atol=1e-10)
        n, extent = 64, 40.0
        gx, gy = grid_coords(n, extent)
        coords = np.stack([(gy + centre[1] - obs.y_km[0]) / spacing, (gx + centre[0] - obs.x_km[0]) / spacing])
        num = ndimage.map_coordinates(filled * w, coords, order=1, mode="constant", cval=0.0)
        den = ndimage.map_coordinates(w, coords, order=1, mode="constant", cval=0.0)
        expected = np.where(den >= 0.5, num / np.where(den > 0, den, 1.0), np.nan)
        ours_window = window(obs, field, centre, n, extent)
        assert np.array_equal(np.isnan(ours_window), np.isnan(expected))
        np.testing.assert_allclose(ours_window, expected, atol=1e-12)


def test_network_on_features_computed_once_matches_predict(checkpoint: Path) -> None:
    """``invert_map`` computes the window's features once (for the net and the amplitude bin):
    ``predict_features`` of them is ``predict`` of the window, with and without the folded network."""
    from geostudy.learners.mogi.model import map_features
    from geostudy.learners.mogi.train import load_checkpoint

    _, predictor, sim = load_checkpoint(checkpoint)
    maps = sim.draw(np.random.default_rng(0), 3, "train")[1].astype(np.float64)
    maps[:, :3, :5] = np.nan
    for frozen in (predictor._frozen, None):
        predictor._frozen = frozen
        direct = predictor.predict(maps)
        for i in range(len(maps)):
            once = predictor.predict_features(*map_features(maps[i:i + 1], predictor.wrapped, predictor.mask))
            for var in direct:
                assert once[var][0] == pytest.approx(direct[var][i], rel=1e-6)
