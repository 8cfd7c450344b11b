"""Which videos of a dataset can be used, found when it is scanned: each file decoded once, the answer cached.

A video that cannot be decoded, or that is too short for a clip or too small for a training patch, fails the
client holding it in every round it is sampled; the scan finds it first, leaves it out and says why
(:class:`LeftOut`). :func:`probe_video` decodes every frame of a video file or frame folder, one at a time
(:func:`~fedvsr.data.video.iter_video`, the checks training meets in :func:`~fedvsr.data.video.read_video`):
on truncated MP4, Matroska and AVI files a cheaper check (demuxing every packet, decoding the first and the
last frames) disagreed with what training reads in both directions (``benchmarks/probe_cost.py``). The answer
-- frame count, height and width, or the error -- is kept in the LR cache folder keyed by the file's path, size
and mtime (:func:`~fedvsr.data.cache.cached_probe`), so a dataset is decoded once per node and a second scan
reads the answers; a video small enough for the decoded-HR cache (``data.hr_cache_mb``) is stored there on the
way, so the worker that trains on it reads it back instead of decoding it again.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from fedvsr.data.cache import cached_decoded, cached_probe
from fedvsr.data.video import VideoEntry, VideoError, iter_video

log = logging.getLogger(__name__)

#: why a video is left out (:attr:`LeftOut.kind`)
UNREADABLE, TOO_SHORT, TOO_SMALL, MISMATCHED_LR, NOT_LISTED = (
    "unreadable",
    "too short",
    "too small",
    "mismatched LR",
    "not listed",
)

#: seconds of probing before the first progress line is logged, and between two lines
PROGRESS_AFTER, PROGRESS_EVERY = 5.0, 30.0


class LeftOut(NamedTuple):
    """A video a scan left out: its path, the kind of problem (:data:`UNREADABLE`, ...) and the reason, which
    names the file."""

    path: str
    kind: str
    reason: str


@dataclass(frozen=True)
class VideoProbe:
    """What decoding a video found: its frame count and size, or why it cannot be read (``error``)."""

    frames: int = 0
    height: int = 0
    width: int = 0
    error: str = ""


@dataclass(frozen=True)
class Needs:
    """What a video must hold to be used: ``frames`` (one clip) and LR frames of at least ``lr_side`` pixels
    (``data.patch`` for training, 1 for evaluation) at ``scale``."""

    frames: int
    lr_side: int
    scale: int


def probe_video(
    path: str | os.PathLike, hr_root: Path | None = None, hr_max_bytes: float = 0.0
) -> tuple[dict[str, object], bool]:
    """Decode every frame of ``path`` (a video file or frame folder) and return ``(answer, keep)``: the answer as
    :class:`VideoProbe`'s fields, and whether it may be cached (not for a permission or I/O error, which may
    pass). The decoded frames are stored in the decoded-HR cache under ``hr_root`` when they take at most
    ``hr_max_bytes`` (:func:`~fedvsr.data.cache.cached_decoded`); a larger video is never held whole."""
    frames = height = width = 0
    kept: list[np.ndarray] | None = [] if hr_root is not None and hr_max_bytes > 0 else None
    try:
        for frame in iter_video(path):
            frames += 1
            height, width = frame.shape[:2]
            if kept is not None:
                kept.append(frame)
                if frames * frame.nbytes > hr_max_bytes:
                    kept = None
    except VideoError as err:
        return {"error": str(err)}, not isinstance(err.__cause__, PermissionError)
    except OSError as err:  # permission denied, an I/O error: this time, not for good
        return {"error": f"{path}: cannot read it: {err.strerror or err}"}, False
    if kept:
        cached_decoded(hr_root, path, lambda: np.stack(kept), hr_max_bytes)
    return {"frames": frames, "height": height, "width": width}, True


def probe(path: str | os.PathLike, cache: Path | None, hr_max_bytes: float = 0.0) -> VideoProbe:
    """:func:`probe_video` of ``path``, through the probe cache under ``cache`` (None: no cache)."""
    answer = cached_probe(cache, path, lambda: probe_video(path, cache, hr_max_bytes))
    return VideoProbe(**{k: answer[k] for k in ("frames", "height", "width", "error") if k in answer})


def unusable(entry: VideoEntry, found: VideoProbe, twin: VideoProbe | None, needs: Needs) -> tuple[str, str] | None:
    """``(kind, reason)`` why ``entry`` cannot be used with these ``needs``, or None: it cannot be read, its
    pre-made LR twin (``twin``, when it has one) cannot be read or does not match it, it has fewer frames than
    a clip, or its frames are smaller than ``lr_side * scale`` pixels (a training patch)."""
    if found.error:
        return UNREADABLE, found.error
    s = needs.scale
    if twin is not None:
        if twin.error:
            return UNREADABLE, f"{entry.path}: its pre-made LR frames cannot be read: {twin.error}"
        h, w = found.height - found.height % s, found.width - found.width % s
        if (twin.frames, twin.height, twin.width) != (found.frames, h // s, w // s):
            return MISMATCHED_LR, (
                f"{entry.lr_path}: the pre-made LR frames ({twin.frames} frames of {twin.width}x"
                f"{twin.height}) do not match the HR video {entry.path} ({found.frames} frames of "
                f"{w}x{h}, WxH after cropping to a multiple of {s}): expected {found.frames} "
                f"frames of {w // s}x{h // s} at scale {s}"
            )
    if found.frames < needs.frames:
        return TOO_SHORT, f"{entry.path}: {found.frames} frames, fewer than a clip ({needs.frames} frames)"
    side = needs.lr_side * s
    if found.height < side or found.width < side:
        what = (
            f"a training patch (data.patch = {needs.lr_side} at data.scale = {s})"
            if needs.lr_side > 1
            else f"data.scale = {s}"
        )
        return TOO_SMALL, (
            f"{entry.path}: frames of {found.width}x{found.height} (WxH), smaller than {what}: "
            f"at least {side}x{side} needed"
        )
    return None


def usable_videos(
    entries: Sequence[VideoEntry],
    needs: Needs,
    cache: Path | None,
    hr_max_bytes: float = 0.0,
) -> tuple[list[VideoEntry], list[int], list[LeftOut]]:
    """The entries that can be used, in order, with their frame counts, and the ones left out (each probed
    once: :func:`probe`; a video and its segments share one probe)."""
    kept: list[VideoEntry] = []
    frames: list[int] = []
    left: list[LeftOut] = []
    report_at = time.monotonic() + PROGRESS_AFTER
    for i, entry in enumerate(entries):
        found = probe(entry.path, cache, hr_max_bytes)
        twin = probe(entry.lr_path, cache) if entry.lr_path else None
        why = unusable(entry, found, twin, needs)
        if why is None:
            kept.append(entry)
            frames.append(found.frames)
        else:
            left.append(LeftOut(entry.path, *why))
        if time.monotonic() >= report_at:
            report_at = time.monotonic() + PROGRESS_EVERY
            log.warning(
                "fedvsr: checked %d of %d videos (each is decoded once; later runs read the answers from "
                "the cache in %s)",
                i + 1,
                len(entries),
                cache or "nowhere: data.lr_cache = none",
            )
    return kept, frames, left
