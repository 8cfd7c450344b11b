"""The synthetic dataset: determinism, motion, spectra, and the on-disk build with its manifest."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedvsr.data import natural
from fedvsr.data.synthetic import (
    CLASSES,
    CONTENT,
    NATURAL_CLASSES,
    PROCEDURAL_CLASSES,
    VideoEntry,
    build_synthetic_dataset,
    load_manifest,
    synth_video,
    video_seed,
)
from fedvsr.data.video import read_video

REPO = Path(__file__).resolve().parents[2]


def _luma(v: np.ndarray) -> np.ndarray:
    return v.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def test_classes():
    assert len(set(CLASSES)) == len(CLASSES) == 8
    # a class's index seeds its scenes: the procedural classes keep theirs, the natural ones come after
    assert CLASSES[:4] == PROCEDURAL_CLASSES == ("stripes-pan", "checker-zoom", "noise-objects", "waves-rotate")
    assert CLASSES[4:] == NATURAL_CLASSES == ("photo-pan", "photo-zoom", "photo-rotate", "texture-crop")
    assert CONTENT == {"natural": NATURAL_CLASSES, "procedural": PROCEDURAL_CLASSES, "all": CLASSES}


@pytest.mark.parametrize("label", CLASSES)
def test_deterministic_and_distinct(label):
    a = synth_video(5, label, 4, 24, 40)
    assert a.shape == (4, 24, 40, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, synth_video(5, label, 4, 24, 40))
    assert _mad(a, synth_video(6, label, 4, 24, 40)) > 10  # another seed, another scene
    other = CLASSES[(CLASSES.index(label) + 1) % len(CLASSES)]
    assert _mad(a, synth_video(5, other, 4, 24, 40)) > 10
    # not a flat image (a 24x40 view of a tinted photograph can be mostly sky: photo-pan's is 10.5 levels)
    assert a.std() > 8


def test_identical_in_another_process():
    args = (11, "noise-objects", 3, 20, 30)
    code = (
        "import hashlib; from fedvsr.data.synthetic import synth_video; "
        f"print(hashlib.sha256(synth_video(*{args!r}).tobytes()).hexdigest())"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == hashlib.sha256(synth_video(*args).tobytes()).hexdigest()


@pytest.mark.parametrize("label", CLASSES)
def test_real_motion(label):
    v = synth_video(2, label, 6, 48, 48)
    other = synth_video(3, label, 6, 48, 48)
    steps = [_mad(v[t], v[t + 1]) for t in range(5)]
    assert min(steps) > 0.5  # every frame moves
    # consecutive frames are far closer to each other than to another video of the same class (not so for
    # a photographed texture, which decorrelates within a pixel or two of shake: see test_texture_crop_shakes)
    if label != "texture-crop":
        assert max(steps) < 0.6 * _mad(v[0], other[0])


def _blur(x: np.ndarray) -> np.ndarray:
    k = np.array([1, 4, 6, 4, 1]) / 16
    for axis in (0, 1):
        x = np.apply_along_axis(np.convolve, axis, x, k, mode="same")
    return x


@pytest.mark.parametrize("seed", [0, 4])
def test_pan_is_a_shift(seed):
    """stripes-pan: frame 3 is frame 0 moved by the camera; the best integer shift explains most of
    the (low-passed, to forgive the sub-pixel part) difference."""
    v = _luma(synth_video(seed, "stripes-pan", 4, 64, 64))
    a, b = _blur(v[0])[12:-12, 12:-12], _blur(v[3])
    errors = {
        (dy, dx): np.abs(a - b[12 + dy : 52 + dy, 12 + dx : 52 + dx]).mean()
        for dy in range(-8, 9)
        for dx in range(-8, 9)
    }
    best = min(errors, key=errors.get)
    assert best != (0, 0)
    assert errors[best] < 0.3 * errors[(0, 0)]


@pytest.mark.parametrize("label", CLASSES)
def test_detail_is_band_limited(label):
    """Detail above the x4 LR Nyquist frequency to recover, but not white noise."""
    v = _luma(synth_video(1, label, 2, 64, 64))
    v -= v.mean(axis=(1, 2), keepdims=True)
    win = np.hanning(64)
    power = (np.abs(np.fft.fft2(v * win[:, None] * win[None, :])) ** 2).mean(0)
    f = np.hypot(np.fft.fftfreq(64)[:, None], np.fft.fftfreq(64)[None, :])
    total = power.sum()
    assert 0.05 < power[f > 0.125].sum() / total < 0.7
    assert power[f > 0.4].sum() / total < 0.05  # white noise would put about half its power here


def test_unknown_label_and_bad_sizes():
    with pytest.raises(ValueError, match="unknown synthetic class 'clouds'.*stripes-pan"):
        synth_video(0, "clouds", 2, 8, 8)
    with pytest.raises(ValueError, match="frames >= 1"):
        synth_video(0, CLASSES[0], 0, 8, 8)
    with pytest.raises(ValueError, match="non-negative"):
        synth_video(-1, CLASSES[0], 1, 8, 8)


def test_build_dataset_and_manifest(tmp_path):
    root = tmp_path / "synth"
    entries = build_synthetic_dataset(root, videos=6, frames=3, height=32, width=32, seed=7)
    classes = NATURAL_CLASSES  # the default content
    assert [e.label for e in entries] == [classes[i % len(classes)] for i in range(6)]
    assert [e.name for e in entries] == [f"{classes[i % len(classes)]}_{i:04d}" for i in range(6)]
    for e in entries:
        assert Path(e.path).is_absolute()
        assert Path(e.path) == root.resolve() / e.label / f"{e.name}.mkv"
    assert load_manifest(root) == entries
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["params"]["videos"] == 6 and manifest["params"]["codec"] == "ffv1"
    assert manifest["params"]["content"] == "natural" and manifest["params"]["generator_version"] == 4
    assert manifest["classes"] == list(NATURAL_CLASSES)
    assert manifest["entries"][1]["path"] == "photo-zoom/photo-zoom_0001.mkv"  # relative: root can move

    # stored losslessly: every decoded frame is the rendered frame, bit for bit
    for k, e in enumerate(entries):
        np.testing.assert_array_equal(read_video(e.path), synth_video(video_seed(7, k), e.label, 3, 32, 32))

    # same parameters: nothing re-encoded
    stamps = [os.stat(e.path).st_mtime_ns for e in entries]
    assert build_synthetic_dataset(root, 6, 3, 32, 32, 7) == entries
    assert [os.stat(e.path).st_mtime_ns for e in entries] == stamps

    # a missing file or other parameters: rebuilt, to the same bytes
    data = Path(entries[0].path).read_bytes()
    os.remove(entries[0].path)
    again = build_synthetic_dataset(root, 6, 3, 32, 32, 7)
    assert again == entries and Path(entries[0].path).read_bytes() == data
    rebuilt = build_synthetic_dataset(root, 4, 5, 32, 32, 7)
    assert len(rebuilt) == 4 and load_manifest(root) == rebuilt
    assert json.loads((root / "manifest.json").read_text())["params"]["frames"] == 5
    procedural = build_synthetic_dataset(root, 5, 5, 32, 32, 7, content="procedural")
    assert [e.label for e in procedural] == [*PROCEDURAL_CLASSES, "stripes-pan"]
    np.testing.assert_array_equal(
        read_video(procedural[1].path), synth_video(video_seed(7, 1), "checker-zoom", 5, 32, 32)
    )
    assert [e.label for e in build_synthetic_dataset(root, 9, 1, 16, 16, 7, content="all")] == [*CLASSES, CLASSES[0]]
    with pytest.raises(ValueError, match=r"unknown synthetic content 'photos'; choose one of \['natural', "):
        build_synthetic_dataset(root, 4, 1, 16, 16, 7, content="photos")
    assert not [p for p in root.rglob("*") if ".tmp" in p.name]


#: process environments that changed the bytes of libx264-encoded synthetic videos: thread settings,
#: heap contents (glibc fills freed / new memory with this byte) and numpy's SIMD code path (an older CPU)
ENVIRONMENTS = {
    "plain": {},
    "one-thread": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
    "perturbed-heap": {"MALLOC_PERTURB_": "77", "OMP_NUM_THREADS": "2"},
    "no-avx2": {"NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR"},
}
DROPPED = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MALLOC_PERTURB_", "NPY_DISABLE_CPU_FEATURES")


def _build_in_subprocess(root: Path, extra_env: dict[str, str]) -> list[str]:
    code = (
        "import hashlib, json, sys; from fedvsr.data.synthetic import build_synthetic_dataset; "
        "from fedvsr.data.video import read_video; "
        f"e = build_synthetic_dataset({str(root)!r}, 10, 5, 64, 64, 0); "
        "print(json.dumps([hashlib.sha256(read_video(x.path).tobytes()).hexdigest() for x in e]))"
    )
    env = {k: v for k, v in os.environ.items() if k not in DROPPED}
    env.update(PYTHONPATH=str(REPO), **extra_env)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_dataset_decodes_to_the_same_frames_in_any_process_environment(tmp_path):
    """The built-in dataset is the same frames whoever builds it (issue: libx264 gave other bytes with
    OMP_NUM_THREADS=1 than without, and a build into another folder differed on 3 of 10 files)."""
    hashes = {name: _build_in_subprocess(tmp_path / name, env) for name, env in ENVIRONMENTS.items()}
    reference = hashes.pop("plain")
    assert len(reference) == 10 and len(set(reference)) == 10
    for name, h in hashes.items():
        differ = [i for i, (a, b) in enumerate(zip(h, reference, strict=True)) if a != b]
        assert not differ, f"{name}: videos {differ} decode to other frames"
    # and they are the frames this process renders
    for k, digest in enumerate(reference):
        frames = synth_video(video_seed(0, k), NATURAL_CLASSES[k % len(NATURAL_CLASSES)], 5, 64, 64)
        assert hashlib.sha256(frames.tobytes()).hexdigest() == digest


def test_video_seeds_differ():
    seeds = {video_seed(0, i) for i in range(50)} | {video_seed(1, i) for i in range(50)}
    assert len(seeds) == 100


def test_concurrent_builds_agree(tmp_path):
    root = tmp_path / "shared"
    code = (
        "import json, sys; from fedvsr.data.synthetic import build_synthetic_dataset; "
        f"e = build_synthetic_dataset({str(root)!r}, 4, 2, 16, 16, 3); "
        "print(json.dumps([x.path for x in e]))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env) for _ in range(2)
    ]
    outputs = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outputs[0] == outputs[1] == [e.path for e in load_manifest(root)]
    for path in outputs[0]:
        assert read_video(path).shape == (2, 16, 16, 3)


def test_load_manifest_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        load_manifest(tmp_path)


def test_entry_is_frozen():
    e = VideoEntry("/x.mp4", "a", "a_0000")
    with pytest.raises(AttributeError):
        e.label = "b"  # type: ignore[misc]


# ----------------------------------------------------------------------------- natural classes


def test_natural_sources_load_without_the_network():
    """Every photograph ships inside scikit-image's wheel: a fresh process whose sockets all fail loads them."""
    code = (
        "import socket\n"
        "def refuse(*a, **k): raise OSError('network disabled by the test')\n"
        "socket.socket.connect = refuse; socket.create_connection = refuse; socket.getaddrinfo = refuse\n"
        "from fedvsr.data import natural\n"
        "for n in natural.SOURCES: print(n, *natural.source_image(n).shape)\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
    }
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[:10] == [
        "astronaut 512 512 3",
        "chelsea 300 451 3",
        "coffee 400 600 3",
        "motorcycle 500 741 3",
        "immunohistochemistry 512 512 3",
        "camera 512 512",
        "coins 303 384",
        "brick 512 512",
        "grass 512 512",
        "gravel 512 512",
    ]


