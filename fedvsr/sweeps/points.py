"""Points: the rows of one configuration (:mod:`fedvsr.sweeps.results`) under several seeds, ranked by their mean
with its 95% interval, and what ``fedvsr best``, ``fedvsr compare`` and ``fedvsr report`` print of them.

A *point* is a set of rows whose configs are equal apart from the seeds (``seed``, ``data.seed``) and keys that
cannot change numbers (``platform.*``, the data caches): a replicate group, or hand-run runs under several seeds.
Points are ranked by their mean over replicates, with its 95% interval, and compared with the top paired on the
seed pair (``data.seed``, ``seed``) (:func:`fedvsr.stats.tie_set`): the points not distinguishable from the top
are its ties.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from fedvsr.stats import LEVEL, Interval, Ranked, decimals_for, mean_interval, tie_set
from fedvsr.sweeps.results import (
    NEUTRAL_KEYS,
    REPLICATE_DIR,
    RESULT_COLUMNS,
    SEED_KEYS,
    finite,
    flatten,
    rank,
)


def seed_key(row: dict[str, Any]) -> tuple:
    """What replicates are paired on: (data.seed, seed)."""
    return tuple(row.get(k) for k in SEED_KEYS)


def config_columns(row: dict[str, Any]) -> dict[str, Any]:
    """The config part of a row: every column that is not a result."""
    return {k: v for k, v in row.items() if k not in RESULT_COLUMNS}


def _neutral(key: str) -> bool:
    return key in SEED_KEYS or key in NEUTRAL_KEYS or key.startswith("platform.")


def point_config(row: dict[str, Any]) -> dict[str, Any]:
    """The config columns that make a point: all but the seeds and the keys that cannot change numbers."""
    return {k: v for k, v in config_columns(row).items() if not _neutral(k)}


def _origin(row: dict[str, Any]) -> str:
    """Where a point can gather runs from: its replicate group, else its sweep, else any hand-run folder."""
    return row.get("group") or row.get("sweep_dir") or ""


def group_points(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Rows gathered into points (module docstring), in order of first appearance, each point's runs in seed order.
    Runs of one config with the same seed pair are repeats, not replicates: the second starts another point, so n
    counts distinct seeds."""
    buckets: dict[tuple[str, str], list[list[dict]]] = {}
    for r in rows:
        key = (_origin(r), json.dumps(point_config(r), sort_keys=True, default=str))
        sets = buckets.setdefault(key, [])
        for s in sets:
            if seed_key(r) not in {seed_key(x) for x in s}:
                s.append(r)
                break
        else:
            sets.append([r])
    order = {id(r): i for i, r in enumerate(rows)}
    points = sorted((s for sets in buckets.values() for s in sets), key=lambda s: order[id(s[0])])
    return [sorted(s, key=lambda r: tuple(-1 if v is None else v for v in seed_key(r))) for s in points]


def _parts(point: list[dict[str, Any]]) -> tuple[tuple[str, ...], int]:
    """A point's folder as path parts, and how many trailing parts its label shows at least."""
    first = point[0]
    if first.get("sweep_dir"):
        return (*Path(first["sweep_dir"]).parts, first["trial"]), 2  # <sweep folder>/<trial>
    parts = Path(first.get("group") or first["out"]).parts
    return parts, 2 if REPLICATE_DIR.fullmatch(parts[-1]) else 1  # one replicate given alone: <group>/rep-<r>


def point_labels(points: list[list[dict[str, Any]]]) -> list[str]:
    """A short, unique label per point from its folder: ``<sweep folder>/<trial>`` for a sweep trial, the group's
    or run's folder name otherwise, with as many parent folders as it takes to tell two apart (two sweeps of one
    spec differ in their folders), and ``(+k)`` for k more hand-run runs."""
    parts = [_parts(p) for p in points]
    shown = [k for _, k in parts]
    while True:
        labels = ["/".join(ps[-k:]) for (ps, _), k in zip(parts, shown, strict=True)]
        clash = {lab for lab in labels if labels.count(lab) > 1}
        grow = [i for i, lab in enumerate(labels) if lab in clash and shown[i] < len(parts[i][0])]
        if not grow:
            break
        for i in grow:
            shown[i] += 1
    seen: dict[str, int] = {}
    out = []
    for p, lab in zip(points, labels, strict=True):
        if not p[0].get("group") and not p[0].get("sweep_dir") and len(p) > 1:
            lab += f" (+{len(p) - 1})"
        seen[lab] = seen.get(lab, 0) + 1
        out.append(lab if seen[lab] == 1 else f"{lab}#{seen[lab]}")  # repeats of one seed pair in one folder
    return out


