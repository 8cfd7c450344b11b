"""The operations of the VSRGAN degradation suite (VSRGAN paper, section 3.1.2), each with its parameters given
explicitly: every operation takes and returns ``x (T, 3, h, w)`` float32 in [0, 1].

Which operations a video gets, and with which parameters, is drawn per video by
:func:`fedvsr.data.degrade.draw_vsrgan`; the ``vsrgan`` degradation (:func:`fedvsr.data.degrade.vsrgan`) applies
them in turn with :func:`apply_vsrgan_op`. :mod:`fedvsr.data.degrade` re-exports the public names here.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from fedvsr.data.resample import gaussian_kernel, to_tensor, to_uint8

#: the VSRGAN suite (section 3.1.2), in the paper's order, which is the order they are applied in
VSRGAN_OPS: tuple[str, ...] = (
    "blur",
    "noise",
    "contrast",
    "frequency",
    "cutblur",
    "diffusion",
    "content",
    "adaptive",
    "jpeg",
)


def _blur_planes(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``x (..., h, w)``, radius ceil(3 sigma), replicate padding (any size)."""
    if sigma <= 0:
        return x
    k = gaussian_kernel(sigma, radius=max(1, math.ceil(3 * sigma))).to(x.dtype)
    r = (k.numel() - 1) // 2
    *lead, h, w = x.shape
    y = F.pad(x.reshape(-1, 1, h, w), (r, r, r, r), mode="replicate")
    y = F.conv2d(F.conv2d(y, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))
    return y.reshape(*lead, h, w)


def _luma(x: torch.Tensor) -> torch.Tensor:
    """BT.601 luma ``(T, h, w)`` of ``x (T, 3, h, w)``."""
    return 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]


