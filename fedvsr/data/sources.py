"""Dataset sources: which videos an experiment uses, and which of them are held out for evaluation.

Every video of a dataset (folder, REDS, Vid4, Vimeo-90K, Kinetics; the built-in synthetic ones are made here and
need no check) is probed when the data is scanned (:mod:`fedvsr.data.probe`): one that cannot be decoded, is too
short for a clip or too small for a training patch is left out with the reason (:attr:`ExperimentData.left_out`),
so the clients and the evaluation are made of usable videos only.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import av
import numpy as np

from fedvsr.data.cache import cache_dir, cache_root
from fedvsr.data.layouts import LAYOUTS, VIDEO_SUFFIXES, DatasetScan, LayoutError, detect_layout, scan_dataset
from fedvsr.data.probe import NOT_LISTED, TOO_SHORT, UNREADABLE, LeftOut, Needs, usable_videos
from fedvsr.data.synthetic import build_synthetic_dataset, dataset_params
from fedvsr.data.video import IMAGE_SUFFIXES, VideoEntry, VideoError, list_frame_files, natural_key


def synthetic_root(data_cfg, seed: int) -> Path:
    """Folder of the synthetic videos for these settings: ``synthetic-<key>`` under ``data.root`` (or the
    cache folder), the key hashing every parameter the videos depend on. Datasets of other seeds or
    sizes never share a folder, so no run rebuilds the files another run is reading."""
    params = dataset_params(data_cfg.videos, data_cfg.frames, data_cfg.height, data_cfg.width, seed, data_cfg.content)
    key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    return Path(data_cfg.root or cache_dir()) / f"synthetic-{key}"


def degradation_params(data_cfg) -> dict[str, object]:
    """The degradation's parameters from the ``data.*`` keys (see :func:`fedvsr.data.degrade.degradation_params`)."""
    from fedvsr.data.degrade import degradation_params as params

    return params(data_cfg)


class DataError(FileNotFoundError, ValueError):
    """The usable videos cannot make the experiment (none can be read, too few for the clients); the message
    names the videos left out and why."""


