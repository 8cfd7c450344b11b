"""The LR cache: keys, atomic concurrent writes, hits in load_pair, corrupt entries rebuilt."""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
import pytest

from fedvsr.data.cache import STATS, cache_key, cache_root, cached_lr

# this module is imported again by the spawned children of the concurrency test: it imports numpy, pytest and
# fedvsr.data.cache (numpy only) at the top, and torch-importing modules inside the tests that need them


def _array(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (4, 8, 12, 3), dtype=np.uint8)


def _write_same_key(root: str, key: str, barrier, out: str) -> None:
    """Child process: wait for the other, then both build and store the same key."""
    import time

    from fedvsr.data.cache import STATS, cached_lr

    def build() -> np.ndarray:
        time.sleep(0.3)  # the other is past its first read while this one builds
        # each process builds another array, as libx264 may (it is not bit-reproducible across processes)
        return np.random.default_rng(os.getpid()).integers(0, 256, (6, 32, 40, 3), dtype=np.uint8)

    barrier.wait(timeout=60)
    arr = cached_lr(Path(root), key, build, (6, 32, 40, 3))
    np.save(out, np.asarray(arr))
    Path(out + ".stats").write_text(f"{STATS['misses']} {STATS['writes']} {STATS['waited']}")


def test_two_processes_needing_one_key_build_it_once_and_use_the_same_array(tmp_path):
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    outs = [str(tmp_path / f"out{i}.npy") for i in range(2)]
    procs = [ctx.Process(target=_write_same_key, args=(str(tmp_path / "lr"), "k" * 64, barrier, o)) for o in outs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    a, b = (np.load(o) for o in outs)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.load(tmp_path / "lr" / f"{'k' * 64}.npy"), a)
    # one built and wrote it, the other waited for it and read it
    assert sorted(Path(o + ".stats").read_text() for o in outs) == ["0 0 1", "1 1 0"]
    assert sorted(os.listdir(tmp_path / "lr")) == [f"{'k' * 64}.npy"]  # no temporary file left


def test_hit_miss_and_mmap(tmp_path):
    STATS.clear()
    calls = []

    def build() -> np.ndarray:
        calls.append(1)
        return _array()

    first = cached_lr(tmp_path, "a" * 64, build, (4, 8, 12, 3))
    second = cached_lr(tmp_path, "a" * 64, build, (4, 8, 12, 3))
    np.testing.assert_array_equal(first, second)
    assert len(calls) == 1 and dict(STATS) == {"misses": 1, "writes": 1, "hits": 1}
    assert isinstance(second.base, np.memmap) or isinstance(second.base.base, np.memmap)
    second[0, 0, 0] = 1  # copy-on-write: writable, and the entry on disk is untouched
    np.testing.assert_array_equal(np.load(tmp_path / f"{'a' * 64}.npy"), _array())
    np.testing.assert_array_equal(cached_lr(None, "a" * 64, lambda: _array(1)), _array(1))  # no cache: build


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "wrong shape", "wrong dtype"])
def test_corrupt_entry_is_deleted_and_rebuilt(tmp_path, damage):
    path = tmp_path / f"{'b' * 64}.npy"
    cached_lr(tmp_path, "b" * 64, _array, (4, 8, 12, 3))
    good = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"this is not an npy file" * 10)
    elif damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "wrong shape":
        np.save(path, _array()[:2])
    else:
        np.save(path, _array().astype(np.float32))
    STATS.clear()
    out = cached_lr(tmp_path, "b" * 64, _array, (4, 8, 12, 3))
    np.testing.assert_array_equal(out, _array())
    assert dict(STATS) == {"corrupt": 1, "misses": 1, "writes": 1}
    assert path.read_bytes() == good


