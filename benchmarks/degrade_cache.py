"""The papers' degradations measured on a few synthetic clips, and what the LR cache saves.

1. PSNR (Y, dB) of each codec's decoded output against the codec's input: H.264 at CRF 15 / 25 / 35 after
   FCA2's blur (sigma 1.5) and x4 subsampling; HEVC (no B-frames) at QP 22 / 27 / 32 / 37 after bicubic x4.
2. PSNR of each VSRGAN-suite operation's output (its parameters at the top of their default ranges) against
   the bicubic LR it starts from.
3. ``load_pair`` of one video with ``h264`` and with ``vsrgan``: the first call (decode + degrade + store),
   then the second (decode + cache hit), alternated over fresh cache folders; the ratio of the medians.

    python benchmarks/degrade_cache.py [--frames 8] [--size 256] [--repeats 3]

Timings share a loaded 2-core machine with other jobs; only the ratios measured in one run mean anything.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from fedvsr.data.datasets import load_pair
from fedvsr.data.degrade import apply_vsrgan_op, degrade_video
from fedvsr.data.resample import to_tensor, to_uint8
from fedvsr.data.synthetic import CLASSES, synth_video
from fedvsr.data.video import VideoEntry, write_video


def y_psnr(a: np.ndarray, b: np.ndarray) -> float:
    w = np.array([0.299, 0.587, 0.114])
    mse = np.mean((a.astype(np.float64) @ w - b.astype(np.float64) @ w) ** 2)
    return float(10 * np.log10(255**2 / mse))


OPS = {  # the top of each default range (data.vsrgan_* defaults)
    "blur": {"sigma": 1.5},
    "noise": {"std": 10 / 255, "noise_seed": 0},
    "contrast": {"brightness": 0.1, "contrast": 1.2},
    "frequency": {"gain": 0.5},
    "cutblur": {"top": 16, "left": 16, "height": 32, "width": 32, "factor": 4},
    "diffusion": {"steps": 4, "sigma": 0.7},
    "content": {"sigma": 3.0},
    "adaptive": {"sigmas": [0.75] * 4},
    "jpeg": {"quality": 30},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "degrade_cache"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    labels = [c for c in CLASSES][:4]
    clips = {lab: synth_video(0, lab, args.frames, args.size, args.size) for lab in labels}

    codec: dict[str, dict[str, float]] = {}
    for lab, hr in clips.items():
        blurred, bic = degrade_video(hr, "blur", 4), degrade_video(hr, "bicubic", 4)
        row = {f"crf{c}": y_psnr(degrade_video(hr, "h264", 4, crf=c), blurred) for c in (15, 25, 35)}
        row |= {f"qp{q}": y_psnr(degrade_video(hr, "hevc", 4, qp=q), bic) for q in (22, 27, 32, 37)}
        codec[lab] = row
        print(lab, {k: round(v, 2) for k, v in row.items()})

    ops: dict[str, dict[str, float]] = {}
    for lab, hr in clips.items():
        bic = degrade_video(hr, "bicubic", 4)
        x = to_tensor(bic)
        ops[lab] = {op: y_psnr(to_uint8(apply_vsrgan_op(x, op, p)), bic) for op, p in OPS.items()}

    timing: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v.mkv"
        write_video(path, clips[labels[0]], codec="ffv1", pix_fmt="bgr0")
        entry = VideoEntry(str(path), labels[0], "v")
        for name, params in (("h264", {"crf": 25}), ("vsrgan", {})):
            first, second = [], []
            for r in range(args.repeats):
                root = str(Path(tmp) / f"lr-{name}-{r}")
                t0 = time.perf_counter()
                a = load_pair(entry, name, 4, lr_cache=root, **params)
                t1 = time.perf_counter()
                b = load_pair(entry, name, 4, lr_cache=root, **params)
                t2 = time.perf_counter()
                assert np.array_equal(a.lr, b.lr)
                first.append(t1 - t0)
                second.append(t2 - t1)
            timing[name] = {
                "first_s": statistics.median(first),
                "cached_s": statistics.median(second),
                "ratio": statistics.median(first) / statistics.median(second),
            }
            print(name, timing[name])

    result = {
        "frames": args.frames,
        "size": args.size,
        "codec_psnr": codec,
        "vsrgan_op_psnr": ops,
        "load_pair": timing,
        "note": "timings on a shared, loaded 2-core machine; compare ratios only",
    }
    (out / "result.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"# Degradations on synthetic clips ({args.frames} frames, HR {args.size}x{args.size}, LR x4)",
        "",
        "PSNR (Y, dB) of the decoded codec output against the codec's input (blurred LR for H.264, bicubic LR "
        "for HEVC):",
        "",
        "| clip | " + " | ".join(codec[labels[0]]) + " |",
        "|---" * (1 + len(codec[labels[0]])) + "|",
    ]
    lines += [f"| {lab} | " + " | ".join(f"{v:.2f}" for v in row.values()) + " |" for lab, row in codec.items()]
    lines += [
        "",
        "PSNR (Y, dB) of each VSRGAN operation (top of its default range) against the bicubic LR:",
        "",
        "| clip | " + " | ".join(OPS) + " |",
        "|---" * (1 + len(OPS)) + "|",
    ]
    lines += [f"| {lab} | " + " | ".join(f"{v:.2f}" for v in row.values()) + " |" for lab, row in ops.items()]
    lines += [
        "",
        "load_pair, first call (degrade + store) vs second (cache hit), medians of "
        f"{args.repeats} (shared loaded machine: ratios only):",
        "",
        "| degradation | first s | cached s | ratio |",
        "|---|---|---|---|",
    ]
    lines += [f"| {n} | {t['first_s']:.3f} | {t['cached_s']:.3f} | {t['ratio']:.1f} |" for n, t in timing.items()]
    (out / "result.md").write_text("\n".join(lines) + "\n")
    print((out / "result.md").read_text())


if __name__ == "__main__":
    main()
