"""`fedvsr upscale` on a 1280x720 clip on the CPU: seconds per frame and peak memory, at two tile sizes.

Writes a synthetic 1280x720 clip (a panning pattern of smooth noise and gratings, H.264 crf 18, 25 fps),
a run folder holding the default model (``efvsr/small``, as ``fedvsr simulate`` trains by default; freshly
initialised weights, its zero-initialised last layer drawn at random so the output is not plain bicubic:
the time does not depend on the values), then runs the real command once per tile size, each in its own
process, and checks the output: 4x the width and height (5120x2880), the same number of frames and frame
rate. Peak memory is the ``ru_maxrss`` of that process (``os.wait4``). The two runs see the same machine;
their ratio is what carries over to another machine.

    python benchmarks/upscale_720p.py [--frames 3] [--tiles 128 256] [--overlap 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
from torch import nn

from fedvsr.config import load_config
from fedvsr.data.video import write_video
from fedvsr.fl.strategy import float_state
from fedvsr.models import build_model, count_params
from fedvsr.platform.checkpoint import save_arrays


def synthetic_720p(frames: int, seed: int = 0) -> np.ndarray:
    """``(frames, 720, 1280, 3)`` uint8: a smooth-noise + grating canvas panned 3 px right, 2 px down per frame."""
    rng = np.random.default_rng(seed)
    h, w = 720 + 2 * frames, 1280 + 3 * frames
    noise = torch.from_numpy(rng.random((1, 3, h // 16 + 2, w // 16 + 2))).float()
    canvas = torch.nn.functional.interpolate(noise, size=(h, w), mode="bicubic", align_corners=False)[0]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    canvas += 0.15 * torch.from_numpy(np.sin(0.35 * xx + 0.2 * yy) * (xx > w / 2))[None]
    img = (canvas.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return np.stack([img[2 * i : 2 * i + 720, 3 * i : 3 * i + 1280] for i in range(frames)])


def tile_pixels(h: int, w: int, tile: int, overlap: int) -> int:
    """LR pixels the model computes per frame, overlaps included (the work a tile size costs)."""
    from fedvsr.inference import tile_spans

    return sum(b - a for a, b, _, _ in tile_spans(h, tile, overlap)) * sum(
        b - a for a, b, _, _ in tile_spans(w, tile, overlap)
    )


def make_run(folder: Path) -> int:
    cfg = load_config()  # the defaults: the model `fedvsr simulate` trains without a config
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(cfg.to_yaml())
    torch.manual_seed(0)
    model = build_model(cfg.model.name, cfg.model.preset, cfg.model.options)
    if hasattr(model, "tail"):
        nn.init.normal_(model.tail.weight, std=0.02)
    save_arrays(folder / "model.safetensors", {k: v.numpy() for k, v in float_state(model).items()})
    return count_params(model)


def run_upscale(src: Path, dst: Path, run: Path, tile: int, overlap: int, threads: int) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "fedvsr.cli",
        "upscale",
        str(src),
        str(dst),
        "--checkpoint",
        str(run),
        "--device",
        "cpu",
        "--tile",
        str(tile),
        "--tile-overlap",
        str(overlap),
        "--quiet",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    log_out, log_err = dst.with_suffix(".out"), dst.with_suffix(".err")
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    with open(log_out, "w") as fo, open(log_err, "w") as fe:
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, env=env)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (Popen.wait would not give it)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    out, err = log_out.read_text(), log_err.read_text()
    if proc.returncode != 0:
        raise RuntimeError(f"fedvsr upscale failed ({proc.returncode}): {err}")
    m = re.search(r"([\d.]+) s/frame: model ([\d.]+), encode ([\d.]+)", out)
    with av.open(str(dst)) as c:
        s = c.streams.video[0]
        n = sum(1 for _ in c.decode(s))
        size, rate = (s.codec_context.width, s.codec_context.height), float(s.average_rate)
    return {
        "tile": tile,
        "overlap": overlap,
        "wall_seconds": wall,
        "seconds_per_frame": float(m.group(1)),
        "model_seconds_per_frame": float(m.group(2)),
        "encode_seconds_per_frame": float(m.group(3)),
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "output_frames": n,
        "output_size": size,
        "output_fps": rate,
        "load_1min_before_after": [load_before, os.getloadavg()[0]],
        "stdout": out.strip(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--tiles", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "upscale_720p"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = synthetic_720p(args.frames)
        write_video(tmp / "in.mp4", clip, fps=25, crf=18)
        params = make_run(tmp / "run")
        runs = []
        for tile in args.tiles:
            r = run_upscale(tmp / "in.mp4", tmp / f"out_{tile}.mp4", tmp / "run", tile, args.overlap, args.threads)
            assert r["output_frames"] == args.frames and r["output_size"] == (5120, 2880), r
            assert r["output_fps"] == 25, r
            r["tile_pixels_per_frame"] = tile_pixels(720, 1280, tile, args.overlap)
            print(
                f"tile {tile:4d}: {r['seconds_per_frame']:.2f} s/frame (model {r['model_seconds_per_frame']:.2f}, "
                f"encode {r['encode_seconds_per_frame']:.2f}), peak RSS {r['peak_rss_mib']:.0f} MiB",
                flush=True,
            )
            runs.append(r)
            write_result(out, runs, params, args)  # after every run: a partial result survives an interrupt


def write_result(out: Path, runs: list[dict], params: int, args: argparse.Namespace) -> None:
    a, b = runs[0], runs[-1]
    result = {
        "what": "fedvsr upscale, 1280x720 H.264 input -> 5120x2880 H.264 (libx264 crf 18, preset medium), CPU",
        "model": "efvsr/small (config default)",
        "params": params,
        "frames": args.frames,
        "threads": args.threads,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average_at_end": os.getloadavg(),
        "note": "shared 2-core machine loaded by other jobs (see each run's load averages): absolute times are "
        "pessimistic, and runs one after another can see different loads, so check the ratio against the "
        "pixels each tile size computes (tile_pixels_per_frame)",
        "runs": runs,
    }
    if len(runs) > 1:
        result.update(
            {
                "ratio_seconds_per_frame": b["seconds_per_frame"] / a["seconds_per_frame"],
                "ratio_model_seconds": b["model_seconds_per_frame"] / a["model_seconds_per_frame"],
                "ratio_peak_rss": b["peak_rss_mib"] / a["peak_rss_mib"],
                "ratio_of": f"tile {b['tile']} / tile {a['tile']}",
                "ratio_tile_pixels": b["tile_pixels_per_frame"] / a["tile_pixels_per_frame"],
            }
        )
        print(
            f"{result['ratio_of']}: {result['ratio_seconds_per_frame']:.2f}x time per frame, "
            f"{result['ratio_peak_rss']:.2f}x peak memory -> {out / 'result.json'}"
        )
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
