"""fedvsr against Flower's simulation engine on the same client work (issue 11, benchmark 2).

Run by hand (Flower lives in a venv of its own, never a fedvsr dependency: flwr 1.42's simulation extra pins
ray 2.55.1; docs/benchmarks.md, "Against Flower and pfl-research")::

    /work/bench-flwr/bin/python benchmarks/vs_flower.py --workload small --reps 2
    /work/bench-flwr/bin/python benchmarks/vs_flower.py --workload xdevice --reps 2
    /work/bench-flwr/bin/python benchmarks/vs_flower.py --workload vsr --reps 2

(``--rounds N`` overrides the workload's rounds, ``--results DIR`` writes somewhere other than
benchmarks/results/vs_flower, e.g. for a smoke run.)

Three workloads (``WORKLOADS``):

- ``small``: many small clients (efvsr/tiny, 300 clients, 10 a round, one video of 6 frames at 64 x 64 each),
  each training one local epoch of 16 clips in batches of 8 (2 local steps, about 0.08 s a client): the clients'
  own compute is about half of a round on either side.
- ``xdevice``: the cross-device regime of pfl-research's benchmarks, where a client's local compute is negligible
  next to what the runtime spends on it (dispatch, shipping weights, rebuilding the model, aggregation): the same
  model, clients, sampling, workers and videos as ``small``, but each client trains ONE local step (4 clips a
  video and a batch of 4: ``ceil(a client's clips / fl.batch_size) * fl.local_epochs = ceil(4 / 4) * 1``;
  fedvsr has no local-steps key, and both sides compute the steps this way) on LR patches of 8 pixels instead of
  16, so the round time is mostly the runtime's own per-client cost.
- ``vsr``: VSR-size clients (efvsr/small, 8 clients, 4 a round, fedvsr's default data).

Two sides, run as separate process trees, alternated A B A B (fedvsr first):

- fedvsr: ``fedvsr.platform.run.run_experiment`` in /work/venv (Ray 2.60): its coordinator and
  ``platform.workers`` long-lived worker actors; per-round times from rounds.parquet.
- Flower 1.42: ``flwr.simulation.run_simulation`` with its Ray backend (Ray 2.55.1), an actor pool of the same
  size (1 CPU each); the ClientApp builds fedvsr's model for each message, loads the global weights shipped in the
  message, trains with fedvsr's own local-training loop (``fedvsr.fl.client.train_local``: same optimizer, local
  steps, batch size, seeds, clips) and ships the trained weights back; the ServerApp's FedAvg (weighted by
  ``num-examples`` = the client's samples, as fedvsr's FedAvg) trains the same clients each round as fedvsr
  (``fedvsr.fl.sampling.sample_clients``: client ``c`` is the ``c``-th supernode) and evaluates the global model
  on the same held-out clips (fedvsr's ``evaluate_model``) on the server.

Both sides: torch threads 1 per worker/actor, 2 workers/actors (``platform.workers``), decoded videos cached
per process (an LRU of 64 videos, as fedvsr's worker), the synthetic videos and their LR versions built once
before the first run (``prepare``), out of every timing. Time per round: the training part (round start to the
aggregate) and the whole round (plus evaluation, and on fedvsr's side its per-round checkpoint and Parquet rows);
round 1 (actor start, first import) is reported apart and left out of the medians. Peak memory: the RSS of the
side's whole process tree (driver, raylet, GCS, workers, ...) sampled every 0.2 s, summed (shared pages counted
in each process, as ``ps`` does), the maximum over the run; same sampler for both sides.

Writes ``benchmarks/results/vs_flower/<workload>.json`` and ``.md`` (or under ``--results DIR``), and
``result.json`` / ``result.md`` holding every workload measured so far (with the load average of the shared
machine at the start and end of each run), and prints the table. Ratios are Flower / fedvsr per repetition pair
(> 1: fedvsr is faster / smaller).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "vs_flower"  # --results overrides it
FEDVSR_PY = os.environ.get("FEDVSR_PYTHON", "/work/venv/bin/python")
FLOWER_PY = os.environ.get("FLOWER_PYTHON", "/work/bench-flwr/bin/python")

#: the workloads of issue 11: many small clients (cross-device: ``small``, and ``xdevice`` with one local step of
#: a small batch per client, so the runtime's per-client cost dominates) and VSR-size clients (``vsr``)
_SMALL: dict[str, Any] = {
    "seed": 0,
    "model": {"name": "efvsr", "preset": "tiny"},
    "data": {"videos": 302, "frames": 6, "height": 64, "width": 64, "patch": 16, "samples_per_video": 16},
    "fl": {
        "strategy": "fedavg",
        "clients": 300,
        "clients_per_round": 10,
        "rounds": 8,
        "batch_size": 8,
        "local_epochs": 1,
        "optimizer": "adam",
    },
    "platform": {"workers": 2, "cpus_per_worker": 1.0},
    "eval": {"holdout": 2, "clips": 1},
}
WORKLOADS: dict[str, dict[str, Any]] = {
    "small": _SMALL,
    # as "small" (same model, clients, sampling, workers, videos and evaluation), but one local step of a batch
    # of 4 clips on 8-pixel LR patches per client: 300 clients x 1 video x 4 clips, batch 4, 1 epoch -> 1 step
    "xdevice": {
        **_SMALL,
        "data": {**_SMALL["data"], "patch": 8, "samples_per_video": 4},
        "fl": {**_SMALL["fl"], "batch_size": 4},
    },
    "vsr": {
        "seed": 0,
        "model": {"name": "efvsr", "preset": "small"},
        "data": {},  # the defaults: 28 videos of 16 frames, 128 x 128, LR patch 32, 16 clips a video
        "fl": {
            "strategy": "fedavg",
            "clients": 8,
            "clients_per_round": 4,
            "rounds": 4,
            "batch_size": 8,
            "local_epochs": 1,
            "optimizer": "adam",
        },
        "platform": {"workers": 2, "cpus_per_worker": 1.0},
        "eval": {"holdout": 4, "clips": 2},
    },
}

VIDEO_CACHE = 64  # decoded videos kept per worker process (fedvsr's ClientWorker default)


# ---------------------------------------------------------------------- shared by both sides
class _ProcessData:
    """What one worker process keeps between clients: the config, the video list, the partition and an LRU of
    decoded (LR, HR) videos, exactly as fedvsr's ClientWorker and its coordinator compute them."""

    def __init__(self, cfg_dict: dict[str, Any]) -> None:
        from fedvsr.config import config_from_dict
        from fedvsr.data.sources import experiment_data
        from fedvsr.fl.partition import partition_videos

        self.cfg = cfg = config_from_dict(cfg_dict)
        data = experiment_data(cfg)
        self.videos, self.held = data.videos, data.held
        labels = [data.videos[i].label for i in data.pool]
        parts = partition_videos(labels, cfg.fl.clients, cfg.fl.partition, cfg.seed, cfg.fl.dirichlet_beta)
        self.client_videos = [[data.pool[j] for j in part] for part in parts]
        self._cache: OrderedDict[int, Any] = OrderedDict()

    def pair(self, i: int):
        from fedvsr.data.datasets import load_pair_for

        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        pair = load_pair_for(self.cfg, self.videos[i])
        self._cache[i] = pair
        while len(self._cache) > VIDEO_CACHE:
            self._cache.popitem(last=False)
        return pair


