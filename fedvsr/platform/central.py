"""The centralized upper bound: one model trained on every client's data pooled, data-parallel on Ray Train.

The FedVSR paper (arXiv 2503.13745) ends on "a gap remains between FL-based VSR and centralized
approaches"; this measures the gap: the model trained on the union of the clients' data, the upper bound of
what federated training of it can reach. ``fedvsr train-central`` trains it with Ray Train's
``TorchTrainer`` over ``platform.workers`` workers (CPU, or one GPU each with ``--gpu``), on the same
videos, degradation, training crops and evaluation clips as ``fedvsr simulate`` with the same config,
and writes its results in the same format, so ``fedvsr report --compare`` draws it beside federated runs.

**One round is one epoch over the pooled data.** The pooled data are all videos of the client pool (every
client's videos; the evaluation videos stay out), ``data.samples_per_video`` random clips each. The run
trains ``fl.rounds`` epochs, so its curve has as many points as a federated run's. A federated round
trains less: ``fl.clients_per_round`` of ``fl.clients`` clients, each ``fl.local_epochs`` epochs over its
own videos, i.e. about ``clients_per_round / clients * local_epochs`` of one central epoch's clips
(the default experiment: 4 of 8 clients, 1 local epoch, 192 of the 384 clips of a central epoch).
The central optimizer (``fl.optimizer``, rate ``fl.lr`` under ``fl.lr_schedule``, whose round clock is
the epoch here and whose local clock is the step within the epoch) lives for the whole run; a federated
client's starts fresh each round.

Epoch ``t``'s clips and their order are drawn as a federated client with id :data:`POOLED` would draw them
in round ``t``: ``TrainClips`` and :func:`~fedvsr.fl.client.epoch_batches` seeded by
``client_seed(seed, t, POOLED)``. The model starts from ``torch.manual_seed(seed)``, as the coordinator's.

**Batch sharding.** A step takes one global mini-batch of ``fl.batch_size`` clips; rank ``r`` of ``W``
workers computes the model's loss (a mean over its items) on items ``r::W`` of it. Before each optimizer
step (inside the model's ``training_step``, through its ``hooks.apply``) the gradients of that optimizer's
parameters are summed over the workers with weights ``n_r / n`` (``n_r`` the rank's items, ``n`` the
global batch's), which is exactly the gradient of the mean loss over the whole global batch, for any
``W`` and any last, smaller batch. So ``W`` workers take the same steps as one, up to the rounding of
the sums (tested). A rank left without an item (a last batch smaller than ``W``) computes one item with
weight 0. Every rank then clips (``fl.clip_grad_norm``) and steps the same gradients from the same
weights. We average the gradients in ``hooks.apply`` rather than wrapping the model in
``DistributedDataParallel``: a model's ``training_step`` calls the module itself (``self(lr)``,
``self.vsr_loss``) and may step several optimizers (a GAN's discriminator), which DDP's wrapper would
not see.

The training itself, :func:`train_pooled`, has no Ray in it: one rank's part, which with one rank runs in
any process (the tests compare it with a run on two Ray Train workers); :func:`train_loop` runs it on Ray Train.

**Storage.** Every epoch rank 0 evaluates the model on the held-out clips (as
:func:`~fedvsr.evaluation.evaluate_model`) and attaches a Ray Train checkpoint holding the weights
(safetensors) and the rows so far; the run keeps the latest in ``<out>/ray_train`` (Ray Train's
storage). The driver reads it at the end and writes ``config.yaml``, ``rounds.parquet``,
``summary.json`` and ``model.safetensors`` into ``<out>`` (``fedvsr train-central`` then draws ``psnr.png``
from them). On a cluster of several nodes,
``<out>`` (like a sweep's folder and the data) must be on storage every node mounts at the same path.
Rank 0 also sends each row to the driver through a Ray queue, for the per-epoch progress lines.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from fedvsr.config import ConfigError, ExperimentConfig, config_from_dict
from fedvsr.data.datasets import TrainClips, VideoPair, collate, eval_clips, load_pair_for, resolve_augment
from fedvsr.data.sources import experiment_videos
from fedvsr.data.video import VideoEntry
from fedvsr.evaluation import evaluate_bicubic, evaluate_model
from fedvsr.fl.client import epoch_batches, make_optimizer, seed_torch
from fedvsr.fl.sampling import client_seed
from fedvsr.fl.schedule import LRSchedule
from fedvsr.models import VSRModel, build_model, count_params
from fedvsr.models.base import StepHooks
from fedvsr.platform.checkpoint import load_arrays, save_arrays
from fedvsr.platform.cluster import root_cause
from fedvsr.platform.results import run_summary, write_json_atomic, write_parquet_atomic, write_text_atomic

#: the pooled dataset's client id in :func:`~fedvsr.fl.sampling.client_seed`; never a real client's (0 .. clients-1)
POOLED = 2**32 - 1
#: Ray Train's storage folder inside the run folder
TRAIN_DIR = "ray_train"
WEIGHTS_FILE = "model.safetensors"
ROWS_FILE = "rows.json"


class CentralTrainingError(RuntimeError):
    """A Ray Train worker failed; the message names the run folder and the worker's error."""


