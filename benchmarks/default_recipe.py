"""The default experiment's recipe against the one before it (issue 22, item 6): gain over bicubic, its 95% interval
over training seeds, total client steps, and wall time side by side.

Runs, one after another in one session, in the order A B B A B: the old recipe (A: LR patches of 32, 16 clips a
video, batch 8, a constant rate; twice) and the new default (B: ``fedvsr simulate`` with no option, under
``seed`` 0, 1, 2; ``data.seed`` fixed), each as its own ``fedvsr simulate`` process, timed from start to exit. The
A / B wall-time ratio is that of the means (the machine is shared, so the absolute seconds are noisy). Copies each
run's ``summary.json``, ``rounds.parquet`` and ``config.yaml`` and writes ``result.md`` into the output folder.

    python benchmarks/default_recipe.py [--out benchmarks/results/default_recipe]
    python benchmarks/default_recipe.py --collect DIR   # no run: the table of runs already in DIR/<name>/
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq

from fedvsr.stats import mean_interval

OLD = ["data.patch=32", "data.samples_per_video=16", "fl.batch_size=8", "fl.lr_schedule=constant"]
#: (name, overrides) in the order they run: A B B A B
RUNS = [
    ("old-a1", OLD),
    ("new-seed0", ["seed=0"]),
    ("new-seed1", ["seed=1"]),
    ("old-a2", OLD),
    ("new-seed2", ["seed=2"]),
]
KEPT = ("summary.json", "rounds.parquet", "config.yaml")


def command(name: str, sets: list[str], work: Path) -> list[str]:
    return ["fedvsr", "simulate", "--out", str(work / name), *[a for s in sets for a in ("--set", s)]]


def row(name: str, folder: Path, seconds: float) -> dict:
    s = json.loads((folder / "summary.json").read_text())
    psnr = pq.read_table(folder / "rounds.parquet").column("psnr").to_pylist()
    steps = (
        sum(pq.read_table(folder / "clients.parquet").column("steps").to_pylist())
        if (folder / "clients.parquet").is_file()
        else json.loads((folder / "steps.json").read_text())["steps"]
    )
    b = s["bicubic_psnr"]
    return {
        "name": name,
        "seconds": seconds,
        "steps": steps,
        "gain": s["final_psnr"] - b,
        "best": s["best_psnr"] - b,
        "best_round": s["best_round"],
        "final_psnr": s["final_psnr"],
        "bicubic_psnr": b,
        "last5_range": max(psnr[-5:]) - min(psnr[-5:]),
        "curve": [p - b for p in psnr],
    }


def machine() -> str:
    """The CPU model and the kernel path torch picks on it."""
    import torch

    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            "unknown CPU",
        )
        if Path("/proc/cpuinfo").is_file()
        else "unknown CPU"
    )
    return f"{cpu}, torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()})"


def report(rows: list[dict], out: Path) -> str:
    old = [r for r in rows if r["name"].startswith("old")]
    new = [r for r in rows if r["name"].startswith("new")]
    ci = mean_interval([r["gain"] for r in new])
    ratio = (sum(r["seconds"] for r in new) / len(new)) / (sum(r["seconds"] for r in old) / len(old))
    lines = [
        "| run | recipe | final PSNR | gain over bicubic | best gain (round) | PSNR range, last 5 rounds | client "
        "steps | wall seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        recipe = "old: patch 32, 16 clips, batch 8, constant" if r["name"].startswith("old") else "new default"
        lines.append(
            f"| {r['name']} | {recipe} | {r['final_psnr']:.4f} | {r['gain']:+.4f} | {r['best']:+.4f} "
            f"({r['best_round']}) | {r['last5_range']:.3f} | {r['steps']} | {r['seconds']:.0f} |"
        )
    lines += [
        "",
        f"Bicubic: {rows[0]['bicubic_psnr']:.4f} dB (the same held-out clips in every run). Machine: "
        f"{machine()}, 2 workers of 1 CPU, shared with other jobs (so the seconds are noisy).",
        f"New default, final gain over bicubic over {ci.n} training seeds: mean {ci.mean:+.3f} dB, 95% interval "
        f"[{ci.low:+.3f}, {ci.high:+.3f}] (t, {ci.n - 1} df).",
        f"Wall time, new / old (means of {len(new)} and {len(old)} runs, run in the order "
        f"{' '.join(r['name'] for r in rows)}): {ratio:.2f}.",
        "",
        "Gain over bicubic per round (dB):",
        "",
        "| run | " + " | ".join(str(i + 1) for i in range(len(rows[0]["curve"]))) + " |",
        "|---|" + "---|" * len(rows[0]["curve"]),
    ]
    lines += [f"| {r['name']} | " + " | ".join(f"{g:+.2f}" for g in r["curve"]) + " |" for r in rows]
    lines += ["", "Commands (in this order, each timed from start to exit):", "", "```"]
    lines += [" ".join(command(n, s, Path("OUT"))) for n, s in RUNS] + ["```"]
    text = "\n".join(lines) + "\n"
    (out / "result.md").write_text(text)
    (out / "result.json").write_text(
        json.dumps(
            {"runs": rows, "ratio": ratio, "gain_mean": ci.mean, "gain_low": ci.low, "gain_high": ci.high}, indent=1
        )
        + "\n"
    )
    return text


def keep(src: Path, dst: Path, steps: int) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in KEPT:
        shutil.copy2(src / name, dst / name)
    (dst / "steps.json").write_text(json.dumps({"steps": steps}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "default_recipe"))
    parser.add_argument(
        "--collect", metavar="DIR", help="run nothing: the runs already in DIR (DIR/times.txt: 'name seconds' per line)"
    )
    args = parser.parse_args()
    out = Path(args.out)
    work = Path(args.collect) if args.collect else out / "work"
    seconds: dict[str, float] = {}
    if args.collect:
        for line in (work / "times.txt").read_text().splitlines():
            name, secs = line.split()[:2]
            seconds[name] = float(secs)
    else:
        for name, sets in RUNS:
            start = time.perf_counter()
            subprocess.run(command(name, sets, work), check=True, capture_output=True)
            seconds[name] = time.perf_counter() - start
    rows = [row(name, work / name, seconds[name]) for name, _ in RUNS]
    for r in rows:
        keep(work / r["name"], out / r["name"], r["steps"])
    if not args.collect:
        shutil.rmtree(work)
    print(report(rows, out), end="")


if __name__ == "__main__":
    main()
