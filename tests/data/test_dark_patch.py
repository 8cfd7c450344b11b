"""VSRGAN's dark-patch elimination: the rule (mean RGB below a threshold), the seeded redraw, the dataset hook."""

from __future__ import annotations

import numpy as np
import pytest

from fedvsr.config import ConfigError, load_config
from fedvsr.data.dark_patch import DARK_REDRAWS, bright_window, crop_mean
from fedvsr.data.datasets import TrainClips, VideoPair


def two_columns(left: int, right: int, frames: int = 1) -> np.ndarray:
    """A (frames, 1, 2, 3) uint8 video: LR column 0 holds ``left``, column 1 ``right`` (scale 1)."""
    hr = np.empty((frames, 1, 2, 3), dtype=np.uint8)
    hr[:, :, 0], hr[:, :, 1] = left, right
    return hr


def test_crop_mean_by_hand():
    hr = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    hr[0, :4, :4] = 255  # frame 0: top-left 4x4 white
    hr[1, :4, :4, 0] = 51  # frame 1: top-left red channel 51 = 0.2
    # window (0, 0, 0), 2 frames, LR patch 2 at scale 2 = the top-left 4x4 of both frames: (1 + 0.2/3) / 2
    assert crop_mean(hr, (0, 0, 0), 2, 2, 2) == pytest.approx((1 + 0.2 / 3) / 2, rel=1e-12)
    assert crop_mean(hr, (1, 0, 0), 1, 2, 2) == pytest.approx(0.2 / 3, rel=1e-12)
    assert crop_mean(hr, (0, 2, 2), 2, 2, 2) == 0.0


def test_a_bright_first_draw_is_kept_and_a_dark_one_is_redrawn():
    hr = two_columns(0, 255)  # window x = 0 has mean 0, x = 1 mean 1
    assert bright_window(hr, (0, 0, 1), 1, 1, 1, 0.5, [3, 7]) == (0, 0, 1)
    # the redraws k = 1, 2, ... of default_rng([3, 7, k]) stop at the first x = 1
    assert bright_window(hr, (0, 0, 0), 1, 1, 1, 0.5, [3, 7]) == (0, 0, 1)
    assert bright_window(hr, (0, 0, 0), 1, 1, 1, 0.0, [3, 7]) == (0, 0, 0)  # nothing is below 0
    assert bright_window(hr, (0, 0, 0), 1, 1, 1, 0.5, [3, 7], redraws=0) == (0, 0, 0)  # no redraw allowed


def test_when_every_candidate_is_dark_the_brightest_is_kept():
    hr = two_columns(10, 20)  # both below 0.5: x = 1 (20/255) is the brighter
    assert bright_window(hr, (0, 0, 0), 1, 1, 1, 0.5, [0, 0]) == (0, 0, 1)
    assert bright_window(hr, (0, 0, 1), 1, 1, 1, 0.5, [0, 0]) == (0, 0, 1)  # already the brightest
    assert DARK_REDRAWS == 10


def test_train_clips_drop_dark_crops_and_keep_bright_ones_unchanged():
    # 4 frames of 16x16 LR (x2): the top half black, the bottom half mid-grey; 4x4 LR crops
    hr = np.zeros((4, 32, 32, 3), dtype=np.uint8)
    hr[:, 16:] = 128
    pair = VideoPair(hr=hr, lr=hr[:, ::2, ::2].copy(), label="half", name="half")
    plain = TrainClips([pair], 2, 4, 64, seed=5, augment="none")
    kept = TrainClips([pair], 2, 4, 64, seed=5, augment="none", dark_threshold=0.25)
    plain_means = [float(plain[i][1].mean()) for i in range(len(plain))]
    kept_means = [float(kept[i][1].mean()) for i in range(len(kept))]
    assert min(plain_means) == 0.0 and sum(m < 0.25 for m in plain_means) > 10  # the filter has work to do
    assert min(kept_means) >= 0.25
    for i, m in enumerate(plain_means):
        if m >= 0.25:  # a bright first draw is the same crop with or without the filter
            assert np.array_equal(plain[i][1].numpy(), kept[i][1].numpy())
    again = TrainClips([pair], 2, 4, 64, seed=5, augment="none", dark_threshold=0.25)
    assert all(np.array_equal(kept[i][1].numpy(), again[i][1].numpy()) for i in range(len(kept)))  # seeded
    with pytest.raises(ValueError, match=r"dark_threshold must be in \[0, 1\] \(a mean RGB value\), got 1.5"):
        TrainClips([pair], 2, 4, 4, seed=0, dark_threshold=1.5)


def test_config_key():
    assert load_config().data.dark_threshold == 0.0
    assert (
        load_config(None, ["model.name=vsrgan", "model.preset=tiny", "data.dark_threshold=0.1"]).data.dark_threshold
        == 0.1
    )
    with pytest.raises(
        ConfigError,
        match=r"data.dark_threshold = 2 is not allowed; expected a number >= 0.0 and "
        r"<= 1.0",
    ):
        load_config(None, ["data.dark_threshold=2"])


@pytest.mark.slow
def test_the_key_reaches_the_workers(fedavg_run, synth_root, tmp_path):
    # the same tiny run with and without the filter: a threshold of 0.5 redraws the darker crops of the built-in
    # videos, so the clients train on other crops and report other losses; nothing else changes
    import pyarrow.parquet as pq

    from tests.conftest import run_tiny

    plain, _ = fedavg_run
    dark, summary = run_tiny(tmp_path, "dark", synth_root, "data.dark_threshold=0.5")
    losses = [pq.read_table(out / "clients.parquet").to_pydict()["loss"] for out in (plain, dark)]
    assert len(losses[0]) == len(losses[1]) and all(np.isfinite(losses[1])) and losses[0] != losses[1]
    assert np.isfinite(summary["final_psnr"])