def test_parameters_change_the_key(tmp_path):
    from fedvsr.data.video import write_frame_folder

    video = tmp_path / "v.mkv"
    video.write_bytes(b"x" * 100)
    base = cache_key(video, "h264", 4, {"sigma": 1.5, "crf": 25})
    assert cache_key(str(video), "h264", 4, {"crf": 25, "sigma": 1.5}) == base  # order and str/Path do not matter
    assert cache_key(video, "blur-h264", 4, {"sigma": 1.5, "crf": 25}) == base  # the alias shares entries
    others = [
        cache_key(video, "h264", 4, {"sigma": 1.5, "crf": 15}),
        cache_key(video, "h264", 4, {"sigma": 1.6, "crf": 25}),
        cache_key(video, "h264", 2, {"sigma": 1.5, "crf": 25}),
        cache_key(video, "blur", 4, {"sigma": 1.5}),
        cache_key(video, "h264", 4, {"sigma": 1.5, "crf": 25}, lr_source=video),
        cache_key(video, "vsrgan", 4, {"seed": 0, "video": "a"}),
        cache_key(video, "vsrgan", 4, {"seed": 1, "video": "a"}),
        cache_key(video, "vsrgan", 4, {"seed": 0, "video": "b"}),
    ]
    assert len({base, *others}) == 1 + len(others)
    os.utime(video, ns=(1, 1_000_000_123))  # an edited video: new mtime
    assert cache_key(video, "h264", 4, {"sigma": 1.5, "crf": 25}) != base
    mtime = cache_key(video, "h264", 4, {"sigma": 1.5, "crf": 25})
    video.write_bytes(b"y" * 101)
    os.utime(video, ns=(1, 1_000_000_123))  # same mtime, other size
    assert cache_key(video, "h264", 4, {"sigma": 1.5, "crf": 25}) != mtime
    (tmp_path / "frames").mkdir()
    write_frame_folder(tmp_path / "frames", _array())
    folder = cache_key(tmp_path / "frames", "bicubic", 4, {})
    write_frame_folder(tmp_path / "frames", _array(1)[:, :, :, :])  # same names, new contents
    os.utime(tmp_path / "frames" / "00000002.png", ns=(1, 5))
    assert cache_key(tmp_path / "frames", "bicubic", 4, {}) != folder


def test_cache_root_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDVSR_CACHE", str(tmp_path / "c"))
    assert cache_root("") == tmp_path / "c" / "lr"
    assert cache_root("none") is None and cache_root("off") is None
    assert cache_root(str(tmp_path / "mine")) == tmp_path / "mine"


@pytest.fixture
def video(tmp_path):
    from fedvsr.data.synthetic import synth_video
    from fedvsr.data.video import VideoEntry, write_video

    hr = synth_video(0, "stripes-pan", 3, 64, 64)
    write_video(tmp_path / "v.mkv", hr, codec="ffv1", pix_fmt="bgr0")
    return VideoEntry(str(tmp_path / "v.mkv"), "stripes-pan", "v")


def test_second_load_pair_hits_the_cache(tmp_path, video, monkeypatch):
    """The second load_pair of a video reads the stored LR clip: a hit, no new write, the file untouched,
    and the codec never called again."""
    import fedvsr.data.degrade as degrade
    from fedvsr.data.datasets import load_pair

    encodes = []
    real_write = degrade.write_video
    monkeypatch.setattr(degrade, "write_video", lambda *a, **k: (encodes.append(1), real_write(*a, **k)))
    root = tmp_path / "lr"
    STATS.clear()
    first = load_pair(video, "h264", 4, lr_cache=str(root), crf=30)
    files = list(root.iterdir())
    assert len(files) == 1 and len(encodes) == 1 and dict(STATS) == {"misses": 1, "writes": 1}
    stamp = files[0].stat().st_mtime_ns
    second = load_pair(video, "blur-h264", 4, lr_cache=str(root), crf=30)
    np.testing.assert_array_equal(second.lr, first.lr)
    np.testing.assert_array_equal(second.hr, first.hr)
    assert len(encodes) == 1 and dict(STATS) == {"misses": 1, "writes": 1, "hits": 1}
    assert list(root.iterdir()) == files and files[0].stat().st_mtime_ns == stamp
    load_pair(video, "h264", 4, lr_cache=str(root), crf=31)  # another CRF: another entry
    assert len(list(root.iterdir())) == 2 and len(encodes) == 2
    load_pair(video, "h264", 4, lr_cache="none", crf=30)  # no cache: encodes again, stores nothing
    assert len(encodes) == 3 and len(list(root.iterdir())) == 2


