"""FCA2 + BasicVSR against BasicVSR alone: inference on the same 100-frame clip, in one process, as a ratio.

Both at their paper sizes (``fca2/paper``: 9.76 M, ``basicvsr/paper``: 6.29 M), random weights (the time does
not depend on them), ``torch.no_grad``, eval mode, x4. FCA2 compresses each chunk of 7 frames into 3 (S = 9,
O = 3), so BasicVSR runs on 45 frames instead of 100; FCA2 adds its cleaning net (3 passes by the paper's
text), its encoder at the LR size and its decoder at the HR size. ``--presets`` names the FCA2 presets timed
(``paper``: RealBasicVSR-sized cleaning; ``paper-light``: cleaning sized to Table IV's budget, 7 of 57 ms);
``--clean-passes P ...`` adds ``fca2/paper`` with P passes (the authors' code stops after 1 in practice).
The runs alternate (A B C A B C ...) so all see the same machine load; the medians and their ratios are
reported. The FCA2 paper reports ~2x (Table I: 33 ms vs 67 ms per frame on an A6000 GPU).

    python benchmarks/fca2_inference.py [--frames 100] [--size 32] [--pairs 2] [--threads 1]
        [--presets paper paper-light] [--clean-passes 1] [--flops-only]

Also writes ``flops.md`` / ``flops.json``: FLOPs (2 per MAC, FlopCounterMode on the meta device) of the same
clip per stage (cleaning, flow guidance, encoder, backbone, decoder, refinement), which explain the ratio.

``--size`` is the LR frame size (HR = 4x); 32x32 keeps a 100-frame clip CPU-feasible.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from fedvsr.models import build_model, count_params

STAGES = (
    "cleaning",
    "autoencoder.flow",
    "autoencoder.encoder",
    "backbone",
    "autoencoder.decoder",
    "autoencoder.refine",
)


def variants(presets: list[str], clean_passes: list[int]) -> list[tuple[str, str, str, dict]]:
    """``(label, model, preset, options)`` of BasicVSR and every FCA2 variant timed."""
    specs = [("basicvsr", "basicvsr", "paper", {})]
    specs += [(f"fca2/{p}", "fca2", p, {"mode": "joint"}) for p in presets]
    specs += [
        (f"fca2/paper (clean_passes={p})", "fca2", "paper", {"mode": "joint", "clean_passes": p}) for p in clean_passes
    ]
    return specs


def flop_breakdown(frames: int, size: int, specs: list[tuple[str, str, str, dict]]) -> list[dict]:
    """GFLOPs of one clip per model and per FCA2 stage (meta device: shapes only, nothing computed)."""
    from torch.utils.flop_counter import FlopCounterMode

    rows = []
    for label, name, preset, opts in specs:
        with torch.device("meta"):
            model = build_model(name, preset, opts).eval()
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                model(torch.rand(1, frames, 3, size, size))
        counts = counter.get_flop_counts()
        row = {"model": label, "gflops": round(counter.get_total_flops() / 1e9, 1)}
        if name == "fca2":
            for stage in STAGES:
                row[stage] = round(sum(counts.get(f"FCA2.{stage}", {}).values()) / 1e9, 1)
        rows.append(row)
    return rows


def stage_clocks(model: torch.nn.Module) -> dict[str, float]:
    """Seconds spent in each FCA2 stage (forward hooks on its submodules; summed over calls, e.g. the encoder
    runs once per group), reset by the caller; the rest of a forward (chunking, stacking, frame averaging,
    colour correction) is the total minus their sum."""
    spent: dict[str, float] = {}
    modules = dict(model.named_modules())
    for stage in STAGES:
        module = modules.get(stage)
        if module is None:
            continue
        spent[stage] = 0.0

        def pre(_m, _x, stage=stage):
            spent[f"_{stage}"] = time.perf_counter()

        def post(_m, _x, _y, stage=stage):
            spent[stage] += time.perf_counter() - spent.pop(f"_{stage}")

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)
    return spent


def stage_shares(runs: list[dict[str, float]], totals: list[float]) -> dict[str, float]:
    """Median over the runs of each stage's share of the run's time, and of the rest (``other``)."""
    if not runs or not runs[0]:
        return {}
    shares = {k: statistics.median(r[k] / t for r, t in zip(runs, totals, strict=True)) for k in runs[0]}
    shares["other"] = statistics.median(1 - sum(r.values()) / t for r, t in zip(runs, totals, strict=True))
    return {k: round(v, 4) for k, v in shares.items()}


def timed(model: torch.nn.Module, clip: torch.Tensor) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        out = model(clip)
    elapsed = time.perf_counter() - start
    assert out.shape[1] == clip.shape[1]
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--presets", nargs="*", default=["paper", "paper-light"], help="FCA2 presets to time")
    parser.add_argument(
        "--clean-passes", type=int, nargs="*", default=[], help="also fca2/paper with these numbers of cleaning passes"
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "fca2_inference"))
    parser.add_argument("--flops-only", action="store_true", help="only the FLOP breakdown (seconds)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    specs = variants(args.presets, args.clean_passes)
    flops = flop_breakdown(args.frames, args.size, specs)
    (out / "flops.json").write_text(
        json.dumps({"frames": args.frames, "lr_size": args.size, "rows": flops}, indent=2) + "\n"
    )
    lines = [
        f"# GFLOPs of one {args.frames}-frame clip, LR {args.size}x{args.size}, x4 (2 FLOPs per MAC)",
        "",
        "| model | total | " + " | ".join(STAGES) + " |",
        "|---|---|" + "---|" * len(STAGES),
    ]
    for r in flops:
        lines.append(f"| {r['model']} | {r['gflops']} | " + " | ".join(str(r.get(k, "")) for k in STAGES) + " |")
    (out / "flops.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    if args.flops_only:
        return
    torch.manual_seed(0)
    clip = torch.rand(1, args.frames, 3, args.size, args.size)
    models = {label: build_model(name, preset, opts).eval() for label, name, preset, opts in specs}
    times: dict[str, list[float]] = {k: [] for k in models}
    clocks = {name: stage_clocks(model) for name, model in models.items()}
    stage_runs: dict[str, list[dict[str, float]]] = {k: [] for k in models}
    for _ in range(args.pairs):
        for name, model in models.items():
            clocks[name].update(dict.fromkeys(clocks[name], 0.0))
            times[name].append(timed(model, clip))
            stage_runs[name].append(dict(clocks[name]))
            print(f"{name:<32} {times[name][-1]:8.2f} s", flush=True)
    base = statistics.median(times["basicvsr"])
    gflops = {r["model"]: r["gflops"] for r in flops}
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        rows.append(
            {
                "model": name,
                "params": count_params(models[name]),
                "gflops": gflops[name],
                "median_s": round(med, 3),
                "ms_per_frame": round(1000 * med / args.frames, 2),
                "speedup_vs_basicvsr": round(base / med, 3),
                "runs_s": [round(t, 3) for t in ts],
                "stage_share": stage_shares(stage_runs[name], ts),
            }
        )
    result = {
        "frames": args.frames,
        "lr_size": args.size,
        "hr_size": 4 * args.size,
        "threads": args.threads,
        "pairs": args.pairs,
        "device": "cpu (shared, loaded machine)",
        "rows": rows,
        "paper_speedup": round(67 / 33, 2),
    }
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# FCA2 + BasicVSR vs BasicVSR: {args.frames}-frame clip, LR {args.size}x{args.size} -> "
        f"HR {4 * args.size}x{4 * args.size}, CPU, {args.threads} thread(s), median of {args.pairs} "
        f"(shared machine under load: compare the ratio, not the seconds)",
        "",
        "| model | params | GFLOPs | median s | ms / frame | speed-up vs BasicVSR |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['params'] / 1e6:.2f} M | {r['gflops']} | {r['median_s']:.2f} | "
            f"{r['ms_per_frame']:.1f} | {r['speedup_vs_basicvsr']:.2f}x |"
        )
    lines.append(f"\nFCA2 paper, Table I (A6000 GPU, Vid4): 67 ms -> 33 ms per frame, {67 / 33:.2f}x.")
    lines += [
        "",
        "Share of each FCA2 run's time per stage (median over the runs; `other`: chunking, stacking, frame "
        "averaging, colour correction):",
        "",
        "| model | " + " | ".join((*STAGES, "other")) + " |",
        "|---|" + "---|" * (len(STAGES) + 1),
    ]
    for r in rows:
        if r["stage_share"]:
            lines.append(
                f"| {r['model']} | "
                + " | ".join(f"{100 * r['stage_share'].get(k, 0):.0f} %" for k in (*STAGES, "other"))
                + " |"
            )
    (out / "result.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
