"""The sweep of docs/benchmarks.md ("Sweeps: ASHA against every trial"), and ASHA's saving measured: the
shipped ``fedvsr-lambda-bounded`` sweep (FedVSR, lambda_vsr + lambda_hifr = 1, 9 points, 20 rounds, default data
and model) run twice in one go, first with the spec's ASHA scheduler, then with every trial run to the end.

    python benchmarks/sweep_asha.py [--out benchmarks/results/sweep_lambda_bounded] [--concurrent auto|K]
                                    [--pairs N] [--set key=value ...]

Each sweep goes through the ``fedvsr`` command exactly as a user runs it, in a fresh process (its own
local Ray). Writes, under ``--out``: ``asha.json`` (wall seconds of both sweeps and their ratio, rounds run
per trial and the ratio of rounds trained, the target -- wall-time ratio at most the rounds ratio + 0.05 --,
each sweep's winner and utilisation), both sweeps' ``trials.parquet`` / ``sweep.yaml`` and command output,
each sweep's ``timeline.parquet`` (a row per trial step; its time budget goes into ``asha.json``),
``best.yaml`` (``fedvsr best`` on the ASHA sweep), ``top.txt`` (``fedvsr best --top 9`` on both) and the
``fedvsr report`` of the ASHA sweep. ``--pairs N`` runs the two N times, A B A B (files of pair k end in
``-k``; ``asha.json`` has a ratio per pair), and ``<sweep>_rounds.parquet`` keeps every trial's per-round
seconds. The trials' run folders (weights, checkpoints) stay in a temporary folder and are deleted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from fedvsr.sweeps.spec import spec_path

SPEC = "fedvsr-lambda-bounded"


def fedvsr(*args: str, log: Path | None = None) -> str:
    """Run ``fedvsr ARGS`` in a fresh process; returns its stdout (and keeps everything it printed in ``log``)."""
    proc = subprocess.run([sys.executable, "-m", "fedvsr.cli", *args], capture_output=True, text=True)
    if log is not None:
        log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"fedvsr {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "sweep_lambda_bounded"))
    parser.add_argument("--set", action="append", default=[], help="config overrides for every trial")
    parser.add_argument("--concurrent", default="auto", help="fedvsr sweep --concurrent (default: auto)")
    parser.add_argument("--pairs", type=int, default=1, help="ASHA then run-to-end, this many times (A B A B)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fedvsr-sweep-bench-"))
    sets = [f"--set={s}" for s in args.set]

    # the same spec with every trial run to the end
    to_end = yaml.safe_load(spec_path(SPEC).read_text())
    to_end["scheduler"] = "none"
    to_end.pop("asha", None)
    to_end_file = work / f"{SPEC}-to-end.yaml"
    to_end_file.write_text(yaml.safe_dump(to_end, sort_keys=False))

    seconds: dict[str, float] = {}
    # A B A B: the machine's drift over time falls on both sweeps alike; one pair keeps the older file names
    suffixes = [""] if args.pairs == 1 else [f"-{p + 1}" for p in range(args.pairs)]
    names = [kind + suffix for suffix in suffixes for kind in ("asha", "to_end")]
    for suffix in suffixes:
        for kind, spec in (("asha", SPEC), ("to_end", str(to_end_file))):
            name = kind + suffix
            start = time.perf_counter()
            fedvsr(
                "sweep",
                spec,
                "--out",
                str(work / name),
                "--concurrent",
                args.concurrent,
                *sets,
                log=out / f"{name}.log",
            )
            seconds[name] = time.perf_counter() - start
            for file in ("trials.parquet", "sweep.yaml", "timeline.parquet"):
                shutil.copy(work / name / file, out / f"{name}_{file}")
            save_round_times(work / name, out / f"{name}_rounds.parquet")
            print(f"{name}: {seconds[name]:.0f} s", flush=True)

    first = names[0]
    (out / "best.yaml").write_text(fedvsr("best", str(work / first)))
    top = [fedvsr("best", str(work / name), "--top", "9", "--include-stopped") for name in names]
    (out / "top.txt").write_text("\n".join(f"{name}:\n{text}" for name, text in zip(names, top, strict=True)))
    report = out / "report"
    shutil.rmtree(report, ignore_errors=True)
    fedvsr("report", str(work / first), "--out", str(report))

    def summary(name: str) -> dict:
        rows = pq.read_table(out / f"{name}_trials.parquet").to_pylist()
        finished = [r for r in rows if r["status"] == "finished"]
        win = max(finished, key=lambda r: r["final_psnr"])
        meta = pq.read_schema(out / f"{name}_trials.parquet").metadata or {}
        steps = pq.read_table(out / f"{name}_timeline.parquet").to_pylist()
        budget = json.loads(pq.read_schema(out / f"{name}_timeline.parquet").metadata[b"fedvsr.time_budget"])
        return {
            "seconds": round(seconds[name], 1),
            "trials": len(rows),
            "utilisation": json.loads(meta.get(b"fedvsr.utilisation", b"{}")).get("utilisation"),
            "rounds_run": {f"{r['fl.lambda_hifr']:.1f}": r["rounds_run"] for r in rows},
            "total_rounds": sum(r["rounds_run"] for r in rows),
            "round_seconds": round(sum(r["seconds"] for r in rows), 1),
            "winner_lambda_hifr": win["fl.lambda_hifr"],
            "winner_final_psnr": win["final_psnr"],
            # where the sweep's slot-seconds went (fedvsr.sweeps.timeline): rounds, trial starts, idle slots, ...
            "time_budget": budget,
            "rounds_makespan": round(rounds_makespan(steps, budget["slots"]), 1),
        }

    result: dict = {"spec": SPEC, "overrides": args.set, "pairs": []}
    for suffix in suffixes:
        a, b = summary("asha" + suffix), summary("to_end" + suffix)
        wall, rounds = a["seconds"] / b["seconds"], a["total_rounds"] / b["total_rounds"]
        result["pairs"].append(
            {
                "asha": a,
                "to_end": b,
                "wall_time_ratio_asha_over_to_end": round(wall, 3),
                "rounds_ratio_asha_over_to_end": round(rounds, 3),
                # seconds per round trained, ASHA's over run-to-end's: 1 when a stopped trial costs only its rounds
                "round_seconds_ratio": round(
                    (a["round_seconds"] / a["total_rounds"]) / (b["round_seconds"] / b["total_rounds"]), 3
                ),
                "target_met": wall <= rounds + 0.05,
                # the wall ratio of a platform that cost nothing but the rounds, with the same trials in the same
                # order and ASHA's same decisions (rounds_makespan): above the target, no cut of overhead meets it
                "rounds_only_wall_ratio": round(a["rounds_makespan"] / b["rounds_makespan"], 3),
            }
        )
    if args.pairs == 1:  # the layout of the earlier single-pair results
        result.update(result.pop("pairs")[0])
    else:
        walls = [r["wall_time_ratio_asha_over_to_end"] for r in result["pairs"]]
        rounds = [r["rounds_ratio_asha_over_to_end"] for r in result["pairs"]]
        result["wall_time_ratio_mean"] = round(sum(walls) / len(walls), 3)
        result["rounds_ratio_mean"] = round(sum(rounds) / len(rounds), 3)
        result["target_met"] = all(r["target_met"] for r in result["pairs"])
    (out / "asha.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    shutil.rmtree(work, ignore_errors=True)


def rounds_makespan(steps: list[dict], slots: int) -> float:
    """The wall time of the sweep if nothing but its rounds took time: its trials in the order they started (Tune's
    order), each as long as its rounds' seconds, each on the first of ``slots`` slots to free up."""
    trials: dict[str, list[float]] = {}
    for s in steps:
        first, seconds = trials.setdefault(s["trial"], [s["step_started"], 0.0])
        trials[s["trial"]] = [min(first, s["step_started"]), seconds + s["round_seconds"]]
    free = [0.0] * slots
    for _, seconds in sorted(trials.values()):
        k = free.index(min(free))
        free[k] += seconds
    return max(free)


def save_round_times(sweep: Path, path: Path) -> None:
    """Every trial's rounds with their wall-clock columns (which trial, which round, how long), from the run folders
    that are deleted at the end: where a sweep's time went, round by round."""
    import pyarrow as pa

    keep = ("round", "seconds", "train_seconds", "eval_seconds")
    rows = []
    for run in sorted((sweep / "runs").iterdir()):
        if (run / "rounds.parquet").is_file():
            for r in pq.read_table(run / "rounds.parquet").to_pylist():
                rows.append({"trial": run.name, **{k: r.get(k) for k in keep}})
    pq.write_table(pa.Table.from_pylist(rows), path)


if __name__ == "__main__":
    main()
