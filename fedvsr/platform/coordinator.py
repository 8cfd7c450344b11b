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

import heapq
import json
import math
import os
import pickle
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray.util.placement_group import PlacementGroup
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

from fedvsr.config import config_from_dict
from fedvsr.data.degrade import degradation_params
from fedvsr.data.sources import experiment_data
from fedvsr.fl import build_strategy
from fedvsr.fl.aggregate import PartialAggregate, merge_updates, normalised_weights, to_numpy, to_torch
from fedvsr.fl.partition import Degradation, client_degradations, partition_table, partition_videos, with_degradations
from fedvsr.fl.sampling import client_seed, sample_clients
from fedvsr.fl.schedule import LRSchedule
from fedvsr.fl.strategy import float_state
from fedvsr.metrics import mean_scores
from fedvsr.models import build_model, count_params
from fedvsr.platform.checkpoint import latest_checkpoint, prune_checkpoints, save_arrays, save_checkpoint
from fedvsr.platform.data import record_left_out
from fedvsr.platform.environment import actor_options
from fedvsr.platform.results import ResultsStore, fsync_file, repair_jsonl, write_json_atomic, write_parquet_atomic
from fedvsr.platform.state_store import ClientStateStore
from fedvsr.platform.worker import ClientWorker
from fedvsr.report import plot_psnr

#: client updates merged at once (block by block: see fedvsr.fl.aggregate.merge_updates)
MERGE_BATCH = 8
#: where a round writes to disk, in order (``FEDVSR_FAULT=crash-at:POINT:ROUND`` kills the coordinator there; the
#: last two are in :meth:`Coordinator.finish`, ROUND being the last round)
WRITE_POINTS = ("client_state", "clients", "rounds", "checkpoint_files", "checkpoint", "pruned", "model", "summary")


def on_this_node() -> NodeAffinitySchedulingStrategy:
    """Scheduling that keeps an actor on the calling process's node (where the output folder is)."""
    return NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)


