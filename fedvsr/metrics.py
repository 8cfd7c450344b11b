"""PSNR and SSIM on the Y channel (ITU-R BT.601), as VSR papers report them, and on RGB.

Follows BasicSR's ``calculate_psnr`` / ``calculate_ssim`` with ``test_y_channel=True``: the
frames are quantised to 8 bits (as saving a PNG would), converted to Y in [16, 235], and
``crop`` pixels are dropped on each border. On RGB (``test_y_channel=False``) PSNR takes the mean
squared error over all three channels and SSIM is the mean of the three channels' SSIM. SSIM matches
``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=255)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# SSIM constants (Wang et al. 2004), as scikit-image sets them
_SSIM_SIGMA = 1.5
_SSIM_TRUNCATE = 3.5
_K1, _K2 = 0.01, 0.03
_DATA_RANGE = 255.0


def quantize(img: torch.Tensor) -> torch.Tensor:
    """Float in [0, 1] -> float64 in [0, 255] rounded to integers (clamped first), any shape."""
    return (img.detach().to(torch.float64).clamp(0, 1) * 255).round()


def rgb_to_y(img: torch.Tensor) -> torch.Tensor:
    """``(..., 3, H, W)`` RGB in [0, 255] -> ``(..., H, W)`` float64 luma in [16, 235].

    ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` (BasicSR's ``rgb2ycbcr(y_only=True)``).
    """
    if img.dim() < 3 or img.shape[-3] != 3:
        raise ValueError(f"rgb_to_y expects (..., 3, H, W), got shape {tuple(img.shape)}")
    x = img.to(torch.float64)
    r, g, b = x.unbind(-3)
    return 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0


def _y_pair(sr: torch.Tensor, hr: torch.Tensor, crop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantised, cropped Y planes ``(n, H - 2 crop, W - 2 crop)`` of two RGB batches."""
    if sr.shape != hr.shape:
        raise ValueError(f"sr and hr shapes differ: {tuple(sr.shape)} vs {tuple(hr.shape)}")
    if sr.dim() not in (3, 4) or sr.shape[-3] != 3:
        raise ValueError(f"expected (3, H, W) or (n, 3, H, W) images, got {tuple(sr.shape)}")
    if crop < 0:
        raise ValueError(f"crop must be non-negative, got {crop}")
    h, w = sr.shape[-2:]
    if h <= 2 * crop or w <= 2 * crop:
        raise ValueError(f"crop {crop} removes the whole {h}x{w} image")
    y_sr, y_hr = rgb_to_y(quantize(sr)), rgb_to_y(quantize(hr))
    if sr.dim() == 3:
        y_sr, y_hr = y_sr[None], y_hr[None]
    if crop:
        y_sr, y_hr = y_sr[:, crop:-crop, crop:-crop], y_hr[:, crop:-crop, crop:-crop]
    return y_sr, y_hr


def psnr_y(sr: torch.Tensor, hr: torch.Tensor, crop: int) -> float:
    """PSNR in dB on Y, data range 255; the mean of per-image PSNRs over a batch.

    ``sr, hr``: ``(3, H, W)`` or ``(n, 3, H, W)`` float in [0, 1]. Identical images give ``inf``.
    """
    y_sr, y_hr = _y_pair(sr, hr, crop)
    mse = ((y_sr - y_hr) ** 2).mean(dim=(-2, -1))
    values = [math.inf if m == 0 else 10 * math.log10(_DATA_RANGE**2 / m) for m in mse.tolist()]
    return sum(values) / len(values)


def _gaussian_window() -> torch.Tensor:
    """The 1-D Gaussian of scikit-image's SSIM: sigma 1.5 truncated at 3.5 sigma (11 taps), float64."""
    radius = int(_SSIM_TRUNCATE * _SSIM_SIGMA + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / _SSIM_SIGMA) ** 2)
    return k / k.sum()


def _filter_valid(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' filtering of ``x (n, 1, H, W)`` by the 1-D kernel ``k``."""
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    return F.conv2d(x, k.view(1, 1, -1, 1))


def ssim_per_image(y_sr: torch.Tensor, y_hr: torch.Tensor) -> torch.Tensor:
    """SSIM of each pair of Y planes ``(n, H, W)`` in [0, 255] -> ``(n,)`` float64.

    Gaussian-weighted statistics with population covariance; the SSIM map is averaged over the
    positions where the whole 11x11 window fits, which is where scikit-image averages it.
    """
    k = _gaussian_window().to(y_sr.device)
    win = k.numel()
    if y_sr.shape[-1] < win or y_sr.shape[-2] < win:
        raise ValueError(f"SSIM needs images of at least {win}x{win} after cropping, got {tuple(y_sr.shape[-2:])}")
    x, y = y_sr[:, None].to(torch.float64), y_hr[:, None].to(torch.float64)
    stats = _filter_valid(torch.cat([x, y, x * x, y * y, x * y], dim=1).view(-1, 1, *x.shape[-2:]), k)
    ux, uy, uxx, uyy, uxy = stats.view(x.shape[0], 5, *stats.shape[-2:]).unbind(1)
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
    c1, c2 = (_K1 * _DATA_RANGE) ** 2, (_K2 * _DATA_RANGE) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=(-2, -1))


def ssim_y(sr: torch.Tensor, hr: torch.Tensor, crop: int) -> float:
    """SSIM on Y (data range 255); the mean of per-image SSIMs over a batch.

    ``sr, hr``: ``(3, H, W)`` or ``(n, 3, H, W)`` float in [0, 1].
    """
    y_sr, y_hr = _y_pair(sr, hr, crop)
    return float(ssim_per_image(y_sr, y_hr).mean())


def bicubic_upsample(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """The bicubic baseline: ``(..., 3, h, w)`` -> ``(..., 3, s*h, s*w)``, clamped to [0, 1]."""
    if lr.dim() < 3:
        raise ValueError(f"bicubic_upsample expects (..., c, h, w), got shape {tuple(lr.shape)}")
    *lead, c, h, w = lr.shape
    x = lr.reshape(-1, c, h, w)
    y = F.interpolate(x, size=(h * scale, w * scale), mode="bicubic", align_corners=False)
    return y.clamp_(0, 1).reshape(*lead, c, h * scale, w * scale)


def _rgb_pair(sr: torch.Tensor, hr: torch.Tensor, crop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantised, cropped RGB planes ``(3 n, H - 2 crop, W - 2 crop)`` of two RGB batches (one plane per
    channel and image, image-major)."""
    y_sr, _ = _y_pair(sr, hr, crop)  # checks shapes and crop
    h, w = y_sr.shape[-2:]
    q_sr, q_hr = quantize(sr).reshape(-1, *sr.shape[-2:]), quantize(hr).reshape(-1, *hr.shape[-2:])
    if crop:
        q_sr, q_hr = q_sr[:, crop:-crop, crop:-crop], q_hr[:, crop:-crop, crop:-crop]
    return q_sr.reshape(-1, h, w), q_hr.reshape(-1, h, w)


def psnr_rgb(sr: torch.Tensor, hr: torch.Tensor, crop: int) -> float:
    """PSNR in dB on RGB (the squared error averaged over the three channels), data range 255; the mean of
    per-image PSNRs over a batch. ``sr, hr``: ``(3, H, W)`` or ``(n, 3, H, W)`` float in [0, 1]."""
    q_sr, q_hr = _rgb_pair(sr, hr, crop)
    mse = ((q_sr - q_hr) ** 2).reshape(-1, 3, *q_sr.shape[-2:]).mean(dim=(-3, -2, -1))
    values = [math.inf if m == 0 else 10 * math.log10(_DATA_RANGE**2 / m) for m in mse.tolist()]
    return sum(values) / len(values)


def ssim_rgb(sr: torch.Tensor, hr: torch.Tensor, crop: int) -> float:
    """SSIM on RGB: per image the mean of its three channels' SSIM (BasicSR), then the mean over a batch."""
    q_sr, q_hr = _rgb_pair(sr, hr, crop)
    return float(ssim_per_image(q_sr, q_hr).mean())


CHANNELS = ("y", "rgb", "y+rgb")


def pair_scores(
    pairs: list[tuple[torch.Tensor, torch.Tensor]], crop: int, channels: str = "y"
) -> list[dict[str, float]]:
    """:func:`score`'s values for each ``(prediction, target)`` pair: the pair's mean over its frames."""
    if channels not in CHANNELS:
        raise ValueError(f"unknown channels {channels!r}; allowed: {', '.join(CHANNELS)}")
    out = []
    for p, t in pairs:
        p, t = p.reshape(-1, *p.shape[-3:]), t.reshape(-1, *t.shape[-3:])
        row: dict[str, float] = {}
        if channels in ("y", "y+rgb"):
            row["psnr"], row["ssim"] = psnr_y(p, t, crop), ssim_y(p, t, crop)
        if channels in ("rgb", "y+rgb"):
            suffix = "" if channels == "rgb" else "_rgb"
            row["psnr" + suffix], row["ssim" + suffix] = psnr_rgb(p, t, crop), ssim_rgb(p, t, crop)
        out.append(row)
    return out


def mean_scores(rows: list[dict[str, float]]) -> dict[str, float]:
    """The mean of per-pair scores, key by key, in the order given (as :func:`score` averages)."""
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} if rows else {}


def score(pairs: list[tuple[torch.Tensor, torch.Tensor]], crop: int, channels: str = "y") -> dict[str, float]:
    """Mean PSNR / SSIM over ``(prediction, target)`` pairs of any leading shape ``(..., 3, H, W)``.

    ``channels``: ``y`` gives ``psnr``, ``ssim`` on Y; ``rgb`` gives them on RGB; ``y+rgb`` gives ``psnr``,
    ``ssim`` on Y and ``psnr_rgb``, ``ssim_rgb``. Each value is the mean over the pairs of the pair's mean
    over its frames."""
    return mean_scores(pair_scores(pairs, crop, channels))
