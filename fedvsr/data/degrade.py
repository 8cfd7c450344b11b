"""Degradations turning an HR video into its LR counterpart.

:data:`DEGRADATIONS` maps a name to ``fn(hr, scale, **params) -> lr`` with ``hr (T, H, W, 3)``
and ``lr (T, H//scale, W//scale, 3)``, both uint8 RGB:

* ``bicubic``: antialiased bicubic downsampling, rounded to uint8 (as saving LR PNG frames would).
* ``blur-h264``: Gaussian blur (``sigma``, default ``0.4 * scale``, i.e. 1.6 at x4: the "BD"
  degradation of BasicSR's ``duf_downsample``), keeping every ``scale``-th pixel, then the LR
  clip is encoded with H.264 at ``crf`` (default 25; FCA2 uses 15 / 25 / 35) and decoded back.
* ``hevc``: bicubic, then HEVC (libx265) at a fixed ``qp`` (default 32; FCVSR uses 22 / 27 / 32 / 37).

The codec degradations go through a real encode / decode with PyAV (yuv420p, in a temporary
folder); LR frames of odd or tiny sizes are edge-padded for the encoder and cropped back.
"""

from __future__ import annotations

import inspect
import math
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fedvsr.data.video import read_video, write_video


def _check_scale(scale: int, h: int, w: int) -> None:
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    if h % scale or w % scale:
        raise ValueError(f"frame size {h}x{w} (HxW) is not divisible by scale {scale}")


def bicubic_downsample(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """Antialiased bicubic downsampling.

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
    *lead, c, h, w = hr.shape
    _check_scale(scale, h, w)
    x = hr.reshape(-1, c, h, w)
    y = F.interpolate(x, size=(h // scale, w // scale), mode="bicubic", antialias=True, align_corners=False)
    return y.clamp_(0, 1).reshape(*lead, c, h // scale, w // scale)


def _to_tensor(frames: np.ndarray) -> torch.Tensor:
    """``(T, H, W, 3)`` uint8 -> ``(T, 3, H, W)`` float32 in [0, 1]."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected (T, H, W, 3) uint8 frames, got {frames.dtype} {tuple(frames.shape)}")
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255


