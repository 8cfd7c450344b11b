"""The platform's own costs, each measured as a ratio in one run (issue 11, benchmarks 1, 4 and 5).

    python benchmarks/platform_bench.py overhead [--rounds 4] [--reps 2]
    python benchmarks/platform_bench.py scale [--clients 10 100 1000 10000] [--rounds 3]
    python benchmarks/platform_bench.py aggregation [--params 10000000] [--clients 10] [--reps 5]
    python benchmarks/platform_bench.py depth [--rounds 10] [--reps 2]

* overhead: a Ray simulation round against the same client work in one plain PyTorch process (the same
  ClientWorker class called in-process, the same clients, the same merge and server update), efvsr/small on
  the default data, 4 clients per round, 1 worker of 1 CPU; A B A B; target at most 1.02.
* scale: 10 ... 10,000 clients, 10 per round, tiny preset, one video segment per client (data.segment_frames),
  2 workers: seconds per round and the peak resident memory of every process of the run (driver, Ray's
  processes, coordinator, workers: the process tree, sampled every 0.2 s); target: memory at 10,000 clients at
  most 1.3x that at 10.
* aggregation: seconds to merge K client updates of a P-parameter model with merge_updates, against the time
  to read the updates' bytes once (a sum over every update tensor, the memory-bandwidth floor), one thread;
  target at most 2x. The old path (PartialAggregate.add per client) for reference.
* depth: platform.queue_depth 1 against 2 (a worker's next client queued behind its running one), one local
  step a client (vs_flower.py's xdevice workload), 1 worker, A B A B.

Results: benchmarks/results/platform/<name>.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "platform"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# --------------------------------------------------------------------------- memory of a process tree
def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and every process below it (Linux /proc)."""
    total, todo, seen = 0, [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
        todo += _children(pid)
    return total


class PeakMemory:
    """Samples :func:`tree_rss` of this process every ``period`` seconds in a thread; ``peak`` in bytes."""

    def __init__(self, period: float = 0.2) -> None:
        self.period, self.peak, self._stop = period, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(os.getpid()))
            self._stop.wait(self.period)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, tree_rss(os.getpid()))


# --------------------------------------------------------------------------- 1. overhead
def plain_rounds(cfg, rounds: int) -> list[dict]:
    """The client work of ``rounds`` rounds in this process: the same ClientWorker, clients, merge, update."""
    import ray
    import torch

    from fedvsr.data.sources import experiment_data
    from fedvsr.fl import build_strategy
    from fedvsr.fl.aggregate import PartialAggregate, merge_updates, normalised_weights, to_numpy, to_torch
    from fedvsr.fl.partition import partition_videos
    from fedvsr.fl.sampling import sample_clients
    from fedvsr.fl.strategy import float_state
    from fedvsr.models import build_model
    from fedvsr.platform.worker import ClientWorker

    assert not ray.is_initialized()
    data = experiment_data(cfg)
    labels = [data.videos[i].label for i in data.pool]
    parts = partition_videos(labels, cfg.fl.clients, cfg.fl.partition, cfg.seed, cfg.fl.dirichlet_beta)
    client_videos = [[data.pool[j] for j in part] for part in parts]
    worker = ClientWorker.local(cfg, 0, data.videos, client_videos, data.held)
    strategy = build_strategy(cfg.fl)
    torch.manual_seed(cfg.seed)
    params = to_numpy(float_state(build_model(cfg.model.name, cfg.model.preset, cfg.model.options)))
    server = to_numpy(strategy.init_server_state(to_torch(params)))
    rows = []
    for t in range(1, rounds + 1):
        start = time.perf_counter()
        clients = sample_clients(cfg.seed, t, cfg.fl.clients, cfg.fl.clients_per_round)
        outs = [worker.train_client(t, params, server, c) for c in clients]
        aggregate = PartialAggregate()
        merge_updates(aggregate, [o.update for o in outs])
        weights = normalised_weights([o.report.log_weight for o in outs])
        new, new_server = strategy.server_update(
            to_torch(params), aggregate, to_torch(server), t, cfg.fl.clients, weights
        )
        params, server = to_numpy(new), to_numpy(new_server)
        rows.append(
            {
                "round": t,
                "train_seconds": time.perf_counter() - start,
                "loss": float(sum(o.report.loss for o in outs) / len(outs)),
            }
        )
    return rows


def ray_rounds(cfg, rounds: int) -> list[dict]:
    import pyarrow.parquet as pq

    from fedvsr.platform.run import run_experiment

    with tempfile.TemporaryDirectory() as tmp:
        run_experiment(cfg, Path(tmp) / "run")
        table = pq.read_table(Path(tmp) / "run" / "rounds.parquet").to_pylist()
    return [{"round": r["round"], "train_seconds": r["train_seconds"], "loss": r["train_loss"]} for r in table]


