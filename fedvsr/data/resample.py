"""Resampling on float tensors, the ground the degradations (:mod:`fedvsr.data.degrade`) stand on: MATLAB's
antialiased bicubic downsampling, Gaussian blur and decimation, and uint8 frames to float tensors and back."""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F


def check_scale(scale: int, h: int, w: int) -> None:
    """ValueError unless ``scale`` is a positive integer that divides the frame size ``h x w``."""
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    if h % scale or w % scale:
        raise ValueError(f"frame size {h}x{w} (HxW) is not divisible by scale {scale}")


def check_range(name: str, value: float, low: float, high: float, integer: bool = False) -> None:
    """ValueError naming ``name`` unless ``value`` is a number (an integer with ``integer``) in ``[low, high]``."""
    bad = (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (integer and not float(value).is_integer())
        or not low <= value <= high
    )
    if bad:
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name} = {value!r} is not allowed; expected {kind} in [{low}, {high}]")


@functools.lru_cache(maxsize=32)
def _imresize_weights(n: int, scale: int) -> torch.Tensor:
    """``(n // scale, n)`` float64 matrix of MATLAB's ``imresize(., 1/scale, 'bicubic')`` along one axis.

    As MATLAB's ``contributions``: the cubic kernel (a = -0.5) widened by ``scale`` (antialiasing, support
    ``4 * scale`` input pixels), output pixel ``i`` (1-based) centred at input ``u = i * scale + (1 - scale) / 2``,
    weights normalised to sum 1, input indices beyond the borders mirrored (the edge pixel repeated).
    """

    def cubic(t: np.ndarray) -> np.ndarray:
        a = np.abs(t)
        return np.where(
            a <= 1, 1.5 * a**3 - 2.5 * a**2 + 1, np.where(a <= 2, -0.5 * a**3 + 2.5 * a**2 - 4 * a + 2, 0.0)
        )

    out = n // scale
    u = np.arange(1, out + 1) * scale + 0.5 * (1 - scale)
    left = np.floor(u - 2 * scale)
    idx = left[:, None] + np.arange(4 * scale + 2)[None]
    wts = cubic((u[:, None] - idx) / scale) / scale
    wts /= wts.sum(1, keepdims=True)
    idx = idx.astype(np.int64) - 1
    idx = np.where(idx < 0, -idx - 1, np.where(idx >= n, 2 * n - idx - 1, idx))
    mat = np.zeros((out, n))
    np.add.at(mat, (np.repeat(np.arange(out), idx.shape[1]), idx.ravel()), wts.ravel())
    return torch.from_numpy(mat)


def bicubic_downsample(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """Antialiased bicubic downsampling, as MATLAB's ``imresize(hr, 1/scale, 'bicubic')`` (the LR frames of
    Vid4 ``BIx4``, REDS ``train_sharp_bicubic`` and Vimeo-90K ``matlabLRx4`` are made with it; BasicSR's
    ``imresize`` is the same). Inside the frame it equals PyTorch's ``interpolate(..., 'bicubic',
    antialias=True)``; within ``2 * scale`` pixels of a border MATLAB mirrors the frame where PyTorch
    renormalises the truncated kernel.

    Parameters
    ----------
    hr
        ``(..., c, H, W)`` float in [0, 1], H and W divisible by ``scale``.

    Returns
    -------
    torch.Tensor
        ``(..., c, H//scale, W//scale)``, clamped to [0, 1].
    """
    if not hr.is_floating_point():
        raise ValueError(f"bicubic_downsample expects a float tensor in [0, 1], got {hr.dtype}")
    if hr.dim() < 3:
        raise ValueError(f"bicubic_downsample expects (..., c, H, W), got shape {tuple(hr.shape)}")
    *_, h, w = hr.shape
    check_scale(scale, h, w)
    rows = _imresize_weights(h, scale).to(device=hr.device, dtype=hr.dtype)
    cols = _imresize_weights(w, scale).to(device=hr.device, dtype=hr.dtype)
    return (rows @ hr @ cols.T).clamp_(0, 1)


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """``(T, H, W, 3)`` uint8 -> ``(T, 3, H, W)`` float32 in [0, 1]."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected (T, H, W, 3) uint8 frames, got {frames.dtype} {tuple(frames.shape)}")
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """``(T, 3, h, w)`` float in [0, 1] -> ``(T, h, w, 3)`` uint8, rounded."""
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def gaussian_kernel(sigma: float, radius: int | None = None) -> torch.Tensor:
    """Normalised 1-D Gaussian ``(2 r + 1,)`` float32; ``r = max(6, ceil(3 sigma))`` by default (13 taps)."""
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    r = max(6, math.ceil(3 * sigma)) if radius is None else radius
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return (k / k.sum()).float()


def blur_downsample(hr: torch.Tensor, scale: int, sigma: float) -> torch.Tensor:
    """Gaussian blur (reflect padding) and keep every ``scale``-th pixel from (0, 0).

    ``hr (n, c, H, W)`` float -> ``(n, c, H/s, W/s)`` clamped to [0, 1].
    """
    n, c, h, w = hr.shape
    check_scale(scale, h, w)
    k = gaussian_kernel(sigma).to(hr.dtype)
    r = (k.numel() - 1) // 2
    if r >= min(h, w):
        raise ValueError(f"frame size {h}x{w} is too small for a blur of radius {r}")
    x = hr.reshape(n * c, 1, h, w)
    x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    x = F.conv2d(x, k.view(1, 1, -1, 1))
    return x[..., ::scale, ::scale].reshape(n, c, h // scale, w // scale).clamp_(0, 1)
