"""The FedVSR paper's Table 1 and Table 2 protocols on the built-in data, with replicates and intervals.

Table 1: FedAvg, FedProx (mu = 1e-3), SCAFFOLD and FedVSR under the random ("less heterogeneous"), by-class
("more heterogeneous") and by-degradation (each client its own degradation) partitions. Table 2, the
ablations: FedAvg, F-DWT (FedAvg + the DWT loss, ``fedavg-dwt``), F-GLA (greedy loss-aware aggregation,
``fedvsr-gla``), F-ALA (adaptive, with decay, ``fedvsr-ala``) and FedVSR. Every cell is the default
experiment (its recipe, data and model) under ``--replicates`` training seeds with the data seed fixed, so
replicate r of every strategy sees the same data, split, client sampling and initial model: each strategy is
compared with FedAvg seed by seed (paired t-test, Holm-corrected over a partition's strategies), and a
difference whose interval holds zero is a tie.

    python benchmarks/paper_tables.py [--replicates 3] [--partitions random by-class by-degradation]
        [--strategies FedAvg FedProx SCAFFOLD FedVSR F-DWT F-GLA F-ALA] [--set key=value ...]
        [--work DIR] [--out benchmarks/results/paper_tables]

The runs go to ``--work`` (run folders with checkpoints; an interrupted call continues where it stopped, a
finished cell is read, not run again); ``--out`` gets the small results: ``tables.md`` (both tables),
``rounds.parquet`` (every round of every replicate), ``summary.json``, ``psnr_<partition>.png`` (mean and
95% band per round) and ``paired_rounds.parquet`` (each strategy against FedAvg at every round: the paired
difference, its interval, the raw p-value and the p-value Holm-corrected over the rounds, since looking at every
round and picking one is a multiple comparison of its own).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from fedvsr.config import load_config
from fedvsr.platform.replicates import is_replicate_group, run_replicates
from fedvsr.platform.run import init_ray
from fedvsr.stats import compare, holm, mean_interval, verdict

STRATEGIES = {
    "FedAvg": ["fl.strategy=fedavg"],
    "FedProx": ["fl.strategy=fedprox", "fl.mu=0.001"],  # the paper: any mu > 1e-3 hurts VSR
    "SCAFFOLD": ["fl.strategy=scaffold"],
    "FedVSR": ["fl.strategy=fedvsr"],
    "F-DWT": ["fl.strategy=fedavg-dwt"],
    "F-GLA": ["fl.strategy=fedvsr-gla"],
    "F-ALA": ["fl.strategy=fedvsr-ala"],
}
TABLE1 = ("FedAvg", "FedProx", "SCAFFOLD", "FedVSR")
TABLE2 = ("FedAvg", "F-DWT", "F-GLA", "F-ALA", "FedVSR")
PARTITIONS = {
    "random": "less heterogeneous (random)",
    "by-class": "more heterogeneous (by-class)",
    "by-degradation": "device heterogeneity (by-degradation)",
}
REFERENCE = "FedAvg"


def run_cells(
    partitions: list[str], strategies: list[str], n: int, extra: list[str], work: Path, collect_only: bool = False
) -> dict:
    """Run (or read) every (partition, strategy) cell; returns {(partition, strategy): group folder}. With
    ``collect_only`` only the finished cells are read and nothing runs."""
    cells = {}
    for part in partitions:
        for name in strategies:
            out = work / part / name
            if (out / "summary.json").is_file():
                cells[part, name] = out
                continue
            if collect_only:
                continue
            cells[part, name] = out
            cfg = load_config(None, [f"fl.partition={part}", *STRATEGIES[name], *extra])
            start = time.time()
            s = run_replicates(cfg, out, n, resume=is_replicate_group(out))
            print(
                f"{part:15s} {name:9s} final {s['final_psnr']:.3f} +- "
                f"{(s['final_psnr_high'] - s['final_psnr_low']) / 2:.3f} dB (n={n})  ({time.time() - start:.0f} s)",
                flush=True,
            )
    return cells


def _finals(group: Path, key: str = "final_psnr") -> dict[int, float]:
    s = json.loads((group / "summary.json").read_text())
    return {p["seed"]: p[key] for p in s["per_replicate"]}


def table(cells: dict, partitions: list[str], strategies: tuple[str, ...]) -> list[str]:
    """Markdown rows: mean +- 95% half-width of the final and best PSNR and final SSIM, the gain over bicubic,
    and the paired difference with FedAvg (interval, Holm-adjusted p, verdict)."""
    lines = [
        "| partition | strategy | final PSNR (dB) | gain over bicubic | best PSNR | final SSIM | "
        f"vs {REFERENCE}: paired difference | p (Holm) | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for part in partitions:
        names = [s for s in strategies if (part, s) in cells]
        if not names:
            continue
        ref = _finals(cells[part, REFERENCE]) if REFERENCE in names else None
        others = [s for s in names if s != REFERENCE]
        comps = {s: compare(_finals(cells[part, s]), ref) for s in others} if ref else {}
        adjusted = dict(zip(others, holm([comps[s].p for s in others]), strict=True)) if comps else {}
        for s in names:
            summ = json.loads((cells[part, s] / "summary.json").read_text())
            cols = [
                _pm(summ, "final_psnr", 3),
                _pm(summ, "gain_db", 3, sign=True),
                _pm(summ, "best_psnr", 3),
                _pm(summ, "final_ssim", 4),
            ]
            if s in comps:
                c, p = comps[s], adjusted[s]
                cols += [f"{c.diff.mean:+.3f} [{c.diff.low:+.3f}, {c.diff.high:+.3f}]", f"{p:.3g}", verdict(c, p)]
            else:
                cols += ["-", "-", "reference" if s == REFERENCE else "-"]
            lines.append(f"| {PARTITIONS[part]} | {s} | " + " | ".join(cols) + " |")
    return lines


def _pm(summary: dict, key: str, digits: int, sign: bool = False) -> str:
    mean, low, high = summary[key], summary[f"{key}_low"], summary[f"{key}_high"]
    text = f"{mean:+.{digits}f}" if sign else f"{mean:.{digits}f}"
    return f"{text} +- {(high - low) / 2:.{digits}f}"


def collect(cells: dict) -> list[dict]:
    """Every round of every replicate of every cell, as rows."""
    rows = []
    for (part, name), group in cells.items():
        meta = json.loads((group / "replicates.json").read_text())
        for r, seed in enumerate(meta["seeds"]):
            summ = json.loads((group / f"rep-{r}" / "summary.json").read_text())
            rows.append(
                {
                    "partition": part,
                    "strategy": name,
                    "replicate": r,
                    "seed": seed,
                    "round": 0,
                    "psnr": summ["initial_psnr"],
                    "ssim": summ["initial_ssim"],
                    "train_loss": None,
                    "bicubic_psnr": summ["bicubic_psnr"],
                }
            )
            for x in pq.read_table(group / f"rep-{r}" / "rounds.parquet").to_pylist():
                rows.append(
                    {
                        "partition": part,
                        "strategy": name,
                        "replicate": r,
                        "seed": seed,
                        "round": x["round"],
                        "psnr": x["psnr"],
                        "ssim": x["ssim"],
                        "train_loss": x["train_loss"],
                        "bicubic_psnr": summ["bicubic_psnr"],
                    }
                )
    return rows


def by_round(rows: list[dict], partitions: list[str], strategies: list[str]) -> tuple[list[dict], list[str]]:
    """Each strategy against FedAvg at every round, paired by seed: rows for ``paired_rounds.parquet`` and one
    Markdown line per (partition, strategy) naming the round of the largest mean difference and the rounds whose
    raw p-value is below 0.05, with the p-values Holm-corrected over the rounds."""
    out, lines = [], []
    for part in partitions:

        def psnr(name: str, part: str = part) -> dict:
            return {(r["round"], r["seed"]): r["psnr"] for r in rows if (r["partition"], r["strategy"]) == (part, name)}

        ref = psnr(REFERENCE)
        for s in strategies:
            mine = psnr(s)
            if s == REFERENCE or not mine or not ref:
                continue
            rounds = sorted({t for t, _ in mine if t > 0})
            comps = [
                compare(
                    {k: v for (t, k), v in mine.items() if t == rnd}, {k: v for (t, k), v in ref.items() if t == rnd}
                )
                for rnd in rounds
            ]
            adjusted = holm([c.p for c in comps])
            for rnd, c, p_holm in zip(rounds, comps, adjusted, strict=True):
                out.append(
                    {
                        "partition": part,
                        "strategy": s,
                        "round": rnd,
                        "diff": c.diff.mean,
                        "low": c.diff.low,
                        "high": c.diff.high,
                        "p": c.p,
                        "p_holm_rounds": p_holm,
                    }
                )
            top = max(range(len(rounds)), key=lambda i: abs(comps[i].diff.mean))

            def which(ps: list[float], sign: int, rounds: list = rounds, comps: list = comps) -> str:
                hits = [
                    str(r) for r, c, p in zip(rounds, comps, ps, strict=True) if p < 0.05 and c.diff.mean * sign > 0
                ]
                return ", ".join(hits) or "none"

            raw = [c.p for c in comps]
            lines.append(
                f"- {PARTITIONS[part]}, {s} - {REFERENCE}: largest mean difference "
                f"{comps[top].diff.mean:+.3f} dB [{comps[top].diff.low:+.3f}, {comps[top].diff.high:+.3f}] at "
                f"round {rounds[top]} (raw p {comps[top].p:.3g}, Holm over the {len(rounds)} rounds "
                f"{adjusted[top]:.3g}); raw p < 0.05: ahead at rounds {which(raw, 1)}, behind at "
                f"{which(raw, -1)}; Holm-corrected p < 0.05: ahead at {which(adjusted, 1)}, behind at "
                f"{which(adjusted, -1)}"
            )
    return out, lines


def plot(rows: list[dict], part: str, strategies: list[str], path: Path) -> None:
    """Mean PSNR per round with its 95% band over the replicates, one line per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    bicubic, top, curves = None, None, {}
    for s in strategies:
        rs = [r for r in rows if r["partition"] == part and r["strategy"] == s]
        if rs:
            bicubic = rs[0]["bicubic_psnr"]
            rounds = sorted({r["round"] for r in rs})
            curves[s] = rounds, [mean_interval([r["psnr"] for r in rs if r["round"] == t]) for t in rounds]
    # the axis shows bicubic - 0.5 dB and up: a strategy that breaks down (SCAFFOLD) would otherwise flatten the
    # others into one line; its legend entry says that it leaves the axis, and its band is not drawn
    bottom = bicubic - 0.5 if bicubic is not None else None
    for i, (s, (rounds, ivs)) in enumerate(curves.items()):
        below = [t for t, iv in zip(rounds, ivs, strict=True) if bottom is not None and iv.mean < bottom]
        label = f"{s} (n={ivs[-1].n})" + (f"; below the axis in {len(below)} rounds" if below else "")
        ax.plot(rounds, [iv.mean for iv in ivs], "-", color=f"C{i}", label=label)
        if not below:  # a broken-down strategy's band spans tens of dB: its line says enough
            ax.fill_between(rounds, [iv.low for iv in ivs], [iv.high for iv in ivs], color=f"C{i}", alpha=0.2, lw=0)
        top = max([top or -1e9, *(iv.mean for iv in ivs)])
    if bicubic is not None:
        ax.axhline(bicubic, color="gray", linestyle=":", label=f"bicubic ({bicubic:.2f} dB)")
        ax.set_ylim(bottom, top + 0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("PSNR (dB, Y)")
    ax.set_title(f"{PARTITIONS[part]}: mean and 95% interval over replicates")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicates", type=int, default=3)
    parser.add_argument("--partitions", nargs="+", default=list(PARTITIONS), choices=list(PARTITIONS))
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    parser.add_argument("--set", action="append", default=[], help="extra config overrides for every run")
    parser.add_argument("--work", default="runs/paper-tables", help="run folders (resumable)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "paper_tables"))
    parser.add_argument("--collect-only", action="store_true", help="run nothing: the tables of the finished cells")
    args = parser.parse_args()
    work, out = Path(args.work), Path(args.out)
    if not args.collect_only:
        init_ray(load_config(None, args.set))  # one Ray for every run
    cells = run_cells(args.partitions, args.strategies, args.replicates, args.set, work, args.collect_only)
    out.mkdir(parents=True, exist_ok=True)
    rows = collect(cells)
    pq.write_table(pa.Table.from_pylist(rows), out / "rounds.parquet")
    summaries = {f"{p}/{s}": json.loads((g / "summary.json").read_text()) for (p, s), g in cells.items()}
    (out / "summary.json").write_text(json.dumps(summaries, indent=1) + "\n")
    text = [
        f"# The FedVSR paper's tables on the built-in data ({args.replicates} replicates per cell)",
        "",
        f"Overrides: {' '.join(args.set) or '(none: the default experiment)'}. Mean +- half-width of the 95% "
        "t interval over the replicates; the paired difference with FedAvg per training seed, its 95% interval "
        "and Holm-adjusted p-value (within a partition); 'tie' when p >= 0.05.",
        "",
        "## Table 1",
        "",
        *table(cells, args.partitions, TABLE1),
        "",
        "## Table 2 (ablations)",
        "",
        *table(cells, args.partitions, TABLE2),
        "",
    ]
    paired, lines = by_round(rows, args.partitions, [s for s in STRATEGIES if any(n == s for _, n in cells)])
    if paired:
        pq.write_table(pa.Table.from_pylist(paired), out / "paired_rounds.parquet")
        text += ["## Every round against FedAvg (paired by seed)", "", *lines, ""]
    (out / "tables.md").write_text("\n".join(text))
    for part in args.partitions:
        if any(p == part for p, _ in cells):
            plot(rows, part, [s for s in STRATEGIES if (part, s) in cells], out / f"psnr_{part}.png")
    print("\n".join(text))


if __name__ == "__main__":
    main()
