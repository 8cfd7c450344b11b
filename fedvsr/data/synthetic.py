"""The built-in synthetic video dataset: deterministic procedural scenes with real camera motion.

Each content class pairs a texture family with a motion type:

* ``stripes-pan``: oriented sinusoid and soft square-wave gratings with slowly varying contrast,
  seen through a smoothly panning camera.
* ``checker-zoom``: rotated checkerboards at two scales with discs and squares on top, and a
  camera that slowly zooms in and out while drifting.
* ``noise-objects``: a coloured band-limited 1/f noise background that pans, with textured
  ellipses moving, bouncing and spinning in front of it.
* ``waves-rotate``: plane and circular waves whose colours mix, seen through a rotating and
  translating camera.

Those four are the *procedural* classes. The *natural* classes of :mod:`fedvsr.data.natural`
(``photo-pan``, ``photo-zoom``, ``photo-rotate``, ``texture-crop``) film the photographs scikit-image
ships under the same kinds of camera motion. :data:`CONTENT` names the class sets a dataset is built
from (``data.content``): ``natural`` (the default), ``procedural``, or ``all`` eight.

A frame is rendered at the target resolution by evaluating a continuous scene at every pixel
centre (the noise background is shifted with an exact Fourier phase ramp), so motion is sub-pixel
and consistent from frame to frame. Detail is specified in cycles per pixel, from about 0.01 up to
about 0.3: above the Nyquist limit of a x4 (or x2) LR frame, below that of the HR frame, so a
super-resolution model has band-limited high frequencies to recover, and nothing is white noise.

Reproducibility: scenes are computed in float64 and rounded to 8 bits once, and the videos are
stored losslessly (FFV1 in Matroska, written bit-exactly), so the decoded frames of a dataset equal
:func:`synth_video`'s output and are the same bytes whatever process builds them, whatever its
thread settings, and on any CPU. (The first version encoded with libx264, whose lookahead reads
uninitialised memory: the same frames gave other bytes depending on the process's heap, and its
4:2:0 chroma moved saturated fine detail by up to 209 levels.)
"""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from fedvsr.data.natural import NATURAL_CLASSES, NATURAL_RENDERERS
from fedvsr.data.video import VideoEntry, write_video

PROCEDURAL_CLASSES: tuple[str, ...] = ("stripes-pan", "checker-zoom", "noise-objects", "waves-rotate")
#: every class :func:`synth_video` renders; a class's index here seeds its scenes, so new classes go at the end
CLASSES: tuple[str, ...] = PROCEDURAL_CLASSES + NATURAL_CLASSES
#: the class sets a dataset can be built from (``data.content``); video ``k`` has class ``classes[k % len]``
CONTENT: dict[str, tuple[str, ...]] = {
    "natural": NATURAL_CLASSES,
    "procedural": PROCEDURAL_CLASSES,
    "all": CLASSES,
}
DEFAULT_CONTENT = "natural"

#: bumped whenever the renderer or the storage changes, so datasets built by an older one are rebuilt
#: (3: the natural classes and the content key; 4: each natural class films its own images)
GENERATOR_VERSION = 4
#: how the videos are stored: lossless FFV1 (RGB) in Matroska
CODEC, PIX_FMT, SUFFIX = "ffv1", "bgr0", ".mkv"
MANIFEST = "manifest.json"

#: every scene is computed in float64, so that the rounding to 8 bits cannot depend on the SIMD
#: code path numpy picks for sin/cos/exp on this CPU (float32 results differ in the last bits)
_REAL = np.float64
_TWO_PI = _REAL(2 * np.pi)
_EDGE_PX = 0.7  # width, in screen pixels, of the soft edges of checkers and shapes


# ----------------------------------------------------------------------------- helpers


def _real(x: float | np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=_REAL)


