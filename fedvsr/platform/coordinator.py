"""The coordinator: runs the strategy's rounds over a pool of client workers.

Per round it samples the clients from the seeded generator, puts the global weights into the
object store once, hands each worker its share of the clients, merges the partial aggregates,
lets the strategy compute the new global model, evaluates it on the held-out clips, appends the
round's rows to the Parquet tables and checkpoints, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray.util.placement_group import PlacementGroup
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

from fedvsr.config import config_from_dict
from fedvsr.data.sources import experiment_data
from fedvsr.fl import build_strategy
from fedvsr.fl.aggregate import merge_partials, normalised_weights, to_numpy, to_torch
from fedvsr.fl.partition import partition_table, partition_videos
from fedvsr.fl.sampling import sample_clients
from fedvsr.fl.strategy import float_state
from fedvsr.models import build_model, count_params
from fedvsr.platform.checkpoint import load_checkpoint, save_arrays, save_checkpoint
from fedvsr.platform.results import ResultsStore, write_json_atomic, write_parquet_atomic
from fedvsr.platform.state_store import ClientStateStore
from fedvsr.platform.worker import ClientWorker
from fedvsr.report import plot_psnr


def on_this_node() -> NodeAffinitySchedulingStrategy:
    """Scheduling that keeps an actor on the calling process's node (where the output folder is)."""
    return NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)


