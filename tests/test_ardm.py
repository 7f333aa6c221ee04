"""ARDM learner: the OA-ARDM objective, masking, conditional sampling, PNG mapping, variograms, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench._ardm_compare import compare, jackknife_se
from geostudy.config import apply_overrides, load_yaml
from geostudy.errors import ConfigError, DataError
from geostudy.learners import get_learner
from geostudy.learners.ardm import HardData, UNet, ardm_loss, draw_mask, load_png, model_input, sample
from geostudy.learners.ardm.config import GeneratorConfig
from geostudy.learners.ardm.data import downsample, procedural_image, random_patches
from geostudy.learners.ardm.evaluate import (
    ImageStats,
    connectivity_functions,
    image_stats,
    indicator_variograms,
    mismatch,
)
from geostudy.learners.ardm.sampling import servo_bias
from geostudy.learners.base import RunContext
from geostudy.nn.threads import torch_threads

ROOT = Path(__file__).resolve().parents[1]
TI = ROOT.parent / "shared" / "data" / "channels_ti.png"

# A config small enough to train and sample in seconds on a CPU, with no data file.
TINY = {
    "device": "cpu",
    "threads": 1,
    "data.source": "procedural",
    "data.n_categories": 2,
    "data.generator.kind": "channels",
    "data.downsample": 1,
    "data.patch": 8,
    "data.generator.size": 48,
    "data.generator.n_channels": 6,
    "data.generator.channel_width": 3.0,
    "model.base_width": 4,
    "model.channel_mult": [1, 2],
    "model.depth": 1,
    "train.epochs": 2,
    "train.steps_per_epoch": 3,
    "train.batch_size": 4,
    "train.val_patches": 4,
    "train.val_repeats": 1,
    "eval.n_samples": 4,
    "eval.batch_size": 4,
    "eval.call_budget": 4,
    "eval.n_conditional": 3,
    "eval.n_reference": 4,
    "eval.n_hard": 5,
}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks: one CPU thread is several times faster than two contending ones."""
    with torch_threads(1):
        yield


def tiny_config(**extra) -> dict:
    return apply_overrides(load_yaml(ROOT / "configs" / "ardm.yaml"), {**TINY, **extra})


# ---------------------------------------------------------------------------------------------------
# The objective


def test_loss_weighting_hand_computed() -> None:
    # B == K == 2, so a mask broadcast against the class axis would still run: the values catch it.
    ln3 = math.log(3.0)
    x = torch.tensor([[[0, 1]], [[1, 1]]])  # (B=2, H=1, W=2), D = 2
    mask = torch.tensor([[[True, False]], [[False, False]]])  # image 0 at t=2, image 1 at t=1
    t = torch.tensor([2, 1])
    logits = torch.zeros(2, 2, 1, 2)  # (B, K, H, W)
    logits[0, :, 0, 0] = torch.tensor([5.0, -5.0])  # revealed: must not count
    logits[0, :, 0, 1] = torch.tensor([0.0, ln3])  # p(x=1) = 3/4
    logits[1, :, 0, 0] = torch.tensor([ln3, 0.0])  # p(x=1) = 1/4
    # image 1, pixel 1: logits 0, 0 -> p = 1/2
    loss = ardm_loss(logits, x, mask, t)
    expected = torch.tensor([2 / (2 - 2 + 1) * math.log(4 / 3), 2 / (2 - 1 + 1) * (math.log(4) + math.log(2))])
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)


def test_loss_is_unbiased_for_a_context_free_model() -> None:
    # For predictions that ignore the context, E_t E_sigma[loss] equals the exact NLL summed over pixels.
    g = torch.Generator().manual_seed(0)
    h = w = 3
    x = torch.randint(0, 3, (1, h, w), generator=g)
    logits = torch.randn(1, 3, h, w, generator=g)
    exact = float(torch.nn.functional.cross_entropy(logits, x, reduction="sum"))
    n = 20000
    mask, t = draw_mask(n, h, w, g)
    est = float(ardm_loss(logits.expand(n, -1, -1, -1), x.expand(n, -1, -1), mask, t).mean())
    assert est == pytest.approx(exact, rel=0.03)


