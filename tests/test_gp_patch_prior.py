"""The steering GP's patch-prior pilot: fitting, the EPLL restoration, files, configs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from geostudy.config import apply_overrides
from geostudy.errors import ConfigError, DataError
from geostudy.learners import RunContext, get_learner
from geostudy.learners.gp import make_prior, patch_prior
from geostudy.learners.gp.evaluate import biharmonic


def blocky_image(seed: int, size: int = 160) -> np.ndarray:
    """Random axis-aligned rectangles of random grey levels: sharp edges a smooth inpainting blurs."""
    rng = np.random.default_rng(seed)
    image = np.full((size, size), rng.random())
    for _ in range(12):
        y0, x0 = rng.integers(0, size - 20, 2)
        h, w = rng.integers(20, size // 2, 2)
        image[y0:y0 + h, x0:x0 + w] = rng.random()
    return image


@pytest.fixture(scope="module")
def blocky_prior() -> patch_prior.PatchPrior:
    images = [blocky_image(seed) for seed in range(4)]
    return patch_prior.fit_patch_prior(images, [f"blocky{s}" for s in range(4)], patch=6, components=8,
                                       patches=6000, iterations=30)


def test_a_prior_of_the_image_family_restores_its_edges_better_than_biharmonic(blocky_prior):
    from skimage.transform import resize

    truth = resize(blocky_image(seed=10), (48, 48), anti_aliasing=True)  # a picture the prior has not seen
    observed = np.random.default_rng(0).random(truth.shape) < 0.2
    fill = biharmonic(truth[None], observed[None])[0]
    restored = patch_prior.restore(blocky_prior, truth, observed, fill)
    assert np.array_equal(restored[observed], truth[observed])  # the stations are data, kept exactly

    def rmse(x):
        return float(np.sqrt(np.mean((x - truth)[~observed] ** 2)))

    assert rmse(restored) < 0.8 * rmse(fill), (rmse(restored), rmse(fill))


def test_a_prior_file_round_trips_and_bad_files_are_one_line_errors(blocky_prior, tmp_path):
    path = blocky_prior.save(tmp_path / "prior.bin")
    loaded = patch_prior.PatchPrior.load(path)
    assert loaded.patch == 6 and loaded.trained_on == blocky_prior.trained_on
    np.testing.assert_array_equal(loaded.covariances, blocky_prior.covariances)
    with pytest.raises(DataError, match="no such patch prior; make one with python -m"):
        patch_prior.PatchPrior.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", weights=np.ones(2))
    with pytest.raises(DataError, match="not a patch prior") as err:
        patch_prior.PatchPrior.load(tmp_path / "other.npz")
    assert str(err.value).startswith(str(tmp_path / "other.npz")) and "\n" not in str(err.value)


def test_the_command_fits_a_prior_of_named_images(tmp_path, capsys):
    out = tmp_path / "p.npz"
    assert make_prior.main(["coins", "moon", "--out", str(out), "--patch", "4", "--components", "2",
                             "--patches", "2000", "--iterations", "5"]) == 0
    prior = patch_prior.PatchPrior.load(out)
    assert prior.trained_on == ["coins", "moon"] and prior.means.shape == (2, 16)
    assert make_prior.main(["no_such_image", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error:") and "'no_such_image' is neither an image file nor a skimage.data image" in err
    with pytest.raises(SystemExit) as exit_:  # argparse's own one-line usage error
        make_prior.main(["coins", "--out", str(out), "--components", "0"])
    assert exit_.value.code == 2 and "--components must be >= 1, but got 0" in capsys.readouterr().err


def image_config(tmp_path, prior_file, **extra) -> dict:
    overrides = {"device": "cpu", "data.source": "image", "data.image": "camera", "data.size": [32, 32],
                 "mask.p_missing": 0.8, "model.space_kernel": "matern12", "model.nonstationary": "steering",
                 "model.inference": "exact", "model.steering.pilot": "patch_prior",
                 "model.steering.patch_prior": str(prior_file), "train.optim": "lbfgs", "train.iterations": 10,
                 "eval.pdf": False, "eval.griddata": False, "eval.sklearn_gpr": False, **extra}
    return apply_overrides(get_learner("gp").default_config(), overrides)


def test_a_run_with_the_patch_prior_pilot(blocky_prior, tmp_path, capsys):
    prior_file = blocky_prior.save(tmp_path / "prior.npz")
    result = get_learner("gp").run(image_config(tmp_path, prior_file), RunContext(workdir=tmp_path, verbose=True))
    assert math.isfinite(result.metrics["rmse"]) and math.isfinite(result.metrics["nlpd"])
    assert "gp: patch-prior pilot (14 x 2 EPLL rounds)" in capsys.readouterr().err


def renamed(prior: patch_prior.PatchPrior, names: list[str]) -> patch_prior.PatchPrior:
    """``prior``'s mixture as if fitted to ``names`` (their content: the first of its images')."""
    return patch_prior.PatchPrior(prior.weights, prior.means, prior.covariances, names,
                                  np.repeat(prior.fingerprints[:1], len(names), axis=0))


def test_a_prior_knows_its_images_by_content_under_any_name_or_size(blocky_prior, tmp_path):
    from skimage.transform import resize

    from geostudy.learners.gp.data import load_image

    np.save(tmp_path / "copy.npy", resize(blocky_image(0), (40, 56)))  # a training image, renamed and resized
    np.save(tmp_path / "unseen.npy", resize(blocky_image(10), (40, 56)))
    cfg = image_config(tmp_path, blocky_prior.save(tmp_path / "prior.npz"), **{"data.source": "npy"})
    get_learner("gp").check_config({**cfg, "data": {**cfg["data"], "path": str(tmp_path / "unseen.npy")}})
    with pytest.raises(ConfigError, match=r"was fitted to 'blocky0', the same picture as the field scored here "
                                          r"\(copy.npy\)") as err:
        get_learner("gp").check_config({**cfg, "data": {**cfg["data"], "path": str(tmp_path / "copy.npy")}})
    assert "\n" not in str(err.value)
    # skimage ships one cat photograph under two names
    cat = patch_prior.PatchPrior(blocky_prior.weights, blocky_prior.means, blocky_prior.covariances, ["cat"],
                                 patch_prior.fingerprint(load_image("cat", None).values[0])[None])
    assert cat.seen(load_image("chelsea", [64, 64]).values[0]) == "cat"
    assert cat.seen(load_image("coffee", [64, 64]).values[0]) is None
    cfg = image_config(tmp_path, cat.save(tmp_path / "cat.npz"), **{"data.image": "chelsea"})
    with pytest.raises(ConfigError, match="was fitted to 'cat', the same picture as the field scored here"):
        get_learner("gp").check_config(cfg)


def test_a_prior_file_without_fingerprints_is_refused_in_one_line(blocky_prior, tmp_path):
    old = tmp_path / "old.npz"  # the first format named its images only
    np.savez(old, weights=blocky_prior.weights, means=blocky_prior.means, covariances=blocky_prior.covariances,
             trained_on=np.array('["blocky0"]'))
    with pytest.raises(DataError, match="a patch prior from an older geostudy .* fit it again with python -m "
                                        "geostudy.learners.gp.make_prior") as err:
        patch_prior.PatchPrior.load(old)
    assert str(err.value).startswith(str(old)) and "\n" not in str(err.value)


@pytest.mark.parametrize(("extra", "trained_on", "error", "message"), [
    ({"model.steering.pilot": "gan"}, None, ConfigError, "unknown pilot 'gan'; allowed: biharmonic, patch_prior"),
    ({"model.steering.patch_prior": None}, None, ConfigError, "pilot 'patch_prior' needs the prior's file here"),
    ({"model.steering.patch_prior": "nowhere.npz"}, None, DataError, "no such patch prior"),
    ({}, ["camera"], ConfigError, "was fitted to 'camera', the same picture as the field scored here (image camera)"),
    ({"data.size": [4, 4]}, None, ConfigError, "the patch prior's 6x6 patches do not fit in an image of size [4, 4]"),
])
def test_bad_patch_prior_settings_are_one_line_errors(blocky_prior, tmp_path, extra, trained_on, error, message):
    prior = renamed(blocky_prior, trained_on or ["blocky0"])
    cfg = image_config(tmp_path, prior.save(tmp_path / "prior.npz"), **extra)
    with pytest.raises(error) as err:
        get_learner("gp").check_config(cfg, file="configs/gp.yaml")
    text = str(err.value)
    assert message in text and "key 'model.steering." in text and "\n" not in text
    assert text.startswith("configs/gp.yaml") or isinstance(err.value, DataError)  # a data file names itself


def test_a_field_smaller_than_the_patches_is_a_one_line_error_at_run_time(blocky_prior, tmp_path):
    np.save(tmp_path / "small.npy", np.random.default_rng(0).random((5, 12)))  # its shape is known only once loaded
    cfg = image_config(tmp_path, blocky_prior.save(tmp_path / "prior.npz"), **{"data.source": "npy",
                                                                              "data.path": str(tmp_path / "small.npy")})
    with pytest.raises(DataError, match=r"the patch prior's 6x6 patches do not fit in this \(5, 12\) field") as err:
        get_learner("gp").run(cfg, RunContext(workdir=tmp_path))
    assert "key 'model.steering.patch_prior'" in str(err.value) and "\n" not in str(err.value)
