"""Regret against budget: the best mean PSNR a sweep has found against its wall time, for grid search, TPE and
TPE with ASHA on the shipped ``fedvsr-lambda-bounded`` space (as FedHPO-Bench reports tuners).

    python benchmarks/sweep_regret.py [--trials 9] [--replicates 1] [--rounds 6] [--out benchmarks/results/sweep_regret]

Each sweep goes through ``fedvsr sweep`` in a fresh process (``--concurrent auto``), one after another, with the
tiny settings of issue 24 (tiny preset, 4 clients, 64x64 frames) and ``--rounds`` rounds. A trial counts when it
has finished (a trial ASHA stopped never counts: its value is not final): at its ``status.json`` time, the best
so far is the highest final PSNR among the finished trials (with replicates, the mean over a trial's
replicates). Writes ``regret.json`` (per sweep: its wall time and the (seconds, best) steps) and ``regret.png``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from fedvsr.sweeps.spec import spec_path

SPEC = "fedvsr-lambda-bounded"
TINY = {"model.preset": "tiny", "fl.clients": 4, "data.height": 64, "data.width": 64}
RESULTS = Path(__file__).parent / "results" / "sweep_regret"


def spec_file(work: Path, name: str, rounds: int, trials: int, replicates: int) -> Path:
    """The shipped spec with the tiny settings, as grid (no ASHA), TPE (no ASHA) or TPE with the spec's ASHA."""
    data = yaml.safe_load(spec_path(SPEC).read_text())
    data["fixed"] = {**data["fixed"], **TINY, "fl.rounds": rounds}
    data["replicates"] = replicates
    grid = data["params"]["fl.lambda_hifr"]["grid"]
    data["params"]["fl.lambda_hifr"]["grid"] = grid[:: max(1, len(grid) // trials)][:trials]  # --trials < 9: spread
    if name != "tpe-asha":
        data["scheduler"] = "none"
        data.pop("asha", None)
    if name != "grid":  # TPE draws lambda_hifr from the same 9 values
        data.update(search="optuna", trials=trials, seed=0)
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run(name: str, spec: Path, work: Path, out: Path) -> dict:
    """One sweep; returns its wall seconds and the best-so-far steps."""
    folder = work / name
    start = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "fedvsr.cli", "sweep", str(spec), "--out", str(folder), "--concurrent", "auto"],
        capture_output=True,
        text=True,
    )
    wall = time.time() - start
    (out / f"{name}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"sweep {name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    rows = pq.read_table(folder / "trials.parquet").to_pylist()
    finished: dict[str, list[float]] = {}
    for r in rows:
        if r["status"] == "finished":
            finished.setdefault(r.get("group") or r["out"], []).append(r["final_psnr"])  # a trial's replicates
    events = []
    for trial, values in finished.items():
        done = (Path(trial) / "status.json").stat().st_mtime - start
        events.append((done, sum(values) / len(values)))
    steps, best = [], float("-inf")
    for t, v in sorted(events):
        best = max(best, v)
        steps.append([round(t, 1), best])
    meta = json.loads((pq.read_schema(folder / "trials.parquet").metadata or {}).get(b"fedvsr.utilisation", b"{}"))
    return {
        "wall": round(wall, 1),
        "trials": len({r.get("group") or r["out"] for r in rows}),
        "finished": len(finished),
        "best": steps[-1][1] if steps else None,
        "steps": steps,
        "rounds_run": sum(r["rounds_run"] for r in rows),
        "utilisation": meta.get("utilisation"),
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in result["sweeps"].items():
        if r["steps"]:
            xs = [s[0] for s in r["steps"]] + [r["wall"]]
            ys = [s[1] for s in r["steps"]] + [r["steps"][-1][1]]
            ax.step(xs, ys, where="post", label=f"{name} ({r['finished']} finished, {r['wall']:.0f} s)")
    ax.set_xlabel("wall time (s)")
    ax.set_ylabel("best mean final PSNR found (dB)")
    ax.set_title(f"{SPEC}, tiny settings, {result['rounds']} rounds, {result['replicates']} replicate(s)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--trials",
        type=int,
        default=9,
        help="trials of each sweep (the grid's 9 points, or that many of them spread over the range)",
    )
    parser.add_argument("--replicates", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--sweeps", default="grid,tpe,tpe-asha")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fedvsr-sweep-regret-"))
    result = {"spec": SPEC, "settings": TINY, "rounds": args.rounds, "replicates": args.replicates, "sweeps": {}}
    for name in args.sweeps.split(","):
        spec = spec_file(work, name, args.rounds, args.trials, args.replicates)
        result["sweeps"][name] = run(name, spec, work, out)
        print(name, json.dumps({k: v for k, v in result["sweeps"][name].items() if k != "steps"}), flush=True)
    (out / "regret.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, out / "regret.png")


if __name__ == "__main__":
    main()
