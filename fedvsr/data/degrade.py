"""Degradations turning an HR video into its LR counterpart: the papers' degradations.

:data:`DEGRADATIONS` maps a name to ``fn(hr, scale, **params) -> lr`` with ``hr (T, H, W, 3)``
and ``lr (T, H//scale, W//scale, 3)``, both uint8 RGB:

* ``bicubic``: antialiased bicubic downsampling (MATLAB ``imresize``-like: the kernel is widened by the
  scale), rounded to uint8 as saving LR PNG frames would.
* ``blur``: Gaussian blur (``sigma``, default 1.5: FCA2 section IV-A) and every ``scale``-th pixel.
* ``h264`` (alias ``blur-h264``): ``blur``, then the LR clip is encoded with H.264 (libx264, yuv420p, the
  encoder's default settings as FFmpeg's) at ``crf`` and decoded back (FCA2: CRF 15 / 25 / 35).
* ``hevc``: bicubic, then HEVC (libx265, yuv420p) at a fixed ``qp`` with no B-frames and so no frame
  reordering, the nearest libx265 gets to HM's low-delay B configuration (FCVSR section IV-B: QP 22 / 27 /
  32 / 37).
* ``fca2-mix``: FCA2's training mix: per video, with probability ``compressed`` (0.5) ``h264`` at a CRF drawn
  uniformly from the integers ``crf_min .. crf_max``, else ``blur`` alone (:func:`fca2_mix_crf`).
* ``vsrgan``: bicubic, then the degradation suite of the VSRGAN paper (section 3.1.2) on the LR frames, each
  operation of ``ops`` applied with probability ``prob`` and random parameters (:func:`draw_vsrgan`; the
  operations themselves are :mod:`fedvsr.data.vsrgan_ops`).

The random degradations draw from ``np.random.default_rng([seed, video_key(video)])``: the same
experiment seed and video name give the same LR clip in every worker and on every node.
The codec degradations go through a real encode / decode with PyAV (in a temporary folder); LR frames
of odd or tiny sizes are edge-padded for the encoder and cropped back. The resampling underneath (bicubic,
Gaussian blur) is :mod:`fedvsr.data.resample`.
"""

from __future__ import annotations

import hashlib
import inspect
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fedvsr.data.resample import bicubic_downsample, blur_downsample, check_range, to_tensor, to_uint8
from fedvsr.data.video import read_video, write_video
from fedvsr.data.vsrgan_ops import (  # noqa: F401  (re-exported: the suite's operations, by their paper names)
    VSRGAN_OPS,
    adaptive,
    apply_vsrgan_op,
    content_aware,
    contrast_brightness,
    cutblur,
    diffusion,
    frequency_guided,
    gaussian_blur,
    gaussian_noise,
    jpeg,
    parse_ops,
)

#: FCA2 IV-A: "Gaussian smoothing (standard deviation = 1.5)"
FCA2_SIGMA = 1.5

#: accepted old names
ALIASES: dict[str, str] = {"blur-h264": "h264"}


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


# ------------------------------------------------------------------------------------ the papers' degradations


def bicubic(hr: np.ndarray, scale: int) -> np.ndarray:
    """``hr (T, H, W, 3)`` uint8 -> ``(T, H/s, W/s, 3)`` uint8: bicubic downsampling, rounded."""
    return to_uint8(bicubic_downsample(to_tensor(hr), scale))


def blur(hr: np.ndarray, scale: int, sigma: float = FCA2_SIGMA) -> np.ndarray:
    """Gaussian blur of standard deviation ``sigma`` + every ``scale``-th pixel, rounded to uint8."""
    check_range("sigma", sigma, 0.1, 10.0)
    return to_uint8(blur_downsample(to_tensor(hr), scale, sigma))


def h264_stage(lr: np.ndarray, crf: int = 25) -> np.ndarray:
    """H.264 (libx264, yuv420p, the encoder's defaults) at ``crf``, decoded back; uint8 in and out."""
    check_range("crf", crf, 0, 51, integer=True)
    return _codec_round_trip(lr, codec="libx264", crf=int(crf), pix_fmt="yuv420p")