def scan_folder(root: str | os.PathLike) -> list[VideoEntry]:
    """Videos under ``root``: video files and folders of frame images (a folder named like a video file that holds
    no frame image is neither). A video's label is the name of the folder directly under ``root`` that holds it
    (``root/<label>/<video>``), or ``"all"``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data.root {str(root)!r} is not a folder")
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort(key=natural_key)
        d = Path(dirpath)
        images = [f for f in filenames if Path(f).suffix.lower() in IMAGE_SUFFIXES]
        if images and d != root:
            found.append(d)
            dirnames[:] = []
            continue
        found += [d / f for f in sorted(filenames, key=natural_key) if Path(f).suffix.lower() in VIDEO_SUFFIXES]
    if not found:
        raise FileNotFoundError(f"data.root {str(root)!r} holds no video files or frame folders")
    entries = []
    for path in found:
        rel = path.relative_to(root)
        label = rel.parts[0] if len(rel.parts) > 1 else "all"
        name = "/".join(rel.with_suffix("").parts) if path.is_file() else "/".join(rel.parts)
        entries.append(VideoEntry(path=str(path.resolve()), label=label, name=name))
    return entries


def scan_source(cfg) -> DatasetScan:
    """The dataset layout ``data.source`` (reds, vid4, vimeo90k, kinetics) read under ``data.root``."""
    return scan_dataset(cfg.data.source, cfg.data.root, cfg.data.scale, cfg.data.degradation)


def resolve_videos(cfg) -> list[VideoEntry]:
    """The videos the experiment trains on (and holds ``eval.holdout`` out of), in a fixed order: every
    video of a synthetic or folder source (building synthetic ones if needed), the standard training
    split of a dataset layout (REDS without REDS4, Vimeo-90K's sep_trainlist, Kinetics' train)."""
    d = cfg.data
    if d.source == "synthetic":
        return build_synthetic_dataset(
            synthetic_root(d, d.seed), d.videos, d.frames, d.height, d.width, d.seed, d.content
        )
    if d.source == "folder":
        return scan_folder(d.root)
    if d.source in LAYOUTS:
        return _training_split(scan_source(cfg), d.root)
    raise ValueError(f"unknown data.source {d.source!r}")


def _training_split(scan: DatasetScan, root: str) -> list[VideoEntry]:
    if not scan.train:
        raise LayoutError(
            f"data.root {root!r}: the {scan.layout} training split is empty on disk "
            f"({len(scan.test)} test videos, {len(scan.skipped)} skipped)"
        )
    return scan.train


def split_holdout(entries: list[VideoEntry], holdout: int, seed: int) -> tuple[list[int], list[int]]:
    """Indices of (client videos, held-out videos): ``holdout`` videos picked round-robin over the
    sorted classes (a seeded choice within each class), the rest for the clients."""
    if holdout >= len(entries):
        raise DataError(f"eval.holdout = {holdout} leaves no video for the clients ({len(entries)} usable videos)")
    rng = np.random.default_rng([seed, 7])
    by_label: dict[str, list[int]] = {}
    for i, e in enumerate(entries):
        by_label.setdefault(e.label, []).append(i)
    pools = {lab: list(rng.permutation(idx)) for lab, idx in sorted(by_label.items())}
    held: list[int] = []
    while len(held) < holdout:
        for lab in sorted(pools):
            if pools[lab] and len(held) < holdout:
                held.append(int(pools[lab].pop()))
    held.sort()
    rest = [i for i in range(len(entries)) if i not in set(held)]
    return rest, held


def count_frames(path: str | os.PathLike) -> int:
    """Frames of a video file (its video packets, demuxed without decoding) or of a frame folder (its images)."""
    path = Path(path)
    if path.is_dir():
        return len(list_frame_files(path))
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path}: no video stream in the file")
            stream = container.streams.video[0]
            return sum(1 for packet in container.demux(stream) if packet.size > 0)
    except av.FFmpegError as err:
        raise VideoError(f"{path}: PyAV cannot read it ({err})") from err


def segment_videos(
    entries: list[VideoEntry],
    segment_frames: int,
    frames: list[int] | None = None,
) -> tuple[list[VideoEntry], list[tuple[str, str]]]:
    """Cut every video into consecutive segments of ``segment_frames`` frames: video ``e`` of ``T`` frames gives
    ``T // segment_frames`` segments, ``[k S, (k + 1) S)`` for ``k = 0, 1, ...``, named ``<name>[start:stop]``
    with the video's label; the last ``T mod S`` frames are dropped (every segment has the same length, so no
    client holds a stub shorter than a training clip). ``frames[i]`` is video ``i``'s frame count
    (:func:`count_frames` when not given). Returns the segments in video order and ``(path, reason)`` for the
    videos too short for one segment."""
    if segment_frames < 1:
        raise ValueError(f"segment_frames must be at least 1, got {segment_frames}")
    counts = frames if frames is not None else [count_frames(e.path) for e in entries]
    out: list[VideoEntry] = []
    short: list[tuple[str, str]] = []
    for e, t in zip(entries, counts, strict=True):
        if t < segment_frames:
            short.append((e.path, f"{t} frames, fewer than data.segment_frames = {segment_frames}: no segment"))
        for start in range(0, t - segment_frames + 1, segment_frames):
            out.append(e.segment(start, start + segment_frames))
    return out, short


def _segmented(cfg, data: ExperimentData) -> ExperimentData:
    """``data`` with its client pool cut into segments (``data.segment_frames``), appended to ``videos``; the
    evaluation videos stay whole, so no frame of them is ever trained on."""
    d = cfg.data
    pool = [data.videos[i] for i in data.pool]
    known = [data.frames[i] for i in data.pool] if data.frames else None
    segments, short = segment_videos(pool, d.segment_frames, known)
    if len(segments) < cfg.fl.clients:
        raise DataError(
            f"data.segment_frames = {d.segment_frames} cuts the {len(pool)} client videos into {len(segments)} "
            f"segments, fewer than fl.clients = {cfg.fl.clients}; allowed: fl.clients <= {len(segments)}, or a "
            f"smaller data.segment_frames"
        )
    start = len(data.videos)
    left = [LeftOut(path, TOO_SHORT, f"{path}: {reason}") for path, reason in short]
    return replace(
        data,
        videos=data.videos + segments,
        pool=list(range(start, start + len(segments))),
        frames=data.frames + [d.segment_frames] * len(segments) if data.frames else [],
        left_out=data.left_out + left,
    )


@dataclass
class ExperimentData:
    """The videos of an experiment, as indices into ``videos``: the clients' pool and the evaluation videos."""

    videos: list[VideoEntry]
    pool: list[int]
    held: list[int]
    #: the videos left out, each with the kind of problem and the reason: those a dataset scan found unusable (a
    #: frame folder without frames, an empty file, a Kinetics video no annotation labels) and those a probe found
    #: unreadable, too short for a clip or too small for a training patch (:mod:`fedvsr.data.probe`)
    left_out: list[LeftOut] = field(default_factory=list)
    #: the frame count of each of ``videos`` (from the probe; empty when not known)
    frames: list[int] = field(default_factory=list)
    #: the whole videos the scan found, usable or not
    considered: int = 0