class Coordinator:
    """Holds the global model and the strategy's server state; drives the worker pool round by round."""

    def __init__(self, cfg_dict: dict[str, Any], out_dir: str, resume: bool = False,
                 placement_group: PlacementGroup | None = None) -> None:
        self.cfg = cfg = config_from_dict(cfg_dict)
        self.out = Path(out_dir)
        self.strategy = build_strategy(cfg.fl)

        # data: videos, held-out evaluation videos, partition among clients
        data = experiment_data(cfg)
        videos, client_pool, held_out = data.videos, data.pool, data.held
        if not resume:
            for path, reason in data.skipped:  # a dataset scan's unusable videos: recorded, never a crash
                self._event("video_skipped", reason, path=path)
        labels = [videos[i].label for i in client_pool]
        parts = partition_videos(labels, cfg.fl.clients, cfg.fl.partition, cfg.seed, cfg.fl.dirichlet_beta)
        self.client_videos = [[client_pool[j] for j in part] for part in parts]
        write_parquet_atomic(
            self.out / "partition.parquet",
            partition_table(parts, labels, [videos[i].name for i in client_pool]),
        )

        # the worker pool: long-lived actors sized from platform.*
        p = cfg.platform
        # inside a sweep trial the workers take the bundles of the trial's placement group, so trials
        # running side by side never starve each other
        placement = {} if placement_group is None else {
            "scheduling_strategy": PlacementGroupSchedulingStrategy(placement_group)}
        remote = ray.remote(ClientWorker).options(
            num_cpus=p.cpus_per_worker, num_gpus=p.gpus_per_worker, max_restarts=2, max_task_retries=2, **placement,
        )
        self.workers = [remote.remote(cfg_dict, i, videos, self.client_videos, held_out)
                        for i in range(p.workers)]

        # per-client persistent state (SCAFFOLD's c_i), outside worker memory, on this node
        self.store = None
        if self.strategy.stateful_clients:
            self.store = ray.remote(ClientStateStore).options(num_cpus=0, scheduling_strategy=on_this_node()).remote(
                str(self.out / "client_state")
            )

        # global model: fresh (seeded) or from the checkpoint
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model.name, cfg.model.preset, cfg.model.options)
        self.model_params = count_params(model)
        self.start_round = 1
        if resume and (self.out / "checkpoint" / "state.json").exists():
            done, params, server_state, extra = load_checkpoint(self.out / "checkpoint")
            if self.store is not None:
                ray.get(self.store.rollback.remote(done))
            self.params, self.server_state = params, server_state
            self.start_round = done + 1
            self.bicubic = extra["bicubic"]
            self.initial = extra["initial"]
            self._event("resumed", f"resumed after round {done}")
        else:
            init = float_state(model)
            self.params = to_numpy(init)
            self.server_state = to_numpy(self.strategy.init_server_state(init))
            self.bicubic = ray.get(self.workers[0].evaluate_bicubic.remote())
            self.initial = self._evaluate(self.params)
        self.results = ResultsStore(self.out, keep_until_round=self.start_round - 1)

    # ------------------------------------------------------------------ helpers
    def _event(self, kind: str, message: str, **fields: Any) -> None:
        event = {"time": time.time(), "kind": kind, "message": message, **fields}
        with open(self.out / "events.jsonl", "a") as f:
            f.write(json.dumps(event) + "\n")

    def _evaluate(self, params: dict[str, np.ndarray]) -> dict[str, float]:
        return ray.get(self.workers[0].evaluate.remote(ray.put(params)))

    def info(self) -> dict[str, Any]:
        pings = ray.get([w.ping.remote() for w in self.workers])
        return {"start_round": self.start_round, "rounds": self.cfg.fl.rounds, "bicubic": self.bicubic,
                "initial": self.initial, "params": self.model_params, "workers": len(self.workers),
                "worker_pids": [pid for _, pid, _ in pings], "devices": [dev for _, _, dev in pings]}

    # ------------------------------------------------------------------ one round
    def run_round(self, t: int) -> dict[str, Any]:
        cfg = self.cfg
        start = time.perf_counter()
        clients = sample_clients(cfg.seed, t, cfg.fl.clients, cfg.fl.clients_per_round)
        params_ref = ray.put(self.params)
        server_ref = ray.put(self.server_state)
        shares = [clients[i :: len(self.workers)] for i in range(len(self.workers))]
        futures = [
            w.train_clients.remote(t, params_ref, server_ref, share,
                                   self.store.get_many.remote(share) if self.store is not None else None)
            for w, share in zip(self.workers, shares, strict=True) if share
        ]
        try:
            outputs = ray.get(futures)
        except ray.exceptions.RayActorError as err:
            # Ray already restarted the worker and retried its call (max_restarts / max_task_retries)
            self._event("worker_lost", str(err).splitlines()[0], round=t)
            raise RuntimeError(
                f"round {t}: a client worker died and could not be restarted ({str(err).splitlines()[0]}); "
                f"everything up to round {t - 1} is checkpointed in {self.out}: continue with "
                f"`fedvsr simulate --resume --out {self.out}`"
            ) from err
        train_seconds = time.perf_counter() - start

        aggregate = merge_partials([o["partial"] for o in outputs])
        reports = sorted((r for o in outputs for r in o["reports"]), key=lambda r: r["client"])
        kept = [r for r in reports if r["status"] == "ok"]
        for r, w in zip(kept, normalised_weights([r["log_weight"] for r in kept]), strict=True):
            r["weight"] = w
        for r in reports:
            if r["status"] != "ok":
                r["weight"] = 0.0
                self._event("client_dropped", r["reason"], round=t, client=r["client"])

        if kept:
            new_params, new_server = self.strategy.server_update(
                to_torch(self.params), aggregate, to_torch(self.server_state), t, cfg.fl.clients,
                [r["weight"] for r in kept],
            )
            new_params_np = to_numpy(new_params)
            if all(np.isfinite(v).all() for v in new_params_np.values()):
                self.params, self.server_state = new_params_np, to_numpy(new_server)
            else:
                self._event("update_rejected", "aggregate has non-finite weights; global model kept", round=t)
        else:
            self._event("round_skipped", "no client update could be aggregated; global model kept", round=t)

        metrics = self._evaluate(self.params)
        row = {
            "round": t,
            **{k: v for k, v in metrics.items() if k != "eval_seconds"},
            "train_loss": float(np.mean([r["loss"] for r in kept])) if kept else math.nan,
            "clients": len(reports),
            "aggregated": len(kept),
            "dropped": len(reports) - len(kept),
            "seconds": time.perf_counter() - start,
            "train_seconds": train_seconds,
            "eval_seconds": metrics["eval_seconds"],
            "samples": int(sum(r["samples"] for r in kept)),
            "lr": reports[0]["lr"] if reports else math.nan,
        }
        if self.store is not None:
            ray.get(self.store.commit.remote(t, {c: st for o in outputs for c, st in o["states"].items()}))
        self.results.append(row, reports)
        save_checkpoint(self.out / "checkpoint", t, self.params, self.server_state,
                        {"bicubic": self.bicubic, "initial": self.initial})
        return row

    # ------------------------------------------------------------------ end of the run
    def finish(self) -> dict[str, Any]:
        save_arrays(self.out / "model.safetensors", self.params)
        rounds = self.results.rounds
        last = rounds[-1] if rounds else {"psnr": self.initial["psnr"], "ssim": self.initial["ssim"]}
        best = max(rounds, key=lambda r: r["psnr"]) if rounds else None
        summary = {
            "model": self.cfg.model.name,
            "preset": self.cfg.model.preset,
            "params": self.model_params,
            "strategy": self.cfg.fl.strategy,
            "rounds": len(rounds),
            "final_psnr": last["psnr"],
            "final_ssim": last["ssim"],
            "best_psnr": best["psnr"] if best else None,
            "best_round": best["round"] if best else None,
            "bicubic_psnr": self.bicubic["psnr"],
            "bicubic_ssim": self.bicubic["ssim"],
            "initial_psnr": self.initial["psnr"],
            "initial_ssim": self.initial["ssim"],
            **{f"final_{k}": last[k] for k in ("psnr_rgb", "ssim_rgb") if k in last},
            **{f"bicubic_{k}": self.bicubic[k] for k in ("psnr_rgb", "ssim_rgb") if k in self.bicubic},
            "eval_channels": self.cfg.eval.channels,
            "clients_dropped": int(sum(r["dropped"] for r in rounds)),
            "rounds_seconds": float(sum(r["seconds"] for r in rounds)),
        }
        write_json_atomic(self.out / "summary.json", summary)
        plot_psnr([{"round": 0, "psnr": self.initial["psnr"]}, *rounds], self.bicubic["psnr"],
                  self.out / "psnr.png", title=f"{summary['model']}/{summary['preset']} - {summary['strategy']}")
        return summary
