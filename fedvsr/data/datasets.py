"""(LR clip, HR clip) samples: whole degraded videos, random training crops, evaluation clips.

Clip tensors are float32 in [0, 1] laid out ``(t, 3, h, w)``; a batch from :func:`collate`
is ``(b, t, 3, h, w)``, the layout every fedvsr model takes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fedvsr.data.cache import cache_key, cache_root, cached_decoded, cached_lr
from fedvsr.data.dark_patch import bright_window
from fedvsr.data.degrade import (
    RANDOM_DEGRADATIONS,
    canonical,
    degradation_parameters,
    degradation_params,
    degrade_resampled,
    degrade_video,
    has_later_stage,
)
from fedvsr.data.video import VideoEntry, VideoError, read_video


@dataclass
class VideoPair:
    """A whole HR video and its degraded LR counterpart."""

    hr: np.ndarray  #: (T, H, W, 3) uint8
    lr: np.ndarray  #: (T, H//s, W//s, 3) uint8
    label: str
    name: str

    @property
    def scale(self) -> int:
        """The upscaling factor ``s`` (HR height over LR height)."""
        return self.hr.shape[1] // self.lr.shape[1]


def load_pair(
    entry: VideoEntry,
    degradation: str,
    scale: int,
    *,
    seed: int = 0,
    lr_cache: str = "",
    hr_cache_mb: float = 0.0,
    **params: object,
) -> VideoPair:
    """Decode ``entry`` and degrade it.

    The HR frames are cropped at the bottom and right so H and W are multiples of ``scale``;
    ``params`` go to the degradation (e.g. ``crf`` for ``h264``, ``qp`` for ``hevc``); a random degradation
    (``fca2-mix``, ``vsrgan``) also gets ``seed`` (the experiment seed) and ``video = entry.name``, so its
    draws depend on (seed, video) only, never on the worker. When the entry has pre-made LR frames
    (``entry.lr_path``: a dataset's ``BIx4`` / ``BDx4`` twin, see :data:`fedvsr.data.degrade.RESAMPLING`), they
    replace the resampling of the HR frames and only the degradation's later stages (the codec, the VSRGAN
    suite) are applied to them; they must hold as many frames as the HR video, each ``1/scale`` of the
    (cropped) HR size, or a :class:`VideoError` names both paths.

    The degraded LR clip is kept in the LR cache ``lr_cache`` (:mod:`fedvsr.data.cache`: ``''`` the default
    folder, ``'none'`` no cache, else a folder), so a video is degraded once per node, whatever the rounds,
    workers and trials; pre-made LR frames with nothing after their resampling are read as they are. The
    decoded HR frames are kept there too when they take at most ``hr_cache_mb`` MiB (``data.hr_cache_mb``;
    0, the default here, decodes every time).

    A segment (``entry.frame_stop``, ``data.segment_frames``) is cut from the pair of its whole video, so the
    codec and the random draws see the whole video, and its LR cache entry is shared by all its segments.
    """
    if entry.frame_stop:  # a segment: its frames of the whole video's pair (C, issue 12)
        whole = load_pair(
            entry.whole(), degradation, scale, seed=seed, lr_cache=lr_cache, hr_cache_mb=hr_cache_mb, **params
        )
        if entry.frame_stop > whole.hr.shape[0]:
            raise VideoError(
                f"{entry.path}: segment {entry.name!r} needs frames {entry.frame_start} .. "
                f"{entry.frame_stop - 1}, the video has {whole.hr.shape[0]}"
            )
        window = slice(entry.frame_start, entry.frame_stop)
        return VideoPair(hr=whole.hr[window].copy(), lr=whole.lr[window].copy(), label=entry.label, name=entry.name)
    hr = cached_decoded(cache_root(lr_cache), entry.path, lambda: read_video(entry.path), hr_cache_mb * 2**20)
    _, h, w, _ = hr.shape
    if h < scale or w < scale:
        raise ValueError(f"video {entry.name!r} ({h}x{w}) is smaller than the scale {scale}")
    hr = np.ascontiguousarray(hr[:, : h - h % scale, : w - w % scale])
    t, h, w, _ = hr.shape
    if canonical(degradation) in RANDOM_DEGRADATIONS:
        params = {**params, "seed": seed, "video": entry.name}
    if entry.lr_path is None:
        allowed = degradation_parameters(degradation)
        unknown = sorted(set(params) - set(allowed))
        if unknown:  # checked before the cache, whose key would otherwise hold the bad parameter
            raise ValueError(f"degradation {degradation!r} has no parameter {', '.join(unknown)}; it takes {allowed}")
        key = cache_key(entry.path, degradation, scale, params)
        lr = cached_lr(
            cache_root(lr_cache),
            key,
            lambda: degrade_video(hr, degradation, scale, **params),
            (t, h // scale, w // scale, 3),
        )
        return VideoPair(hr=hr, lr=lr, label=entry.label, name=entry.name)

    def premade() -> np.ndarray:
        lr = read_video(entry.lr_path)
        if lr.shape != (t, h // scale, w // scale, 3):
            raise VideoError(
                f"{entry.lr_path}: the pre-made LR frames ({lr.shape[0]} frames of {lr.shape[2]}x{lr.shape[1]}) "
                f"do not match the HR video {entry.path} ({t} frames of {w}x{h}, WxH after cropping to a "
                f"multiple of {scale}): expected {t} frames of {w // scale}x{h // scale} at scale {scale}"
            )
        return degrade_resampled(lr, degradation, **params)

    if not has_later_stage(degradation):
        return VideoPair(hr=hr, lr=premade(), label=entry.label, name=entry.name)
    key = cache_key(entry.path, degradation, scale, params, lr_source=entry.lr_path)
    lr = cached_lr(cache_root(lr_cache), key, premade, (t, h // scale, w // scale, 3))
    return VideoPair(hr=hr, lr=lr, label=entry.label, name=entry.name)


def load_pair_for(cfg, entry: VideoEntry) -> VideoPair:
    """:func:`load_pair` with everything taken from the experiment config: ``data.degradation``, its
    ``data.*`` parameters (:func:`fedvsr.data.degrade.degradation_params`), ``data.scale``, the data seed
    ``data.seed``, ``data.lr_cache`` and ``data.hr_cache_mb``. A video that carries its own degradation
    (``entry.degradation``: its client's device under ``fl.partition = by-degradation``) is degraded by that one
    and its parameters instead (the LR cache keys on them, so each device's LR video is an entry of its own)."""
    if entry.degradation:
        name, params = entry.degradation, dict(entry.degradation_params)
    else:
        name, params = cfg.data.degradation, degradation_params(cfg.data)
    return load_pair(
        entry,
        name,
        cfg.data.scale,
        seed=cfg.data.seed,
        lr_cache=cfg.data.lr_cache,
        hr_cache_mb=cfg.data.hr_cache_mb,
        **params,
    )


def _to_tensor(frames: np.ndarray) -> torch.Tensor:
    """``(t, h, w, 3)`` uint8 -> ``(t, 3, h, w)`` float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255)


def _check_pairs(pairs: Sequence[VideoPair], clip_frames: int) -> int:
    """Validate the pairs for clips of ``clip_frames``; return their common scale."""
    if not pairs:
        raise ValueError("no videos given")
    if clip_frames < 1:
        raise ValueError(f"clip_frames must be at least 1, got {clip_frames}")
    scale = pairs[0].scale
    for p in pairs:
        t, h, w, _ = p.lr.shape
        if p.hr.shape != (t, h * scale, w * scale, 3):
            raise ValueError(
                f"video {p.name!r}: HR shape {p.hr.shape} is not LR shape {p.lr.shape} times scale {scale}"
            )
        if t < clip_frames:
            raise ValueError(f"video {p.name!r} has {t} frames, fewer than clip_frames={clip_frames}")
    return scale


AUGMENTS = ("none", "flip", "flip-rot")


def resolve_augment(augment: str, model_cls: type) -> str:
    """``data.augment`` with ``auto`` resolved: flip-rot for a rotation-safe model, else flip."""
    if augment == "auto":
        return "flip-rot" if getattr(model_cls, "rotation_safe", True) else "flip"
    if augment not in AUGMENTS:
        raise ValueError(f"unknown augmentation {augment!r}; allowed: auto, {', '.join(AUGMENTS)}")
    return augment


class TrainClips(torch.utils.data.Dataset):
    """Random training crops: ``samples_per_video`` items per video.

    Item ``i`` comes from video ``i // samples_per_video``: a window of ``clip_frames``
    consecutive frames, an LR crop of ``patch x patch`` with the matching HR crop and, with
    ``augment``, random flips: ``flip`` = horizontal flip, vertical flip and temporal reversal, each
    with probability 1/2; ``flip-rot`` adds a transpose of H and W with probability 1/2, which with the
    two flips gives the 8 rotations and reflections of the square crop with equal probability (BasicVSR's
    and FCVSR's "random rotation and reflection"). All draws come from ``np.random.default_rng([seed, i])``,
    so an item depends only on ``(seed, i)`` (and the crop and flips of an item are the same under every
    ``augment`` setting). Items are ``(lr, hr)``: ``(clip_frames, 3, patch, patch)`` and
    ``(clip_frames, 3, s*patch, s*patch)``. ``dark_threshold > 0`` redraws a crop whose HR mean RGB is
    below it (VSRGAN's dark-patch elimination, :mod:`fedvsr.data.dark_patch`; seeded by ``(seed, i)`` too).
    """

    def __init__(
        self,
        pairs: list[VideoPair],
        clip_frames: int,
        patch: int,
        samples_per_video: int,
        seed: int,
        augment: str = "flip",
        dark_threshold: float = 0.0,
    ) -> None:
        if augment not in AUGMENTS:
            raise ValueError(f"unknown augmentation {augment!r}; allowed: {', '.join(AUGMENTS)}")
        if not 0.0 <= dark_threshold <= 1.0:
            raise ValueError(f"dark_threshold must be in [0, 1] (a mean RGB value), got {dark_threshold}")
        self.dark_threshold = dark_threshold
        self.augment = augment
        self.scale = _check_pairs(pairs, clip_frames)
        if patch < 1:
            raise ValueError(f"patch must be at least 1, got {patch}")
        if samples_per_video < 1:
            raise ValueError(f"samples_per_video must be at least 1, got {samples_per_video}")
        for p in pairs:
            _, h, w, _ = p.lr.shape
            if h < patch or w < patch:
                raise ValueError(f"video {p.name!r}: LR frames {h}x{w} are smaller than the patch {patch}")
        self.pairs = list(pairs)
        self.clip_frames = clip_frames
        self.patch = patch
        self.samples_per_video = samples_per_video
        self.seed = seed

    def __len__(self) -> int:
        return len(self.pairs) * self.samples_per_video

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(f"item {i} out of range for {len(self)} items")
        pair = self.pairs[i // self.samples_per_video]
        rng = np.random.default_rng([self.seed, i])
        t, h, w, _ = pair.lr.shape
        t0 = int(rng.integers(0, t - self.clip_frames + 1))
        y = int(rng.integers(0, h - self.patch + 1))
        x = int(rng.integers(0, w - self.patch + 1))
        hflip, vflip, reverse, transpose = rng.random(4) < 0.5
        s, p = self.scale, self.patch
        if self.dark_threshold > 0:
            t0, y, x = bright_window(pair.hr, (t0, y, x), self.clip_frames, p, s, self.dark_threshold, [self.seed, i])
        lr = pair.lr[t0 : t0 + self.clip_frames, y : y + p, x : x + p]
        hr = pair.hr[t0 : t0 + self.clip_frames, y * s : (y + p) * s, x * s : (x + p) * s]
        if self.augment != "none":
            if hflip:
                lr, hr = lr[:, :, ::-1], hr[:, :, ::-1]
            if vflip:
                lr, hr = lr[:, ::-1], hr[:, ::-1]
            if reverse:
                lr, hr = lr[::-1], hr[::-1]
            if transpose and self.augment == "flip-rot":
                lr, hr = lr.transpose(0, 2, 1, 3), hr.transpose(0, 2, 1, 3)
        return _to_tensor(lr), _to_tensor(hr)


def eval_clips(pairs: list[VideoPair], clip_frames: int, clips: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Whole-frame evaluation clips, no crop or flip.

    Clip ``k`` comes from video ``k % len(pairs)``. A video used ``m`` times gives windows
    starting at ``floor((T - clip_frames) * (2 r + 1) / (2 m))`` for ``r = 0 .. m-1``: one
    window is centred, several are spread evenly around the centre.

    Returns
    -------
    list of (lr, hr)
        ``(clip_frames, 3, h, w)`` and ``(clip_frames, 3, H, W)`` float32 in [0, 1].
    """
    if clips < 0:
        raise ValueError(f"clips must be non-negative, got {clips}")
    if clips == 0:
        return []
    _check_pairs(pairs[:clips], clip_frames)
    n = len(pairs)
    out = []
    for k in range(clips):
        v, r = k % n, k // n
        uses = (clips - v + n - 1) // n  # how many clips come from video v
        pair = pairs[v]
        start = (pair.lr.shape[0] - clip_frames) * (2 * r + 1) // (2 * uses)
        window = slice(start, start + clip_frames)
        out.append((_to_tensor(pair.lr[window]), _to_tensor(pair.hr[window])))
    return out


def collate(items: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``(lr, hr)`` items into ``(b, t, 3, h, w)`` and ``(b, t, 3, H, W)``."""
    if not items:
        raise ValueError("collate got no items")
    lrs, hrs = zip(*items, strict=True)
    return torch.stack(lrs), torch.stack(hrs)
