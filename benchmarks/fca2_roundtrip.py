"""FCA2's autoencoder round trip after a short GT -> GT pretraining, for the (S, O) pairs of Table VI.

For each (group size S, overlap O) and each training seed, one FCA2 autoencoder (``mode = pretrain``: no
cleaning, no backbone, scale 1) trains on random 7-frame crops of built-in synthetic videos, then encodes and
decodes held-out 7-frame clips; reported: the round-trip PSNR (RGB, peak 1) on the held-out clips, the number
K of compressed frames per 7, and the encode + decode time of one clip (all models timed one after another in
the same process, A B C ... A B C, so the times compare). The data are the same for every run; a seed sets
the initial weights and the crops drawn, and seed r of every pair draws the same crops, so the pairs are
compared paired by seed: per pair, mean +- the 95% Student-t interval over the seeds; per two pairs, the
paired difference with its interval and p-value, Holm-adjusted over all 15 comparisons (``fedvsr.stats``).

The grouping is ``group_fit = pad`` by default (eq. 3 read literally: the stack is padded with zero channels
up to K (S - O) + O, so adjacent groups share exactly O channels and the O = 0 rows are overlap-free, as in
Table VI); ``--group-fit shift`` is the older reading (the last group shifted back onto real channels).

The Table VI trend to compare with (Vid4, 400k iterations, the paper's full-size autoencoder): PSNR falls
as S grows (6/2: 47.99, 9/3: 45.86, 12/4: 37.24, 18/8: 33.11 dB) and rises with overlap (6/0 -> 6/2:
+1.8 dB; 9/0 -> 9/3: +2.1 dB), while the time falls as S grows. A short CPU run is far from converged:
it shows the ordering, not the paper's decibels.

    python benchmarks/fca2_roundtrip.py [--steps 150] [--seeds 0 1 2] [--batch 2] [--lr 2e-3] [--features 16]
        [--threads 1] [--group-fit pad]
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
from fedvsr.stats import holm, mean_interval, paired_test

PAIRS = [(6, 0), (6, 2), (9, 0), (9, 3), (12, 4), (18, 8)]
PAPER = {(6, 0): 46.15, (6, 2): 47.99, (9, 0): 43.75, (9, 3): 45.86, (12, 4): 37.24, (18, 8): 33.11}
PAPER_MS = {(6, 0): 44, (6, 2): 45, (9, 0): 30, (9, 3): 33, (12, 4): 29, (18, 8): 22}


def videos(count: int, seed: int, frames: int, size: int) -> torch.Tensor:
    clips = [synth_video(seed + i, CLASSES[i % len(CLASSES)], frames, size, size) for i in range(count)]
    return torch.from_numpy(np.stack(clips)).permute(0, 1, 4, 2, 3).float() / 255.0  # (v, t, c, h, w)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.clamp(0, 1) - b) ** 2).mean())
    return 10 * math.log10(1 / max(mse, 1e-12))


def train_one(
    s: int,
    o: int,
    seed: int,
    train: torch.Tensor,
    test: torch.Tensor,
    options: dict,
    args: argparse.Namespace,
    n: int = 7,
) -> tuple[dict, torch.nn.Module]:
    """Pretrain one autoencoder GT -> GT under ``seed`` (initial weights, crops) and score its round trip."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_model("fca2", "tiny", {**options, "group_size": s, "overlap": o})
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)
    start = time.perf_counter()
    for _ in range(args.steps):
        batch = []
        for _ in range(args.batch):
            v, t0 = rng.integers(len(train)), rng.integers(train.shape[1] - n + 1)
            y, x = rng.integers(args.size - args.patch + 1, size=2)
            batch.append(train[v, t0 : t0 + n, :, y : y + args.patch, x : x + args.patch])
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
        value = float(np.mean([psnr(model(test[i : i + 1]), test[i : i + 1]) for i in range(len(test))]))
    row = {
        "group_size": s,
        "overlap": o,
        "seed": seed,
        "K": model.autoencoder.num_compressed,
        "params": count_params(model),
        "psnr": round(value, 4),
        "final_loss": round(last, 5),
        "train_s": round(train_s, 1),
    }
    return row, model


def summarise(runs: list[dict]) -> tuple[list[dict], list[dict]]:
    """Per (S, O): mean, std, n and the 95% t interval of the round-trip PSNR over the seeds; per two pairs
    (a before b in PAIRS order): the paired difference a - b over shared seeds, its interval, its p-value and
    the Holm-adjusted p-value over all comparisons (distinguishable when that is below 0.05)."""
    by_pair: dict[tuple[int, int], dict[int, float]] = {}
    for r in runs:
        by_pair.setdefault((r["group_size"], r["overlap"]), {})[r["seed"]] = r["psnr"]
    pairs = [p for p in PAIRS if p in by_pair]
    settings = []
    for p in pairs:
        iv = mean_interval(list(by_pair[p].values()))
        settings.append(
            {
                "group_size": p[0],
                "overlap": p[1],
                "n": iv.n,
                "mean": iv.mean,
                "std": iv.std,
                "low": iv.low,
                "high": iv.high,
                "paper_psnr": PAPER[p],
                "paper_ms": PAPER_MS[p],
            }
        )
    tests = [(a, b, paired_test(by_pair[a], by_pair[b])) for i, a in enumerate(pairs) for b in pairs[i + 1 :]]
    adjusted = holm([c.p for _, _, c in tests])
    comparisons = [
        {
            "a": list(a),
            "b": list(b),
            "n": c.diff.n,
            "diff": c.diff.mean,
            "low": c.diff.low,
            "high": c.diff.high,
            "p": c.p,
            "p_holm": q,
            "distinguishable": bool(q < 0.05),
        }
        for (a, b, c), q in zip(tests, adjusted, strict=True)
    ]
    return settings, comparisons


