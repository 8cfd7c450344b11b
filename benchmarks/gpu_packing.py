"""GPU packing on one GPU (issue 24, item 4): clients per second at 1, 2, 4, 8 workers per GPU and with
``platform.gpus_per_worker = auto``, against the same clients trained one after another in one plain process.

Run by hand on a machine with one CUDA GPU (about 6 minutes on an H100; nothing is downloaded)::

    python benchmarks/gpu_packing.py [--out DIR] [--models efvsr,fcvsr] [--rounds 3]

For each model (``efvsr/small``, ``fcvsr/small``; fedvsr's default data: 28 synthetic videos of 16 frames at
128 x 128, LR patch 32, 16 clips a video, batch 8, one local epoch, Adam), with 32 clients and 16 a round:

- ``plain``: one process, no Ray: :meth:`fedvsr.platform.worker.ClientWorker.local` on the GPU trains the round's
  16 clients one after another (the same clients, data and code as a worker); clients/s over rounds 2..R.
- ``k per GPU`` (k = 1, 2, 4, 8): ``fedvsr simulate``'s runtime (``run_experiment``) with ``platform.workers = k``
  and ``platform.gpus_per_worker = 1/k`` on one Ray holding the one GPU; clients/s = the round's clients over its
  training seconds (rounds.parquet), median over rounds 2..R (round 1 starts the actors).
- ``auto``: ``platform.gpus_per_worker = auto`` with ``platform.workers = 8`` (an upper bound): the probe measures a
  client's peak memory and packs as many workers as fit; the packing it chose is in the row.

Peak GPU memory: ``nvidia-smi``'s memory.used of the card sampled every 0.25 s during the run (every process on
it together), and for ``plain`` also ``torch.cuda.max_memory_reserved``. Overhead against plain: plain's clients/s
divided by the runtime's at 1 worker per GPU (what the runtime costs when it adds no parallelism); speed-up: the
runtime's clients/s over plain's. Writes ``result.json`` and ``result.md`` under ``--out`` (default
benchmarks/results/gpu_packing) with the card's name.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PER_GPU = (1, 2, 4, 8)


def overrides(model: str, rounds: int) -> list[str]:
    return [
        f"model.name={model}",
        "model.preset=small",
        "fl.clients=32",
        "fl.clients_per_round=16",
        f"fl.rounds={rounds}",
        "fl.batch_size=8",
        "platform.cpus_per_worker=1",
    ]


class GpuMemory:
    """The card's memory.used (MiB) sampled with nvidia-smi every 0.25 s; ``peak`` after ``stop``."""

    def __init__(self) -> None:
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                ).stdout.split()
                self.peak = max(self.peak, int(out[0]))
            except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
                pass
            self._stop.wait(0.25)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def plain(model: str, rounds: int) -> dict[str, Any]:
    """The round's clients one after another in this process on the GPU (no Ray)."""
    import torch

    from fedvsr.config import load_config
    from fedvsr.data.sources import experiment_data
    from fedvsr.fl.aggregate import to_numpy
    from fedvsr.fl.partition import partition_videos
    from fedvsr.fl.sampling import sample_clients
    from fedvsr.fl.strategy import float_state
    from fedvsr.models import build_model
    from fedvsr.platform.worker import ClientWorker

    cfg = load_config(None, [*overrides(model, rounds), "platform.gpus_per_worker=1"])
    data = experiment_data(cfg)
    labels = [data.videos[i].label for i in data.pool]
    parts = partition_videos(labels, cfg.fl.clients, cfg.fl.partition, cfg.data.seed, cfg.fl.dirichlet_beta)
    worker = ClientWorker.local(cfg, 0, data.videos, [[data.pool[j] for j in p] for p in parts], data.held)
    torch.manual_seed(cfg.seed)
    params = to_numpy(float_state(build_model(cfg.model.name, cfg.model.preset, cfg.model.options)))
    memory = GpuMemory()
    torch.cuda.reset_peak_memory_stats()
    rates = []
    for t in range(1, rounds + 1):
        clients = sample_clients(cfg.seed, t, cfg.fl.clients, cfg.fl.clients_per_round)
        start = time.perf_counter()
        for c in clients:
            worker.train_client(t, params, {}, c)
        torch.cuda.synchronize()
        rates.append(len(clients) / (time.perf_counter() - start))
    return {
        "setting": "plain",
        "workers": 1,
        "clients_per_s": statistics.median(rates[1:] or rates),
        "peak_gpu_mib": memory.stop(),
        "torch_peak_reserved_mib": torch.cuda.max_memory_reserved() / 2**20,
    }


