"""The sweep of docs/benchmarks.md ("Sweeps: ASHA against every trial"), and ASHA's saving measured: the
shipped ``fedvsr-lambda-bounded`` sweep (FedVSR, lambda_vsr + lambda_hifr = 1, 9 points, 20 rounds, default data
and model) run twice in one go, first with the spec's ASHA scheduler, then with every trial run to the end.

    python benchmarks/sweep_asha.py [--out benchmarks/results/sweep_lambda_bounded] [--concurrent auto|K]
                                    [--set key=value ...]

Each sweep goes through the ``fedvsr`` command exactly as a user runs it, in a fresh process (its own
local Ray). Writes, under ``--out``: ``asha.json`` (wall seconds of both sweeps and their ratio, rounds run
per trial and the ratio of rounds trained, the target -- wall-time ratio at most the rounds ratio + 0.05 --,
each sweep's winner and utilisation), both sweeps' ``trials.parquet`` / ``sweep.yaml`` and command output,
``best.yaml`` (``fedvsr best`` on the ASHA sweep), ``top.txt`` (``fedvsr best --top 9`` on both) and the
``fedvsr report`` of the ASHA sweep. The trials' run folders (weights, checkpoints) stay in a temporary
folder and are deleted.
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
    for name, spec in (("asha", SPEC), ("to_end", str(to_end_file))):
        start = time.perf_counter()
        fedvsr(
            "sweep", spec, "--out", str(work / name), "--concurrent", args.concurrent, *sets, log=out / f"{name}.log"
        )
        seconds[name] = time.perf_counter() - start
        for file in ("trials.parquet", "sweep.yaml"):
            shutil.copy(work / name / file, out / f"{name}_{file}")
        print(f"{name}: {seconds[name]:.0f} s", flush=True)

    (out / "best.yaml").write_text(fedvsr("best", str(work / "asha")))
    top = [fedvsr("best", str(work / name), "--top", "9", "--include-stopped") for name in ("asha", "to_end")]
    (out / "top.txt").write_text("with ASHA:\n" + top[0] + "\nevery trial to the end:\n" + top[1])
    report = out / "report"
    shutil.rmtree(report, ignore_errors=True)
    fedvsr("report", str(work / "asha"), "--out", str(report))

    def summary(name: str) -> dict:
        rows = pq.read_table(out / f"{name}_trials.parquet").to_pylist()
        finished = [r for r in rows if r["status"] == "finished"]
        win = max(finished, key=lambda r: r["final_psnr"])
        meta = pq.read_schema(out / f"{name}_trials.parquet").metadata or {}
        return {
            "seconds": round(seconds[name], 1),
            "trials": len(rows),
            "utilisation": json.loads(meta.get(b"fedvsr.utilisation", b"{}")).get("utilisation"),
            "rounds_run": {f"{r['fl.lambda_hifr']:.1f}": r["rounds_run"] for r in rows},
            "total_rounds": sum(r["rounds_run"] for r in rows),
            "winner_lambda_hifr": win["fl.lambda_hifr"],
            "winner_final_psnr": win["final_psnr"],
        }

    result = {"spec": SPEC, "overrides": args.set, "asha": summary("asha"), "to_end": summary("to_end")}
    result["wall_time_ratio_asha_over_to_end"] = round(seconds["asha"] / seconds["to_end"], 3)
    rounds = result["asha"]["total_rounds"] / result["to_end"]["total_rounds"]
    result["rounds_ratio_asha_over_to_end"] = round(rounds, 3)
    result["target_met"] = result["wall_time_ratio_asha_over_to_end"] <= rounds + 0.05
    (out / "asha.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