def h264(hr: np.ndarray, scale: int, sigma: float = FCA2_SIGMA, crf: int = 25) -> np.ndarray:
    """FCA2's degradation: Gaussian blur (``sigma``) + every ``scale``-th pixel + H.264 at ``crf``."""
    check_range("crf", crf, 0, 51, integer=True)
    return h264_stage(blur(hr, scale, sigma), crf)


blur_h264 = h264  # the old name


def hevc_stage(lr: np.ndarray, qp: int = 32) -> np.ndarray:
    """HEVC (libx265, yuv420p) at a fixed ``qp``, P-frames only (no B-frames, no reordering), decoded back.

    LR frames narrower than 64 or lower than 16 pixels are padded by edge replication for the
    encoder and cropped after decoding: x265 refuses frames under 16x16 and, as bundled with
    PyAV, crashes on widths 33-48.
    """
    check_range("qp", qp, 0, 51, integer=True)
    return _codec_round_trip(lr, min_h=16, min_w=64, codec="libx265", qp=int(qp), pix_fmt="yuv420p", bframes=0)


def hevc(hr: np.ndarray, scale: int, qp: int = 32) -> np.ndarray:
    """FCVSR's degradation: bicubic downsampling + low-delay HEVC at a fixed ``qp``; uint8 in and out."""
    check_range("qp", qp, 0, 51, integer=True)
    return hevc_stage(bicubic(hr, scale), qp)


def video_key(video: str) -> int:
    """A stable 64-bit integer naming a video (the first 8 bytes of SHA-256 of its name), for seeding."""
    return int.from_bytes(hashlib.sha256(video.encode()).digest()[:8], "little")


def video_rng(seed: int, video: str, *stream: int) -> np.random.Generator:
    """The generator of a video's random degradation: ``default_rng([seed, video_key(video), *stream])``."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed = {seed!r} is not allowed; expected an integer >= 0")
    return np.random.default_rng([int(seed), video_key(video), *stream])


def fca2_mix_crf(seed: int, video: str, crf_min: int = 15, crf_max: int = 35, compressed: float = 0.5) -> int | None:
    """FCA2's training mix for one video: the CRF it is compressed at, or None for an uncompressed video.

    "A dataset composed of 50% uncompressed and 50% compressed videos, where the compressed portions are
    uniformly sampled from diverse compression rates" (FCA2 IV-A): with probability ``compressed`` a CRF drawn
    uniformly from the integers ``crf_min .. crf_max``.
    """
    check_range("crf_min", crf_min, 0, 51, integer=True)
    check_range("crf_max", crf_max, 0, 51, integer=True)
    check_range("compressed", compressed, 0.0, 1.0)
    if crf_min > crf_max:
        raise ValueError(f"crf_min = {crf_min} is larger than crf_max = {crf_max}; allowed: crf_min <= crf_max")
    rng = video_rng(seed, video, 2)
    u, crf = rng.random(), int(rng.integers(crf_min, crf_max + 1))
    return crf if u < compressed else None


def fca2_mix_stage(
    lr: np.ndarray, seed: int = 0, video: str = "", crf_min: int = 15, crf_max: int = 35, compressed: float = 0.5
) -> np.ndarray:
    """The codec stage of ``fca2-mix`` on blurred and subsampled LR frames (:func:`fca2_mix_crf`)."""
    crf = fca2_mix_crf(seed, video, crf_min, crf_max, compressed)
    return lr if crf is None else h264_stage(lr, crf)


def fca2_mix(
    hr: np.ndarray,
    scale: int,
    sigma: float = FCA2_SIGMA,
    seed: int = 0,
    video: str = "",
    crf_min: int = 15,
    crf_max: int = 35,
    compressed: float = 0.5,
) -> np.ndarray:
    """FCA2's training mix: ``blur`` then, for a ``compressed`` fraction of the videos, H.264 at a random CRF."""
    fca2_mix_crf(seed, video, crf_min, crf_max, compressed)  # validates before the blur
    return fca2_mix_stage(blur(hr, scale, sigma), seed, video, crf_min, crf_max, compressed)


# -------------------------------------------------------------------------------------------- the VSRGAN suite
# Its operations are fedvsr.data.vsrgan_ops; here, which of them a video gets and with which parameters.

