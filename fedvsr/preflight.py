"""Checks before Ray starts: that the output folder can take the run, and that this machine can hold it.

``check_output_folder`` refuses a folder a command could not write into (a file, a path under a file, a read-only
file system, an unwritable folder, someone else's files); ``check_fits_machine`` refuses, on a local Ray, what the
machine cannot hold (the workers' CPUs unless ``platform.oversubscribe``, the model's copies, the built-in videos
against memory and disk). Each failure is a :class:`~fedvsr.config.ConfigError` naming the numbers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fedvsr.config import ConfigError, ExperimentConfig

# ----------------------------------------------------------------------------------------- the output folder


def check_output_folder(
    out: str | os.PathLike, *, resume: bool = False, ours: tuple[str, ...] | None = None, what: str = "run"
) -> None:
    """Refuse an output folder a command could not write into, before Ray starts: a file, a path under a file, a
    read-only file system, an immutable or unwritable folder (found by creating, then removing, a probe file, and
    the missing folders on the way to it). With ``ours`` (the files that mark a folder of ours, e.g.
    ``("config.yaml",)``) also what the folder holds: a new ``what`` needs a new or empty folder (one holding
    ``ours`` is resumed with --resume, one holding other files is someone else's), ``resume`` one holding ``ours``."""
    path = Path(out)
    shown = repr(str(out))
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {shown} is a file, not a folder; choose a new or empty folder")
    if ours is not None:
        _check_holds(path, shown, resume, ours, what)
    if path.is_dir():
        _probe_write(path, shown)
        return
    above = path.absolute().parent
    while not above.exists() and above != above.parent:
        above = above.parent
    if not above.is_dir():
        raise ConfigError(f"--out {shown} is under {str(above)!r}, which is a file, not a folder")
    created: list[Path] = []
    try:
        for folder in reversed([path.absolute(), *path.absolute().parents]):
            if not folder.exists():
                folder.mkdir()
                created.append(folder)
        _probe_write(path, shown)
    except OSError as err:
        raise ConfigError(f"--out {shown} cannot be created: {err.strerror} ({err.filename})") from None
    finally:
        for folder in reversed(created):  # leave nothing: the command creates it when it starts writing
            folder.rmdir()


def _check_holds(path: Path, shown: str, resume: bool, ours: tuple[str, ...], what: str) -> None:
    mine = path.is_dir() and any((path / name).exists() for name in ours)
    if resume and not mine:
        raise ConfigError(f"--resume: {shown} holds no {' or '.join(ours)} of an earlier {what}")
    if resume or not path.is_dir():
        return
    if mine:
        raise ConfigError(
            f"output folder {shown} already holds a {what}; pass --resume to continue it or choose another --out"
        )
    try:
        entries = sorted(e.name + ("/" if e.is_dir() else "") for e in path.iterdir())
    except OSError as err:
        raise ConfigError(f"--out {shown} cannot be read: {err.strerror}") from None
    if entries:
        listed = ", ".join(entries[:5]) + (f", ... ({len(entries)} entries)" if len(entries) > 5 else "")
        raise ConfigError(
            f"--out {shown} holds other files ({listed}) and no fedvsr {what}; choose a new or empty folder"
        )


def _probe_write(folder: Path, shown: str) -> None:
    import tempfile

    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".fedvsr-write-probe-")
    except OSError as err:
        raise ConfigError(
            f"--out {shown} is not writable: {err.strerror} (a read-only file system, an immutable "
            f"folder or its permissions)"
        ) from None
    os.close(fd)
    os.unlink(name)


# ------------------------------------------------------------------------------- what this machine can hold

#: rendering a built-in video peaks at up to this many bytes of memory per byte of its frames: float64 scenes and
#: their temporaries (tracemalloc of fedvsr.data.synthetic.synth_video at 16 x 256 x 256: 24 to 64 by content class)
RENDER_BYTES_PER_BYTE = 64


@dataclass(frozen=True)
class Machine:
    """What the machine that starts a local Ray offers: the CPUs this process may use and its memory in bytes;
    ``disk_free`` (bytes) stands in for the free space under the data folder (None: measure it)."""

    cpus: int
    memory: int
    disk_free: int | None = None

    @staticmethod
    def this() -> Machine:
        """This machine: its CPU affinity (what containers and taskset leave), its physical memory capped by a
        cgroup limit."""
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
            try:
                memory = min(memory, int(Path(limit).read_text().strip()))
            except (OSError, ValueError):  # absent, or "max" (no limit)
                pass
        return Machine(cpus=cpus, memory=memory)


def is_local(cfg: ExperimentConfig) -> bool:
    """Whether ``cfg`` starts a local Ray (no ``platform.address``, not inside ``ray job submit``)."""
    return not (cfg.platform.address or os.environ.get("RAY_ADDRESS"))


def cpu_overcommit(cfg: ExperimentConfig, machine: Machine | None = None) -> tuple[float, int] | None:
    """``(CPUs the workers reserve, CPUs of the machine)`` when a local run asks for more than the machine has;
    None when it fits or runs on a cluster."""
    if not is_local(cfg):
        return None
    machine = machine or Machine.this()
    need = cfg.platform.workers * cfg.platform.cpus_per_worker
    return (need, machine.cpus) if need > machine.cpus + 1e-9 else None


