"""Figures and tables drawn from results, so the runtime never draws: a run's PSNR curve, and a sweep's
report (metric against each swept parameter, PSNR per round of the top trials, ASHA's stopped-vs-
finished picture, and a Markdown summary)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    _pyplot().close(fig)
    tmp.replace(path)
    return path


def plot_psnr(rounds: list[dict[str, Any]], bicubic_psnr: float, path: Path, title: str = "") -> Path:
    """PSNR per round of one run against the bicubic line (``psnr.png`` of a run folder)."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot([r["round"] for r in rounds], [r["psnr"] for r in rounds], "o-", label="global model")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.axhline(bicubic_psnr, color="gray", linestyle="--", label=f"bicubic ({bicubic_psnr:.2f} dB)")
    ax.set_xlabel("round")
    ax.set_ylabel("PSNR (dB, Y)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


# ----------------------------------------------------------------------------------------- sweeps


def _rounds(run_dir: str) -> list[dict[str, Any]]:
    path = Path(run_dir) / "rounds.parquet"
    return pq.read_table(path).to_pylist() if path.is_file() else []


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _param_plot(rows: list[dict], key: str, column: str, log: bool, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    shown = [r for r in rows if r["status"] in ("finished", "stopped") and key in r and r.get(column) is not None]
    values = [r[key] for r in shown]
    numeric = all(_is_number(v) for v in values)
    if numeric:
        xs = values
    else:
        cats = sorted({str(v) for v in values})
        xs = [cats.index(str(v)) for v in values]
        ax.set_xticks(range(len(cats)), cats, rotation=20)
    for status, style in (("finished", {"color": "C0", "label": "finished"}),
                          ("stopped", {"facecolors": "none", "edgecolors": "gray",
                                       "label": "stopped by ASHA (last round's value)"})):
        pts = [(x, r[column]) for x, r in zip(xs, shown, strict=True) if r["status"] == status]
        if pts:
            ax.scatter(*zip(*pts, strict=True), s=36, **style)
    if numeric and log and all(v > 0 for v in values):
        ax.set_xscale("log")
    ax.set_xlabel(key)
    ax.set_ylabel(column)
    ax.set_title(f"{column} against {key}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _label(row: dict, keys: list[str]) -> str:
    parts = []
    for k in keys:
        v = row.get(k)
        parts.append(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}")
    return ", ".join(parts) or row["trial"]


def _top_rounds_plot(top: list[dict], keys: list[str], compare: list[dict], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    bicubic = next((r["bicubic_psnr"] for r in top if r.get("bicubic_psnr") is not None), None)
    for i, r in enumerate(top):
        rounds = _rounds(r["out"])
        xs = [0] + [x["round"] for x in rounds] if r.get("initial_psnr") is not None else [x["round"] for x in rounds]
        ys = ([r["initial_psnr"]] if r.get("initial_psnr") is not None else []) + [x["psnr"] for x in rounds]
        ax.plot(xs, ys, "o-", ms=3, color=f"C{i % 10}", label=f"#{i + 1} {_label(r, keys)}")
    for j, c in enumerate(compare):
        rounds = _rounds(c["out"])
        if len(rounds) > 1:
            ax.plot([x["round"] for x in rounds], [x["psnr"] for x in rounds], "--", color=f"C{(len(top) + j) % 10}",
                    label=f"{c['trial']} (compared)")
        elif c.get("final_psnr") is not None:
            ax.axhline(c["final_psnr"], linestyle="--", color=f"C{(len(top) + j) % 10}",
                       label=f"{c['trial']} ({c['final_psnr']:.2f} dB)")
    if bicubic is not None:
        ax.axhline(bicubic, color="gray", linestyle=":", label=f"bicubic ({bicubic:.2f} dB)")
    ax.set_xlabel("round")
    ax.set_ylabel("PSNR (dB, Y)")
    ax.set_title(f"PSNR per round, top {len(top)} trials")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def _asha_plot(rows: list[dict], rungs: list[int], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    for r in rows:
        rounds = _rounds(r["out"])
        if not rounds:
            continue
        xs, ys = [x["round"] for x in rounds], [x["psnr"] for x in rounds]
        if r["status"] == "finished":
            ax.plot(xs, ys, "-", color="C0", alpha=0.7, lw=1)
        else:
            ax.plot(xs, ys, "-", color="gray", alpha=0.6, lw=1)
            ax.plot(xs[-1:], ys[-1:], "x", color="C3", ms=6)
    for rung in rungs:
        ax.axvline(rung, color="k", linestyle=":", lw=0.8)
    finished = sum(r["status"] == "finished" for r in rows)
    stopped = sum(r["status"] == "stopped" for r in rows)
    ax.plot([], [], "-", color="C0", label=f"finished ({finished})")
    ax.plot([], [], "x-", color="gray", mec="C3", label=f"stopped by ASHA ({stopped})")
    if rungs:
        ax.plot([], [], ":", color="k", label="ASHA rungs")
    ax.set_xlabel("round")
    ax.set_ylabel("PSNR (dB, Y)")
    ax.set_title("every trial: finished and stopped early")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def asha_rungs(grace_period: int, reduction_factor: int, max_t: int) -> list[int]:
    """The rounds at which ASHA compares trials: grace * rf^k below max_t."""
    rungs, t = [], grace_period
    while t < max_t:
        rungs.append(t)
        t *= reduction_factor
    return rungs


def sweep_report(sweep_dir: str | os.PathLike, out: str | os.PathLike | None = None, top: int = 5,
                 compare: list[str] | None = None) -> list[Path]:
    """Write the report of a sweep folder into ``out`` (default ``<sweep>/report``); returns the files."""
    from fedvsr.sweeps.results import METRIC_COLUMNS, collect_rows, is_sweep_dir, rank, sweep_rows
    from fedvsr.sweeps.runner import saved_spec

    d = Path(sweep_dir)
    if not is_sweep_dir(d):
        raise FileNotFoundError(f"{str(d)!r} is not a sweep folder (no sweep.yaml)")
    spec = saved_spec(d)
    out_dir = Path(out) if out else d / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = sweep_rows(d)
    column, _ = METRIC_COLUMNS[spec.metric]
    ranked, _, _ = rank(rows, spec.metric, spec.mode)
    compared = collect_rows(compare) if compare else []
    swept = [p for p in spec.params if p.kind != "affine"]
    keys = [k for p in swept for k in p.keys]
    files: list[Path] = []
    for p in swept:
        for k in p.keys:
            files.append(_param_plot(rows, k, column, p.is_log, out_dir / f"{column}_vs_{k}.png"))
    files.append(_top_rounds_plot(ranked[:top], keys, compared, out_dir / "psnr_per_round_top.png"))
    rungs = asha_rungs(spec.grace_period, spec.reduction_factor, spec.max_rounds) if spec.scheduler == "asha" else []
    files.append(_asha_plot(rows, rungs, out_dir / "trials_per_round.png"))
    files.append(_markdown(spec, rows, ranked[:top], column, keys, files, compared, d, out_dir))
    return files


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    return "" if v is None else str(v)


def _markdown(spec, rows, top, column, keys, images, compared, sweep_dir: Path, out_dir: Path) -> Path:
    counts = {s: sum(r["status"] == s for r in rows) for s in ("finished", "stopped", "error", "incomplete")}
    lines = [f"# Sweep `{spec.name}`", "", spec.description, "",
             f"- search: {spec.search}, {len(rows)} trials ("
             + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + ")",
             f"- scheduler: {spec.scheduler}"
             + (f" (grace period {spec.grace_period} rounds, reduction factor {spec.reduction_factor})"
                if spec.scheduler == "asha" else ""),
             f"- metric: {spec.metric} ({spec.mode}), ranked by `{column}` over finished trials",
             "- swept: " + "; ".join(f"`{p.name}` {p.describe()}" for p in spec.params),
             "- fixed: " + ", ".join(f"`{k}={_fmt(v)}`" for k, v in spec.fixed.items()), ""]
    if top:
        lines += [f"## Top {len(top)}", "", "| # | " + " | ".join([column, "best_psnr", "final_ssim", *keys, "trial"])
                  + " |", "|" + "---|" * (len(keys) + 5)]
        for i, r in enumerate(top, 1):
            cells = [_fmt(r.get(column)), _fmt(r.get("best_psnr")), _fmt(r.get("final_ssim")),
                     *(_fmt(r.get(k)) for k in keys), r["trial"]]
            lines.append(f"| {i} | " + " | ".join(cells) + " |")
        lines += ["", f"The winner as a config: `fedvsr best {sweep_dir} > best.yaml`, then "
                  "`fedvsr simulate --config best.yaml`.", ""]
    if compared:
        lines += ["## Compared runs", ""] + [f"- {c['trial']}: final PSNR {_fmt(c.get('final_psnr'))} dB "
                                             f"({c['out']})" for c in compared] + [""]
    errors = [r for r in rows if r["status"] == "error"]
    if errors:
        lines += ["## Failed trials", ""] + [f"- {r['trial']}: {r['error'].splitlines()[0] if r['error'] else ''}"
                                            for r in errors] + [""]
    lines += ["## Figures", ""] + [f"![{p.stem}]({os.path.relpath(p, out_dir)})" for p in images] + [""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