@dataclass(frozen=True)
class Point:
    """A point of a ranking: its runs (in the order collected), its statistics and its place among the others."""

    label: str
    rows: list[dict[str, Any]]
    ranked: Ranked  #: interval of the ranked column, comparison with the top, Holm-adjusted p, tie flag
    gain: Interval | None  #: final PSNR less bicubic's over the runs (None without bicubic)

    @property
    def interval(self) -> Interval:
        return self.ranked.interval

    @property
    def n(self) -> int:
        return self.ranked.interval.n

    @property
    def tie(self) -> bool | None:
        return self.ranked.tie

    @property
    def folders(self) -> list[str]:
        return list(dict.fromkeys(r.get("group") or r["out"] for r in self.rows))

    @property
    def status(self) -> str:
        return "/".join(dict.fromkeys(r["status"] for r in self.rows))

    @property
    def rounds_run(self) -> int:
        return min(r["rounds_run"] for r in self.rows)

    def config(self) -> dict[str, Any]:
        """Its config columns that apply (not empty), without the seeds."""
        return {k: v for k, v in point_config(self.rows[0]).items() if v is not None}


@dataclass(frozen=True)
class Ranking:
    """Points ranked by their mean ``column`` (best first) and how they were chosen."""

    points: list[Point]
    column: str
    mode: str
    runs: int  #: runs ranked (rows that passed the status and --where filters)
    level: float = LEVEL


def gain_interval(rows: list[dict[str, Any]], level: float = LEVEL) -> Interval | None:
    gains = [r["gain_db"] for r in rows if finite(r.get("gain_db")) is not None]
    return mean_interval(gains, level) if gains else None


def rank_points(
    rows: list[dict[str, Any]],
    metric: str = "psnr",
    mode: str | None = None,
    where: list[tuple[str, Any]] | None = None,
    include_stopped: bool = False,
    level: float = LEVEL,
) -> Ranking:
    """The points of ``rows`` that may win (see :func:`rank`), ranked by their mean, with their tie set."""
    kept, column, mode = rank(rows, metric, mode, where, include_stopped)
    ids = {id(r) for r in kept}
    points = group_points([r for r in rows if id(r) in ids])  # in folder order: which run is a repeat is not luck
    labels = point_labels(points)
    by_label = dict(zip(labels, points, strict=True))
    values = {lab: {seed_key(r): r[column] for r in p} for lab, p in by_label.items()}
    ranked = tie_set(values, mode, level)
    return Ranking(
        [Point(r.name, by_label[r.name], r, gain_interval(by_label[r.name], level)) for r in ranked],
        column,
        mode,
        len(kept),
        level,
    )


def method_words(points: list[Point]) -> str:
    """How the points were compared with the top: paired t-tests (shared seeds), Welch's, or both."""
    kinds = {
        p.ranked.versus_top.paired for p in points if p.ranked.versus_top is not None and p.ranked.versus_top.testable
    }
    name = {
        frozenset({True}): "paired t-tests",
        frozenset({False}): "Welch t-tests",
        frozenset(): "t-tests paired by seed",
    }.get(frozenset(kinds), "paired (shared seeds) or Welch t-tests")
    return f"Holm-corrected {name}"


def winner_warnings(ranking: Ranking) -> list[str]:
    """Warnings about the winner for stderr: below bicubic (a model that made the video worse)."""
    if not ranking.points or ranking.points[0].gain is None:
        return []
    top = ranking.points[0]
    if top.gain.mean >= 0:
        return []
    return [
        f"fedvsr best: warning: the winner {top.label} is below bicubic: final PSNR {_pm(top.gain, 4, True)} dB "
        f"against bicubic's on the same clips (mean over {top.gain.n} run{'s' * (top.gain.n > 1)}); the model "
        f"made the video worse than upscaling it does"
    ]


