"""The coordinator: runs the strategy's rounds over a pool of client workers.

Per round it samples the clients from the seeded generator, puts the global weights into the
object store once and hands the clients, largest data first, one at a time to whichever worker is
free (a slow client never holds up a whole share). Each client's contribution comes back as a
partial aggregate; they are merged in client order, so the numbers do not depend on which worker
trained which client, or on how many workers there are. A worker that dies in the middle of a round
loses only the client it was training: that client is retried on a free (or the restarted) worker,
up to ``platform.max_retries`` times, then dropped with the reason recorded. Then the strategy
computes the new global model, the pool evaluates it on the held-out clips (split among the
workers), and the round's rows go to the Parquet tables with a checkpoint, so a killed run resumes
where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray.util.placement_group import PlacementGroup
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

from fedvsr.config import ExperimentConfig
from fedvsr.data.degrade import degradation_params
from fedvsr.data.sources import experiment_data
from fedvsr.fl import build_strategy
from fedvsr.fl.aggregate import PartialAggregate, normalised_weights, to_numpy, to_torch
from fedvsr.fl.participation import OUT_OF_MEMORY, ClientPlan, ClientReport
from fedvsr.fl.partition import Degradation, client_degradations, partition_table, partition_videos, with_degradations
from fedvsr.fl.sampling import client_speeds, drops_out, sample_clients
from fedvsr.fl.schedule import LRSchedule
from fedvsr.fl.strategy import float_state
from fedvsr.metrics import mean_scores
from fedvsr.models import build_model, count_params
from fedvsr.platform.checkpoint import latest_checkpoint, prune_checkpoints, save_arrays, save_checkpoint
from fedvsr.platform.data import record_left_out
from fedvsr.platform.environment import actor_options
from fedvsr.platform.gpus import fewer, is_auto, per_gpu_of, probe, resolve
from fedvsr.platform.pool import WorkerPool
from fedvsr.platform.results import (
    ResultsStore,
    fsync_file,
    repair_jsonl,
    run_summary,
    write_json_atomic,
    write_parquet_atomic,
)
from fedvsr.platform.rounds import MergeInOrder, RoundState, failed_round, round_row
from fedvsr.platform.state_store import ClientStateStore
from fedvsr.platform.worker import ClientResult, ClientWorker

#: where a round writes to disk, in order (``FEDVSR_FAULT=crash-at:POINT:ROUND`` kills the coordinator there; the
#: last two are in :meth:`Coordinator.finish`, ROUND being the last round)
WRITE_POINTS = ("client_state", "clients", "rounds", "checkpoint_files", "checkpoint", "pruned", "model", "summary")


def on_this_node() -> NodeAffinitySchedulingStrategy:
    """Scheduling that keeps an actor on the calling process's node (where the output folder is)."""
    return NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)