_PROCESS: _ProcessData | None = None


def _process_data(cfg_dict: dict[str, Any]) -> _ProcessData:
    global _PROCESS
    if _PROCESS is None:
        _PROCESS = _ProcessData(cfg_dict)
    return _PROCESS


def prepare(cfg_dict: dict[str, Any]) -> None:
    """Build the synthetic videos and their LR versions (disk caches) once, so no timed run pays for them."""
    st = _ProcessData(cfg_dict)
    for i in range(len(st.videos)):
        st.pair(i)
    print(f"prepared {len(st.videos)} videos", flush=True)


# ---------------------------------------------------------------------- side A: fedvsr
def fedvsr_side(cfg_dict: dict[str, Any], out: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from fedvsr.config import config_from_dict
    from fedvsr.platform.run import run_experiment

    start = time.perf_counter()
    # the driver sees each round's row once it is written with its checkpoint: round-to-round wall time
    marks: list[float] = []
    run_experiment(config_from_dict(cfg_dict), out / "run", on_round=lambda row: marks.append(time.perf_counter()))
    total = time.perf_counter() - start
    rows = pq.read_table(out / "run" / "rounds.parquet").to_pylist()
    client_seconds: dict[int, float] = {}  # the clients' own local-training seconds, summed per round
    client_steps: dict[int, int] = {}  # their local steps, summed per round
    for c in pq.read_table(out / "run" / "clients.parquet", columns=["round", "seconds", "steps"]).to_pylist():
        client_seconds[c["round"]] = client_seconds.get(c["round"], 0.0) + c["seconds"]
        client_steps[c["round"]] = client_steps.get(c["round"], 0) + c["steps"]
    return {
        "rounds": [
            {
                "round": r["round"],
                "train_seconds": r["train_seconds"],
                "seconds": r["seconds"],
                "eval_seconds": r["eval_seconds"],
                "train_loss": r["train_loss"],
                "client_seconds": client_seconds[r["round"]],
                "client_steps": client_steps[r["round"]],
                "wall_seconds": marks[i] - marks[i - 1] if i else math.nan,
            }
            for i, r in enumerate(rows)
        ],
        "driver_seconds": total,
    }


# ---------------------------------------------------------------------- side B: Flower
def _flower_train(content, cfg_dict: dict[str, Any]):
    """One Flower message: build the model, load the shipped global weights, train client ``config.client``
    with fedvsr's local loop, return the trained weights and ``num-examples``."""
    import torch
    from flwr.app import ArrayRecord, MetricRecord, RecordDict

    from fedvsr.data.datasets import TrainClips, collate, resolve_augment
    from fedvsr.fl import build_strategy
    from fedvsr.fl.client import LocalTraining, epoch_batches, train_local
    from fedvsr.fl.sampling import client_seed
    from fedvsr.fl.schedule import LRSchedule
    from fedvsr.fl.strategy import ClientContext, float_state
    from fedvsr.models import build_model

    torch.set_num_threads(1)
    st = _process_data(cfg_dict)
    cfg = st.cfg
    conf = content["config"]
    c, t = int(conf["client"]), int(conf["server-round"])
    model = build_model(cfg.model.name, cfg.model.preset, cfg.model.options)
    params = content["arrays"].to_torch_state_dict()
    state = model.state_dict()
    with torch.no_grad():
        for k, v in params.items():
            state[k].copy_(v)
    strategy = build_strategy(cfg.fl)
    schedule = LRSchedule.from_config(cfg.fl)
    seed = client_seed(cfg.seed, t, c)
    pairs = [st.pair(i) for i in st.client_videos[c]]
    data = TrainClips(
        pairs,
        cfg.data.clip_frames or model.num_frames,
        cfg.data.patch,
        cfg.data.samples_per_video,
        seed,
        resolve_augment(cfg.data.augment, type(model)),
    )
    ctx = ClientContext(
        client=c,
        round=t,
        total_rounds=cfg.fl.rounds,
        total_clients=cfg.fl.clients,
        model=model,
        global_params=params,
        server_state={},
        client_state=None,
        lr=schedule.round_rate(t, cfg.fl.rounds),
    )
    ctx.samples = len(data)
    steps = math.ceil(len(data) / cfg.fl.batch_size) * cfg.fl.local_epochs
    torch.manual_seed(seed)
    device = torch.device("cpu")
    result = train_local(
        ctx,
        strategy,
        lambda epoch: epoch_batches(data, cfg.fl.batch_size, seed, epoch, collate, device),
        LocalTraining(
            cfg.fl.local_epochs, cfg.fl.optimizer, schedule=schedule, steps=steps, clip_grad_norm=cfg.fl.clip_grad_norm
        ),
    )
    return RecordDict(
        {
            "arrays": ArrayRecord(float_state(model)),
            "metrics": MetricRecord(
                {
                    "num-examples": ctx.samples,
                    "train_loss": result.loss,
                    "client": c,
                    "seconds": result.seconds,
                    "steps": result.steps,
                }
            ),
        }
    )


def flower_side(cfg_dict: dict[str, Any], out: Path) -> dict[str, Any]:
    import torch
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    from fedvsr.config import config_from_dict
    from fedvsr.data.datasets import eval_clips
    from fedvsr.evaluation import evaluate_model
    from fedvsr.fl.sampling import sample_clients
    from fedvsr.fl.strategy import float_state
    from fedvsr.models import build_model

    cfg = config_from_dict(cfg_dict)
    torch.set_num_threads(1)
    marks: dict[int, dict[str, float]] = {}
    losses: dict[int, float] = {}
    client_seconds: dict[int, float] = {}
    client_steps: dict[int, int] = {}

    class SameClientsFedAvg(FedAvg):
        """Flower's FedAvg, training fedvsr's clients of each round (client c = the c-th supernode)."""

        def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):
            marks[server_round] = {"start": time.perf_counter()}
            nodes = sorted(grid.get_node_ids())
            clients = sample_clients(cfg.seed, server_round, cfg.fl.clients, cfg.fl.clients_per_round)
            return [
                Message(
                    content=RecordDict(
                        {"arrays": arrays, "config": ConfigRecord({"server-round": server_round, "client": c})}
                    ),
                    message_type=MessageType.TRAIN,
                    dst_node_id=nodes[c],
                )
                for c in clients
            ]

        def aggregate_train(self, server_round: int, replies):
            replies = list(replies)
            out = super().aggregate_train(server_round, replies)
            marks[server_round]["trained"] = time.perf_counter()
            losses[server_round] = float(sum(r.content["metrics"]["train_loss"] for r in replies) / len(replies))
            client_seconds[server_round] = float(sum(r.content["metrics"]["seconds"] for r in replies))
            client_steps[server_round] = int(sum(r.content["metrics"]["steps"] for r in replies))
            if len(replies) != cfg.fl.clients_per_round or out[0] is None:
                raise RuntimeError(f"round {server_round}: {len(replies)} replies, aggregate {out[0] is not None}")
            return out

    client_app = ClientApp()

    @client_app.train()
    def train(msg: Message, context: Context) -> Message:
        return Message(content=_flower_train(msg.content, cfg_dict), reply_to=msg)

    holder: dict[str, Any] = {}

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        if "clips" not in holder:
            st = _process_data(cfg_dict)
            holder["model"] = build_model(cfg.model.name, cfg.model.preset, cfg.model.options)
            holder["clips"] = eval_clips(
                [st.pair(i) for i in st.held], cfg.data.clip_frames or holder["model"].num_frames, cfg.eval.clips
            )
        model = holder["model"]
        model.load_state_dict(arrays.to_torch_state_dict(), strict=False)
        m = evaluate_model(model, holder["clips"], cfg, torch.device("cpu"))
        if server_round in marks:
            marks[server_round]["end"] = time.perf_counter()
        return MetricRecord({k: float(v) for k, v in m.items()})

    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        torch.manual_seed(cfg.seed)
        init = float_state(build_model(cfg.model.name, cfg.model.preset, cfg.model.options))
        strategy = SameClientsFedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_available_nodes=cfg.fl.clients)
        strategy.start(grid=grid, initial_arrays=ArrayRecord(init), num_rounds=cfg.fl.rounds, evaluate_fn=evaluate_fn)

    p = cfg.platform
    start = time.perf_counter()
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=cfg.fl.clients,
        backend_config={
            "client_resources": {"num_cpus": p.cpus_per_worker, "num_gpus": 0.0},
            "init_args": {"num_cpus": int(p.workers * p.cpus_per_worker), "include_dashboard": False},
        },
    )
    total = time.perf_counter() - start
    rounds = []
    for t in sorted(marks):
        m = marks[t]
        rounds.append(
            {
                "round": t,
                "train_seconds": m["trained"] - m["start"],
                "seconds": m["end"] - m["start"],
                "eval_seconds": m["end"] - m["trained"],
                "train_loss": losses[t],
                "client_seconds": client_seconds[t],
                "client_steps": client_steps[t],
                # round t's end less round t-1's end, as fedvsr's side (start_t - start_{t-1} would be
                # round t-1's time, round 1's actor start included in round 2's)
                "wall_seconds": m["end"] - marks[t - 1]["end"] if t - 1 in marks else math.nan,
            }
        )
    if len(rounds) != cfg.fl.rounds:
        raise RuntimeError(f"Flower ran {len(rounds)} of {cfg.fl.rounds} rounds")
    return {"rounds": rounds, "driver_seconds": total}