def _gradient_magnitude(x: torch.Tensor) -> torch.Tensor:
    """First-order derivatives (central differences) of the luma: ``|grad| (T, h, w)``."""
    y = F.pad(_luma(x)[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    gx = (y[:, 1:-1, 2:] - y[:, 1:-1, :-2]) / 2
    gy = (y[:, 2:, 1:-1] - y[:, :-2, 1:-1]) / 2
    return torch.sqrt(gx**2 + gy**2)


def _varying_blur(x: torch.Tensor, sigma_map: torch.Tensor, sigma_max: float, levels: int = 5) -> torch.Tensor:
    """Gaussian blur with a per-pixel ``sigma_map (T, h, w)`` in [0, sigma_max]: blurs at ``levels`` evenly
    spaced sigmas from 0 to ``sigma_max``, linearly interpolated per pixel between the two nearest ones."""
    sigmas = np.linspace(0, sigma_max, levels)
    stack = torch.stack([_blur_planes(x, float(s)) for s in sigmas])  # (L, T, 3, h, w)
    pos = (sigma_map.clamp(0, sigma_max) / sigma_max * (levels - 1))[:, None]  # (T, 1, h, w)
    lo = pos.floor().long().clamp(max=levels - 2)
    frac = pos - lo
    out = torch.zeros_like(x)
    for i in range(levels - 1):
        at = (lo == i).to(x.dtype)
        out += at * ((1 - frac) * stack[i] + frac * stack[i + 1])
    return out


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian Blur: ``x`` convolved with a Gaussian kernel of standard deviation ``sigma``."""
    return _blur_planes(x, sigma)


def gaussian_noise(x: torch.Tensor, std: float, noise_seed: int) -> torch.Tensor:
    """Gaussian Noise: ``x + N(0, std^2)`` per pixel and channel (``std`` in [0, 1] units), clamped."""
    noise = np.random.default_rng(noise_seed).standard_normal(tuple(x.shape), dtype=np.float32)
    return (x + std * torch.from_numpy(noise)).clamp(0, 1)


def contrast_brightness(x: torch.Tensor, brightness: float, contrast: float) -> torch.Tensor:
    """Contrast and Brightness Adjustment, in turn: ``y = x + brightness``, then ``(y - m) * contrast + m``
    with ``m`` the frame's mean; so a frame's mean moves by ``brightness`` and its std scales by ``contrast``
    (before clamping to [0, 1])."""
    y = x + brightness
    m = y.mean(dim=(1, 2, 3), keepdim=True)
    return ((y - m) * contrast + m).clamp(0, 1)


def frequency_guided(x: torch.Tensor, gain: float) -> torch.Tensor:
    """Frequency-Guided Augmentation: one-level Haar DWT (ptwt) of each plane, the LH, HL and HH sub-bands
    multiplied by ``gain`` (< 1 removes, > 1 sharpens high-frequency detail), inverse DWT."""
    import ptwt

    t, c, h, w = x.shape
    planes = x.reshape(t * c, h, w).double()
    low, detail = ptwt.wavedec2(planes, "haar", level=1)
    y = ptwt.waverec2((low, type(detail)(*(d * gain for d in detail))), "haar")
    return y[..., :h, :w].reshape(t, c, h, w).to(x.dtype).clamp(0, 1)


def cutblur(x: torch.Tensor, top: int, left: int, height: int, width: int, factor: int = 2) -> torch.Tensor:
    """CutBlur Mask: inside the rectangle ``[top, top + height) x [left, left + width)`` the frames are
    average-pooled by ``factor`` (ceil mode) and bilinearly upsampled back; outside it they are unchanged."""
    out = x.clone()
    region = x[:, :, top : top + height, left : left + width]
    pooled = F.avg_pool2d(region, factor, ceil_mode=True)
    out[:, :, top : top + height, left : left + width] = F.interpolate(
        pooled, size=(height, width), mode="bilinear", align_corners=False
    )
    return out


def diffusion(x: torch.Tensor, steps: int, sigma: float) -> torch.Tensor:
    """Diffusion-Based Degradation: ``steps`` Gaussian blurs of standard deviation ``sigma`` in turn (explicit
    steps of the heat equation: the variances add, about one blur of ``sigma * sqrt(steps)``)."""
    for _ in range(steps):
        x = _blur_planes(x, sigma)
    return x


def content_aware(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Content-Aware Degradation: salient pixels (large first-order derivatives) are kept, smooth ones are
    blurred: the per-pixel sigma is ``sigma * (1 - s)`` with ``s`` the gradient magnitude over its frame's
    99th percentile, clipped to [0, 1]."""
    g = _gradient_magnitude(x)
    ref = torch.quantile(g.reshape(g.shape[0], -1), 0.99, dim=1).clamp_min(1e-6)[:, None, None]
    s = (g / ref).clamp(0, 1)
    return _varying_blur(x, sigma * (1 - s), sigma)


def adaptive(x: torch.Tensor, sigmas: list[float]) -> torch.Tensor:
    """Adaptive Degradation: one blur per entry of ``sigmas`` (iterations of varying intensity), each with a
    per-pixel sigma ``sigma_i * m / (g + m)`` recomputed from the current frame: ``g`` the local gradient
    magnitude (3x3 mean), ``m`` its frame mean, so flat regions get about ``sigma_i`` and edges less."""
    for sigma in sigmas:
        g = F.avg_pool2d(_gradient_magnitude(x)[:, None], 3, stride=1, padding=1, count_include_pad=False)[:, 0]
        m = g.mean(dim=(1, 2), keepdim=True).clamp_min(1e-6)
        x = _varying_blur(x, sigma * m / (g + m), sigma)
    return x


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG Degradation: each frame rounded to 8 bits, JPEG-encoded at ``quality`` (libjpeg's 1-100 scale,
    4:2:0, through Pillow) and decoded back."""
    from PIL import Image

    frames = to_uint8(x)
    out = np.empty_like(frames)
    for i, frame in enumerate(frames):
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG", quality=int(quality))
        out[i] = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return to_tensor(out)


_VSRGAN_FNS: dict[str, Callable[..., torch.Tensor]] = {
    "blur": gaussian_blur,
    "noise": gaussian_noise,
    "contrast": contrast_brightness,
    "frequency": frequency_guided,
    "cutblur": cutblur,
    "diffusion": diffusion,
    "content": content_aware,
    "adaptive": adaptive,
    "jpeg": jpeg,
}


def parse_ops(ops: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``"blur,noise"`` (or a list) -> ``("blur", "noise")``; unknown or repeated names raise ValueError."""
    names = [o.strip() for o in ops.split(",")] if isinstance(ops, str) else [str(o).strip() for o in ops]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in VSRGAN_OPS]
    if unknown:
        raise ValueError(
            f"unknown VSRGAN operation(s) {', '.join(map(repr, unknown))}; allowed: "
            f"{', '.join(VSRGAN_OPS)} (comma-separated)"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"VSRGAN operations {ops!r} name one operation twice")
    return tuple(n for n in VSRGAN_OPS if n in names)


def apply_vsrgan_op(x: torch.Tensor, op: str, params: dict) -> torch.Tensor:
    """Apply one VSRGAN operation with explicit parameters to ``x (T, 3, h, w)`` float in [0, 1]."""
    if op not in _VSRGAN_FNS:
        raise ValueError(f"unknown VSRGAN operation {op!r}; allowed: {', '.join(VSRGAN_OPS)}")
    return _VSRGAN_FNS[op](x, **params)
