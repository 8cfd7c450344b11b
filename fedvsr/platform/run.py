"""The driver side of one experiment: prepare the output folder, start Ray, run the coordinator."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from ray.util.placement_group import PlacementGroup

from fedvsr.config import ConfigError, ExperimentConfig, load_config
from fedvsr.platform.cluster import join_cluster
from fedvsr.platform.coordinator import Coordinator, on_this_node
from fedvsr.platform.data import check_data
from fedvsr.platform.environment import actor_options, add_workers, write_environment
from fedvsr.platform.errors import RunFailed
from fedvsr.platform.local_ray import start_local_ray
from fedvsr.platform.ray_console import divert_ray_output, session_log
from fedvsr.platform.results import write_text_atomic
from fedvsr.preflight import Machine, check_fits_machine, check_output_folder
from fedvsr.tracking import open_events


def _failure(why: str, out: Path, t: int) -> str:
    kept = f"the checkpoint of round {t - 1} is kept" if t > 1 else "no round had completed"
    return f"{why}; each client's reason is in {out / 'clients.parquet'}, {kept}"


def run_config(out: Path, cfg: ExperimentConfig | None, resume: bool) -> ExperimentConfig:
    """The config of the run in ``out``: on resume the one saved there (``cfg`` is ignored); else ``cfg``,
    after checking that ``out`` is a folder it can write (:func:`check_output_folder`) and holds no other run."""
    check_output_folder(out, resume=resume)
    saved = out / "config.yaml"
    if resume:
        if not saved.exists():
            raise ConfigError(f"--resume: {str(out)!r} holds no config.yaml of an earlier run")
        return load_config(saved)
    if saved.exists():
        raise ConfigError(
            f"output folder {str(out)!r} already holds a run; pass --resume to continue it or choose another --out"
        )
    return cfg


def init_ray(cfg: ExperimentConfig, log: str | os.PathLike | None = None) -> bool:
    """Start or join Ray for this experiment (``platform.address``, else ``$RAY_ADDRESS``, else a local Ray on
    127.0.0.1 with token authentication: :func:`~fedvsr.platform.local_ray.start_local_ray`); returns True when this
    call started or joined it. Ray's messages of events fedvsr handles and its tracebacks then go to ``log`` (default:
    ``fedvsr-console.log`` in Ray's session logs), not to the console (:mod:`fedvsr.platform.ray_console`)."""
    if ray.is_initialized():
        return False
    p = cfg.platform
    common = {"include_dashboard": False, "logging_level": "ERROR", "log_to_driver": True}
    # platform.address, else the cluster of the `ray job submit` that runs this command (Ray sets RAY_ADDRESS
    # for its drivers, and a local ray.init would then refuse to start)
    address = p.address or os.environ.get("RAY_ADDRESS", "")
    if address:
        join_cluster(address, **common)
        divert_ray_output(log or session_log())
        return True
    if p.gpus_per_worker == "auto" or p.gpus_per_worker > 0:
        import torch

        have = torch.cuda.device_count()
        if have == 0:
            raise ConfigError(
                f"platform.gpus_per_worker = {p.gpus_per_worker} but this machine has no CUDA GPU; "
                "allowed here: 0 (or give platform.address of a cluster with GPUs)"
            )
    machine = Machine.this()
    check_fits_machine(cfg, machine)  # the workers' CPUs (unless platform.oversubscribe), the built-in videos
    # loopback only, a token of this process, gone with it (fedvsr.platform.local_ray)
    start_local_ray(num_cpus=max(machine.cpus, math.ceil(p.workers * p.cpus_per_worker - 1e-9)), **common)
    divert_ray_output(log or session_log())
    return True


def check_local_resources(cfg: ExperimentConfig) -> None:
    """On a local Ray (no cluster to scale up), refuse a worker pool that can never be placed, instead of
    waiting for it forever."""
    p = cfg.platform
    have = ray.cluster_resources()
    asks = (("CPU", p.cpus_per_worker, "cpus_per_worker"), ("GPU", p.gpus_per_worker, "gpus_per_worker"))
    for key, per, name in asks:
        if per == "auto":  # packed to fit by the coordinator (fedvsr.platform.gpus)
            continue
        need = p.workers * per
        if per > 0 and need > have.get(key, 0.0) + 1e-9:
            raise ConfigError(
                f"platform.workers = {p.workers} x platform.{name} = {per} needs {need:g} {key}s but this Ray has "
                f"{have.get(key, 0.0):g}; allowed here: platform.workers <= {int(have.get(key, 0.0) / per + 1e-9)} "
                f"(or give platform.address of a cluster with more)"
            )