#: the VSRGAN paper gives no number for any range; these defaults are ours (see the data.vsrgan_* keys)
VSRGAN_DEFAULTS: dict[str, object] = {
    "ops": ",".join(VSRGAN_OPS),
    "prob": 0.5,
    "sigma_max": 1.5,
    "noise_max": 10.0,
    "brightness": 0.1,
    "contrast": 0.2,
    "freq_gain": 0.5,
    "cutblur_max": 0.5,
    "diffusion_steps": 4,
    "jpeg_min": 30,
}


def _check_vsrgan(
    prob: float,
    sigma_max: float,
    noise_max: float,
    brightness: float,
    contrast: float,
    freq_gain: float,
    cutblur_max: float,
    diffusion_steps: int,
    jpeg_min: int,
) -> None:
    check_range("prob", prob, 0.0, 1.0)
    check_range("sigma_max", sigma_max, 0.2, 5.0)
    check_range("noise_max", noise_max, 0.0, 50.0)
    check_range("brightness", brightness, 0.0, 0.5)
    check_range("contrast", contrast, 0.0, 0.9)
    check_range("freq_gain", freq_gain, 0.0, 1.0)
    check_range("cutblur_max", cutblur_max, 0.1, 1.0)
    check_range("diffusion_steps", diffusion_steps, 1, 20, integer=True)
    check_range("jpeg_min", jpeg_min, 1, 95, integer=True)


def draw_vsrgan(
    seed: int,
    video: str,
    h: int,
    w: int,
    ops: str | tuple[str, ...] = VSRGAN_DEFAULTS["ops"],
    prob: float = 0.5,
    sigma_max: float = 1.5,
    noise_max: float = 10.0,
    brightness: float = 0.1,
    contrast: float = 0.2,
    freq_gain: float = 0.5,
    cutblur_max: float = 0.5,
    diffusion_steps: int = 4,
    jpeg_min: int = 30,
) -> list[tuple[str, dict]]:
    """The VSRGAN operations one video gets, with their drawn parameters, in the order they are applied.

    Each operation of ``ops`` is applied with probability ``prob``; each has its own generator
    ``video_rng(seed, video, 1, k)`` (k its index in :data:`VSRGAN_OPS`), so switching one operation off does
    not change the others' draws. Parameters, drawn uniformly (the paper gives no ranges; these are ours):
    blur sigma in [0.2, sigma_max]; noise std in [0, noise_max] (8-bit levels); brightness shift in
    [-brightness, brightness] and contrast factor in [1 - contrast, 1 + contrast]; frequency gain of the Haar
    detail bands in [1 - freq_gain, 1 + freq_gain]; CutBlur rectangle sides of [0.25, max(0.25, cutblur_max)]
    of the frame, pooling by 2, 3 or 4; diffusion 1 .. diffusion_steps blurs of sigma in [0.3, 0.7];
    content-aware sigma in [0.5, max(0.5, sigma_max)] (twice the allowance, being spatially
    limited); adaptive 1 .. diffusion_steps iterations of sigma in [0.3, sigma_max / 2];
    JPEG quality an integer in [jpeg_min, 95].
    """
    names = parse_ops(ops)
    _check_vsrgan(prob, sigma_max, noise_max, brightness, contrast, freq_gain, cutblur_max, diffusion_steps, jpeg_min)
    chosen = []
    for k, op in enumerate(VSRGAN_OPS):
        rng = video_rng(seed, video, 1, k)
        applied = rng.random() < prob
        if op not in names or not applied:
            continue
        if op == "blur":
            p = {"sigma": float(rng.uniform(0.2, sigma_max))}
        elif op == "noise":
            p = {"std": float(rng.uniform(0, noise_max)) / 255, "noise_seed": int(rng.integers(2**62))}
        elif op == "contrast":
            p = {
                "brightness": float(rng.uniform(-brightness, brightness)),
                "contrast": float(rng.uniform(1 - contrast, 1 + contrast)),
            }
        elif op == "frequency":
            p = {"gain": float(rng.uniform(1 - freq_gain, 1 + freq_gain))}
        elif op == "cutblur":
            f = rng.uniform(0.25, max(0.25, cutblur_max), size=2)
            height, width = max(1, round(f[0] * h)), max(1, round(f[1] * w))
            p = {
                "top": int(rng.integers(0, h - height + 1)),
                "left": int(rng.integers(0, w - width + 1)),
                "height": height,
                "width": width,
                "factor": int(rng.integers(2, 5)),
            }
        elif op == "diffusion":
            p = {"steps": int(rng.integers(1, diffusion_steps + 1)), "sigma": float(rng.uniform(0.3, 0.7))}
        elif op == "content":
            p = {"sigma": float(rng.uniform(0.5, max(0.5, 2 * sigma_max)))}
        elif op == "adaptive":
            n = int(rng.integers(1, diffusion_steps + 1))
            p = {"sigmas": [float(s) for s in rng.uniform(0.3, max(0.3, sigma_max / 2), size=n)]}
        else:  # jpeg
            p = {"quality": int(rng.integers(jpeg_min, 96))}
        chosen.append((op, p))
    return chosen


