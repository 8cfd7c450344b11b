"""Where a sweep's wall time went: ``timeline.parquet``, a row per trial step, and the sweep's time budget.

Every ``step`` of a :class:`~fedvsr.sweeps.trial.SweepTrial` (one round) reports when it started and ended
(``time.time()`` on the trial's node), how long its trial's start took when it was the trial's first step
(``begin_seconds``: the run folder, the data check, a coordinator started or configured again, the workers'
data) and the pid of the trainable's actor (the same pid in two trials: the actor was reused). The driver keeps
these rows and writes them at the end of the sweep, with the round's own seconds (training and evaluation).

:func:`time_budget` splits the sweep's slot-seconds -- its wall time (from the driver's start, Ray's start
included, to the end of Tune's run) times the trials it runs at once -- into parts that add up to the whole:

- ``rounds``: the rounds' own seconds (what utilisation counts as busy);
- ``trial_starts``: the trials' first steps before their first round (``begin_seconds``);
- ``in_steps``: the rest of the steps: a trial's last step writes its final model and summary, a replayed step
  trains nothing;
- ``between_rounds``: from a step's end to the next step of the same trial (Tune handles the result, ASHA
  decides);
- idle slots, where fewer trials were active than the sweep runs at once (a trial is active from its first
  step's start to its last step's end): ``start_up`` before the first trial's first step (Ray, Tune, the first
  actors), ``between_trials`` until the last trial's first step (a slot waits for its next trial: an actor
  started or reset, Tune's bookkeeping, the searcher), ``tail`` after it (nothing left to start: the last trials
  run with slots free) and ``shut_down`` after the last step.

A resumed sweep appends its rows with the next ``start`` number; the budget is that of the latest start. The
budget is kept in ``timeline.parquet``'s schema metadata (``fedvsr.time_budget``, JSON) and printed as one line.
"""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from fedvsr.platform.results import write_parquet_atomic

TIMELINE_FILE = "timeline.parquet"
#: what a trial's result carries for the timeline (SweepTrial.step)
STEP_KEYS = ("step_started", "step_ended", "begin_seconds", "actor_pid")
SCHEMA = pa.schema(
    [
        ("start", pa.int64()),
        ("trial", pa.string()),
        ("round", pa.int64()),
        ("step_started", pa.float64()),
        ("step_ended", pa.float64()),
        ("begin_seconds", pa.float64()),
        ("round_seconds", pa.float64()),
        ("replayed", pa.bool_()),
        ("actor_pid", pa.int64()),
    ]
)
PARTS = (
    "rounds",
    "trial_starts",
    "in_steps",
    "between_rounds",
    "start_up",
    "between_trials",
    "tail",
    "shut_down",
)

#: per sweep folder (this driver's sweep): the steps reported so far (module level, so that a progress callback
#: Tune restored by value records into the same list)
_STEPS: dict[str, list[dict[str, Any]]] = {}


def record_step(sweep_dir: Path, trial: str, result: dict[str, Any]) -> None:
    """Keep one step of ``trial`` (its run folder's name, as ``trials.parquet`` has it) from its Tune ``result``
    (a result without the step's times is not kept)."""
    if any(result.get(k) is None for k in STEP_KEYS):
        return
    _STEPS.setdefault(str(sweep_dir), []).append(
        {
            "trial": trial,
            "round": int(result.get("round", 0)),
            "step_started": float(result["step_started"]),
            "step_ended": float(result["step_ended"]),
            "begin_seconds": float(result["begin_seconds"]),
            "round_seconds": 0.0 if result.get("replayed") else float(result.get("seconds", 0.0)),
            "replayed": bool(result.get("replayed", False)),
            "actor_pid": int(result["actor_pid"]),
        }
    )


def forget(sweep_dir: Path) -> None:
    """Drop the steps kept for ``sweep_dir`` (a sweep that starts again in this process)."""
    _STEPS.pop(str(sweep_dir), None)


