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
from typing import Any

import numpy as np
import ray
import torch

from fedvsr.config import ExperimentConfig, config_from_dict
from fedvsr.data.datasets import TrainClips, VideoPair, collate, eval_clips, load_pair_for, resolve_augment
from fedvsr.data.synthetic import VideoEntry
from fedvsr.data.video import LEFT_OUT, VideoError
from fedvsr.fl import build_strategy
from fedvsr.fl.aggregate import ClientUpdate, to_torch
from fedvsr.fl.client import epoch_batches, run_client
from fedvsr.fl.sampling import client_seed
from fedvsr.fl.schedule import LRSchedule
from fedvsr.fl.strategy import ClientContext, LocalResult
from fedvsr.metrics import bicubic_upsample, pair_scores, score
from fedvsr.models import VSRModel, build_model
from fedvsr.platform.environment import describe


class ClientWorker:
    """Trains the clients handed to it, one after another, on one model instance."""

    def __init__(self, cfg_dict: dict[str, Any], index: int, videos: list[VideoEntry],
                 client_videos: list[list[int]], eval_videos: list[int], video_cache: int = 64,
                 fault: str = "") -> None:
        self.cfg = cfg = config_from_dict(cfg_dict)
        self.index = index
        threads = max(1, int(cfg.platform.cpus_per_worker))
        torch.set_num_threads(threads)
        use_cuda = cfg.platform.gpus_per_worker > 0 and torch.cuda.is_available()
        self.device = torch.device("cuda" if use_cuda else "cpu")
        # the GPUs Ray gave this worker (it sets CUDA_VISIBLE_DEVICES to them, so "cuda" is the first of them)
        self.gpu_ids = ",".join(str(g) for g in _ray_gpu_ids())
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
        self._cache: OrderedDict[int, VideoPair] = OrderedDict()
        self._cache_size = video_cache
        self._eval: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.eval_skipped: list[tuple[str, str]] = []
        self.skipped: list[tuple[str, str]] = []  # the videos of the client in training that could not be used

    # ------------------------------------------------------------------ data
    def _pair(self, i: int) -> VideoPair:
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        pair = load_pair_for(self.cfg, self.videos[i])
        self._cache[i] = pair
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
                raise ValueError(f"none of the {len(self.eval_videos)} evaluation videos can be read: "
                                 + "; ".join(reason for _, reason in self.eval_skipped[:3]))
            self._eval = eval_clips(pairs, self.clip_frames, self.cfg.eval.clips)
        return self._eval

    def _load(self, params: dict[str, torch.Tensor]) -> None:
        state = self.model.state_dict()
        with torch.no_grad():
            for k, v in params.items():
                state[k].copy_(v)

    # ------------------------------------------------------------------ training
    def train_client(self, round: int, global_params: dict[str, np.ndarray], server_state: dict[str, np.ndarray],
                     client: int, client_state: dict[int, dict[str, np.ndarray] | None] | None = None,
                     plan: dict[str, Any] | None = None) -> dict[str, Any]:
        """Train ``client`` from the round's global weights; returns its contribution (a
        :class:`~fedvsr.fl.aggregate.ClientUpdate`: its tensors as trained, copied off the device once), its
        report and its new persistent state.

        ``plan``: the coordinator's per-client settings: ``attempt`` (1 = first try), ``speed`` (fl.stragglers)
        and the deadline in fl.deadline_unit already scaled by the speed (``budget``; 0 = none)."""
        plan = plan or {}
        self._maybe_fail(round, client)
        self.skipped = []
        cfg = self.cfg
        gp = to_torch(global_params, self.device)
        ss = to_torch(server_state, self.device)
        update = ClientUpdate()
        state = (client_state or {}).get(client)
        ctx = ClientContext(
            client=client, round=round, total_rounds=cfg.fl.rounds, total_clients=cfg.fl.clients,
            model=self.model, global_params=gp, server_state=ss,
            client_state=to_torch(state, self.device) if state is not None else None,
            lr=self.schedule.round_rate(round, cfg.fl.rounds),
        )
        result, log_weight, kept = self._train_one(ctx, update, plan)
        report = {
            "round": round, "client": client, "samples": result.samples, "steps": result.steps,
            "seen": result.seen, "loss": result.loss, "lr": ctx.lr,
            "log_weight": log_weight if result.ok else -math.inf,
            "raw_weight": math.exp(min(log_weight, 709.0)) if result.ok else 0.0, "worker": self.index,
            "device": self.device_name, "gpu": self.gpu_ids, "seconds": result.seconds,
            "status": "ok" if result.ok else "dropped", "reason": result.reason,
            "attempts": int(plan.get("attempt", 1)), "speed": float(plan.get("speed", 1.0)),
            "budget": float(plan.get("budget", 0.0)), "cut": result.cut,
            "node": ray.get_runtime_context().get_node_id() if ray.is_initialized() else "",  # Ray node that trained it
        }
        if not result.ok:  # nothing of a left-out client reaches the aggregate
            update = ClientUpdate()
        new_state = {k: v.detach().cpu().numpy() for k, v in kept.items()} if kept is not None else None
        return {"update": update, "report": report, "state": new_state, "skipped": self.skipped}

    def _train_one(self, ctx: ClientContext, update: ClientUpdate, plan: dict[str, Any]):
        cfg = self.cfg
        seed = client_seed(cfg.seed, ctx.round, ctx.client)
        start = time.perf_counter()
        try:  # a video that broke since the scan is left out (self.skipped); a client with none left is dropped
            data = TrainClips(self._usable_pairs(ctx.client), self.clip_frames, cfg.data.patch,
                              cfg.data.samples_per_video, seed, self.augment, cfg.data.dark_threshold)
        except (OSError, ValueError) as err:
            return LocalResult(ctx.client, 0, 0, math.nan, time.perf_counter() - start, False,
                               f"data error: {err}"), 0.0, None
        ctx.samples = len(data)
        steps = math.ceil(len(data) / cfg.fl.batch_size) * cfg.fl.local_epochs
        budget = float(plan.get("budget", 0.0))
        max_steps, time_budget = 0, 0.0
        if budget > 0 and cfg.fl.deadline_unit == "steps":
            allowed = int(math.floor(budget))
            if allowed < steps:
                if cfg.fl.deadline_action == "drop":
                    return LocalResult(ctx.client, ctx.samples, 0, math.nan, time.perf_counter() - start, False,
                                       f"missed the deadline: needs {steps} local steps, its deadline allows "
                                       f"{allowed}", cut=True), 0.0, None
                if allowed < 1:
                    return LocalResult(ctx.client, ctx.samples, 0, math.nan, time.perf_counter() - start, False,
                                       "the deadline came before the first local step", cut=True), 0.0, None
                max_steps = allowed
        elif budget > 0:
            time_budget = budget
        self._load(ctx.global_params)
        torch.manual_seed(seed)
        result, log_weight, kept = run_client(
            ctx, self.strategy,
            lambda epoch: epoch_batches(data, cfg.fl.batch_size, seed, epoch, collate, self.device),
            cfg.fl.local_epochs, update, cfg.fl.optimizer, schedule=self.schedule, steps=steps,
            clip_grad_norm=cfg.fl.clip_grad_norm, max_steps=max_steps, time_budget=time_budget,
        )
        if result.ok and result.cut and cfg.fl.deadline_action == "drop":  # a wall-clock deadline was missed
            result.ok, result.reason = False, (f"missed the deadline: {time_budget:.3g} s allowed, "
                                               f"{result.steps} of {steps} local steps done")
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
            raise VideoError(f"none of its {len(self.client_videos[client])} videos can be used: "
                             + "; ".join(reason for _, reason in self.skipped[:3]))
        return pairs

    def _maybe_fail(self, round: int, client: int) -> None:
        """Testing hook (``FEDVSR_FAULT=kill:ROUND:CLIENT:MARKER`` in the driver's environment): SIGKILL this
        worker process when it starts ``CLIENT`` in ``ROUND``, once (the marker file says it happened)."""
        if not self.fault:
            return
        _, r, c, marker = self.fault.split(":", 3)
        if (int(r), int(c)) == (round, client) and not os.path.exists(marker):
            with open(marker, "w") as f:
                f.write(f"worker {self.index} pid {os.getpid()} killed at round {round} client {client}\n")
            os.kill(os.getpid(), signal.SIGKILL)

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
        return {**evaluate_model(self.model, self._eval_clips(), self.cfg, self.device),
                "eval_seconds": time.perf_counter() - start}

    def evaluate_bicubic(self) -> dict[str, float]:
        """The same metrics for bicubic upsampling of the LR frames the model restores."""
        return evaluate_bicubic(self.model, self._eval_clips(), self.cfg)

    def environment(self) -> dict[str, Any]:
        """What this worker process computes with (:func:`fedvsr.platform.environment.describe`)."""
        return describe()

    def ping(self) -> dict[str, Any]:
        return {"index": self.index, "pid": os.getpid(), "device": self.device_name, "gpu": self.gpu_ids,
                "node": ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""}


