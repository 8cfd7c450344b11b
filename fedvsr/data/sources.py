"""Dataset sources: which videos an experiment uses, and which of them are held out for evaluation."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from fedvsr.data.synthetic import VideoEntry, build_synthetic_dataset, dataset_params
from fedvsr.data.video import IMAGE_SUFFIXES, natural_key

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".y4m")


def cache_dir() -> Path:
    return Path(os.environ.get("FEDVSR_CACHE", Path.home() / ".cache" / "fedvsr"))


def synthetic_root(data_cfg, seed: int) -> Path:
    """Folder of the synthetic videos for these settings: ``synthetic-<key>`` under ``data.root`` (or the
    cache folder), the key hashing every parameter the videos depend on. Datasets of other seeds or
    sizes never share a folder, so no run rebuilds the files another run is reading."""
    params = dataset_params(data_cfg.videos, data_cfg.frames, data_cfg.height, data_cfg.width, seed)
    key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    return Path(data_cfg.root or cache_dir()) / f"synthetic-{key}"


def scan_folder(root: str | os.PathLike) -> list[VideoEntry]:
    """Videos under ``root``: video files and folders of frame images. A video's label is the name of
    the folder directly under ``root`` that holds it (``root/<label>/<video>``), or ``"all"``."""
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


def resolve_videos(cfg) -> list[VideoEntry]:
    """All videos of the experiment's dataset, in a fixed order (building synthetic ones if needed)."""
    d = cfg.data
    if d.source == "synthetic":
        return build_synthetic_dataset(synthetic_root(d, cfg.seed), d.videos, d.frames, d.height, d.width,
                                       cfg.seed)
    if d.source == "folder":
        return scan_folder(d.root)
    raise ValueError(f"unknown data.source {d.source!r}")


def split_holdout(entries: list[VideoEntry], holdout: int, seed: int) -> tuple[list[int], list[int]]:
    """Indices of (client videos, held-out videos): ``holdout`` videos picked round-robin over the
    sorted classes (a seeded choice within each class), the rest for the clients."""
    if holdout >= len(entries):
        raise ValueError(f"eval.holdout = {holdout} leaves no video for the clients ({len(entries)} videos)")
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
