"""Clip segments as client data (data.segment_frames): counts and frame ranges, whole held-out videos,
labels for by-class partitions, the loaded frames of a segment, the config checks, and `fedvsr simulate` on
a folder of three long mp4 files cut into segments for 24 clients."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from fedvsr.config import ConfigError, load_config
from fedvsr.data.datasets import load_pair
from fedvsr.data.sources import count_frames, experiment_data, segment_videos
from fedvsr.data.synthetic import PROCEDURAL_CLASSES, synth_video
from fedvsr.data.video import VideoEntry, VideoError, write_frame_folder, write_video
from fedvsr.fl.partition import partition_videos


def _entry(name: str, label: str = "a") -> VideoEntry:
    return VideoEntry(f"/videos/{name}.mp4", label, name)


def test_segments_cover_each_video_in_order_and_drop_the_remainder():
    entries = [_entry("long", "x"), _entry("exact", "y"), _entry("short", "z")]
    segments, short = segment_videos(entries, 8, frames=[21, 8, 7])
    # 21 // 8 = 2 segments (frames 16..20 dropped), 8 // 8 = 1, 7 < 8: none
    assert [(s.name, s.frame_start, s.frame_stop) for s in segments] == [
        ("long[0:8]", 0, 8),
        ("long[8:16]", 8, 16),
        ("exact[0:8]", 0, 8),
    ]
    assert [s.label for s in segments] == ["x", "x", "y"]
    assert [s.path for s in segments] == ["/videos/long.mp4"] * 2 + ["/videos/exact.mp4"]
    assert short == [("/videos/short.mp4", "7 frames, fewer than data.segment_frames = 8: no segment")]
    with pytest.raises(ValueError, match="segment_frames must be at least 1, got 0"):
        segment_videos(entries, 0, frames=[21, 8, 7])


def test_count_frames_of_files_and_frame_folders(tmp_path):
    frames = synth_video(0, "waves-rotate", 11, 32, 32)
    write_video(tmp_path / "v.mp4", frames)  # libx264 with B-frames: packets are counted, not decoded
    write_frame_folder(tmp_path / "f", frames[:5])
    assert count_frames(tmp_path / "v.mp4") == 11
    assert count_frames(tmp_path / "f") == 5
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    with pytest.raises(VideoError, match="bad.mp4: PyAV cannot read it"):
        count_frames(tmp_path / "bad.mp4")


def _synthetic_cfg(tmp_path, *extra: str):
    return load_config(
        None,
        [
            f"data.root={tmp_path}",
            "data.videos=8",
            "data.frames=10",
            "data.height=32",
            "data.width=32",
            "data.patch=8",
            "eval.holdout=4",
            "fl.clients=4",
            "data.content=procedural",
            *extra,
        ],
    )


def test_held_out_videos_stay_whole_and_never_appear_among_segments(tmp_path):
    cfg = _synthetic_cfg(tmp_path, "data.segment_frames=4", "fl.clients=8")
    whole = experiment_data(_synthetic_cfg(tmp_path))
    data = experiment_data(cfg)
    # the same four videos (one per class) are held out as without segments, whole
    assert [data.videos[i] for i in data.held] == [whole.videos[i] for i in whole.held]
    assert all(data.videos[i].frame_stop == 0 for i in data.held)
    assert sorted(data.videos[i].label for i in data.held) == sorted(PROCEDURAL_CLASSES)
    # 4 client videos of 10 frames: 2 segments each ([0:4], [4:8]; frames 8, 9 dropped)
    segments = [data.videos[i] for i in data.pool]
    assert len(segments) == 8
    assert [(s.frame_start, s.frame_stop) for s in segments] == [(0, 4), (4, 8)] * 4
    held_paths = {data.videos[i].path for i in data.held}
    assert not held_paths & {s.path for s in segments}
    assert {s.path for s in segments} == {whole.videos[i].path for i in whole.pool}
    # labels carry over, so by-class gives every client segments of one class (4 classes, 2 clients each)
    labels = [s.label for s in segments]
    assert labels == [whole.videos[i].label for i in whole.pool for _ in range(2)]
    parts = partition_videos(labels, 8, "by-class", 0)
    assert all(len({labels[j] for j in part}) == 1 for part in parts)
    assert sorted(j for part in parts for j in part) == list(range(8))


def test_too_few_segments_for_the_clients_on_a_folder(tmp_path):
    for k in range(3):
        write_video(tmp_path / f"v{k}.mp4", synth_video(k, "stripes-pan", 9, 32, 32))
    cfg = load_config(
        None,
        [
            "data.source=folder",
            f"data.root={tmp_path}",
            "eval.holdout=1",
            "data.segment_frames=4",
            "fl.clients=5",
            "data.patch=8",
        ],
    )
    with pytest.raises(
        ValueError,
        match=r"data.segment_frames = 4 cuts the 2 client videos into 4 segments, "
        r"fewer than fl.clients = 5; allowed: fl.clients <= 4",
    ):
        experiment_data(cfg)


@pytest.mark.parametrize("degradation", ["bicubic", "blur-h264"])
def test_a_segment_loads_the_frames_of_the_whole_degraded_video(tmp_path, degradation):
    write_video(tmp_path / "v.mkv", synth_video(3, "photo-pan", 12, 32, 32), codec="ffv1", pix_fmt="bgr0")
    whole = VideoEntry(str(tmp_path / "v.mkv"), "a", "v")
    segment = VideoEntry(whole.path, "a", "v[4:8]", frame_start=4, frame_stop=8)
    params = {"crf": 30} if degradation == "blur-h264" else {}
    full, part = load_pair(whole, degradation, 4, **params), load_pair(segment, degradation, 4, **params)
    assert part.hr.shape == (4, 32, 32, 3) and part.lr.shape == (4, 8, 8, 3)
    np.testing.assert_array_equal(part.hr, full.hr[4:8])
    np.testing.assert_array_equal(part.lr, full.lr[4:8])  # the codec saw the whole video, not the segment
    assert part.name == "v[4:8]" and part.hr.base is None  # a copy: the whole video is not kept alive
    with pytest.raises(VideoError, match=r"segment 'v\[8:16\]' needs frames 8 .. 15, the video has 12"):
        load_pair(VideoEntry(whole.path, "a", "v[8:16]", frame_start=8, frame_stop=16), "bicubic", 4)


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ["data.segment_frames=2"],
            "data.segment_frames = 2 is shorter than a training clip (3 frames: data.clip_frames, or the 3 input "
            "frames of efvsr/small); allowed: 0 (whole videos) or data.segment_frames >= 3",
        ),
        (
            ["data.segment_frames=17"],
            "data.segment_frames = 17 is longer than the videos (data.frames = 16); allowed: 0 (whole videos) or "
            "3 <= data.segment_frames <= 16",
        ),
        (
            ["data.segment_frames=8", "fl.clients=49", "fl.clients_per_round=4"],
            "data.segment_frames = 8 cuts the 24 client videos (data.videos = 28 less eval.holdout = 4) of 16 "
            "frames into 48 segments, fewer than fl.clients = 49; allowed: fl.clients <= 48",
        ),
        (["data.segment_frames=-1"], "data.segment_frames = -1 is not allowed"),
    ],
)
def test_config_checks(sets, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, sets)
    assert message in str(err.value)


def test_segments_allow_more_clients_than_videos():
    cfg = load_config(None, ["data.segment_frames=4", "fl.clients=96"])  # 24 videos x 4 segments
    assert cfg.fl.clients == 96 and cfg.data.segment_frames == 4


@pytest.mark.slow
def test_simulate_on_segments_of_three_long_mp4_files(tmp_path):
    """The issue's run: three mp4 files of 100 frames, segments of 8 frames, 24 clients."""
    root = tmp_path / "videos"
    for k, label in enumerate(["photo-pan", "stripes-pan", "texture-crop"]):
        write_video(root / f"clip{k}.mp4", synth_video(k, label, 100, 64, 64), crf=18)
    out = tmp_path / "run"
    sets = [
        "data.source=folder",
        f"data.root={root}",
        "data.segment_frames=8",
        "fl.clients=24",
        "fl.clients_per_round=2",
        "fl.rounds=1",
        "fl.batch_size=4",
        "model.preset=tiny",
        "data.patch=8",
        "data.samples_per_video=2",
        "eval.holdout=1",
        "eval.clips=2",
        "platform.workers=2",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "fedvsr.cli", "simulate", "--out", str(out), *[a for s in sets for a in ("--set", s)]],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # 1 video held out whole; 2 x (100 // 8 = 12) segments, one per client
    part = pq.read_table(out / "partition.parquet").to_pylist()
    assert len(part) == 24
    names = sorted(row["video"] for row in part)
    clip_names = sorted({n.split("[")[0] for n in names})
    assert len(clip_names) == 2
    assert names == sorted(f"{c}[{8 * k}:{8 * k + 8}]" for c in clip_names for k in range(12))
    assert len({row["client"] for row in part}) == 24
    rounds = pq.read_table(out / "rounds.parquet").to_pydict()
    assert rounds["round"] == [1] and all(np.isfinite(rounds["psnr"]))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_psnr"] == rounds["psnr"][-1]
