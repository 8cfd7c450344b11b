"""A small replication of the FedVSR paper's Table 1 protocol on the built-in synthetic videos.

FedAvg, FedProx, SCAFFOLD and FedVSR, each under the "less heterogeneous" (random), the "more heterogeneous"
(one content class per client) and the device-heterogeneous (by-degradation: random's split, each client's own
degradation) partitions; same seed, same data, same model.
Writes benchmarks/results/table1.parquet (one row per run and round), prints a Markdown table of
final / best PSNR and SSIM, and plots PSNR per round per strategy like the paper's Fig. 2.
The data and recipe are the default experiment's: the natural classes (scikit-image's photographs under camera
motion, each class its own images), efvsr/small, LR patches of 16, 64 clips a video, batch 4, Adam at 2e-3 under a
cosine schedule over the ``--rounds`` rounds (benchmarks/results/default_recipe); ``--set data.content=procedural``
gives the earlier gratings / checkerboards / noise.

    python benchmarks/fl_table1.py [--rounds 20] [--set key=value ...]
    # strategies in separate processes (e.g. two at a time), then one table of all of them:
    python benchmarks/fl_table1.py --strategies FedAvg FedVSR --out /tmp/t1a
    python benchmarks/fl_table1.py --strategies FedProx SCAFFOLD --out /tmp/t1b
    python benchmarks/fl_table1.py --merge /tmp/t1a /tmp/t1b --out benchmarks/results
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from fedvsr.config import load_config
from fedvsr.platform.run import init_ray, run_experiment

STRATEGIES = {
    "FedAvg": ["fl.strategy=fedavg"],
    "FedProx": ["fl.strategy=fedprox", "fl.mu=0.001"],  # the paper: any mu > 1e-3 hurts VSR
    "SCAFFOLD": ["fl.strategy=scaffold"],
    "FedVSR": ["fl.strategy=fedvsr"],
}
PARTITIONS = {
    "less heterogeneous (random)": "random",
    "more heterogeneous (by-class)": "by-class",
    "device heterogeneous (by-degradation)": "by-degradation",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--set", action="append", default=[], help="extra config overrides")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    parser.add_argument("--partitions", nargs="+", default=list(PARTITIONS.values()), choices=list(PARTITIONS.values()))
    parser.add_argument(
        "--merge",
        nargs="+",
        metavar="DIR",
        help="run nothing: merge the table1.* of these output folders (same data and settings) into --out",
    )
    args = parser.parse_args()
    if args.merge:
        merge([Path(d) for d in args.merge], Path(args.out))
        return
    strategies = {k: v for k, v in STRATEGIES.items() if k in args.strategies}
    partitions = {k: v for k, v in PARTITIONS.items() if v in args.partitions}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fedvsr-table1-"))
    init_ray(load_config(None, args.set))  # one Ray for all runs
    rows, finals = [], []
    for part_name, part in partitions.items():
        for strat_name, sets in strategies.items():
            cfg = load_config(None, [f"fl.rounds={args.rounds}", f"fl.partition={part}", *sets, *args.set])
            start = time.time()
            history: list[dict] = []
            summary = run_experiment(cfg, work / f"{part}-{strat_name}", on_round=history.append)
            took = time.time() - start
            bicubic = {"bicubic_psnr": summary["bicubic_psnr"], "bicubic_ssim": summary["bicubic_ssim"]}
            rows.append(
                {
                    "partition": part,
                    "strategy": strat_name,
                    "round": 0,
                    "psnr": summary["initial_psnr"],
                    "ssim": summary["initial_ssim"],
                    **bicubic,
                }
            )  # the initial model
            for r in history:
                rows.append({"partition": part, "strategy": strat_name, **r, **bicubic})
            finals.append((part_name, strat_name, summary, took))
            print(
                f"{part:9s} {strat_name:9s} final {summary['final_psnr']:.2f} dB  best {summary['best_psnr']:.2f}"
                f"  ({took:.0f} s)",
                flush=True,
            )
    pq.write_table(pa.Table.from_pylist(rows), out / "table1.parquet")
    # bicubic per row: by-degradation's evaluation clips are degraded by every device kind, the others' by bicubic
    lines = [HEADER, "|---|---|---|---|---|---|---|---|"]
    for part_name, strat_name, s, took in finals:
        lines.append(
            f"| {part_name} | {strat_name} | {s['final_psnr']:.2f} | {s['final_ssim']:.4f} | "
            f"{s['best_psnr']:.2f} | {s['final_psnr'] - s['bicubic_psnr']:+.2f} | "
            f"{s['bicubic_psnr']:.2f} / {s['bicubic_ssim']:.4f} | {took / 60:.1f} |"
        )
    table = "\n".join(lines)
    (out / "table1.md").write_text(table + "\n")
    print(table)
    plot(rows, out / "table1_psnr.png", strategies, partitions)
    shutil.rmtree(work, ignore_errors=True)


HEADER = (
    "| partition | strategy | final PSNR | final SSIM | best PSNR | final - bicubic | bicubic PSNR / SSIM | minutes |"
)


def merge(folders: list[Path], out: Path) -> None:
    """One table1.parquet / .md / _psnr.png of the runs saved in ``folders``, in this script's order."""
    rows = [r for d in folders for r in pq.read_table(d / "table1.parquet").to_pylist()]
    lines: dict[tuple[str, str], str] = {}
    bicubic: dict[str, str] = {}
    for d in folders:
        for line in (d / "table1.md").read_text().splitlines()[2:]:
            cells = [c.strip() for c in line.strip("|").split("|")]
            if bicubic.setdefault(cells[0], cells[6]) != cells[6]:
                raise ValueError(
                    f"{d}: {cells[0]} bicubic {cells[6]} differs from {bicubic[cells[0]]}: not the same data"
                )
            lines[cells[0], cells[1]] = line
    order = [(p, s) for p in PARTITIONS for s in STRATEGIES if (p, s) in lines]
    table = "\n".join([HEADER, "|---|---|---|---|---|---|---|---|", *(lines[k] for k in order)])
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), out / "table1.parquet")
    (out / "table1.md").write_text(table + "\n")
    print(table)
    strategies = {s: None for s in STRATEGIES if any(k[1] == s for k in order)}
    partitions = {k: v for k, v in PARTITIONS.items() if any(o[0] == k for o in order)}
    plot(rows, out / "table1_psnr.png", strategies, partitions)


def plot(rows: list[dict], path: Path, strategies: dict, partitions: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(partitions), figsize=(5.5 * len(partitions), 4), dpi=100, sharey=True, squeeze=False
    )
    axes = axes[0]
    for ax, (title, part) in zip(axes, partitions.items(), strict=True):
        for strat in strategies:
            rs = [r for r in rows if r["partition"] == part and r["strategy"] == strat]
            ax.plot([r["round"] for r in rs], [r["psnr"] for r in rs], marker=".", label=strat)
        ax.axhline(
            next(r["bicubic_psnr"] for r in rows if r["partition"] == part),
            color="gray",
            linestyle="--",
            label="bicubic",
        )
        ax.set_title(title)
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("PSNR (dB, Y)")
    axes[-1].legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