def overhead(args) -> dict:
    from fedvsr.config import load_config

    cfg = load_config(None, [f"fl.rounds={args.rounds}", "platform.workers=1", *args.set])
    reps = []
    for rep in range(args.reps):
        plain = plain_rounds(cfg, args.rounds)
        ray_ = ray_rounds(cfg, args.rounds)
        assert [r["loss"] for r in plain] == [r["loss"] for r in ray_], (plain, ray_)  # the same client work
        # rounds after the first: both sides have decoded their clients' videos by then (the first round's
        # decoding and degrading differ: the plain loop fills the on-disk LR cache the Ray run then reads)
        p = statistics.mean(r["train_seconds"] for r in plain[1:])
        q = statistics.mean(r["train_seconds"] for r in ray_[1:])
        reps.append(
            {
                "plain_s_per_round": p,
                "ray_s_per_round": q,
                "ratio": q / p,
                "load": load(),
                "plain_rounds": plain,
                "ray_rounds": ray_,
            }
        )
        print(f"rep {rep}: plain {p:.3f} s/round, ray {q:.3f} s/round, ratio {q / p:.3f}  (load {load()})", flush=True)
    return {
        "model": f"{cfg.model.name}/{cfg.model.preset}",
        "clients_per_round": cfg.fl.clients_per_round,
        "rounds": args.rounds,
        "reps": reps,
        "median_ratio": statistics.median(r["ratio"] for r in reps),
    }


# --------------------------------------------------------------------------- queue depth
def _overrides(tree: dict, prefix: str = "") -> list[str]:
    """A nested config dict as ``key.sub=value`` overrides."""
    out = []
    for key, value in tree.items():
        out += _overrides(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}={value}"]
    return out


def _xdevice() -> list[str]:
    """vs_flower.py's xdevice workload (one local step a client) on 1 worker: where the time between clients
    shows."""
    from vs_flower import WORKLOADS  # benchmarks/ is on sys.path when a script there runs

    return [*_overrides(WORKLOADS["xdevice"]), "platform.workers=1"]


def depth(args) -> dict:
    """platform.queue_depth 1 against 2, A B A B: the median training seconds of rounds 2.. and the clients' own."""
    import pyarrow.parquet as pq

    from fedvsr.config import load_config
    from fedvsr.platform.run import run_experiment

    runs, workload = [], _xdevice()
    for rep in range(args.reps):
        for d in (1, 2):
            cfg = load_config(None, [*workload, f"fl.rounds={args.rounds}", f"platform.queue_depth={d}", *args.set])
            with tempfile.TemporaryDirectory() as tmp:
                run_experiment(cfg, Path(tmp) / "run")
                rounds = pq.read_table(Path(tmp) / "run" / "rounds.parquet").to_pydict()
                clients = pq.read_table(Path(tmp) / "run" / "clients.parquet").to_pydict()
            own = [
                sum(s for r, s in zip(clients["round"], clients["seconds"], strict=True) if r == t)
                for t in rounds["round"][1:]
            ]
            runs.append(
                {
                    "rep": rep,
                    "queue_depth": d,
                    "clients_own_s_per_round": statistics.median(own),
                    "train_s_per_round": statistics.median(rounds["train_seconds"][1:]),
                    "load": load(),
                }
            )
            print(runs[-1], flush=True)
    pairs = [b["train_s_per_round"] / a["train_s_per_round"] for a, b in zip(runs[::2], runs[1::2], strict=True)]
    print(f"depth 2 / depth 1 per pair: {[round(p, 3) for p in pairs]}")
    return {
        "config": workload,
        "rounds": args.rounds,
        "runs": runs,
        "ratio_depth2_to_depth1": pairs,
        "median_ratio": statistics.median(pairs),
    }


# --------------------------------------------------------------------------- 4. scale
def scale(args) -> dict:
    import pyarrow.parquet as pq
    import ray

    from fedvsr.config import load_config
    from fedvsr.platform.run import run_experiment

    rows = []
    for n in args.clients:
        # one 5-frame segment per client, cut from 25-frame videos (data.segment_frames): no file per client
        videos = math.ceil(n / 5) + 2
        cfg = load_config(
            None,
            [
                "model.preset=tiny",
                f"fl.clients={n}",
                "fl.clients_per_round=10",
                f"fl.rounds={args.rounds}",
                f"data.videos={videos}",
                "data.frames=25",
                "data.segment_frames=5",
                "data.height=64",
                "data.width=64",
                "data.patch=16",
                "data.samples_per_video=4",
                "fl.batch_size=4",
                "eval.holdout=2",
                "eval.clips=2",
                "platform.workers=2",
                *args.set,
            ],
        )
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
        try:
            with tempfile.TemporaryDirectory() as tmp, PeakMemory() as mem:
                start = time.perf_counter()
                run_experiment(cfg, Path(tmp) / "run")
                total = time.perf_counter() - start
                table = pq.read_table(Path(tmp) / "run" / "rounds.parquet").to_pylist()
        finally:
            ray.shutdown()
        per_round = statistics.mean(r["seconds"] for r in table)
        rows.append(
            {"clients": n, "s_per_round": per_round, "peak_bytes": mem.peak, "run_seconds": total, "load": load()}
        )
        print(
            f"{n:6d} clients: {per_round:.3f} s/round, peak memory {mem.peak / 2**30:.2f} GiB (load {load()})",
            flush=True,
        )
    base = rows[0]["peak_bytes"]
    for r in rows:
        r["memory_ratio"] = r["peak_bytes"] / base
    return {"rows": rows}