def _to_uint8(frames: torch.Tensor) -> np.ndarray:
    """``(T, 3, h, w)`` float in [0, 1] -> ``(T, h, w, 3)`` uint8, rounded."""
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def _codec_round_trip(lr: np.ndarray, min_h: int = 2, min_w: int = 2, **encode: object) -> np.ndarray:
    """Encode ``lr (T, h, w, 3)`` with :func:`write_video` and decode it back.

    Frames are padded by edge replication to an even size of at least ``min_h x min_w`` (4:2:0
    needs even sizes) and the decoded clip is cropped back to ``(T, h, w, 3)``.
    """
    _, h, w, _ = lr.shape
    pad_h, pad_w = max(h + h % 2, min_h) - h, max(w + w % 2, min_w) - w
    padded = np.pad(lr, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge") if pad_h or pad_w else lr
    with tempfile.TemporaryDirectory(prefix="fedvsr-degrade-") as tmp:
        path = Path(tmp) / "lr.mp4"
        write_video(path, padded, **encode)
        out = read_video(path)
    if out.shape != padded.shape:
        raise RuntimeError(f"codec round trip changed the clip from {padded.shape} to {out.shape}")
    return np.ascontiguousarray(out[:, :h, :w])


def bicubic(hr: np.ndarray, scale: int) -> np.ndarray:
    """``hr (T, H, W, 3)`` uint8 -> ``(T, H/s, W/s, 3)`` uint8: bicubic downsampling, rounded."""
    return _to_uint8(bicubic_downsample(_to_tensor(hr), scale))


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
    _check_scale(scale, h, w)
    k = gaussian_kernel(sigma).to(hr.dtype)
    r = (k.numel() - 1) // 2
    if r >= min(h, w):
        raise ValueError(f"frame size {h}x{w} is too small for a blur of radius {r}")
    x = hr.reshape(n * c, 1, h, w)
    x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    x = F.conv2d(x, k.view(1, 1, -1, 1))
    return x[..., ::scale, ::scale].reshape(n, c, h // scale, w // scale).clamp_(0, 1)


def blur_h264(hr: np.ndarray, scale: int, sigma: float | None = None, crf: int = 25) -> np.ndarray:
    """Gaussian blur + every ``scale``-th pixel + H.264 (libx264, yuv420p) at ``crf``; uint8 in and out."""
    lr = _to_uint8(blur_downsample(_to_tensor(hr), scale, 0.4 * scale if sigma is None else sigma))
    return _h264(lr, crf)


def _h264(lr: np.ndarray, crf: int = 25) -> np.ndarray:
    return _codec_round_trip(lr, codec="libx264", crf=crf, pix_fmt="yuv420p")


def _hevc(lr: np.ndarray, qp: int = 32) -> np.ndarray:
    return _codec_round_trip(lr, min_h=16, min_w=64, codec="libx265", qp=qp, pix_fmt="yuv420p")


def hevc(hr: np.ndarray, scale: int, qp: int = 32) -> np.ndarray:
    """Bicubic downsampling + HEVC (libx265, yuv420p) at a fixed ``qp``; uint8 in and out.

    LR frames narrower than 64 or lower than 16 pixels are padded by edge replication for the
    encoder and cropped after decoding: x265 refuses frames under 16x16 and, as bundled with
    PyAV, crashes on widths 33-48.
    """
    return _hevc(bicubic(hr, scale), qp)


DEGRADATIONS: dict[str, Callable[..., np.ndarray]] = {
    "bicubic": bicubic,
    "blur-h264": blur_h264,
    "hevc": hevc,
}


def degrade_video(hr: np.ndarray, name: str, scale: int, **params: object) -> np.ndarray:
    """Apply the degradation ``name`` to ``hr (T, H, W, 3)`` uint8 -> ``(T, H/s, W/s, 3)`` uint8."""
    if name not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {name!r}; choose one of {sorted(DEGRADATIONS)}")
    fn = DEGRADATIONS[name]
    allowed = [p for p in inspect.signature(fn).parameters if p not in ("hr", "scale")]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"degradation {name!r} has no parameter {', '.join(unknown)}; it takes {allowed}")
    return DEGRADATIONS[name](hr, scale, **params)


#: the resampling a degradation starts with, named as the VSR datasets name their pre-made LR folders:
#: ``BI`` = bicubic (REDS ``train_sharp_bicubic/X4``, Vid4 ``BIx4``, Vimeo-90K ``vimeo_septuplet_matlabLRx4``),
#: ``BD`` = Gaussian blur sigma 1.6 + every 4th pixel (Vid4 / Vimeo-90K ``BDx4``, BasicSR's ``duf_downsample``)
RESAMPLING: dict[str, str] = {"bicubic": "BI", "blur-h264": "BD", "hevc": "BI"}

# what each degradation does after its resampling (none for bicubic)
_AFTER_RESAMPLING: dict[str, Callable[..., np.ndarray] | None] = {"bicubic": None, "blur-h264": _h264, "hevc": _hevc}


def degrade_resampled(lr: np.ndarray, name: str, **params: object) -> np.ndarray:
    """Finish the degradation ``name`` on LR frames that are already resampled (a dataset's pre-made
    :data:`RESAMPLING` frames): nothing for ``bicubic``, H.264 at ``crf`` for ``blur-h264``, HEVC at ``qp``
    for ``hevc``. ``lr (T, h, w, 3)`` uint8 in and out."""
    if name not in _AFTER_RESAMPLING:
        raise ValueError(f"unknown degradation {name!r}; choose one of {sorted(DEGRADATIONS)}")
    fn = _AFTER_RESAMPLING[name]
    allowed = [] if fn is None else [p for p in inspect.signature(fn).parameters if p != "lr"]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"degradation {name!r} on pre-made LR frames has no parameter {', '.join(unknown)}; "
                         f"it takes {allowed}")
    return lr if fn is None else fn(lr, **params)