def time_budget(rows: list[dict[str, Any]], started: float, ended: float, slots: int | None) -> dict[str, Any]:
    """The sweep's slot-seconds, ``slots`` x (``ended`` - ``started``), split into :data:`PARTS` (module docstring);
    ``slots`` None: the most trials seen active at once; never more than the trials (at least 1). ``other`` is
    what the parts leave (0 unless clocks of several nodes disagree or more trials ran at once than ``slots``)."""
    spans: dict[str, list[float]] = {}
    parts = dict.fromkeys(PARTS, 0.0)
    for trial, steps in _by_trial(rows).items():
        spans[trial] = [steps[0]["step_started"], steps[-1]["step_ended"]]
        for r in steps:
            parts["rounds"] += r["round_seconds"]
            parts["trial_starts"] += r["begin_seconds"]
            parts["in_steps"] += r["step_ended"] - r["step_started"] - r["begin_seconds"] - r["round_seconds"]
        parts["between_rounds"] += sum(b["step_started"] - a["step_ended"] for a, b in pairwise(steps))
    k = min(slots, max(len(spans), 1)) if slots else _most_at_once(spans.values())
    wall = ended - started
    if spans:
        first = min(s for s, _ in spans.values())
        last_start = max(s for s, _ in spans.values())
        last_end = max(e for _, e in spans.values())
        marks = [("start_up", started, first), ("between_trials", first, last_start)]
        marks += [("tail", last_start, last_end), ("shut_down", last_end, ended)]
        for part, a, b in marks:
            parts[part] = _idle(spans.values(), k, max(a, started), min(b, ended))
    else:
        parts["start_up"] = k * wall
    total = k * wall
    parts["other"] = total - sum(parts.values())
    return {
        "wall_seconds": wall,
        "slots": k,
        "slot_seconds": total,
        "trials": len(spans),
        "actors": len({r["actor_pid"] for r in rows}),
        "seconds": parts,
        "shares": {p: (v / total if total > 0 else 0.0) for p, v in parts.items()},
    }


def _by_trial(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    trials: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        trials.setdefault(r["trial"], []).append(r)
    return {t: sorted(steps, key=lambda r: r["step_started"]) for t, steps in trials.items()}


def _most_at_once(spans) -> int:
    """The most spans (start, end) open at one time (at least 1)."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    most = n = 0
    for _, d in events:
        n += d
        most = max(most, n)
    return max(most, 1)


def _idle(spans, slots: int, a: float, b: float) -> float:
    """Slot-seconds left idle in [a, b]: the integral of ``slots`` less the spans open (never below 0)."""
    if b <= a:
        return 0.0
    cuts = sorted({a, b, *(t for s, e in spans for t in (s, e) if a < t < b)})
    idle = 0.0
    for lo, hi in pairwise(cuts):
        mid = (lo + hi) / 2
        busy = sum(1 for s, e in spans if s <= mid < e)
        idle += max(slots - busy, 0) * (hi - lo)
    return idle


def write_timeline(sweep_dir: Path, started: float, ended: float, slots: int | None) -> dict[str, Any]:
    """Append this driver's steps of the sweep to ``timeline.parquet`` (the next ``start``) with the budget of this
    start in its metadata (``fedvsr.time_budget``); returns the budget."""
    path = Path(sweep_dir) / TIMELINE_FILE
    earlier = pq.read_table(path).to_pylist() if path.is_file() else []
    start = max((r["start"] for r in earlier), default=-1) + 1
    steps = [{"start": start, **r} for r in _STEPS.pop(str(sweep_dir), [])]
    budget = {"start": start, **time_budget(steps, started, ended, slots)}
    table = pa.Table.from_pylist(earlier + steps, schema=SCHEMA)
    meta = {b"fedvsr.time_budget": json.dumps(budget).encode()}
    write_parquet_atomic(path, table.replace_schema_metadata(meta))
    return budget


def describe(budget: dict[str, Any]) -> str:
    """The budget as one line: each part's share of the slot-seconds, the largest first (parts under 0.5% left
    out)."""
    shares = sorted(budget["shares"].items(), key=lambda kv: -kv[1])
    said = ", ".join(f"{p.replace('_', ' ')} {s:.0%}" for p, s in shares if s >= 0.005)
    return (
        f"fedvsr sweep: time of {budget['slots']} trial slot{'s' * (budget['slots'] > 1)} x "
        f"{budget['wall_seconds']:.0f} s: {said} ({TIMELINE_FILE})"
    )
