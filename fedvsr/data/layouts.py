"""The on-disk layouts of the public VSR datasets: REDS, Vid4, Vimeo-90K and Kinetics.

Each scanner reads what exists under a dataset's root (nothing is downloaded) and returns the dataset's
standard train / test split as :class:`~fedvsr.data.video.VideoEntry` lists. Where the dataset ships
pre-made LR frames for the configured scale and the degradation's resampling (:data:`RESAMPLING`: ``BI``
for ``bicubic`` and ``hevc``, ``BD`` for ``blur-h264``), each entry's ``lr_path`` names them and
:func:`~fedvsr.data.datasets.load_pair` reads them instead of resampling the HR frames (the codec stage of
``blur-h264`` / ``hevc`` is still applied to them).

The layouts, as the reference implementations read them (BasicSR = XPixelGroup/BasicSR at 8d56e3a, 2024-05):

* REDS: ``train_sharp/<clip>/<frame>.png`` (clips ``000`` .. ``239``, 100 frames of 1280x720 each,
  ``00000000.png`` .. ``00000099.png``: ``basicsr/data/meta_info/meta_info_REDS_GT.txt``); bicubic x4 twins in
  ``train_sharp_bicubic/X4/<clip>/`` (``options/train/BasicVSR/train_BasicVSR_REDS.yml``). Test split REDS4 =
  clips ``000, 011, 015, 020`` of ``train_sharp``, the rest train (``basicsr/data/reds_dataset.py``,
  ``val_partition='REDS4'``; ``meta_info_REDS4_test_GT.txt``). The official validation clips, regrouped into
  ``train_sharp`` as ``240`` .. ``269`` by ``scripts/data_preparation/regroup_reds_dataset.py``, stay in the
  training split there too; a ``val_sharp`` folder that was not regrouped is not read.
* Vid4: ``GT/<clip>/`` for ``calendar, city, foliage, walk`` (41, 34, 49, 47 frames of 720x576, 704x576,
  720x480, 720x480) with ``BIx4/<clip>/`` and ``BDx4/<clip>/`` twins (BasicSR
  ``options/test/EDVR/test_EDVR_L_x4_SR_Vid4.yml``, ``options/train/BasicVSR/train_BasicVSR_Vimeo90K_BDx4.yml``;
  the frame counts and sizes: mmagic's ``docs/en/dataset_zoo/vid4.md``). A test set only: no training split.
  BasicSR's REDS4 test folder (``REDS4/GT``, ``REDS4/sharp_bicubic``) has the same shape and is read alike.
* Vimeo-90K: ``vimeo_septuplet/sequences/<group>/<seq>/im1.png .. im7.png`` (448x256) with
  ``vimeo_septuplet/sep_trainlist.txt`` and ``sep_testlist.txt`` listing ``<group>/<seq>`` per line (64,612 and
  7,824 sequences: ``meta_info_Vimeo90K_train_GT.txt``, ``meta_info_Vimeo90K_test_GT.txt``;
  ``scripts/data_preparation/create_lmdb.py``). Bicubic x4 twins in ``vimeo_septuplet_matlabLRx4/sequences``
  beside ``vimeo_septuplet`` (``scripts/matlab_scripts/generate_LR_Vimeo90K.m``,
  ``options/test/EDVR/test_EDVR_L_x4_SR_Vimeo90K.yml``) or in ``BIx4`` / ``BDx4`` beside it, holding
  ``<group>/<seq>/`` directly (``options/*/BasicVSR/*_Vimeo90K_B[ID]x4.yml``).
* Kinetics: ``<root>/<split>/<class>/<video>.mp4`` with splits ``train`` / ``val`` / ``test`` (torchvision's
  ``datasets/kinetics.py``), or ``<root>/<class>/<video>.mp4`` without splits (its "legacy" layout), or the
  cvdfoundation/kinetics-dataset download as extracted: ``<root>/<split>/<video>.mp4`` flat, with
  ``<root>/annotations/<split>.csv`` (columns ``label, youtube_id, time_start, time_end``; file names
  ``<youtube_id>_<start:06>_<end:06>.mp4``, as torchvision's ``_make_ds_structure`` builds them). The class
  is the label; the test split is ``val`` (the test split's labels were not published with the videos).

What a scan checks, without decoding anything (a real dataset has 10^5 - 10^6 frame files): the root's
layout, that each video's frame folder holds frame images (or its video file is a file, and not empty), and
that a pre-made LR folder holds as many frames as its HR folder. A video that fails is skipped and recorded in
:attr:`DatasetScan.skipped` with the reason; a root that does not match the layout raises
:class:`LayoutError` saying what was expected where. Whether the videos the scan keeps decode, and are long
and large enough, is found next by probing each once (:mod:`fedvsr.data.probe`, cached, through
:func:`~fedvsr.data.sources.experiment_data`).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from fedvsr.data.degrade import RESAMPLING
from fedvsr.data.video import IMAGE_SUFFIXES, VideoEntry, natural_key

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".y4m")
LAYOUTS = ("reds", "vid4", "vimeo90k", "kinetics")

#: REDS4: the test clips of BasicSR's ``val_partition='REDS4'`` (``basicsr/data/reds_dataset.py``)
REDS4 = ("000", "011", "015", "020")
#: the four clips of Vid4 (``GT/<clip>``)
VID4_CLIPS = ("calendar", "city", "foliage", "walk")
KINETICS_SPLITS = ("train", "val", "test")


class LayoutError(FileNotFoundError):
    """A dataset root that does not match its layout; the message says what was expected where."""


@dataclass
class DatasetScan:
    """One dataset's videos, split as the dataset defines it."""

    layout: str  #: ``reds``, ``vid4``, ``vimeo90k``, ``kinetics``
    train: list[VideoEntry]  #: the standard training split (Vid4: every clip, it has no split)
    test: list[VideoEntry]  #: the standard test split (empty where the dataset has none on disk)
    has_test_split: bool  #: False for Vid4 (a test set only) and Kinetics without split folders
    lr_folder: str | None = None  #: the pre-made LR folder whose frames are used, None: HR is degraded
    skipped: list[tuple[str, str]] = field(default_factory=list)  #: ``(path, reason)`` of skipped videos