def _pm(iv: Interval | None, digits: int, sign: bool = False) -> str:
    return "" if iv is None else iv.pm(digits, sign, sep="+-")


def show_path(path: str) -> str:
    """``path`` relative to the current folder when it lies below it, else as it is."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def _tie_lines(ranking: Ranking, digits: int) -> list[str]:
    top, rest = ranking.points[0], ranking.points[1:]
    if not rest:
        return [f"the only point of {ranking.runs} run{'s' * (ranking.runs > 1)} ranked"]
    if top.n < 2:
        runner = rest[0]
        return [
            f"n = 1: no interval can be given from a single run, and the runner-up {runner.label} "
            f"({runner.interval.mean:.{digits}f}) cannot be told apart from it without replicates: rerun the "
            f"top points with replicates (fedvsr simulate --replicates 3, or replicates: 3 in the sweep spec)"
        ]
    ties = [p for p in rest if p.tie]
    untested = [p for p in rest if p.tie is None]
    lines = []
    if ties:
        lines.append(
            f"not distinguishable from it at {ranking.level:.0%} ({method_words(rest)}): "
            + ", ".join(f"{p.label} ({_pm(p.interval, digits)})" for p in ties)
        )
    elif len(untested) < len(rest):
        lines.append(
            f"every other {'tested ' if untested else ''}point is distinguishable from it at "
            f"{ranking.level:.0%} ({method_words(rest)})"
        )
    if untested:
        lines.append("not tested (a single run, no interval): " + ", ".join(p.label for p in untested))
    return lines


def best_yaml(ranking: Ranking) -> str:
    """The winning point's config (its first replicate's ``config.yaml``), headed by comments: its mean and interval
    over n replicates, the seeds, the gain over bicubic, and the points tied with it."""
    top = ranking.points[0]
    digits = decimals_for([p.interval for p in ranking.points], least=4)
    run = top.rows[0]
    where = (
        f"sweep folder {show_path(run['sweep_dir'])} (spec {run['sweep']!r}), trial {run['trial']}"
        if run.get("sweep_dir")
        else ", ".join(show_path(f) for f in top.folders)
    )
    n = top.n
    best = "highest" if ranking.mode == "max" else "lowest"
    head = [
        f"fedvsr best: {top.label}: {ranking.column} = {_pm(top.interval, digits)} ({best} mean of "
        f"{len(ranking.points)} points, {ranking.runs} runs; {top.rounds_run} rounds)",
        f"from {where}",
        f"rests on n = {n} replicate{'s' * (n > 1)}: (data.seed, seed) = "
        + ", ".join(f"({a}, {b})" for a, b in (seed_key(r) for r in top.rows))
        + (f"; mean and {ranking.level:.0%} t interval over them" if n > 1 else "")
        + f"; the config below is that of {show_path(run['out'])}",
    ]
    if top.gain is not None:
        head.append(f"gain over bicubic: {_pm(top.gain, digits, sign=True)} dB")
    head += _tie_lines(ranking, digits)
    if n > 1:
        head.append(f"rerun it with {n} replicates: fedvsr simulate --config best.yaml --replicates {n}")
    return "".join(f"# {line}\n" for line in head) + (Path(run["out"]) / "config.yaml").read_text()


def differing_keys(configs: list[dict[str, Any]]) -> list[str]:
    """Config keys that tell ``configs`` (point configs) apart: two values among those a key applies to, or one that
    is not the key's default (FedProx's mu = 0.01 beside FedAvg; not FedVSR's seven keys at their defaults)."""
    from fedvsr.config import ExperimentConfig

    defaults = flatten(ExperimentConfig().to_dict())
    shown = []
    for k in sorted({k for c in configs for k in c}):
        values = {json.dumps(c.get(k), default=str) for c in configs}
        applied = values - {"null"}
        if len(values) > 1 and (len(applied) > 1 or applied != {json.dumps(defaults.get(k), default=str)}):
            shown.append(k)
    return shown


