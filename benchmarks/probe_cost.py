"""How a dataset scan should check a video (issue 23), measured: what each check catches, and what it costs.

1. Agreement with training: MP4 (index at the end), MP4 with the index first (``+faststart``), Matroska and AVI
   files cut at 10% .. 99% of their bytes; for each cut, does a check fail exactly when ``read_video`` (what a
   worker decodes) fails? The checks: demuxing every packet (``count_frames``); a cheap decode (every packet
   demuxed, the first frame and the last GOP decoded, the packet count checked against the container's);
   ``probe_video`` (every frame decoded, one at a time).
2. Cost per video, on videos of 64x64 x 5 frames (the tests' size), 320x240 x 120 and 640x360 x 300 (a 10 s
   Kinetics clip at 30 fps; x264, one keyframe every 30 frames): each check, and a second scan that reads the
   cached answer (``cached_probe``). The medians of ``--repeats`` alternated measurements, and their ratios to
   ``probe_video``.

    python benchmarks/probe_cost.py [--repeats 5] [--out benchmarks/results/probe_cost]

Timings share a loaded 2-core machine with other jobs; only the ratios measured in one run mean anything.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from fedvsr.data.cache import cached_probe
from fedvsr.data.probe import probe_video
from fedvsr.data.sources import count_frames
from fedvsr.data.video import VideoError, read_video, write_video

CUTS = (0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
SIZES = {"64x64x5": (5, 64, 64), "320x240x120": (120, 240, 320), "640x360x300": (300, 360, 640)}


def moving_frames(t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth random image panning one pixel a frame, plus a little noise: content a codec treats like video."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(30, 225, (h // 8 + 2, (w + t) // 8 + 2, 3))
    big = np.kron(coarse, np.ones((8, 8, 1)))[:h, : w + t]
    frames = np.stack([big[:, i : i + w] for i in range(t)]) + rng.normal(0, 4, (t, h, w, 3))
    return frames.clip(0, 255).astype(np.uint8)


def write_faststart(path: Path, frames: np.ndarray, gop: int = 30) -> None:
    """H.264 MP4 with its index (moov) before the frames, as web videos are written."""
    with av.open(str(path), "w", options={"movflags": "+faststart"}) as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.options = {"g": str(gop), "crf": "23"}
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts, vf.time_base = i, Fraction(1, 30)
            c.mux(s.encode(vf))
        c.mux(s.encode(None))


def cheap_check(path: Path) -> int:
    """Demux every packet, decode the first frame and the last GOP; the packet count against the container's."""
    with av.open(str(path)) as c:
        if not c.streams.video:
            raise VideoError(f"{path}: no video stream")
        s = c.streams.video[0]
        declared = 0 if "mov" in c.format.name else s.frames
        ctx = s.codec_context
        packets, first, tail = 0, None, []
        for packet in c.demux(s):
            if packet.size == 0:
                continue
            packets += 1
            if first is None:
                out = ctx.decode(packet)
                first = out[0] if out else None
                continue
            if packet.is_keyframe:
                tail = []
            tail.append(packet)
        last = None
        for packet in [*tail, None]:
            for frame in ctx.decode(packet):
                last = frame
    if first is None or (tail and last is None):
        raise VideoError(f"{path}: no frame decoded")
    if declared > packets:
        raise VideoError(f"{path}: {packets} of {declared} packets")
    return packets


def fails(check, path: Path) -> bool:
    try:
        check(path)
    except (VideoError, av.FFmpegError):
        return True
    return False


def probe_fails(path: Path) -> bool:
    return "error" in probe_video(path)[0]


CHECKS = {"demux": count_frames, "cheap": cheap_check, "probe": lambda p: probe_video(p)[0]}


def agreement(folder: Path) -> dict[str, object]:
    frames = moving_frames(48, 144, 176)
    sources = {}
    for suffix in ("mp4", "mkv", "avi"):
        sources[suffix] = folder / f"clip.{suffix}"
        write_video(sources[suffix], frames, crf=23)
    sources["mp4 +faststart"] = folder / "fast.mp4"
    write_faststart(sources["mp4 +faststart"], frames, gop=12)
    rows, disagree = [], {name: 0 for name in CHECKS}
    for kind, src in sources.items():
        data = src.read_bytes()
        for cut in CUTS:
            bad = folder / f"cut-{cut}-{src.name}"
            bad.write_bytes(data[: int(len(data) * cut)])
            row = {"file": kind, "cut": cut, "read_video": "fails" if fails(read_video, bad) else "reads"}
            for name, check in CHECKS.items():
                failed = probe_fails(bad) if name == "probe" else fails(check, bad)
                row[name] = "fails" if failed else "reads"
                disagree[name] += row[name] != row["read_video"]
            rows.append(row)
    return {"rows": rows, "cuts": len(rows), "disagreements": disagree}


def costs(folder: Path, repeats: int) -> dict[str, object]:
    out = {}
    for label, (t, h, w) in SIZES.items():
        path = folder / f"{label}.mp4"
        write_faststart(path, moving_frames(t, h, w, seed=1))
        cache = folder / f"cache-{label}"
        cached_probe(cache, path, lambda p=path: probe_video(p))  # the answer a second scan reads
        times: dict[str, list[float]] = {name: [] for name in [*CHECKS, "cached"]}
        for _ in range(repeats):
            for name, check in CHECKS.items():
                start = time.perf_counter()
                check(path)
                times[name].append(time.perf_counter() - start)
            start = time.perf_counter()
            cached_probe(cache, path, lambda p=path: probe_video(p))
            times["cached"].append(time.perf_counter() - start)
        median = {name: statistics.median(v) for name, v in times.items()}
        out[label] = {
            "bytes": path.stat().st_size,
            "median_s": median,
            "ratio_to_probe": {name: m / median["probe"] for name, m in median.items()},
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/probe_cost")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = {
            "agreement": agreement(Path(tmp)),
            "cost": costs(Path(tmp), args.repeats),
            "repeats": args.repeats,
            "pyav": av.__version__,
        }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe_cost.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps(result["agreement"]["disagreements"]),
        json.dumps({k: {n: round(r, 4) for n, r in v["ratio_to_probe"].items()} for k, v in result["cost"].items()}),
    )


if __name__ == "__main__":
    main()
