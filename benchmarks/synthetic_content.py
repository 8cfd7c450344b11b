"""What the synthetic content sets (data.content) give the default experiment: which classes the held-out
evaluation videos come from, and per class which images it films (natural classes), how hard x4 bicubic
super-resolution is and how much detail lies above the LR Nyquist frequency.

Writes benchmarks/results/synthetic_content/content.md (and .json).

    python benchmarks/synthetic_content.py [--videos 8] [--frames 8]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from fedvsr.config import load_config
from fedvsr.data.degrade import degrade_video
from fedvsr.data.natural import CLASS_SOURCES
from fedvsr.data.sources import split_holdout
from fedvsr.data.synthetic import CLASSES, CONTENT, synth_video, video_seed
from fedvsr.data.video import VideoEntry
from fedvsr.metrics import bicubic_upsample, psnr_y


def _tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=8, help="videos rendered per class")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "synthetic_content"))
    args = parser.parse_args()
    cfg = load_config(None, [])
    d = cfg.data
    result: dict = {"held_out": {}, "classes": {}}
    lines = [
        f"Default experiment: data.videos = {d.videos}, eval.holdout = {cfg.eval.holdout}, data.seed {d.seed}.",
        "",
        "| data.content | classes | classes of the held-out videos |",
        "|---|---|---|",
    ]
    for content, classes in CONTENT.items():
        entries = [VideoEntry("", classes[k % len(classes)], str(k)) for k in range(d.videos)]
        _, held = split_holdout(entries, cfg.eval.holdout, d.seed)
        labels = sorted(entries[i].label for i in held)
        result["held_out"][content] = labels
        lines.append(f"| {content} | {len(classes)} | {', '.join(labels)} |")
    lines += [
        "",
        f"Per class, {args.videos} videos of {args.frames} frames at {d.height}x{d.width}:",
        "",
        "| class | images filmed | bicubic x4 PSNR (Y, dB): mean (min-max) | luma power above 1/8 cycle/px "
        "| mean abs frame step |",
        "|---|---|---|---|---|",
    ]
    f = np.hypot(np.fft.fftfreq(d.height)[:, None], np.fft.fftfreq(d.width)[None])
    win = np.hanning(d.height)[:, None] * np.hanning(d.width)[None]
    for label in CLASSES:
        ps, hf, steps = [], [], []
        for s in range(args.videos):
            v = synth_video(
                video_seed(d.seed, s * len(CLASSES) + CLASSES.index(label)), label, args.frames, d.height, d.width
            )
            up = bicubic_upsample(_tensor(degrade_video(v, "bicubic", d.scale)), d.scale).clamp(0, 1)
            ps.append(psnr_y(up, _tensor(v), d.scale))
            y = v.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
            y -= y.mean(axis=(1, 2), keepdims=True)
            power = (np.abs(np.fft.fft2(y * win)) ** 2).mean(0)
            hf.append(power[f > 0.125].sum() / power.sum())
            steps.append(np.abs(np.diff(v.astype(np.float64), axis=0)).mean())
        row = {
            "images": list(CLASS_SOURCES.get(label, ())),
            "bicubic_psnr": float(np.mean(ps)),
            "bicubic_psnr_min": float(np.min(ps)),
            "bicubic_psnr_max": float(np.max(ps)),
            "hf_fraction": float(np.mean(hf)),
            "step": float(np.mean(steps)),
        }
        result["classes"][label] = row
        lines.append(
            f"| {label} | {', '.join(row['images']) or '(procedural)'} | {row['bicubic_psnr']:.2f} "
            f"({row['bicubic_psnr_min']:.1f}-{row['bicubic_psnr_max']:.1f}) | {row['hf_fraction']:.3f} | "
            f"{row['step']:.1f} |"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "content.md").write_text("\n".join(lines) + "\n")
    (out / "content.json").write_text(json.dumps(result, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
