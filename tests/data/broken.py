"""The broken dataset of issue 23: a few bad files among good videos, in a layout that reads both as
``data.source=folder`` and as ``data.source=kinetics`` (``<root>/<class>/<video>``)."""

from __future__ import annotations

from pathlib import Path

from fedvsr.data.synthetic import NATURAL_CLASSES, synth_video
from fedvsr.data.video import write_video

#: the good videos: 9 of 64x64, 5 frames, in classes a and b (enough for 4 clients and 2 held out)
GOOD = [f"{'ab'[k % 2]}/good{k}.mp4" for k in range(9)]
#: the bad files and the kind of problem each is left out for (the folder x.mp4 is no video at all)
BAD = {
    "a/tiny.mp4": "too small",
    "a/truncated.mp4": "unreadable",
    "a/zero.mp4": "unreadable",
    "b/notes.mp4": "unreadable",
}


def write_good(path: Path, seed: int, size: int = 64, frames: int = 5) -> None:
    """A small H.264 MP4 of synthetic content."""
    write_video(path, synth_video(seed, NATURAL_CLASSES[seed % len(NATURAL_CLASSES)], frames, size, size), crf=23)


def broken_folder(root: Path, good: bool = True) -> Path:
    """Write the issue's folder under ``root``: the :data:`GOOD` videos (``good``), a truncated MP4 (its first half:
    the index at its end is lost), a zero-byte file, a text file named ``.mp4``, a folder named ``x.mp4`` and a
    32x32 video (too small for a 16-pixel LR patch at x4)."""
    for k, name in enumerate(GOOD if good else []):
        write_good(root / name, k)
    write_good(root / "a" / "tiny.mp4", 1, size=32)
    write_good(root / "a" / "whole.mp4", 0)
    data = (root / "a" / "whole.mp4").read_bytes()
    (root / "a" / "whole.mp4").unlink()
    (root / "a" / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (root / "a" / "zero.mp4").write_bytes(b"")
    (root / "b").mkdir(exist_ok=True)
    (root / "b" / "notes.mp4").write_text("these are my notes, not a video\n" * 20)
    (root / "b" / "x.mp4").mkdir()
    return root


#: the overrides of the issue's runs ($SMALL)
SMALL = [
    "model.preset=tiny",
    "fl.rounds=2",
    "fl.clients=4",
    "fl.clients_per_round=2",
    "data.videos=10",
    "data.frames=5",
    "data.height=64",
    "data.width=64",
    "data.patch=16",
    "data.samples_per_video=2",
    "eval.holdout=2",
    "eval.clips=2",
]
