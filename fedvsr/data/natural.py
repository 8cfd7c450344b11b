"""Natural content for the built-in synthetic videos: scikit-image's photographs under real camera motion.

The procedural classes of :mod:`fedvsr.data.synthetic` (gratings, checkerboards, band-limited noise, waves)
have none of the statistics of camera footage: edges of every orientation and contrast, occlusion
boundaries, textures that are not periodic. These classes film the images that scikit-image ships inside its
wheel (no download) with a moving virtual camera. Each class has its own images (:data:`CLASS_SOURCES`: no
image appears in two classes) and its own camera motion, so a client holding one class differs from another
in content and in motion, as two real devices filming different scenes would:

* ``photo-pan``: a street scene (motorcycle, colour) or the cameraman (grey, tinted) under a smooth pan with a
  perpendicular wobble.
* ``photo-zoom``: a close-up (chelsea the cat, a coffee cup; colour) under a slow zoom in and out around a
  drifting centre.
* ``photo-rotate``: the astronaut or a stained tissue section (immunohistochemistry; colour), or coins (grey,
  tinted) under a rotating and translating camera.
* ``texture-crop``: a crop window moving over a tinted texture (brick, grass, gravel) held by an unsteady
  hand: a slow drift plus a sub-pixel shake and a small roll.

A greyscale image is mapped onto a line between two colours of moderate saturation (a tint drawn per video).

Each frame is an affine resampling of the photograph: the pixel centre ``(x, y)`` (offsets from the frame
centre) samples the source at ``c + z R(theta) (x, y)`` with a cubic B-spline (scipy's ``map_coordinates``
with its prefilter: an interpolating spline, so a shift of a whole pixel gives the source pixel back), where
``z`` is source pixels per frame pixel. Where ``z > 1`` (the camera sees more of the photograph than it has
pixels) the source is first low-passed with a Gaussian of ``sigma = (z - 1) / 2`` source pixels (the
anti-aliasing scikit-image's ``rescale`` uses), so zooming out does not alias. The camera path is placed so
that every frame's footprint, plus the spline's support, lies inside the photograph: no border is ever
mirrored or wrapped into view. (A frame larger than a photograph allows is served by zooming in, ``z < 1``.)

Only images stored losslessly (PNG) are used: ``rocket``, ``hubble_deep_field`` and ``retina`` are JPEG files,
whose decoded pixels may differ between JPEG libraries, and the datasets' frames are meant to be the same bytes
everywhere. Everything is float64 and scipy's spline and Gaussian filters are plain C loops, so the frames do
not depend on the CPU's SIMD extensions.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np

NATURAL_CLASSES: tuple[str, ...] = ("photo-pan", "photo-zoom", "photo-rotate", "texture-crop")

#: colour photographs shipped in scikit-image's wheel (PNG), by their ``skimage.data`` names
PHOTOS: tuple[str, ...] = ("astronaut", "chelsea", "coffee", "motorcycle", "immunohistochemistry")
#: greyscale photographs shipped in scikit-image's wheel (PNG), filmed tinted
GREY_PHOTOS: tuple[str, ...] = ("camera", "coins")
#: greyscale textures shipped in scikit-image's wheel (PNG), filmed tinted
TEXTURES: tuple[str, ...] = ("brick", "grass", "gravel")
SOURCES: tuple[str, ...] = PHOTOS + GREY_PHOTOS + TEXTURES
#: the images each natural class films: disjoint, so the classes differ in content as well as in motion
CLASS_SOURCES: dict[str, tuple[str, ...]] = {
    "photo-pan": ("motorcycle", "camera"),
    "photo-zoom": ("chelsea", "coffee"),
    "photo-rotate": ("astronaut", "immunohistochemistry", "coins"),
    "texture-crop": TEXTURES,
}

_MARGIN = 3.0  # source pixels kept between a footprint and the photograph's edge (cubic spline support + 1)


@cache
def source_image(name: str) -> np.ndarray:
    """An image of ``skimage.data`` as float64 in [0, 1], ``(H, W, 3)`` (colour) or ``(H, W)``; read-only."""
    import skimage.data

    if name not in SOURCES:
        raise ValueError(f"unknown source image {name!r}; choose one of {list(SOURCES)}")
    img = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    out = img.astype(np.float64) / 255.0
    out.flags.writeable = False
    return out


def _spline(img: np.ndarray, sigma: float) -> np.ndarray:
    """Cubic B-spline coefficients ``(3, H, W)`` of ``img (H, W, 3)`` low-passed by a Gaussian of ``sigma``."""
    from scipy import ndimage

    out = np.empty((3,) + img.shape[:2], np.float64)
    for c in range(3):
        ch = img[..., c]
        if sigma > 0.05:
            ch = ndimage.gaussian_filter(ch, sigma, mode="mirror", truncate=4.0)
        out[c] = ndimage.spline_filter(ch, order=3, mode="mirror")
    return out


def _place(
    size: tuple[int, int],
    frame: tuple[int, int],
    dx: np.ndarray,
    dy: np.ndarray,
    zoom: np.ndarray,
    theta: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Camera centres ``(cx, cy)`` in source pixels, and the zoom, for a path drawn in frame pixels.

    ``dx, dy`` (frame pixels, per frame) is the path relative to its start; ``zoom`` (source pixels per frame
    pixel) and ``theta`` are per frame. The start is drawn uniformly among the positions where every frame's
    rotated footprint plus :data:`_MARGIN` lies inside the ``size = (H, W)`` source; if none exists, the zoom
    and the path (which is measured in frame pixels, so it scales with the zoom) shrink by 10% until one does.
    """
    sh, sw = size
    h, w = frame
    c, s = np.abs(np.cos(theta)), np.abs(np.sin(theta))
    half_x = c * (w - 1) / 2 + s * (h - 1) / 2 + 1  # half-extent of the rotated footprint, in frame pixels
    half_y = s * (w - 1) / 2 + c * (h - 1) / 2 + 1
    shrink = 1.0
    while True:
        z = zoom * shrink
        ox, oy = dx * z, dy * z  # path in source pixels
        lo_x, hi_x = np.max(half_x * z + _MARGIN - ox), np.min(sw - 1 - half_x * z - _MARGIN - ox)
        lo_y, hi_y = np.max(half_y * z + _MARGIN - oy), np.min(sh - 1 - half_y * z - _MARGIN - oy)
        if lo_x <= hi_x and lo_y <= hi_y:
            return rng.uniform(lo_x, hi_x) + ox, rng.uniform(lo_y, hi_y) + oy, z
        shrink *= 0.9