# ---------------------------------------------------------------------- the orchestrator
def tree_rss(pid: int) -> int:
    """Summed RSS (bytes) of process ``pid`` and all its descendants (0 once it is gone)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def run_side(
    python: str, side: str, workload: str, cfg_dict: dict[str, Any], work: Path, command: list[str] | None = None
) -> dict[str, Any]:
    """One side in a fresh process tree (``command``, default ``python this-file --side SIDE``, followed by
    ``--out DIR``); samples its memory every 0.2 s; returns the side's result."""
    out = work / f"{side}-{time.time_ns()}"
    out.mkdir(parents=True)
    (out / "cfg.json").write_text(json.dumps(cfg_dict))
    load_before = os.getloadavg()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_DEDUP_LOGS": "0"}
    env.pop("RAY_ADDRESS", None)
    start = time.perf_counter()
    log = open(out / "log.txt", "w")
    command = command or [python, __file__, "--side", side]
    proc = subprocess.Popen([*command, "--out", str(out)], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
    peak, samples, stop = 0, 0, threading.Event()

    def sample() -> None:
        nonlocal peak, samples
        while not stop.is_set():
            peak = max(peak, tree_rss(proc.pid))
            samples += 1
            stop.wait(0.2)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    rc = proc.wait()
    stop.set()
    th.join()
    log.close()
    wall = time.perf_counter() - start
    if rc != 0:
        tail = (out / "log.txt").read_text()[-3000:]
        raise RuntimeError(f"{side} side failed (exit {rc}); log {out / 'log.txt'}:\n{tail}")
    res = json.loads((out / "result.json").read_text())
    return {
        "side": side,
        "workload": workload,
        "process_seconds": wall,
        "driver_seconds": res["driver_seconds"],
        "peak_rss_gb": peak / 1e9,
        "rss_samples": samples,
        "load_before": list(load_before),
        "load_after": list(os.getloadavg()),
        "rounds": res["rounds"],
        **round_medians(res["rounds"], cfg_dict["platform"]["workers"]),
    }


def round_medians(rounds: list[dict[str, Any]], workers: int) -> dict[str, float]:
    """A side's per-round figures: round 1 apart, medians over rounds 2..R."""
    later = rounds[1:] or rounds

    def median(key: str) -> float:
        return statistics.median(r.get(key, math.nan) for r in later)

    return {
        "round1_train_seconds": rounds[0]["train_seconds"],
        "round1_seconds": rounds[0]["seconds"],
        "median_train_seconds": median("train_seconds"),
        "median_round_seconds": median("seconds"),
        "median_eval_seconds": median("eval_seconds"),
        # round-to-round wall time seen by the driver (everything of a round: checkpoint, logging, ...)
        "median_wall_seconds": median("wall_seconds"),
        # the training part of a round less the clients' own training spread over the workers: what the
        # runtime adds (dispatch, shipping weights, rebuilding models, decoding videos, aggregation, waiting)
        "median_overhead_seconds": statistics.median(
            r["train_seconds"] - r.get("client_seconds", math.nan) / workers for r in later
        ),
        "median_client_seconds": median("client_seconds"),
        # local steps of a round's clients together (absent from results saved before it was recorded)
        "median_client_steps": median("client_steps"),
        "final_train_loss": rounds[-1]["train_loss"],
    }


def versions(python: str) -> str:
    code = (
        "import torch, ray; import importlib.metadata as m; v=[]\n"
        "for p in ('flwr','fedvsr'):\n  try: v.append(p+' '+m.version(p))\n  except Exception: pass\n"
        "print(', '.join(['torch '+torch.__version__, 'ray '+ray.__version__, *v]))"
    )
    return subprocess.run([python, "-c", code], capture_output=True, text=True).stdout.strip()


def markdown(result: dict[str, Any]) -> str:
    w = result["workload"]
    lines = [
        f"# fedvsr vs Flower 1.42 (Ray backend): workload `{w}`",
        "",
        f"{result['description']}",
        "",
        f"Machine: {result['machine']}; shared with other users while it ran (load averages below).",
        f"fedvsr side: {result['versions']['fedvsr']}; Flower side: {result['versions']['flower']}.",
        "",
        "| rep | side | train s/round (median r2+) | whole round s (median r2+) | round-to-round wall s | "
        "clients' own training s (sum) | runtime overhead s | eval s | round 1 s | process s | "
        "peak RSS of the tree GB | load 1-min before / after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        lines.append(
            f"| {r['rep']} | {r['side']} | {r['median_train_seconds']:.3f} | "
            f"{r['median_round_seconds']:.3f} | {r.get('median_wall_seconds', math.nan):.3f} | "
            f"{r.get('median_client_seconds', math.nan):.3f} | "
            f"{r.get('median_overhead_seconds', math.nan):.3f} | {r['median_eval_seconds']:.3f} | "
            f"{r['round1_seconds']:.2f} | {r['process_seconds']:.1f} | "
            f"{r['peak_rss_gb']:.2f} | {r['load_before'][0]:.1f} / {r['load_after'][0]:.1f} |"
        )
    lines += [
        "",
        "Ratios Flower / fedvsr per repetition pair (> 1: fedvsr faster or smaller):",
        "",
        "| rep | train time | whole round | round-to-round wall | runtime overhead | peak memory |",
        "|---|---|---|---|---|---|",
    ]
    for p in [*result["pairs"], {**result["median"], "rep": "median"}]:
        lines.append(
            f"| {p['rep']} | {p['train_ratio']:.2f} | {p['round_ratio']:.2f} | "
            f"{p.get('wall_ratio', math.nan):.2f} | {p.get('overhead_ratio', math.nan):.2f} | "
            f"{p['memory_ratio']:.2f} |"
        )
    lines += [
        "",
        "Runtime overhead: the training part of a round less the clients' own local-training seconds (as "
        "each side's clients report them) spread over the workers: dispatch, shipping weights, rebuilding "
        "models, decoding videos, aggregation, waiting. It is much less sensitive to the machine's load than the "
        "round time, which is mostly the clients' compute.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workload", choices=sorted(WORKLOADS), default="small")
    ap.add_argument("--reps", type=int, default=2, help="repetitions of the pair (A B A B ...)")
    ap.add_argument("--rounds", type=int, default=0, help="override fl.rounds (0: the workload's)")
    ap.add_argument(
        "--results",
        default=str(RESULTS),
        help="folder of <workload>.json/.md and result.json/.md (default: %(default)s)",
    )
    ap.add_argument("--side", choices=["fedvsr", "flower", "prepare"], help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--render", action="store_true", help="recompute the ratios and tables from the saved json")
    args = ap.parse_args()

    results = Path(args.results)
    if args.render:
        save(summarise(json.loads((results / f"{args.workload}.json").read_text())), results)
        return
    if args.side:  # a child: run one side and write its result
        out = Path(args.out)
        cfg_dict = json.loads((out / "cfg.json").read_text())
        if args.side == "prepare":
            prepare(cfg_dict)
            return
        res = (fedvsr_side if args.side == "fedvsr" else flower_side)(cfg_dict, out)
        (out / "result.json").write_text(json.dumps(res))
        return

    cfg_dict = json.loads(json.dumps(WORKLOADS[args.workload]))
    if args.rounds:
        cfg_dict["fl"]["rounds"] = args.rounds
    work = Path(tempfile.mkdtemp(prefix=f"vs_flower_{args.workload}_"))
    prep = work / "prepare"
    prep.mkdir()
    (prep / "cfg.json").write_text(json.dumps(cfg_dict))
    subprocess.run(
        [FEDVSR_PY, __file__, "--side", "prepare", "--out", str(prep)],
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    runs = []
    for rep in range(1, args.reps + 1):
        for side, python in (("fedvsr", FEDVSR_PY), ("flower", FLOWER_PY)):
            r = run_side(python, side, args.workload, cfg_dict, work)
            r["rep"] = rep
            runs.append(r)
            print(
                f"rep {rep} {side}: train {r['median_train_seconds']:.3f} s/round, round "
                f"{r['median_round_seconds']:.3f} s, clients {r['median_client_seconds']:.3f} s "
                f"({r['median_client_steps']:g} steps), overhead {r['median_overhead_seconds']:.3f} s, "
                f"peak {r['peak_rss_gb']:.2f} GB, load {r['load_before'][0]:.1f}",
                flush=True,
            )
    c = cfg_dict
    result = {
        "workload": args.workload,
        "description": (
            f"model {c['model']['name']}/{c['model']['preset']}, {c['fl']['clients']} clients, "
            f"{c['fl']['clients_per_round']} per round, {c['fl']['rounds']} rounds, "
            f"{c['platform']['workers']} workers/actors of 1 CPU, torch threads 1, data overrides "
            f"{c['data'] or 'none (defaults)'}, eval {c['eval']}; FedAvg, batch {c['fl']['batch_size']}, "
            f"{c['fl']['local_epochs']} local epoch, Adam. Medians over rounds 2..R."
        ),
        "config": cfg_dict,
        "machine": f"{platform.node()} {os.cpu_count()} CPUs, {platform.python_version()}",
        "versions": {"fedvsr": versions(FEDVSR_PY), "flower": versions(FLOWER_PY)},
        "runs": runs,
    }
    save(summarise(result), results)


def summarise(result: dict[str, Any], other: str = "flower") -> dict[str, Any]:
    """Adds the ratios other / fedvsr of each repetition pair and their medians to ``result``."""
    for r in result["runs"]:
        r.update(round_medians(r["rounds"], result["config"]["platform"]["workers"]))
    pairs = []
    for rep in sorted({r["rep"] for r in result["runs"]}):
        a, b = (next(r for r in result["runs"] if r["rep"] == rep and r["side"] == s) for s in ("fedvsr", other))
        pairs.append(
            {
                "rep": rep,
                **{
                    f"{name}_ratio": b.get(key, math.nan) / a.get(key, math.nan)
                    for name, key in (
                        ("train", "median_train_seconds"),
                        ("round", "median_round_seconds"),
                        ("wall", "median_wall_seconds"),
                        ("overhead", "median_overhead_seconds"),
                        ("memory", "peak_rss_gb"),
                    )
                },
            }
        )
    result["pairs"] = pairs
    result["median"] = {k: statistics.median(p[k] for p in pairs) for k in pairs[0] if k.endswith("_ratio")}
    return result


def save(result: dict[str, Any], results: Path = RESULTS) -> None:
    """Writes ``<workload>.json`` / ``.md`` and updates ``result.json`` / ``result.md`` (every workload) in
    ``results``."""
    results.mkdir(parents=True, exist_ok=True)
    workload = result["workload"]
    (results / f"{workload}.json").write_text(json.dumps(result, indent=1))
    md = markdown(result)
    (results / f"{workload}.md").write_text(md)
    # result.json / result.md: every workload measured so far, keyed by workload
    combined_path = results / "result.json"
    combined = json.loads(combined_path.read_text()) if combined_path.exists() else {}
    combined[workload] = result
    combined_path.write_text(json.dumps(combined, indent=1))
    (results / "result.md").write_text("\n\n".join(markdown(combined[w]) for w in sorted(combined)))
    print(md)


if __name__ == "__main__":
    sys.exit(main())
