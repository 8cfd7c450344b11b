"""One sweep trial as a Ray Tune class trainable whose actors outlive it.

A trial is built once (:func:`trial_plan`: the swept values, the validated :class:`ExperimentConfig` or the
:class:`ConfigError` it raised) and that object is handed on: to the trial's resources, to the run, to the
error path and to the driver's progress lines. Building is cached per process, so the driver and the trial
actor each build a trial's config once.

:class:`SweepTrial` runs the experiment one round per ``step`` (ASHA's rungs are rounds). The sweep runs with
``TuneConfig(reuse_actors=True)``: when a trial ends and the next one asks for the same resources, Tune keeps
the trainable's actor and calls :meth:`SweepTrial.reset_config`; the trial's coordinator actors (and their
client workers, in the trainable's placement group) are kept too and configured for the next experiment
(:class:`fedvsr.platform.run.Experiment` ``coordinator=``), where the platform's actors can be configured
again. A trial's numbers do not depend on which actors ran it: the model, the strategy and the seeded draws
are rebuilt from its config, as in a run of its own.

A trial begins at its first ``step``, never in ``setup`` or ``reset_config``: Tune drops an actor still in its
setup when a cached one frees up for the same trial, and the dropped actor must leave the trial's folder
untouched (it once started a second run there, whose fresh results table removed the finished run's).

A trial restarted after an interruption, or retried by Tune after its actor or node died, continues its run
from the run folder's last round checkpoint; a trial whose run folder already holds all its rounds reports
them without training again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

from fedvsr.config import ConfigError, ExperimentConfig, set_dotted
from fedvsr.platform.results import write_json_atomic, write_text_atomic
from fedvsr.sweeps.results import ERROR_FILE, NODE_FILE
from fedvsr.sweeps.spec import SweepSpec

try:
    from ray.tune import Trainable
except ImportError:  # pragma: no cover - ray[tune] is a dependency
    Trainable = object  # type: ignore[assignment,misc]


@dataclass(frozen=True)
class TrialPlan:
    """One trial, built once: its swept values, its config (None when they make no valid experiment: ``error``
    says why), and its config tree as the run folder's ``config.yaml`` records it when the run cannot start."""

    overrides: dict[str, Any]
    cfg: ExperimentConfig | None
    error: ConfigError | None
    tree: dict[str, Any]


#: per spec object (held, so that its id is not reused): its trials' plans by their values
_PLANS: dict[int, tuple[SweepSpec, dict[str, TrialPlan]]] = {}


def trial_plan(spec: SweepSpec, tune_config: dict[str, Any]) -> TrialPlan:
    """The :class:`TrialPlan` of the trial Tune hands ``tune_config`` (``{}``: the spec's base config), built once
    per process and spec."""
    overrides = spec.trial_overrides(tune_config)
    held, plans = _PLANS.get(id(spec), (None, {}))
    if held is not spec:
        plans = {}
        _PLANS[id(spec)] = (spec, plans)
    key = json.dumps(overrides, sort_keys=True, default=str)
    plan = plans.get(key)
    if plan is None:
        tree = spec.base_tree()
        for k, v in overrides.items():
            set_dotted(tree, k, v)
        try:
            cfg, error = spec.experiment_config(overrides), None
        except ConfigError as err:
            cfg, error = None, err
        plan = plans[key] = TrialPlan(overrides, cfg, error, tree)
    return plan