def vsrgan_stage(
    lr: np.ndarray,
    seed: int = 0,
    video: str = "",
    ops: str = VSRGAN_DEFAULTS["ops"],
    prob: float = 0.5,
    sigma_max: float = 1.5,
    noise_max: float = 10.0,
    brightness: float = 0.1,
    contrast: float = 0.2,
    freq_gain: float = 0.5,
    cutblur_max: float = 0.5,
    diffusion_steps: int = 4,
    jpeg_min: int = 30,
) -> np.ndarray:
    """The VSRGAN suite on LR frames ``(T, h, w, 3)`` uint8: :func:`draw_vsrgan`'s operations in turn, in
    float, rounded to uint8 once at the end (JPEG rounds its input to 8 bits itself)."""
    _, h, w, _ = lr.shape
    chosen = draw_vsrgan(
        seed,
        video,
        h,
        w,
        ops,
        prob,
        sigma_max,
        noise_max,
        brightness,
        contrast,
        freq_gain,
        cutblur_max,
        diffusion_steps,
        jpeg_min,
    )
    x = to_tensor(lr)
    for op, params in chosen:
        x = apply_vsrgan_op(x, op, params)
    return to_uint8(x)


def vsrgan(
    hr: np.ndarray,
    scale: int,
    seed: int = 0,
    video: str = "",
    ops: str = VSRGAN_DEFAULTS["ops"],
    prob: float = 0.5,
    sigma_max: float = 1.5,
    noise_max: float = 10.0,
    brightness: float = 0.1,
    contrast: float = 0.2,
    freq_gain: float = 0.5,
    cutblur_max: float = 0.5,
    diffusion_steps: int = 4,
    jpeg_min: int = 30,
) -> np.ndarray:
    """VSRGAN's LR inputs: bicubic downsampling, then the paper's degradation suite (:func:`vsrgan_stage`)."""
    parse_ops(ops)
    _check_vsrgan(prob, sigma_max, noise_max, brightness, contrast, freq_gain, cutblur_max, diffusion_steps, jpeg_min)
    return vsrgan_stage(
        bicubic(hr, scale),
        seed,
        video,
        ops,
        prob,
        sigma_max,
        noise_max,
        brightness,
        contrast,
        freq_gain,
        cutblur_max,
        diffusion_steps,
        jpeg_min,
    )


# ------------------------------------------------------------------------------------------------- the registry

DEGRADATIONS: dict[str, Callable[..., np.ndarray]] = {
    "bicubic": bicubic,
    "blur": blur,
    "h264": h264,
    "blur-h264": h264,
    "hevc": hevc,
    "fca2-mix": fca2_mix,
    "vsrgan": vsrgan,
}

#: the degradations that draw random parameters: they take ``seed`` and ``video``
RANDOM_DEGRADATIONS: tuple[str, ...] = ("fca2-mix", "vsrgan")


def canonical(name: str) -> str:
    """The degradation's own name (``blur-h264`` -> ``h264``); ValueError for an unknown one."""
    if name not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {name!r}; choose one of {sorted(DEGRADATIONS)}")
    return ALIASES.get(name, name)


def degradation_parameters(name: str) -> list[str]:
    """The parameters ``name`` takes (besides ``hr`` and ``scale``)."""
    fn = DEGRADATIONS[canonical(name)]
    return [p for p in inspect.signature(fn).parameters if p not in ("hr", "scale")]


