"""FCA2's autoencoder round trip after a short GT -> GT pretraining, for the (S, O) pairs of Table VI.

For each (group size S, overlap O), one FCA2 autoencoder (``mode = pretrain``: no cleaning, no backbone,
scale 1) trains on random 7-frame crops of built-in synthetic videos, then encodes and decodes held-out
7-frame clips; reported: the round-trip PSNR (RGB, peak 1) on the held-out clips, the number K of
compressed frames per 7, and the encode + decode time of one clip (all pairs timed one after another in
the same process, A B C ... A B C, so the times compare). Same seed, same data, same steps for every pair.

The Table VI trend to compare with (Vid4, 400k iterations, the paper's full-size autoencoder): PSNR falls
as S grows (6/2: 47.99, 9/3: 45.86, 12/4: 37.24, 18/8: 33.11 dB) and rises with overlap (6/0 -> 6/2:
+1.8 dB; 9/0 -> 9/3: +2.1 dB), while the time falls as S grows. A short CPU run is far from converged:
it shows the ordering, not the paper's decibels.

    python benchmarks/fca2_roundtrip.py [--steps 150] [--batch 2] [--lr 2e-3] [--features 16] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from fedvsr.data.synthetic import CLASSES, synth_video
from fedvsr.models import build_model, count_params
from fedvsr.models.base import charbonnier

PAIRS = [(6, 0), (6, 2), (9, 0), (9, 3), (12, 4), (18, 8)]
PAPER = {(6, 0): 46.15, (6, 2): 47.99, (9, 0): 43.75, (9, 3): 45.86, (12, 4): 37.24, (18, 8): 33.11}
PAPER_MS = {(6, 0): 44, (6, 2): 45, (9, 0): 30, (9, 3): 33, (12, 4): 29, (18, 8): 22}


def videos(count: int, seed: int, frames: int, size: int) -> torch.Tensor:
    clips = [synth_video(seed + i, CLASSES[i % len(CLASSES)], frames, size, size) for i in range(count)]
    return torch.from_numpy(np.stack(clips)).permute(0, 1, 4, 2, 3).float() / 255.0  # (v, t, c, h, w)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.clamp(0, 1) - b) ** 2).mean())
    return 10 * math.log10(1 / max(mse, 1e-12))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--size", type=int, default=64, help="synthetic frame size")
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "fca2_roundtrip"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n = 7
    train = videos(8, 100, 14, args.size)
    test = videos(len(CLASSES), 900, n, args.size)  # one held-out video of every class
    options = {"mode": "pretrain", "features": args.features, "blocks": 2, "flow_blocks": 2, "refine_features": 8,
               "refine_blocks": 1, "spynet_channels": [8, 16, 8, 4], "spynet_frozen_iters": args.steps // 10}
    rows = []
    for s, o in PAIRS:
        torch.manual_seed(0)
        rng = np.random.default_rng(0)
        model = build_model("fca2", "tiny", {**options, "group_size": s, "overlap": o})
        opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.99))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)
        start = time.perf_counter()
        for _ in range(args.steps):
            batch = []
            for _ in range(args.batch):
                v, t0 = rng.integers(len(train)), rng.integers(train.shape[1] - n + 1)
                y, x = rng.integers(args.size - args.patch + 1, size=2)
                batch.append(train[v, t0:t0 + n, :, y:y + args.patch, x:x + args.patch])
            gt = torch.stack(batch)
            loss = charbonnier(model(gt), gt)
            last = loss.item()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            model.count_iteration()
        train_s = time.perf_counter() - start
        model.eval()
        with torch.no_grad():
            value = float(np.mean([psnr(model(test[i:i + 1]), test[i:i + 1]) for i in range(len(test))]))
        rows.append({"group_size": s, "overlap": o, "K": model.autoencoder.num_compressed,
                     "params": count_params(model), "psnr": round(value, 2), "final_loss": round(last, 5),
                     "train_s": round(train_s, 1), "paper_psnr": PAPER[(s, o)], "paper_ms": PAPER_MS[(s, o)],
                     "model": model})
        print(f"S={s:2d} O={o} K={rows[-1]['K']} psnr {value:6.2f} dB  loss {last:.4f}  {train_s:.0f}s",
              flush=True)
    # encode + decode time of one held-out clip, the pairs interleaved (3 rounds, median)
    times: dict[int, list[float]] = {i: [] for i in range(len(rows))}
    with torch.no_grad():
        for _ in range(3):
            for i, r in enumerate(rows):
                t = time.perf_counter()
                r["model"](test[:1])
                times[i].append(time.perf_counter() - t)
    for i, r in enumerate(rows):
        r["roundtrip_ms"] = round(1000 * float(np.median(times[i])), 1)
        del r["model"]
    result = {"steps": args.steps, "batch": args.batch, "patch": args.patch, "frames": n, "size": args.size,
              "options": options, "threads": args.threads, "device": "cpu (shared, loaded machine)", "rows": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# FCA2 autoencoder round trip after {args.steps} steps of GT -> GT pretraining (synthetic, "
             f"{args.patch}x{args.patch} crops of 7 frames, batch {args.batch}, {args.features} features; "
             f"CPU, shared machine under load)", "",
             "| S | O | K (of 7 frames) | params | PSNR dB (ours) | round trip ms (ours) | PSNR dB (paper, Table VI) "
             "| ms (paper) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['group_size']} | {r['overlap']} | {r['K']} | {r['params']:,} | {r['psnr']:.2f} | "
                     f"{r['roundtrip_ms']:.0f} | {r['paper_psnr']:.2f} | {r['paper_ms']} |")
    (out / "result.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