# ----------------------------------------------------------------------------- helpers


def _listing(root: Path, limit: int = 8) -> str:
    try:
        names = sorted(os.listdir(root), key=natural_key)
    except OSError as err:
        return f"cannot list it: {err.strerror}"
    if not names:
        return "it is empty"
    more = f", ... ({len(names)} entries)" if len(names) > limit else ""
    return "it holds " + ", ".join(names[:limit]) + more


def _subdirs(folder: Path) -> list[str]:
    with os.scandir(folder) as it:
        return sorted((e.name for e in it if e.is_dir() and not e.name.startswith(".")), key=natural_key)


def _count_frames(folder: Path) -> int:
    """Frame images in ``folder`` (by suffix; nothing is opened); -1 if it is not a folder."""
    try:
        with os.scandir(folder) as it:
            return sum(1 for e in it if e.name.lower().endswith(IMAGE_SUFFIXES) and e.is_file())
    except (FileNotFoundError, NotADirectoryError):
        return -1


def _frame_entry(hr: Path, lr: Path | None, name: str, label: str, skipped: list[tuple[str, str]]) -> VideoEntry | None:
    """The entry of one frame-folder video, or None (recorded in ``skipped``) if its folders do not agree."""
    n = _count_frames(hr)
    if n <= 0:
        skipped.append((str(hr), "no such folder" if n < 0 else f"no frame images ({', '.join(IMAGE_SUFFIXES)})"))
        return None
    if lr is not None:
        m = _count_frames(lr)
        if m != n:
            why = "is missing" if m < 0 else f"holds {m} frame images"
            skipped.append((str(hr), f"its pre-made LR folder {lr} {why}, the HR folder holds {n}"))
            return None
    return VideoEntry(path=str(hr.resolve()), label=label, name=name, lr_path=None if lr is None else str(lr.resolve()))


def _first_dir(candidates: list[Path]) -> Path | None:
    return next((c for c in candidates if c.is_dir()), None)


