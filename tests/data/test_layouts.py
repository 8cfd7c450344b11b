"""Dataset layouts (REDS, Vid4, Vimeo-90K, Kinetics) on small trees written here: splits, labels, pre-made LR
frames, layout mismatches, corrupt files; and their wiring into the config and the experiment's videos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedvsr.config import ConfigError, load_config
from fedvsr.data.datasets import load_pair
from fedvsr.data.degrade import degrade_video
from fedvsr.data.layouts import (
    REDS4,
    LayoutError,
    detect_layout,
    scan_kinetics,
    scan_reds,
    scan_vid4,
    scan_vimeo90k,
)
from fedvsr.data.sources import experiment_data, experiment_videos, resolve_videos
from fedvsr.data.video import VideoError, write_frame_folder, write_video

HR, S = 32, 4


def frames(seed: int, t: int = 3, size: int = HR) -> np.ndarray:
    """Smooth random frames ``(t, size, size, 3)`` uint8 (smooth, so that a codec keeps them close)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(40, 215, (t, 4, 4, 3))
    return np.repeat(np.repeat(coarse, size // 4, axis=1), size // 4, axis=2).round().astype(np.uint8)


def write_clip(hr_dir: Path, lr_dir: Path | None, seed: int, t: int = 3, size: int = HR) -> None:
    write_frame_folder(hr_dir, frames(seed, t, size))
    if lr_dir is not None:  # different content from the HR on purpose: a pair built from it is recognisable
        write_frame_folder(lr_dir, frames(seed + 1000, t, size // S))


def reds_tree(
    root: Path, clips=("000", "003", "011", "015", "020", "021", "030"), lr: bool = True, t: int = 3, size: int = HR
) -> Path:
    for i, clip in enumerate(clips):
        write_clip(root / "train_sharp" / clip, root / "train_sharp_bicubic" / "X4" / clip if lr else None, i, t, size)
    return root


def vid4_tree(root: Path, clips=("calendar", "city")) -> Path:
    for i, clip in enumerate(clips):
        write_clip(root / "GT" / clip, root / "BIx4" / clip, i)
        write_frame_folder(root / "BDx4" / clip, frames(i + 2000, 3, HR // S))
    return root


def vimeo_tree(root: Path) -> Path:
    base = root / "vimeo_septuplet"
    keys = ["00001/0001", "00001/0002", "00002/0001", "00002/0007"]
    for i, key in enumerate(keys):
        write_clip(base / "sequences" / key, root / "vimeo_septuplet_matlabLRx4" / "sequences" / key, i, t=7)
    (base / "sep_trainlist.txt").write_text("00001/0001\n00002/0001\n00002/0007\n\n")
    (base / "sep_testlist.txt").write_text("00001/0002\n")
    return root


def touch_video(path: Path, data: bytes = b"\x00\x00\x00\x18ftypmp42 stand-in") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# ----------------------------------------------------------------------------- REDS


def test_reds_splits_reds4_out_of_training_and_uses_the_bicubic_twins(tmp_path):
    root = reds_tree(tmp_path / "REDS")
    scan = scan_reds(root, 4, "bicubic")
    assert [e.name for e in scan.test] == list(REDS4)
    assert [e.name for e in scan.train] == ["003", "021", "030"]
    assert {e.label for e in scan.train + scan.test} == {"all"}
    assert scan.lr_folder == str(root / "train_sharp_bicubic" / "X4")
    entry = scan.train[0]
    assert entry.path == str((root / "train_sharp" / "003").resolve())
    assert entry.lr_path == str((root / "train_sharp_bicubic" / "X4" / "003").resolve())
    pair = load_pair(entry, "bicubic", 4)
    assert np.array_equal(pair.lr, frames(1 + 1000, 3, HR // S))  # the pre-made frames, not a degraded HR
    assert np.array_equal(pair.hr, frames(1))


def test_reds_without_a_twin_for_the_degradation_degrades_the_hr(tmp_path):
    root = reds_tree(tmp_path / "REDS", clips=("000", "003"))
    assert all(e.lr_path is None for e in scan_reds(root, 4, "blur-h264").train)  # REDS has no BD frames
    assert all(e.lr_path is None for e in scan_reds(root, 2, "bicubic").train)  # no X2 folder
    no_lr = reds_tree(tmp_path / "REDS-hr", clips=("000", "003"), lr=False)
    scan = scan_reds(no_lr)
    assert scan.lr_folder is None and scan.train[0].lr_path is None
    assert load_pair(scan.train[0], "bicubic", 4).lr.shape == (3, HR // S, HR // S, 3)


def test_reds_skips_a_clip_whose_twin_disagrees_and_records_why(tmp_path):
    root = reds_tree(tmp_path / "REDS", clips=("000", "003", "021"))
    (root / "train_sharp_bicubic" / "X4" / "021" / "00000002.png").unlink()
    (root / "train_sharp" / "004").mkdir()  # an empty clip folder
    scan = scan_reds(root)
    assert [e.name for e in scan.train] == ["003"]
    reasons = dict(scan.skipped)
    assert "holds 2 frame images, the HR folder holds 3" in reasons[str(root / "train_sharp" / "021")]
    assert "no frame images" in reasons[str(root / "train_sharp" / "004")]


def test_reds_layout_mismatch_says_what_it_expected(tmp_path):
    (tmp_path / "x" / "frames").mkdir(parents=True)
    with pytest.raises(
        LayoutError,
        match=r"does not look like REDS: expected train_sharp/<clip>/<frame>.png.*"
        r"it holds frames",
    ):
        scan_reds(tmp_path / "x")
    (tmp_path / "y" / "train_sharp").mkdir(parents=True)
    with pytest.raises(LayoutError, match="train_sharp holds no clip folders"):
        scan_reds(tmp_path / "y")


def test_corrupt_or_truncated_frame_is_an_error_naming_the_file(tmp_path):
    root = reds_tree(tmp_path / "REDS", clips=("000", "003"))
    scan = scan_reds(root)  # the scan opens no file: the clip is still listed
    bad = root / "train_sharp" / "003" / "00000001.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    with pytest.raises(VideoError, match="00000001.png"):
        load_pair(scan.train[0], "bicubic", 4)
    good = root / "train_sharp" / "000" / "00000000.png"
    data = (root / "train_sharp" / "003" / "00000000.png").read_bytes()
    bad.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(VideoError, match="00000001.png"):
        load_pair(scan.train[0], "bicubic", 4)
    assert good.exists()


def test_twin_of_the_wrong_size_is_an_error_naming_both_files(tmp_path):
    root = reds_tree(tmp_path / "REDS", clips=("000", "003"))
    write_frame_folder(root / "train_sharp_bicubic" / "X4" / "003", frames(5, 3, HR // 2))  # x2 frames in X4
    entry = scan_reds(root).train[0]
    with pytest.raises(VideoError) as err:
        load_pair(entry, "bicubic", 4)
    msg = str(err.value)
    assert entry.lr_path in msg and entry.path in msg and "expected 3 frames of 8x8" in msg


# ----------------------------------------------------------------------------- Vid4


def test_vid4_twins_follow_the_degradation_and_labels_are_the_clips(tmp_path):
    root = vid4_tree(tmp_path / "Vid4")
    scan = scan_vid4(root, 4, "bicubic")
    assert not scan.has_test_split and scan.train == scan.test
    assert [(e.name, e.label) for e in scan.test] == [("calendar", "calendar"), ("city", "city")]
    assert all("/BIx4/" in e.lr_path for e in scan.test)
    assert np.array_equal(load_pair(scan.test[1], "bicubic", 4).lr, frames(1 + 1000, 3, HR // S))
    bd = scan_vid4(root, 4, "blur-h264")
    assert all("/BDx4/" in e.lr_path for e in bd.test)
    pair = load_pair(bd.test[0], "blur-h264", 4, crf=18)  # BD frames through H.264, not the HR blurred again
    to_twin = np.abs(pair.lr.astype(int) - frames(2000, 3, HR // S)).mean()
    to_hr = np.abs(pair.lr.astype(int) - degrade_video(pair.hr, "blur-h264", 4, crf=18)).mean()
    assert to_twin < 15 < to_hr
    with pytest.raises(LayoutError, match=r"does not look like Vid4: expected GT/<clip>/<frame>.png"):
        scan_vid4(tmp_path)


# ----------------------------------------------------------------------------- Vimeo-90K


def test_vimeo90k_splits_by_the_lists_with_group_labels_and_matlab_twins(tmp_path):
    root = vimeo_tree(tmp_path / "vimeo90k")
    for given in (root, root / "vimeo_septuplet"):
        scan = scan_vimeo90k(given, 4, "bicubic")
        assert [(e.name, e.label) for e in scan.train] == [
            ("00001/0001", "00001"),
            ("00002/0001", "00002"),
            ("00002/0007", "00002"),
        ]
        assert [e.name for e in scan.test] == ["00001/0002"]
        assert scan.lr_folder == str(root / "vimeo_septuplet_matlabLRx4" / "sequences")
    pair = load_pair(scan.test[0], "bicubic", 4)
    assert pair.hr.shape == (7, HR, HR, 3) and np.array_equal(pair.lr, frames(1 + 1000, 7, HR // S))


def test_vimeo90k_missing_sequence_is_skipped_and_missing_lists_are_named(tmp_path):
    root = vimeo_tree(tmp_path / "vimeo90k")
    (root / "vimeo_septuplet" / "sep_trainlist.txt").write_text("00001/0001\n00003/0001\n")
    scan = scan_vimeo90k(root)
    assert [e.name for e in scan.train] == ["00001/0001"]
    assert scan.skipped == [(str(root / "vimeo_septuplet" / "sequences" / "00003" / "0001"), "no such folder")]
    (root / "vimeo_septuplet" / "sep_testlist.txt").unlink()
    with pytest.raises(LayoutError, match=r"does not look like Vimeo-90K.*missing sep_testlist.txt"):
        scan_vimeo90k(root)


# ----------------------------------------------------------------------------- Kinetics


def test_kinetics_split_folders_class_labels_and_empty_files_skipped(tmp_path):
    root = tmp_path / "k400"
    for split, names in (("train", ["a", "b"]), ("val", ["c"])):
        for cls in ("abseiling", "air drumming"):
            for n in names:
                touch_video(root / split / cls / f"{n}_000001_000011.mp4")
    touch_video(root / "train" / "abseiling" / "empty.mp4", b"")
    (root / "train" / "abseiling" / "notes.txt").write_text("not a video")
    scan = scan_kinetics(root)
    assert scan.has_test_split
    assert [e.name for e in scan.train] == [
        "train/abseiling/a_000001_000011",
        "train/abseiling/b_000001_000011",
        "train/air drumming/a_000001_000011",
        "train/air drumming/b_000001_000011",
    ]
    assert [e.label for e in scan.test] == ["abseiling", "air drumming"]
    assert scan.skipped == [(str(root / "train" / "abseiling" / "empty.mp4"), "empty file (0 bytes)")]


def test_kinetics_class_folders_without_splits_and_flat_csv_download(tmp_path):
    legacy = tmp_path / "legacy"
    for cls in ("bowling", "yoga"):
        touch_video(legacy / cls / "v1.mp4")
    (legacy / "annotations").mkdir()
    scan = scan_kinetics(legacy)
    assert [e.label for e in scan.train] == ["bowling", "yoga"] and scan.test == [] and not scan.has_test_split
    flat = tmp_path / "cvdf"
    touch_video(flat / "train" / "abc_000010_000020.mp4")
    touch_video(flat / "train" / "zzz_000000_000010.mp4")
    with pytest.raises(LayoutError, match=r"no class folder around them and no .*annotations/train.csv"):
        scan_kinetics(flat)
    (flat / "annotations").mkdir()
    (flat / "annotations" / "train.csv").write_text(
        "label,youtube_id,time_start,time_end,split\nplaying drums,abc,10,20,train\n"
    )
    scan = scan_kinetics(flat)
    assert [(e.label, e.name) for e in scan.train] == [("playing drums", "train/playing drums/abc_000010_000020")]
    assert "not listed" in scan.skipped[0][1]
    with pytest.raises(LayoutError, match="does not look like Kinetics"):
        scan_kinetics(tmp_path / "legacy" / "annotations")


# ----------------------------------------------------------------------------- config and experiment wiring


def config(*overrides: str):
    return load_config(
        None, ["model.preset=tiny", "fl.clients=2", "fl.clients_per_round=1", f"data.patch={HR // S}", *overrides]
    )


def test_config_sources_and_split_validation(tmp_path):
    with pytest.raises(ConfigError, match=r"data.root = '' must name the dataset folder when data.source = 'reds'"):
        config("data.source=reds")
    with pytest.raises(
        ConfigError,
        match=r"eval.source = 'split' is not allowed with data.source = 'vid4': "
        r"Vid4 is a test set.*allowed: data.source one of 'reds'",
    ):
        config("data.source=vid4", f"data.root={tmp_path}", "eval.source=split")
    with pytest.raises(ConfigError, match=r"data.source = 'synthetic': it has no standard test split"):
        config("eval.source=split")
    with pytest.raises(ConfigError, match=r"data.source = 'div2k' is not allowed; expected one of .*'kinetics'"):
        config("data.source=div2k")
    assert config("data.source=vimeo90k", f"data.root={tmp_path}", "eval.source=split").eval.source == "split"


def test_experiment_videos_with_the_dataset_split_and_a_vid4_evaluation_root(tmp_path):
    root = reds_tree(tmp_path / "REDS")
    videos, pool, held = experiment_videos(config("data.source=reds", f"data.root={root}", "eval.source=split"))
    assert [videos[i].name for i in pool] == ["003", "021", "030"]
    assert [videos[i].name for i in held] == list(REDS4)
    videos, pool, held = experiment_videos(config("data.source=reds", f"data.root={root}", "eval.holdout=1"))
    assert len(videos) == 3 and not {v.name for v in videos} & set(REDS4)  # REDS4 never trains
    assert [v.name for v in resolve_videos(config("data.source=reds", f"data.root={root}"))] == ["003", "021", "030"]
    vid4 = vid4_tree(tmp_path / "Vid4")
    assert detect_layout(vid4) == "vid4" and detect_layout(root) == "reds" and detect_layout(tmp_path) is None
    videos, pool, held = experiment_videos(
        config("data.source=reds", f"data.root={root}", "eval.source=folder", f"eval.root={vid4}")
    )
    assert [videos[i].name for i in held] == ["calendar", "city"]  # GT clips only, not BIx4/ and BDx4/ as videos
    assert all(videos[i].lr_path.endswith(f"BIx4/{videos[i].name}") for i in held)
    with pytest.raises(LayoutError, match=r"eval.root '.*' does not look like REDS"):
        (tmp_path / "bad" / "train_sharp").mkdir(parents=True)
        (tmp_path / "bad" / "train_sharp" / "x.txt").write_text("")
        experiment_videos(
            config("data.source=reds", f"data.root={root}", "eval.source=folder", f"eval.root={tmp_path / 'bad'}")
        )


def test_kinetics_split_needs_a_val_folder_and_skips_are_reported(tmp_path):
    root = tmp_path / "kin"
    for i, cls in enumerate(("a", "b")):
        for n in range(2):
            write_video(root / cls / f"{n}.mp4", frames(2 * i + n), crf=23)
    touch_video(root / "a" / "broken.mp4", b"")
    with pytest.raises(LayoutError, match=r"has no val/ split folder"):
        experiment_data(config("data.source=kinetics", f"data.root={root}", "eval.source=split"))
    data = experiment_data(config("data.source=kinetics", f"data.root={root}", "eval.holdout=1"))
    assert len(data.videos) == 4 and len(data.held) == 1
    path = str(root / "a" / "broken.mp4")
    assert data.left_out == [(path, "unreadable", f"{path}: empty file (0 bytes)")]


@pytest.mark.slow
def test_reds_experiment_end_to_end_leaves_out_the_clip_with_a_corrupt_frame(ray_local, tmp_path):
    """Train on a tiny REDS tree with its pre-made LR frames, evaluate on REDS4; a clip with one corrupt training
    frame and a clip folder without frames are left out at the scan (recorded), the three other clips train."""
    import pyarrow.parquet as pq

    from fedvsr.platform.run import run_experiment

    root = reds_tree(tmp_path / "REDS", clips=("000", "011", "015", "020", "001", "002", "003", "004"), t=5, size=HR)
    victim = root / "train_sharp" / "002" / "00000003.png"
    victim.write_bytes(b"not a png" * 10)
    (root / "train_sharp" / "005").mkdir()  # a clip folder without frames: skipped at scan, recorded
    overrides = [
        "model.preset=tiny",
        "fl.rounds=1",
        "fl.clients=3",
        "fl.clients_per_round=3",
        "fl.batch_size=4",
        "data.source=reds",
        f"data.root={root}",
        "data.patch=8",
        "data.samples_per_video=2",
        "eval.source=split",
        "eval.clips=2",
        "platform.workers=2",
    ]
    summary = run_experiment(load_config(None, overrides), tmp_path / "out")
    clients = pq.read_table(tmp_path / "out" / "clients.parquet").to_pydict()
    assert clients["status"] == ["ok"] * 3 and np.isfinite(summary["final_psnr"])
    partition = pq.read_table(tmp_path / "out" / "partition.parquet").to_pydict()
    assert sorted(partition["video"]) == ["001", "003", "004"]
    events = [json.loads(line) for line in (tmp_path / "out" / "events.jsonl").read_text().splitlines()]
    assert [(e["kind"], Path(e["path"]).name, e["problem"]) for e in events] == [
        ("video_skipped", "005", "unreadable"),
        ("video_skipped", "002", "unreadable"),
    ]
    assert events[1]["message"].startswith(f"{victim}: PyAV cannot decode it")