def runtime(model: str, rounds: int, per_gpu: int | str, work: Path) -> dict[str, Any]:
    """``run_experiment`` with ``per_gpu`` workers on the GPU (or ``auto``)."""
    import pyarrow.parquet as pq

    from fedvsr.config import load_config
    from fedvsr.platform.run import run_experiment

    gpus = "auto" if per_gpu == "auto" else 1.0 / per_gpu
    workers = 8 if per_gpu == "auto" else per_gpu
    cfg = load_config(
        None, [*overrides(model, rounds), f"platform.workers={workers}", f"platform.gpus_per_worker={gpus}"]
    )
    out = work / f"{model}-{per_gpu}"
    memory = GpuMemory()
    run_experiment(cfg, out)
    peak = memory.stop()
    rows = pq.read_table(out / "rounds.parquet").to_pylist()
    later = rows[1:] or rows
    events = (
        [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
        if (out / "events.jsonl").exists()
        else []
    )
    packed = [e for e in events if e["kind"] in ("gpu_packing", "gpu_oom")]
    return {
        "setting": f"{per_gpu} per GPU" if per_gpu != "auto" else "auto",
        "workers": rows[-1]["workers"],
        "clients_per_s": statistics.median(r["aggregated"] / r["train_seconds"] for r in later),
        "peak_gpu_mib": peak,
        "packing": [e["message"] for e in packed],
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# GPU packing on {result['gpu']}",
        "",
        result["note"],
        "",
        "| model | setting | workers | clients/s | x plain | peak GPU MiB (card) | packing |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, rows in result["models"].items():
        base = rows[0]["clients_per_s"]
        for r in rows:
            lines.append(
                f"| {model}/small | {r['setting']} | {r['workers']} | {r['clients_per_s']:.2f} | "
                f"{r['clients_per_s'] / base:.2f} | {r['peak_gpu_mib']} | {'; '.join(r.get('packing', []))} |"
            )
    for model, rows in result["models"].items():
        one = next(r for r in rows if r["setting"] == "1 per GPU")
        lines.append(
            f"\n{model}: runtime overhead at 1 worker per GPU against the plain process: "
            f"{rows[0]['clients_per_s'] / one['clients_per_s']:.3f}x the plain process's time per client"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu_packing"))
    ap.add_argument("--models", default="efvsr,fcvsr")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    import ray
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("gpu_packing: no CUDA GPU here; this benchmark needs one")
    os.environ.setdefault("FEDVSR_CACHE", str(Path(tempfile.gettempdir()) / "fedvsr-cache"))
    ray.init(num_cpus=os.cpu_count(), num_gpus=1, include_dashboard=False, logging_level="ERROR")
    result = {
        "gpu": torch.cuda.get_device_name(0),
        "models": {},
        "note": "One GPU, fedvsr's default data, 32 clients, 16 a round; medians over rounds 2..R.",
    }
    with tempfile.TemporaryDirectory() as work:
        for model in args.models.split(","):
            rows = [plain(model, args.rounds)]
            for k in (*PER_GPU, "auto"):
                start = time.perf_counter()
                rows.append(runtime(model, args.rounds, k, Path(work)))
                print(
                    f"{model} {k}: {rows[-1]['clients_per_s']:.2f} clients/s ({time.perf_counter() - start:.0f} s)",
                    flush=True,
                )
            result["models"][model] = rows
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=1))
    (out / "result.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
