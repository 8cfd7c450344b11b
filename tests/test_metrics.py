"""PSNR / SSIM on the Y channel against hand computations and scikit-image."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from fedvsr.data.synthetic import synth_video
from fedvsr.metrics import bicubic_upsample, psnr_rgb, psnr_y, quantize, rgb_to_y, score, ssim_rgb, ssim_y


def _y_numpy(img: torch.Tensor, crop: int) -> list[np.ndarray]:
    """Reference Y planes: 8-bit quantisation and BT.601 luma in numpy, then the border crop."""
    x = np.round(np.clip(img.double().numpy(), 0, 1) * 255)
    x = x[None] if x.ndim == 3 else x
    y = 16 + (65.481 * x[:, 0] + 128.553 * x[:, 1] + 24.966 * x[:, 2]) / 255
    return [p[crop : p.shape[0] - crop, crop : p.shape[1] - crop] for p in y]


def _skimage_ssim(sr: torch.Tensor, hr: torch.Tensor, crop: int) -> float:
    return float(
        np.mean(
            [
                structural_similarity(
                    a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
                )
                for a, b in zip(_y_numpy(sr, crop), _y_numpy(hr, crop), strict=True)
            ]
        )
    )


def _images(kind: str, shape: tuple[int, ...], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        hr = torch.rand(shape, generator=g)
        sr = (hr + 0.08 * torch.randn(shape, generator=g)).clamp(0, 1)
    else:  # structured: synthetic frames and a blurred, shifted, noisy estimate of them
        n = shape[0] if len(shape) == 4 else 1
        v = synth_video(seed, "checker-zoom", n, shape[-2], shape[-1])
        hr = torch.from_numpy(v).permute(0, 3, 1, 2).double() / 255
        sr = torch.nn.functional.avg_pool2d(hr, 3, stride=1, padding=1, count_include_pad=False)
        sr = (sr.roll(1, dims=-1) + 0.02 * torch.randn(sr.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
        if len(shape) == 3:
            hr, sr = hr[0], sr[0]
    return sr, hr


CASES = [
    ("random", (3, 32, 32), 0),
    ("random", (3, 32, 32), 4),
    ("random", (2, 3, 40, 56), 4),
    ("random", (3, 11, 13), 0),
    ("structured", (3, 48, 64), 0),
    ("structured", (3, 3, 64, 48), 4),
]


@pytest.mark.parametrize(("kind", "shape", "crop"), CASES)
def test_ssim_matches_skimage(kind, shape, crop):
    sr, hr = _images(kind, shape, seed=len(shape) + crop)
    ours = ssim_y(sr, hr, crop)
    assert 0.2 < ours < 0.999  # a non-trivial value, not 1 or 0
    assert ours == pytest.approx(_skimage_ssim(sr, hr, crop), abs=1e-4)


@pytest.mark.parametrize(("kind", "shape", "crop"), CASES)
def test_psnr_matches_skimage(kind, shape, crop):
    sr, hr = _images(kind, shape, seed=len(shape) + crop)
    ref = np.mean(
        [
            peak_signal_noise_ratio(b, a, data_range=255)
            for a, b in zip(_y_numpy(sr, crop), _y_numpy(hr, crop), strict=True)
        ]
    )
    assert psnr_y(sr, hr, crop) == pytest.approx(ref, abs=1e-9)


def test_psnr_constant_offset():
    """Adding 10 levels to all of R, G and B adds (65.481 + 128.553 + 24.966) * 10 / 255 to Y."""
    hr = torch.full((3, 16, 16), 100 / 255)
    sr = torch.full((3, 16, 16), 110 / 255)
    dy = 219.0 * 10 / 255
    assert psnr_y(sr, hr, 0) == pytest.approx(10 * math.log10(255**2 / dy**2), abs=1e-9)
    # per-image PSNR averaged over the batch, not the PSNR of the pooled MSE
    both_sr = torch.stack([sr, torch.full((3, 16, 16), 120 / 255)])
    both_hr = torch.stack([hr, hr])
    expected = (10 * math.log10(255**2 / dy**2) + 10 * math.log10(255**2 / (2 * dy) ** 2)) / 2
    assert psnr_y(both_sr, both_hr, 0) == pytest.approx(expected, abs=1e-9)


def test_crop_removes_the_border():
    hr = torch.full((3, 20, 20), 0.5)
    sr = hr.clone()
    sr[:, :2] = 0.0  # damage only the top two rows
    assert psnr_y(sr, hr, 2) == math.inf
    assert ssim_y(sr, hr, 2) == pytest.approx(1.0, abs=1e-12)
    assert psnr_y(sr, hr, 1) < 40


def test_identical_images():
    sr, hr = _images("random", (2, 3, 24, 24), 0)
    assert psnr_y(hr, hr.clone(), 0) == math.inf
    assert ssim_y(hr, hr.clone(), 4) == pytest.approx(1.0, abs=1e-12)
    # differences below half a level vanish in the 8-bit quantisation
    assert psnr_y(quantize(hr) / 255 + 0.4 / 255, quantize(hr) / 255, 0) == math.inf


def test_quantize_and_y():
    x = torch.tensor([0.0, 0.4 / 255, 0.6 / 255, 0.999, 1.2, -0.1])
    assert quantize(x).tolist() == [0.0, 0.0, 1.0, 255.0, 255.0, 0.0]  # rounded, clamped
    assert quantize(x).dtype == torch.float64
    white, black = torch.full((3, 1, 1), 255.0), torch.zeros(3, 1, 1)
    assert rgb_to_y(white).item() == pytest.approx(235.0, abs=1e-9)
    assert rgb_to_y(black).item() == 16.0
    red = torch.tensor([255.0, 0, 0]).view(3, 1, 1)
    assert rgb_to_y(red).item() == pytest.approx(16 + 65.481, abs=1e-9)
    assert rgb_to_y(torch.zeros(2, 5, 3, 4, 6)).shape == (2, 5, 4, 6)


def test_shape_errors():
    a, b = torch.zeros(3, 16, 16), torch.zeros(3, 16, 18)
    with pytest.raises(ValueError, match=r"\(3, 16, 16\) vs \(3, 16, 18\)"):
        psnr_y(a, b, 0)
    with pytest.raises(ValueError, match=r"\(3, 16, 16\) vs \(3, 16, 18\)"):
        ssim_y(a, b, 0)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim_y(torch.zeros(3, 16, 16), torch.zeros(3, 16, 16), 4)
    with pytest.raises(ValueError, match=r"\(3, H, W\) or \(n, 3, H, W\)"):
        psnr_y(torch.zeros(1, 16, 16), torch.zeros(1, 16, 16), 0)


def test_bicubic_upsample():
    lr = torch.rand(2, 4, 3, 6, 5, generator=torch.Generator().manual_seed(0))
    up = bicubic_upsample(lr, 4)
    assert up.shape == (2, 4, 3, 24, 20)
    assert float(up.min()) >= 0 and float(up.max()) <= 1
    torch.testing.assert_close(bicubic_upsample(torch.full((3, 4, 4), 0.3), 2), torch.full((3, 8, 8), 0.3))
    # a smooth frame survives down- then up-sampling better than a random one
    smooth = torch.from_numpy(synth_video(0, "noise-objects", 1, 64, 64)).permute(0, 3, 1, 2).float() / 255
    down = torch.nn.functional.interpolate(smooth, scale_factor=0.25, mode="bicubic", antialias=True)
    assert psnr_y(bicubic_upsample(down, 4), smooth, 4) > 24


def _rgb_numpy(img: torch.Tensor, crop: int) -> list[np.ndarray]:
    """Reference RGB planes ``(H, W, 3)``: 8-bit quantisation, then the border crop."""
    x = np.round(np.clip(img.double().numpy(), 0, 1) * 255)
    x = x[None] if x.ndim == 3 else x
    return [p.transpose(1, 2, 0)[crop : p.shape[1] - crop, crop : p.shape[2] - crop] for p in x]


@pytest.mark.parametrize(("kind", "shape", "crop"), CASES)
def test_rgb_psnr_and_ssim_match_skimage(kind, shape, crop):
    """RGB: PSNR of the squared error over all channels, SSIM the mean of the three channels' SSIM
    (scikit-image's channel_axis), as BasicSR computes them with test_y_channel=False."""
    sr, hr = _images(kind, shape, seed=len(shape) + crop)
    pairs = list(zip(_rgb_numpy(sr, crop), _rgb_numpy(hr, crop), strict=True))
    ref_psnr = np.mean([peak_signal_noise_ratio(b, a, data_range=255) for a, b in pairs])
    ref_ssim = np.mean(
        [
            structural_similarity(
                a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=2
            )
            for a, b in pairs
        ]
    )
    assert psnr_rgb(sr, hr, crop) == pytest.approx(ref_psnr, abs=1e-9)
    assert ssim_rgb(sr, hr, crop) == pytest.approx(ref_ssim, abs=1e-4)
    assert psnr_rgb(sr, hr, crop) != pytest.approx(psnr_y(sr, hr, crop), abs=1e-3)


def test_score_channels():
    sr, hr = _images("structured", (3, 3, 64, 48), seed=1)
    pairs = [(sr[None, :2], hr[None, :2]), (sr[None, 2:], hr[None, 2:])]  # (1, t, 3, H, W) clips
    y = score(pairs, 4, "y")
    rgb = score(pairs, 4, "rgb")
    both = score(pairs, 4, "y+rgb")
    # the mean over clips of each clip's mean over its frames: (mean of frames 0, 1 + frame 2) / 2
    assert y["psnr"] == pytest.approx((psnr_y(sr[:2], hr[:2], 4) + psnr_y(sr[2:], hr[2:], 4)) / 2, abs=1e-12)
    assert set(y) == {"psnr", "ssim"} and set(rgb) == {"psnr", "ssim"}
    assert both == {"psnr": y["psnr"], "ssim": y["ssim"], "psnr_rgb": rgb["psnr"], "ssim_rgb": rgb["ssim"]}
    with pytest.raises(ValueError, match="unknown channels 'yuv'; allowed: y, rgb, y\\+rgb"):
        score(pairs, 4, "yuv")