def test_natural_classes_film_disjoint_images(monkeypatch):
    """Each natural class films its own images (issue 22, item 7: by-class clients differ in content, not only in
    camera motion): 12 videos of a class draw every one of its images and none of another class's."""
    assert set(natural.CLASS_SOURCES) == set(NATURAL_CLASSES)
    owned = [name for names in natural.CLASS_SOURCES.values() for name in names]
    assert sorted(owned) == sorted(natural.SOURCES)  # each image in exactly one class
    filmed: list[str] = []
    load = natural.source_image
    monkeypatch.setattr(natural, "source_image", lambda name: filmed.append(name) or load(name))
    for label in NATURAL_CLASSES:
        filmed.clear()
        for seed in range(12):
            synth_video(seed, label, 1, 16, 16)
        assert set(filmed) == set(natural.CLASS_SOURCES[label]), label


def _film(source, frames, h, w, dx, dy, zoom, theta=None, seed=0):
    t = np.arange(frames, dtype=np.float64)[:, None, None]
    ys = (np.arange(h) - (h - 1) / 2)[None, :, None]
    xs = (np.arange(w) - (w - 1) / 2)[None, None, :]
    full = np.ones(frames)
    theta = np.zeros(frames) if theta is None else theta
    return natural._film(
        source, t, ys, xs, np.asarray(dx) * full, np.asarray(dy) * full, zoom * full, theta, np.random.default_rng(seed)
    )


