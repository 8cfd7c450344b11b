"""VSRGAN's dark-patch elimination (Cetin and Akca, arXiv:2505.10589, Sec. 1.4, the training steps).

The paper: "Sub-batches that are too dark (detected according to mean of their RGB values) are eliminated
since they will affect the model badly in long term training." Readings:

- Rule: a patch is dark when the mean of its RGB values, over every pixel of every frame of the clip (a
  sub-batch is "N many of sequences"), is below ``threshold`` (values in [0, 1]). Measured on the HR crop,
  the ground truth the model learns from: the LR clip may carry the degradation suite's brightness shifts.
- Threshold: the paper gives none. ``data.dark_threshold`` sets it (0, the default, keeps every crop).
- Unit: the paper cuts each cropped image into 16x16 or 32x32 sub-batches and drops the dark ones. Here the
  unit is the training crop (``data.patch``; the platform's default of 32 LR pixels is one sub-batch of
  VSRGAN's larger split), because a crop is what the data side draws; dropping sub-patches inside the
  model's patch-wise passes would leave holes in the reassembled whole that its whole-grid losses compare.
- Elimination: a dataset item cannot vanish (the local step count would then depend on the content), so a
  dark crop is replaced by another window drawn from its own seeded stream, ``default_rng([seed, item, k])``
  for the k-th redraw, up to :data:`DARK_REDRAWS` times; when every candidate is dark (a night video), the
  brightest one is kept. The first candidate is the item's usual draw, so a bright crop, and every crop at
  threshold 0, is the same window as without the filter.
- Not done: the paper's optional extension, "checking each side of the images for a fixed length of pixels"
  to catch sharp dark-to-normal transitions, gives no length or rule.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: redraws of a dark crop before the brightest candidate is kept
DARK_REDRAWS = 10

Window = tuple[int, int, int]  # (first frame, LR row, LR column) of a training crop


def crop_mean(hr: np.ndarray, window: Window, clip_frames: int, patch: int, scale: int) -> float:
    """Mean RGB value in [0, 1] of the HR crop of ``window``: frames ``t0 .. t0 + clip_frames - 1``, LR
    rows and columns ``y .. y + patch - 1`` and ``x .. x + patch - 1`` times ``scale``; ``hr``: (T, H, W, 3)
    uint8."""
    t0, y, x = window
    crop = hr[t0 : t0 + clip_frames, y * scale : (y + patch) * scale, x * scale : (x + patch) * scale]
    return float(crop.mean(dtype=np.float64)) / 255.0


def bright_window(
    hr: np.ndarray,
    first: Window,
    clip_frames: int,
    patch: int,
    scale: int,
    threshold: float,
    key: Sequence[int],
    redraws: int = DARK_REDRAWS,
) -> Window:
    """``first`` unless its HR crop is dark (mean RGB < ``threshold``); then the first of up to ``redraws``
    windows drawn from ``default_rng([*key, k])``, k = 1, 2, ..., that is not dark, else the brightest of all
    candidates (the earliest on a tie). Windows are uniform over the valid positions, as the first draw."""
    best, best_mean = first, crop_mean(hr, first, clip_frames, patch, scale)
    if best_mean >= threshold:
        return first
    t, h, w = hr.shape[0], hr.shape[1] // scale, hr.shape[2] // scale
    for k in range(1, redraws + 1):
        rng = np.random.default_rng([*key, k])
        window = (
            int(rng.integers(0, t - clip_frames + 1)),
            int(rng.integers(0, h - patch + 1)),
            int(rng.integers(0, w - patch + 1)),
        )
        mean = crop_mean(hr, window, clip_frames, patch, scale)
        if mean >= threshold:
            return window
        if mean > best_mean:
            best, best_mean = window, mean
    return best
