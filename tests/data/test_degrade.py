"""Degradations: bicubic, blur, H.264 (FCA2), HEVC (FCVSR), FCA2's training mix, the VSRGAN suite."""

from __future__ import annotations

import math

import av
import numpy as np
import ptwt
import pytest
import torch
import torch.nn.functional as F

import fedvsr.data.degrade as degrade
import fedvsr.data.resample as resample
import fedvsr.data.vsrgan_ops as vsrgan_ops
from fedvsr.config import ConfigError, load_config
from fedvsr.data.degrade import (
    DEGRADATIONS,
    VSRGAN_DEFAULTS,
    VSRGAN_OPS,
    apply_vsrgan_op,
    bicubic_downsample,
    blur_downsample,
    canonical,
    degradation_params,
    degrade_resampled,
    degrade_video,
    draw_vsrgan,
    fca2_mix_crf,
    vsrgan_stage,
)
from fedvsr.data.resample import gaussian_kernel
from fedvsr.data.synthetic import synth_video


def _luma_psnr(a: np.ndarray, b: np.ndarray) -> float:
    w = np.array([0.299, 0.587, 0.114])
    mse = np.mean((a.astype(np.float64) @ w - b.astype(np.float64) @ w) ** 2)
    return float(10 * np.log10(255**2 / mse))


