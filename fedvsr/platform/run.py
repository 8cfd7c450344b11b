"""The driver side of one experiment: prepare the output folder, start Ray, run the coordinator."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
import yaml
from ray.util.placement_group import PlacementGroup

from fedvsr.config import ConfigError, ExperimentConfig, config_from_dict
from fedvsr.platform.cluster import join_cluster
from fedvsr.platform.coordinator import Coordinator, on_this_node
from fedvsr.platform.local_ray import start_local_ray
from fedvsr.platform.ray_console import divert_ray_output, session_log
from fedvsr.platform.results import write_text_atomic


def run_config(out: Path, cfg: ExperimentConfig | None, resume: bool) -> ExperimentConfig:
    """The config of the run in ``out``: on resume the one saved there (``cfg`` is ignored); else ``cfg``,
    after checking that ``out`` holds no other run."""
    saved = out / "config.yaml"
    if resume:
        if not saved.exists():
            raise ConfigError(f"--resume: {str(out)!r} holds no config.yaml of an earlier run")
        return config_from_dict(yaml.safe_load(saved.read_text()))
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
    if p.gpus_per_worker > 0:
        import torch

        have = torch.cuda.device_count()
        if have == 0:
            raise ConfigError(
                f"platform.gpus_per_worker = {p.gpus_per_worker} but this machine has no CUDA GPU; "
                "allowed here: 0 (or give platform.address of a cluster with GPUs)"
            )
    need = p.workers * p.cpus_per_worker
    # loopback only, a token of this process, gone with it (fedvsr.platform.local_ray)
    start_local_ray(num_cpus=max(os.cpu_count() or 1, int(need + 0.999)), **common)
    divert_ray_output(log or session_log())
    return True


def check_local_resources(cfg: ExperimentConfig) -> None:
    """On a local Ray (no cluster to scale up), refuse a worker pool that can never be placed, instead of
    waiting for it forever."""
    p = cfg.platform
    have = ray.cluster_resources()
    asks = (("CPU", p.cpus_per_worker, "cpus_per_worker"), ("GPU", p.gpus_per_worker, "gpus_per_worker"))
    for key, per, name in asks:
        need = p.workers * per
        if per > 0 and need > have.get(key, 0.0) + 1e-9:
            raise ConfigError(
                f"platform.workers = {p.workers} x platform.{name} = {per} needs {need:g} {key}s but this Ray has "
                f"{have.get(key, 0.0):g}; allowed here: platform.workers <= {int(have.get(key, 0.0) / per + 1e-9)} "
                f"(or give platform.address of a cluster with more)"
            )


def run_experiment(cfg: ExperimentConfig | None, out_dir: str | os.PathLike, resume: bool = False,
                   on_round: Callable[[dict[str, Any]], None] | None = None,
                   on_start: Callable[[dict[str, Any]], None] | None = None,
                   placement_group: PlacementGroup | None = None,
                   on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run one federated experiment to the end, or with ``resume`` continue the one in ``out_dir`` from its
    checkpoint under the config saved there (``cfg`` may then be None); returns the summary.

    ``on_round(row)`` after each round; ``on_progress({"round", "progress": (done, total)})`` each time a
    client of the round finishes. ``placement_group``: reserve the client workers' resources there (a sweep
    trial's group). ``$FEDVSR_FAULT`` (a testing hook, see :meth:`ClientWorker._maybe_fail`) reaches the workers."""
    out = Path(out_dir).resolve()
    cfg = run_config(out, cfg, resume)
    # before the folder is written: an unreachable cluster leaves nothing behind
    started = init_ray(cfg, log=out / "ray.log")
    if placement_group is None and not (cfg.platform.address or os.environ.get("RAY_ADDRESS")):
        check_local_resources(cfg)
    if not resume:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "config.yaml", cfg.to_yaml())
    coordinator = None
    try:
        coordinator = ray.remote(Coordinator).options(num_cpus=0, scheduling_strategy=on_this_node()).remote(
            cfg.to_dict(), str(out), resume, placement_group, os.environ.get("FEDVSR_FAULT", "")
        )
        info = ray.get(coordinator.info.remote())
        if on_start:
            on_start(info)
        for t in range(info["start_round"], cfg.fl.rounds + 1):
            for ref in coordinator.run_round.options(num_returns="streaming").remote(t):
                item = ray.get(ref)
                if "row" in item:
                    if on_round:
                        on_round(item["row"])
                elif on_progress:
                    on_progress(item)
        return ray.get(coordinator.finish.remote())
    finally:
        if coordinator is not None:
            ray.kill(coordinator)
        if started:
            ray.shutdown()