def _camera(
    xs: np.ndarray, ys: np.ndarray, cx: np.ndarray, cy: np.ndarray, theta: np.ndarray, zoom: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """World coordinates ``(T, H, W)`` of the pixel centres for a camera per frame.

    ``xs (1, 1, W)``, ``ys (1, H, 1)`` are pixel offsets from the image centre; ``cx, cy`` (world
    point at the centre), ``theta`` (rotation) and ``zoom`` (screen pixels per world unit) are ``(T, 1, 1)``.
    """
    c, s = np.cos(theta), np.sin(theta)
    u, v = xs / zoom, ys / zoom
    return cx + c * u - s * v, cy + s * u + c * v


def _grating(wx: np.ndarray, wy: np.ndarray, angle: float, freq: float, phase: float) -> np.ndarray:
    """``sin(2 pi f (n . p) + phase)`` for the unit direction ``n`` at ``angle``."""
    ca, sa = _REAL(np.cos(angle) * freq * 2 * np.pi), _REAL(np.sin(angle) * freq * 2 * np.pi)
    return np.sin(ca * wx + sa * wy + _REAL(phase))


def _soft_square(u: np.ndarray, cell_px: np.ndarray) -> np.ndarray:
    """Square wave of period 2 in ``u`` (+1 on even cells, -1 on odd), edges softened to ``_EDGE_PX``.

    ``cell_px`` is the cell width in screen pixels (broadcast against ``u``).
    """
    frac = u - np.floor(u)
    dist = (0.5 - np.abs(frac - 0.5)) * cell_px  # screen pixels to the nearest cell edge
    sign = np.where(np.floor(u) % 2 == 0, _REAL(1), _REAL(-1))
    return sign * np.minimum(dist / _REAL(_EDGE_PX / 2), _REAL(1))


def _soft_alpha(dist_px: np.ndarray) -> np.ndarray:
    """Coverage of a shape from the signed distance (screen pixels, positive inside) to its edge."""
    return np.clip(0.5 + dist_px / _REAL(_EDGE_PX), 0, 1).astype(_REAL)


def _random_colour(rng: np.random.Generator, low: float = 0.1, high: float = 0.9) -> np.ndarray:
    return _real(rng.uniform(low, high, 3))


_GREY = np.full(3, 1 / np.sqrt(3))


def _chroma_for(freq: float) -> float:
    """How much colour a pattern of ``freq`` cycles/px carries: full below 0.03, a quarter above 0.15.

    Natural video keeps its fine detail mostly in luma (which is also what 4:2:0 encoding keeps).
    """
    return float(np.interp(np.log(freq), np.log([0.03, 0.15]), [1.0, 0.25]))


def _colour_direction(rng: np.random.Generator, chroma: float = 1.0) -> np.ndarray:
    """A random colour offset of unit norm: +-grey plus ``chroma`` times a random hue direction."""
    n = rng.normal(0, 1, 3)
    n -= n.dot(_GREY) * _GREY
    c = rng.choice([-1.0, 1.0]) * _GREY + chroma * 1.2 * n / np.linalg.norm(n)
    return _real(c / np.linalg.norm(c))


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _bounce(start: np.ndarray, velocity: np.ndarray, t: np.ndarray, half: float) -> np.ndarray:
    """Position at times ``t`` moving at ``velocity`` and reflecting off ``[-half, half]``."""
    span = 2 * half
    p = (start + half + velocity * t) % (2 * span)
    return np.where(p > span, 2 * span - p, p) - half


def _add(img: np.ndarray, colour: np.ndarray, field: np.ndarray) -> None:
    """``img (T, H, W, 3) += field (T, H, W) * colour (3,)`` channel by channel."""
    for ch in range(3):
        img[..., ch] += colour[ch] * field


def _blend(img: np.ndarray, alpha: np.ndarray, layer: np.ndarray) -> None:
    """Composite ``layer (T, H, W, 3)`` over ``img`` with coverage ``alpha (T, H, W)``, in place."""
    a = alpha[..., None]
    img *= 1 - a
    img += a * layer


# ----------------------------------------------------------------------------- classes


def _stripes_pan(rng: np.random.Generator, t: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Oriented gratings (sinusoids and soft square waves) under a smooth pan."""
    speed, heading = rng.uniform(0.4, 2.0), rng.uniform(0, 2 * np.pi)
    wobble, period, phase = rng.uniform(0, 3.0), rng.uniform(8, 24), rng.uniform(0, 2 * np.pi)
    start = rng.uniform(-400, 400, 2)
    wob = wobble * np.sin(2 * np.pi * t / period + phase)
    cx = _real(start[0] + speed * np.cos(heading) * t + wob * -np.sin(heading))
    cy = _real(start[1] + speed * np.sin(heading) * t + wob * np.cos(heading))
    wx, wy = _camera(xs, ys, cx, cy, _real(np.zeros_like(t)), _real(np.ones_like(t)))

    img = np.empty(wx.shape + (3,), _REAL)
    img[:] = _random_colour(rng, 0.3, 0.7)
    k = 7
    freqs = np.sort([_log_uniform(rng, 0.012, 0.3) for _ in range(k)])
    amps = 0.16 * (freqs / 0.05) ** -0.35
    for f, a in zip(freqs, amps, strict=True):
        g = _grating(wx, wy, rng.uniform(0, np.pi), f, rng.uniform(0, 2 * np.pi))
        if f < 0.08 and rng.random() < 0.6:  # soft square wave: harmonics up to ~3f stay below 0.3
            sharp = _REAL(rng.uniform(1.5, 3.0))
            g = np.tanh(sharp * g) / np.tanh(sharp)
        # slowly varying contrast, so the pattern is not strictly periodic
        env = 0.65 + 0.35 * _grating(wx, wy, rng.uniform(0, np.pi), rng.uniform(0.003, 0.01), rng.uniform(0, 7))
        _add(img, _colour_direction(rng, _chroma_for(f)) * _REAL(a), g * env)
    return img


def _checker_zoom(rng: np.random.Generator, t: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Checkerboards at two scales plus discs and squares, under a slow zoom in/out and a drift."""
    amp, period, phase = rng.uniform(0.15, 0.3), rng.uniform(24, 64), rng.uniform(0, 2 * np.pi)
    zoom = _real(np.exp(amp * np.sin(2 * np.pi * t / period + phase)))
    drift = rng.uniform(-0.5, 0.5, 2)
    start = rng.uniform(-300, 300, 2)
    cx, cy = _real(start[0] + drift[0] * t), _real(start[1] + drift[1] * t)
    wx, wy = _camera(xs, ys, cx, cy, _real(np.full_like(t, rng.uniform(-0.3, 0.3))), zoom)

    img = np.empty(wx.shape + (3,), _REAL)
    # coarse checkerboard, rotated
    cell, angle = rng.uniform(8, 20), rng.uniform(0, np.pi / 2)
    ca, sa = _REAL(np.cos(angle)), _REAL(np.sin(angle))
    u, v = (ca * wx + sa * wy) / _REAL(cell), (-sa * wx + ca * wy) / _REAL(cell)
    cell_px = _real(cell) * zoom
    checker = _soft_square(u, cell_px) * _soft_square(v, cell_px)
    col_a, col_b = _random_colour(rng), _random_colour(rng)
    mid, half_diff = (col_a + col_b) / 2, (col_a - col_b) / 2
    img[:] = mid
    _add(img, half_diff, checker)
    # fine low-contrast checkerboard at another angle
    cell2, angle2 = rng.uniform(3.5, 6), rng.uniform(0, np.pi / 2)
    ca, sa = _REAL(np.cos(angle2)), _REAL(np.sin(angle2))
    u, v = (ca * wx + sa * wy) / _REAL(cell2), (-sa * wx + ca * wy) / _REAL(cell2)
    cell2_px = _real(cell2) * zoom
    _add(img, _colour_direction(rng, 0.3) * _REAL(0.08), _soft_square(u, cell2_px) * _soft_square(v, cell2_px))
    # shapes fixed in the world: they grow and shrink with the zoom
    h, w = ys.shape[1], xs.shape[2]
    for _ in range(rng.integers(4, 8)):
        centre = start + rng.uniform(-0.5, 0.5, 2) * (w, h)
        radius = rng.uniform(5, 0.2 * min(h, w) + 6)
        dx, dy = wx - _REAL(centre[0]), wy - _REAL(centre[1])
        if rng.random() < 0.5:  # disc
            dist = _REAL(radius) - np.sqrt(dx * dx + dy * dy)
        else:  # rotated square
            rot = rng.uniform(0, np.pi / 2)
            cr, sr = _REAL(np.cos(rot)), _REAL(np.sin(rot))
            dist = _REAL(radius) - np.maximum(np.abs(cr * dx + sr * dy), np.abs(-sr * dx + cr * dy))
        alpha = _soft_alpha(dist * zoom)
        layer = np.empty_like(img)
        layer[:] = _random_colour(rng)
        if rng.random() < 0.5:  # striped fill
            f = rng.uniform(0.06, 0.2)
            stripes = _grating(wx, wy, rng.uniform(0, np.pi), f, rng.uniform(0, 7))
            _add(layer, _colour_direction(rng, _chroma_for(f)) * _REAL(0.2), stripes)
        _blend(img, alpha, layer)
    return img


def _band_limited_noise(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Spectra ``(3, Ny, Nx//2+1)`` of three 1/f noise fields with unit std.

    Field 0 (luma) is band-limited to about 0.3 cycles/px, fields 1 and 2 (chroma) to about 0.06.
    """
    ny, nx = size
    fy = np.fft.fftfreq(ny)[:, None]
    fx = np.fft.rfftfreq(nx)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    pink = np.where(f > 0, 1 / np.maximum(f, 1e-6), 0)
    amplitude = np.stack([pink * np.exp(-((f / 0.24) ** 6)), pink * np.exp(-((f / 0.06) ** 2))])
    amplitude = amplitude[[0, 1, 1]]
    spectra = np.fft.rfft2(rng.normal(0, 1, (3, ny, nx))) * amplitude
    std = np.fft.irfft2(spectra, s=size).std(axis=(1, 2), keepdims=True)
    return spectra / std


def _noise_objects(rng: np.random.Generator, t: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Coloured band-limited noise that pans, with textured ellipses moving in front of it."""
    h, w = ys.shape[1], xs.shape[2]
    size = (2 * h, 2 * w)
    spectra = _band_limited_noise(rng, size)
    # noise fields -> RGB: luma along grey, chroma along two random hue directions
    hue = rng.normal(0, 1, (2, 3))
    hue -= np.outer(hue @ _GREY, _GREY)
    hue[1] -= hue[1].dot(hue[0]) / hue[0].dot(hue[0]) * hue[0]
    hue /= np.linalg.norm(hue, axis=1, keepdims=True)
    mix = np.stack([_GREY * rng.uniform(0.12, 0.2), hue[0] * rng.uniform(0.05, 0.12), hue[1] * rng.uniform(0.03, 0.08)])
    spectra = np.einsum("kc,kyx->cyx", mix, spectra)
    # background pan by an exact sub-pixel shift (phase ramp), top-left (H, W) of the periodic field
    speed, heading = rng.uniform(0.2, 1.2), rng.uniform(0, 2 * np.pi)
    shift_x = speed * np.cos(heading) * t[:, 0, 0]
    shift_y = speed * np.sin(heading) * t[:, 0, 0]
    fy = np.fft.fftfreq(size[0])[None, :, None]
    fx = np.fft.rfftfreq(size[1])[None, None, :]
    ramp = np.exp(2j * np.pi * (fx * shift_x[:, None, None] + fy * shift_y[:, None, None]))
    img = np.empty((len(t), h, w, 3), _REAL)
    base = _random_colour(rng, 0.35, 0.65)
    for ch in range(3):
        field = np.fft.irfft2(spectra[ch][None] * ramp, s=size)[:, :h, :w]
        img[..., ch] = (base[ch] + field).astype(_REAL)
    # objects: soft ellipses with their own gratings, bouncing and spinning
    px, py = xs.astype(_REAL), ys.astype(_REAL)
    for _ in range(rng.integers(3, 7)):
        a_ax, b_ax = rng.uniform(5, 0.12 * min(h, w) + 8, 2)
        speed, heading = rng.uniform(0.3, 2.5), rng.uniform(0, 2 * np.pi)
        cx = _real(_bounce(rng.uniform(-w / 2, w / 2), speed * np.cos(heading), t, w / 2))
        cy = _real(_bounce(rng.uniform(-h / 2, h / 2), speed * np.sin(heading), t, h / 2))
        theta = _real(rng.uniform(0, 2 * np.pi) + rng.uniform(-0.035, 0.035) * t)
        c, s = np.cos(theta), np.sin(theta)
        u = c * (px - cx) + s * (py - cy)  # sprite-local coordinates, rotating with it
        v = -s * (px - cx) + c * (py - cy)
        radius = np.sqrt((u / _REAL(a_ax)) ** 2 + (v / _REAL(b_ax)) ** 2)
        alpha = _soft_alpha((1 - radius) * _REAL(min(a_ax, b_ax)))
        layer = np.empty_like(img)
        layer[:] = _random_colour(rng)
        for _ in range(rng.integers(1, 4)):
            f = _log_uniform(rng, 0.04, 0.28)
            g = _grating(u, v, rng.uniform(0, np.pi), f, rng.uniform(0, 7))
            _add(layer, _colour_direction(rng, _chroma_for(f)) * _REAL(rng.uniform(0.08, 0.2)), g)
        _blend(img, alpha, layer)
    return img


def _waves_rotate(rng: np.random.Generator, t: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Plane and circular waves with mixed colours, under a rotating and translating camera."""
    omega = rng.choice([-1, 1]) * rng.uniform(0.008, 0.035)  # radians per frame
    speed, heading = rng.uniform(0.3, 1.5), rng.uniform(0, 2 * np.pi)
    start = rng.uniform(-300, 300, 2)
    theta = _real(rng.uniform(0, 2 * np.pi) + omega * t)
    cx = _real(start[0] + speed * np.cos(heading) * t)
    cy = _real(start[1] + speed * np.sin(heading) * t)
    wx, wy = _camera(xs, ys, cx, cy, theta, _real(np.ones_like(t)))

    img = np.empty(wx.shape + (3,), _REAL)
    img[:] = _random_colour(rng, 0.35, 0.65)
    for _ in range(5):
        f = _log_uniform(rng, 0.015, 0.26)
        g = _grating(wx, wy, rng.uniform(0, np.pi), f, rng.uniform(0, 2 * np.pi))
        _add(img, _colour_direction(rng, _chroma_for(f)) * _REAL(0.14 * (f / 0.05) ** -0.3), g)
    h, w = ys.shape[1], xs.shape[2]
    for _ in range(2):
        centre = start + rng.uniform(-1, 1, 2) * (w, h)
        r = np.sqrt((wx - _REAL(centre[0])) ** 2 + (wy - _REAL(centre[1])) ** 2)
        f = rng.uniform(0.04, 0.2)
        g = np.sin(_TWO_PI * _REAL(f) * r + _REAL(rng.uniform(0, 7)))
        _add(img, _colour_direction(rng, _chroma_for(f)) * _REAL(0.12), g)
    # gentle S-curve, as a camera's tone curve would do
    return 0.5 + 0.55 * np.tanh((img - 0.5) / 0.55)


_RENDERERS: dict[str, Callable[..., np.ndarray]] = {
    "stripes-pan": _stripes_pan,
    "checker-zoom": _checker_zoom,
    "noise-objects": _noise_objects,
    "waves-rotate": _waves_rotate,
    **NATURAL_RENDERERS,
}


def synth_video(seed: int, label: str, frames: int, height: int, width: int) -> np.ndarray:
    """Render one synthetic video.

    Parameters
    ----------
    seed
        Non-negative integer; the scene is drawn from ``np.random.default_rng([seed, class index])``.
    label
        One of :data:`CLASSES`.
    frames, height, width
        Size of the clip. Detail is in pixel units, so a larger frame shows more of the scene.

    Returns
    -------
    np.ndarray
        ``(frames, height, width, 3)`` uint8, bit-identical for the same arguments.
    """
    if label not in _RENDERERS:
        raise ValueError(f"unknown synthetic class {label!r}; choose one of {list(CLASSES)}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    if frames < 1 or height < 2 or width < 2:
        raise ValueError(f"need frames >= 1 and height, width >= 2, got {frames}x{height}x{width}")
    rng = np.random.default_rng([int(seed), CLASSES.index(label)])
    t = np.arange(frames, dtype=np.float64)[:, None, None]
    ys = _real(np.arange(height) - (height - 1) / 2)[None, :, None]
    xs = _real(np.arange(width) - (width - 1) / 2)[None, None, :]
    img = _RENDERERS[label](rng, t, ys, xs)
    return np.clip(np.rint(img * _REAL(255)), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- dataset on disk


def video_seed(seed: int, index: int) -> int:
    """The seed of video ``index`` of a dataset built with ``seed``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint32)[0])


def dataset_params(
    videos: int, frames: int, height: int, width: int, seed: int, content: str = DEFAULT_CONTENT
) -> dict[str, int | str]:
    """What a synthetic dataset is a function of (its manifest records them)."""
    _classes(content)
    return {
        "generator_version": GENERATOR_VERSION,
        "content": content,
        "videos": videos,
        "frames": frames,
        "height": height,
        "width": width,
        "seed": seed,
        "codec": CODEC,
    }


def _classes(content: str) -> tuple[str, ...]:
    if content not in CONTENT:
        raise ValueError(f"unknown synthetic content {content!r}; choose one of {list(CONTENT)}")
    return CONTENT[content]


def _read_manifest(root: Path) -> tuple[dict, list[VideoEntry]]:
    data = json.loads((root / MANIFEST).read_text())
    entries = [VideoEntry(str((root / e["path"]).resolve()), e["label"], e["name"]) for e in data["entries"]]
    return data["params"], entries


def load_manifest(root: str | os.PathLike) -> list[VideoEntry]:
    """The entries recorded in ``root/manifest.json``, with absolute paths, in index order."""
    root = Path(root)
    if not (root / MANIFEST).is_file():
        raise FileNotFoundError(f"{root / MANIFEST}: no synthetic dataset manifest here")
    return _read_manifest(root)[1]


def _up_to_date(root: Path, params: dict) -> list[VideoEntry] | None:
    try:
        old_params, entries = _read_manifest(root)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if old_params != params or not all(Path(e.path).is_file() for e in entries):
        return None
    return entries


def build_synthetic_dataset(
    root: str | os.PathLike,
    videos: int,
    frames: int,
    height: int,
    width: int,
    seed: int,
    content: str = DEFAULT_CONTENT,
) -> list[VideoEntry]:
    """Render and encode the synthetic dataset, or reuse the one already at ``root``.

    Writes ``root/<label>/<label>_<k:04d>.mkv`` (lossless FFV1) where video ``k`` has
    class ``classes[k % len(classes)]`` of ``classes = CONTENT[content]`` and seed :func:`video_seed` ``(seed, k)``, and
    ``root/manifest.json`` with the parameters and entries. When the manifest holds the same
    parameters and every file exists, nothing is encoded. Safe to call from several processes at
    once: a lock file serialises builders on one machine and every file is written to a temporary
    name then renamed. Returns the entries in index order.
    """
    if videos < 1:
        raise ValueError(f"videos must be at least 1, got {videos}")
    root = Path(root).resolve()
    params = dataset_params(videos, frames, height, width, seed, content)
    classes = _classes(content)
    entries = _up_to_date(root, params)
    if entries is not None:
        return entries
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".build.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            entries = _up_to_date(root, params)  # another process may have built it meanwhile
            if entries is not None:
                return entries
            entries = []
            for k in range(videos):
                label = classes[k % len(classes)]
                name = f"{label}_{k:04d}"
                path = root / label / f"{name}{SUFFIX}"
                clip = synth_video(video_seed(seed, k), label, frames, height, width)
                write_video(path, clip, codec=CODEC, pix_fmt=PIX_FMT)
                entries.append(VideoEntry(str(path), label, name))
            manifest = {
                "params": params,
                "classes": list(classes),
                "entries": [{**asdict(e), "path": str(Path(e.path).relative_to(root))} for e in entries],
            }
            tmp = root / f".{MANIFEST}.{uuid.uuid4().hex}.tmp"
            tmp.write_text(json.dumps(manifest, indent=1))
            os.replace(tmp, root / MANIFEST)
            return entries
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
