"""Sweep and run results as rows: one per trial or hand-run experiment, queried by ``fedvsr best``.

Every row is derived from a run folder (the folder ``fedvsr simulate`` writes, which is also what each
sweep trial writes under ``<sweep>/runs/<trial>``): its ``config.yaml`` flattened to dotted columns
(``fl.mu``, ``model.options.group_size``), its ``rounds.parquet`` (final and best PSNR / SSIM, the last
train loss, rounds run), ``summary.json`` and, for a sweep trial, ``status.json`` (finished, stopped by
ASHA, or error with the message) written by the sweep driver. So rows of a sweep that was killed, of a
resumed sweep, of a later sweep and of hand-run experiments compare in one table, which Ray's own
``ResultGrid`` (one experiment at a time) cannot do. A sweep trial's row also names the Ray node that ran it
(``node_ip``, ``node_id``, from the run folder's ``node.json``); a hand-run experiment leaves them empty.
``kind`` is ``central`` for a ``fedvsr train-central`` run (its config's ``fl.strategy`` is not used) and
``federated`` otherwise.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from fedvsr.platform.results import write_json_atomic, write_parquet_atomic

#: metric names of ``fedvsr best --metric`` -> (row column, default mode)
METRIC_COLUMNS = {"psnr": ("final_psnr", "max"), "ssim": ("final_ssim", "max"), "loss": ("final_loss", "min")}
STATUS_FILE = "status.json"
ERROR_FILE = "error.txt"
SWEEP_FILE = "sweep.yaml"
TRIALS_FILE = "trials.parquet"
#: the Ray node that ran a sweep trial (its coordinator; the trial's workers share its placement group)
NODE_FILE = "node.json"
#: a random id written by the sweep driver; a trial that cannot read the same id there is not seeing the folder
SWEEP_ID_FILE = "sweep-id"
RESULT_COLUMNS = ["trial", "sweep", "status", "error", "rounds", "rounds_run", "final_psnr", "final_ssim",
                  "final_loss", "best_psnr", "best_ssim", "best_round", "initial_psnr", "bicubic_psnr", "seconds",
                  "out", "node_ip", "node_id", "kind"]


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"fl": {"mu": 0.1}}`` -> ``{"fl.mu": 0.1}`` (empty mappings are dropped)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file() and not (path / SWEEP_FILE).is_file()


def is_sweep_dir(path: Path) -> bool:
    return (path / SWEEP_FILE).is_file()


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def run_row(run_dir: str | os.PathLike, trial: str | None = None, sweep: str = "") -> dict[str, Any]:
    """The result row of one run folder (see the module docstring)."""
    d = Path(run_dir)
    config = yaml.safe_load((d / "config.yaml").read_text()) or {}
    rounds_total = int(config.get("fl", {}).get("rounds", 0))
    rows = pq.read_table(d / "rounds.parquet").to_pylist() if (d / "rounds.parquet").is_file() else []
    summary = json.loads((d / "summary.json").read_text()) if (d / "summary.json").is_file() else {}
    status_doc = json.loads((d / STATUS_FILE).read_text()) if (d / STATUS_FILE).is_file() else {}
    error = (d / ERROR_FILE).read_text().strip() if (d / ERROR_FILE).is_file() else ""
    node = json.loads((d / NODE_FILE).read_text()) if (d / NODE_FILE).is_file() else {}
    last = rows[-1] if rows else {}
    best = max(rows, key=lambda r: r["psnr"]) if rows else {}
    if status_doc.get("status"):
        status = status_doc["status"]
    elif error:
        status = "error"
    elif summary and len(rows) >= rounds_total:
        status = "finished"
    else:
        status = "incomplete"
    row = {
        "trial": trial or d.name,
        "sweep": sweep,
        "status": status,
        "error": status_doc.get("error") or error,
        "rounds": rounds_total,
        "rounds_run": len(rows),
        "final_psnr": _finite(last.get("psnr")),
        "final_ssim": _finite(last.get("ssim")),
        "final_loss": _finite(last.get("train_loss")),
        "best_psnr": _finite(best.get("psnr")),
        "best_ssim": _finite(max((r["ssim"] for r in rows), default=None)),
        "best_round": best.get("round"),
        "initial_psnr": _finite(summary.get("initial_psnr")),
        "bicubic_psnr": _finite(summary.get("bicubic_psnr")),
        "seconds": float(sum(r.get("seconds", 0.0) for r in rows)),
        "out": str(d.resolve()),
        "node_ip": node.get("node_ip"),
        "node_id": node.get("node_id"),
        # `fedvsr train-central` writes strategy "central" in its summary; its config's fl.strategy is unused
        "kind": "central" if summary.get("strategy") == "central" else "federated",
    }
    row.update(flatten(config))
    return row


def sweep_rows(sweep_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of every trial of a sweep folder, in trial order."""
    d = Path(sweep_dir)
    name = (yaml.safe_load((d / SWEEP_FILE).read_text()) or {}).get("name", d.name)
    runs = d / "runs"
    if not runs.is_dir():
        return []
    return [run_row(r, trial=r.name, sweep=name) for r in sorted(runs.iterdir()) if (r / "config.yaml").is_file()]