class Coordinator:
    """Holds the global model and the strategy's server state; drives the worker pool round by round."""

    def __init__(self, cfg_dict: dict[str, Any], out_dir: str, resume: bool = False,
                 placement_group: PlacementGroup | None = None, fault: str = "", share: float = 1.0) -> None:
        """``share`` scales the Ray resources each worker reserves (replicates stepped in lockstep share one set of
        CPUs, see fedvsr.platform.replicates); a worker's torch threads stay ``platform.cpus_per_worker``."""
        self.cfg = cfg = config_from_dict(cfg_dict)
        self.out = Path(out_dir)
        self._crash_at = fault.split(":")[1:3] if fault.startswith("crash-at:") else None  # a testing hook
        if resume:
            repair_jsonl(self.out / "events.jsonl")  # a line cut short by a crash
        self.strategy = build_strategy(cfg.fl)
        self.schedule = LRSchedule.from_config(cfg.fl)
        self._last_aggregate: PartialAggregate | None = None  # its float64 buffers are reused the next round

        # data: videos, held-out evaluation videos, partition among clients
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
            partition_table(parts, labels, [videos[i].name for i in client_pool], devices or [
                Degradation.of(cfg.data.degradation, degradation_params(cfg.data))] * cfg.fl.clients),
        )

        # the worker pool: long-lived actors sized from platform.*
        p = cfg.platform
        # inside a sweep trial the workers take the bundles of the trial's placement group, so trials
        # running side by side never starve each other
        placement = {} if placement_group is None else {
            "scheduling_strategy": PlacementGroupSchedulingStrategy(placement_group)}
        # Ray restarts a dead worker (max_restarts); its calls are not retried by Ray (max_task_retries = 0):
        # the coordinator retries the one client it was training, on whichever worker is free
        remote = ray.remote(ClientWorker).options(
            num_cpus=p.cpus_per_worker * share, num_gpus=p.gpus_per_worker * share, max_restarts=max(2, p.max_retries),
            max_task_retries=0, **placement, **actor_options(p.kernels),
        )
        # large data lists (thousands of clients) go to the object store once, and holding the references here
        # keeps them there for as long as a worker may need restarting (Ray re-reads an actor's constructor
        # arguments on restart: ray#53727); small ones travel inline, as Ray would send them anyway
        self._worker_args = tuple(_inline_or_put(a) for a in (videos, self.client_videos, held_out))
        worker_fault = fault if fault.startswith("kill:") else ""
        self.workers = [remote.remote(cfg_dict, i, *self._worker_args, fault=worker_fault) for i in range(p.workers)]
        self.alive = list(range(p.workers))
        self.restarting: dict[int, ray.ObjectRef] = {}  # a dead worker -> its ping, answered once Ray restarted it
        # largest client data first, so the longest clients start first and nobody waits for one at the end
        self.client_size = [len(v) for v in self.client_videos]
        # system heterogeneity: a seeded speed per client (fl.stragglers)
        speeds = np.random.default_rng([cfg.seed, 0x5EED]).standard_normal(cfg.fl.clients)
        self.speed = np.exp(cfg.fl.stragglers * speeds) if cfg.fl.stragglers > 0 else np.ones(cfg.fl.clients)

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
            self.bicubic = ray.get(self.workers[0].evaluate_bicubic.remote())
        eval_info = ray.get(self.workers[0].eval_info.remote())
        self.eval_size = eval_info["clips"]
        if not resume:  # an unreadable evaluation video: recorded and left out, the others evaluate the run
            for path, reason in eval_info["skipped"]:
                self._event("video_skipped", reason, path=path)
        if self.start_round == 1:
            self.initial = self._evaluate(self.params)
        self.results = ResultsStore(self.out, keep_until_round=self.start_round - 1,
                                    restore_from=None if ckpt is None or ckpt.legacy else ckpt.folder)

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
        shares = [list(range(k, self.eval_size, len(self.alive))) for k in range(len(self.alive))]
        rows: dict[int, dict[str, float]] = {}

        def submit(worker: Any, share: list[int]) -> ray.ObjectRef:
            return worker.evaluate_clips.remote(ref, share)

        def done(share: list[int], _worker: int, out: Any) -> None:
            rows.update(zip(share, out, strict=True))

        def failed(share: list[int], _worker: int, err: Exception, attempt: int) -> bool:
            if attempt > self.cfg.platform.max_retries:
                raise RuntimeError(f"evaluation of clips {share} failed {attempt} times: {_first_line(err)}") from err
            return True

        for _ in self._dispatch([tuple(sh) for sh in shares if sh], submit, done, failed, lambda share: 0):
            pass
        return {**mean_scores([rows[i] for i in range(self.eval_size)]), "eval_seconds": time.perf_counter() - start,
                "eval_workers": sum(1 for sh in shares if sh)}

    def info(self) -> dict[str, Any]:
        pings = ray.get([self.workers[i].ping.remote() for i in self.alive])
        for ping in pings:
            if self.cfg.platform.gpus_per_worker > 0 and not ping["device"].startswith("cuda"):
                self._event("device_fallback", f"worker {ping['index']} was given GPU {ping['gpu'] or '(none)'} by "
                            f"Ray but torch sees no CUDA device there; it trains on {ping['device']}",
                            worker=ping["index"])
        return {"start_round": self.start_round, "rounds": self.cfg.fl.rounds, "bicubic": self.bicubic,
                "initial": self.initial, "params": self.model_params, "workers": len(self.alive),
                "worker_pids": [p["pid"] for p in pings], "devices": [p["device"] for p in pings],
                "gpus": [p["gpu"] for p in pings], "nodes": [p["node"] for p in pings],
                "environments": ray.get([self.workers[i].environment.remote() for i in self.alive])}

    # ------------------------------------------------------------------ the pool
    def _dispatch(self, tasks: list[Any], submit: Callable[[Any, Any], ray.ObjectRef],
                  done: Callable[[Any, int, Any], None], failed: Callable[[Any, int, Exception, int], bool],
                  size: Callable[[Any], float], depth: int = 1,
                  requeued: Callable[[Any, int], None] | None = None) -> Iterator[int]:
        """Run ``tasks`` on the live workers, largest ``size`` first, each to a worker with nothing to do.

        ``depth`` > 1 (``platform.queue_depth``) also queues calls behind a worker's running one, up to
        ``depth`` in flight, so it starts its next task without waiting for the coordinator in between; only
        while at least one task per live worker is left, so the round's tail still goes to whichever worker is
        free first. ``done(task, worker, output)`` takes each result; when the worker died during a task,
        ``failed(task, worker, error, attempt)`` says whether to retry it (on the next free worker); the calls
        queued behind it had not started (a worker runs its calls in order) and go back to the queue as they
        were, no attempt counted (``requeued(task, worker)`` is told). A worker whose restart failed leaves the
        pool. Yields the number of tasks finished after each one."""
        queue = [(-size(task), i, task, 1) for i, task in enumerate(tasks)]
        heapq.heapify(queue)
        free = {w: 0 if w in self.restarting else depth for w in self.alive}  # call slots per worker
        inflight: dict[int, list[ray.ObjectRef]] = {w: [] for w in self.alive}  # in submission order
        pending: dict[ray.ObjectRef, tuple[Any, int, int, int, str]] = {
            ref: (None, w, -1, 0, "ping") for w, ref in self.restarting.items()}
        finished = 0
        # a worker still restarting (its node lost, no room elsewhere yet) does not hold up the end of the tasks
        while queue or any(kind != "ping" for *_, kind in pending.values()):
            while queue:
                w = next((w for w in self.alive if free[w] > 0 and not inflight[w]), None)
                if w is None and len(queue) >= len(self.alive):
                    w = next((w for w in self.alive if free[w] > 0), None)
                if w is None:
                    break
                _, order, task, attempt = heapq.heappop(queue)
                ref = submit(self.workers[w], task)
                pending[ref] = (task, w, order, attempt, "task")
                inflight[w].append(ref)
                free[w] -= 1
            if not pending:
                raise RuntimeError(f"no client worker is left ({len(self.workers)} started, all lost); everything "
                                   f"up to the last completed round is checkpointed in {self.out}: continue with "
                                   f"`fedvsr simulate --resume --out {self.out}`")
            [ref], _ = ray.wait(list(pending), num_returns=1)
            task, w, order, attempt, kind = pending.pop(ref)
            if kind == "ping":  # a worker that died is back (restarted) or gone for good
                self.restarting.pop(w, None)
                try:
                    ray.get(ref)
                    free[w], inflight[w] = depth, []
                except ray.exceptions.RayActorError as err:
                    self.alive.remove(w)
                    self._event("worker_lost", f"worker {w} could not be restarted: {_first_line(err)}", worker=w)
                continue
            try:
                out = ray.get(ref)
            except ray.exceptions.RayActorError as err:  # the worker process died
                self._event("worker_died", _first_line(err), worker=w)
                calls, inflight[w], free[w] = inflight[w], [], 0
                info = {r: pending.pop(r) for r in calls if r != ref}
                info[ref] = (task, w, order, attempt, kind)
                # its other calls settle now: finished before the death (kept), or failed with it
                others = [r for r in calls if r != ref]
                ready, _ = ray.wait(others, num_returns=len(others), timeout=30) if others else ([], [])
                dead = [ref]
                for r in others:
                    try:
                        result = ray.get(r) if r in ready else None
                    except ray.exceptions.RayActorError:
                        result = None
                    if result is None:
                        dead.append(r)
                        continue
                    done(info[r][0], w, result)
                    finished += 1
                    yield finished
                dead.sort(key=calls.index)
                for r in dead[1:]:  # queued behind the running call, never started: back as they were
                    q_task, _, q_order, q_attempt, _ = info[r]
                    heapq.heappush(queue, (-size(q_task), q_order, q_task, q_attempt))
                    if requeued is not None:
                        requeued(q_task, w)
                task, _, order, attempt, _ = info[dead[0]]  # the oldest unfinished call was the running one
                # answered once Ray has restarted it (retried while it is restarting); fails if it is gone for good
                self.restarting[w] = self.workers[w].ping.options(max_task_retries=-1).remote()
                pending[self.restarting[w]] = (None, w, -1, 0, "ping")
                if failed(task, w, err, attempt):
                    heapq.heappush(queue, (-size(task), order, task, attempt + 1))
                continue
            inflight[w].remove(ref)
            free[w] += 1
            done(task, w, out)
            finished += 1
            yield finished

    # ------------------------------------------------------------------ one round
    def run_round(self, t: int) -> Iterator[dict[str, Any]]:
        """Round ``t``; yields ``{"progress": (done, total)}`` as clients finish, then ``{"row": ...}``."""
        cfg = self.cfg
        start = time.perf_counter()
        clients = sample_clients(cfg.seed, t, cfg.fl.clients, cfg.fl.clients_per_round)
        params_ref = ray.put(self.params)
        server_ref = ray.put(self.server_state)
        reports: dict[int, dict[str, Any]] = {}
        states: dict[int, dict[str, np.ndarray]] = {}

        # clients that do not report this round (fl.dropout): drawn per (seed, round, client), never trained
        training = []
        for c in clients:
            draw = np.random.default_rng([client_seed(cfg.seed, t, c), 0xD0]).random() if cfg.fl.dropout > 0 else 1.0
            if draw < cfg.fl.dropout:
                reports[c] = self._not_trained(t, c, f"did not report (fl.dropout = {cfg.fl.dropout})")
            else:
                training.append(c)

        def plan(c: int, attempt: int) -> dict[str, Any]:
            speed = float(self.speed[c])
            return {"attempt": attempt, "speed": speed, "budget": cfg.fl.deadline * speed if cfg.fl.deadline else 0.0}

        def submit(worker: Any, c: int) -> ray.ObjectRef:
            states = self.store.get_many.remote([c]) if self.store is not None else None
            return worker.train_client.remote(t, params_ref, server_ref, c, states, plan(c, attempts.get(c, 1)))

        attempts: dict[int, int] = {}

        # updates are merged in the dispatch order (largest data first, then client id), whichever worker
        # trained them and whenever they arrive: a small reorder buffer, flushed MERGE_BATCH at a time
        aggregate = PartialAggregate.reusing(self._last_aggregate)  # last round's float64 buffers
        self._last_aggregate = None
        order = sorted(training, key=lambda c: (-self.client_size[c], c))
        position = {c: i for i, c in enumerate(order)}
        arrived: dict[int, Any] = {}
        merged = 0

        def flush(final: bool = False) -> None:
            nonlocal merged
            ready = 0
            while merged + ready in arrived:
                ready += 1
            if ready and (final or ready >= MERGE_BATCH):
                batch = [arrived.pop(i) for i in range(merged, merged + ready)]
                merge_updates(aggregate, [u for u in batch if u is not None])
                merged += ready

        def done(c: int, _w: int, out: dict[str, Any]) -> None:
            reports[c] = out["report"]
            for path, reason in out.get("skipped", ()):  # a video that broke since the scan: the client went on
                self._event("video_skipped", reason, path=path, round=t, client=c)
            arrived[position[c]] = out["update"]
            if out["state"] is not None:
                states[c] = out["state"]
            flush()

        def failed(c: int, w: int, err: Exception, attempt: int) -> bool:
            if attempt <= cfg.platform.max_retries:
                attempts[c] = attempt + 1
                self._event("client_retried", f"worker {w} died while training client {c} (attempt {attempt}); "
                            f"retried", round=t, client=c, worker=w)
                return True
            reports[c] = self._not_trained(t, c, f"worker died {attempt} times while training it "
                                                 f"(platform.max_retries = {cfg.platform.max_retries}): "
                                                 f"{_first_line(err)}", attempts=attempt)
            arrived[position[c]] = None
            flush()
            return False

        def requeued(c: int, w: int) -> None:
            self._event("client_requeued", f"worker {w} died with client {c} queued behind its running client: it "
                        f"had not started and goes back to the queue (no attempt counted)", round=t, client=c, worker=w)

        try:
            for finished in self._dispatch(training, submit, done, failed, lambda c: self.client_size[c],
                                           cfg.platform.queue_depth, requeued):
                yield {"progress": (finished + len(clients) - len(training), len(clients)), "round": t}
        except RuntimeError as err:
            self._event("worker_lost", str(err), round=t)
            raise
        flush(final=True)
        train_seconds = time.perf_counter() - start
        rows = [reports[c] for c in sorted(reports)]
        kept = [r for r in rows if r["status"] == "ok"]
        for r, w in zip(kept, normalised_weights([r["log_weight"] for r in kept]), strict=True):
            r["weight"] = w
        for r in rows:
            if r["status"] != "ok":
                r["weight"] = 0.0
                self._event("client_dropped", r["reason"], round=t, client=r["client"])

        failed = _failed_round(t, rows, cfg.fl.min_clients)
        if failed:  # too few clients trained: no update, no checkpoint; the run stops after this round's rows
            self._event("round_failed", failed, round=t)
        elif kept:
            new_params, new_server = self.strategy.server_update(
                to_torch(self.params), aggregate, to_torch(self.server_state), t, cfg.fl.clients,
                [r["weight"] for r in kept],
            )
            new_params_np = to_numpy(new_params)
            self._last_aggregate = aggregate  # read no more: mean() / total() gave new tensors
            if all(np.isfinite(v).all() for v in new_params_np.values()):
                self.params, self.server_state = new_params_np, to_numpy(new_server)
            else:
                self._event("update_rejected", "aggregate has non-finite weights; global model kept", round=t)
        else:
            self._event("round_skipped", "no client update could be aggregated; global model kept", round=t)

        metrics = self._evaluate(self.params)
        seen = int(sum(r["seen"] for r in kept))
        row = {
            "round": t,
            **{k: v for k, v in metrics.items() if k not in ("eval_seconds", "eval_workers")},
            "train_loss": float(np.mean([r["loss"] for r in kept])) if kept else math.nan,
            "clients": len(rows),
            "aggregated": len(kept),
            "dropped": len(rows) - len(kept),
            "retried": int(sum(r["attempts"] > 1 for r in rows)),
            "cut": int(sum(bool(r["cut"]) for r in kept)),
            "seconds": time.perf_counter() - start,
            "train_seconds": train_seconds,
            "eval_seconds": metrics["eval_seconds"],
            "samples": int(sum(r["samples"] for r in kept)),
            "updates_per_s": len(kept) / train_seconds if train_seconds > 0 else math.nan,
            "samples_per_s": seen / train_seconds if train_seconds > 0 else math.nan,
            "lr": self.strategy_lr(t),
            "workers": len(self.alive),
            "eval_workers": metrics["eval_workers"],
        }
        row["status"] = "failed" if failed else "ok"
        if failed:
            self.results.append(row, rows)
            yield {"row": row, "failed": failed}
            return
        self._commit_round(t, row, rows, states)
        yield {"row": row}

    def _commit_round(self, t: int, row: dict[str, Any], rows: list[dict[str, Any]],
                      states: dict[int, dict[str, np.ndarray]]) -> None:
        """Round ``t`` to disk: client states, the tables, then the checkpoint folder, which is what a resume
        trusts (fedvsr.platform.checkpoint); only then older checkpoints and client-state versions go."""
        if self.store is not None:
            ray.get(self.store.commit.remote(t, states))
        self._crash_point("client_state", t)
        self.results.append(row, rows, written=lambda name: self._crash_point(name, t))
        if (self.out / "events.jsonl").exists():
            fsync_file(self.out / "events.jsonl")
        ckpt_dir = self.out / "checkpoint"
        save_checkpoint(ckpt_dir, t, self.params, self.server_state, {"bicubic": self.bicubic, "initial": self.initial},
                        files=self.results.paths(), before_publish=lambda: self._crash_point("checkpoint_files", t))
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

    def _not_trained(self, t: int, c: int, reason: str, attempts: int = 1) -> dict[str, Any]:
        """The report of a sampled client that sent no update (dropped out, or lost with its workers)."""
        speed = float(self.speed[c])
        return {"round": t, "client": c, "samples": 0, "steps": 0, "seen": 0, "loss": math.nan,
                "lr": self.strategy_lr(t), "log_weight": -math.inf, "raw_weight": 0.0, "worker": -1, "device": "",
                "gpu": "", "seconds": 0.0, "status": "dropped", "reason": reason, "attempts": attempts,
                "speed": speed, "budget": self.cfg.fl.deadline * speed if self.cfg.fl.deadline else 0.0,
                "cut": False, "node": ""}

    # ------------------------------------------------------------------ end of the run
    def finish(self) -> dict[str, Any]:
        save_arrays(self.out / "model.safetensors", self.params)
        self._crash_point("model", self.cfg.fl.rounds)
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
        self._crash_point("summary", self.cfg.fl.rounds)
        plot_psnr([{"round": 0, "psnr": self.initial["psnr"]}, *rounds], self.bicubic["psnr"],
                  self.out / "psnr.png", title=f"{summary['model']}/{summary['preset']} - {summary['strategy']}")
        return summary


def _failed_round(t: int, rows: list[dict[str, Any]], min_clients: int) -> str:
    """Why round ``t`` failed (``"round 3: 1 of 4 clients trained (data error: 2, missed the deadline: 1)"``),
    or ``""`` when at least ``min_clients`` (``fl.min_clients``) of its clients trained."""
    trained = sum(r["status"] == "ok" for r in rows)
    if trained >= min_clients:
        return ""
    reasons = Counter(r["reason"].split(":")[0] for r in rows if r["status"] != "ok")
    counted = ", ".join(f"{k}: {n}" for k, n in reasons.most_common())
    return (f"round {t}: {trained} of {len(rows)} clients trained ({counted}), fewer than fl.min_clients = "
            f"{min_clients}")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


#: arguments up to this many pickled bytes are sent inline (Ray's own inline limit is 100 KiB)
INLINE_BYTES = 64 * 1024


def _inline_or_put(value: Any) -> Any:
    return value if len(pickle.dumps(value)) <= INLINE_BYTES else ray.put(value)
