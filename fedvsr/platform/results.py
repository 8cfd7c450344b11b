"""Result tables in Parquet, written atomically (temp file, fsync, rename, fsync of the folder): a crash never
leaves half a file, and a file renamed into place is on disk before anything written after it."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def fsync_file(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a folder, so that the names created or renamed in it are on disk; a no-op where the system cannot
    (Windows, some network file systems)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def process_umask() -> int:
    """The process umask, read without changing it where the system tells (Linux's /proc), else set and restored."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write, durable: bool = True) -> None:
    """``write(tmp)`` a temp file beside ``path``, then rename it to ``path``. ``durable``: fsync the file before
    the rename and the folder after it (``False`` where the caller fsyncs a whole folder at once). The file gets the
    mode a plain ``open(path, "w")`` would give (0666 less the umask: group-readable with the usual 022 or 002 on a
    shared folder), not mkstemp's owner-only 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.fchmod(fd, 0o666 & ~process_umask())
    os.close(fd)
    try:
        write(tmp)
        if durable:
            fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


def write_parquet_atomic(path: str | os.PathLike, table: pa.Table) -> None:
    atomic_write(Path(path), lambda tmp: pq.write_table(table, tmp))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False)
            f.write("\n")

    atomic_write(Path(path), write)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    atomic_write(Path(path), write)


def repair_jsonl(path: str | os.PathLike) -> int:
    """Cut a last line left unfinished by a crash (no newline at its end) from a JSON-lines file, so that the next
    append starts a line of its own; returns the bytes cut."""
    path = Path(path)
    if not path.is_file():
        return 0
    data = path.read_bytes()
    cut = len(data) - (data.rfind(b"\n") + 1)
    if cut:
        with open(path, "r+b") as f:
            f.truncate(len(data) - cut)
            os.fsync(f.fileno())
    return cut


class ResultsStore:
    """``rounds.parquet`` (one row per round) and ``clients.parquet`` (one row per client-round).

    Rows are kept in memory and both files are rewritten atomically after every round. On resume from round
    ``keep_until_round``'s checkpoint, the rows are those of the tables saved in that checkpoint (``restore_from``;
    the run's own tables, for a checkpoint of the older layout that holds none), and rows of later rounds are
    discarded: they were not checkpointed."""

    TABLES = ("clients", "rounds")

    def __init__(
        self, out_dir: str | os.PathLike, keep_until_round: int = 0, restore_from: str | os.PathLike | None = None
    ) -> None:
        self.out = Path(out_dir)
        self.rounds: list[dict[str, Any]] = []
        self.clients: list[dict[str, Any]] = []
        if keep_until_round > 0:
            source = Path(restore_from) if restore_from is not None else self.out
            for name, rows in (("rounds", self.rounds), ("clients", self.clients)):
                path = source / f"{name}.parquet"
                if path.exists():
                    rows += [r for r in pq.read_table(path).to_pylist() if r["round"] <= keep_until_round]
            if self.rounds:
                self._write()  # the run's tables agree with the checkpoint from now on
        else:
            for name in self.TABLES:  # a run started over: nothing of an earlier start is kept
                (self.out / f"{name}.parquet").unlink(missing_ok=True)

    def paths(self) -> dict[str, Path]:
        """The tables' files (name -> path), for a checkpoint to hold."""
        return {f"{name}.parquet": self.out / f"{name}.parquet" for name in self.TABLES if self.rounds}

    def append(
        self, round_row: dict[str, Any], client_rows: list[dict[str, Any]], written: Callable[[str], None] | None = None
    ) -> None:
        """Add a round's rows and rewrite both tables; ``written(name)`` after each (a testing hook)."""
        self.rounds.append(round_row)
        self.clients.extend(client_rows)
        self._write(written)

    def _write(self, written: Callable[[str], None] | None = None) -> None:
        for name in self.TABLES:
            write_parquet_atomic(self.out / f"{name}.parquet", pa.Table.from_pylist(getattr(self, name)))
            if written is not None:
                written(name)


def run_summary(
    cfg,
    strategy: str,
    params: int,
    rows: list[dict[str, Any]],
    bicubic: dict[str, float],
    initial: dict[str, float],
    clients_dropped: int | None = None,
) -> dict[str, Any]:
    """The ``summary.json`` of a finished run, federated (``fedvsr simulate``: ``strategy`` = ``fl.strategy``, with
    ``clients_dropped``) or central (``strategy = "central"``, which adds its own keys after these): the model,
    its size, the final and best round of ``rows`` (those of ``rounds.parquet``; with no rounds the final values are
    the initial model's), bicubic and the initial model on the same held-out clips, the RGB metrics where they
    were measured, and the rounds' seconds. ``cfg``: the run's :class:`~fedvsr.config.ExperimentConfig`."""
    last = rows[-1] if rows else {"psnr": initial["psnr"], "ssim": initial["ssim"]}
    best = max(rows, key=lambda r: r["psnr"]) if rows else None
    summary = {
        "model": cfg.model.name,
        "preset": cfg.model.preset,
        "params": params,
        "strategy": strategy,
        "rounds": len(rows),
        "final_psnr": last["psnr"],
        "final_ssim": last["ssim"],
        "best_psnr": best["psnr"] if best else None,
        "best_round": best["round"] if best else None,
        "bicubic_psnr": bicubic["psnr"],
        "bicubic_ssim": bicubic["ssim"],
        "initial_psnr": initial["psnr"],
        "initial_ssim": initial["ssim"],
        **{f"final_{k}": last[k] for k in ("psnr_rgb", "ssim_rgb") if k in last},
        **{f"bicubic_{k}": bicubic[k] for k in ("psnr_rgb", "ssim_rgb") if k in bicubic},
        "eval_channels": cfg.eval.channels,
    }
    if clients_dropped is not None:
        summary["clients_dropped"] = clients_dropped
    summary["rounds_seconds"] = float(sum(r["seconds"] for r in rows))
    return summary