def test_draw_mask_reveals_t_minus_one_pixels() -> None:
    mask, t = draw_mask(500, 4, 5, torch.Generator().manual_seed(1))
    assert mask.shape == (500, 4, 5) and mask.dtype == torch.bool
    assert int(t.min()) >= 1 and int(t.max()) <= 20
    assert torch.equal(mask.flatten(1).sum(1), t - 1)
    # Orders are uniform: every pixel is revealed about equally often.
    freq = mask.float().mean(0)
    assert float(freq.max() - freq.min()) < 0.15


def test_masking_of_input_and_loss() -> None:
    # B == K == 3: the mask must broadcast over classes, not over the batch.
    x = torch.tensor([[[0, 1], [2, 0]], [[2, 2], [1, 0]], [[1, 0], [0, 2]]])
    mask = torch.tensor([[[True, False], [False, True]], [[False, False], [False, False]],
                         [[True, True], [False, True]]])
    inp = model_input(x, mask, 3)
    assert inp.shape == (3, 4, 2, 2)
    onehot = torch.nn.functional.one_hot(x, 3).permute(0, 3, 1, 2).float()
    for b in range(3):
        for c in range(3):
            torch.testing.assert_close(inp[b, c], onehot[b, c] * mask[b].float())
        torch.testing.assert_close(inp[b, 3], mask[b].float())
    # The loss ignores what the network says at revealed pixels.
    t = mask.flatten(1).sum(1) + 1
    logits = torch.randn(3, 3, 2, 2)
    changed = logits.clone()
    changed[mask.unsqueeze(1).expand_as(logits)] = 100.0
    torch.testing.assert_close(ardm_loss(logits, x, mask, t), ardm_loss(changed, x, mask, t))
    # Image 2 has one unrevealed pixel (1, 0) of class 0, at t = D = 4: weight D / 1.
    nll = -torch.log_softmax(logits[2, :, 1, 0], 0)[0]
    torch.testing.assert_close(ardm_loss(logits, x, mask, t)[2], 4 * nll)


def test_unet_shapes_and_levels() -> None:
    net = UNet(3, [4, 8, 8], depth=1, attention_levels=[0, 2], dropout=0.1)
    x = torch.randint(0, 3, (2, 8, 12))
    out = net(x, torch.rand(2, 8, 12) < 0.5)
    assert out.shape == (2, 3, 8, 12)


def _windowed_attention_by_hand(att, h: torch.Tensor, rows: list[int], cols: list[int]) -> torch.Tensor:
    """Softmax(QK^T / sqrt(C)) V written out, separately inside each [rows] x [cols] window."""
    qkv = att.qkv(att.norm(h))
    c = h.shape[1]
    q, k, v = qkv[:, :c], qkv[:, c:2 * c], qkv[:, 2 * c:]
    out = torch.zeros_like(h)
    for r0, r1 in zip(rows, rows[1:]):
        for c0, c1 in zip(cols, cols[1:]):
            qw, kw, vw = (t[:, :, r0:r1, c0:c1].flatten(2) for t in (q, k, v))  # (B, C, n)
            weights = torch.softmax(qw.transpose(1, 2) @ kw / math.sqrt(c), dim=-1)  # (B, n, n)
            out[:, :, r0:r1, c0:c1] = (vw @ weights.transpose(1, 2)).view(-1, c, r1 - r0, c1 - c0)
    return h + att.proj(out)


@pytest.mark.parametrize("shape, window, rows, cols", [
    ((8, 8), 8, [0, 8], [0, 8]),  # the window covers the grid: global attention
    ((8, 8), 4, [0, 4, 8], [0, 4, 8]),  # equal windows (the batched path)
    ((8, 7), 3, [0, 2, 5, 8], [0, 2, 4, 7]),  # unequal windows of at most 3 (the loop path)
])
def test_attention_within_windows_matches_a_hand_computation(shape, window, rows, cols) -> None:
    from geostudy.learners.ardm.model import Attention

    torch.manual_seed(0)
    att = Attention(8)
    att.window = window
    h = torch.randn(2, 8, *shape)
    with torch.no_grad():
        torch.testing.assert_close(att(h), _windowed_attention_by_hand(att, h, rows, cols), rtol=1e-5, atol=1e-5)
        att.window = None
        torch.testing.assert_close(att(h), _windowed_attention_by_hand(att, h, [0, shape[0]], [0, shape[1]]),
                                   rtol=1e-5, atol=1e-5)