def clip_frames(cfg) -> int:
    """Frames of one clip: ``data.clip_frames``, or the model's input frames."""
    if cfg.data.clip_frames:
        return cfg.data.clip_frames
    from fedvsr.models.registry import get_entry, preset_kwargs  # the model's frame count, not the model

    m = cfg.model
    return int(preset_kwargs(m.name, m.preset, m.options).get("num_frames", get_entry(m.name).cls.num_frames))


def _evaluation_root(cfg) -> tuple[list[VideoEntry], list[tuple[str, str]]]:
    """The videos under ``eval.root``: a dataset layout's test split when the folder has one (REDS: REDS4,
    Vimeo-90K: sep_testlist, Vid4-like GT/ folders: every clip, with their pre-made LR frames), else every
    video of the folder."""
    d = cfg.data
    try:
        layout = detect_layout(cfg.eval.root)
        if layout is None:
            return scan_folder(cfg.eval.root), []
        scan = scan_dataset(layout, cfg.eval.root, d.scale, d.degradation)
    except FileNotFoundError as err:
        raise type(err)(str(err).replace("data.root", "eval.root")) from None
    if not scan.test:
        raise LayoutError(f"eval.root {cfg.eval.root!r} looks like {layout} but its test split is empty on disk")
    return scan.test, scan.skipped


def experiment_data(cfg) -> ExperimentData:
    """The videos of an experiment (:func:`_whole_videos`), the client pool cut into segments of
    ``data.segment_frames`` frames when that is set (:func:`segment_videos`; the evaluation videos are chosen
    as whole videos first and stay whole). Raises :class:`DataError` when no usable video is left for the
    clients or for the evaluation, naming the videos left out and why."""
    data = _whole_videos(cfg)
    return _segmented(cfg, data) if cfg.data.segment_frames else data


def _whole_videos(cfg) -> ExperimentData:
    """The videos of an experiment: which the clients share and which evaluate the global model, each probed
    and the unusable ones left out (:func:`_usable`) before any is chosen for the clients or the evaluation.

    ``eval.source = holdout``: ``eval.holdout`` videos of the training source are kept from the clients
    (:func:`split_holdout`). ``eval.source = split``: the dataset layout's own test split (REDS4, Vimeo-90K's
    sep_testlist, Kinetics' val), the clients get its training split. ``eval.source = folder``: every video
    of the training source goes to the clients and the videos under ``eval.root`` (its test split if it is
    a dataset layout, :func:`_evaluation_root`) are appended to ``videos`` for evaluation."""
    d = cfg.data
    scan = scan_source(cfg) if d.source in LAYOUTS else None
    if cfg.eval.source == "split":
        _check_test_split(cfg, scan)
    if d.source == "synthetic":  # built here: nothing to probe
        videos = resolve_videos(cfg)
        data = ExperimentData(videos, [], [], frames=[d.frames] * len(videos), considered=len(videos))
    elif d.source == "folder":
        data = _usable(cfg, scan_folder(d.root), [], training=True, where=f"data.root {d.root!r}")
    elif scan is not None:
        data = _usable(cfg, _training_split(scan, d.root), scan.skipped, training=True, where=f"data.root {d.root!r}")
    else:
        raise ValueError(f"unknown data.source {d.source!r}")
    if cfg.eval.source == "holdout":
        pool, held = split_holdout(data.videos, cfg.eval.holdout, d.seed)
        return replace(data, pool=pool, held=held)
    if cfg.eval.source == "split":
        test = _usable(
            cfg, scan.test, [], training=False, where=f"the {scan.layout} test split under data.root {d.root!r}"
        )
    elif cfg.eval.source == "folder":
        test = _usable(cfg, *_evaluation_root(cfg), training=False, where=f"eval.root {cfg.eval.root!r}")
    else:
        raise ValueError(f"unknown eval.source {cfg.eval.source!r}")
    n, m = len(data.videos), len(test.videos)
    return ExperimentData(
        data.videos + test.videos,
        list(range(n)),
        list(range(n, n + m)),
        data.left_out + test.left_out,
        data.frames + test.frames,
        data.considered + test.considered,
    )


