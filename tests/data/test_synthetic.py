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

from fedvsr.data.synthetic import (
    CLASSES,
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
    assert len(CLASSES) >= 4
    assert len(set(CLASSES)) == len(CLASSES)


@pytest.mark.parametrize("label", CLASSES)
def test_deterministic_and_distinct(label):
    a = synth_video(5, label, 4, 24, 40)
    assert a.shape == (4, 24, 40, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, synth_video(5, label, 4, 24, 40))
    assert _mad(a, synth_video(6, label, 4, 24, 40)) > 10  # another seed, another scene
    other = CLASSES[(CLASSES.index(label) + 1) % len(CLASSES)]
    assert _mad(a, synth_video(5, other, 4, 24, 40)) > 10
    assert a.std() > 15  # not a flat image


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
    # consecutive frames are far closer to each other than to another video of the same class
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
    assert [e.label for e in entries] == [CLASSES[i % len(CLASSES)] for i in range(6)]
    assert [e.name for e in entries] == [f"{CLASSES[i % len(CLASSES)]}_{i:04d}" for i in range(6)]
    for e in entries:
        assert Path(e.path).is_absolute()
        assert Path(e.path) == root.resolve() / e.label / f"{e.name}.mkv"
    assert load_manifest(root) == entries
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["params"]["videos"] == 6 and manifest["params"]["codec"] == "ffv1"
    assert manifest["entries"][1]["path"] == "checker-zoom/checker-zoom_0001.mkv"  # relative: root can move

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
        frames = synth_video(video_seed(0, k), CLASSES[k % len(CLASSES)], 5, 64, 64)
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