def test_unet_attention_window_is_the_training_patch_at_every_level() -> None:
    from geostudy.learners.ardm.model import Attention

    torch.manual_seed(0)
    net = UNet(3, [4, 8, 8], depth=1, attention_levels=[0, 1, 2], attention_window=16).eval()
    windows = sorted({m.window for m in net.modules() if isinstance(m, Attention)})
    assert windows == [4, 8, 16]  # 16 pixels at full resolution, 8 at level 1, 4 at level 2
    x, mask = torch.randint(0, 3, (1, 32, 32)), torch.rand(1, 32, 32) < 0.3
    with torch.no_grad():
        patch = net(x[:, :16, :16], mask[:, :16, :16])
        windowed = net(x, mask)
        net.set_attention_window(None)
        torch.testing.assert_close(net(x[:, :16, :16], mask[:, :16, :16]), patch)  # patch-sized: the same
        assert not torch.allclose(net(x, mask), windowed, atol=1e-4)  # larger grid: windows differ from global


# ---------------------------------------------------------------------------------------------------
# Sampling


@pytest.mark.parametrize("budget", [1, 5, 10_000])
def test_conditional_samples_honour_every_hard_datum(budget: int) -> None:
    torch.manual_seed(0)
    net = UNet(3, [4, 8], depth=1)
    size = 8
    rng = np.random.default_rng(0)
    flat = rng.choice(size * size, 20, replace=False)
    data = [[int(f // size), int(f % size), int(rng.integers(0, 3))] for f in flat]
    hard = HardData.from_list(data, size, 3)
    out = sample(net, 7, size, budget=budget, hard=hard, seed=1, batch_size=3)
    assert out.images.shape == (7, size, size)
    assert set(np.unique(out.images)) <= {0, 1, 2}
    for r, c, k in data:
        assert (out.images[:, r, c] == k).all()
    assert hard.honoured(out.images) == 1.0
    assert out.calls == min(budget, size * size - len(data))
    assert out.entropy.shape == (size, size)
    assert (out.entropy[hard.rows, hard.cols] == 0).all() and (out.entropy >= 0).all()


def test_unconditional_sampling_is_seeded() -> None:
    torch.manual_seed(0)
    net = UNet(2, [4], depth=1)
    a = sample(net, 3, 4, budget=4, seed=5).images
    b = sample(net, 3, 4, budget=4, seed=5).images
    assert np.array_equal(a, b)
    assert not np.array_equal(a, sample(net, 3, 4, budget=4, seed=6).images)


class _Fixed(torch.nn.Module):
    """Logits that ignore the input: class 0 with probability 0.6, class 1 with 0.4, everywhere."""

    n_classes = 2

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = torch.tensor([math.log(0.6), math.log(0.4)])
        return logits[None, :, None, None].expand(x.shape[0], 2, *x.shape[1:])


def test_temperature_sharpens_the_draws() -> None:
    # At temperature 1 the share of class 1 is 0.4; at 0.5 it is 0.4^2 / (0.6^2 + 0.4^2) = 0.3077.
    net = _Fixed()
    share = [float(sample(net, 64, 16, budget=8, seed=3, batch_size=64, temperature=t).images.mean()) for t in (1.0, 0.5, 0.02)]
    assert share[0] == pytest.approx(0.4, abs=0.02)
    assert share[1] == pytest.approx(0.16 / 0.52, abs=0.02)
    assert share[2] == 0.0


def test_servo_bias_hand_computed() -> None:
    # 4 pixels, pixel 0 revealed as class 1, network 0.6 / 0.4 everywhere, target 0.5 / 0.5:
    # still needed among the 3 free pixels (2 - 0, 2 - 1) / 3 = 2/3, 1/3; offset s * log(needed / 0.6, 0.4).
    logits = torch.log(torch.tensor([0.6, 0.4])).expand(1, 4, 2)
    x = torch.tensor([[1, 0, 0, 0]])
    mask = torch.tensor([[True, False, False, False]])
    bias = servo_bias(logits, x, mask, torch.tensor([0.5, 0.5]), 0.5)
    assert bias.shape == (1, 1, 2)
    np.testing.assert_allclose(bias[0, 0].numpy(), 0.5 * np.log([(2 / 3) / 0.6, (1 / 3) / 0.4]), rtol=1e-5)
    # A facies already over its share is floored, and the offset capped at `limit` nats.
    spent = servo_bias(logits, torch.tensor([[1, 1, 1, 0]]), torch.tensor([[True, True, True, False]]),
                       torch.tensor([0.5, 0.5]), 1.0)
    assert spent[0, 0, 1] == pytest.approx(-3.0) and spent[0, 0, 0] > 0


def test_servo_steers_the_proportions_to_the_target() -> None:
    # The network says 0.4 of class 1; the target says 0.2. Strength 1 matches it from the first call
    # on and strength 0 leaves the network alone. Half strength draws 0.29 at the first call; the later
    # calls, steered by what is still needed, bring the whole image close to the target.
    net, target = _Fixed(), np.array([0.8, 0.2])
    share = {s: float(sample(net, 64, 16, budget=8, seed=3, batch_size=64, proportions=target, servo=s).images.mean())
             for s in (0.0, 0.5, 1.0)}
    assert share[0.0] == pytest.approx(0.4, abs=0.02)
    assert share[1.0] == pytest.approx(0.2, abs=0.02)
    assert share[1.0] < share[0.5] < 0.25
    # Hard data that already hold too much of class 1 lower its share among the free pixels further.
    hard = HardData(rows=np.repeat(np.arange(16), 4), cols=np.tile(np.arange(4), 16), cats=np.ones(64, dtype=np.int64))
    cond = sample(net, 16, 16, budget=8, seed=4, batch_size=16, hard=hard, proportions=target, servo=1.0).images
    assert hard.honoured(cond) == 1.0
    free_share = cond[:, :, 4:].mean()  # target 0.2 * 256 = 51.2 of class 1, 64 revealed: the rest near 0
    assert free_share < 0.1 and cond.mean() == pytest.approx(0.25, abs=0.03)
    with pytest.raises(ValueError, match="proportions"):
        sample(net, 2, 8, budget=2, servo=0.5)


# ---------------------------------------------------------------------------------------------------
# Data


def test_png_category_mapping(tmp_path: Path) -> None:
    grey = np.array([[0, 128, 255], [255, 128, 0]], dtype=np.uint8)
    path = tmp_path / "ti.png"
    Image.fromarray(grey).save(path)
    assert load_png(path, 3).tolist() == [[0, 1, 2], [2, 1, 0]]
    assert load_png(path, 2, thresholds=[200]).tolist() == [[0, 0, 1], [1, 0, 0]]
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(rgb)
    assert load_png(rgb, 4).tolist() == [[0, 1, 2], [2, 1, 0]]  # fewer levels than categories is fine


def test_png_with_more_categories_than_configured(tmp_path: Path) -> None:
    path = tmp_path / "three.png"
    Image.fromarray(np.array([[0, 100, 200]], dtype=np.uint8)).save(path)
    with pytest.raises(DataError) as err:
        load_png(path, 2)
    msg = str(err.value)
    assert "\n" not in msg and "three.png" in msg and "3 distinct grey levels" in msg and "thresholds" in msg
    # ... and through the learner, before anything runs.
    with pytest.raises(DataError, match="3 distinct grey levels"):
        get_learner("ardm").check_config(tiny_config(**{"data.source": "file", "data.path": str(path)}))


def test_missing_training_image_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.png"
    with pytest.raises(DataError) as err:
        get_learner("ardm").check_config(tiny_config(**{"data.source": "file", "data.path": str(path)}))
    assert "nope.png" in str(err.value) and "\n" not in str(err.value)


def test_procedural_image_and_patches() -> None:
    img = procedural_image(GeneratorConfig(kind="mixed", size=64), 3, seed=3)
    assert img.shape == (64, 64) and set(np.unique(img)) == {0, 1, 2}
    assert np.array_equal(img, procedural_image(GeneratorConfig(kind="mixed", size=64), 3, seed=3))
    p = random_patches(img, 10, 16, np.random.default_rng(0), flips=True, rot90=True)
    assert p.shape == (10, 16, 16) and p.dtype == np.int64
    assert downsample(np.kron(img[:8, :8], np.ones((2, 2), dtype=np.int64)), 2, 3).tolist() == img[:8, :8].tolist()


@pytest.mark.skipif(not TI.is_file(), reason="../shared/data/channels_ti.png is absent")
def test_channels_training_image() -> None:
    img = load_png(TI, 2)
    assert img.shape == (2500, 2500) and set(np.unique(img)) == {0, 1}
    assert 0.2 < img.mean() < 0.35  # channel proportion of the image


# ---------------------------------------------------------------------------------------------------
# Evaluation


def test_variogram_of_stripes() -> None:
    # Vertical stripes of width 4 (period 8): along x gamma(4) = 0.5 and gamma(8) = 0; along y 0.
    cols = np.arange(40)
    img = np.broadcast_to(((cols // 4) % 2)[None, :], (24, 40))[None]
    g = indicator_variograms(img, 2, 8)
    assert g.shape == (1, 2, 2, 8)
    assert g[0, 1, 0, 3] == pytest.approx(0.5)
    assert g[0, 1, 0, 7] == pytest.approx(0.0)
    assert np.allclose(g[0, :, 1], 0.0)
    assert np.allclose(g[0, 0], g[0, 1])  # two classes: the same indicator variogram
    for h in (1, 2, 3):
        assert g[0, 1, 0, h - 1] == pytest.approx(0.5 * h / 4, abs=0.02)
    tau = connectivity_functions(img, 2, 8)
    assert np.allclose(tau[:, 1], 1.0)  # a stripe is one component along y
    assert tau[1, 0, 0] == pytest.approx(1.0) and tau[1, 0, 7] == pytest.approx(0.0)  # next stripe: not connected
    stats = image_stats(img, 2, 8)
    assert mismatch(stats, stats) == {"variogram_mismatch": 0.0, "connectivity_mismatch": 0.0, "proportion_error": 0.0}


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.allclose(a, b, equal_nan=True))


def test_image_stats_of_subsets_and_unions_pool_like_their_images() -> None:
    # Per-image statistics: any subset or union must give what image_stats gives on those images.
    rng = np.random.default_rng(3)
    img = procedural_image(GeneratorConfig(kind="mixed", size=96, n_channels=4, n_ellipses=8), 3, seed=2)
    a, b = random_patches(img, 5, 16, rng), random_patches(img, 3, 16, rng)
    a[0] = 0  # classes 1 and 2 absent from one image: NaN shares, no pairs
    sa, sb = image_stats(a, 3, 8), image_stats(b, 3, 8)
    whole = image_stats(np.concatenate([a, b]), 3, 8)
    for got, want in ((ImageStats.concat([sa, sb]), whole), (whole.subset(slice(0, 5)), sa),
                      (whole.subset(np.array([5, 6, 7])), sb)):
        for attr in ("proportions", "variogram", "connectivity", "largest", "connected_pairs"):
            assert _same(getattr(got, attr), getattr(want, attr)), attr
    assert _same(whole.connectivity, connectivity_functions(np.concatenate([a, b]), 3, 8))
    assert len(whole) == 8 and np.isnan(sa.largest_each[0, 1])


def test_jackknife_se_of_a_mean_is_the_standard_error() -> None:
    # Known identity: for the mean, the delete-one jackknife SE equals sd / sqrt(n).
    x = np.random.default_rng(0).normal(size=12)
    loo = np.array([np.delete(x, i).mean() for i in range(len(x))])
    assert jackknife_se(loo) == pytest.approx(x.std(ddof=1) / np.sqrt(len(x)))


def test_comparison_over_groups_pairs_methods_on_the_same_references() -> None:
    rng = np.random.default_rng(1)
    img = procedural_image(GeneratorConfig(kind="mixed", size=96, n_channels=4, n_ellipses=8), 3, seed=5)
    refs = [image_stats(random_patches(img, 6, 16, rng), 3, 8) for _ in range(4)]
    same = [image_stats(random_patches(img, 6, 16, rng), 3, 8) for _ in range(4)]
    blank = [image_stats(np.zeros((6, 16, 16), dtype=np.int64), 3, 8) for _ in range(4)]
    c = compare({"ours": same, "blank": blank}, refs)
    extras = c.row_extras("ours", "blank", "proportion_error")
    # Images of the reference's kind beat all-background images in every group, far beyond the noise.
    assert extras["groups_lower"] == "4/4"
    assert extras["diff"] < -3 * extras["diff_se"]  # type: ignore[operator]
    assert c.value["blank"]["connectivity_mismatch"] > c.value["ours"]["connectivity_mismatch"]
    # Pooled over all groups, as the union of the images.
    want = mismatch(ImageStats.concat(same), ImageStats.concat(refs))
    assert c.value["ours"]["variogram_mismatch"] == pytest.approx(want["variogram_mismatch"])


# ---------------------------------------------------------------------------------------------------
# Bad input and a whole run


@pytest.mark.parametrize("datum", [[8, 0, 1], [0, -1, 1], [3, 3, 2]])
def test_bad_hard_data_is_a_one_line_error(datum: list[int]) -> None:
    with pytest.raises(ConfigError) as err:
        get_learner("ardm").check_config(tiny_config(**{"eval.hard_data": [[0, 0, 1], datum]}))
    msg = str(err.value)
    assert "\n" not in msg and "eval.hard_data[1]" in msg
    assert ("outside the 8x8 image" in msg) if datum[2] < 2 else ("category must be in 0..1" in msg)


def test_sampling_rejects_hard_data_outside_the_image() -> None:
    hard = HardData(rows=np.array([1, 9]), cols=np.array([2, 3]), cats=np.array([0, 1]))
    with pytest.raises(ConfigError, match=r"hard datum 1 at \(row 9, col 3\) is outside the 8x8 image"):
        sample(UNet(2, [4]), 1, 8, budget=2, hard=hard)


def test_bad_config_values() -> None:
    learner = get_learner("ardm")
    with pytest.raises(ConfigError, match="multiple of"):
        learner.check_config(tiny_config(**{"data.patch": 9}))
    with pytest.raises(ConfigError, match="data.thresholds"):
        learner.check_config(tiny_config(**{"data.thresholds": [10, 20]}))
    with pytest.raises(ConfigError, match="model.attention"):
        learner.check_config(tiny_config(**{"model.attention": [5]}))
    with pytest.raises(ConfigError, match="eval.temperature"):
        learner.check_config(tiny_config(**{"eval.temperature": 0}))
    with pytest.raises(ConfigError, match=r"simulate.attention.*window.*global"):
        learner.check_config(tiny_config(**{"simulate.attention": "local"}))
    with pytest.raises(ConfigError, match=r"optim.schedule.*constant.*cosine"):
        learner.check_config(tiny_config(**{"optim.schedule": "linear"}))


def test_tiny_run_reports_metrics_and_figures(tmp_path: Path) -> None:
    reports: list[tuple[int, dict]] = []
    learner = get_learner("ardm")
    cfg = tiny_config(**{"eval.hard_data": [[0, 0, 1], [7, 7, 0], [3, 4, 1]]})
    learner.check_config(cfg)
    result = learner.run(cfg, RunContext(workdir=tmp_path, report=lambda s, m: reports.append((s, dict(m)))))
    assert [s for s, _ in reports] == [0, 1] and all("val_bpp" in m for _, m in reports)
    assert set(learner.metrics) <= set(result.metrics)
    assert all(math.isfinite(v) for v in result.metrics.values())
    assert result.metrics["hard_data_honoured"] == 1.0
    assert 0 < result.metrics["val_bpp"] < 5
    assert {"samples", "conditional_samples", "entropy_map", "variogram_comparison"} <= set(result.figures)
    cond = np.load(result.files["conditional_samples"])
    assert (cond[:, 0, 0] == 1).all() and (cond[:, 7, 7] == 0).all() and (cond[:, 3, 4] == 1).all()
    # The same seed repeats the validation metric.
    again = learner.run(cfg, RunContext(workdir=tmp_path / "again"))
    assert again.metrics["val_bpp"] == pytest.approx(result.metrics["val_bpp"], abs=1e-6)
