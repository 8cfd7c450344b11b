"""Sweep and run results as rows (one per run), queried by ``fedvsr best``; grouped into points by
:mod:`fedvsr.sweeps.points`.

Every row is derived from a run folder (the folder ``fedvsr simulate`` writes, which is also what each
sweep trial writes under ``<sweep>/runs/<trial>``): its ``config.yaml`` flattened to dotted columns
(``fl.mu``, ``model.options.group_size``), its ``rounds.parquet`` (final and best PSNR / SSIM, the last
train loss, rounds run), ``summary.json`` and, for a sweep trial, ``status.json`` (finished, stopped by
ASHA, or error with the message) written by the sweep driver. So rows of a sweep that was killed, of a
resumed sweep, of a later sweep and of hand-run experiments compare in one table, which Ray's own
``ResultGrid`` (one experiment at a time) cannot do. A sweep trial's row also names the Ray node that ran it
(``node_ip``, ``node_id``, from the run folder's ``node.json``); a hand-run experiment leaves them empty.
``kind`` is ``central`` for a ``fedvsr train-central`` run (its config's ``fl.strategy`` is not used) and
``federated`` otherwise. A config key that cannot change a run's numbers (``fl.mu`` of a FedVSR run:
:func:`fedvsr.config.key_applies`) is left empty, so a query on it matches only the runs it applies to.
``gain_db`` is the final PSNR less bicubic's on the same clips.

Replicates: a replicate group folder (``fedvsr simulate --replicates N``, or a sweep trial of a spec with
``replicates: N``) holds ``replicates.json`` and one run folder per replicate (``rep-0``, ``rep-1``, ...);
each replicate is a row (``replicate``, ``group``), and the group's ``status.json`` / ``error.txt`` /
``node.json`` stand for its replicates. A *point* is a set of rows whose configs are equal apart from the
seeds (``seed``, ``data.seed``) and keys that cannot change numbers (``platform.*``, the data caches): a
replicate group, or hand-run runs under several seeds. Points are ranked by their mean over replicates,
with its 95% interval, and compared with the top paired on the seed pair (``data.seed``, ``seed``)
(:func:`fedvsr.stats.tie_set`): the points not distinguishable from the top are its ties.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from fedvsr.config import ConfigError, key_applies
from fedvsr.platform.results import write_json_atomic, write_parquet_atomic

#: metric names of ``fedvsr best --metric`` -> (row column, default mode)
METRIC_COLUMNS = {"psnr": ("final_psnr", "max"), "ssim": ("final_ssim", "max"), "loss": ("final_loss", "min")}
STATUS_FILE = "status.json"
ERROR_FILE = "error.txt"
SWEEP_FILE = "sweep.yaml"
TRIALS_FILE = "trials.parquet"
#: the Ray node that ran a sweep trial (its coordinator; the trial's workers share its placement group)
NODE_FILE = "node.json"
#: marks a replicate group folder: {"replicates": N, "seeds": [...], "data_seeds": [...], "vary_data": ...}
REPLICATES_FILE = "replicates.json"
REPLICATE_DIR = re.compile(r"rep-(\d+)")
RESULT_COLUMNS = [
    "trial",
    "sweep",
    "sweep_dir",
    "group",
    "replicate",
    "status",
    "error",
    "rounds",
    "rounds_run",
    "final_psnr",
    "final_ssim",
    "final_loss",
    "best_psnr",
    "best_ssim",
    "best_round",
    "initial_psnr",
    "bicubic_psnr",
    "gain_db",
    "seconds",
    "out",
    "node_ip",
    "node_id",
    "restarts",
    "node_ids",
    "kind",
]
#: the seed pair replicates are paired on: the same pair means the same data, split, sampling and initial model
SEED_KEYS = ("data.seed", "seed")
#: config keys that cannot change a run's numbers (where it runs, where caches live)
NEUTRAL_KEYS = ("data.root", "data.lr_cache", "data.hr_cache_mb")


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


def is_group_dir(path: Path) -> bool:
    return (path / REPLICATES_FILE).is_file()


def finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _text(path: Path) -> str:
    return path.read_text().strip() if path.is_file() else ""


def run_row(
    run_dir: str | os.PathLike,
    trial: str | None = None,
    sweep: str = "",
    sweep_dir: str = "",
    group: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """The result row of one run folder (see the module docstring); ``group``: the replicate group folder
    holding it, whose status, error and node stand for the run's when the run has none of its own."""
    d = Path(run_dir)
    g = Path(group) if group else None
    config = yaml.safe_load((d / "config.yaml").read_text()) or {}
    rounds_total = int(config.get("fl", {}).get("rounds", 0))
    rows = pq.read_table(d / "rounds.parquet").to_pylist() if (d / "rounds.parquet").is_file() else []
    summary = _json(d / "summary.json")
    status_doc = _json(d / STATUS_FILE) or (_json(g / STATUS_FILE) if g else {})
    error = _text(d / ERROR_FILE) or (_text(g / ERROR_FILE) if g else "")
    node = _json(d / NODE_FILE) or (_json(g / NODE_FILE) if g else {})
    starts = (node.get("starts") or [node]) if node else []
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
    final, bicubic = finite(last.get("psnr")), finite(summary.get("bicubic_psnr"))
    replicate = REPLICATE_DIR.fullmatch(d.name) if g else None
    row = {
        "trial": trial or d.name,
        "sweep": sweep,
        "sweep_dir": sweep_dir,
        "group": str(g.resolve()) if g else "",
        "replicate": int(replicate.group(1)) if replicate else None,
        "status": status,
        "error": status_doc.get("error") or error,
        "rounds": rounds_total,
        "rounds_run": len(rows),
        "final_psnr": final,
        "final_ssim": finite(last.get("ssim")),
        "final_loss": finite(last.get("train_loss")),
        "best_psnr": finite(best.get("psnr")),
        "best_ssim": finite(max((r["ssim"] for r in rows), default=None)),
        "best_round": best.get("round"),
        "initial_psnr": finite(summary.get("initial_psnr")),
        "bicubic_psnr": bicubic,
        "gain_db": final - bicubic if final is not None and bicubic is not None else None,
        "seconds": float(sum(r.get("seconds", 0.0) for r in rows)),
        "out": str(d.resolve()),
        "node_ip": node.get("node_ip"),
        "node_id": node.get("node_id"),
        # a trial started again after its node was lost (or by --resume): how often, and the nodes it ran on
        "restarts": max(len(starts) - 1, 0),
        "node_ids": ",".join(s.get("node_id") or "" for s in starts),
        # `fedvsr train-central` writes strategy "central" in its summary; its config's fl.strategy is unused
        "kind": "central" if summary.get("strategy") == "central" else "federated",
    }
    flat = flatten(config)
    row.update({k: (v if key_applies(flat, k) else None) for k, v in flat.items()})
    return row