def run_folder_name(trial_id: str, overrides: dict[str, Any]) -> str:
    """``<index>-<hash>``: the trial's index in the sweep and a hash of its values (stable across restarts)."""
    index = trial_id.rsplit("_", 1)[-1]
    digest = hashlib.sha1(json.dumps(overrides, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{index}-{digest}"


def trial_resources(spec: SweepSpec, parallel: bool = False):
    """Tune's per-trial resources: an empty bundle for the trial's driver, one bundle per client worker (per
    client worker of every replicate when the replicates run in ``parallel``; else they share one set)."""
    from ray import tune

    base = trial_plan(spec, {}).cfg

    def resources(config: dict[str, Any]):
        p = (trial_plan(spec, config).cfg or base).platform  # a trial that cannot start records its error itself
        worker = {"CPU": p.cpus_per_worker, **({"GPU": p.gpus_per_worker} if p.gpus_per_worker else {})}
        copies = spec.replicates if parallel else 1
        return tune.PlacementGroupFactory([{"CPU": 0}] + [dict(worker) for _ in range(p.workers * copies)])

    return resources


def report_row(row: dict[str, Any], rounds: int) -> dict[str, Any]:
    """What a trial reports to Tune after a round of ``rounds.parquet`` (ASHA compares ``loss`` too)."""
    loss = row["train_loss"]
    return {
        "round": int(row["round"]),
        "rounds": rounds,
        "psnr": float(row["psnr"]),
        "ssim": float(row["ssim"]),
        # a round where every client was dropped has no loss: worst, never NaN (ASHA compares it)
        "loss": float(loss) if math.isfinite(loss) else math.inf,
        "seconds": float(row["seconds"]),
    }


def report_mean(agg: dict[str, Any], rounds: int) -> dict[str, Any]:
    """What a trial with replicates reports: the mean of each metric over them (what ASHA and Optuna compare),
    with its std and n."""
    loss = agg["train_loss_mean"]
    return {
        "round": int(agg["round"]),
        "rounds": rounds,
        "psnr": float(agg["psnr_mean"]),
        "ssim": float(agg["ssim_mean"]),
        "loss": float(loss) if math.isfinite(loss) else math.inf,
        "psnr_std": float(agg["psnr_std"]),
        "replicates": int(agg["n"]),
        "seconds": float(agg["seconds"]),
    }


def node_lost(err: BaseException) -> bool:
    """Whether ``err`` says a Ray process or node of the trial died (its coordinator's or the trial's own node was
    lost, or every one of its client workers could not be restarted: :class:`~fedvsr.platform.pool.WorkersLost`,
    which reaches the trial from its coordinator as a Ray task error caused by it), rather than that fedvsr failed."""
    from ray import exceptions as rx

    from fedvsr.platform.pool import WorkersLost

    lost = (rx.RayActorError, rx.WorkerCrashedError, rx.ObjectLostError, rx.NodeDiedError, WorkersLost)
    return isinstance(err, lost) or isinstance(getattr(err, "cause", None), WorkersLost)


def node_record(out: Path, node: dict[str, Any]) -> dict[str, Any]:
    """node.json: ``node`` (:func:`~fedvsr.platform.cluster.this_node`), and in ``starts`` the nodes of every start of
    the trial, earlier ones first (a trial restarted after its node was lost, or by --resume, has more than one)."""
    try:
        earlier = json.loads((out / NODE_FILE).read_text())
    except (OSError, ValueError):
        earlier = {}
    starts = earlier.get("starts", [earlier] if earlier else [])
    return {
        **node,
        "starts": [
            *({"node_ip": s.get("node_ip"), "node_id": s.get("node_id")} for s in starts),
            {"node_ip": node["node_ip"], "node_id": node["node_id"]},
        ],
    }


class SweepTrial(Trainable):
    """The trainable of every trial of a sweep (module docstring). ``setup``'s keywords come from
    ``tune.with_parameters``: the spec, the sweep folder, its ``sweep-id`` and whether replicates run in
    parallel."""

    def setup(
        self,
        config: dict[str, Any],
        spec: SweepSpec | None = None,
        sweep_dir: str = "",
        sweep_id: str | None = None,
        parallel: bool = False,
    ) -> None:
        self.spec, self.sweep_dir, self.sweep_id, self.parallel = spec, sweep_dir, sweep_id, parallel
        self.kept: list[Any] = []  # live coordinator actors of earlier trials, configured again for the next
        self.trials = 0  # experiments this actor has run
        self.run: Any = None
        self.out: Path | None = None
        # The trial begins at its first step, never in setup: Tune drops an actor still in setup when a cached one
        # frees up for the same trial (reuse_actors; TuneController._maybe_reuse_cached_actor), and a dropped
        # actor must have written nothing into the trial's folder nor started any run there.
        self.pending: dict[str, Any] | None = config

    # ------------------------------------------------------------------ one trial
    def _begin(self, config: dict[str, Any]) -> None:
        from fedvsr.platform.cluster import check_sweep_folder, this_node

        if self.sweep_id is not None:  # before anything is written: never a run folder on a node's local disk
            check_sweep_folder(self.sweep_dir, self.sweep_id)
        self.plan = plan = trial_plan(self.spec, config)
        self.out = Path(self.sweep_dir) / "runs" / run_folder_name(self.trial_id, plan.overrides)
        self.replay: dict[str, Any] | None = None  # a trial found finished: its last row, reported as it was
        self.error: Exception | None = None  # why it cannot start: raised by its first step (recorded already)
        self.trials += 1
        if (self.out / ERROR_FILE).is_file():  # fedvsr's own error in an earlier start (TRIAL_RESTARTS): the same
            self.error = RuntimeError((self.out / ERROR_FILE).read_text().split("\n\n", 1)[0])
            return
        try:
            if plan.error is not None:
                raise plan.error
            self.rounds = plan.cfg.fl.rounds
            self.out.mkdir(parents=True, exist_ok=True)
            node = node_record(self.out, this_node())
            write_json_atomic(self.out / NODE_FILE, node)
            if self.spec.replicates > 1:
                self._open_replicates(plan.cfg)
            else:
                self._open_run(plan.cfg)
            if self.run is not None:
                write_json_atomic(self.out / NODE_FILE, {**node, **self._actors()})
        except Exception as err:  # raised from step: Tune records a trial's error alike from setup and reset
            self._record(err)
            self.error = err

    def _open_run(self, cfg: ExperimentConfig) -> None:
        from ray.util.placement_group import get_current_placement_group

        from fedvsr.platform.data import check_data
        from fedvsr.platform.run import Experiment, run_config

        out = self.out
        done = pq.read_table(out / "rounds.parquet").to_pylist() if (out / "rounds.parquet").is_file() else []
        if (out / "summary.json").is_file() and len(done) >= self.rounds:
            self.replay = {**report_row(done[-1], self.rounds), "replayed": True}  # nothing to train
            return
        resume = (out / "config.yaml").is_file()
        cfg = run_config(out, None if resume else cfg, resume)
        check_data(cfg, out)
        self.run = Experiment(cfg, out, resume, get_current_placement_group(), coordinator=self._take())

    def _open_replicates(self, cfg: ExperimentConfig) -> None:
        from ray.util.placement_group import get_current_placement_group

        from fedvsr.platform.replicates import ReplicateGroup, aggregate_rounds, is_replicate_group

        group = ReplicateGroup(
            cfg,
            self.out,
            self.spec.replicates,
            self.spec.vary_data,
            resume=is_replicate_group(self.out),
            placement_group=get_current_placement_group(),
            parallel=self.parallel,
            coordinators=self.kept,
        )
        self.kept = []
        if group.done:  # finished before an interruption: report, do not train again
            group.finish()
            group.close()
            rows = aggregate_rounds([list(rows.values()) for rows in group.rows])
            self.replay = {**report_mean(rows[-1], self.rounds), "replayed": True}
            return
        self.run = group

    def _take(self) -> Any:
        return self.kept.pop() if self.kept else None

    def _actors(self) -> dict[str, Any]:
        """``worker_pids`` of the run's workers and ``trial_of_actor`` (1 = this actor's first experiment)."""
        info = self.run.info
        return {"worker_pids": info.get("worker_pids", []), "trial_of_actor": self.trials}

    def step(self) -> dict[str, Any]:
        """Run the trial's next round (its first step begins the trial); the result carries the step's times for the
        sweep's timeline (:mod:`fedvsr.sweeps.timeline`)."""
        started, begin = time.time(), 0.0
        if self.pending is not None:
            config, self.pending = self.pending, None
            self._begin(config)
            begin = time.time() - started
        times = {"step_started": started, "begin_seconds": begin, "actor_pid": os.getpid()}
        if self.error is not None:
            raise self.error
        if self.replay is not None:
            return {**self.replay, "done": True, **times, "step_ended": time.time()}
        result = self._round()
        return {**result, "done": result["round"] >= self.rounds, **times, "step_ended": time.time()}

    def _round(self) -> dict[str, Any]:
        """Train and evaluate the next round; what the trial reports for it."""
        try:
            if self.spec.replicates > 1:
                agg, _ = self.run.run_round()
                if agg["round"] == self.rounds:
                    self.run.finish()  # before the last report: Tune ends a trial as soon as it reports max_t
                result = report_mean(agg, self.rounds)
            else:
                row = self.run.run_round()
                if row["round"] == self.rounds:
                    self.run.finish()
                result = report_row(row, self.rounds)
        except Exception as err:
            self._record(err)
            raise
        return result

    def _record(self, err: Exception) -> None:
        """End the run and record ``err`` in the run folder (its root cause first, then the traceback)."""
        from fedvsr.platform.cluster import root_cause
        from fedvsr.platform.replicates import is_replicate_group

        self._release(keep=False)
        if node_lost(err):  # not the trial's fault: Tune starts it again (TRIAL_RESTARTS); error.txt stays unwritten
            return
        self.out.mkdir(parents=True, exist_ok=True)
        if not (self.out / "config.yaml").is_file() and not is_replicate_group(self.out):
            write_text_atomic(self.out / "config.yaml", yaml.safe_dump(self.plan.tree, sort_keys=False))
        write_text_atomic(self.out / ERROR_FILE, root_cause(err) + "\n\n" + traceback.format_exc())

    def save_checkpoint(self, checkpoint_dir: str) -> dict[str, Any]:
        """Nothing for Tune to keep: a trial's state is its run folder, checkpointed every round."""
        return {"out": str(self.out) if self.out is not None else ""}

    def load_checkpoint(self, checkpoint: Any) -> None:
        """A restored trial resumes from its run folder's last round checkpoint (at its first ``step``)."""

    # ------------------------------------------------------------------ between trials
    def _release(self, keep: bool) -> None:
        """End this trial's run; with ``keep``, its coordinator actors stay alive for the next trial."""
        run, self.run = self.run, None
        if run is None:
            return
        kept = run.close(keep=keep)
        if keep:
            self.kept.extend(kept)

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """Tune hands this actor the next trial (``reuse_actors``): keep the actors; its experiment starts at
        its first ``step``."""
        self._release(keep=True)
        self.pending = new_config
        return True

    def cleanup(self) -> None:
        import ray

        self._release(keep=False)
        for actor in self.kept:
            ray.kill(actor)
        self.kept = []