class Coordinator:
    """Holds the global model and the strategy's server state; drives the worker pool round by round."""

    def __init__(self, placement_group: PlacementGroup | None = None, share: float = 1.0, alone: bool = True) -> None:
        """Process-level setup: where the workers go (inside a sweep trial, the bundles of the trial's placement
        group, so trials running side by side never starve each other) and ``share``, which scales the Ray
        resources each worker reserves (replicates stepped in lockstep share one set of CPUs, see
        fedvsr.platform.replicates); a worker's torch threads stay ``platform.cpus_per_worker``. Each experiment
        is then built by :meth:`configure`, which keeps the worker actors alive from one experiment to the next
        when their resources stay the same. ``alone``: no other run's workers share its GPUs (see
        :meth:`_fewer_per_gpu`)."""
        self.placement_group, self.share = placement_group, share
        # after a CUDA out-of-memory error the pool shrinks within its own GPU reservation: in a placement group
        # (a larger fraction would fit no bundle) or beside other runs' workers (it would wait for theirs)
        self.keep_fraction = placement_group is not None or not alone
        self.pool: WorkerPool | None = None
        self.per_gpu = 0.0  # workers sharing a GPU (0: none)
        self._pool_shape: tuple = ()
        self.store = None

    def configure(self, cfg: ExperimentConfig, out_dir: str, resume: bool = False, fault: str = "") -> None:
        """Build experiment ``cfg`` (writing to ``out_dir``; with ``resume`` from its checkpoint there): its data
        views and partition, its strategy, the worker pool (reused when it has the same shape), the client-state
        store and the global model with its server state. ``fault``: the testing hooks of ``$FEDVSR_FAULT``."""
        self.cfg = cfg
        self.out = Path(out_dir)
        faults = [f for f in fault.split(";") if f]  # the testing hooks
        crash = next((f for f in faults if f.startswith("crash-at:")), "")
        self._crash_at = crash.split(":")[1:3] if crash else None
        if resume:
            repair_jsonl(self.out / "events.jsonl")  # a line cut short by a crash
        self.strategy = build_strategy(cfg.fl)
        self.schedule = LRSchedule.from_config(cfg.fl)
        self._last_aggregate: PartialAggregate | None = None  # its float64 buffers are reused the next round
        videos, held_out = self._partition(cfg, resume)
        # large data lists (thousands of clients) go to the object store once, and holding the references here
        # keeps them there for as long as a worker may need reconfiguring after a restart; small ones travel
        # inline, as Ray would send them anyway
        self._worker_args = tuple(_inline_or_put(a) for a in (videos, self.client_videos, held_out))
        self._worker_fault = ";".join(f for f in faults if f.startswith(("kill:", "oom:")))
        if is_auto(cfg):  # platform.gpus_per_worker = auto: as many workers per GPU as fit (fedvsr.platform.gpus)
            self.cfg = cfg = self._pack(cfg, videos, fault)
        self._start_workers(cfg)
        # largest client data first, so the longest clients start first and nobody waits for one at the end
        self.client_size = [len(v) for v in self.client_videos]
        # system heterogeneity: a seeded speed per client (fl.stragglers)
        self.speed = client_speeds(cfg.seed, cfg.fl.clients, cfg.fl.stragglers)
        self._start_store()
        self._start_model(resume)

    def _partition(self, cfg: ExperimentConfig, resume: bool) -> tuple[list[Any], list[int]]:
        """The experiment's videos (with their clients' degradations), held-out evaluation videos and each
        client's videos (``self.client_videos``); writes partition.parquet."""
        data = experiment_data(cfg)
        videos, client_pool, held_out = data.videos, data.pool, data.held
        record_left_out(self.out, data, None if resume else self._event)  # the videos the probe left out
        labels = [videos[i].label for i in client_pool]
        parts = partition_videos(labels, cfg.fl.clients, cfg.fl.partition, cfg.data.seed, cfg.fl.dirichlet_beta)
        self.client_videos = [[client_pool[j] for j in part] for part in parts]
        # each client's degradation: its device's under by-degradation (carried by its videos), else data.degradation
        devices = client_degradations(cfg.fl.clients, cfg.data.seed) if cfg.fl.partition == "by-degradation" else None
        if devices is not None:
            videos = with_degradations(videos, self.client_videos, held_out, devices)
        write_parquet_atomic(
            self.out / "partition.parquet",
            partition_table(
                parts,
                labels,
                [videos[i].name for i in client_pool],
                devices or [Degradation.of(cfg.data.degradation, degradation_params(cfg.data))] * cfg.fl.clients,
            ),
        )
        return videos, held_out

    def _start_workers(self, cfg: ExperimentConfig, per_gpu: float | None = None) -> None:
        """Configure the worker pool for ``cfg``: the live actors when the pool has the same shape (count,
        resources, kernels, restarts) and none was lost, else new long-lived actors sized from platform.*.
        ``per_gpu``: the workers sharing a GPU, when not ``1 / platform.gpus_per_worker``."""
        p = cfg.platform
        shape = (p.workers, p.cpus_per_worker, p.gpus_per_worker, p.kernels, max(2, p.max_retries))
        if self.pool is None or shape != self._pool_shape or len(self.pool.alive) != len(self.pool.workers):
            for worker in self.pool.workers if self.pool is not None else ():
                ray.kill(worker)
            placement = (
                {}
                if self.placement_group is None
                else {"scheduling_strategy": PlacementGroupSchedulingStrategy(self.placement_group)}
            )
            # Ray restarts a dead worker (max_restarts); its calls are not retried by Ray (max_task_retries = 0):
            # the coordinator retries the one client it was training, on whichever worker is free
            remote = ray.remote(ClientWorker).options(
                num_cpus=p.cpus_per_worker * self.share,
                num_gpus=p.gpus_per_worker * self.share,
                max_restarts=shape[-1],
                max_task_retries=0,
                **placement,
                **actor_options(p.kernels),
            )
            self.pool = WorkerPool([remote.remote(i) for i in range(p.workers)], self._reconfigure, self._event)
            self._pool_shape = shape
        self.pool.lost_hint = (
            f"everything up to the last completed round is checkpointed in {self.out}: continue "
            f"with `fedvsr simulate --resume --out {self.out}`"
        )
        self.per_gpu = per_gpu_of(p.gpus_per_worker) if per_gpu is None else per_gpu
        ray.get([w.configure.remote(cfg, *self._worker_args, fault=self._worker_fault) for w in self.pool.workers])

    def _pack(self, cfg: ExperimentConfig, videos: list[Any], fault: str) -> ExperimentConfig:
        """``cfg`` with ``platform.gpus_per_worker = auto`` made numeric: one probe process on one GPU measures a
        client's peak memory (or the ``gpu-probe`` testing hook gives it), and as many workers share a GPU as fit
        (:func:`fedvsr.platform.gpus.pack`)."""
        if self.pool is not None:  # the probe needs a whole GPU: the last experiment's workers go
            for worker in self.pool.workers:
                ray.kill(worker)
            self.pool = None
        first = videos[next(v[0] for v in self.client_videos if v)]
        packing = resolve(cfg, ray.cluster_resources(), lambda: probe(cfg, fault, first))
        self._event(
            "gpu_packing",
            packing.describe(),
            peak_bytes=packing.peak_bytes,
            total_bytes=packing.total_bytes,
            workers_per_gpu=packing.per_gpu,
            workers=packing.workers,
        )
        return packing.config(cfg)

    def _fewer_per_gpu(self, t: int, clients: list[int]) -> bool:
        """After CUDA out-of-memory errors of ``clients`` in round ``t``: restart the pool with half the workers
        per GPU (False when it already has one per GPU). Alone, each worker then reserves twice the GPU share;
        with :attr:`keep_fraction` each keeps its share and half the workers start instead (the reservation
        stays, fewer processes use the GPU; False at one worker)."""
        p = self.cfg.platform
        if self.keep_fraction:
            if p.workers <= 1 or self.per_gpu <= 0:
                return False
            workers = max(1, p.workers // 2)
            per_gpu = self.per_gpu * workers / p.workers
            how = f"with {workers} of its {p.workers} workers in the same GPU reservation ({per_gpu:g} per GPU)"
            gpus_per_worker = p.gpus_per_worker
        else:
            if self.per_gpu <= 1:
                return False
            k = fewer(int(round(self.per_gpu)))
            gpus = ray.cluster_resources().get("GPU", 1.0)
            workers = max(1, min(p.workers, math.floor(k * gpus + 1e-9)))
            per_gpu, how, gpus_per_worker = float(k), f"with {k} per GPU, {workers} workers", 1.0 / k
        self._event(
            "gpu_oom",
            f"CUDA out of memory at {self.per_gpu:g} workers per GPU (clients "
            f"{', '.join(map(str, clients))}): the pool restarts {how}, and they train again",
            round=t,
            workers_per_gpu=per_gpu,
        )
        self.cfg = dataclasses.replace(
            self.cfg, platform=dataclasses.replace(p, gpus_per_worker=gpus_per_worker, workers=workers)
        )
        self._start_workers(self.cfg, per_gpu)
        return True

    def _reconfigure(self, w: int) -> ray.ObjectRef:
        """Configure worker ``w`` again once Ray has restarted it (its constructor alone ran); retried while it is
        restarting, fails if it is gone for good."""
        return (
            self.pool.workers[w]
            .configure.options(max_task_retries=-1)
            .remote(self.cfg, *self._worker_args, fault=self._worker_fault)
        )

    def _start_store(self) -> None:
        """Per-client persistent state (SCAFFOLD's c_i), outside worker memory, on this node."""
        if self.store is not None:
            ray.kill(self.store)
        self.store = None
        if self.strategy.stateful_clients:
            self.store = (
                ray.remote(ClientStateStore)
                .options(num_cpus=0, scheduling_strategy=on_this_node())
                .remote(str(self.out / "client_state"))
            )

    def _start_model(self, resume: bool) -> None:
        """The global model and server state: fresh (seeded) or from the checkpoint; the bicubic and initial
        metrics; the results store."""
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model.name, cfg.model.preset, cfg.model.options)
        self.model_params = count_params(model)
        self.start_round = 1
        passed_over: list[tuple[str, str]] = []
        ckpt = latest_checkpoint(self.out / "checkpoint", passed_over) if resume else None
        if resume and self.store is not None:  # client states newer than the checkpoint were never checkpointed
            ray.get(self.store.rollback.remote(ckpt.round if ckpt else 0))
        for path, why in passed_over:
            self._event("checkpoint_skipped", f"{path}: {why}; not resumed from", path=path)
        if resume and ckpt is None:
            self._event("resumed", "no complete checkpoint: the run starts over from round 1")
        if ckpt is not None:
            self.params, self.server_state = ckpt.params, ckpt.server_state
            self.start_round = ckpt.round + 1
            self.bicubic = ckpt.extra["bicubic"]
            self.initial = ckpt.extra["initial"]
            self._event("resumed", f"resumed after round {ckpt.round}")
        else:
            init = float_state(model)
            self.params = to_numpy(init)
            self.server_state = to_numpy(self.strategy.init_server_state(init))
            self.bicubic = ray.get(self.pool.workers[0].evaluate_bicubic.remote())
        eval_info = ray.get(self.pool.workers[0].eval_info.remote())
        self.eval_size = eval_info["clips"]
        if not resume:  # an unreadable evaluation video: recorded and left out, the others evaluate the run
            for path, reason in eval_info["skipped"]:
                self._event("video_skipped", reason, path=path)
        if self.start_round == 1:
            self.initial = self._evaluate(self.params)
        self.results = ResultsStore(
            self.out,
            keep_until_round=self.start_round - 1,
            restore_from=None if ckpt is None or ckpt.legacy else ckpt.folder,
        )

    # ------------------------------------------------------------------ helpers
    def _event(self, kind: str, message: str, **fields: Any) -> None:
        event = {"time": time.time(), "kind": kind, "message": message, **fields}
        with open(self.out / "events.jsonl", "a") as f:
            f.write(json.dumps(event) + "\n")

    def _evaluate(self, params: dict[str, np.ndarray]) -> dict[str, float]:
        """Metrics of ``params`` on the held-out clips, split among the live workers (clip k to share k mod W);
        averaged in clip order, so the values are those of one worker evaluating every clip."""
        start = time.perf_counter()
        ref = ray.put(params)
        shares = [list(range(k, self.eval_size, len(self.pool.alive))) for k in range(len(self.pool.alive))]
        rows: dict[int, dict[str, float]] = {}

        def submit(worker: Any, share: list[int]) -> ray.ObjectRef:
            return worker.evaluate_clips.remote(ref, share)

        def done(share: list[int], _worker: int, out: Any) -> None:
            rows.update(zip(share, out, strict=True))

        def failed(share: list[int], _worker: int, err: Exception, attempt: int) -> bool:
            if attempt > self.cfg.platform.max_retries:
                raise RuntimeError(f"evaluation of clips {share} failed {attempt} times: {_first_line(err)}") from err
            return True

        for _ in self.pool.run([tuple(sh) for sh in shares if sh], submit, done, failed, lambda share: 0):
            pass
        return {
            **mean_scores([rows[i] for i in range(self.eval_size)]),
            "eval_seconds": time.perf_counter() - start,
            "eval_workers": sum(1 for sh in shares if sh),
        }

    def info(self) -> dict[str, Any]:
        pings = ray.get([self.pool.workers[i].ping.remote() for i in self.pool.alive])
        for ping in pings:
            if self.cfg.platform.gpus_per_worker > 0 and not ping["device"].startswith("cuda"):
                self._event(
                    "device_fallback",
                    f"worker {ping['index']} was given GPU {ping['gpu'] or '(none)'} by "
                    f"Ray but torch sees no CUDA device there; it trains on {ping['device']}",
                    worker=ping["index"],
                )
        return {
            "start_round": self.start_round,
            "rounds": self.cfg.fl.rounds,
            "bicubic": self.bicubic,
            "initial": self.initial,
            "params": self.model_params,
            "workers": len(self.pool.alive),
            "worker_pids": [p["pid"] for p in pings],
            "devices": [p["device"] for p in pings],
            "gpus": [p["gpu"] for p in pings],
            "nodes": [p["node"] for p in pings],
            "environments": ray.get([self.pool.workers[i].environment.remote() for i in self.pool.alive]),
        }

    # ------------------------------------------------------------------ one round
    def run_round(self, t: int) -> Iterator[dict[str, Any]]:
        """Round ``t``: sample -> dispatch -> merge -> server update -> evaluate -> record; yields ``{"progress":
        (done, total)}`` as clients finish, then ``{"row": ...}`` (with ``"failed"``: why, when too few trained)."""
        start = time.perf_counter()
        r = self._sample(t)
        try:
            for finished in self._train(r):
                yield {"progress": (finished + len(r.clients) - len(r.training), len(r.clients)), "round": t}
        except RuntimeError as err:
            self._event("worker_lost", str(err), round=t)
            raise
        r.merge.flush(final=True)
        train_seconds = time.perf_counter() - start
        rows, kept = self._weigh(r)
        failed = failed_round(t, rows, self.cfg.fl.min_clients)
        if failed:  # too few clients trained: no update, no checkpoint; the run stops after this round's rows
            self._event("round_failed", failed, round=t)
        else:
            self._server_update(t, kept, r.merge.aggregate)
        metrics = self._evaluate(self.params)
        seconds = time.perf_counter() - start
        row = round_row(t, metrics, rows, kept, seconds, train_seconds, self.strategy_lr(t), len(self.pool.alive))
        row["status"] = "failed" if failed else "ok"
        if failed:
            self.results.append(row, [c.row() for c in rows])
            yield {"row": row, "failed": failed}
            return
        self._commit_round(t, row, [c.row() for c in rows], r.states)
        yield {"row": row}

    def _sample(self, t: int) -> RoundState:
        """The round's clients (fl.sampling), those that drop out (fl.dropout: reported, never trained) and the
        merge of the others' updates in dispatch order (largest data first, then client id)."""
        cfg = self.cfg
        clients = sample_clients(cfg.seed, t, cfg.fl.clients, cfg.fl.clients_per_round)
        r = RoundState(t, clients, ray.put(self.params), ray.put(self.server_state))
        for c in clients:
            if drops_out(cfg.seed, t, c, cfg.fl.dropout):
                r.reports[c] = self._not_trained(t, c, f"did not report (fl.dropout = {cfg.fl.dropout})")
            else:
                r.training.append(c)
        order = sorted(r.training, key=lambda c: (-self.client_size[c], c))
        r.merge = MergeInOrder(PartialAggregate.reusing(self._last_aggregate), order)  # last round's buffers
        self._last_aggregate = None
        return r

    def _train(self, r: RoundState) -> Iterator[int]:
        """Train the round's clients (:meth:`_dispatch`); the clients that ran out of GPU memory train again on a
        pool with fewer workers per GPU, or are dropped at one per GPU. Yields the number of clients finished."""
        base, todo = 0, r.training
        while todo:
            for finished in self._dispatch(r, todo):
                yield base + finished - len(r.oom)
            base += len(todo) - len(r.oom)
            todo, r.oom = sorted(r.oom), []
            if todo and not self._fewer_per_gpu(r.round, todo):
                for c in todo:
                    r.reports[c] = self._not_trained(
                        r.round, c, f"CUDA out of memory with {self.per_gpu:g} worker per GPU: {r.oom_reason[c]}"
                    )
                    r.merge.add(c, None)
                return

    def _plan(self, c: int, attempt: int) -> ClientPlan:
        return ClientPlan.of(self.cfg.fl.deadline, float(self.speed[c]), attempt)

    def _dispatch(self, r: RoundState, clients: list[int]) -> Iterator[int]:
        """Train the round's clients on the pool (each retried up to platform.max_retries times when its worker
        dies); updates go to the merge as they arrive. Yields the number of clients finished."""
        cfg, t = self.cfg, r.round

        def submit(worker: Any, c: int) -> ray.ObjectRef:
            states = self.store.get_many.remote([c]) if self.store is not None else None
            return worker.train_client.remote(
                t, r.params_ref, r.server_ref, c, states, self._plan(c, r.attempts.get(c, 1))
            )

        def done(c: int, _w: int, out: ClientResult) -> None:
            if out.report.status == OUT_OF_MEMORY:  # trains again with fewer workers per GPU (_train)
                r.oom.append(c)
                r.oom_reason[c] = out.report.reason
                return
            out.report.workers_per_gpu = self.per_gpu
            if c in r.oom_reason:
                out.report.reason = f"trained at {self.per_gpu:g} workers per GPU after {r.oom_reason[c]}"
            r.reports[c] = out.report
            for path, reason in out.skipped:  # a video that broke since the scan: the client went on
                self._event("video_skipped", reason, path=path, round=t, client=c)
            if out.state is not None:
                r.states[c] = out.state
            r.merge.add(c, out.update)

        def failed(c: int, w: int, err: Exception, attempt: int) -> bool:
            if attempt <= cfg.platform.max_retries:
                r.attempts[c] = attempt + 1
                self._event(
                    "client_retried",
                    f"worker {w} died while training client {c} (attempt {attempt}); retried",
                    round=t,
                    client=c,
                    worker=w,
                )
                return True
            r.reports[c] = self._not_trained(
                t,
                c,
                f"worker died {attempt} times while training it "
                f"(platform.max_retries = {cfg.platform.max_retries}): "
                f"{_first_line(err)}",
                attempts=attempt,
            )
            r.merge.add(c, None)
            return False

        def requeued(c: int, w: int) -> None:
            self._event(
                "client_requeued",
                f"worker {w} died with client {c} queued behind its running client: it "
                f"had not started and goes back to the queue (no attempt counted)",
                round=t,
                client=c,
                worker=w,
            )

        return self.pool.run(
            clients, submit, done, failed, lambda c: self.client_size[c], cfg.platform.queue_depth, requeued
        )

    def _weigh(self, r: RoundState) -> tuple[list[ClientReport], list[ClientReport]]:
        """The round's reports in client order and the trained ones, with their normalised weights."""
        rows = [r.reports[c] for c in sorted(r.reports)]
        kept = [c for c in rows if c.ok]
        for c, w in zip(kept, normalised_weights([c.log_weight for c in kept]), strict=True):
            c.weight = w
        for c in rows:
            if not c.ok:
                c.weight = 0.0
                self._event("client_dropped", c.reason, round=r.round, client=c.client)
        return rows, kept

    def _server_update(self, t: int, kept: list[ClientReport], aggregate: PartialAggregate) -> None:
        """The strategy's new global model and server state from the merged updates (kept unless non-finite)."""
        if not kept:
            self._event("round_skipped", "no client update could be aggregated; global model kept", round=t)
            return
        new_params, new_server = self.strategy.server_update(
            to_torch(self.params),
            aggregate,
            to_torch(self.server_state),
            t,
            self.cfg.fl.clients,
            [c.weight for c in kept],
        )
        new_params_np = to_numpy(new_params)
        self._last_aggregate = aggregate  # read no more: mean() / total() gave new tensors
        if all(np.isfinite(v).all() for v in new_params_np.values()):
            self.params, self.server_state = new_params_np, to_numpy(new_server)
        else:
            self._event("update_rejected", "aggregate has non-finite weights; global model kept", round=t)

    def _commit_round(
        self, t: int, row: dict[str, Any], rows: list[dict[str, Any]], states: dict[int, dict[str, np.ndarray]]
    ) -> None:
        """Round ``t`` to disk: client states, the tables, then the checkpoint folder, which is what a resume
        trusts (fedvsr.platform.checkpoint); only then older checkpoints and client-state versions go."""
        if self.store is not None:
            ray.get(self.store.commit.remote(t, states))
        self._crash_point("client_state", t)
        self.results.append(row, rows, written=lambda name: self._crash_point(name, t))
        if (self.out / "events.jsonl").exists():
            fsync_file(self.out / "events.jsonl")
        ckpt_dir = self.out / "checkpoint"
        save_checkpoint(
            ckpt_dir,
            t,
            self.params,
            self.server_state,
            {"bicubic": self.bicubic, "initial": self.initial},
            files=self.results.paths(),
            before_publish=lambda: self._crash_point("checkpoint_files", t),
        )
        self._crash_point("checkpoint", t)
        oldest = prune_checkpoints(ckpt_dir)
        if self.store is not None:
            ray.get(self.store.prune.remote(oldest))
        self._crash_point("pruned", t)

    def _crash_point(self, point: str, t: int) -> None:
        """Testing hook: SIGKILL this process at ``point`` of round ``t`` when ``FEDVSR_FAULT=crash-at:POINT:ROUND``
        (a driver killed there: the coordinator runs in the driver's Ray and dies with it)."""
        if self._crash_at == [point, str(t)]:
            os.kill(os.getpid(), signal.SIGKILL)

    def strategy_lr(self, t: int) -> float:
        return self.schedule.round_rate(t, self.cfg.fl.rounds)

    def _not_trained(self, t: int, c: int, reason: str, attempts: int = 1) -> ClientReport:
        """The report of a sampled client that sent no update (dropped out, or lost with its workers)."""
        report = ClientReport.not_trained(t, c, self.strategy_lr(t), self._plan(c, attempts), reason)
        report.workers_per_gpu = self.per_gpu
        return report

    # ------------------------------------------------------------------ end of the run
    def finish(self) -> dict[str, Any]:
        """Write the final model and ``summary.json`` (:func:`~fedvsr.platform.results.run_summary`); returns the
        summary. The ``fedvsr`` command draws ``psnr.png`` from them afterwards: the runtime never draws."""
        save_arrays(self.out / "model.safetensors", self.params)
        self._crash_point("model", self.cfg.fl.rounds)
        rounds = self.results.rounds
        summary = run_summary(
            self.cfg,
            self.cfg.fl.strategy,
            self.model_params,
            rounds,
            self.bicubic,
            self.initial,
            clients_dropped=int(sum(r["dropped"] for r in rounds)),
        )
        write_json_atomic(self.out / "summary.json", summary)
        self._crash_point("summary", self.cfg.fl.rounds)
        return summary


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


#: arguments up to this many pickled bytes are sent inline (Ray's own inline limit is 100 KiB)
INLINE_BYTES = 64 * 1024


def _inline_or_put(value: Any) -> Any:
    return value if len(pickle.dumps(value)) <= INLINE_BYTES else ray.put(value)
