"""``fedvsr compare``: two or more experiments side by side, the first the reference.

Each argument is a run folder, a replicate group (``fedvsr simulate --replicates N``), a folder of runs that form
one point (the same config under several seeds), or a sweep folder, which contributes its best point by mean (and
says so). For each: final and best PSNR / SSIM as mean with the 95% t interval over its replicates; against the
reference, the difference of the ranked metric (final PSNR by default) paired on the seed pair (data.seed, seed)
where at least two are shared (Welch's test otherwise), with its 95% interval and two-sided p-value,
Holm-corrected over the comparisons, and a verdict at 95%: better, worse, tie (or untested with a single run).
Written to ``--out``: ``compare.md`` (a Markdown table ready for a paper), ``compare.png`` (PSNR per round, mean
with the interval shaded) and ``compare.json`` (every number).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedvsr.config import ConfigError
from fedvsr.platform.results import write_json_atomic, write_text_atomic
from fedvsr.report import plot_bands
from fedvsr.stats import LEVEL, Comparison, Interval, compare, decimals_for, holm, mean_interval, verdict
from fedvsr.sweeps.points import (
    cell,
    differing_keys,
    group_points,
    interval_json,
    point_config,
    point_labels,
    rank_points,
    round_series,
    seed_key,
    show_path,
)
from fedvsr.sweeps.results import (
    METRIC_COLUMNS,
    collect_rows,
    group_rows,
    is_group_dir,
    is_run_dir,
    is_sweep_dir,
    run_row,
    sweep_rows,
)

#: the columns shown for every entry, with their headings
SHOWN = {
    "final_psnr": "final PSNR (dB)",
    "best_psnr": "best PSNR (dB)",
    "final_ssim": "final SSIM",
    "best_ssim": "best SSIM",
}
#: at most this many differing keys in a derived label
LABEL_KEYS = 3


@dataclass(frozen=True)
class Entry:
    """One compared experiment: its finished runs and how they were chosen."""

    source: str  #: the folder as given
    rows: list[dict[str, Any]]
    note: str  #: what the folder was and what was taken from it
    label: str = ""


def _finished(path: Path, rows: list[dict[str, Any]], column: str) -> tuple[list[dict[str, Any]], str]:
    kept = [r for r in rows if r.get("status") == "finished" and r.get(column) is not None]
    if not kept:
        raise ConfigError(f"{str(path)!r}: no finished run with {column} among its {len(rows)} runs")
    left = len(rows) - len(kept)
    return kept, f"; {left} run{'s' * (left > 1)} not finished left out" if left else ""


def load_entry(source: str, column: str, mode: str) -> Entry:
    """The runs an argument of ``fedvsr compare`` stands for (module docstring)."""
    path = Path(source)
    if not path.is_dir():
        raise FileNotFoundError(f"{source!r} is not a folder (expected a run, replicate group or sweep folder)")
    if is_sweep_dir(path):
        ranking = rank_points(sweep_rows(path), column, mode)
        if not ranking.points:
            raise ConfigError(f"{source!r}: a sweep with no finished trial")
        best = ranking.points[0]
        return Entry(
            source,
            best.rows,
            f"a sweep: its best point by mean {column}, {best.label} (n={best.n}, the "
            f"best of {len(ranking.points)} finished points)",
        )
    if is_group_dir(path):
        rows, left = _finished(path, group_rows(path), column)
        return Entry(source, rows, f"a replicate group of {len(rows)} runs{left}")
    if is_run_dir(path):
        rows, _ = _finished(path, [run_row(path)], column)
        return Entry(source, rows, "a run")
    rows, left = _finished(path, collect_rows([path]), column)
    points = group_points(rows)
    if len(points) > 1:
        keys = differing_keys([point_config(p[0]) for p in points])
        why = (
            f"they differ in {', '.join(keys)}"
            if keys
            else "runs of one seed pair again: repeats, not replicates, or runs of separate sweeps or groups"
        )
        raise ConfigError(f"{source!r} holds {len(points)} points, not one ({why}); give one folder per experiment")
    return Entry(source, points[0], f"a set of {len(rows)} runs of one config{left}")


def derive_labels(entries: list[Entry]) -> list[str]:
    """``fl.strategy=fedvsr``: the config keys that differ between the entries (at most LABEL_KEYS of them), else
    their folders; a label two entries would share gets its folder added."""
    configs = [point_config(e.rows[0]) for e in entries]
    distinct = {k: len({repr(c[k]) for c in configs if c.get(k) is not None}) for k in differing_keys(configs)}
    keys = sorted(distinct, key=lambda k: (-distinct[k], k))  # what differs most first: fl.strategy before fl.mu
    labels = []
    for c in configs:
        parts = [f"{k}={cell(c[k])}" for k in keys if c.get(k) is not None]
        labels.append(", ".join(parts[:LABEL_KEYS]) + (", ..." if len(parts) > LABEL_KEYS else ""))
    folders = point_labels([e.rows for e in entries])
    return [
        f if not lab else lab if labels.count(lab) == 1 else f"{lab} ({f})"
        for lab, f in zip(labels, folders, strict=True)
    ]


def _values(entry: Entry, column: str) -> dict[tuple, float]:
    return {seed_key(r): r[column] for r in entry.rows}


def _interval(entry: Entry, column: str, level: float) -> Interval | None:
    values = [r[column] for r in entry.rows if r.get(column) is not None and math.isfinite(r[column])]
    return mean_interval(values, level) if values else None


def comparisons(entries: list[Entry], column: str, mode: str, level: float = LEVEL) -> list[dict[str, Any]]:
    """Each entry after the first against the first: the difference (entry - reference) of ``column`` paired by seed
    where two seeds are shared, its interval, p-value, Holm-adjusted p-value and verdict."""
    ref = _values(entries[0], column)
    comps: list[Comparison] = [compare(_values(e, column), ref, level) for e in entries[1:]]
    adjusted = holm([c.p for c in comps])
    return [
        {"label": e.label, "comparison": c, "p_holm": p, "verdict": verdict(c, p, mode, level)}
        for e, c, p in zip(entries[1:], comps, adjusted, strict=True)
    ]


def _p(p: float) -> str:
    if not math.isfinite(p):
        return ""
    return "< 0.001" if p < 0.001 else f"{p:.2g}"


def _pm(iv: Interval | None, digits: int, sign: bool = False) -> str:
    return "" if iv is None else iv.pm(digits, sign)


def markdown(entries: list[Entry], comps: list[dict[str, Any]], column: str, level: float) -> str:
    """The comparison as a Markdown table with its caption."""
    intervals = {c: [_interval(e, c, level) for e in entries] for c in SHOWN}
    diffs = [c["comparison"].diff for c in comps]
    psnr_digits = max(
        decimals_for([iv for c in ("final_psnr", "best_psnr") for iv in intervals[c] if iv]), decimals_for(diffs)
    )
    ssim_digits = decimals_for([iv for c in ("final_ssim", "best_ssim") for iv in intervals[c] if iv], least=4)
    d_digits = ssim_digits if "ssim" in column else psnr_digits
    name = SHOWN.get(column, column)
    head = ["", *SHOWN.values(), "n", f"Δ {name}", "p (Holm)", "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|:--|" + "--:|" * (len(head) - 2) + ":--|"]
    for i, e in enumerate(entries):
        cells = [f"{e.label} (reference)" if i == 0 else e.label]
        cells += [_pm(intervals[c][i], ssim_digits if "ssim" in c else psnr_digits) for c in SHOWN]
        cells.append(str(len(e.rows)))
        if i == 0:
            cells += ["", "", "reference"]
        else:
            c = comps[i - 1]
            comp = c["comparison"]
            cells += [
                _pm(comp.diff, d_digits, sign=True) + ("" if comp.paired else " (Welch)"),
                _p(c["p_holm"]),
                c["verdict"],
            ]
        lines.append("| " + " | ".join(cells) + " |")
    paired = all(c["comparison"].paired for c in comps)
    how = (
        "paired by seed (data.seed, seed): the mean of the per-seed differences"
        if paired
        else "paired by seed (data.seed, seed) where two or more seeds are shared, else Welch's unequal-variance test"
    )
    caption = (
        f"Mean ± half-width of the {level:.0%} Student-t interval over n runs (replicates: training seeds, "
        f"the data seed fixed); one value where n = 1. Δ: each row minus the reference, {how}, with its "
        f"{level:.0%} interval; p: two-sided t-test, Holm-corrected over the {len(comps)} comparison"
        f"{'s' * (len(comps) > 1)}; verdict at {level:.0%} ({'higher' if _higher(column) else 'lower'} is "
        f"better; untested: a single run)."
    )
    return "\n".join(lines) + "\n\n" + caption + "\n"


def _higher(column: str) -> bool:
    return next((m for c, m in METRIC_COLUMNS.values() if c == column), "max") == "max"


def _entry_json(e: Entry, level: float) -> dict[str, Any]:
    return {
        "label": e.label,
        "source": e.source,
        "note": e.note,
        "n": len(e.rows),
        "seeds": [list(seed_key(r)) for r in e.rows],
        "runs": [r["out"] for r in e.rows],
        **{c: interval_json(_interval(e, c, level)) for c in SHOWN},
        "gain_db": interval_json(_interval(e, "gain_db", level)),
    }


def _comparison_json(c: dict[str, Any]) -> dict[str, Any]:
    comp = c["comparison"]
    finite = lambda x: x if math.isfinite(x) else None  # noqa: E731
    return {
        "label": c["label"],
        "diff": interval_json(comp.diff),
        "p": finite(comp.p),
        "p_holm": finite(c["p_holm"]),
        "paired": comp.paired,
        "n_pairs": comp.diff.n if comp.paired else None,
        "verdict": c["verdict"],
    }


def run_compare(
    sources: list[str],
    out: str | os.PathLike | None = None,
    labels: list[str] | None = None,
    metric: str = "psnr",
    level: float = LEVEL,
) -> tuple[Path, str]:
    """Compare ``sources`` (the first the reference), write compare.md / .png / .json into ``out`` (default
    ``compare-<time>`` in the current folder); returns the folder and the text to print."""
    if len(sources) < 2:
        raise ConfigError(f"fedvsr compare needs two or more folders (the first is the reference), got {len(sources)}")
    if labels and len(labels) != len(sources):
        raise ConfigError(
            f"--label given {len(labels)} times for {len(sources)} folders; give one per folder, in order"
        )
    column, mode = METRIC_COLUMNS.get(metric, (metric, "max"))
    entries = [load_entry(s, column, mode) for s in sources]
    names = labels or derive_labels(entries)
    entries = [Entry(e.source, e.rows, e.note, n) for e, n in zip(entries, names, strict=True)]
    comps = comparisons(entries, column, mode, level)
    out_dir = Path(out or f"compare-{time.strftime('%Y%m%d-%H%M%S')}")
    out_dir.mkdir(parents=True, exist_ok=True)
    notes = [f"- {e.label}: {show_path(str(Path(e.source).resolve()))}, {e.note}" for e in entries]
    table = markdown(entries, comps, column, level)
    write_text_atomic(
        out_dir / "compare.md",
        f"# fedvsr compare\n\n{table}\nWhat each row is:\n\n"
        + "\n".join(notes)
        + "\n\n![PSNR per round](compare.png)\n",
    )
    bicubic = _interval(entries[0], "bicubic_psnr", level)
    curves = [
        (e.label + (" (reference)" if i == 0 else ""), round_series(e.rows, level=level)) for i, e in enumerate(entries)
    ]
    plot_bands(
        curves,
        bicubic.mean if bicubic else None,
        out_dir / "compare.png",
        f"PSNR per round (mean, {level:.0%} interval over replicates)",
    )
    write_json_atomic(
        out_dir / "compare.json",
        {
            "reference": entries[0].label,
            "column": column,
            "mode": mode,
            "level": level,
            "entries": [_entry_json(e, level) for e in entries],
            "comparisons": [_comparison_json(c) for c in comps],
        },
    )
    return out_dir, table + "\n" + "\n".join(notes) + "\n"