# --------------------------------------------------------------------------- 5. aggregation
def aggregation(args) -> dict:
    import torch

    from fedvsr.fl import aggregate
    from fedvsr.fl.aggregate import ClientUpdate, PartialAggregate, merge_updates

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    sizes = [args.params // 20] * 19 + [args.params - 19 * (args.params // 20)]  # 20 tensors, P in all
    updates = []
    for k in range(args.clients):
        u = ClientUpdate()
        u.add("model", {f"w{i}": torch.randn(s, generator=g) for i, s in enumerate(sizes)}, log_weight=0.1 * k)
        updates.append(u)
    nbytes = sum(u.nbytes for u in updates)

    def floor() -> None:  # read every byte of every update once
        for u in updates:
            for v in u.entries[0][1].values():
                v.sum()

    last: list[PartialAggregate | None] = [None]

    def fused() -> None:  # as the coordinator from round 2: into the previous round's float64 buffers
        last[0] = PartialAggregate.reusing(last[0])
        merge_updates(last[0], updates)

    def fresh() -> None:  # into newly allocated buffers (the coordinator's first round)
        merge_updates(PartialAggregate(), updates)

    def torch_ops() -> None:  # the same merge through torch operations (the GPU / non-float32 path)
        real = aggregate.KERNEL_MIN_ELEMENTS
        aggregate.KERNEL_MIN_ELEMENTS = 1 << 62
        try:
            merge_updates(PartialAggregate(), updates)
        finally:
            aggregate.KERNEL_MIN_ELEMENTS = real

    def sequential() -> None:
        agg = PartialAggregate()
        for u in updates:
            name, tensors, m, e = u.entries[0]
            agg.add(name, tensors, math.ldexp(m, e))

    start = time.perf_counter()
    fused()  # the first call compiles the kernel (or loads it from Numba's cache): reported apart
    first_call = time.perf_counter() - start
    times = {
        "floor": [],
        "merge_updates": [],
        "merge_updates_fresh_buffers": [],
        "merge_torch_ops": [],
        "add_per_client": [],
    }
    for _ in range(args.reps):  # interleaved: floor, fused, fresh, torch ops, old, floor, ...
        for name, fn in (
            ("floor", floor),
            ("merge_updates", fused),
            ("merge_updates_fresh_buffers", fresh),
            ("merge_torch_ops", torch_ops),
            ("add_per_client", sequential),
        ):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    best = {k: min(v) for k, v in times.items()}
    result = {
        "params": args.params,
        "clients": args.clients,
        "bytes": nbytes,
        "threads": 1,
        "seconds_min": best,
        "seconds_all": times,
        "floor_gb_per_s": nbytes / best["floor"] / 1e9,
        "ratio_merge_to_floor": best["merge_updates"] / best["floor"],
        "ratio_fresh_buffers_to_floor": best["merge_updates_fresh_buffers"] / best["floor"],
        "ratio_torch_ops_to_floor": best["merge_torch_ops"] / best["floor"],
        "first_call_s": first_call,
        "ratio_old_to_floor": best["add_per_client"] / best["floor"],
        "load": load(),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "seconds_all"}, indent=2))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    o = sub.add_parser("overhead")
    o.add_argument("--rounds", type=int, default=4)
    o.add_argument("--reps", type=int, default=2)
    o.add_argument("--set", action="append", default=[])
    s = sub.add_parser("scale")
    s.add_argument("--clients", type=int, nargs="+", default=[10, 100, 1000, 10000])
    s.add_argument("--rounds", type=int, default=3)
    s.add_argument("--set", action="append", default=[])
    q = sub.add_parser("depth")
    q.add_argument("--rounds", type=int, default=10)
    q.add_argument("--reps", type=int, default=2)
    q.add_argument("--set", action="append", default=[])
    a = sub.add_parser("aggregation")
    a.add_argument("--params", type=int, default=10_000_000)
    a.add_argument("--clients", type=int, default=10)
    a.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    result = {"overhead": overhead, "depth": depth, "scale": scale, "aggregation": aggregation}[args.what](args)
    result["when"] = time.strftime("%Y-%m-%d %H:%M:%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.what}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {RESULTS / args.what}.json")


if __name__ == "__main__":
    main()