def group_rows(
    group_dir: str | os.PathLike, trial: str | None = None, sweep: str = "", sweep_dir: str = ""
) -> list[dict[str, Any]]:
    """The rows of a replicate group's runs (``rep-0``, ``rep-1``, ... in order); a group whose runs were never
    written (a trial that failed first) is one row holding its status and error."""
    g = Path(group_dir)
    reps = sorted(
        (c for c in g.iterdir() if REPLICATE_DIR.fullmatch(c.name) and (c / "config.yaml").is_file()),
        key=lambda c: int(c.name[4:]),
    )
    if reps:
        return [run_row(r, trial=trial or g.name, sweep=sweep, sweep_dir=sweep_dir, group=g) for r in reps]
    status_doc, error = _json(g / STATUS_FILE), _text(g / ERROR_FILE)
    row = dict.fromkeys(RESULT_COLUMNS)
    row.update(
        trial=trial or g.name,
        sweep=sweep,
        sweep_dir=sweep_dir,
        group=str(g.resolve()),
        rounds=0,
        rounds_run=0,
        seconds=0.0,
        out=str(g.resolve()),
        kind="federated",
        status=status_doc.get("status") or ("error" if error else "incomplete"),
        error=status_doc.get("error") or error,
    )
    return [row]


def sweep_rows(sweep_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of every trial of a sweep folder, in trial order (a trial with replicates: one per replicate)."""
    d = Path(sweep_dir)
    name = (yaml.safe_load((d / SWEEP_FILE).read_text()) or {}).get("name", d.name)
    where = str(d.resolve())
    runs = d / "runs"
    if not runs.is_dir():
        return []
    rows: list[dict[str, Any]] = []
    for r in sorted(runs.iterdir()):
        if is_group_dir(r):
            rows += group_rows(r, trial=r.name, sweep=name, sweep_dir=where)
        elif (r / "config.yaml").is_file():
            rows.append(run_row(r, trial=r.name, sweep=name, sweep_dir=where))
    return rows


def collect_rows(paths: list[str | os.PathLike]) -> list[dict[str, Any]]:
    """Rows of sweep folders, replicate groups, run folders, and folders holding them (searched recursively)."""
    rows: list[dict[str, Any]] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise FileNotFoundError(f"{str(p)!r} is not a folder (expected a sweep folder or a run folder)")
        found = _find(p)
        if not found:
            raise FileNotFoundError(f"{str(p)!r} holds no sweep (sweep.yaml) and no run (config.yaml)")
        for kind, d in found:
            rows += {"sweep": sweep_rows, "group": group_rows}[kind](d) if kind != "run" else [run_row(d)]
    return rows


def _find(p: Path) -> list[tuple[str, Path]]:
    if is_sweep_dir(p):
        return [("sweep", p)]
    if is_group_dir(p):
        return [("group", p)]
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


def check_where(rows: list[dict[str, Any]], where: list[tuple[str, Any]] | None) -> None:
    """ConfigError for a ``--where`` key that is no column of ``rows`` (a misspelt key would match nothing)."""
    if not rows:
        return
    known = {k for r in rows for k in r}
    for key, _ in where or []:
        if key not in known:
            raise ConfigError(
                f"--where {key}: no such column among {len(rows)} runs; known columns: " + ", ".join(sorted(known))
            )


def _equal(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b or str(a) == str(b)


def rank(
    rows: list[dict[str, Any]],
    metric: str = "psnr",
    mode: str | None = None,
    where: list[tuple[str, Any]] | None = None,
    include_stopped: bool = False,
) -> tuple[list[dict], str, str]:
    """The rows that may win (finished, or also stopped ones), filtered by ``where``, best first.

    ``metric`` is psnr / ssim / loss (the final value) or any numeric column (``best_psnr``); a ``where`` key that
    is no column is a ConfigError (:func:`check_where`). Returns the ranked rows, the column ranked by and the
    mode."""
    column, default_mode = METRIC_COLUMNS.get(metric, (metric, "max"))
    mode = mode or default_mode
    if mode not in ("max", "min"):
        raise ValueError(f"--mode {mode!r} is not allowed; expected max or min")
    if rows and column not in {k for r in rows for k in r}:
        raise ValueError(f"--metric {metric!r}: no column {column!r}; use psnr, ssim, loss or a numeric column")
    check_where(rows, where)
    statuses = {"finished", "stopped"} if include_stopped else {"finished"}
    keep = []
    for r in rows:
        if r.get("status") not in statuses or finite(r.get(column)) is None:
            continue
        if all(_equal(r.get(k), v) for k, v in where or []):
            keep.append(r)
    keep.sort(key=lambda r: r[column], reverse=(mode == "max"))
    return keep, column, mode


def winner_yaml(row: dict[str, Any], column: str, mode: str, considered: int) -> str:
    """One run's ``config.yaml`` text, headed by a comment naming the trial and its metric."""
    text = (Path(row["out"]) / "config.yaml").read_text()
    where = f"sweep {row['sweep']!r}, " if row.get("sweep") else ""
    head = (
        f"# fedvsr best: {where}trial {row['trial']} ({row['out']}): {column} = {row[column]:.4f} "
        f"({mode} over {considered} runs, {row['rounds_run']} rounds)\n"
    )
    return head + text