def degrade_video(hr: np.ndarray, name: str, scale: int, **params: object) -> np.ndarray:
    """Apply the degradation ``name`` to ``hr (T, H, W, 3)`` uint8 -> ``(T, H/s, W/s, 3)`` uint8."""
    allowed = degradation_parameters(name)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"degradation {name!r} has no parameter {', '.join(unknown)}; it takes {allowed}")
    return DEGRADATIONS[canonical(name)](hr, scale, **params)


def degradation_params(data_cfg) -> dict[str, object]:
    """The degradation's parameters from the ``data.*`` config keys (``seed`` and ``video`` are added per video
    by :func:`fedvsr.data.datasets.load_pair`)."""
    d = data_cfg
    name = canonical(d.degradation)
    vsrgan_keys = {
        "ops": d.vsrgan_ops,
        "prob": d.vsrgan_prob,
        "sigma_max": d.vsrgan_sigma,
        "noise_max": d.vsrgan_noise,
        "brightness": d.vsrgan_brightness,
        "contrast": d.vsrgan_contrast,
        "freq_gain": d.vsrgan_freq_gain,
        "cutblur_max": d.vsrgan_cutblur,
        "diffusion_steps": d.vsrgan_diffusion_steps,
        "jpeg_min": d.vsrgan_jpeg_quality,
    }
    return {
        "bicubic": {},
        "blur": {"sigma": d.sigma},
        "h264": {"sigma": d.sigma, "crf": d.crf},
        "hevc": {"qp": d.qp},
        "fca2-mix": {
            "sigma": d.sigma,
            "crf_min": d.mix_crf_min,
            "crf_max": d.mix_crf_max,
            "compressed": d.mix_compressed,
        },
        "vsrgan": vsrgan_keys,
    }[name]


#: the resampling a degradation starts with, named as the VSR datasets name their pre-made LR folders:
#: ``BI`` = bicubic (REDS ``train_sharp_bicubic/X4``, Vid4 ``BIx4``, Vimeo-90K ``vimeo_septuplet_matlabLRx4``),
#: ``BD`` = Gaussian blur + every 4th pixel (Vid4 / Vimeo-90K ``BDx4``, made with sigma 1.6 by BasicSR's
#: ``duf_downsample``; FCA2's blur is sigma 1.5, so a BD twin is 0.1 off in sigma)
RESAMPLING: dict[str, str] = {
    "bicubic": "BI",
    "blur": "BD",
    "h264": "BD",
    "blur-h264": "BD",
    "hevc": "BI",
    "fca2-mix": "BD",
    "vsrgan": "BI",
}

# what each degradation does after its resampling (None: nothing)
_AFTER_RESAMPLING: dict[str, Callable[..., np.ndarray] | None] = {
    "bicubic": None,
    "blur": None,
    "h264": h264_stage,
    "hevc": hevc_stage,
    "fca2-mix": fca2_mix_stage,
    "vsrgan": vsrgan_stage,
}


def has_later_stage(name: str) -> bool:
    """Whether ``name`` does anything after its resampling (a codec, the VSRGAN suite)."""
    return _AFTER_RESAMPLING[canonical(name)] is not None


def degrade_resampled(lr: np.ndarray, name: str, **params: object) -> np.ndarray:
    """Finish the degradation ``name`` on LR frames that are already resampled (a dataset's pre-made
    :data:`RESAMPLING` frames): nothing for ``bicubic`` and ``blur``, H.264 at ``crf`` for ``h264``, HEVC at
    ``qp`` for ``hevc``, the random codec stage of ``fca2-mix``, the suite of ``vsrgan``. ``sigma`` is accepted
    and ignored (the pre-made frames are already blurred). ``lr (T, h, w, 3)`` uint8 in and out."""
    fn = _AFTER_RESAMPLING[canonical(name)]
    allowed = [] if fn is None else [p for p in inspect.signature(fn).parameters if p != "lr"]
    ignored = ["sigma"] if RESAMPLING[canonical(name)] == "BD" else []
    unknown = sorted(set(params) - set(allowed) - set(ignored))
    if unknown:
        raise ValueError(
            f"degradation {name!r} on pre-made LR frames has no parameter {', '.join(unknown)}; "
            f"it takes {allowed + ignored}"
        )
    kept = {k: v for k, v in params.items() if k in allowed}
    return lr if fn is None else fn(lr, **kept)