def _require_videos(scan: DatasetScan, root: Path, what: str) -> DatasetScan:
    if not scan.train and not scan.test:
        named = "".join(f"; {path}: {reason}" for path, reason in scan.skipped[:10])
        more = f"; ... and {len(scan.skipped) - 10} more" if len(scan.skipped) > 10 else ""
        raise LayoutError(f"data.root {str(root)!r}: no usable {what} ({len(scan.skipped)} skipped{named}{more})")
    return scan


# ----------------------------------------------------------------------------- REDS


def scan_reds(root: str | os.PathLike, scale: int = 4, degradation: str = "bicubic") -> DatasetScan:
    """REDS: ``train_sharp/<clip>/`` frame folders; test split REDS4, the other clips train; label ``all``
    (REDS has no content classes). LR twins: ``train_sharp_bicubic/X<scale>/<clip>/`` for a BI degradation."""
    root = Path(root)
    hr_root = root / "train_sharp"
    if not hr_root.is_dir():
        raise LayoutError(
            f"data.root {str(root)!r} does not look like REDS: expected train_sharp/<clip>/<frame>.png "
            f"(e.g. train_sharp/000/00000000.png) under it, {_listing(root)}"
        )
    clips = _subdirs(hr_root)
    if not clips:
        raise LayoutError(
            f"data.root {str(root)!r} does not look like REDS: train_sharp holds no clip folders "
            f"(expected train_sharp/000/00000000.png ...)"
        )
    lr_root = root / "train_sharp_bicubic" / f"X{scale}" if RESAMPLING.get(degradation) == "BI" else None
    if lr_root is not None and not lr_root.is_dir():
        lr_root = None
    scan = DatasetScan("reds", [], [], True, None if lr_root is None else str(lr_root))
    for clip in clips:
        entry = _frame_entry(hr_root / clip, None if lr_root is None else lr_root / clip, clip, "all", scan.skipped)
        if entry is not None:
            (scan.test if clip in REDS4 else scan.train).append(entry)
    return _require_videos(scan, root, "REDS clips")


# ----------------------------------------------------------------------------- Vid4 (and other GT / LR test sets)


def scan_vid4(root: str | os.PathLike, scale: int = 4, degradation: str = "bicubic") -> DatasetScan:
    """Vid4: ``GT/<clip>/`` frame folders, every clip in the test split (and, for want of a training split,
    in ``train`` too); label = the clip. LR twins: ``BIx<scale>/<clip>/`` (or BasicSR's REDS4 test folder
    ``sharp_bicubic/<clip>/`` at x4) for a BI degradation, ``BDx<scale>/<clip>/`` for BD."""
    root = Path(root)
    hr_root = root / "GT"
    if not hr_root.is_dir():
        raise LayoutError(
            f"data.root {str(root)!r} does not look like Vid4: expected GT/<clip>/<frame>.png "
            f"(e.g. GT/calendar/, GT/city/, GT/foliage/, GT/walk/) with BIx4/<clip>/ or BDx4/<clip>/ "
            f"beside GT, {_listing(root)}"
        )
    clips = _subdirs(hr_root)
    if not clips:
        raise LayoutError(
            f"data.root {str(root)!r} does not look like Vid4: GT holds no clip folders "
            f"(expected GT/calendar/, GT/city/, ...)"
        )
    kind = RESAMPLING.get(degradation)
    candidates = {
        "BI": [root / f"BIx{scale}"] + ([root / "sharp_bicubic"] if scale == 4 else []),
        "BD": [root / f"BDx{scale}"],
    }.get(kind, [])
    lr_root = _first_dir(candidates)
    scan = DatasetScan("vid4", [], [], False, None if lr_root is None else str(lr_root))
    for clip in clips:
        entry = _frame_entry(hr_root / clip, None if lr_root is None else lr_root / clip, clip, clip, scan.skipped)
        if entry is not None:
            scan.test.append(entry)
    scan.train = list(scan.test)
    return _require_videos(scan, root, "Vid4 clips")


# ----------------------------------------------------------------------------- Vimeo-90K


def _read_list(path: Path) -> list[str]:
    return [line.strip().strip("/") for line in path.read_text().splitlines() if line.strip()]


