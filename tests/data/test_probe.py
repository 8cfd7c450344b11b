"""Bad data found when the data is scanned (fedvsr.data.probe): every video decoded once and the unusable ones left
out with their reason, the answers cached; on the broken folder of issue 23, as a folder and as Kinetics."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import fedvsr.data.probe as probe_module
from fedvsr.config import load_config
from fedvsr.data import cache
from fedvsr.data.datasets import load_pair_for
from fedvsr.data.layouts import scan_kinetics
from fedvsr.data.probe import VideoProbe, probe_video
from fedvsr.data.sources import DataError, experiment_data, left_out_counts
from fedvsr.data.video import VideoError, read_video, write_frame_folder, write_video
from tests.data.broken import BAD, GOOD, SMALL, broken_folder, write_good


def config(root: Path, source: str, lr_cache: Path, *extra: str):
    return load_config(
        None, [*SMALL, f"data.source={source}", f"data.root={root}", f"data.lr_cache={lr_cache}", *extra]
    )


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> Path:
    return broken_folder(tmp_path_factory.mktemp("broken")).resolve()


def relative(root: Path, paths) -> list[str]:
    return sorted(Path(p).relative_to(root).as_posix() for p in paths)


@pytest.mark.parametrize("source", ["folder", "kinetics"])
def test_the_broken_folder_keeps_every_readable_video_and_names_each_left_out(broken, source, tmp_path):
    data = experiment_data(config(broken, source, tmp_path / "cache"))
    assert relative(broken, [data.videos[i].path for i in data.pool + data.held]) == sorted(GOOD)
    assert (len(data.pool), len(data.held)) == (7, 2)  # eval.holdout = 2 of the 9 readable
    assert {Path(e.path).relative_to(broken).as_posix(): e.kind for e in data.left_out} == BAD  # no folder x.mp4
    assert data.considered == 13 and left_out_counts(data.left_out) == "unreadable: 3, too small: 1"
    why = {Path(e.path).name: e.reason for e in data.left_out}
    a, b = broken / "a", broken / "b"
    assert why["tiny.mp4"] == (
        f"{a / 'tiny.mp4'}: frames of 32x32 (WxH), smaller than a training patch "
        f"(data.patch = 16 at data.scale = 4): at least 64x64 needed"
    )
    assert why["zero.mp4"].startswith(f"{a / 'zero.mp4'}: empty file (0 bytes)")
    for name, folder in (("truncated.mp4", a), ("notes.mp4", b)):
        assert why[name].startswith(f"{folder / name}: PyAV cannot decode it (") and why[name].endswith(
            "the file is corrupt, truncated or not a video"
        )


def test_a_second_scan_reads_the_answers_and_decodes_nothing(broken, tmp_path, monkeypatch):
    decoded: list[str] = []
    original = probe_module.iter_video

    def counting(path):
        decoded.append(Path(path).name)
        return original(path)

    monkeypatch.setattr(probe_module, "iter_video", counting)
    cfg = config(broken, "folder", tmp_path / "cache")
    cache.STATS.clear()
    first = experiment_data(cfg)
    assert len(decoded) == 13 and cache.STATS["probe_misses"] == 13 and cache.STATS["probe_hits"] == 0
    decoded.clear()
    cache.STATS.clear()
    assert experiment_data(cfg) == first
    assert decoded == [] and cache.STATS["probe_hits"] == 13 and cache.STATS["probe_misses"] == 0
    os.utime(broken / "a" / "good0.mp4", ns=(1, 1))  # an edited file (new mtime) is probed again, alone
    assert experiment_data(cfg).left_out == first.left_out and decoded == ["good0.mp4"]


def test_the_probe_stores_the_decoded_frames_a_worker_reads_back(broken, tmp_path):
    cfg = config(broken, "folder", tmp_path / "cache")
    data = experiment_data(cfg)
    cache.STATS.clear()
    pair = load_pair_for(cfg, data.videos[0])
    assert cache.STATS["hr_hits"] == 1 and cache.STATS["hr_misses"] == 0  # no second decode
    np.testing.assert_array_equal(pair.hr, read_video(data.videos[0].path))


def test_nothing_usable_is_an_error_naming_every_file(tmp_path):
    root = broken_folder(tmp_path / "bad", good=False).resolve()
    with pytest.raises(DataError) as err:
        experiment_data(config(root, "folder", tmp_path / "cache"))
    message = str(err.value)
    assert message.startswith(f"data.root '{root}': none of the 4 videos can be used (unreadable: 3, too small: 1): ")
    assert all(str(root / name) in message for name in BAD)


def test_too_short_for_a_clip_and_lr_twins_that_do_not_match(tmp_path):
    root = tmp_path / "videos"
    for k in range(5):
        write_good(root / f"v{k}.mp4", k)
    write_good(root / "short.mp4", 5, frames=2)  # the tiny EFVSR takes 3 frames
    data = experiment_data(config(root, "folder", tmp_path / "cache", "fl.clients=2", "eval.holdout=1"))
    assert [(e.kind, e.reason) for e in data.left_out] == [
        ("too short", f"{root.resolve() / 'short.mp4'}: 2 frames, fewer than a clip (3 frames)")
    ]
    reds = tmp_path / "REDS"
    frames = np.zeros((3, 32, 32, 3), np.uint8)
    for clip in ("001", "002", "003"):
        write_frame_folder(reds / "train_sharp" / clip, frames)
        write_frame_folder(reds / "train_sharp_bicubic" / "X4" / clip, frames[:, :8, : 8 if clip != "002" else 16])
    data = experiment_data(
        config(
            reds, "reds", tmp_path / "cache", "data.patch=8", "fl.clients=1", "fl.clients_per_round=1", "eval.holdout=1"
        )
    )
    twin = reds.resolve() / "train_sharp_bicubic" / "X4" / "002"
    assert [(e.kind, e.reason) for e in data.left_out] == [
        (
            "mismatched LR",
            f"{twin}: the pre-made LR frames (3 frames of 16x8) do not match the HR video "
            f"{reds.resolve() / 'train_sharp' / '002'} (3 frames of 32x32, WxH after cropping to a "
            f"multiple of 4): expected 3 frames of 8x8 at scale 4",
        )
    ]


def test_kinetics_takes_no_folder_for_a_video(broken):
    scan = scan_kinetics(broken)
    assert relative(broken, [e.path for e in scan.train]) == sorted(
        [*GOOD, "a/tiny.mp4", "a/truncated.mp4", "b/notes.mp4"]
    )
    assert scan.skipped == [(str(broken / "a" / "zero.mp4"), "empty file (0 bytes)")]


@pytest.mark.parametrize("suffix", ["mp4", "mkv", "avi"])
def test_the_probe_agrees_with_what_training_decodes_on_truncated_files(tmp_path, suffix):
    """Each cut of each container: the probe finds an error exactly when read_video raises one, and otherwise the
    frames read_video returns."""
    path = tmp_path / f"clip.{suffix}"
    rng = np.random.default_rng(0)
    write_video(path, rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8), crf=23)
    data = path.read_bytes()
    outcomes = set()
    for cut in (0.1, 0.3, 0.5, 0.7, 0.9, 0.99):
        bad = tmp_path / f"cut{cut}.{suffix}"
        bad.write_bytes(data[: int(len(data) * cut)])
        found = VideoProbe(**probe_video(bad)[0])
        try:
            frames = read_video(bad)
        except VideoError as err:
            assert found == VideoProbe(error=str(err))
            outcomes.add("error")
        else:
            assert found == VideoProbe(*frames.shape[:3])
            outcomes.add("frames")
    assert "error" in outcomes  # every container has cuts that cannot be read