# ----------------------------------------------------------------------------------------- the workers


class _Indices:
    """A dataset whose item ``i`` is ``i``: :func:`epoch_batches` then hands its collate the global batch's indices."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def shard_sizes(batch: int, rank: int, world: int) -> int:
    """How many items of a global batch of ``batch`` items rank ``rank`` of ``world`` takes (items ``rank::world``)."""
    return len(range(rank, batch, world))


def _average_gradients(params: list[torch.nn.Parameter], weight: float, world: int) -> None:
    """Replace each gradient by the sum over the workers of ``weight * gradient`` (one all-reduce)."""
    import torch.distributed as dist

    with_grad = [p for p in params if p.grad is not None]
    if world == 1 or not with_grad:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in with_grad])
    if weight == 0:
        flat.zero_()  # a stand-in item: contributes nothing, even if its loss is not finite
    else:
        flat.mul_(weight)
    dist.all_reduce(flat)
    offset = 0
    for p in with_grad:
        n = p.grad.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
        offset += n


def float_weights(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items() if v.is_floating_point()}


def _initial_model(cfg: ExperimentConfig, world: int, device: torch.device) -> VSRModel:
    """The model every rank starts from: built after ``torch.manual_seed(seed)``, as the coordinator's, on
    ``device``; with several ranks, rank 0's weights broadcast (the same seed gives the same weights everywhere:
    this makes sure of it)."""
    import torch.distributed as dist

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model.name, cfg.model.preset, cfg.model.options).to(device)
    if not isinstance(model, VSRModel):
        raise TypeError(f"model {cfg.model.name!r} is not a VSRModel; train-central needs its training_step")
    if world > 1:
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)
    return model


def train_pooled(
    cfg: ExperimentConfig,
    videos: list[VideoEntry],
    pool: list[int],
    held: list[int],
    rank: int = 0,
    world: int = 1,
    device: torch.device | str = "cpu",
) -> Iterator[tuple[str, dict[str, Any] | None, VSRModel]]:
    """Rank ``rank`` of ``world``'s part of the central training (no Ray in it: with ``world = 1`` it runs in
    any process; with more, ``torch.distributed`` must be set up, as Ray Train does).

    Yields ``("start", head, model)`` once before training and ``("epoch", row, model)`` after each of the
    ``fl.rounds`` epochs. Only rank 0 evaluates: its ``head`` is ``{params, workers, device, bicubic,
    initial}`` and its rows are those of ``rounds.parquet``; other ranks get None."""
    device = torch.device(device)
    model = _initial_model(cfg, world, device)

    def load(i: int) -> VideoPair:
        return load_pair_for(cfg, videos[i])

    pairs = [load(i) for i in pool]
    clip_frames = cfg.data.clip_frames or model.num_frames
    augment = resolve_augment(cfg.data.augment, type(model))
    clips, head = None, None
    if rank == 0:
        clips = eval_clips([load(i) for i in held], clip_frames, cfg.eval.clips)
        head = {
            "params": count_params(model),
            "workers": world,
            "device": str(device),
            "bicubic": evaluate_bicubic(model, clips, cfg),
            "initial": evaluate_model(model, clips, cfg, device),
        }
    yield "start", head, model
    yield from _epochs(cfg, model, pairs, clips, clip_frames, augment, rank, world, device)


def _epochs(
    cfg: ExperimentConfig,
    model: VSRModel,
    pairs: list[VideoPair],
    clips: list[tuple[torch.Tensor, torch.Tensor]] | None,
    clip_frames: int,
    augment: str,
    rank: int,
    world: int,
    device: torch.device,
) -> Iterator[tuple[str, dict[str, Any] | None, VSRModel]]:
    """The ``fl.rounds`` epochs of :func:`train_pooled` on rank ``rank`` of ``world``, over the training ``pairs``:
    yields ``("epoch", row, model)`` after each; rank 0 evaluates on ``clips`` for its row, the others get None."""
    import torch.distributed as dist

    schedule = LRSchedule.from_config(cfg.fl)
    optimizers = {
        name: make_optimizer(cfg.fl.optimizer, params, cfg.fl.lr)
        for name, params in model.optimizer_groups().items()
        if params
    }
    weight = 1.0  # this rank's share of the current global batch

    def apply(loss: torch.Tensor, opt: torch.optim.Optimizer, zero_grad: bool = True) -> None:
        if zero_grad:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for g in opt.param_groups for p in g["params"]]
        _average_gradients(params, weight, world)
        if cfg.fl.clip_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.fl.clip_grad_norm)
        opt.step()

    hooks = StepHooks(objective=lambda model_loss, sr, target: model_loss, apply=apply)
    epochs, batch = cfg.fl.rounds, cfg.fl.batch_size
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        seed = client_seed(cfg.seed, epoch, POOLED)
        data = TrainClips(
            pairs, clip_frames, cfg.data.patch, cfg.data.samples_per_video, seed, augment, cfg.data.dark_threshold
        )
        n = len(data)
        steps = math.ceil(n / batch)

        def my_items(indices: list[int], data: TrainClips = data) -> tuple[torch.Tensor, torch.Tensor]:
            return collate([data[i] for i in (indices[rank::world] or indices[:1])])

        model.train()
        seed_torch(seed, device)
        total = torch.zeros((), dtype=torch.float64, device=device)
        for step, items in enumerate(epoch_batches(_Indices(n), batch, seed, 0, my_items, device)):
            size = min(batch, n - step * batch)
            weight = shard_sizes(size, rank, world) / size
            for opt in optimizers.values():
                for group in opt.param_groups:
                    group["lr"] = schedule.step_rate(epoch, epochs, step, steps)
            reported = type(model).training_step(model, items, optimizers, hooks)
            total += reported.to(torch.float64) * weight
        if world > 1:
            dist.all_reduce(total)
        train_seconds = time.perf_counter() - start
        row = None
        if rank == 0:
            evaluated = evaluate_model(model, clips, cfg, device)
            seconds = time.perf_counter() - start
            row = {
                "round": epoch,
                **evaluated,
                "train_loss": float(total) / steps,
                "samples": n,
                "steps": steps,
                "workers": world,
                "seconds": seconds,
                "train_seconds": train_seconds,
                "eval_seconds": seconds - train_seconds,
                "lr": schedule.step_rate(epoch, epochs, 0, steps),
            }
        yield "epoch", row, model


def _quiet_reports() -> None:
    """Ray Train 2.x logs every ``report`` at INFO through a logger named after its file, which
    ``RunConfig(logging_config=...)`` does not reach: two lines per epoch between ours. Raise that logger's level."""
    import logging

    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray: leave its logging alone
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def train_loop(config: dict[str, Any]) -> None:
    """Ray Train's function on every worker: :func:`train_pooled` as this worker's rank; every epoch every rank
    reports, rank 0 with its row and a checkpoint (the weights and the rows so far)."""
    import ray.train
    import ray.train.torch

    cfg = config_from_dict(config["cfg"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(max(1, int(cfg.platform.cpus_per_worker)))
    _quiet_reports()
    queue = config["queue"]
    head: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    for kind, row, model in train_pooled(
        cfg, config["videos"], config["pool"], config["eval"], rank, world, ray.train.torch.get_device()
    ):
        if rank != 0:
            if kind == "epoch":
                ray.train.report({})
            continue
        queue.put({"kind": kind, **row})
        if kind == "start":
            head = row
            continue
        rows.append(row)
        with tempfile.TemporaryDirectory() as tmp:
            save_arrays(Path(tmp) / WEIGHTS_FILE, float_weights(model))
            write_json_atomic(Path(tmp) / ROWS_FILE, {**head, "rows": rows})
            ray.train.report(dict(row), checkpoint=ray.train.Checkpoint.from_directory(tmp))


# ----------------------------------------------------------------------------------------- the driver


def central_config(cfg: ExperimentConfig, workers: int | None = None, use_gpu: bool | None = None) -> ExperimentConfig:
    """``cfg`` with ``platform.workers`` = ``workers`` and, with ``use_gpu``, one GPU per worker (or the
    configured ``platform.gpus_per_worker``); without it none. Checks them before Ray starts."""
    p = cfg.platform
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"--workers = {workers!r}: train-central needs an integer number of workers >= 1")
    # Ray Train's data-parallel workers (one model, gradients all-reduced) hold a GPU each: nothing to pack
    if p.gpus_per_worker == "auto" and use_gpu is not False:
        raise ConfigError(
            "platform.gpus_per_worker = auto packs federated clients on a GPU, but train-central trains one model "
            "data-parallel, a GPU per worker; allowed here: a number (platform.gpus_per_worker=1)"
        )
    gpus = p.gpus_per_worker if use_gpu is None else (p.gpus_per_worker or 1.0) if use_gpu else 0.0
    out = dataclasses.replace(cfg, platform=dataclasses.replace(p, workers=workers or p.workers, gpus_per_worker=gpus))
    if gpus > 0 and not p.address and not os.environ.get("RAY_ADDRESS") and torch.cuda.device_count() == 0:
        raise ConfigError(
            f"--gpu (platform.gpus_per_worker = {gpus:g}) but this machine has no CUDA GPU; "
            "train on the CPU (leave out --gpu) or give platform.address of a cluster with GPUs"
        )
    return config_from_dict(out.to_dict())


def _check_resources(cfg: ExperimentConfig) -> None:
    """On a local Ray: stop with a clear message when the workers cannot all be placed (Ray Train would wait)."""
    import ray

    p = cfg.platform
    have = ray.cluster_resources()
    for kind, each in (("CPU", p.cpus_per_worker), ("GPU", p.gpus_per_worker)):
        need = p.workers * each
        if need > have.get(kind, 0.0) + 1e-9:
            raise ConfigError(
                f"train-central needs {need:g} {kind}s ({p.workers} workers x {each:g}), but this Ray has "
                f"{have.get(kind, 0.0):g}; use fewer --workers or a smaller platform.{kind.lower()}s_per_worker"
            )


def _pump(queue, stop: threading.Event, on_start, on_epoch) -> None:
    from ray.util.queue import Empty

    while True:
        try:
            item = queue.get(timeout=0.25)
        except Empty:
            if stop.is_set():
                return
            continue
        kind = item.pop("kind")
        callback = on_start if kind == "start" else on_epoch
        if callback is not None:
            callback(item)


def run_central(
    cfg: ExperimentConfig,
    out_dir: str | os.PathLike,
    workers: int | None = None,
    use_gpu: bool | None = None,
    on_start: Callable[[dict[str, Any]], None] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train ``cfg``'s model centrally on the pooled client data for ``fl.rounds`` epochs (see the module
    docstring); returns the summary, also written to ``<out_dir>/summary.json``.

    ``workers`` / ``use_gpu`` override ``platform.workers`` / ``platform.gpus_per_worker`` (None keeps the
    config's). ``on_start`` gets ``{params, workers, device, bicubic, initial}``, ``on_epoch`` each row."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig, TrainingFailedError
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Queue

    from fedvsr.platform.run import init_ray, run_config

    cfg = central_config(cfg, workers, use_gpu)
    out = Path(out_dir).resolve()
    run_config(out, cfg, resume=False)  # refuses a folder that holds a run
    try:
        videos, pool, held = experiment_videos(cfg)
    except FileNotFoundError as err:
        raise ConfigError(str(err)) from None
    p = cfg.platform
    started = init_ray(cfg)
    try:
        if not p.address:
            _check_resources(cfg)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "config.yaml", cfg.to_yaml())
        queue = Queue(actor_options={"num_cpus": 0})
        stop = threading.Event()
        pump = threading.Thread(target=_pump, args=(queue, stop, on_start, on_epoch), daemon=True)
        pump.start()
        resources = {"CPU": p.cpus_per_worker, **({"GPU": p.gpus_per_worker} if p.gpus_per_worker > 0 else {})}
        trainer = TorchTrainer(
            train_loop,
            train_loop_config={"cfg": cfg.to_dict(), "videos": videos, "pool": pool, "eval": held, "queue": queue},
            scaling_config=ScalingConfig(
                num_workers=p.workers, use_gpu=p.gpus_per_worker > 0, resources_per_worker=resources
            ),
            run_config=RunConfig(
                name=TRAIN_DIR,
                storage_path=str(out),
                checkpoint_config=CheckpointConfig(num_to_keep=1),
                failure_config=FailureConfig(max_failures=0),
                logging_config=LoggingConfig(log_level="WARNING"),
            ),
        )
        try:
            result = trainer.fit()
        except TrainingFailedError as err:
            ranks: dict[str, list[int]] = {}  # the same error of several workers, said once
            for r, e in sorted((getattr(err, "worker_failures", None) or {}).items()):
                ranks.setdefault(root_cause(e), []).append(r)
            why = "; ".join(
                f"worker{'s' if len(rs) > 1 else ''} {', '.join(map(str, rs))}: {cause}" for cause, rs in ranks.items()
            ) or root_cause(err)
            raise CentralTrainingError(f"central training of {out} failed: {why}") from err
        finally:
            stop.set()
            pump.join()
            queue.shutdown()
        if result.checkpoint is None:
            raise CentralTrainingError(f"central training of {out} ended without a checkpoint ({out / TRAIN_DIR})")
        with result.checkpoint.as_directory() as ckpt:
            saved = json.loads((Path(ckpt) / ROWS_FILE).read_text())
            weights = load_arrays(Path(ckpt) / WEIGHTS_FILE)
        return finish(cfg, out, saved, weights)
    finally:
        if started:
            ray.shutdown()


def finish(cfg: ExperimentConfig, out: Path, saved: dict[str, Any], weights: dict[str, np.ndarray]) -> dict[str, Any]:
    """Write ``rounds.parquet``, ``model.safetensors`` and ``summary.json`` of a finished run (the keys of a
    federated run's summary, with ``strategy = "central"``, then ``workers``, ``device`` and
    ``samples_per_round``); the ``fedvsr`` command draws ``psnr.png`` from them."""
    rows = saved["rows"]
    write_parquet_atomic(out / "rounds.parquet", pa.Table.from_pylist(rows))
    save_arrays(out / "model.safetensors", weights)
    summary = run_summary(cfg, "central", saved["params"], rows, saved["bicubic"], saved["initial"])
    summary.update(workers=saved["workers"], device=saved["device"], samples_per_round=rows[-1]["samples"])
    write_json_atomic(out / "summary.json", summary)
    return summary
