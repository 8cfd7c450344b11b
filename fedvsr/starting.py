"""What a command prints while a run starts (Ray's start, the built-in videos being built, a loud warning when
the workers share too few cores), used by ``fedvsr simulate``, ``train-central`` and ``sweep``."""

from __future__ import annotations

import math
import sys

from fedvsr.config import ExperimentConfig
from fedvsr.preflight import Machine, check_fits_machine, cpu_overcommit, is_local


def say_starting(cfg: ExperimentConfig, prefix: str = "fedvsr", workers: str = "") -> None:
    """What the first seconds of a run are spent on (Ray's start, the built-in videos), and a loud line when the
    workers share too few cores (``platform.oversubscribe``). First refuses what this machine cannot hold.
    ``workers``: how the workers are counted (default ``"N workers"``)."""
    p, machine = cfg.platform, Machine.this()
    check_fits_machine(cfg, machine)
    over = cpu_overcommit(cfg, machine)
    if over and p.oversubscribe:
        print(
            f"{prefix}: WARNING: platform.oversubscribe = true: {p.workers} workers x {p.cpus_per_worker:g} CPUs = "
            f"{over[0]:g} CPUs on a machine with {over[1]}; the workers share the cores, each runs slower, and "
            f"timings are not comparable with a run that fits",
            file=sys.stderr,
            flush=True,
        )
    where = (
        f"joining the Ray cluster at {p.address or '$RAY_ADDRESS'}"
        if not is_local(cfg)
        else f"starting a local Ray with {max(machine.cpus, math.ceil(p.workers * p.cpus_per_worker - 1e-9))} CPUs"
    )
    workers = workers or f"{p.workers} worker{'s' if p.workers > 1 else ''}"
    d = cfg.data  # the data are read (and checked) first, then Ray starts
    if d.source == "synthetic":
        from fedvsr.data.sources import synthetic_root
        from fedvsr.data.synthetic import MANIFEST

        root = synthetic_root(d, d.seed)
        if not (root / MANIFEST).is_file():
            print(
                f"{prefix}: building the {d.videos} built-in videos ({d.frames} frames of {d.width}x{d.height}) "
                f"in {root}, once: later runs reuse them ...",
                flush=True,
            )
    else:
        print(f"{prefix}: reading the videos of data.source = {d.source} under {d.root} ...", flush=True)
    print(f"{prefix}: {where}, then {workers} ...", flush=True)
