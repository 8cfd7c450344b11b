"""GPU packing that cannot run out of memory: ``platform.gpus_per_worker = auto``.

Before the workers start, one probe process on one GPU builds the trial's model, optimizer and a batch of its
data, runs one training step of one client and reads the step's peak GPU memory (``torch.cuda.max_memory_reserved``
plus the CUDA context of a process, :data:`CONTEXT_BYTES`). As many workers then share a GPU as fit in its memory
with :data:`MARGIN` kept free (:func:`workers_per_gpu`), at most ``platform.workers`` in all, each reserving
``1 / k`` of a GPU from Ray. A worker that still runs out of GPU memory (another process on the card, a larger
batch later) reports it; the coordinator halves the workers per GPU, restarts the pool and trains that client again,
and clients.parquet records the workers per GPU each client trained under and why it changed. In a sweep trial's
placement group (or beside other replicates) each worker keeps its share and half the workers restart instead.

A sweep, or a group of replicates, decides once for all its runs (:func:`resolve` with :func:`probe`, kept in
:data:`PACKING_FILE`): see fedvsr.sweeps.gpus.

Testing hooks (``$FEDVSR_FAULT``, like the others): ``gpu-probe:PEAK_MIB:TOTAL_MIB`` answers the probe with those
numbers instead of measuring (the one fake: no GPU is needed to test the arithmetic with Ray's fake GPU resources);
``oom:ROUND:CLIENT:MARKER`` raises ``torch.cuda.OutOfMemoryError`` in the worker that starts that client, once.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fedvsr.config import ConfigError, ExperimentConfig

#: the share of a GPU's memory kept free when packing workers on it
MARGIN = 0.15
#: the memory a process's CUDA context takes besides torch's allocations (not seen by max_memory_reserved)
CONTEXT_BYTES = 512 * 2**20
#: at most this many workers share one GPU
MAX_PER_GPU = 8

AUTO = "auto"
#: where a sweep or a group of replicates keeps its packing decision (a run records a ``gpu_packing`` event)
PACKING_FILE = "gpu_packing.json"
#: what ``auto`` meets on a Ray without GPUs (simulate, sweeps, replicates)
NO_GPU = "platform.gpus_per_worker = auto but this Ray has no GPU; allowed here: a number"


def is_auto(cfg: ExperimentConfig) -> bool:
    return cfg.platform.gpus_per_worker == AUTO


def workers_per_gpu(peak_bytes: float, total_bytes: float, margin: float = MARGIN, cap: int = MAX_PER_GPU) -> int:
    """How many processes of ``peak_bytes`` each fit in ``total_bytes`` with ``margin`` of it kept free (at least
    1: a single worker is tried even when the probe says it will not fit, and its error is recorded)."""
    if peak_bytes <= 0:
        return cap
    return max(1, min(cap, math.floor(total_bytes * (1 - margin) / peak_bytes)))


def per_gpu_of(gpus_per_worker: float) -> float:
    """Workers per GPU of a numeric ``platform.gpus_per_worker`` (0: no GPU)."""
    return 1.0 / gpus_per_worker if gpus_per_worker > 0 else 0.0


@dataclass(frozen=True)
class Packing:
    """What ``gpus_per_worker = auto`` decided."""

    peak_bytes: int  #: the probe's peak GPU memory of one client (context included)
    total_bytes: int  #: the GPU's memory
    per_gpu: int  #: workers sharing one GPU
    gpus: float  #: GPUs of this Ray (or of the trial's share)
    workers: int  #: workers started: min(platform.workers, per_gpu x GPUs / copies)
    copies: int = 1  #: runs whose workers are all alive at once (replicates): each gets ``workers``

    def config(self, cfg: ExperimentConfig) -> ExperimentConfig:
        """``cfg`` with the packing's numeric ``platform.gpus_per_worker`` and ``platform.workers``."""
        return dataclasses.replace(
            cfg, platform=dataclasses.replace(cfg.platform, gpus_per_worker=1.0 / self.per_gpu, workers=self.workers)
        )

    def describe(self) -> str:
        return (
            f"platform.gpus_per_worker = auto: a client peaks at {self.peak_bytes / 2**20:.0f} MiB of "
            f"{self.total_bytes / 2**20:.0f} MiB per GPU ({MARGIN:.0%} kept free): {self.per_gpu} workers per "
            f"GPU, {self.workers} workers" + (f" for each of {self.copies} replicates" if self.copies > 1 else "")
        )

    def record(self) -> dict[str, Any]:
        """The decision as the sweep's ``gpu_packing.json`` (and a run's ``gpu_packing`` event) keeps it."""
        return {
            "message": self.describe(),
            "peak_bytes": self.peak_bytes,
            "total_bytes": self.total_bytes,
            "workers_per_gpu": self.per_gpu,
            "gpus": self.gpus,
            "workers": self.workers,
            "copies": self.copies,
            "gpus_per_worker": 1.0 / self.per_gpu,
        }