class Experiment:
    """The driver's handle on one run: its coordinator actor, driven one round at a time.

    Ray must be running (:func:`init_ray`). A new run writes ``config.yaml`` into ``out`` first; with ``resume``
    the coordinator continues from the checkpoint there. ``share`` scales the Ray resources each client worker
    reserves (replicates stepped in lockstep share one set of CPUs: :mod:`fedvsr.platform.replicates`).

    ``coordinator``: a live coordinator actor of an earlier run (:meth:`close` with ``keep``) to run this one with
    its workers, configured for this experiment instead of started (a sweep's trials, one after another in the
    same placement group, with the same ``share``). ``alone``: False when other runs' workers share its GPUs
    (replicates): after a CUDA out-of-memory error its pool then shrinks within its own reservation
    (:meth:`~fedvsr.platform.coordinator.Coordinator.configure`)."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        out: Path,
        resume: bool = False,
        placement_group: PlacementGroup | None = None,
        share: float = 1.0,
        coordinator: Any = None,
        alone: bool = True,
    ) -> None:
        self.cfg, self.out = cfg, out
        if not resume:
            out.mkdir(parents=True, exist_ok=True)
            write_text_atomic(out / "config.yaml", cfg.to_yaml())
        environment = write_environment(out, cfg.platform.kernels, resume)  # what the run computes with
        # a kept coordinator was started for the same placement group and share (its workers' resources)
        self.coordinator = (
            coordinator if coordinator is not None else _start_coordinator(cfg, placement_group, share, alone)
        )
        self.reused = coordinator is not None
        try:
            ray.get(self.coordinator.configure.remote(cfg, str(out), resume, os.environ.get("FEDVSR_FAULT", "")))
            self.info: dict[str, Any] = ray.get(self.coordinator.info.remote())
            add_workers(environment, self.info["environments"])
        except BaseException:
            self.close()
            raise
        self.next_round: int = self.info["start_round"]
        self.events = open_events(out, self.next_round)  # TensorBoard, from the Parquet tables (fedvsr.tracking)

    @property
    def done(self) -> bool:
        return self.next_round > self.cfg.fl.rounds

    def run_round(self, on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Train and evaluate the next round; returns its row of ``rounds.parquet``. ``on_progress({"round",
        "progress": (done, total)})`` each time one of its clients finishes."""
        t, row, failed = self.next_round, {}, ""
        for ref in self.coordinator.run_round.options(num_returns="streaming").remote(t):
            item = ray.get(ref)
            if "row" in item:
                row, failed = item["row"], item.get("failed", "")
            elif on_progress:
                on_progress(item)
        self.events.round(row)
        if failed:  # too few clients trained (fl.min_clients): stop, keeping what was done
            raise RunFailed(_failure(failed, self.out, t), row)
        self.next_round += 1
        return row

    def finish(self) -> dict[str, Any]:
        """Write the final model and ``summary.json``; returns the summary."""
        return ray.get(self.coordinator.finish.remote())

    def close(self, keep: bool = False) -> list[Any]:
        """End the run; with ``keep``, its coordinator and workers stay alive for the next run and are returned
        (``[coordinator]``), else they are killed (``[]``)."""
        if hasattr(self, "events"):
            self.events.close()
        if keep:
            return [self.coordinator]
        ray.kill(self.coordinator)
        return []


def _start_coordinator(
    cfg: ExperimentConfig, placement_group: PlacementGroup | None, share: float, alone: bool = True
) -> Any:
    """A new coordinator actor on this node (where the output folder is); it starts its workers when configured."""
    return (
        ray.remote(Coordinator)
        .options(num_cpus=0, scheduling_strategy=on_this_node(), **actor_options(cfg.platform.kernels))
        .remote(placement_group, share, alone)
    )


def start_ray(cfg: ExperimentConfig, placement_group: PlacementGroup | None = None, log: Path | None = None) -> bool:
    """Start or join Ray for ``cfg`` (:func:`init_ray`, Ray's own messages to ``log``); on a local Ray, refuse a
    worker pool it can never place. Returns whether this call started Ray."""
    started = init_ray(cfg, log=log)
    try:
        if placement_group is None and not (cfg.platform.address or os.environ.get("RAY_ADDRESS")):
            check_local_resources(cfg)
    except BaseException:
        if started:
            ray.shutdown()
        raise
    return started


def run_experiment(
    cfg: ExperimentConfig | None,
    out_dir: str | os.PathLike,
    resume: bool = False,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    on_start: Callable[[dict[str, Any]], None] | None = None,
    placement_group: PlacementGroup | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run one federated experiment to the end, or with ``resume`` continue the one in ``out_dir`` from its
    checkpoint under the config saved there (``cfg`` may then be None); returns the summary.

    ``on_round(row)`` after each round; ``on_progress({"round", "progress": (done, total)})`` each time a
    client of the round finishes. ``placement_group``: reserve the client workers' resources there (a sweep
    trial's group). ``$FEDVSR_FAULT`` (a testing hook, see :meth:`ClientWorker._maybe_fail`) reaches the workers."""
    out = Path(out_dir).resolve()
    cfg = run_config(out, cfg, resume)
    check_data(cfg, out)  # every video probed (and cached) before Ray starts: unusable data stops here
    # before the folder is written: an unreachable cluster leaves nothing behind
    started = start_ray(cfg, placement_group, log=out / "ray.log")
    run = None
    try:
        run = Experiment(cfg, out, resume, placement_group)
        if on_start:
            on_start(run.info)
        while not run.done:
            try:
                row = run.run_round(on_progress)
            except RunFailed as err:
                if on_round and err.row:  # the failed round is recorded: show it too
                    on_round(err.row)
                raise
            if on_round:
                on_round(row)
        return run.finish()
    finally:
        if run is not None:
            run.close()
        if started:
            ray.shutdown()