# ---------------------------------------------------------------------- evaluation (shared with train-central)
@torch.no_grad()
def evaluate_model(model: VSRModel, clips: list[tuple[torch.Tensor, torch.Tensor]], cfg: ExperimentConfig,
                   device: torch.device) -> dict[str, float]:
    """Mean PSNR / SSIM (``eval.channels``, border crop = ``data.scale``) of ``model`` on ``(lr, hr)`` clips:
    the model in eval mode restores each clip, its output clamped to [0, 1], against ``model.target(hr)``.
    Leaves the model in eval mode."""
    model.eval()
    pairs = [(model(lr[None].to(device)).clamp(0, 1).cpu(), model.target(hr[None])) for lr, hr in clips]
    return score(pairs, cfg.data.scale, cfg.eval.channels)


@torch.no_grad()
def pair_scores_of_model(model: VSRModel, clips: list[tuple[torch.Tensor, torch.Tensor]], cfg: ExperimentConfig,
                         device: torch.device) -> list[dict[str, float]]:
    """:func:`evaluate_model` per clip (their mean over all clips, in clip order, is evaluate_model's value)."""
    model.eval()
    pairs = [(model(lr[None].to(device)).clamp(0, 1).cpu(), model.target(hr[None])) for lr, hr in clips]
    return pair_scores(pairs, cfg.data.scale, cfg.eval.channels)


def _ray_gpu_ids() -> list:
    if not ray.is_initialized():
        return []
    try:
        return list(ray.get_runtime_context().get_accelerator_ids().get("GPU", []))
    except Exception:  # outside a Ray worker
        return []


def evaluate_bicubic(model: VSRModel, clips: list[tuple[torch.Tensor, torch.Tensor]],
                     cfg: ExperimentConfig) -> dict[str, float]:
    """The same metrics for bicubic upsampling of the LR frames ``model`` restores (its ``target`` of the LR clip)."""
    return score([(bicubic_upsample(model.target(lr[None]), cfg.data.scale), model.target(hr[None]))
                  for lr, hr in clips], cfg.data.scale, cfg.eval.channels)
