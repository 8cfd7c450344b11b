"""Degradations: bicubic downsampling, the registry, and the codec degradations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fedvsr.data.degrade import (
    DEGRADATIONS,
    bicubic_downsample,
    blur_downsample,
    degrade_video,
    gaussian_kernel,
)
from fedvsr.data.synthetic import synth_video


def _luma_psnr(a: np.ndarray, b: np.ndarray) -> float:
    w = np.array([0.299, 0.587, 0.114])
    mse = np.mean((a.astype(np.float64) @ w - b.astype(np.float64) @ w) ** 2)
    return float(10 * np.log10(255**2 / mse))


@pytest.fixture(scope="module")
def hr() -> np.ndarray:
    return synth_video(1, "noise-objects", 4, 64, 96)


def test_bicubic_downsample_shape_and_constant():
    x = torch.full((2, 3, 3, 16, 24), 0.37)
    y = bicubic_downsample(x, 4)
    assert y.shape == (2, 3, 3, 4, 6)
    torch.testing.assert_close(y, torch.full_like(y, 0.37))


def test_bicubic_downsample_is_centred():
    """A linear ramp is reproduced exactly at the LR pixel centres s*j + (s-1)/2 (align_corners=False)."""
    y, x = torch.meshgrid(torch.arange(32.0), torch.arange(48.0), indexing="ij")
    lr = bicubic_downsample((0.1 + 0.01 * x + 0.005 * y)[None], 4)[0]
    yc, xc = torch.meshgrid(torch.arange(8.0) * 4 + 1.5, torch.arange(12.0) * 4 + 1.5, indexing="ij")
    expected = 0.1 + 0.01 * xc + 0.005 * yc
    torch.testing.assert_close(lr[2:-2, 2:-2], expected[2:-2, 2:-2], atol=1e-5, rtol=0)


def test_bicubic_of_repeated_image_is_close():
    smooth = torch.from_numpy(synth_video(0, "noise-objects", 2, 64, 64)).permute(0, 3, 1, 2).float() / 255
    lr = F.interpolate(smooth, size=(16, 16), mode="bicubic", antialias=True).clamp(0, 1)
    hr = lr.repeat_interleave(4, dim=-2).repeat_interleave(4, dim=-1)
    err = (bicubic_downsample(hr, 4) - lr).abs()
    assert err.mean() < 0.01
    assert err.max() < 0.08


def test_bicubic_downsample_clamps_and_validates():
    checker = (torch.arange(16)[:, None] // 2 + torch.arange(16)[None, :] // 2) % 2
    y = bicubic_downsample(checker.float()[None], 2)
    assert y.min() >= 0 and y.max() <= 1
    with pytest.raises(ValueError, match="18x16 .* not divisible by scale 4"):
        bicubic_downsample(torch.zeros(3, 18, 16), 4)
    with pytest.raises(ValueError, match="float tensor"):
        bicubic_downsample(torch.zeros(3, 16, 16, dtype=torch.uint8), 4)


def test_bicubic_degradation_matches_rounded_downsample(hr):
    lr = degrade_video(hr, "bicubic", 4)
    assert lr.shape == (4, 16, 24, 3) and lr.dtype == np.uint8
    ref = bicubic_downsample(torch.from_numpy(hr).permute(0, 3, 1, 2).double() / 255, 4)
    ref = (ref * 255).round().permute(0, 2, 3, 1).numpy()
    assert np.abs(lr.astype(np.float64) - ref).max() <= 1  # float32 vs float64 rounding only
    const = np.full((2, 8, 8, 3), 200, np.uint8)
    np.testing.assert_array_equal(degrade_video(const, "bicubic", 2), np.full((2, 4, 4, 3), 200))


def test_registry_errors(hr):
    assert {"bicubic", "blur-h264", "hevc"} <= set(DEGRADATIONS)
    with pytest.raises(ValueError, match=r"unknown degradation 'jpeg'; choose one of \['bicubic'"):
        degrade_video(hr, "jpeg", 4)
    with pytest.raises(ValueError, match="'bicubic' has no parameter crf"):
        degrade_video(hr, "bicubic", 4, crf=20)
    with pytest.raises(ValueError, match="not divisible"):
        degrade_video(hr[:, :62], "bicubic", 4)


def test_gaussian_kernel():
    k = gaussian_kernel(1.6)
    assert k.shape == (13,)
    assert abs(float(k.sum()) - 1) < 1e-6
    torch.testing.assert_close(k, k.flip(0))
    assert float(k[6]) == pytest.approx(1 / sum(np.exp(-(i**2) / (2 * 1.6**2)) for i in range(-6, 7)), rel=1e-6)


def test_blur_downsample_samples_from_origin():
    x = torch.rand(2, 3, 16, 24, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(blur_downsample(x, 4, sigma=0.05), x[..., ::4, ::4])
    torch.testing.assert_close(blur_downsample(torch.full((1, 3, 16, 16), 0.5), 4, 1.6), torch.full((1, 3, 4, 4), 0.5))


def test_blur_h264(hr):
    clean = blur_downsample(torch.from_numpy(hr).permute(0, 3, 1, 2).float() / 255, 4, 1.6)
    clean = (clean * 255).round().byte().permute(0, 2, 3, 1).numpy()
    good = degrade_video(hr, "blur-h264", 4, crf=15)
    bad = degrade_video(hr, "blur-h264", 4, crf=40)
    assert good.shape == bad.shape == (4, 16, 24, 3)
    assert _luma_psnr(good, clean) > 38
    assert _luma_psnr(bad, clean) < _luma_psnr(good, clean) - 6


@pytest.mark.parametrize("width", [96, 160])  # LR 24 wide (padded for x265) and 40 wide (x265's crash widths)
def test_hevc(width):
    hr = synth_video(2, "stripes-pan", 3, 64, width)
    clean = degrade_video(hr, "bicubic", 4)
    good = degrade_video(hr, "hevc", 4, qp=22)
    bad = degrade_video(hr, "hevc", 4, qp=37)
    assert good.shape == bad.shape == clean.shape == (3, 16, width // 4, 3)
    assert _luma_psnr(good, clean) > 36
    assert _luma_psnr(bad, clean) < _luma_psnr(good, clean) - 4


@pytest.mark.parametrize("name", ["blur-h264", "hevc"])
def test_codecs_take_odd_lr_sizes(name):
    hr = synth_video(0, "waves-rotate", 2, 36, 44)  # LR 9x11 at x4: odd, and below x265's 16x16
    lr = degrade_video(hr, name, 4)
    assert lr.shape == (2, 9, 11, 3)
    assert _luma_psnr(lr, degrade_video(hr, "bicubic", 4)) > (20 if name == "blur-h264" else 28)