def textured_clip(frames: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """A fast textured HR clip ``(frames, h, w, 3)`` uint8: band-limited colour noise (Gaussian blur of
    sigma 1.5 over uniform noise, mean 0.5, std 0.18) panning by (3, 2) pixels a frame."""
    rng = np.random.default_rng(seed)
    big = torch.from_numpy(rng.random((3, h + 3 * frames, w + 2 * frames), dtype=np.float32))
    big = vsrgan_ops._blur_planes(big, 1.5)
    big = (big - big.mean()) / big.std() * 0.18 + 0.5
    out = np.stack([big[:, 3 * i : 3 * i + h, 2 * i : 2 * i + w].permute(1, 2, 0).numpy() for i in range(frames)])
    return (out.clip(0, 1) * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def hr() -> np.ndarray:
    return synth_video(1, "noise-objects", 4, 64, 96)


@pytest.fixture(scope="module")
def clip256() -> np.ndarray:
    return textured_clip(8, 256, 256)  # LR 64x64 at x4


@pytest.fixture(scope="module")
def clip384() -> np.ndarray:
    """LR 96x96 at x4: libx265 encodes it to the same bytes in every process (at 64x64 it reads uninitialised
    memory, and one QP's PSNR moved by 3 dB between processes with other MALLOC_PERTURB_ values)."""
    return textured_clip(8, 384, 384)


# ----------------------------------------------------------------------------------------------------- bicubic


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


def _matlab_imresize_1d(x: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB's ``imresize(x, 1/scale, 'bicubic')`` along the last axis, written from its ``contributions``
    function: cubic kernel with a = -0.5, widened by ``scale`` (antialiasing), weights normalised, indices
    mirrored at the borders."""

    def cubic(t: np.ndarray) -> np.ndarray:
        a = np.abs(t)
        return np.where(
            a <= 1, 1.5 * a**3 - 2.5 * a**2 + 1, np.where(a <= 2, -0.5 * a**3 + 2.5 * a**2 - 4 * a + 2, 0.0)
        )

    n = x.shape[-1]
    out_n, s = n // scale, 1 / scale
    width = 4 / s
    u = np.arange(1, out_n + 1) / s + 0.5 * (1 - 1 / s)
    left = np.floor(u - width / 2)
    p = math.ceil(width) + 2
    idx = left[:, None] + np.arange(p)[None]
    wts = s * cubic(s * (u[:, None] - idx))
    wts /= wts.sum(1, keepdims=True)
    idx = idx.astype(int) - 1
    idx = np.where(idx < 0, -idx - 1, np.where(idx >= n, 2 * n - idx - 1, idx))  # symmetric mirroring
    return np.einsum("...op,op->...o", x[..., idx], wts)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_matches_matlab_imresize(scale):
    """The bicubic degradation is MATLAB's antialiased imresize, borders included; inside the frame it is also
    PyTorch's antialiased bicubic interpolation (an independent implementation of the same kernel)."""
    x = np.random.default_rng(scale).random((2, 3, 12 * scale, 16 * scale))
    ours = bicubic_downsample(torch.from_numpy(x), scale).numpy()
    ref = _matlab_imresize_1d(_matlab_imresize_1d(x, scale).swapaxes(-1, -2), scale).swapaxes(-1, -2)
    assert ours.shape == ref.shape == (2, 3, 12, 16)
    np.testing.assert_allclose(ours, ref.clip(0, 1), atol=1e-12)
    torch_aa = F.interpolate(torch.from_numpy(x), size=(12, 16), mode="bicubic", antialias=True).clamp(0, 1).numpy()
    np.testing.assert_allclose(ours[..., 2:-2, 2:-2], torch_aa[..., 2:-2, 2:-2], atol=1e-9)
    assert np.abs(ours - torch_aa).max() > 1e-4  # the borders do differ: MATLAB mirrors the frame


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
    assert set(DEGRADATIONS) == {"bicubic", "blur", "h264", "blur-h264", "hevc", "fca2-mix", "vsrgan"}
    with pytest.raises(ValueError, match=r"unknown degradation 'jpeg'; choose one of \['bicubic', 'blur'"):
        degrade_video(hr, "jpeg", 4)
    with pytest.raises(ValueError, match="'bicubic' has no parameter crf"):
        degrade_video(hr, "bicubic", 4, crf=20)
    with pytest.raises(ValueError, match=r"'hevc' has no parameter sigma; it takes \['qp'\]"):
        degrade_video(hr, "hevc", 4, sigma=1.5)
    with pytest.raises(ValueError, match="not divisible"):
        degrade_video(hr[:, :62], "bicubic", 4)


# -------------------------------------------------------------------------------------------- blur and codecs


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


def test_blur_is_fca2_sigma_then_subsampling(hr):
    """``blur`` defaults to FCA2's sigma 1.5: an impulse's LR response is the 2-D kernel sampled every 4th pixel."""
    assert degrade.FCA2_SIGMA == 1.5
    assert degrade.blur.__defaults__ == (1.5,) and degrade.h264.__defaults__ == (1.5, 25)
    ref = blur_downsample(torch.from_numpy(hr).permute(0, 3, 1, 2).float() / 255, 4, 1.5)
    np.testing.assert_array_equal(degrade_video(hr, "blur", 4), resample.to_uint8(ref))
    impulse = np.zeros((1, 32, 32, 3), np.uint8)
    impulse[0, 16, 16] = 255
    lr = degrade_video(impulse, "blur", 4, sigma=1.5).astype(np.float64)[0, :, :, 0]
    k = gaussian_kernel(1.5).double().numpy()  # 13 taps, centre at 6
    assert lr[4, 4] == round(255 * k[6] * k[6])  # LR (4, 4) samples HR (16, 16): the impulse
    assert lr[3, 4] == round(255 * k[2] * k[6])  # LR (3, 4) samples HR (12, 16): 4 pixels above
    assert lr[2, 4] == 0  # 8 pixels away: beyond the 13 taps


def test_h264_alias_and_defaults():
    assert DEGRADATIONS["blur-h264"] is DEGRADATIONS["h264"]
    assert canonical("blur-h264") == "h264" and canonical("hevc") == "hevc"
    assert degrade.RESAMPLING["blur-h264"] == degrade.RESAMPLING["h264"] == "BD"


def test_psnr_falls_as_crf_rises(clip256):
    """FCA2's H.264 degradation on one clip (8 frames, LR 64x64): the PSNR of the decoded codec output against
    the codec's input (the blurred and subsampled LR frames) falls as CRF rises, 15 > 25 > 35."""
    clean = degrade_video(clip256, "blur", 4)
    psnr = [_luma_psnr(degrade_video(clip256, "h264", 4, crf=crf), clean) for crf in (15, 25, 35)]
    assert psnr[0] > psnr[1] + 3 > psnr[2] + 6, psnr  # measured about 37.7, 30.2, 23.6 dB
    assert psnr[0] > 33


def test_psnr_falls_as_qp_rises(clip384):
    """FCVSR's HEVC degradation on one clip (8 frames, LR 96x96): the PSNR of the decoded codec output against
    the codec's input (the bicubic LR frames) falls as QP rises, 22 > 27 > 32 > 37.

    Measured 37.59, 33.82, 29.40, 25.77 dB, the same in processes with three MALLOC_PERTURB_ values (at LR 64x64
    libx265 reads uninitialised memory: 34.2-37.2 dB at QP 22 over the same three)."""
    clean = degrade_video(clip384, "bicubic", 4)
    psnr = [_luma_psnr(degrade_video(clip384, "hevc", 4, qp=qp), clean) for qp in (22, 27, 32, 37)]
    assert psnr[0] > psnr[1] + 3 > psnr[2] + 6 > psnr[3] + 9, psnr
    assert psnr[0] > 35, psnr


def test_hevc_encodes_without_b_frames(monkeypatch, clip256):
    """FCVSR encodes with HM's low-delay B (no reordering); the hevc degradation asks libx265 for no B-frames,
    and the stream it writes decodes in presentation order with no B picture."""
    seen = []
    real = degrade.write_video

    def spy(path, frames, **kw):
        real(path, frames, **kw)
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            seen.append(([p.pts for p in c.demux(s) if p.size], kw))
        with av.open(str(path)) as c:
            seen[-1] += ([int(f.pict_type) for f in c.decode(video=0)],)

    monkeypatch.setattr(degrade, "write_video", spy)
    degrade_video(clip256[:6], "hevc", 4, qp=32)
    ((pts, kw, types),) = seen
    assert kw["codec"] == "libx265" and kw["bframes"] == 0 and kw["qp"] == 32
    assert pts == sorted(pts) and len(pts) == 6
    assert types[0] == int(av.video.frame.PictureType.I) and int(av.video.frame.PictureType.B) not in types


def test_blur_h264(hr):
    clean = degrade_video(hr, "blur", 4)
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


@pytest.mark.parametrize("name", ["h264", "hevc"])
def test_codecs_take_odd_lr_sizes(name):
    hr = synth_video(0, "waves-rotate", 2, 36, 44)  # LR 9x11 at x4: odd, and below x265's 16x16
    lr = degrade_video(hr, name, 4)
    assert lr.shape == (2, 9, 11, 3)
    assert _luma_psnr(lr, degrade_video(hr, "bicubic", 4)) > (20 if name == "h264" else 28)


# ------------------------------------------------------------------------------------------------ FCA2 mix


def test_fca2_mix_fraction_and_crfs_over_many_videos():
    """Half the videos compressed (binomial: 4000 videos, 4 standard deviations = 0.032), CRFs uniform on 15..35."""
    draws = [fca2_mix_crf(0, f"video{i:04d}") for i in range(4000)]
    crfs = [c for c in draws if c is not None]
    assert abs(len(crfs) / 4000 - 0.5) < 0.032
    assert set(crfs) == set(range(15, 36))
    assert abs(np.mean(crfs) - 25) < 4 * np.sqrt((21**2 - 1) / 12 / len(crfs))
    counts = np.bincount(crfs, minlength=36)[15:]
    assert counts.max() < 2 * counts.min()
    quarter = [fca2_mix_crf(3, f"video{i:04d}", crf_min=25, crf_max=25, compressed=0.25) for i in range(4000)]
    assert abs(sum(c is not None for c in quarter) / 4000 - 0.25) < 4 * np.sqrt(0.25 * 0.75 / 4000)
    assert {c for c in quarter if c is not None} == {25}
    assert all(fca2_mix_crf(0, f"v{i}", compressed=0.0) is None for i in range(50))
    assert all(fca2_mix_crf(0, f"v{i}", compressed=1.0) is not None for i in range(50))


def test_fca2_mix_is_blur_or_h264_per_video(hr):
    video = next(f"v{i}" for i in range(100) if fca2_mix_crf(5, f"v{i}") is None)
    np.testing.assert_array_equal(degrade_video(hr, "fca2-mix", 4, seed=5, video=video), degrade_video(hr, "blur", 4))
    video = next(f"v{i}" for i in range(100) if (fca2_mix_crf(5, f"v{i}") or 0) >= 33)
    lr = degrade_video(hr, "fca2-mix", 4, seed=5, video=video)
    assert _luma_psnr(lr, degrade_video(hr, "blur", 4)) < 40  # compressed at CRF >= 33
    assert [fca2_mix_crf(s, "clip") for s in range(8)] == [fca2_mix_crf(s, "clip") for s in range(8)]
    assert len({fca2_mix_crf(s, "clip") for s in range(40)}) > 5  # the seed changes the draw


# ------------------------------------------------------------------------------------------------ VSRGAN suite


def _grey_noise(t: int, h: int, w: int, low: float = 0.3, high: float = 0.7, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).uniform(low, high, (t, 3, h, w)).astype(np.float32))


def test_gaussian_blur_of_an_impulse_is_the_kernel():
    x = torch.zeros(1, 3, 21, 21)
    x[0, :, 10, 10] = 1
    y = apply_vsrgan_op(x, "blur", {"sigma": 1.2})
    k = gaussian_kernel(1.2, radius=4)
    torch.testing.assert_close(y[0, 1, 6:15, 6:15], k[:, None] * k[None, :])
    assert float(y.sum()) == pytest.approx(3.0, rel=1e-5)


def test_gaussian_noise_std_is_the_drawn_std():
    x = torch.full((4, 3, 32, 32), 0.5)
    y = apply_vsrgan_op(x, "noise", {"std": 6 / 255, "noise_seed": 1})
    assert float((y - x).std() * 255) == pytest.approx(6, rel=0.03)
    assert float((y - x).mean() * 255) == pytest.approx(0, abs=0.1)
    lr = np.full((4, 32, 32, 3), 128, np.uint8)
    for video in ("a", "b", "c"):
        ((op, params),) = draw_vsrgan(0, video, 32, 32, ops="noise", prob=1.0, noise_max=10.0)
        out = vsrgan_stage(lr, seed=0, video=video, ops="noise", prob=1.0, noise_max=10.0).astype(np.float64)
        std = params["std"] * 255
        assert 0 <= std <= 10
        assert np.std(out - 128) == pytest.approx(np.sqrt(std**2 + 1 / 12), rel=0.05)  # + rounding to levels


def test_contrast_brightness_move_mean_and_std_by_the_drawn_factors():
    x = _grey_noise(2, 24, 24)
    y = apply_vsrgan_op(x, "contrast", {"brightness": 0.05, "contrast": 1.2})
    for i in range(2):
        assert float(y[i].mean() - x[i].mean()) == pytest.approx(0.05, abs=1e-5)
        assert float(y[i].std() / x[i].std()) == pytest.approx(1.2, rel=1e-4)
    lr = resample.to_uint8(x)
    ((_, p),) = draw_vsrgan(1, "clip", 24, 24, ops="contrast", prob=1.0, brightness=0.1, contrast=0.2)
    assert abs(p["brightness"]) <= 0.1 and 0.8 <= p["contrast"] <= 1.2
    out = vsrgan_stage(lr, seed=1, video="clip", ops="contrast", prob=1.0).astype(np.float64) / 255
    src = lr.astype(np.float64) / 255
    assert out.mean() - src.mean() == pytest.approx(p["brightness"], abs=0.5 / 255)
    assert out.std() / src.std() == pytest.approx(p["contrast"], rel=0.01)


@pytest.mark.parametrize("gain", [0.0, 0.5, 1.3])
def test_frequency_guided_scales_the_haar_detail_bands(gain):
    x = _grey_noise(2, 16, 20)
    y = apply_vsrgan_op(x, "frequency", {"gain": gain})
    lx, dx = ptwt.wavedec2(x.reshape(6, 16, 20).double(), "haar", level=1)
    ly, dy = ptwt.wavedec2(y.reshape(6, 16, 20).double(), "haar", level=1)
    torch.testing.assert_close(ly, lx, atol=1e-6, rtol=0)
    for a, b in zip(dx, dy, strict=True):
        torch.testing.assert_close(b, gain * a, atol=1e-6, rtol=0)


def test_cutblur_changes_exactly_its_rectangle():
    lr = resample.to_uint8(_grey_noise(3, 40, 48, 0.0, 1.0))
    for video in ("a", "b", "c", "d"):
        ((_, p),) = draw_vsrgan(2, video, 40, 48, ops="cutblur", prob=1.0, cutblur_max=0.5)
        assert round(0.25 * 40) <= p["height"] <= round(0.5 * 40) and round(0.25 * 48) <= p["width"] <= 24
        assert 2 <= p["factor"] <= 4
        out = vsrgan_stage(lr, seed=2, video=video, ops="cutblur", prob=1.0, cutblur_max=0.5)
        changed = np.argwhere((out != lr).any(axis=(0, 3)))
        top, left = changed.min(0)
        bottom, right = changed.max(0) + 1
        assert (top, left, bottom - top, right - left) == (p["top"], p["left"], p["height"], p["width"])
        assert (out != lr).any(axis=(0, 3)).mean() == pytest.approx(p["height"] * p["width"] / (40 * 48), rel=0.05)


def test_diffusion_variances_add():
    """``steps`` blurs in turn: the impulse response's variance is ``steps`` times one kernel's."""
    x = torch.zeros(1, 3, 41, 41)
    x[0, :, 20, 20] = 1
    k = gaussian_kernel(0.6, radius=2).double()
    var1 = float((k * torch.arange(-2.0, 3.0, dtype=torch.float64) ** 2).sum())
    for steps in (1, 3, 5):
        y = apply_vsrgan_op(x, "diffusion", {"steps": steps, "sigma": 0.6})[0, 0].double()
        r = torch.arange(-20.0, 21.0, dtype=torch.float64)
        var = float((y.sum(0) * r**2).sum() / y.sum())
        assert var == pytest.approx(steps * var1, rel=1e-4)


def test_content_aware_keeps_salient_pixels_and_blurs_smooth_ones():
    x = _grey_noise(2, 32, 32, 0.45, 0.55)
    x[:, :, :, 16:] = _grey_noise(2, 32, 16, 0.0, 1.0, seed=1)  # right half: strong detail
    y = apply_vsrgan_op(x, "content", {"sigma": 2.0})
    g = vsrgan_ops._gradient_magnitude(x)
    top = g >= torch.quantile(g.reshape(2, -1), 0.99, dim=1)[:, None, None]
    torch.testing.assert_close(y.permute(1, 0, 2, 3)[:, top], x.permute(1, 0, 2, 3)[:, top])  # sigma 0 there
    low = g < torch.quantile(g.reshape(2, -1), 0.2, dim=1)[:, None, None]
    blurred = vsrgan_ops._blur_planes(x, 2.0)
    # at the least salient fifth, the change is more than half the full sigma-2 blur's
    assert float((y - x).abs().permute(1, 0, 2, 3)[:, low].mean()) > 0.5 * float(
        (blurred - x).abs().permute(1, 0, 2, 3)[:, low].mean()
    )


def test_adaptive_blurs_flat_regions_more_than_detailed_ones():
    x = _grey_noise(1, 32, 32, 0.48, 0.52)
    x[:, :, :, 16:] = _grey_noise(1, 32, 16, 0.2, 0.8, seed=1)
    y = apply_vsrgan_op(x, "adaptive", {"sigmas": [1.0, 1.0]})
    flat, busy = (slice(2, 30), slice(2, 13)), (slice(2, 30), slice(19, 30))

    def kept(region: tuple[slice, slice]) -> float:  # fraction of the local variation left
        return float((y[..., region[0], region[1]] - y.mean()).std() / (x[..., region[0], region[1]] - x.mean()).std())

    assert kept(flat) < 0.75 * kept(busy)
    torch.testing.assert_close(
        apply_vsrgan_op(torch.full((1, 3, 8, 8), 0.3), "adaptive", {"sigmas": [1.0]}), torch.full((1, 3, 8, 8), 0.3)
    )


def test_jpeg_quality_lowers_psnr():
    x = resample.to_tensor(textured_clip(2, 48, 48, seed=3))
    ref = resample.to_uint8(x)
    psnr = [_luma_psnr(resample.to_uint8(apply_vsrgan_op(x, "jpeg", {"quality": q})), ref) for q in (20, 50, 90)]
    assert psnr[0] + 2 < psnr[1] and psnr[1] + 3 < psnr[2], psnr


def test_vsrgan_draws_are_seeded_per_video_and_independent_per_op(hr):
    a = draw_vsrgan(0, "clip", 16, 24, prob=1.0)
    assert [op for op, _ in a] == list(VSRGAN_OPS)
    assert draw_vsrgan(0, "clip", 16, 24, prob=1.0) == a
    assert draw_vsrgan(1, "clip", 16, 24, prob=1.0) != a and draw_vsrgan(0, "other", 16, 24, prob=1.0) != a
    sub = draw_vsrgan(0, "clip", 16, 24, ops="jpeg,blur", prob=1.0)
    assert sub == [a[0], a[-1]]  # switching operations off leaves the others' draws alone
    assert draw_vsrgan(0, "clip", 16, 24, prob=0.0) == []
    n = [len(draw_vsrgan(0, f"v{i}", 16, 24, prob=0.5)) for i in range(300)]
    assert np.mean(n) == pytest.approx(4.5, abs=4 * np.sqrt(9 * 0.25 / 300))
    lr = degrade_video(hr, "vsrgan", 4, seed=3, video="clip")
    np.testing.assert_array_equal(lr, degrade_video(hr, "vsrgan", 4, seed=3, video="clip"))
    assert not np.array_equal(lr, degrade_video(hr, "vsrgan", 4, seed=4, video="clip"))
    assert lr.shape == (4, 16, 24, 3)
    np.testing.assert_array_equal(degrade_video(hr, "vsrgan", 4, prob=0.0), degrade_video(hr, "bicubic", 4))


def test_degrade_resampled_finishes_premade_frames(hr):
    lr = degrade_video(hr, "bicubic", 4)
    np.testing.assert_array_equal(
        degrade_resampled(lr, "vsrgan", seed=1, video="x"), vsrgan_stage(lr, seed=1, video="x")
    )
    blurred = degrade_video(hr, "blur", 4)
    np.testing.assert_array_equal(degrade_resampled(blurred, "blur", sigma=1.5), blurred)  # sigma ignored
    with pytest.raises(ValueError, match="'hevc' on pre-made LR frames has no parameter crf"):
        degrade_resampled(lr, "hevc", crf=3)


# ---------------------------------------------------------------------------------------- bad parameters


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("h264", {"crf": 52}, r"crf = 52 is not allowed; expected an integer in \[0, 51\]"),
        ("h264", {"crf": 2.5}, r"crf = 2.5 is not allowed; expected an integer in \[0, 51\]"),
        ("hevc", {"qp": -1}, r"qp = -1 is not allowed; expected an integer in \[0, 51\]"),
        ("blur", {"sigma": 0.0}, r"sigma = 0.0 is not allowed; expected a number in \[0.1, 10.0\]"),
        ("fca2-mix", {"crf_min": 30, "crf_max": 20}, "crf_min = 30 is larger than crf_max = 20"),
        ("fca2-mix", {"compressed": 1.5}, r"compressed = 1.5 is not allowed; expected a number in \[0.0, 1.0\]"),
        ("fca2-mix", {"seed": -1}, "seed = -1 is not allowed; expected an integer >= 0"),
        ("vsrgan", {"ops": "blur,sharpen"}, r"unknown VSRGAN operation\(s\) 'sharpen'; allowed: blur, noise"),
        ("vsrgan", {"ops": "blur,blur"}, "name one operation twice"),
        ("vsrgan", {"prob": -0.1}, r"prob = -0.1 is not allowed; expected a number in \[0.0, 1.0\]"),
        ("vsrgan", {"sigma_max": 0.1}, r"sigma_max = 0.1 is not allowed; expected a number in \[0.2, 5.0\]"),
        ("vsrgan", {"noise_max": 60}, r"noise_max = 60 is not allowed; expected a number in \[0.0, 50.0\]"),
        ("vsrgan", {"brightness": 0.6}, r"brightness = 0.6 is not allowed"),
        ("vsrgan", {"contrast": 1.0}, r"contrast = 1.0 is not allowed; expected a number in \[0.0, 0.9\]"),
        ("vsrgan", {"freq_gain": 2}, r"freq_gain = 2 is not allowed"),
        ("vsrgan", {"cutblur_max": 0}, r"cutblur_max = 0 is not allowed; expected a number in \[0.1, 1.0\]"),
        ("vsrgan", {"diffusion_steps": 0}, r"diffusion_steps = 0 is not allowed; expected an integer in \[1, 20\]"),
        ("vsrgan", {"jpeg_min": 96}, r"jpeg_min = 96 is not allowed; expected an integer in \[1, 95\]"),
    ],
)
def test_bad_parameters_are_named(hr, name, params, message):
    with pytest.raises(ValueError, match=message):
        degrade_video(hr, name, 4, **params)


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "data.degradation=jpeg",
            "data.degradation = 'jpeg' is not allowed; expected one of 'bicubic', 'blur', 'h264'",
        ),
        ("data.sigma=0", r"data.sigma = 0 is not allowed; expected a number >= 0.1 and <= 10.0"),
        ("data.mix_crf_min=40", "data.mix_crf_min = 40 is larger than data.mix_crf_max = 35"),
        ("data.mix_compressed=2", r"data.mix_compressed = 2 is not allowed; expected a number >= 0.0 and <= 1.0"),
        ("data.vsrgan_ops=blur,sharpen", r"data.vsrgan_ops = 'blur,sharpen': unknown VSRGAN operation\(s\) 'sharpen'"),
        ("data.vsrgan_ops=''", "data.vsrgan_ops = '' names no operation"),
        ("data.vsrgan_prob=1.5", r"data.vsrgan_prob = 1.5 is not allowed"),
        ("data.vsrgan_noise=-1", "data.vsrgan_noise = -1 is not allowed"),
        (
            "data.vsrgan_contrast=0.95",
            "data.vsrgan_contrast = 0.95 is not allowed; expected a number >= 0.0 and <= 0.9",
        ),
        ("data.vsrgan_diffusion_steps=0", "data.vsrgan_diffusion_steps = 0 is not allowed"),
        (
            "data.vsrgan_jpeg_quality=100",
            "data.vsrgan_jpeg_quality = 100 is not allowed; expected an integer >= 1 and <= 95",
        ),
    ],
)
def test_bad_config_keys_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override, "data.degradation=vsrgan"] if "degradation" not in override else [override])