def check_fits_machine(cfg: ExperimentConfig, machine: Machine | None = None) -> None:
    """On a local Ray, refuse before it starts what this machine cannot hold: the workers' CPUs (unless
    ``platform.oversubscribe``), and for the built-in videos one video's rendering and one client's decoded videos
    against its memory, and all of them against the free disk where they are stored (unless built already)."""
    if not is_local(cfg):
        return
    machine = machine or Machine.this()
    over = cpu_overcommit(cfg, machine)
    p = cfg.platform
    if over and not p.oversubscribe:
        raise ConfigError(
            f"platform.workers = {p.workers} x platform.cpus_per_worker = {p.cpus_per_worker:g} needs {over[0]:g} "
            f"CPUs but this machine has {over[1]}; allowed here: platform.workers <= "
            f"{max(int(over[1] / p.cpus_per_worker + 1e-9), 0)}, or platform.oversubscribe = true to share the "
            f"cores (each worker then runs slower), or platform.address of a cluster"
        )
    _check_model_fits(cfg, machine)
    if cfg.data.source == "synthetic":
        _check_synthetic_fits(cfg, machine)


def _check_model_fits(cfg: ExperimentConfig, machine: Machine) -> None:
    """The model's float32 parameters: each worker holds at least 4 copies (weights, gradients, Adam's two moments;
    SGD's momentum-free step fewer, its update more), the coordinator at least 3 (weights, a float64 sum)."""
    import torch

    from fedvsr.models.registry import build_model

    with torch.device("meta"):
        params = sum(p.numel() for p in build_model(cfg.model.name, cfg.model.preset, cfg.model.options).parameters())
    need = params * 4 * (4 * cfg.platform.workers + 3)
    if need > machine.memory:
        raise ConfigError(
            f"model.options = {cfg.model.options!r} gives {cfg.model.name}/{cfg.model.preset} {params:,} parameters "
            f"({_size(params * 4)} as float32); {cfg.platform.workers} workers holding at least 4 copies each "
            f"(weights, gradients, Adam's two moments) and the coordinator 3 need {_size(need)}, more than this "
            f"machine's {_size(machine.memory)} of memory; allowed here: a smaller model (fewer channels or blocks)"
        )


def _size(n: float) -> str:
    """``"1.5 GiB"``: a byte count in binary units."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _check_synthetic_fits(cfg: ExperimentConfig, machine: Machine) -> None:
    d, mem = cfg.data, machine.memory
    video = d.frames * d.height * d.width * 3
    shape = f"data.frames x data.height x data.width x 3 bytes = {d.frames} x {d.height} x {d.width} x 3"
    if video * RENDER_BYTES_PER_BYTE > mem:
        raise ConfigError(
            f"the built-in videos are {shape} = {_size(video)} each, and rendering one takes up to "
            f"{RENDER_BYTES_PER_BYTE} times that ({_size(video * RENDER_BYTES_PER_BYTE)}, float64 scenes), more than "
            f"this machine's {_size(mem)} of memory; allowed here: data.frames x data.height x data.width <= "
            f"{mem // (3 * RENDER_BYTES_PER_BYTE):,}"
        )
    held = cfg.eval.holdout if cfg.eval.source == "holdout" else 0
    per_client = video * (1 + 1 / d.scale**2) * (d.videos - held) / cfg.fl.clients  # HR and LR frames, decoded
    if per_client > mem:
        most = held + cfg.fl.clients * int(mem / (video * (1 + 1 / d.scale**2)))
        raise ConfigError(
            f"data.videos = {d.videos} built-in videos of {_size(video)} ({shape}), less eval.holdout = {held}, "
            f"over fl.clients = {cfg.fl.clients} give each client {_size(per_client)} of decoded frames (HR and LR), "
            f"which a worker holds while it trains the client: more than this machine's {_size(mem)} of memory; "
            f"allowed here: data.videos <= {most:,}, or smaller videos, or more clients"
        )
    from fedvsr.data.sources import synthetic_root
    from fedvsr.data.synthetic import MANIFEST

    root = synthetic_root(d, d.seed)
    if (root / MANIFEST).is_file():
        return  # built already: nothing more to store
    where = root
    while not where.exists() and where != where.parent:
        where = where.parent
    free = machine.disk_free if machine.disk_free is not None else _free_bytes(where)
    if free is not None and d.videos * video > free:
        raise ConfigError(
            f"data.videos = {d.videos} built-in videos of {_size(video)} ({shape}) are {_size(d.videos * video)} "
            f"of frames to store under {str(where)!r} (lossless files, and decoded copies in the cache), more than "
            f"the {_size(free)} free there; allowed here: data.videos <= {free // video:,}, or data.root on a "
            f"larger disk"
        )


def _free_bytes(path: Path) -> int | None:
    import shutil

    try:
        return shutil.disk_usage(path).free
    except OSError:  # not a folder we can look at: the output-folder check or the build says why
        return None
