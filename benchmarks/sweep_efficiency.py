"""How close a sweep of small trials comes to the speed of its rounds (issue 24's ``sweep_efficiency``).

    python benchmarks/sweep_efficiency.py [--trials 16] [--sequential K] [--out benchmarks/results/sweep_efficiency]

The trials are the tiny experiment of the issue (tiny preset, 3 rounds, 4 clients, 64x64 frames), a grid over
``fl.lr``. Everything runs as a user runs it, each part in a fresh process, one after another in one go:

* ``one``: one ``fedvsr simulate`` of the first point; ``four``: a grid sweep of the first 4 points
  (``fedvsr sweep --concurrent auto``): their ratio is the issue's "4 trials at most 2.5x one run";
* ``sweep``: the grid sweep of all ``--trials`` points (``--concurrent auto``); its **floor** is the sum of its
  trials' own round seconds (training and evaluation, each round's wall time) times the CPUs the trial's
  workers held, over the machine's CPUs: what a sweep with no cost between rounds would take;
* ``sequential``: the same experiments as ``fedvsr simulate`` commands one after another (``--sequential K``
  runs the first K and scales their wall time to all trials, said in the result);
* ``plain``: a plain Optuna loop in one process without Ray (GridSampler over the same points; each trial runs
  the experiment's rounds with :func:`fedvsr.fl.local.local_round` and evaluates with the workers' own
  :func:`~fedvsr.platform.worker.evaluate_model`): the anchor a researcher would write by hand.

The data (synthetic videos, LR cache) is built once before anything is timed. Writes ``efficiency.json``
(walls, ratios against the targets, the machine's load average before and after each part) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import yaml

SETTINGS = {"model.preset": "tiny", "fl.rounds": 3, "fl.clients": 4, "data.height": 64, "data.width": 64}
RESULTS = Path(__file__).parent / "results" / "sweep_efficiency"


def points(n: int) -> list[float]:
    return [round(0.0005 * (i + 1), 6) for i in range(n)]


def fedvsr(*args: str, log: Path) -> float:
    """Run ``fedvsr ARGS`` in a fresh process; returns its wall seconds (its output kept in ``log``)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "fedvsr.cli", *args], capture_output=True, text=True)
    wall = time.perf_counter() - start
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"fedvsr {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall


def sets(extra: dict | None = None) -> list[str]:
    return [f"--set={k}={v}" for k, v in {**SETTINGS, **(extra or {})}.items()]


def sweep_spec(work: Path, n: int) -> Path:
    path = work / f"grid-{n}.yaml"
    path.write_text(
        yaml.safe_dump(
            {"search": "grid", "scheduler": "none", "fixed": dict(SETTINGS), "params": {"fl.lr": {"grid": points(n)}}}
        )
    )
    return path


def floor_seconds(sweep: Path, cores: float) -> dict:
    """The sweep's floor: its trials' round seconds x the CPUs their workers held, over ``cores``."""
    busy, rounds = 0.0, 0
    for run in (sweep / "runs").iterdir():
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        held = cfg["platform"]["workers"] * cfg["platform"]["cpus_per_worker"]
        seconds = pq.read_table(run / "rounds.parquet", columns=["seconds"]).column("seconds").to_pylist()
        busy += sum(seconds) * held
        rounds += len(seconds)
    meta = pq.read_schema(sweep / "trials.parquet").metadata or {}
    return {
        "floor_seconds": busy / cores,
        "rounds": rounds,
        "utilisation": json.loads(meta.get(b"fedvsr.utilisation", b"{}")),
    }


def plain_optuna(n: int) -> dict:
    """The plain loop (module docstring), in this process; returns its wall seconds and final PSNRs."""
    import optuna
    import torch

    from fedvsr.config import load_config
    from fedvsr.data.datasets import TrainClips, collate, eval_clips, load_pair_for, resolve_augment
    from fedvsr.data.sources import experiment_data
    from fedvsr.evaluation import evaluate_model
    from fedvsr.fl import build_strategy
    from fedvsr.fl.client import LocalTraining, epoch_batches
    from fedvsr.fl.local import RoundSpec, local_round
    from fedvsr.fl.partition import partition_videos
    from fedvsr.fl.sampling import client_seed, sample_clients
    from fedvsr.fl.schedule import LRSchedule
    from fedvsr.fl.strategy import float_state
    from fedvsr.models import build_model

    start = time.perf_counter()
    psnr = {}

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_categorical("lr", points(n))
        cfg = load_config(None, [f"{k}={v}" for k, v in {**SETTINGS, "fl.lr": lr}.items()])
        data = experiment_data(cfg)
        labels = [data.videos[i].label for i in data.pool]
        parts = partition_videos(labels, cfg.fl.clients, cfg.fl.partition, cfg.data.seed, cfg.fl.dirichlet_beta)
        pairs = {i: load_pair_for(cfg, data.videos[i]) for i in range(len(data.videos))}
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model.name, cfg.model.preset, cfg.model.options)
        frames, augment = cfg.data.clip_frames or model.num_frames, resolve_augment(cfg.data.augment, type(model))
        clips = eval_clips([pairs[i] for i in data.held], frames, cfg.eval.clips)
        strategy, schedule = build_strategy(cfg.fl), LRSchedule.from_config(cfg.fl)
        params = float_state(model)
        server, states = strategy.init_server_state(params), {}
        for t in range(1, cfg.fl.rounds + 1):

            def client_data(c: int, t: int = t):
                seed = client_seed(cfg.seed, t, c)
                clips_c = TrainClips(
                    [pairs[data.pool[j]] for j in parts[c]],
                    frames,
                    cfg.data.patch,
                    cfg.data.samples_per_video,
                    seed,
                    augment,
                    cfg.data.dark_threshold,
                )
                return len(clips_c), lambda e: epoch_batches(
                    clips_c, cfg.fl.batch_size, seed, e, collate, torch.device("cpu")
                )

            clients = sample_clients(cfg.seed, t, cfg.fl.clients, cfg.fl.clients_per_round)
            params, server, _ = local_round(
                strategy,
                model,
                params,
                server,
                states,
                clients,
                client_data,
                RoundSpec(t, cfg.fl.rounds, cfg.fl.clients, schedule.round_rate(t, cfg.fl.rounds)),
                LocalTraining(epochs=cfg.fl.local_epochs, optimizer=cfg.fl.optimizer, schedule=schedule),
            )
            with torch.no_grad():
                state = model.state_dict()
                for k, v in params.items():
                    state[k].copy_(v)
            value = evaluate_model(model, clips, cfg, torch.device("cpu"))["psnr"]
        psnr[lr] = value
        return value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.GridSampler({"lr": points(n)}))
    study.optimize(objective, n_trials=n)
    return {"wall": time.perf_counter() - start, "final_psnr": psnr}