def scan_vimeo90k(root: str | os.PathLike, scale: int = 4, degradation: str = "bicubic") -> DatasetScan:
    """Vimeo-90K septuplets: ``sequences/<group>/<seq>/im1.png .. im7.png`` listed by ``sep_trainlist.txt``
    and ``sep_testlist.txt``; ``root`` is ``vimeo_septuplet`` or the folder holding it. Label = the group
    (``00001``), name = ``<group>/<seq>``. LR twins beside ``vimeo_septuplet``: ``vimeo_septuplet_matlabLRx<s>/
    sequences`` or ``BIx<s>`` for a BI degradation, ``vimeo_septuplet_BD_matlabLRx<s>/sequences`` or ``BDx<s>``
    for BD."""
    root = Path(root)
    base = root / "vimeo_septuplet" if (root / "vimeo_septuplet").is_dir() else root
    seq_root = base / "sequences"
    lists = {split: base / f"sep_{split}list.txt" for split in ("train", "test")}
    missing = [p.name for p in [seq_root, *lists.values()] if not p.exists()]
    if missing:
        raise LayoutError(
            f"data.root {str(root)!r} does not look like Vimeo-90K: expected vimeo_septuplet/sequences/"
            f"<group>/<seq>/im1.png .. im7.png with vimeo_septuplet/sep_trainlist.txt and "
            f"sep_testlist.txt (root = vimeo_septuplet or the folder holding it); missing "
            f"{', '.join(missing)} in {str(base)!r}, {_listing(base)}"
        )
    kind, up = RESAMPLING.get(degradation), base.parent
    candidates = {
        "BI": [up / f"vimeo_septuplet_matlabLRx{scale}" / "sequences", up / f"BIx{scale}"],
        "BD": [up / f"vimeo_septuplet_BD_matlabLRx{scale}" / "sequences", up / f"BDx{scale}"],
    }.get(kind, [])
    lr_root = _first_dir(candidates)
    scan = DatasetScan("vimeo90k", [], [], True, None if lr_root is None else str(lr_root))
    for split, target in (("train", scan.train), ("test", scan.test)):
        for key in _read_list(lists[split]):
            entry = _frame_entry(
                seq_root / key, None if lr_root is None else lr_root / key, key, key.split("/")[0], scan.skipped
            )
            if entry is not None:
                target.append(entry)
    return _require_videos(scan, root, "Vimeo-90K sequences")


# ----------------------------------------------------------------------------- Kinetics


def _video_entry(path: Path, label: str, name: str, skipped: list[tuple[str, str]]) -> VideoEntry | None:
    try:
        size = path.stat().st_size
    except OSError as err:
        skipped.append((str(path), f"cannot stat it: {err.strerror}"))
        return None
    if size == 0:
        skipped.append((str(path), "empty file (0 bytes)"))
        return None
    return VideoEntry(path=str(path.resolve()), label=label, name=name)


def _kinetics_folder(folder: Path, root: Path, split: str | None, skipped: list[tuple[str, str]]) -> list[VideoEntry]:
    """The videos of one split folder: ``<class>/<video>`` or flat ``<video>`` labelled by
    ``root/annotations/<split>.csv``."""
    entries: list[VideoEntry] = []
    prefix = f"{split}/" if split else ""
    classes = [c for c in _subdirs(folder) if not (split is None and c == "annotations")]
    for label in classes:
        with os.scandir(folder / label) as it:  # a folder named like a video (x.mp4/) is not one
            files = sorted(
                (e.name for e in it if e.is_file() and e.name.lower().endswith(VIDEO_SUFFIXES)), key=natural_key
            )
        for f in files:
            entry = _video_entry(folder / label / f, label, f"{prefix}{label}/{Path(f).stem}", skipped)
            if entry is not None:
                entries.append(entry)
    with os.scandir(folder) as it:
        flat = sorted((e.name for e in it if e.is_file() and e.name.lower().endswith(VIDEO_SUFFIXES)), key=natural_key)
    if flat:
        csv_path = root / "annotations" / f"{split or 'train'}.csv"
        if not csv_path.is_file():
            raise LayoutError(
                f"data.root {str(root)!r}: {len(flat)} videos lie directly in {str(folder)!r} (e.g. "
                f"{flat[0]}) with no class folder around them and no {csv_path} to label them; "
                f"expected <class>/<video>.mp4 or annotations/<split>.csv (label, youtube_id, "
                f"time_start, time_end)"
            )
        labels: dict[str, str] = {}
        with open(csv_path, newline="") as fh:
            for row in csv.DictReader(fh):
                try:
                    key = f"{row['youtube_id']}_{int(row['time_start']):06d}_{int(row['time_end']):06d}"
                except (KeyError, ValueError, TypeError) as err:
                    raise LayoutError(
                        f"{csv_path}: row {row} lacks youtube_id / time_start / time_end ({err!r})"
                    ) from None
                labels[key] = row.get("label") or ""
        for f in flat:
            label = labels.get(Path(f).stem)
            if not label:
                skipped.append((str(folder / f), f"not listed (with a label) in {csv_path}"))
                continue
            entry = _video_entry(folder / f, label, f"{prefix}{label}/{Path(f).stem}", skipped)
            if entry is not None:
                entries.append(entry)
    return entries


