"""The client worker: a long-lived actor that keeps one model on its device and trains clients in turn.

A worker never rebuilds its model: for each client it copies the round's global weights into the
model in place, trains it with :func:`fedvsr.fl.client.train_local`, and adds the client's
contributions to one :class:`~fedvsr.fl.aggregate.PartialAggregate` for the whole call. Decoded
videos stay in the worker (raw frames never leave it); what goes back is the partial aggregate,
one small report per client, and the clients' new persistent states.
"""

from __future__ import annotations

import math
import os
import time
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from fedvsr.config import ExperimentConfig, config_from_dict
from fedvsr.data.datasets import TrainClips, VideoPair, collate, eval_clips, load_pair, resolve_augment
from fedvsr.data.sources import degradation_params
from fedvsr.data.synthetic import VideoEntry
from fedvsr.fl import build_strategy
from fedvsr.fl.aggregate import PartialAggregate, to_torch
from fedvsr.fl.client import epoch_batches, run_client
from fedvsr.fl.sampling import client_seed
from fedvsr.fl.schedule import LRSchedule
from fedvsr.fl.strategy import ClientContext, LocalResult
from fedvsr.metrics import bicubic_upsample, score
from fedvsr.models import VSRModel, build_model


class ClientWorker:
    """Trains the clients handed to it, one after another, on one model instance."""

    def __init__(self, cfg_dict: dict[str, Any], index: int, videos: list[VideoEntry],
                 client_videos: list[list[int]], eval_videos: list[int], video_cache: int = 64) -> None:
        self.cfg = cfg = config_from_dict(cfg_dict)
        self.index = index
        threads = max(1, int(cfg.platform.cpus_per_worker))
        torch.set_num_threads(threads)
        use_cuda = cfg.platform.gpus_per_worker > 0 and torch.cuda.is_available()
        self.device = torch.device("cuda" if use_cuda else "cpu")
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

    # ------------------------------------------------------------------ data
    def _pair(self, i: int) -> VideoPair:
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        pair = load_pair(self.videos[i], self.cfg.data.degradation, self.cfg.data.scale,
                         **degradation_params(self.cfg.data))
        self._cache[i] = pair
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return pair

    def _eval_clips(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if self._eval is None:
            pairs = [self._pair(i) for i in self.eval_videos]
            self._eval = eval_clips(pairs, self.clip_frames, self.cfg.eval.clips)
        return self._eval

    def _load(self, params: dict[str, torch.Tensor]) -> None:
        state = self.model.state_dict()
        with torch.no_grad():
            for k, v in params.items():
                state[k].copy_(v)

    # ------------------------------------------------------------------ training
    def train_clients(self, round: int, global_params: dict[str, np.ndarray], server_state: dict[str, np.ndarray],
                      clients: list[int], client_states: dict[int, dict[str, np.ndarray] | None] | None = None
                      ) -> dict[str, Any]:
        """Train ``clients`` in turn from the round's global weights; one partial aggregate for all of them."""
        cfg = self.cfg
        gp = to_torch(global_params, self.device)
        ss = to_torch(server_state, self.device)
        partial = PartialAggregate()
        reports: list[dict[str, Any]] = []
        new_states: dict[int, dict[str, np.ndarray]] = {}
        for cid in clients:
            state = (client_states or {}).get(cid)
            ctx = ClientContext(
                client=cid, round=round, total_rounds=cfg.fl.rounds, total_clients=cfg.fl.clients,
                model=self.model, global_params=gp, server_state=ss,
                client_state=to_torch(state, self.device) if state is not None else None,
                lr=self.schedule.round_rate(round, cfg.fl.rounds),
            )
            result, log_weight, kept = self._train_one(ctx, partial)
            if kept is not None:
                new_states[cid] = {k: v.detach().cpu().numpy() for k, v in kept.items()}
            reports.append({
                "round": round, "client": cid, "samples": result.samples, "steps": result.steps,
                "loss": result.loss, "lr": ctx.lr, "log_weight": log_weight if result.ok else -math.inf,
                "raw_weight": math.exp(min(log_weight, 709.0)) if result.ok else 0.0, "worker": self.index,
                "seconds": result.seconds, "status": "ok" if result.ok else "dropped", "reason": result.reason,
            })
        return {"partial": partial, "reports": reports, "states": new_states}

    def _train_one(self, ctx: ClientContext, partial: PartialAggregate):
        cfg = self.cfg
        seed = client_seed(cfg.seed, ctx.round, ctx.client)
        start = time.perf_counter()
        try:
            pairs = [self._pair(i) for i in self.client_videos[ctx.client]]
            data = TrainClips(pairs, self.clip_frames, cfg.data.patch, cfg.data.samples_per_video, seed,
                              self.augment)
        except (OSError, ValueError) as err:  # a corrupt or unreadable video: drop the client, keep the round
            return LocalResult(ctx.client, 0, 0, math.nan, time.perf_counter() - start, False,
                               f"data error: {err}"), 0.0, None
        ctx.samples = len(data)
        self._load(ctx.global_params)
        torch.manual_seed(seed)
        return run_client(
            ctx, self.strategy,
            lambda epoch: epoch_batches(data, cfg.fl.batch_size, seed, epoch, collate, self.device),
            cfg.fl.local_epochs, partial, cfg.fl.optimizer, schedule=self.schedule,
            steps=math.ceil(len(data) / cfg.fl.batch_size) * cfg.fl.local_epochs, clip_grad_norm=cfg.fl.clip_grad_norm,
        )

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, global_params: dict[str, np.ndarray]) -> dict[str, float]:
        """PSNR / SSIM of the global model on the held-out clips."""
        start = time.perf_counter()
        self._load(to_torch(global_params, self.device))
        return {**evaluate_model(self.model, self._eval_clips(), self.cfg, self.device),
                "eval_seconds": time.perf_counter() - start}

    def evaluate_bicubic(self) -> dict[str, float]:
        """The same metrics for bicubic upsampling of the LR frames the model restores."""
        return evaluate_bicubic(self.model, self._eval_clips(), self.cfg)

    def ping(self) -> tuple[int, int, str]:
        return self.index, os.getpid(), str(self.device)


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


def evaluate_bicubic(model: VSRModel, clips: list[tuple[torch.Tensor, torch.Tensor]],
                     cfg: ExperimentConfig) -> dict[str, float]:
    """The same metrics for bicubic upsampling of the LR frames ``model`` restores (its ``target`` of the LR clip)."""
    return score([(bicubic_upsample(model.target(lr[None]), cfg.data.scale), model.target(hr[None]))
                  for lr, hr in clips], cfg.data.scale, cfg.eval.channels)