def report(result: dict) -> str:
    """The Markdown of ``result.md``."""
    settings, comparisons = result["settings"], result["comparisons"]
    seeds = ", ".join(map(str, result["seeds"]))
    lines = [
        f"# FCA2 autoencoder round trip after {result['steps']} steps of GT -> GT pretraining (synthetic, "
        f"{result['patch']}x{result['patch']} crops of 7 frames, batch {result['batch']}, "
        f"{result['options']['features']} features, group_fit = {result['group_fit']}; seeds {seeds}; "
        f"CPU, shared machine under load)",
        "",
        "| S | O | K (of 7 frames) | PSNR dB, mean +- 95% t interval (n) | per seed | round trip ms (median) "
        "| PSNR dB (paper, Table VI) | ms (paper) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    runs = result["runs"]
    for st in settings:
        mine = [r for r in runs if (r["group_size"], r["overlap"]) == (st["group_size"], st["overlap"])]
        half = (st["high"] - st["low"]) / 2
        interval = f"{st['mean']:.2f} +- {half:.2f} ({st['n']})" if st["n"] > 1 else f"{st['mean']:.2f} (1)"
        per_seed = ", ".join(f"{r['psnr']:.2f}" for r in mine)
        ms = float(np.median([r["roundtrip_ms"] for r in mine]))
        lines.append(
            f"| {st['group_size']} | {st['overlap']} | {mine[0]['K']} | {interval} | {per_seed} | "
            f"{ms:.0f} | {st['paper_psnr']:.2f} | {st['paper_ms']} |"
        )
    lines += [
        "",
        "Paired differences a - b over the seeds (95% t interval), p-values Holm-adjusted over all "
        f"{len(comparisons)} comparisons; distinguishable when the adjusted p < 0.05:",
        "",
        "| a (S, O) | b (S, O) | a - b dB | 95% interval | p | p (Holm) | distinguishable |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        lines.append(
            f"| {tuple(c['a'])} | {tuple(c['b'])} | {c['diff']:+.3f} | [{c['low']:+.3f}, {c['high']:+.3f}] "
            f"| {c['p']:.3g} | {c['p_holm']:.3g} | {'yes' if c['distinguishable'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (replicates)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--size", type=int, default=64, help="synthetic frame size")
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--group-fit", default="pad", choices=("pad", "shift"))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "fca2_roundtrip"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n = 7
    train = videos(8, 100, 14, args.size)
    test = videos(len(CLASSES), 900, n, args.size)  # one held-out video of every class
    options = {
        "mode": "pretrain",
        "features": args.features,
        "blocks": 2,
        "flow_blocks": 2,
        "refine_features": 8,
        "refine_blocks": 1,
        "spynet_channels": [8, 16, 8, 4],
        "spynet_frozen_iters": args.steps // 10,
        "group_fit": args.group_fit,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs, models = [], []
    result = {
        "steps": args.steps,
        "batch": args.batch,
        "patch": args.patch,
        "frames": n,
        "size": args.size,
        "seeds": args.seeds,
        "group_fit": args.group_fit,
        "options": options,
        "threads": args.threads,
        "device": "cpu (shared, loaded machine)",
        "runs": runs,
    }
    for seed in args.seeds:  # seed-major: a stopped run keeps every finished seed (written after each)
        for s, o in PAIRS:
            row, model = train_one(s, o, seed, train, test, options, args, n)
            runs.append(row)
            models.append(model)
            print(
                f"seed {seed} S={s:2d} O={o} K={row['K']} psnr {row['psnr']:6.2f} dB  loss {row['final_loss']:.4f}"
                f"  {row['train_s']:.0f}s",
                flush=True,
            )
        (out / "runs.json").write_text(json.dumps(runs, indent=2) + "\n")
    # encode + decode time of one held-out clip, every model interleaved (3 rounds, median)
    times: list[list[float]] = [[] for _ in models]
    with torch.no_grad():
        for _ in range(3):
            for i, model in enumerate(models):
                t = time.perf_counter()
                model(test[:1])
                times[i].append(time.perf_counter() - t)
    for row, ts in zip(runs, times, strict=True):
        row["roundtrip_ms"] = round(1000 * float(np.median(ts)), 1)
    result["settings"], result["comparisons"] = summarise(runs)
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    text = report(result)
    (out / "result.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
