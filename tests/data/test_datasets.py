"""(LR, HR) pairs, random training clips and evaluation clips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedvsr.data.datasets import TrainClips, VideoPair, collate, eval_clips, load_pair, resolve_augment
from fedvsr.data.degrade import bicubic_downsample, degrade_video
from fedvsr.data.synthetic import CLASSES, synth_video
from fedvsr.data.video import VideoEntry, write_video


def _pair(seed: int, label: str, frames: int = 8, h: int = 48, w: int = 64, scale: int = 4) -> VideoPair:
    hr = synth_video(seed, label, frames, h, w)
    return VideoPair(hr=hr, lr=degrade_video(hr, "bicubic", scale), label=label, name=f"{label}_{seed}")


@pytest.fixture(scope="module")
def pairs() -> list[VideoPair]:
    return [_pair(i, CLASSES[i % len(CLASSES)]) for i in range(3)]


def test_load_pair_crops_to_scale(tmp_path):
    hr = synth_video(0, "waves-rotate", 3, 38, 54)
    write_video(tmp_path / "v.mp4", hr, crf=0, pix_fmt="yuv444p")
    pair = load_pair(VideoEntry(str(tmp_path / "v.mp4"), "waves-rotate", "v"), "bicubic", 4)
    assert pair.hr.shape == (3, 36, 52, 3)
    assert pair.lr.shape == (3, 9, 13, 3)
    assert (pair.label, pair.name, pair.scale) == ("waves-rotate", "v", 4)
    assert np.abs(pair.hr.astype(int) - hr[:, :36, :52]).max() <= 2  # crop keeps the top-left corner
    np.testing.assert_array_equal(pair.lr, degrade_video(pair.hr, "bicubic", 4))


def test_load_pair_passes_degradation_params(tmp_path):
    hr = synth_video(0, "stripes-pan", 2, 32, 32)
    write_video(tmp_path / "v.mp4", hr, crf=0, pix_fmt="yuv444p")
    entry = VideoEntry(str(tmp_path / "v.mp4"), "stripes-pan", "v")
    assert load_pair(entry, "blur-h264", 2, crf=20).lr.shape == (2, 16, 16, 3)
    with pytest.raises(ValueError, match="no parameter qp"):
        load_pair(entry, "bicubic", 2, qp=3)


def test_train_clips_shapes_and_length(pairs):
    ds = TrainClips(pairs, clip_frames=5, patch=8, samples_per_video=4, seed=0)
    assert len(ds) == 12
    lr, hr = ds[7]
    assert lr.shape == (5, 3, 8, 8) and hr.shape == (5, 3, 32, 32)
    assert lr.dtype == hr.dtype == torch.float32
    assert 0 <= float(lr.min()) and float(hr.max()) <= 1
    with pytest.raises(IndexError):
        ds[12]


def _as_uint8(frame: torch.Tensor) -> np.ndarray:
    """``(3, h, w)`` float in [0, 1] -> ``(h, w, 3)`` uint8."""
    return (frame.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def _find(patch: np.ndarray, frames: np.ndarray) -> set[tuple[int, bool, bool]]:
    """Every (frame index, horizontal flip, vertical flip) under which ``patch`` is a crop of ``frames``."""
    found = set()
    ph, pw, _ = patch.shape
    for hflip in (False, True):
        for vflip in (False, True):
            f = frames[:, :, ::-1] if hflip else frames
            f = f[:, ::-1] if vflip else f
            windows = np.lib.stride_tricks.sliding_window_view(f, (ph, pw), axis=(1, 2))  # (T, y, x, 3, ph, pw)
            hits = (windows == patch.transpose(2, 0, 1)).all(axis=(-3, -2, -1)).any(axis=(1, 2))
            found |= {(int(t), hflip, vflip) for t in np.flatnonzero(hits)}
    return found


def test_train_clips_depend_only_on_seed_and_index(pairs):
    a = TrainClips(pairs, 5, 8, 4, seed=3)
    longer = TrainClips(pairs + [_pair(7, "waves-rotate")], 5, 8, 4, seed=3)
    for i in (0, 5, 11):
        torch.testing.assert_close(a[i], longer[i], rtol=0, atol=0)
        torch.testing.assert_close(a[i], a[i], rtol=0, atol=0)
    c = TrainClips(pairs, 5, 8, 4, seed=4)
    assert any(not torch.equal(a[i][0], c[i][0]) for i in range(4))
    assert not torch.equal(a[0][0], a[1][0])  # two samples of one video differ


def test_train_clip_comes_from_its_video(pairs):
    """Item i is a crop of video i // samples_per_video (exhaustive search over crops and flips)."""
    ds = TrainClips(pairs, 2, 8, samples_per_video=2, seed=1)
    for i in range(len(ds)):
        patch = _as_uint8(ds[i][0][0])
        assert [v for v, p in enumerate(pairs) if _find(patch, p.lr)] == [i // 2]


def test_lr_and_hr_stay_aligned_through_flips(pairs):
    """With the bicubic degradation, the LR clip is bicubic_downsample of the HR clip (up to uint8
    rounding and the crop border) whatever flips and reversal were drawn."""
    ds = TrainClips(pairs, 3, 12, samples_per_video=6, seed=5)
    flips = set()
    for i in range(len(ds)):
        lr, hr = ds[i]
        err = (bicubic_downsample(hr, 4) - lr).abs()[..., 2:-2, 2:-2]  # the border lacks the HR context
        assert float(err.max()) <= 1.01 / 255
        flips |= {f[1:] for f in _find(_as_uint8(lr[0]), pairs[i // 6].lr)}
    # a flip applied to LR but not HR would break the check above: all four flip states were drawn
    assert flips == {(False, False), (False, True), (True, False), (True, True)}


def test_temporal_reversal_is_applied():
    pair = _pair(0, "stripes-pan", frames=6, h=48, w=64)
    ds = TrainClips([pair], clip_frames=6, patch=12, samples_per_video=12, seed=0)
    orders = set()
    for i in range(len(ds)):
        lr, hr = ds[i]
        first = {f[0] for f in _find(_as_uint8(lr[0]), pair.lr)}
        last = {f[0] for f in _find(_as_uint8(lr[-1]), pair.lr)}
        assert (first, last) in [({0}, {5}), ({5}, {0})]  # the whole clip, forwards or backwards
        orders.add(min(first))
    assert orders == {0, 5}


def test_train_clips_errors(pairs):
    with pytest.raises(ValueError, match=r"video 'stripes-pan_0' has 8 frames, fewer than clip_frames=9"):
        TrainClips(pairs, 9, 8, 1, 0)
    with pytest.raises(ValueError, match=r"video 'stripes-pan_0': LR frames 12x16 are smaller than the patch 13"):
        TrainClips(pairs, 3, 13, 1, 0)
    with pytest.raises(ValueError, match="no videos"):
        TrainClips([], 3, 8, 1, 0)
    mixed = [pairs[0], _pair(9, "waves-rotate", scale=2)]
    with pytest.raises(ValueError, match="not LR shape"):
        TrainClips(mixed, 3, 8, 1, 0)


def test_eval_clips(pairs):
    clips = eval_clips(pairs, clip_frames=3, clips=5)
    assert len(clips) == 5
    for lr, hr in clips:
        assert lr.shape == (3, 3, 12, 16) and hr.shape == (3, 3, 48, 64)
        assert lr.dtype == torch.float32

    # video 0 is used twice (k = 0, 3), video 2 once (k = 2): windows of 8 frames -> starts 1, 3 and 2
    def start(k: int) -> int:
        v = k % 3
        frames = [torch.from_numpy(pairs[v].lr[t]).permute(2, 0, 1).float() / 255 for t in range(8)]
        return next(t for t in range(8) if torch.equal(frames[t], clips[k][0][0]))

    assert [start(k) for k in range(5)] == [1, 1, 2, 3, 3]
    torch.testing.assert_close(clips[2][1][0], torch.from_numpy(pairs[2].hr[2]).permute(2, 0, 1).float() / 255)
    assert eval_clips(pairs, 3, 0) == []
    with pytest.raises(ValueError, match="fewer than clip_frames=9"):
        eval_clips(pairs, 9, 1)


def test_eval_clips_single_use_is_centred():
    pair = _pair(0, "checker-zoom", frames=11, h=16, w=16)
    ((lr, hr),) = eval_clips([pair], clip_frames=5, clips=1)
    np.testing.assert_array_equal((hr.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8), pair.hr[3:8])


def test_collate(pairs):
    ds = TrainClips(pairs, 4, 8, 2, 0)
    lr, hr = collate([ds[0], ds[3], ds[5]])
    assert lr.shape == (3, 4, 3, 8, 8) and hr.shape == (3, 4, 3, 32, 32)
    torch.testing.assert_close(lr[1], ds[3][0])
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate)
    assert [b[0].shape[0] for b in loader] == [2, 2, 2]
    with pytest.raises(ValueError, match="no items"):
        collate([])


def _orientations(patch: np.ndarray, frames: np.ndarray) -> set[tuple[bool, bool, bool]]:
    """Every (transpose, hflip, vflip) under which ``patch`` is a crop of ``frames``."""
    found = set()
    for transpose in (False, True):
        p = patch.transpose(1, 0, 2) if transpose else patch  # undo the transpose, then look for flips
        found |= {(transpose, h, v) for _, h, v in _find(np.ascontiguousarray(p), frames)}
    return found


def test_flip_rot_draws_all_eight_orientations_and_keeps_lr_and_hr_aligned():
    """flip-rot: a transpose with probability 1/2 on top of the two flips: the 8 rotations and
    reflections of the square crop; the LR clip stays bicubic_downsample of the HR clip."""
    pair = _pair(1, "checker-zoom", frames=4, h=64, w=64)
    rot = TrainClips([pair], 3, 12, samples_per_video=64, seed=3, augment="flip-rot")
    flip = TrainClips([pair], 3, 12, samples_per_video=64, seed=3, augment="flip")
    seen, transposed = set(), 0
    for i in range(len(rot)):
        lr, hr = rot[i]
        err = (bicubic_downsample(hr, 4) - lr).abs()[..., 2:-2, 2:-2]
        assert float(err.max()) <= 1.01 / 255
        found = _orientations(_as_uint8(lr[0]), pair.lr)
        assert len(found) == 1  # the checkerboard crop is not symmetric: one orientation explains it
        seen |= found
        lr_f, hr_f = flip[i]
        same = torch.equal(lr, lr_f) and torch.equal(hr, hr_f)
        transposed += not same
        if not same:  # the same crop and flips as under 'flip', transposed
            assert torch.equal(lr, lr_f.transpose(-1, -2)) and torch.equal(hr, hr_f.transpose(-1, -2))
    assert len(seen) == 8
    assert 16 < transposed < 48  # about half of 64


def test_augment_none_and_auto():
    pair = _pair(2, "checker-zoom", frames=4, h=64, w=64)
    ds = TrainClips([pair], 3, 12, samples_per_video=16, seed=0, augment="none")
    for i in range(len(ds)):
        assert {f[1:] for f in _find(_as_uint8(ds[i][0][0]), pair.lr)} == {(False, False)}
        # the window runs forwards
        first, second = (min(f[0] for f in _find(_as_uint8(ds[i][0][k]), pair.lr)) for k in (0, 1))
        assert second == first + 1

    class Fixed:
        rotation_safe = False

    assert resolve_augment("auto", Fixed) == "flip"
    assert resolve_augment("auto", VideoPair) == "flip-rot"  # no attribute: rotation-safe
    assert resolve_augment("none", Fixed) == "none"
    with pytest.raises(ValueError, match="unknown augmentation 'mirror'"):
        TrainClips([pair], 3, 12, samples_per_video=1, seed=0, augment="mirror")


def test_compression_strength_keys_reach_the_degradation():
    from fedvsr.config import load_config
    from fedvsr.data.sources import degradation_params

    assert degradation_params(load_config(None, ["data.degradation=hevc", "data.qp=37"]).data) == {"qp": 37}
    assert degradation_params(load_config(None, ["data.degradation=blur-h264", "data.crf=15"]).data) == {
        "sigma": 1.5,
        "crf": 15,
    }
    assert degradation_params(load_config(None, ["data.crf=15"]).data) == {}  # bicubic has no strength
    hr = synth_video(0, "checker-zoom", 3, 64, 64)
    strong, weak = (degrade_video(hr, "blur-h264", 4, crf=c) for c in (45, 15))
    clean = degrade_video(hr, "blur-h264", 4, crf=0)
    assert np.abs(strong.astype(int) - clean).mean() > np.abs(weak.astype(int) - clean).mean()