def scan_kinetics(root: str | os.PathLike, scale: int = 4, degradation: str = "bicubic") -> DatasetScan:
    """Kinetics: the class (folder, or annotation CSV) is the label, which the ``by-class`` partition uses.
    With split folders ``train`` / ``val`` (/ ``test``) the training split is ``train`` and the test split
    ``val``; without them every video is in ``train`` and there is no test split. No LR twins
    (``scale`` and ``degradation`` are accepted for a common signature)."""
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(
            f"data.root {str(root)!r} is not a folder (expected Kinetics: <root>/<class>/<video>.mp4 "
            f"or <root>/train/<class>/<video>.mp4)"
        )
    split_dirs = [s for s in KINETICS_SPLITS if (root / s).is_dir()]
    if split_dirs and "train" not in split_dirs:
        raise LayoutError(
            f"data.root {str(root)!r}: Kinetics split folders {', '.join(split_dirs)} but no train/ "
            f"(expected train/<class>/<video>.mp4 beside them)"
        )
    scan = DatasetScan("kinetics", [], [], "val" in split_dirs)
    if split_dirs:
        scan.train = _kinetics_folder(root / "train", root, "train", scan.skipped)
        if "val" in split_dirs:
            scan.test = _kinetics_folder(root / "val", root, "val", scan.skipped)
    else:
        scan.train = _kinetics_folder(root, root, None, scan.skipped)
    if not scan.train and not scan.test and not scan.skipped:
        raise LayoutError(
            f"data.root {str(root)!r} does not look like Kinetics: expected <class>/<video>.mp4 "
            f"or train/<class>/<video>.mp4 (and val/...) under it ({', '.join(VIDEO_SUFFIXES)}), "
            f"{_listing(root)}"
        )
    return _require_videos(scan, root, "Kinetics videos")


# ----------------------------------------------------------------------------- dispatch

SCANNERS = {"reds": scan_reds, "vid4": scan_vid4, "vimeo90k": scan_vimeo90k, "kinetics": scan_kinetics}


def scan_dataset(layout: str, root: str | os.PathLike, scale: int = 4, degradation: str = "bicubic") -> DatasetScan:
    """Scan ``root`` as the dataset ``layout`` (one of :data:`LAYOUTS`)."""
    if layout not in SCANNERS:
        raise ValueError(f"unknown dataset layout {layout!r}; allowed: {', '.join(LAYOUTS)}")
    return SCANNERS[layout](root, scale, degradation)


def detect_layout(root: str | os.PathLike) -> str | None:
    """The layout a folder has by its marker folders (``train_sharp``: REDS; ``GT``: Vid4-like;
    ``vimeo_septuplet`` or ``sequences`` + ``sep_testlist.txt``: Vimeo-90K), or None for a plain folder of
    videos. Kinetics is never guessed: its split folders look like any folder of videos."""
    root = Path(root)
    if (root / "train_sharp").is_dir():
        return "reds"
    if (root / "GT").is_dir():
        return "vid4"
    if (root / "vimeo_septuplet").is_dir() or ((root / "sequences").is_dir() and (root / "sep_testlist.txt").is_file()):
        return "vimeo90k"
    return None