def varying_keys(points: list[Point]) -> list[str]:
    """Config keys that tell ``points`` apart (:func:`differing_keys`)."""
    return differing_keys([point_config(p.rows[0]) for p in points])


def cell(v: Any) -> str:
    """A config value for a table cell (4 significant digits for a float, empty for None)."""
    if v is None:
        return ""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def top_table(ranking: Ranking, k: int) -> str:
    """The top ``k`` points as a text table: mean +- interval, n, gain over bicubic, tie marks, what differs."""
    top = ranking.points[:k]
    digits = decimals_for([p.interval for p in ranking.points], least=4)
    keys = varying_keys(top)
    header = ["#", "", ranking.column, "n", "gain_db", "status", "rounds", "folder", *keys]
    mark = {True: "=", False: "", None: "?"}
    body = [
        [
            str(i),
            mark[p.tie],
            _pm(p.interval, digits),
            str(p.n),
            _pm(p.gain, digits, sign=True),
            p.status,
            str(p.rounds_run),
            p.label,
            *(cell(p.rows[0].get(key)) for key in keys),
        ]
        for i, p in enumerate(top, 1)
    ]
    widths = [max(len(r[c]) for r in [header, *body]) for c in range(len(header))]
    right = {0, 2, 3, 4, 6}

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rest = ranking.points[1:]
    lines = [
        f"top {len(top)} of {len(ranking.points)} points ({ranking.runs} runs) by mean {ranking.column} "
        f"({ranking.mode}), +- the {ranking.level:.0%} t interval over n replicates",
        f"= not distinguishable from #1 at {ranking.level:.0%} ({method_words(rest)}); ? not tested (n = 1)"
        if rest
        else "",
        line(header),
    ]
    return "\n".join([*filter(None, lines), *map(line, body)]) + "\n"


def _num(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def interval_json(iv: Interval | None) -> dict[str, Any] | None:
    if iv is None:
        return None
    return {
        "mean": _num(iv.mean),
        "std": _num(iv.std),
        "n": iv.n,
        "low": _num(iv.low),
        "high": _num(iv.high),
        "level": iv.level,
    }


def point_json(point: Point, rank_index: int, column: str) -> dict[str, Any]:
    """A point as JSON (NaN as null); ``column`` (``final_psnr``) holds its mean, as ``mean`` does."""
    vs = point.ranked.versus_top
    return {
        "rank": rank_index,
        "label": point.label,
        "column": column,
        column: _num(point.interval.mean),
        **interval_json(point.interval),
        "tie": point.tie,
        "p_adjusted": _num(point.ranked.p_adjusted),
        "versus_top": None if vs is None else {**interval_json(vs.diff), "p": _num(vs.p), "paired": vs.paired},
        "gain_db": interval_json(point.gain),
        "status": point.status,
        "rounds_run": point.rounds_run,
        "folders": point.folders,
        "seeds": [list(seed_key(r)) for r in point.rows],
        "values": [r[column] for r in point.rows],
        "runs": [r["out"] for r in point.rows],
        "config": point.config(),
    }


def round_series(rows: list[dict[str, Any]], key: str = "psnr", level: float = LEVEL) -> list[tuple[int, Interval]]:
    """Per round, the mean of ``key`` over the runs of a point with its ``level`` interval (n = the runs that reached
    the round); round 0 is the initial model's PSNR when every run recorded it."""
    per_round: dict[int, list[float]] = {}
    if key == "psnr" and rows and all(finite(r.get("initial_psnr")) is not None for r in rows):
        per_round[0] = [r["initial_psnr"] for r in rows]
    for r in rows:
        path = Path(r["out"]) / "rounds.parquet"
        if not path.is_file():
            continue
        for x in pq.read_table(path, columns=["round", key]).to_pylist():
            if finite(x[key]) is not None:
                per_round.setdefault(int(x["round"]), []).append(float(x[key]))
    return [(t, mean_interval(v, level)) for t, v in sorted(per_round.items())]
