"""Figures and tables drawn from results, so the runtime never draws: a run's PSNR curve (``psnr.png``, drawn by
the ``fedvsr`` command from the run's ``summary.json`` and ``rounds.parquet`` when it ends), and a sweep's
report (metric against each swept parameter, PSNR per round of the top trials, ASHA's stopped-vs-
finished picture, and a Markdown summary)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


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


def plot_run(run_dir: str | os.PathLike) -> Path | None:
    """``psnr.png`` of a finished run (``fedvsr simulate`` or ``train-central``) from its ``summary.json`` and
    ``rounds.parquet``: the initial model at round 0, then every round; None for a folder that holds no finished
    single run (a replicate group's own summary, a run that stopped before its summary)."""
    import pyarrow.parquet as pq

    run = Path(run_dir)
    if not (run / "summary.json").is_file() or not (run / "rounds.parquet").is_file():
        return None
    s = json.loads((run / "summary.json").read_text())
    # a replicate group's summary has the replicates' mean initial PSNR too, but its rounds are means (psnr_mean)
    if "initial_psnr" not in s or "psnr" not in pq.read_schema(run / "rounds.parquet").names:
        return None
    rows = pq.read_table(run / "rounds.parquet", columns=["round", "psnr"]).to_pylist()
    how = f"central, {s['workers']} workers" if s["strategy"] == "central" else s["strategy"]
    return plot_psnr(
        [{"round": 0, "psnr": s["initial_psnr"]}, *rows],
        s["bicubic_psnr"],
        run / "psnr.png",
        title=f"{s['model']}/{s['preset']} - {how}",
    )


def plot_runs(folder: str | os.PathLike) -> list[Path]:
    """:func:`plot_run` for the run in ``folder`` and every run below it (replicates, sweep trials) whose
    ``psnr.png`` is missing or older than its ``summary.json``; returns the files drawn."""
    folder = Path(folder)
    drawn = []
    for summary in sorted({folder / "summary.json", *folder.rglob("summary.json")}):
        png = summary.with_name("psnr.png")
        if summary.is_file() and (not png.is_file() or png.stat().st_mtime_ns < summary.stat().st_mtime_ns):
            if (path := plot_run(summary.parent)) is not None:
                drawn.append(path)
    return drawn


# ----------------------------------------------------------------------------------------- bands


def draw_band(ax, series: list, color: str, label: str, style: str = "o-") -> None:
    """A point's mean per round (``series``: (round, Interval) pairs) and, where n >= 2, its interval shaded."""
    xs = [t for t, _ in series]
    ax.plot(xs, [iv.mean for _, iv in series], style, ms=3, color=color, label=label)
    shaded = [(t, iv) for t, iv in series if iv.n >= 2 and math.isfinite(iv.half)]
    if shaded:
        ax.fill_between(
            [t for t, _ in shaded],
            [iv.low for _, iv in shaded],
            [iv.high for _, iv in shaded],
            color=color,
            alpha=0.2,
            lw=0,
        )


def _round_axes(ax, title: str) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("PSNR (dB, Y)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def plot_bands(curves: list[tuple[str, list]], bicubic: float | None, path: Path, title: str) -> Path:
    """PSNR per round of several points, each its mean with the 95% interval over replicates shaded."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    for i, (label, series) in enumerate(curves):
        draw_band(ax, series, f"C{i % 10}", label)
    if bicubic is not None:
        ax.axhline(bicubic, color="gray", linestyle=":", label=f"bicubic ({bicubic:.2f} dB)")
    _round_axes(ax, title)
    fig.tight_layout()
    return _save(fig, path)


# ----------------------------------------------------------------------------------------- sweeps


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def param_points(points: list, key: str) -> list:
    """The points a key applies to (:func:`fedvsr.config.key_applies`), which a plot against it shows."""
    from fedvsr.config import key_applies

    return [p for p in points if key_applies(p.rows[0], key) and p.rows[0].get(key) is not None]


def _param_plot(points: list, key: str, column: str, log: bool, path: Path) -> Path:
    """Each point's mean ``column`` against its value of ``key``, with its 95% interval as an error bar; only the
    points the key applies to (``fl.mu`` only for FedProx trials)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    shown = param_points(points, key)
    values = [p.rows[0][key] for p in shown]
    numeric = all(_is_number(v) for v in values)
    if numeric:
        xs = values
    else:
        cats = sorted({str(v) for v in values})
        xs = [cats.index(str(v)) for v in values]
        ax.set_xticks(range(len(cats)), cats, rotation=20)
    for status, style in (
        ("finished", {"fmt": "o", "color": "C0", "label": "finished"}),
        ("stopped", {"fmt": "o", "mfc": "none", "color": "gray", "label": "stopped by ASHA (last round's value)"}),
    ):
        pts = [(x, p) for x, p in zip(xs, shown, strict=True) if p.status == status]
        if pts:
            err = [p.interval.half if p.n >= 2 else 0.0 for _, p in pts]
            ax.errorbar([x for x, _ in pts], [p.interval.mean for _, p in pts], yerr=err, capsize=3, ms=6, **style)
    if numeric and log and values and all(v > 0 for v in values):
        ax.set_xscale("log")
    ax.set_xlabel(key)
    ax.set_ylabel(f"{column} (mean, 95% interval over replicates)")
    ax.set_title(f"{column} against {key}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _label(row: dict, keys: list[str]) -> str:
    parts = []
    for k in keys:
        v = row.get(k)
        if v is not None:
            parts.append(f"{k.split('.')[-1]}={v:.4g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}")
    return ", ".join(parts) or row["trial"]


def _top_rounds_plot(top: list, keys: list[str], compared: list, path: Path) -> Path:
    from fedvsr.sweeps.points import round_series

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    bicubic = next((r["bicubic_psnr"] for p in top for r in p.rows if r.get("bicubic_psnr") is not None), None)
    for i, p in enumerate(top):
        draw_band(ax, round_series(p.rows), f"C{i % 10}", f"#{i + 1} {_label(p.rows[0], keys)} (n={p.n})")
    for j, c in enumerate(compared):
        series = round_series(c.rows)
        color = f"C{(len(top) + j) % 10}"
        if len(series) > 1:
            draw_band(ax, series, color, f"{c.label} (compared, n={c.n})", style="--")
        elif series:
            final = series[-1][1].mean
            ax.axhline(final, linestyle="--", color=color, label=f"{c.label} ({final:.2f} dB)")
    if bicubic is not None:
        ax.axhline(bicubic, color="gray", linestyle=":", label=f"bicubic ({bicubic:.2f} dB)")
    _round_axes(ax, f"PSNR per round, top {len(top)} points (mean, 95% interval over replicates)")
    fig.tight_layout()
    return _save(fig, path)


def _asha_plot(points: list[list[dict]], rungs: list[int], path: Path) -> Path:
    from fedvsr.sweeps.points import round_series

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    for rows in points:
        series = [(t, iv.mean) for t, iv in round_series(rows) if t > 0]
        if not series:
            continue
        xs, ys = zip(*series, strict=True)
        if rows[0]["status"] == "finished":
            ax.plot(xs, ys, "-", color="C0", alpha=0.7, lw=1)
        else:
            ax.plot(xs, ys, "-", color="gray", alpha=0.6, lw=1)
            ax.plot(xs[-1:], ys[-1:], "x", color="C3", ms=6)
    for rung in rungs:
        ax.axvline(rung, color="k", linestyle=":", lw=0.8)
    finished = sum(rows[0]["status"] == "finished" for rows in points)
    stopped = sum(rows[0]["status"] == "stopped" for rows in points)
    ax.plot([], [], "-", color="C0", label=f"finished ({finished})")
    ax.plot([], [], "x-", color="gray", mec="C3", label=f"stopped by ASHA ({stopped})")
    if rungs:
        ax.plot([], [], ":", color="k", label="ASHA rungs")
    _round_axes(ax, "every trial (mean over its replicates): finished and stopped early")
    fig.tight_layout()
    return _save(fig, path)


def asha_rungs(grace_period: int, reduction_factor: int, max_t: int) -> list[int]:
    """The rounds at which ASHA compares trials: grace * rf^k below max_t."""
    rungs, t = [], grace_period
    while t < max_t:
        rungs.append(t)
        t *= reduction_factor
    return rungs


def sweep_report(
    sweep_dir: str | os.PathLike, out: str | os.PathLike | None = None, top: int = 5, compare: list[str] | None = None
) -> list[Path]:
    """Write the report of a sweep folder into ``out`` (default ``<sweep>/report``); returns the files."""
    from fedvsr.sweeps.persist import saved_spec
    from fedvsr.sweeps.points import group_points, rank_points
    from fedvsr.sweeps.results import collect_rows, is_sweep_dir, sweep_rows

    d = Path(sweep_dir)
    if not is_sweep_dir(d):
        raise FileNotFoundError(f"{str(d)!r} is not a sweep folder (no sweep.yaml)")
    spec = saved_spec(d)
    out_dir = Path(out) if out else d / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = sweep_rows(d)
    ranking = rank_points(rows, spec.metric, spec.mode)  # finished points: the winner and its ties
    drawn = rank_points(rows, spec.metric, spec.mode, include_stopped=True).points
    compared = rank_points(collect_rows(compare), spec.metric, spec.mode).points if compare else []
    swept = [p for p in spec.params if p.kind != "affine"]
    keys = [k for p in swept for k in p.keys]
    files: list[Path] = []
    for p in swept:
        for k in p.keys:
            files.append(_param_plot(drawn, k, ranking.column, p.is_log, out_dir / f"{ranking.column}_vs_{k}.png"))
    files.append(_top_rounds_plot(ranking.points[:top], keys, compared, out_dir / "psnr_per_round_top.png"))
    rungs = asha_rungs(spec.grace_period, spec.reduction_factor, spec.max_rounds) if spec.scheduler == "asha" else []
    files.append(_asha_plot(group_points(rows), rungs, out_dir / "trials_per_round.png"))
    files.append(_markdown(spec, rows, ranking, top, keys, files, compared, d, out_dir))
    return files


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    return "" if v is None else str(v)


#: how report.md names a few keys, as the papers write them
PRETTY_KEYS = {"fl.lambda_hifr": "λ_HiFr", "fl.lambda_vsr": "λ_VSR", "fl.mu": "μ", "fl.alpha": "α"}


def _describe(point, keys: list[str], values_only: bool = False) -> str:
    shown = [k for k in keys if point.rows[0].get(k) is not None]
    if not shown:
        return point.label
    if values_only and len(keys) == 1:
        return _fmt(point.rows[0][shown[0]])
    return ", ".join(f"{PRETTY_KEYS.get(k, k)} = {_fmt(point.rows[0][k])}" for k in shown)


def _pm(iv, digits: int, unit: str = "", sign: bool = False) -> str:
    """``25.61 ± 0.04 dB`` (the mean alone when there is no interval)."""
    return iv.pm(digits, sign) + unit


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def winner_sentence(ranking, keys: list[str], digits: int) -> str:
    """The winner and its tie set in words (report.md)."""
    from fedvsr.sweeps.points import method_words

    if not ranking.points:
        return "No finished trial: no winner."
    top, rest = ranking.points[0], ranking.points[1:]
    unit = " dB" if "psnr" in ranking.column else ""
    value = f"{_pm(top.interval, digits, unit)} (n={top.n})"
    if top.n < 2:
        runner = (
            f" from the runner-up, {_describe(rest[0], keys)} ({rest[0].interval.mean:.{digits}f}{unit})"
            if rest
            else ""
        )
        return (
            f"{_describe(top, keys)} has the highest single run, {value}; no interval: rerun with replicates "
            f"(`replicates: 3` in the spec) to tell it{runner}."
        )
    if not rest:
        return f"{_describe(top, keys)} wins with {value}; it is the only finished point."
    ties = [_describe(p, keys, values_only=True) for p in rest if p.tie]
    untested = [_describe(p, keys, values_only=True) for p in rest if p.tie is None]
    level = f"{ranking.level:.0%}"
    # "wins" only when every other point was tested and told apart from it: a tie is never a winner
    text = (
        f"{_describe(top, keys)} has the highest mean, {value}"
        if ties or untested
        else f"{_describe(top, keys)} wins with {value}"
    )
    if ties:
        verb = "is" if len(ties) == 1 else "are"
        text += (
            f"; {_and(ties)} {verb} not distinguishable from it at {level} ({method_words(rest)}): a tie "
            f"between these {len(ties) + 1} points, no single winner"
        )
    elif len(untested) < len(rest):
        text += (
            f"; every other {'tested ' if untested else ''}point is distinguishable from it at {level} "
            f"({method_words(rest)})"
        )
    if untested:
        text += f"; {_and(untested)} could not be tested (a single run)"
    return text + "."


def _markdown(spec, rows, ranking, top: int, keys, images, compared, sweep_dir: Path, out_dir: Path) -> Path:
    from fedvsr.stats import decimals_for, mean_interval

    trials = {r["trial"]: r["status"] for r in rows}
    counts = {s: sum(v == s for v in trials.values()) for s in ("finished", "stopped", "error", "incomplete")}
    column, shown = ranking.column, ranking.points[:top]
    digits = decimals_for([p.interval for p in ranking.points])
    lines = [
        f"# Sweep `{spec.name}`",
        "",
        spec.description,
        "",
        f"- search: {spec.search}, {len(trials)} trials ("
        + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        + f"), {len(rows)} runs",
        f"- scheduler: {spec.scheduler}"
        + (
            f" (grace period {spec.grace_period} rounds, reduction factor {spec.reduction_factor})"
            if spec.scheduler == "asha"
            else ""
        ),
        f"- metric: {spec.metric} ({spec.mode}), points ranked by their mean `{column}` over replicates, "
        f"finished trials only",
        "- swept: " + "; ".join(f"`{p.name}` {p.describe()}" for p in spec.params),
        "- fixed: " + ", ".join(f"`{k}={_fmt(v)}`" for k, v in spec.fixed.items()),
        "",
        "## The top point and its ties",
        "",
        winner_sentence(ranking, keys, digits),
        "",
    ]
    if shown:
        lines += [
            f"## Top {len(shown)}",
            "",
            f"Mean ± half-width of the {ranking.level:.0%} t interval over n replicates; tie: not "
            f"distinguishable from #1 at {ranking.level:.0%}.",
            "",
            "| # | tie | " + " | ".join([column, "n", "gain_db", "best_psnr", "final_ssim", *keys, "trial"]) + " |",
            "|" + "---|" * (len(keys) + 8),
        ]
        for i, p in enumerate(shown, 1):
            best = mean_interval([r["best_psnr"] for r in p.rows]).mean
            ssim = mean_interval([r["final_ssim"] for r in p.rows]).mean
            cells = [
                {True: "=", False: "", None: "?"}[p.tie],
                _pm(p.interval, digits),
                str(p.n),
                _pm(p.gain, digits, sign=True) if p.gain else "",
                f"{best:.{digits}f}",
                f"{ssim:.4f}",
                *(_fmt(p.rows[0].get(k)) for k in keys),
                p.label,
            ]
            lines.append(f"| {i} | " + " | ".join(cells) + " |")
        lines += [
            "",
            f"The winner as a config: `fedvsr best {sweep_dir} > best.yaml`, then "
            "`fedvsr simulate --config best.yaml`.",
            "",
        ]
    if compared:
        lines += ["## Compared runs", ""]
        for c in compared:
            finals = [r["final_psnr"] for r in c.rows if r.get("final_psnr") is not None]
            if finals:
                iv = mean_interval(finals)
                lines.append(f"- {c.label}: final PSNR {_pm(iv, digits)} dB (n={iv.n}; {', '.join(c.folders)})")
        lines += [""]
    errors = {r["trial"]: r for r in rows if r["status"] == "error"}
    if errors:
        lines += (
            ["## Failed trials", ""]
            + [f"- {t}: {r['error'].splitlines()[0] if r['error'] else ''}" for t, r in errors.items()]
            + [""]
        )
    lines += ["## Figures", ""] + [f"![{p.stem}]({os.path.relpath(p, out_dir)})" for p in images] + [""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