def _estimate_shift(a: np.ndarray, b: np.ndarray, border: int = 8) -> np.ndarray:
    """``d = (dy, dx)`` with ``b(y, x) = a(y + dy, x + dx)``: phase correlation, then Gauss-Newton steps on the
    interior pixels (phase correlation alone is biased towards whole pixels by up to 0.2 here)."""
    from scipy import ndimage
    from skimage.registration import phase_cross_correlation

    d = phase_cross_correlation(a, b, upsample_factor=10)[0]
    inner = (slice(border, -border),) * 2
    for _ in range(10):
        moved = ndimage.shift(a, -d, order=3, mode="nearest")
        gy, gx = np.gradient(moved)
        jac = np.stack([gy[inner].ravel(), gx[inner].ravel()], 1)
        d = d + np.linalg.lstsq(jac, (b - moved)[inner].ravel(), rcond=None)[0]
    return d


@pytest.mark.parametrize(("photo", "vx", "vy"), [("astronaut", 1.25, -0.5), ("coffee", -0.3, 0.8)])
def test_pan_shift_matches_the_velocity(photo, vx, vy):
    """A pan of (vx, vy) frame pixels per frame: frame k is frame 0 moved by k (vx, vy), to sub-pixel accuracy."""
    t = np.arange(5.0)
    v = _film(natural.source_image(photo), 5, 64, 64, vx * t, vy * t, 1.0)
    for k in (1, 2, 4):
        np.testing.assert_allclose(_estimate_shift(_luma(v[0]), _luma(v[k])), [vy * k, vx * k], atol=0.1)


