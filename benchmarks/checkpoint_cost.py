"""What a crash-consistent round commit costs (issue 23, item 6), as a ratio of a round's time.

    python benchmarks/checkpoint_cost.py [--rounds 20] [--reps 3] [--run-rounds 2]

A round's writes for the default model (efvsr/small, 160,707 parameters, 4 clients per round) are timed two ways
in the same temp folder's file system, A B A B: *before*, the code as it was (client states, the two tables and
the three checkpoint files each written to a temp file and renamed, nothing fsynced), and *after*, the code as it
is (each file fsynced, the round folder with a sha256 manifest renamed into place and fsynced, the older folder
and client-state versions pruned). Both for FedAvg (no client state, no server state) and SCAFFOLD (a server
variate and 4 client variates of the model's size). The tables grow round by round as in a run of ``--rounds``.
Then a default ``fedvsr simulate`` of ``--run-rounds`` rounds gives a round's time on the same machine, and the
ratio is the median commit time over the median round time.

Results: benchmarks/results/platform/checkpoint.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fedvsr.platform.checkpoint import prune_checkpoints, save_checkpoint
from fedvsr.platform.results import ResultsStore, atomic_write
from fedvsr.platform.state_store import ClientStateStore

RESULTS = Path(__file__).parent / "results" / "platform"
CLIENTS_PER_ROUND = 4


def model_arrays() -> dict[str, np.ndarray]:
    from fedvsr.config import load_config
    from fedvsr.fl.aggregate import to_numpy
    from fedvsr.fl.strategy import float_state
    from fedvsr.models import build_model

    cfg = load_config(None, [])
    return to_numpy(float_state(build_model(cfg.model.name, cfg.model.preset, cfg.model.options)))


def rows(t: int) -> tuple[dict, list[dict]]:
    """A round row and its client rows with as many columns as the run's tables."""
    round_row = {"round": t, **{f"m{i}": float(t + i) for i in range(22)}}
    client_rows = [
        {
            "round": t,
            "client": c,
            "status": "ok",
            "reason": "",
            "device": "cpu",
            **{f"v{i}": float(c + i) for i in range(20)},
        }
        for c in range(CLIENTS_PER_ROUND)
    ]
    return round_row, client_rows


def before(out: Path, t: int, params, server, states, tables: dict[str, list]) -> None:
    """The round's writes as the code before crash-consistent checkpoints did them."""
    from safetensors.numpy import save_file

    def arrays(path: Path, a: dict) -> None:
        atomic_write(path, lambda tmp: save_file(a, tmp), durable=False)

    for c, s in states.items():
        arrays(out / "client_state" / f"client_{c:05d}.r{t:05d}.safetensors", s)
        old = out / "client_state" / f"client_{c:05d}.r{t - 2:05d}.safetensors"
        old.unlink(missing_ok=True)
    r, cl = rows(t)
    tables["rounds"].append(r)
    tables["clients"].extend(cl)
    for name in ("clients", "rounds"):
        atomic_write(
            out / f"{name}.parquet",
            lambda tmp, n=name: pq.write_table(pa.Table.from_pylist(tables[n]), tmp),
            durable=False,
        )
    arrays(out / "checkpoint" / "global.safetensors", params)
    arrays(out / "checkpoint" / "server_state.safetensors", server)
    atomic_write(
        out / "checkpoint" / "state.json", lambda tmp: Path(tmp).write_text(json.dumps({"round": t})), durable=False
    )


def after(out: Path, t: int, params, server, states, store: ClientStateStore, results: ResultsStore) -> None:
    """The round's writes as Coordinator._commit_round does them."""
    if states:
        store.commit(t, states)
    results.append(*rows(t))
    save_checkpoint(out / "checkpoint", t, params, server, {"bicubic": {}, "initial": {}}, files=results.paths())
    oldest = prune_checkpoints(out / "checkpoint")
    if states:
        store.prune(oldest)


def commit_seconds(kind: str, scaffold: bool, rounds: int, params) -> list[float]:
    server = {f"c.{k}": v for k, v in params.items()} if scaffold else {}
    times = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        out = Path(tmp)
        tables: dict[str, list] = {"rounds": [], "clients": []}
        store = ClientStateStore(out / "client_state")
        results = ResultsStore(out)
        for t in range(1, rounds + 1):
            states = {(t * CLIENTS_PER_ROUND + c) % 8: params for c in range(CLIENTS_PER_ROUND)} if scaffold else {}
            start = time.perf_counter()
            if kind == "before":
                before(out, t, params, server, states, tables)
            else:
                after(out, t, params, server, states, store, results)
            times.append(time.perf_counter() - start)
    return times


def round_seconds(run_rounds: int) -> list[float]:
    """Seconds of each round of a default `fedvsr simulate` (the rows' `seconds`: training and evaluation)."""
    from fedvsr.config import load_config
    from fedvsr.platform.run import run_experiment

    with tempfile.TemporaryDirectory() as tmp:
        run_experiment(load_config(None, [f"fl.rounds={run_rounds}"]), Path(tmp) / "run")
        return pq.read_table(Path(tmp) / "run" / "rounds.parquet").to_pydict()["seconds"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--run-rounds", type=int, default=2)
    args = ap.parse_args()
    params = model_arrays()
    result = {
        "model": "efvsr/small",
        "params": int(sum(v.size for v in params.values())),
        "clients_per_round": CLIENTS_PER_ROUND,
        "rounds": args.rounds,
        "load_before": os.getloadavg(),
    }
    for strategy, scaffold in (("fedavg", False), ("scaffold", True)):
        seconds: dict[str, list[float]] = {"before": [], "after": []}
        for _ in range(args.reps):  # A B A B
            for kind in ("before", "after"):
                seconds[kind] += commit_seconds(kind, scaffold, args.rounds, params)
        result[strategy] = {
            k: {"median_s": statistics.median(v), "mean_s": statistics.fmean(v)} for k, v in seconds.items()
        }
        print(strategy, {k: f"{v['median_s'] * 1000:.1f} ms" for k, v in result[strategy].items()}, flush=True)
    rounds = round_seconds(args.run_rounds)
    result["round_seconds"] = rounds
    per_round = statistics.median(rounds)
    for strategy in ("fedavg", "scaffold"):
        for kind in ("before", "after"):
            result[strategy][kind]["of_a_round"] = result[strategy][kind]["median_s"] / per_round
    result["load_after"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "checkpoint.json").write_text(json.dumps(result, indent=1) + "\n")
    print(
        json.dumps({s: {k: round(v["of_a_round"], 5) for k, v in result[s].items()} for s in ("fedavg", "scaffold")}),
        f"round {per_round:.1f} s",
    )


if __name__ == "__main__":
    main()