def _film(
    source: np.ndarray,
    t: np.ndarray,
    ys: np.ndarray,
    xs: np.ndarray,
    dx: np.ndarray,
    dy: np.ndarray,
    zoom: np.ndarray,
    theta: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Frames ``(T, H, W, 3)`` of ``source (Hs, Ws, 3)`` seen by the camera (see the module docstring)."""
    from scipy import ndimage

    frames, h, w = t.shape[0], ys.shape[1], xs.shape[2]
    cx, cy, z = _place(source.shape[:2], (h, w), dx, dy, zoom, theta, rng)
    out = np.empty((frames, h, w, 3), np.float64)
    coeffs: dict[float, np.ndarray] = {}
    for f in range(frames):
        sigma = round(max(0.0, (float(z[f]) - 1) / 2), 3)  # rounded: a constant zoom filters once
        if sigma not in coeffs:
            coeffs = {sigma: _spline(source, sigma)}
        ct, st = np.cos(theta[f]), np.sin(theta[f])
        sx = cx[f] + z[f] * (ct * xs[0] - st * ys[0])  # (H, W) source coordinates of the pixel centres
        sy = cy[f] + z[f] * (st * xs[0] + ct * ys[0])
        for c in range(3):
            out[f, ..., c] = ndimage.map_coordinates(
                coeffs[sigma][c], [sy, sx], order=3, mode="mirror", prefilter=False
            )
    return out


def _photo(rng: np.random.Generator, label: str) -> np.ndarray:
    """One of the class's photographs, mirrored left-right half the time: a colour one with a mild per-channel
    gain, a greyscale one tinted (:func:`_tint`)."""
    name = CLASS_SOURCES[label][int(rng.integers(len(CLASS_SOURCES[label])))]
    img = source_image(name)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    if img.ndim == 2:
        return _tint(img, rng)
    return img * rng.uniform(0.9, 1.1, 3)


def _texture(rng: np.random.Generator) -> np.ndarray:
    """A greyscale texture, mirrored and transposed at random, tinted (:func:`_tint`)."""
    g = source_image(TEXTURES[int(rng.integers(len(TEXTURES)))])
    if rng.random() < 0.5:
        g = g[:, ::-1]
    if rng.random() < 0.5:
        g = g.T
    return _tint(g, rng)


def _tint(g: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A greyscale image ``(H, W)`` mapped onto a line between two colours of moderate saturation."""
    grey = rng.uniform(0.35, 0.65)
    dark = grey * 0.35 + rng.uniform(-0.08, 0.08, 3)
    light = np.minimum(1.0, grey * 1.45 + rng.uniform(-0.08, 0.08, 3))
    return dark + g[..., None] * (light - dark)


def _flat(t: np.ndarray) -> np.ndarray:
    return t[:, 0, 0]


def _photo_pan(rng: np.random.Generator, t: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Smooth pan at 0.4-2 frame pixels per frame, a perpendicular wobble of up to 2 pixels, fixed zoom."""
    tt = _flat(t)
    src = _photo(rng, "photo-pan")
    speed, heading = rng.uniform(0.4, 2.0), rng.uniform(0, 2 * np.pi)
    wobble, period, phase = rng.uniform(0, 2.0), rng.uniform(8, 24), rng.uniform(0, 2 * np.pi)
    wob = wobble * (np.sin(2 * np.pi * tt / period + phase) - np.sin(phase))
    dx = speed * np.cos(heading) * tt - wob * np.sin(heading)
    dy = speed * np.sin(heading) * tt + wob * np.cos(heading)
    zoom = np.full_like(tt, np.exp(rng.uniform(np.log(1.0), np.log(2.2))))
    return _film(src, t, ys, xs, dx, dy, zoom, np.zeros_like(tt), rng)


def _photo_zoom(rng: np.random.Generator, t: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Zoom oscillating by a factor of up to exp(+-0.3) around 1.2-2.4 source pixels per pixel, slow drift."""
    tt = _flat(t)
    src = _photo(rng, "photo-zoom")
    amp, period, phase = rng.uniform(0.1, 0.3), rng.uniform(16, 48), rng.uniform(0, 2 * np.pi)
    zoom = np.exp(rng.uniform(np.log(1.2), np.log(2.4)) + amp * np.sin(2 * np.pi * tt / period + phase))
    drift = rng.uniform(-0.5, 0.5, 2)
    return _film(src, t, ys, xs, drift[0] * tt, drift[1] * tt, zoom, np.zeros_like(tt), rng)


def _photo_rotate(rng: np.random.Generator, t: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Roll of 0.5-2 degrees per frame from a random angle, translation at up to 1 pixel per frame."""
    tt = _flat(t)
    src = _photo(rng, "photo-rotate")
    omega = rng.choice([-1.0, 1.0]) * np.deg2rad(rng.uniform(0.5, 2.0))
    theta = rng.uniform(-np.pi, np.pi) + omega * tt
    speed, heading = rng.uniform(0.0, 1.0), rng.uniform(0, 2 * np.pi)
    zoom = np.full_like(tt, np.exp(rng.uniform(np.log(1.1), np.log(1.8))))
    return _film(src, t, ys, xs, speed * np.cos(heading) * tt, speed * np.sin(heading) * tt, zoom, theta, rng)


def _texture_crop(rng: np.random.Generator, t: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """A crop moving at 0.2-1 pixel per frame plus a hand-held shake (three sinusoids of 0.2-1.2 pixels,
    periods of 3-10 frames) and a roll of up to 0.5 degree."""
    tt = _flat(t)
    src = _texture(rng)
    speed, heading = rng.uniform(0.2, 1.0), rng.uniform(0, 2 * np.pi)
    dx, dy = speed * np.cos(heading) * tt, speed * np.sin(heading) * tt
    for _ in range(3):
        amp, period, phase = rng.uniform(0.2, 1.2, 2), rng.uniform(3, 10, 2), rng.uniform(0, 2 * np.pi, 2)
        dx = dx + amp[0] * np.sin(2 * np.pi * tt / period[0] + phase[0])
        dy = dy + amp[1] * np.sin(2 * np.pi * tt / period[1] + phase[1])
    roll = np.deg2rad(rng.uniform(0.1, 0.5)) * np.sin(2 * np.pi * tt / rng.uniform(6, 16) + rng.uniform(0, 7))
    zoom = np.full_like(tt, np.exp(rng.uniform(np.log(1.0), np.log(1.6))))
    return _film(src, t, ys, xs, dx, dy, zoom, roll, rng)


NATURAL_RENDERERS: dict[str, Callable[..., np.ndarray]] = {
    "photo-pan": _photo_pan,
    "photo-zoom": _photo_zoom,
    "photo-rotate": _photo_rotate,
    "texture-crop": _texture_crop,
}