def test_load_pair_for_takes_the_data_seed_and_cache_from_the_config(tmp_path, video):
    from fedvsr.config import load_config
    from fedvsr.data.datasets import load_pair_for
    from fedvsr.data.degrade import degrade_video
    from fedvsr.data.video import VideoEntry

    overrides = [
        "data.degradation=vsrgan",
        "data.vsrgan_prob=1.0",
        "data.vsrgan_ops=noise,cutblur",
        f"data.lr_cache={tmp_path / 'lr'}",
    ]
    a = load_pair_for(load_config(None, overrides + ["data.seed=1"]), video)
    b = load_pair_for(load_config(None, overrides + ["data.seed=1", "data.lr_cache=none"]), video)
    c = load_pair_for(load_config(None, overrides + ["data.seed=2"]), video)
    np.testing.assert_array_equal(a.lr, b.lr)  # cached or not, the same (seed, video) gives the same clip
    assert not np.array_equal(a.lr, c.lr)  # another data seed, other draws
    other = VideoEntry(video.path, video.label, "w")  # same file, another video name
    assert not np.array_equal(load_pair_for(load_config(None, overrides + ["data.seed=1"]), other).lr, a.lr)
    entries = sorted(f.name for f in (tmp_path / "lr").iterdir())
    # three LR clips, and the file's decoded frames once (data.hr_cache_mb: shared by both video names)
    assert len(entries) == 4 and sum(e.endswith(".hr.npy") for e in entries) == 1
    expected = degrade_video(a.hr, "vsrgan", 4, seed=1, video="v", ops="noise,cutblur", prob=1.0)
    np.testing.assert_array_equal(a.lr, expected)


def test_premade_lr_twin_is_cached_only_with_a_later_stage(tmp_path, video):
    from fedvsr.data.datasets import load_pair
    from fedvsr.data.degrade import degrade_video
    from fedvsr.data.synthetic import synth_video
    from fedvsr.data.video import VideoEntry, write_frame_folder

    hr = synth_video(0, "stripes-pan", 3, 64, 64)
    twin = tmp_path / "lr_twin"
    write_frame_folder(twin, degrade_video(hr, "bicubic", 4))
    entry = VideoEntry(video.path, video.label, video.name, lr_path=str(twin))
    root = tmp_path / "lr"
    load_pair(entry, "bicubic", 4, lr_cache=str(root))
    assert not root.exists()  # read as it is
    pair = load_pair(entry, "vsrgan", 4, lr_cache=str(root), prob=1.0, ops="noise")
    assert len(list(root.iterdir())) == 1 and pair.lr.shape == (3, 16, 16, 3)


def test_decoded_hr_is_cached_when_small_enough(tmp_path, video, monkeypatch):
    """``hr_cache_mb``: the second load of a video reads its decoded frames back (PyAV is not called), the
    same bits; a video larger than the limit, or a limit of 0, is decoded each time and nothing is stored;
    an edited video gets a new entry; a corrupt entry is rebuilt."""
    import fedvsr.data.datasets as datasets
    from fedvsr.data.cache import decoded_key

    decodes = []
    real = datasets.read_video
    monkeypatch.setattr(datasets, "read_video", lambda p: (decodes.append(p), real(p))[1])
    root = tmp_path / "c"
    STATS.clear()
    first = datasets.load_pair(video, "bicubic", 4, lr_cache=str(root), hr_cache_mb=1.0)
    entry = root / f"{decoded_key(video.path)}.hr.npy"
    assert len(decodes) == 1 and entry.is_file() and STATS["hr_misses"] == 1
    second = datasets.load_pair(video, "bicubic", 4, lr_cache=str(root), hr_cache_mb=1.0)
    assert len(decodes) == 1 and STATS["hr_hits"] == 1
    np.testing.assert_array_equal(second.hr, first.hr)
    np.testing.assert_array_equal(second.lr, first.lr)
    nbytes = first.hr.nbytes  # 3 frames of 64 x 64 x 3, not cropped at scale 4
    assert np.load(entry).shape == (3, 64, 64, 3)
    # over the limit, or 0: decoded every time, nothing written
    other = tmp_path / "d"
    datasets.load_pair(video, "bicubic", 4, lr_cache=str(other), hr_cache_mb=(nbytes - 1) / 2**20)
    datasets.load_pair(video, "bicubic", 4, lr_cache=str(other), hr_cache_mb=0)
    assert len(decodes) == 3 and not list(other.glob("*.hr.npy"))
    datasets.load_pair(video, "bicubic", 4, lr_cache=str(other), hr_cache_mb=nbytes / 2**20)  # exactly: kept
    assert len(list(other.glob("*.hr.npy"))) == 1
    # a corrupt entry is deleted and rebuilt
    entry.write_bytes(b"not an array")
    again = datasets.load_pair(video, "bicubic", 4, lr_cache=str(root), hr_cache_mb=1.0)
    np.testing.assert_array_equal(again.hr, first.hr)
    assert len(decodes) == 5 and STATS["corrupt"] == 1 and np.load(entry).shape == (3, 64, 64, 3)
    # an edited video (new mtime) gets a new key
    os.utime(video.path, ns=(1, 1))
    assert decoded_key(video.path) != entry.name.split(".")[0]