def test_whole_pixel_shift_resamples_the_source_exactly():
    """The cubic spline interpolates: with no zoom, a camera moved by whole pixels reads the same pixels."""
    v = _film(natural.source_image("coffee"), 3, 24, 32, [0.0, 3.0, 3.0], [0.0, 0.0, -2.0], 1.0)
    np.testing.assert_allclose(v[1][:, :-3], v[0][:, 3:], atol=1e-9)
    np.testing.assert_allclose(v[2][2:, :-3], v[0][:-2, 3:], atol=1e-9)


def test_zooming_out_is_antialiased():
    """A grating of 0.4 cycles per source pixel seen at 3 source pixels per frame pixel (1.2 cycles per frame
    pixel) must not alias into a visible pattern: the Gaussian of sigma (3 - 1) / 2 = 1 leaves
    exp(-2 pi^2 0.4^2) = 4.2% of it; unfiltered, the full amplitude would alias to 0.2 cycles per pixel."""
    y, x = np.mgrid[0:400, 0:400]
    grating = 0.5 + 0.4 * np.sin(2 * np.pi * 0.4 * x)
    source = np.repeat(grating[..., None], 3, axis=2)
    frame = _film(source, 1, 48, 48, 0.0, 0.0, 3.0)[0, ..., 0]
    assert frame.std() < 0.1 * 0.4 / np.sqrt(2)  # 4.2% of the grating's std (unfiltered: 77%)
    sharp = _film(source, 1, 48, 48, 0.0, 0.0, 1.0)[0, ..., 0]  # at 1:1 the grating is kept
    assert sharp.std() > 0.9 * 0.4 / np.sqrt(2)


@pytest.mark.parametrize(
    ("size", "zoom", "theta"), [((512, 512), 2.0, 0.7), ((40, 60), 2.0, 0.3), ((300, 451), 1.5, 0.0)]
)
def test_footprint_stays_inside_the_photograph(size, zoom, theta):
    """No frame samples within the spline's support of the border (nothing mirrored or wrapped into view);
    a source too small for the zoom is filmed closer (smaller zoom)."""
    frames, h, w = 8, 32, 48
    t = np.arange(frames, dtype=np.float64)
    dx, dy, th = 1.5 * t, -0.7 * t, theta + 0.02 * t
    cx, cy, z = natural._place(size, (h, w), dx, dy, np.full(frames, zoom), th, np.random.default_rng(1))
    ys, xs = np.mgrid[0:h, 0:w]
    ys, xs = ys - (h - 1) / 2, xs - (w - 1) / 2
    for f in range(frames):
        c, s = np.cos(th[f]), np.sin(th[f])
        sx = cx[f] + z[f] * (c * xs - s * ys)
        sy = cy[f] + z[f] * (s * xs + c * ys)
        assert sx.min() >= 3 and sy.min() >= 3
        assert sx.max() <= size[1] - 1 - 3 and sy.max() <= size[0] - 1 - 3
    if size == (40, 60):
        assert z[0] < 0.5 * zoom  # shrunk to fit
    else:
        np.testing.assert_array_equal(z, zoom)


def test_texture_crop_shakes():
    """The hand-held crop moves every frame by a sub-pixel-to-few-pixel amount, not smoothly along a line."""
    v = synth_video(4, "texture-crop", 8, 64, 64)
    shifts = np.array([_estimate_shift(_luma(v[k]), _luma(v[k + 1])) for k in range(7)])
    steps = np.hypot(shifts[:, 0], shifts[:, 1])
    assert steps.min() > 0.05 and steps.max() < 6
    assert np.ptp(shifts, axis=0).max() > 0.3  # the velocity changes: a shake on top of the drift
