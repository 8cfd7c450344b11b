"""VSRGAN: sizes, shapes, the 3D non-local block, the losses and the GAN training step."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fedvsr.models import build_model, count_params
from fedvsr.models import losses as L
from fedvsr.models.base import StepHooks
from fedvsr.models.vsrgan import VSRGAN, from_patches, to_patches
from fedvsr.models.vsrgan_blocks import ConcatResidualBlock, NonLocalBlock3D


def meta(preset: str, **options) -> VSRGAN:
    with torch.device("meta"):
        return build_model("vsrgan", preset, options)


@pytest.mark.parametrize(("preset", "paper"), [("paper-rrdb", 27e6), ("paper-residual", 5e6)])
def test_paper_presets_within_10_percent_of_the_papers_sizes(preset, paper):
    model = meta(preset)
    params = count_params(model)  # the generator's: the discriminator only trains
    assert params == sum(p.numel() for p in model.generator.parameters())
    assert abs(params - paper) / paper < 0.10
    assert params == {"paper-rrdb": 26_514_627, "paper-residual": 4_862_403}[preset]


def test_concat_residual_block_parameters_by_hand():
    c = 16  # two 3x3 convs c -> c and the 1x1 conv over the 2c-channel concatenation
    assert count_params(ConcatResidualBlock(c)) == 2 * (9 * c * c + c) + (2 * c * c + c)


@pytest.mark.parametrize("preset", ["tiny", "tiny-residual"])
@pytest.mark.parametrize(("scale", "cascade"), [(4, True), (4, False), (2, True)])
def test_every_frame_restored_at_scale(preset, scale, cascade):
    model = build_model("vsrgan", preset, {"scale": scale, "cascade": cascade})
    lr = torch.rand(2, 3, 3, 8, 12)
    sr = model(lr)
    assert sr.shape == (2, 3, 3, scale * 8, scale * 12)
    assert model.center_output is False and model.target(torch.rand(2, 3, 3, 4, 4)).shape == (2, 3, 3, 4, 4)
    # untrained: the last conv is zero, so every pass is bicubic upsampling
    up = lr.reshape(6, 3, 8, 12)
    for _ in range(model.stages):
        up = F.interpolate(up, scale_factor=scale if not cascade else 2, mode="bicubic", align_corners=False)
    assert torch.allclose(sr.reshape(6, 3, scale * 8, scale * 12), up, atol=1e-5)


def test_bad_options_are_errors_at_build_time():
    with pytest.raises(ValueError, match="scale must be a power of 2"):
        meta("tiny", scale=3)
    with pytest.raises(ValueError, match="generator must be 'rrdb' or 'residual'"):
        meta("tiny", generator="dense")
    with pytest.raises(ValueError, match=r"^model.recipe.sobel_weight = -1.0 is not allowed; expected a number >= 0.0"):
        meta("tiny", sobel_weight=-1.0)
    with pytest.raises(ValueError, match=r"^model.recipe.laplacian_neighbours = 6 is not allowed; expected one of 4"):
        meta("tiny", laplacian_neighbours=6)


def test_recipe_keys_are_typed_config_keys_checked_before_ray():
    from fedvsr.config import ConfigError, config_from_dict, config_table, load_config
    from fedvsr.models.vsrgan import VSRGANRecipe

    base = ["model.name=vsrgan", "model.preset=tiny"]
    cfg = load_config(None, [*base, "model.recipe.sobel_weight=0.25", "model.recipe.patch_sizes=[4, 8]"])
    assert cfg.model.recipe == VSRGANRecipe(sobel_weight=0.25, patch_sizes=[4, 8])
    # the constructor gets the values that differ from the recipe's defaults; the file keeps them under recipe
    assert cfg.model.options == {"sobel_weight": 0.25, "patch_sizes": [4, 8]}
    assert cfg.to_dict()["model"]["options"] == {} and cfg.to_dict()["model"]["recipe"]["sobel_weight"] == 0.25
    assert config_from_dict(cfg.to_dict()) == cfg  # what the coordinator and the workers rebuild from the dict
    with torch.device("meta"):
        model = build_model("vsrgan", "tiny", cfg.model.options)
    assert model.weights["sobel"] == 0.25 and model.patch_sizes == [4, 8]
    table = config_table()
    assert "| `model.recipe.adversarial_weight` | `0.001` | a number >= 0.0 and <= 1000000.0 | VSRGAN: weight" in table
    for overrides, message in [
        (
            ["model.recipe.ssim_weight=-0.1"],
            "model.recipe.ssim_weight = -0.1 is not allowed; expected a number >= 0.0 and <= 1000000.0",
        ),
        (
            ["model.options.sobel_weight=0.3"],
            "model.options.sobel_weight is a key of vsrgan's training recipe: set "
            "model.recipe.sobel_weight instead (the value is checked there)",
        ),
        (
            ["model.recipe.lpips_weight=0.5"],
            "model.recipe.lpips_weight = 0.5 needs model.recipe.lpips_weights = the "
            "path of a local VGG-19 weights file",
        ),
    ]:
        with pytest.raises(ConfigError) as err:
            load_config(None, [*base, *overrides])
        assert str(err.value).startswith(message)
    with pytest.raises(ConfigError) as err:
        load_config(None, ["model.recipe.whole_weight=2"])
    assert str(err.value) == (
        "model.recipe.whole_weight = 2.0 has no effect with model.name = 'efvsr' (it has no "
        "recipe keys); remove it, or choose the model family it belongs to"
    )


def test_lpips_is_off_without_a_local_vgg_file(tmp_path):
    with pytest.raises(ValueError, match="no weights are downloaded.*LPIPS is off"):
        meta("tiny", lpips_weight=0.1)
    with pytest.raises(ValueError, match="model.recipe.lpips_weights = .* is not a file"):
        meta("tiny", lpips_weight=0.1, lpips_weights=str(tmp_path / "vgg19.pth"))
    assert build_model("vsrgan", "tiny").perceptual is None


def test_vgg_features_load_from_a_local_state_dict(tmp_path):
    net = L.vgg19_features(4)
    state = {f"features.{k}": v for k, v in net.state_dict().items()}
    torch.save(state, tmp_path / "vgg.pth")
    loaded = L.load_vgg19(tmp_path / "vgg.pth", layers=4)
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(loaded(x), net(x))
    assert not any(p.requires_grad for p in loaded.parameters())
    torch.save({"classifier.0.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not a VGG-19 state dict"):
        L.load_vgg19(tmp_path / "other.pth", layers=4)


# ---------------------------------------------------------------------- non-local block
def test_non_local_block_mixes_information_across_frames():
    torch.manual_seed(0)
    block = NonLocalBlock3D(8)
    x = torch.randn(1, 3, 8, 5, 5)
    y = block(x)
    x2 = x.clone()
    x2[:, 0] += torch.randn(8, 5, 5)  # change frame 0 only
    y2 = block(x2)
    assert (y2[:, 2] - y[:, 2]).abs().max() > 1e-3  # frame 2's output moved
    assert (y2[:, 1] - y[:, 1]).abs().max() > 1e-3


def test_generator_mixes_frames_once_trained_away_from_bicubic():
    torch.manual_seed(0)
    model = build_model("vsrgan", "tiny")
    torch.nn.init.normal_(model.generator.compress[-1].weight, std=0.1)
    lr = torch.rand(1, 3, 3, 8, 8)
    lr2 = lr.clone()
    lr2[:, 0] = torch.rand(3, 8, 8)
    with torch.no_grad():
        diff = (model(lr2)[:, 2] - model(lr)[:, 2]).abs().max()
    assert diff > 1e-6  # float32 noise is ~1e-7; frame 0 reaches frame 2 only through the non-local block


def test_non_local_linear_form_equals_the_pairwise_sum():
    # eq. (10)-(13): y_i = (1/N) sum_j (theta_i . phi_j) g_j, z = W_z y + x, with the N x N affinity matrix
    torch.manual_seed(1)
    block = NonLocalBlock3D(6, reduction=2)
    b, t, c, h, w = 2, 3, 6, 4, 5
    x = torch.randn(b, t, c, h, w)
    flat = x.reshape(b * t, c, h, w)

    def pos(conv):
        return conv(flat).view(b, t, -1, h * w).permute(0, 1, 3, 2).reshape(b, t * h * w, -1)

    theta, phi, g = pos(block.theta), pos(block.phi), pos(block.g)
    f = theta @ phi.transpose(1, 2)  # (b, N, N)
    y = f @ g / f.shape[-1]
    y = y.view(b, t, h * w, -1).permute(0, 1, 3, 2).reshape(b * t, -1, h, w)
    expected = x + block.w_z(y).view(b, t, c, h, w)
    assert torch.allclose(block(x), expected, atol=1e-5)


# ---------------------------------------------------------------------- losses
EDGE_LOSSES = {
    "laplacian-4": lambda p, t: L.laplacian_loss(p, t, 4),
    "laplacian-8": lambda p, t: L.laplacian_loss(p, t, 8),
    "sobel": L.sobel_loss,
    "ricker": L.ricker_loss,
    "pyramid": L.laplacian_pyramid_loss,
    "gradient": L.gradient_loss,
    "ssim": L.ssim_loss,
    "mse": L.content_loss,
    "charbonnier": lambda p, t: L.content_loss(p, t, "charbonnier", 0.0),
}


@pytest.mark.parametrize("name", list(EDGE_LOSSES))
def test_losses_zero_for_identical_images_positive_otherwise(name):
    torch.manual_seed(2)
    loss = EDGE_LOSSES[name]
    a = torch.rand(2, 3, 3, 16, 16)
    b = (a + 0.05 * torch.randn_like(a)).clamp(0, 1)
    assert float(loss(a, a.clone())) == pytest.approx(0.0, abs=1e-6)
    assert float(loss(a, b)) > 1e-4


def test_ricker_kernel_has_the_papers_centre_value():
    k = L.ricker_kernel(0.55, 3)
    assert k.shape == (3, 3)
    assert float(k[1, 1]) == pytest.approx(3.4786, abs=1e-4)
    assert float(k[0, 1]) < 0 and float(k[0, 0]) < 0  # the hat's negative ring


def test_laplacian_kernels_see_a_bump_but_not_a_constant():
    flat = torch.full((1, 1, 7, 7), 0.5)
    bump = flat.clone()
    bump[..., 3, 3] = 1.0
    for n in (4, 8):
        assert float(L.laplacian_loss(flat, flat + 0.1, n)) == pytest.approx(0.0, abs=1e-10)
        centre = float(L.filter2d(bump - flat, torch.tensor(L.LAPLACIAN_4 if n == 4 else L.LAPLACIAN_8))[0, 0, 3, 3])
        assert centre == pytest.approx(-0.5 * n)


def test_laplacian_pyramid_reconstructs_the_image():
    x = torch.rand(2, 3, 16, 16)
    bands = L.laplacian_pyramid(x, 3)
    assert [band.shape[-1] for band in bands] == [16, 8, 4, 2]
    y = bands[-1]
    for band in reversed(bands[:-1]):
        y = band + F.interpolate(y, size=band.shape[-2:], mode="bilinear", align_corners=False)
    assert torch.allclose(y, x, atol=1e-5)


# ---------------------------------------------------------------------- training recipe
def test_patches_round_trip():
    x = torch.rand(2, 3, 3, 8, 12)
    p = to_patches(x, 4)
    assert p.shape == (12, 3, 3, 4, 4)
    assert torch.equal(p[1], x[0, :, :, 0:4, 4:8])
    assert torch.equal(from_patches(p, 2, 2, 3), x)


def recording_hooks(calls: list):
    def objective(loss, sr, target):
        calls.append(("objective", None if sr is None else tuple(sr.shape)))
        return loss

    def apply(loss, opt, zero_grad=True):
        calls.append(("apply", zero_grad))
        if zero_grad:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return StepHooks(objective, apply)


def test_training_step_trains_both_networks_and_reports_the_content_loss():
    torch.manual_seed(3)
    model = build_model("vsrgan", "tiny", {"patch_sizes": [4, 8]})
    lr, hr = torch.rand(2, 3, 3, 8, 8), torch.rand(2, 3, 3, 32, 32)
    with torch.no_grad():  # pass 1: 2x2 grid of 4x4 patches, each upscaled alone; pass 2: the whole 8x8 clip
        patched = from_patches(model(to_patches(lr, 4)), 2, 2, 2)
        expected = (F.mse_loss(patched, hr) + F.mse_loss(model(lr), hr)) / 2
    opts = {k: torch.optim.Adam(v, lr=1e-3) for k, v in model.optimizer_groups().items()}
    g0 = [p.detach().clone() for p in model.generator.parameters()]
    d0 = [p.detach().clone() for p in model.discriminator.parameters()]
    calls: list = []
    reported = model.training_step((lr, hr), opts, recording_hooks(calls))
    assert float(reported) == pytest.approx(float(expected), rel=1e-5)
    assert not reported.requires_grad
    # two patch passes (4x4 -> 2x2 grid, 8x8 -> whole), accumulated into one generator step, then one D step
    assert calls == [
        ("objective", (2, 3, 3, 32, 32)),
        ("objective", (2, 3, 3, 32, 32)),
        ("apply", False),
        ("objective", None),
        ("apply", True),
    ]
    assert any(not torch.equal(a, b) for a, b in zip(g0, model.generator.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(d0, model.discriminator.parameters(), strict=True))
    # nothing frozen is left behind, no gradients linger for a strategy's correction to pick up
    assert all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.discriminator.parameters())


def test_training_step_without_accumulation_steps_per_pass_and_skips_d_without_adversarial_loss():
    model = build_model(
        "vsrgan", "tiny-residual", {"patch_sizes": [4, 8], "accumulate": False, "adversarial_weight": 0.0}
    )
    lr, hr = torch.rand(1, 3, 3, 8, 8), torch.rand(1, 3, 3, 32, 32)
    opts = {k: torch.optim.Adam(v, lr=1e-3) for k, v in model.optimizer_groups().items()}
    d0 = [p.detach().clone() for p in model.discriminator.parameters()]
    calls: list = []
    model.training_step((lr, hr), opts, recording_hooks(calls))
    assert [c for c in calls if c[0] == "apply"] == [("apply", True), ("apply", True)]
    assert all(torch.equal(a, b) for a, b in zip(d0, model.discriminator.parameters(), strict=True))


def test_cascade_scores_the_x2_stage_against_the_downscaled_hr():
    model = build_model("vsrgan", "tiny")
    hr = torch.rand(1, 3, 3, 32, 32)
    targets = model.stage_targets(hr)
    assert [t.shape[-1] for t in targets] == [16, 32] and targets[-1] is hr
    assert len(build_model("vsrgan", "tiny", {"cascade": False}).stage_targets(hr)) == 1
