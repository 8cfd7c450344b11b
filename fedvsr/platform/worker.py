"""The client worker: a long-lived actor that keeps one model on its device and trains clients in turn.

A worker never rebuilds its model: for each client the coordinator hands it, it copies the round's
global weights into the model in place, trains it with :func:`fedvsr.fl.client.train_local`, and
sends back the client's update (its tensors as trained and its aggregation weight, copied off the
device once), one small report and the client's new persistent state. Decoded videos stay in the
worker (raw frames never leave it). It also evaluates the share of held-out clips it is given.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray
import torch

from fedvsr.config import ExperimentConfig
from fedvsr.data.datasets import TrainClips, VideoPair, collate, eval_clips, load_pair_for, resolve_augment
from fedvsr.data.degrade import degradation_params
from fedvsr.data.video import LEFT_OUT, VideoEntry, VideoError
from fedvsr.evaluation import evaluate_bicubic, evaluate_model, pair_scores_of_model
from fedvsr.fl import build_strategy
from fedvsr.fl.aggregate import ClientUpdate, to_torch
from fedvsr.fl.client import LocalTraining, epoch_batches, run_client, seed_torch
from fedvsr.fl.participation import OUT_OF_MEMORY, ClientPlan, ClientReport, deadline_limits, missed_deadline
from fedvsr.fl.sampling import client_seed
from fedvsr.fl.schedule import LRSchedule
from fedvsr.fl.strategy import ClientContext, LocalResult
from fedvsr.models import build_model
from fedvsr.platform.environment import describe


@dataclass
class ClientResult:
    """What a worker returns for one client."""

    update: ClientUpdate  #: its contribution to the aggregate (empty when it was left out)
    report: ClientReport  #: its row of clients.parquet
    state: dict[str, np.ndarray] | None  #: its new persistent state (SCAFFOLD's c_i), None when none
    skipped: list[tuple[str, str]] = field(default_factory=list)  #: (path, reason) of videos it could not use


class ClientWorker:
    """Trains the clients handed to it, one after another, on one model instance."""

    def __init__(self, index: int, video_cache: int = 64) -> None:
        """Process-level setup only (Ray re-runs it when it restarts a dead worker): the worker's place in the
        pool, the GPUs Ray gave it and the decoded-video cache. :meth:`configure` builds one experiment."""
        self.index = index
        # the GPUs Ray gave this worker (it sets CUDA_VISIBLE_DEVICES to them, so "cuda" is the first of them)
        self.gpu_ids = ",".join(str(g) for g in _ray_gpu_ids())
        self._cache: OrderedDict[tuple[VideoEntry, str], VideoPair] = OrderedDict()
        self._cache_size = video_cache
        self.node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
        self.cfg: ExperimentConfig | None = None

    @classmethod
    def local(
        cls,
        cfg: ExperimentConfig,
        index: int,
        videos: list[VideoEntry],
        client_videos: list[list[int]],
        eval_videos: list[int],
    ) -> ClientWorker:
        """A worker in this process (no Ray), configured for ``cfg``: what tests and benchmarks call directly."""
        worker = cls(index)
        worker.configure(cfg, videos, client_videos, eval_videos)
        return worker

    def configure(
        self,
        cfg: ExperimentConfig,
        videos: list[VideoEntry],
        client_videos: list[list[int]],
        eval_videos: list[int],
        fault: str = "",
    ) -> dict[str, Any]:
        """Build what experiment ``cfg`` needs (its model on this worker's device, its strategy, its data views),
        replacing the previous experiment's; decoded videos stay cached when they decode the same way. Returns
        :meth:`ping`."""
        self.cfg = cfg
        torch.set_num_threads(max(1, int(cfg.platform.cpus_per_worker)))
        use_cuda = cfg.platform.gpus_per_worker > 0 and torch.cuda.is_available()
        self.device = torch.device("cuda" if use_cuda else "cpu")
        self.device_name = f"cuda:{self.gpu_ids.split(',')[0]}" if use_cuda and self.gpu_ids else str(self.device)
        self.fault = fault
        self.model = build_model(cfg.model.name, cfg.model.preset, cfg.model.options).to(self.device)
        self.strategy = build_strategy(cfg.fl)
        self.clip_frames = cfg.data.clip_frames or self.model.num_frames
        self.augment = resolve_augment(cfg.data.augment, type(self.model))
        self.schedule = LRSchedule.from_config(cfg.fl)
        self.videos = videos
        self.client_videos = client_videos
        self.eval_videos = eval_videos
        self._decoding = _decoding(cfg)
        self._eval: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.eval_skipped: list[tuple[str, str]] = []
        self.skipped: list[tuple[str, str]] = []  # the videos of the client in training that could not be used
        return self.ping()

    # ------------------------------------------------------------------ data
    def _pair(self, i: int) -> VideoPair:
        key = (self.videos[i], self._decoding)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        pair = load_pair_for(self.cfg, self.videos[i])
        self._cache[key] = pair
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return pair

    def _eval_clips(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The evaluation clips; an evaluation video that cannot be read is left out (``eval_skipped``), and
        only when none can be read is that an error, naming them."""
        if self._eval is None:
            pairs, self.eval_skipped = [], []
            for i in self.eval_videos:
                try:
                    pairs.append(self._pair(i))
                except (OSError, ValueError) as err:
                    self.eval_skipped.append((self.videos[i].path, f"{LEFT_OUT}{err}"))
            if not pairs:
                raise ValueError(
                    f"none of the {len(self.eval_videos)} evaluation videos can be read: "
                    + "; ".join(reason for _, reason in self.eval_skipped[:3])
                )
            self._eval = eval_clips(pairs, self.clip_frames, self.cfg.eval.clips)
        return self._eval

    def _load(self, params: dict[str, torch.Tensor]) -> None:
        state = self.model.state_dict()
        with torch.no_grad():
            for k, v in params.items():
                state[k].copy_(v)

    # ------------------------------------------------------------------ training
    def train_client(
        self,
        round: int,
        global_params: dict[str, np.ndarray],
        server_state: dict[str, np.ndarray],
        client: int,
        client_state: dict[int, dict[str, np.ndarray] | None] | None = None,
        plan: ClientPlan | None = None,
    ) -> ClientResult:
        """Train ``client`` from the round's global weights (``plan``: the coordinator's attempt, speed and
        deadline budget for it); returns its contribution (a :class:`~fedvsr.fl.aggregate.ClientUpdate`: its
        tensors as trained, copied off the device once), its report and its new persistent state."""
        plan = plan or ClientPlan()
        self.skipped = []
        cfg = self.cfg
        update = ClientUpdate()
        state = (client_state or {}).get(client)
        ctx = ClientContext(
            client=client,
            round=round,
            total_rounds=cfg.fl.rounds,
            total_clients=cfg.fl.clients,
            model=self.model,
            global_params=to_torch(global_params, self.device),
            server_state=to_torch(server_state, self.device),
            client_state=to_torch(state, self.device) if state is not None else None,
            lr=self.schedule.round_rate(round, cfg.fl.rounds),
        )
        try:
            self._maybe_fail(round, client)
            result, log_weight, kept = self._train_one(ctx, update, plan)
        except torch.cuda.OutOfMemoryError as err:  # the coordinator trains it again with fewer workers per GPU
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            result, log_weight, kept = (
                LocalResult(
                    client, 0, 0, math.nan, 0.0, False, f"CUDA out of memory: {str(err).strip().splitlines()[0]}"
                ),
                0.0,
                None,
            )
        report = ClientReport(
            round,
            client,
            result.samples,
            result.steps,
            result.seen,
            result.loss,
            ctx.lr,
            log_weight if result.ok else -math.inf,
            math.exp(min(log_weight, 709.0)) if result.ok else 0.0,
            self.index,
            self.device_name,
            self.gpu_ids,
            result.seconds,
            "ok" if result.ok else OUT_OF_MEMORY if result.reason.startswith("CUDA out of memory") else "dropped",
            result.reason,
            plan.attempt,
            plan.speed,
            plan.budget,
            result.cut,
            node=self.node,
        )
        new_state = {k: v.detach().cpu().numpy() for k, v in kept.items()} if kept is not None else None
        # nothing of a left-out client reaches the aggregate
        return ClientResult(update if result.ok else ClientUpdate(), report, new_state, self.skipped)

    def _train_one(self, ctx: ClientContext, update: ClientUpdate, plan: ClientPlan):
        cfg = self.cfg
        seed = client_seed(cfg.seed, ctx.round, ctx.client)
        start = time.perf_counter()
        try:  # a video that broke since the scan is left out (self.skipped); a client with none left is dropped
            data = TrainClips(
                self._usable_pairs(ctx.client),
                self.clip_frames,
                cfg.data.patch,
                cfg.data.samples_per_video,
                seed,
                self.augment,
                cfg.data.dark_threshold,
            )
        except (OSError, ValueError) as err:
            return (
                LocalResult(ctx.client, 0, 0, math.nan, time.perf_counter() - start, False, f"data error: {err}"),
                0.0,
                None,
            )
        ctx.samples = len(data)
        steps = math.ceil(len(data) / cfg.fl.batch_size) * cfg.fl.local_epochs
        limits = deadline_limits(plan.budget, cfg.fl.deadline_unit, cfg.fl.deadline_action, steps)
        if limits.refused:
            return (
                LocalResult(
                    ctx.client, ctx.samples, 0, math.nan, time.perf_counter() - start, False, limits.refused, cut=True
                ),
                0.0,
                None,
            )
        self._load(ctx.global_params)
        seed_torch(seed, self.device)
        training = LocalTraining(
            cfg.fl.local_epochs,
            cfg.fl.optimizer,
            schedule=self.schedule,
            steps=steps,
            clip_grad_norm=cfg.fl.clip_grad_norm,
            max_steps=limits.max_steps,
            time_budget=limits.time_budget,
        )
        result, log_weight, kept = run_client(
            ctx,
            self.strategy,
            lambda epoch: epoch_batches(data, cfg.fl.batch_size, seed, epoch, collate, self.device),
            update,
            training,
        )
        missed = missed_deadline(
            result.ok and result.cut, cfg.fl.deadline_action, limits.time_budget, result.steps, steps
        )
        if missed:  # a wall-clock deadline was missed
            result.ok, result.reason = False, missed
            return result, -math.inf, None
        return result, log_weight, kept

    def _usable_pairs(self, client: int) -> list[VideoPair]:
        """The pairs of ``client``'s videos that load and hold a training clip; each other one is recorded in
        ``self.skipped`` as ``(path, reason)``. Raises :class:`VideoError` when none is left."""
        pairs = []
        for i in self.client_videos[client]:
            try:
                pair = self._pair(i)
                TrainClips([pair], self.clip_frames, self.cfg.data.patch, 1, 0, self.augment)  # long and large enough
                pairs.append(pair)
            except (OSError, ValueError) as err:
                self.skipped.append((self.videos[i].path, str(err)))
        if not pairs:
            raise VideoError(
                f"none of its {len(self.client_videos[client])} videos can be used: "
                + "; ".join(reason for _, reason in self.skipped[:3])
            )
        return pairs

    def _maybe_fail(self, round: int, client: int) -> None:
        """Testing hooks (``$FEDVSR_FAULT`` in the driver's environment, ``;``-separated), each once (its marker file
        says it happened) when this worker starts ``CLIENT`` in ``ROUND``: ``kill:ROUND:CLIENT:MARKER`` SIGKILLs the
        worker process, ``oom:ROUND:CLIENT:MARKER`` raises ``torch.cuda.OutOfMemoryError``."""
        for fault in self.fault.split(";") if self.fault else ():
            kind, r, c, marker = fault.split(":", 3)
            if (int(r), int(c)) != (round, client) or os.path.exists(marker):
                continue
            with open(marker, "w") as f:
                f.write(f"worker {self.index} pid {os.getpid()} {kind} at round {round} client {client}\n")
            if kind == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (injected by FEDVSR_FAULT={fault})")

    # ------------------------------------------------------------------ evaluation
    def eval_info(self) -> dict[str, Any]:
        """How many evaluation clips there are, and the evaluation videos left out as unreadable."""
        return {"clips": len(self._eval_clips()), "skipped": list(self.eval_skipped)}

    def evaluate_clips(self, global_params: dict[str, np.ndarray], indices: list[int]) -> list[dict[str, float]]:
        """Per-clip PSNR / SSIM of the global model on held-out clips ``indices`` (the pool splits the clips)."""
        self._load(to_torch(global_params, self.device))
        clips = self._eval_clips()
        return pair_scores_of_model(self.model, [clips[i] for i in indices], self.cfg, self.device)

    def evaluate(self, global_params: dict[str, np.ndarray]) -> dict[str, float]:
        """PSNR / SSIM of the global model on all the held-out clips (one worker)."""
        start = time.perf_counter()
        self._load(to_torch(global_params, self.device))
        return {
            **evaluate_model(self.model, self._eval_clips(), self.cfg, self.device),
            "eval_seconds": time.perf_counter() - start,
        }

    def evaluate_bicubic(self) -> dict[str, float]:
        """The same metrics for bicubic upsampling of the LR frames the model restores."""
        return evaluate_bicubic(self.model, self._eval_clips(), self.cfg)

    def environment(self) -> dict[str, Any]:
        """What this worker process computes with (:func:`fedvsr.platform.environment.describe`)."""
        return describe()

    def ping(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "pid": os.getpid(),
            "device": self.device_name,
            "gpu": self.gpu_ids,
            "node": self.node,
        }


def _decoding(cfg: ExperimentConfig) -> str:
    """What :func:`~fedvsr.data.datasets.load_pair_for` reads from ``cfg`` besides the video itself: the cache
    key of a decoded pair beside its :class:`VideoEntry` (a new experiment decoding the same way reuses it)."""
    return repr((cfg.data.degradation, sorted(degradation_params(cfg.data).items()), cfg.data.scale, cfg.data.seed))


def _ray_gpu_ids() -> list:
    if not ray.is_initialized():
        return []
    try:
        return list(ray.get_runtime_context().get_accelerator_ids().get("GPU", []))
    except Exception:  # outside a Ray worker
        return []