def test_config_keys_reach_the_degradations(tmp_path):
    cfg = load_config(None, ["data.degradation=blur-h264", "data.crf=35", "data.sigma=1.6"])
    assert degradation_params(cfg.data) == {"sigma": 1.6, "crf": 35}
    cfg = load_config(None, ["data.degradation=fca2-mix", "data.mix_crf_min=20"])
    assert degradation_params(cfg.data) == {"sigma": 1.5, "crf_min": 20, "crf_max": 35, "compressed": 0.5}
    assert degradation_params(load_config(None, ["data.degradation=hevc"]).data) == {"qp": 32}
    cfg = load_config(None, ["data.degradation=vsrgan"])
    assert degradation_params(cfg.data) == VSRGAN_DEFAULTS  # the config's defaults are the functions' defaults
    bad = tmp_path / "file"
    bad.write_text("x")
    with pytest.raises(ConfigError, match="data.lr_cache = .* is a file"):
        load_config(None, [f"data.lr_cache={bad}"])
    for name in DEGRADATIONS:  # every degradation's parameters are config keys (plus seed/video from load_pair)
        params = degradation_params(load_config(None, [f"data.degradation={name}"]).data)
        assert set(params) | {"seed", "video"} >= set(degrade.degradation_parameters(name))


def test_vsrgan_defaults_match_the_signatures():
    import inspect

    for fn in (degrade.vsrgan, degrade.vsrgan_stage, draw_vsrgan):
        sig = inspect.signature(fn).parameters
        assert {k: sig[k].default for k in VSRGAN_DEFAULTS} == VSRGAN_DEFAULTS, fn.__name__