def pack(peak_bytes: int, total_bytes: int, gpus: float, workers: int, copies: int = 1) -> Packing:
    """The packing of ``workers`` (``platform.workers``, an upper bound) on ``gpus`` GPUs of ``total_bytes``, for
    each of ``copies`` runs alive at once."""
    k = workers_per_gpu(peak_bytes, total_bytes)
    fit = max(1, math.floor(k * gpus + 1e-9))
    return Packing(int(peak_bytes), int(total_bytes), k, gpus, max(1, min(workers, fit // copies)), copies)


def resolve(
    cfg: ExperimentConfig, resources: dict[str, float], measure: Callable[[], tuple[int, int]], copies: int = 1
) -> Packing:
    """The packing of ``cfg``'s workers on the GPUs of ``resources`` (Ray's ``cluster_resources()``), from one
    probe (``measure``: :func:`probe`). ``copies`` runs of them alive at once (replicates, in parallel) share the
    GPUs and the CPUs: each gets what fits of both. A :class:`ConfigError` when Ray has no GPU, or when fewer
    workers fit than the copies need (one each)."""
    gpus = resources.get("GPU", 0.0)
    if gpus < 1:
        raise ConfigError(NO_GPU)
    packing = pack(*measure(), gpus, cfg.platform.workers, copies)
    fit = math.floor(packing.per_gpu * gpus + 1e-9)
    if fit < copies:
        raise ConfigError(
            f"platform.gpus_per_worker = auto: {fit} worker{'s' * (fit != 1)} of this experiment fit on {gpus:g} "
            f"GPU{'s' * (gpus != 1)}, fewer than its {copies} replicates alive at once need (one each); "
            f"allowed here: a number, or at most {fit} replicates"
        )
    cpus = cfg.platform.cpus_per_worker
    if copies > 1 and cpus > 0:
        cpu_fit = math.floor(resources.get("CPU", 0.0) / (copies * cpus) + 1e-9)
        if cpu_fit < 1:
            raise ConfigError(
                f"platform.gpus_per_worker = auto runs the {copies} replicates side by side, a worker each at "
                f"least, but {copies} x platform.cpus_per_worker = {cpus:g} is more than this Ray's "
                f"{resources.get('CPU', 0.0):g} CPUs; allowed here: a number for platform.gpus_per_worker"
            )
        packing = dataclasses.replace(packing, workers=min(packing.workers, cpu_fit))
    return packing


def probe(cfg: ExperimentConfig, fault: str = "", entry: Any = None) -> tuple[int, int]:
    """``(peak bytes, total bytes)`` of a client of ``cfg``: the ``gpu-probe`` testing hook of ``fault`` if set,
    else :func:`measure_peak` in a Ray task holding one GPU, on video ``entry`` (default: the experiment's first
    client-pool video). Ray must be running."""
    measured = probe_hook(fault)
    if measured is not None:
        return measured
    import ray

    from fedvsr.platform.environment import actor_options

    if entry is None:
        from fedvsr.data.sources import experiment_data

        data = experiment_data(cfg)
        entry = data.videos[data.pool[0]]
    task = ray.remote(_probe_task).options(num_gpus=1, **actor_options(cfg.platform.kernels))
    return ray.get(task.remote(cfg, entry))


def _probe_task(cfg: ExperimentConfig, entry: Any) -> tuple[int, int]:
    """The GPU memory probe of ``platform.gpus_per_worker = auto`` (a Ray task holding one GPU)."""
    from fedvsr.data.datasets import load_pair_for

    return measure_peak(cfg, load_pair_for(cfg, entry))


def fewer(per_gpu: int) -> int:
    """The workers per GPU to retry with after an out-of-memory error at ``per_gpu``."""
    return max(1, per_gpu // 2)


def probe_hook(fault: str) -> tuple[int, int] | None:
    """The ``gpu-probe:PEAK_MIB:TOTAL_MIB`` testing hook of ``$FEDVSR_FAULT`` as bytes, if set."""
    for part in fault.split(";"):
        if part.startswith("gpu-probe:"):
            _, peak, total = part.split(":")
            return int(float(peak) * 2**20), int(float(total) * 2**20)
    return None


def measure_peak(cfg: ExperimentConfig, pair: Any) -> tuple[int, int]:
    """One training step of ``cfg``'s model, optimizer and batch (clips of ``pair``, a decoded video) on this
    process's GPU: ``(peak bytes + CONTEXT_BYTES, the GPU's total bytes)``."""
    import torch

    from fedvsr.data.datasets import TrainClips, collate, resolve_augment
    from fedvsr.fl import build_strategy
    from fedvsr.fl.client import LocalTraining, train_local
    from fedvsr.fl.strategy import ClientContext, float_state
    from fedvsr.models import build_model

    device = torch.device("cuda")
    torch.cuda.reset_peak_memory_stats(device)
    model = build_model(cfg.model.name, cfg.model.preset, cfg.model.options).to(device)
    data = TrainClips(
        [pair],
        cfg.data.clip_frames or model.num_frames,
        cfg.data.patch,
        cfg.data.samples_per_video,
        0,
        resolve_augment(cfg.data.augment, type(model)),
        cfg.data.dark_threshold,
    )
    batch = collate([data[i % len(data)] for i in range(cfg.fl.batch_size)])
    batch = tuple(t.to(device) for t in batch)
    params = float_state(model)
    ctx = ClientContext(0, 1, cfg.fl.rounds, cfg.fl.clients, model, params, {}, None, cfg.fl.lr)
    strategy = build_strategy(cfg.fl)
    ctx.server_state = strategy.init_server_state(params)
    train_local(ctx, strategy, lambda epoch: [batch], LocalTraining(1, cfg.fl.optimizer, max_steps=1))
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_reserved(device) + CONTEXT_BYTES
    return int(peak), int(torch.cuda.get_device_properties(device).total_memory)
