"""fedvsr against Apple's pfl-research (pfl 0.6) on the small-client workload (issue 11, benchmark 3).

Run by hand (pfl lives in a venv of its own, /work/bench-pfl, with torch 2.13.0 CPU, psutil and fedvsr installed
``--no-deps``; docs/benchmarks.md, "Against Flower and pfl-research")::

    /work/bench-flwr/bin/python benchmarks/vs_pfl.py --reps 2

(the orchestrator only needs psutil; it runs fedvsr in /work/venv and pfl in /work/bench-pfl.)

Two sides, alternated A B A B (fedvsr first), each a fresh process tree, on the ``small`` workload of
``vs_flower.py`` (efvsr/tiny, 300 clients, 10 a round, 2 workers of 1 CPU, torch threads 1):

- fedvsr: ``run_experiment`` in /work/venv, as in ``vs_flower.py``.
- pfl: ``FederatedAveraging`` with ``SimulatedBackend`` over a ``FederatedDataset``, run the way pfl runs in
  parallel on one machine: ``torchrun --nproc_per_node 2`` (each rank trains its share of the cohort, the sums
  are all-reduced over gloo). The model is fedvsr's, wrapped in ``PyTorchModel`` (its ``loss`` is the model's
  ``L_VSR``); the local optimizer is fedvsr's Adam (betas 0.9, 0.99, fl.lr) made fresh per user, the central one
  SGD with rate 1 (= FedAvg). The users of round ``t`` are fedvsr's (``sample_clients``); a user's data is the
  same clips fedvsr draws (``TrainClips`` with the same seed) in fedvsr's batch order, batch size 8, 1 epoch.
  No evaluation on the pfl side (fedvsr's evaluation of 1 clip is reported apart: ``eval`` column).

Time per round: fedvsr's ``train_seconds`` (and whole ``seconds``) against the time between pfl's
``after_central_iteration`` callbacks on rank 0; round 1 reported apart, medians over rounds 2..R.
Peak memory: summed RSS of the whole process tree every 0.2 s (see ``vs_flower.tree_rss``).
Writes ``benchmarks/results/vs_pfl/result.json`` and ``result.md``. Ratios are pfl / fedvsr per pair.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vs_flower  # noqa: E402  (the shared workload, data preparation, fedvsr side and memory sampler)

ROOT = vs_flower.ROOT
RESULTS = ROOT / "benchmarks" / "results" / "vs_pfl"
PFL_PY = os.environ.get("PFL_PYTHON", "/work/bench-pfl/bin/python")


def pfl_side(cfg_dict: dict[str, Any], out: Path) -> None:
    import numpy as np
    import torch
    from pfl.aggregate.simulate import SimulatedBackend
    from pfl.algorithm import FederatedAveraging, NNAlgorithmParams
    from pfl.callback.base import TrainingProcessCallback
    from pfl.data.dataset import Dataset
    from pfl.data.federated_dataset import FederatedDataset
    from pfl.hyperparam import NNEvalHyperParams, NNTrainHyperParams
    from pfl.internal.ops import get_ops
    from pfl.metrics import Metrics, Weighted
    from pfl.model.pytorch import PyTorchModel

    from fedvsr.data.datasets import TrainClips, collate, resolve_augment
    from fedvsr.fl.sampling import client_seed, sample_clients
    from fedvsr.models import build_model

    torch.set_num_threads(1)
    st = vs_flower._process_data(cfg_dict)
    cfg = st.cfg
    torch.manual_seed(cfg.seed)
    vsr = build_model(cfg.model.name, cfg.model.preset, cfg.model.options)
    clip_frames = cfg.data.clip_frames or vsr.num_frames
    augment = resolve_augment(cfg.data.augment, type(vsr))

    class PflVSR(torch.nn.Module):
        """fedvsr's model with the ``loss`` / ``metrics`` pair pfl's PyTorchModel calls."""

        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def loss(self, lr: torch.Tensor, hr: torch.Tensor, eval: bool = False) -> torch.Tensor:  # noqa: A002
            self.train(not eval)
            return self.model.vsr_loss(self.model(lr), hr, lr)

        @torch.no_grad()
        def metrics(self, lr: torch.Tensor, hr: torch.Tensor, eval: bool = True) -> dict[str, Any]:  # noqa: A002
            return {"loss": Weighted.from_unweighted(float(self.loss(lr, hr, eval=True)))}

    # users: fedvsr's clients of each round, in order; every rank draws the same sequence
    schedule = [
        (t, c)
        for t in range(1, cfg.fl.rounds + 1)
        for c in sample_clients(cfg.seed, t, cfg.fl.clients, cfg.fl.clients_per_round)
    ]
    position = iter(range(len(schedule)))

    def user_sampler():
        return schedule[next(position) % len(schedule)]

    def make_dataset(user: tuple[int, int]) -> Dataset:
        t, c = user
        trained.append([t, c])
        seed = client_seed(cfg.seed, t, c)
        data = TrainClips(
            [st.pair(i) for i in st.client_videos[c]],
            clip_frames,
            cfg.data.patch,
            cfg.data.samples_per_video,
            seed,
            augment,
        )
        order = np.random.default_rng([seed, 0]).permutation(len(data))  # fedvsr's epoch-0 batch order
        lr, hr = collate([data[int(i)] for i in order])
        return Dataset(raw_data=[lr, hr], user_id=user)

    train_data = FederatedDataset(make_dataset, user_sampler)
    val_data = FederatedDataset(make_dataset, lambda: schedule[0])
    marks: list[float] = []
    trained: list[list[int]] = []  # (round, client) of the users this rank trained

    class Timer(TrainingProcessCallback):
        def on_train_begin(self, *, model):
            marks.append(time.perf_counter())
            return Metrics()

        def after_central_iteration(self, aggregate_metrics, model, *, central_iteration):
            marks.append(time.perf_counter())
            return False, Metrics()

    model = PyTorchModel(
        model=PflVSR(vsr),
        local_optimizer_create=lambda params, lr: torch.optim.Adam(params, lr=lr, betas=(0.9, 0.99)),
        central_optimizer=torch.optim.SGD(vsr.parameters(), lr=1.0),
    )
    backend = SimulatedBackend(training_data=train_data, val_data=val_data)
    algorithm_params = NNAlgorithmParams(
        central_num_iterations=cfg.fl.rounds,
        evaluation_frequency=10**9,
        train_cohort_size=cfg.fl.clients_per_round,
        val_cohort_size=None,
    )
    train_params = NNTrainHyperParams(
        local_learning_rate=cfg.fl.lr, local_num_epochs=cfg.fl.local_epochs, local_batch_size=cfg.fl.batch_size
    )
    start = time.perf_counter()
    FederatedAveraging().run(
        algorithm_params=algorithm_params,
        backend=backend,
        model=model,
        model_train_params=train_params,
        model_eval_params=NNEvalHyperParams(local_batch_size=cfg.fl.batch_size),
        callbacks=[Timer()],
    )
    total = time.perf_counter() - start
    if get_ops().distributed.global_rank == 0:
        took = [marks[t] - marks[t - 1] for t in range(1, len(marks))]  # round t: after_central_iteration t-1 -> t
        rounds = [
            {
                "round": t,
                "train_seconds": s,
                "seconds": s,
                "eval_seconds": 0.0,
                "train_loss": math.nan,
                "wall_seconds": s,
            }
            for t, s in enumerate(took, 1)
        ]
        if len(rounds) != cfg.fl.rounds:
            raise RuntimeError(f"pfl ran {len(rounds)} of {cfg.fl.rounds} rounds")
        world = get_ops().distributed.world_size
        (out / "result.json").write_text(
            json.dumps({"rounds": rounds, "driver_seconds": total, "world": world, "rank0_users": trained})
        )


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# fedvsr vs pfl-research 0.6 (torchrun, 2 ranks): workload `small`",
        "",
        result["description"],
        "",
        f"Machine: {result['machine']}; shared with other users while it ran (load averages below).",
        f"fedvsr side: {result['versions']['fedvsr']}; pfl side: {result['versions']['pfl']}.",
        "",
        "| rep | side | train s/round (median r2+) | whole round s (median r2+) | round-to-round wall s | "
        "eval s | round 1 s | process s | peak RSS of the tree GB | load 1-min before / after |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        lines.append(
            f"| {r['rep']} | {r['side']} | {r['median_train_seconds']:.3f} | "
            f"{r['median_round_seconds']:.3f} | {r.get('median_wall_seconds', math.nan):.3f} | "
            f"{r['median_eval_seconds']:.3f} | "
            f"{r['round1_seconds']:.2f} | {r['process_seconds']:.1f} | "
            f"{r['peak_rss_gb']:.2f} | {r['load_before'][0]:.1f} / {r['load_after'][0]:.1f} |"
        )
    lines += [
        "",
        "Ratios pfl / fedvsr per repetition pair (> 1: fedvsr faster or smaller; pfl's round has no "
        "evaluation, so 'whole round' compares it with fedvsr's round including its evaluation):",
        "",
        "| rep | train time | whole round | round-to-round wall | peak memory |",
        "|---|---|---|---|---|",
    ]
    for p in [*result["pairs"], {**result["median"], "rep": "median"}]:
        lines.append(
            f"| {p['rep']} | {p['train_ratio']:.2f} | {p['round_ratio']:.2f} | "
            f"{p.get('wall_ratio', math.nan):.2f} | {p['memory_ratio']:.2f} |"
        )
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=2, help="repetitions of the pair (A B A B ...)")
    ap.add_argument("--rounds", type=int, default=0, help="override fl.rounds (0: the workload's)")
    ap.add_argument("--side", choices=["pfl"], help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--render", action="store_true", help="recompute the ratios and tables from the saved json")
    args = ap.parse_args()
    if args.render:
        result = vs_flower.summarise(json.loads((RESULTS / "result.json").read_text()), other="pfl")
        (RESULTS / "result.json").write_text(json.dumps(result, indent=1))
        (RESULTS / "result.md").write_text(markdown(result))
        return
    if args.side:
        out = Path(args.out)
        pfl_side(json.loads((out / "cfg.json").read_text()), out)
        return

    cfg_dict = json.loads(json.dumps(vs_flower.WORKLOADS["small"]))
    if args.rounds:
        cfg_dict["fl"]["rounds"] = args.rounds
    work = Path(tempfile.mkdtemp(prefix="vs_pfl_"))
    prep = work / "prepare"
    prep.mkdir()
    (prep / "cfg.json").write_text(json.dumps(cfg_dict))
    subprocess.run(
        [vs_flower.FEDVSR_PY, vs_flower.__file__, "--side", "prepare", "--out", str(prep)],
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    torchrun = str(Path(PFL_PY).parent / "torchrun")
    workers = cfg_dict["platform"]["workers"]
    runs = []
    for rep in range(1, args.reps + 1):
        for side in ("fedvsr", "pfl"):
            command = (
                None
                if side == "fedvsr"
                else [torchrun, "--standalone", f"--nproc_per_node={workers}", __file__, "--side", "pfl"]
            )
            r = vs_flower.run_side(vs_flower.FEDVSR_PY, side, "small", cfg_dict, work, command=command)
            r["rep"] = rep
            runs.append(r)
            print(
                f"rep {rep} {side}: train {r['median_train_seconds']:.3f} s/round, round "
                f"{r['median_round_seconds']:.3f} s, peak {r['peak_rss_gb']:.2f} GB, load {r['load_before'][0]:.1f}",
                flush=True,
            )
    c = cfg_dict
    pfl_version = subprocess.run(
        [
            PFL_PY,
            "-c",
            "import importlib.metadata as m, torch; print('pfl', m.version('pfl'), ', torch', torch.__version__)",
        ],
        capture_output=True,
        text=True,
    ).stdout.strip()
    result = {
        "workload": "small",
        "description": (
            f"model {c['model']['name']}/{c['model']['preset']}, {c['fl']['clients']} clients, "
            f"{c['fl']['clients_per_round']} per round, {c['fl']['rounds']} rounds, "
            f"{workers} workers / torchrun ranks of 1 thread, data overrides {c['data']}, "
            f"FedAvg, batch {c['fl']['batch_size']}, {c['fl']['local_epochs']} local epoch, Adam. "
            "Medians over rounds 2..R."
        ),
        "config": cfg_dict,
        "machine": f"{platform.node()} {os.cpu_count()} CPUs, {platform.python_version()}",
        "versions": {"fedvsr": vs_flower.versions(vs_flower.FEDVSR_PY), "pfl": pfl_version},
        "runs": runs,
    }
    vs_flower.summarise(result, other="pfl")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "result.json").write_text(json.dumps(result, indent=1))
    md = markdown(result)
    (RESULTS / "result.md").write_text(md)
    print(md)


if __name__ == "__main__":
    sys.exit(main())