def collect_rows(paths: list[str | os.PathLike]) -> list[dict[str, Any]]:
    """Rows of sweep folders, run folders, and folders holding either (searched recursively)."""
    rows: list[dict[str, Any]] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise FileNotFoundError(f"{str(p)!r} is not a folder (expected a sweep folder or a run folder)")
        found = _find(p)
        if not found:
            raise FileNotFoundError(f"{str(p)!r} holds no sweep (sweep.yaml) and no run (config.yaml)")
        for kind, d in found:
            rows += sweep_rows(d) if kind == "sweep" else [run_row(d)]
    return rows


def _find(p: Path) -> list[tuple[str, Path]]:
    if is_sweep_dir(p):
        return [("sweep", p)]
    if is_run_dir(p):
        return [("run", p)]
    found: list[tuple[str, Path]] = []
    for child in sorted(c for c in p.iterdir() if c.is_dir()):
        found += _find(child)
    return found


def to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows -> a Parquet-ready table; a column mixing numbers and strings (a swept choice) becomes strings."""
    columns = list(RESULT_COLUMNS) + sorted({k for r in rows for k in r} - set(RESULT_COLUMNS))
    data = {}
    for c in columns:
        values = [r.get(c) for r in rows]
        kinds = {type(v) for v in values if v is not None}
        if kinds <= {int, float} and float in kinds:
            values = [None if v is None else float(v) for v in values]
        elif len(kinds) > 1:
            values = [None if v is None else str(v) for v in values]
        elif kinds == {list} or kinds == {dict}:
            values = [None if v is None else json.dumps(v) for v in values]
        data[c] = values
    return pa.table(data)


def write_trials_table(sweep_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Rewrite ``trials.parquet`` of a sweep from its run folders (atomically); returns the rows."""
    rows = sweep_rows(sweep_dir)
    if rows:
        write_parquet_atomic(Path(sweep_dir) / TRIALS_FILE, to_table(rows))
    return rows


def mark_status(run_dir: str | os.PathLike, status: str, error: str = "") -> None:
    write_json_atomic(Path(run_dir) / STATUS_FILE, {"status": status, "error": error})


# ----------------------------------------------------------------------------------------- queries


def parse_where(texts: list[str]) -> list[tuple[str, Any]]:
    from fedvsr.config import parse_override

    return [parse_override(t) for t in texts]


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b or str(a) == str(b)


def rank(rows: list[dict[str, Any]], metric: str = "psnr", mode: str | None = None,
         where: list[tuple[str, Any]] | None = None, include_stopped: bool = False) -> tuple[list[dict], str, str]:
    """The rows that may win (finished, or also stopped ones), filtered by ``where``, best first.

    ``metric`` is psnr / ssim / loss (the final value) or any numeric column (``best_psnr``). Returns the
    ranked rows, the column ranked by and the mode."""
    column, default_mode = METRIC_COLUMNS.get(metric, (metric, "max"))
    mode = mode or default_mode
    if mode not in ("max", "min"):
        raise ValueError(f"--mode {mode!r} is not allowed; expected max or min")
    if rows and column not in {k for r in rows for k in r}:
        raise ValueError(f"--metric {metric!r}: no column {column!r}; use psnr, ssim, loss or a numeric column")
    statuses = {"finished", "stopped"} if include_stopped else {"finished"}
    keep = []
    for r in rows:
        if r.get("status") not in statuses or _finite(r.get(column)) is None:
            continue
        if all(_equal(r.get(k), v) for k, v in where or []):
            keep.append(r)
    keep.sort(key=lambda r: r[column], reverse=(mode == "max"))
    return keep, column, mode


def winner_yaml(row: dict[str, Any], column: str, mode: str, considered: int) -> str:
    """The winning run's ``config.yaml`` text, headed by a comment naming the trial and its metric."""
    text = (Path(row["out"]) / "config.yaml").read_text()
    where = f"sweep {row['sweep']!r}, " if row.get("sweep") else ""
    head = (f"# fedvsr best: {where}trial {row['trial']} ({row['out']}): {column} = {row[column]:.4f} "
            f"({mode} over {considered} runs, {row['rounds_run']} rounds)\n")
    return head + text