def prepare(work: Path) -> None:
    """Build the videos and the LR cache once (a one-round run), so no timed part pays for them."""
    fedvsr("simulate", "--out", str(work / "prepare"), *sets({"fl.rounds": 1}), log=work / "prepare.log")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--sequential", type=int, help="simulate commands run one after another (default: all)")
    parser.add_argument("--parts", default="one,four,sweep,sequential,plain")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--no-prepare", action="store_true", help="the data is already built and cached")
    parser.add_argument("--floor-of", help="only compute the floor and utilisation of this finished sweep folder")
    parser.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)  # the plain loop's own process
    args = parser.parse_args()
    if args.plain:
        print(json.dumps(plain_optuna(args.trials)))
        return
    if args.floor_of:
        print(json.dumps(floor_seconds(Path(args.floor_of), float(os.cpu_count() or 1))))
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fedvsr-sweep-efficiency-"))
    cores = float(os.cpu_count() or 1)
    parts = args.parts.split(",")
    result: dict = {"settings": SETTINGS, "trials": args.trials, "cores": cores, "walls": {}, "load": {}}
    if not args.no_prepare:
        prepare(work)

    def timed(name: str, run) -> float:
        load = os.getloadavg()[0]
        wall = run()
        result["walls"][name] = round(wall, 2)
        result["load"][name] = [round(load, 2), round(os.getloadavg()[0], 2)]
        print(f"{name}: {wall:.1f} s (load {load:.1f} -> {os.getloadavg()[0]:.1f})", flush=True)
        return wall

    lr = points(1)[0]
    if "one" in parts:
        timed("one", lambda: fedvsr("simulate", "--out", str(work / "one"), *sets({"fl.lr": lr}), log=out / "one.log"))
    if "four" in parts:
        timed(
            "four",
            lambda: fedvsr(
                "sweep",
                str(sweep_spec(work, 4)),
                "--out",
                str(work / "four"),
                "--concurrent",
                "auto",
                log=out / "four.log",
            ),
        )
    if "sweep" in parts:
        timed(
            "sweep",
            lambda: fedvsr(
                "sweep",
                str(sweep_spec(work, args.trials)),
                "--out",
                str(work / "sweep"),
                "--concurrent",
                "auto",
                log=out / "sweep.log",
            ),
        )
        result.update(floor_seconds(work / "sweep", cores))
    if "sequential" in parts:
        k = min(args.sequential or args.trials, args.trials)
        wall = timed(
            "sequential_measured",
            lambda: sum(
                fedvsr("simulate", "--out", str(work / f"seq-{i}"), *sets({"fl.lr": x}), log=out / "sequential.log")
                for i, x in enumerate(points(args.trials)[:k])
            ),
        )
        result["sequential_runs_measured"] = k
        result["walls"]["sequential"] = round(wall * args.trials / k, 2)
    if "plain" in parts:
        plain: dict = {}

        def run_plain() -> float:
            start = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, __file__, "--plain", "--trials", str(args.trials)],
                capture_output=True,
                text=True,
                check=True,
            )
            plain.update(json.loads(proc.stdout.strip().splitlines()[-1]))
            return time.perf_counter() - start

        timed("plain", run_plain)
        result["plain_final_psnr"] = plain["final_psnr"]
    w = result["walls"]
    ratios = {}
    if "one" in w and "four" in w:
        ratios["four_over_one"] = w["four"] / w["one"]  # target <= 2.5
    if "sweep" in w and result.get("floor_seconds"):
        ratios["sweep_over_floor"] = w["sweep"] / result["floor_seconds"]  # target <= 1.25
    if "sweep" in w and "sequential" in w:
        ratios["sequential_over_sweep"] = w["sequential"] / w["sweep"]  # target >= 3
    if "sweep" in w and "plain" in w:
        ratios["sweep_over_plain"] = w["sweep"] / w["plain"]  # target <= 1
    result["ratios"] = {k: round(v, 3) for k, v in ratios.items() if math.isfinite(v)}
    result["targets"] = {
        "four_over_one": "<= 2.5",
        "sweep_over_floor": "<= 1.25",
        "sequential_over_sweep": ">= 3",
        "sweep_over_plain": "<= 1",
    }
    (out / "efficiency.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["ratios"], indent=2))


if __name__ == "__main__":
    main()