def _check_test_split(cfg, scan: DatasetScan | None) -> None:
    """``eval.source = split`` needs a dataset layout with a test split on disk."""
    d = cfg.data
    if scan is None or not scan.has_test_split:
        why = {
            None: f"data.source = {d.source!r} has no standard test split",
            "vid4": "Vid4 is a test set: it has no training split to keep apart from it",
            "kinetics": f"data.root {d.root!r} has no val/ split folder (Kinetics: "
            f"<root>/train/<class>/... and <root>/val/<class>/...)",
        }
        raise LayoutError(
            f"eval.source = 'split': {why.get(scan and scan.layout, why[None])}; use "
            f"eval.source = 'holdout', or 'folder' with eval.root (e.g. a Vid4 root)"
        )
    if not scan.test:
        raise LayoutError(
            f"eval.source = 'split': the {scan.layout} test split is empty under data.root "
            f"{d.root!r} ({len(scan.skipped)} videos skipped)"
        )


def _usable(
    cfg, entries: list[VideoEntry], skipped: list[tuple[str, str]], training: bool, where: str
) -> ExperimentData:
    """The usable ones of ``entries`` (:func:`~fedvsr.data.probe.usable_videos`: probed through the cache of
    ``data.lr_cache``, for training clips of ``data.patch`` LR pixels, or for evaluation clips), with the videos
    the scan ``skipped`` and the probe left out (each reason naming the file); raises :class:`DataError` naming
    them when none is usable."""
    d = cfg.data
    needs = Needs(clip_frames(cfg), d.patch if training else 1, d.scale)
    videos, frames, left = usable_videos(entries, needs, cache_root(d.lr_cache), d.hr_cache_mb * 2**20)
    left = [
        LeftOut(path, NOT_LISTED if reason.startswith("not listed") else UNREADABLE, f"{path}: {reason}")
        for path, reason in skipped
    ] + left
    if not videos:
        raise _none_usable(where, len(left), left)
    return ExperimentData(videos, [], [], left, frames, considered=len(videos) + len(left))


def _none_usable(where: str, considered: int, left: list[LeftOut], limit: int = 10) -> DataError:
    """The error of a source none of whose videos can be used, naming them (the first ``limit``) and why."""
    named = "; ".join(e.reason for e in left[:limit])
    more = f"; ... and {len(left) - limit} more" if len(left) > limit else ""
    return DataError(f"{where}: none of the {considered} videos can be used ({left_out_counts(left)}): {named}{more}")


def left_out_counts(left: list[LeftOut]) -> str:
    """``"unreadable: 3, too small: 1"``: the videos left out, counted by kind, most first."""
    counts = Counter(e.kind for e in left)
    return ", ".join(f"{k}: {n}" for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def experiment_videos(cfg) -> tuple[list[VideoEntry], list[int], list[int]]:
    """``(videos, client pool, evaluation videos)`` of an experiment, as indices into ``videos``
    (:func:`experiment_data` without the videos left out)."""
    data = experiment_data(cfg)
    return data.videos, data.pool, data.held
