"""The sweep and result commands of ``fedvsr``: ``sweep``, ``best``, ``compare`` and ``report``.

fedvsr sweep SPEC [--out DIR] [--trials N] [--concurrent K|auto] [--seed S] [--replicates N] [--address ADDR]
             [--set k=v ...]
fedvsr sweep --resume --out DIR
fedvsr sweep --list
fedvsr best DIR... [--metric psnr|ssim|loss|COLUMN] [--mode max|min] [--where k=v ...] [--top K] [--json]
fedvsr compare RUN_OR_SWEEP RUN_OR_SWEEP... [--label NAME ...] [--metric M] [--out DIR]
fedvsr report DIR [--out DIR] [--top K]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from fedvsr.config import ConfigError
from fedvsr.preflight import check_output_folder
from fedvsr.sweeps.results import SWEEP_FILE


def _sweep(args: argparse.Namespace) -> int:
    from fedvsr.sweeps.spec import list_specs, load_spec

    if args.list:
        specs = list_specs()
        width = max(len(n) for n, _ in specs)
        for name, description in specs:
            print(f"{name:<{width}}  {' '.join(description.split())}")
        return 0
    if not args.spec and not args.resume:
        raise ConfigError(
            "fedvsr sweep needs a SPEC (a shipped name, see --list, or a YAML file), or --resume --out DIR"
        )
    if args.resume:
        if not args.out:
            raise ConfigError("--resume needs --out DIR, the folder of the sweep to continue")
        if args.set or args.trials is not None or args.seed is not None or args.replicates is not None:
            raise ConfigError(
                "--resume continues a sweep as it was started; --set, --trials, --seed and --replicates "
                "cannot change "
                "it (Tune cannot change a sweep's search space on restore)"
            )
    spec = load_spec(args.spec, args.set, args.trials, args.seed, args.replicates) if args.spec else None
    out = Path(args.out or f"runs/sweep-{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    check_output_folder(out, resume=args.resume, ours=(SWEEP_FILE,), what="sweep")
    args.runs_in = out  # fedvsr.cli.main draws the plots of the trials finished in it
    if isinstance(args.concurrent, int) and args.concurrent < 1:
        raise ConfigError(f"--concurrent = {args.concurrent} is not allowed; expected an integer >= 1 or auto")
    if spec is not None:
        import copy

        from fedvsr.starting import say_starting
        from fedvsr.sweeps.trial import trial_plan

        base = copy.deepcopy(trial_plan(spec, {}).cfg)  # built once per trial and for the base (sweeps.trial)
        if args.address:
            base.platform.address = args.address
        _check_points_fit(spec, base)
        w = base.platform.workers
        say_starting(base, prefix="fedvsr sweep", workers=f"{w} worker{'s' if w > 1 else ''} per trial")
    else:
        print(f"fedvsr sweep: resuming the sweep in {out}: starting Ray ...", flush=True)

    from fedvsr.sweeps.runner import SweepInterrupted, run_sweep
    from fedvsr.tracking import ends_on_error

    again = f"fedvsr sweep --resume --out {shlex.quote(str(out))}"
    track = _mlflow_sweep(args.mlflow, out, spec)  # None without --mlflow; the store is checked before Ray starts
    try:
        with ends_on_error(track, killed=(SweepInterrupted, KeyboardInterrupt)):
            run_sweep(
                spec,
                out,
                concurrent=args.concurrent,
                resume=args.resume,
                address=args.address,
                callbacks=[track] if track else [],
            )
    except SweepInterrupted as err:
        print(f"fedvsr sweep: interrupted: {err}", file=sys.stderr, flush=True)
        print(f"fedvsr sweep: continue it with: {again}", file=sys.stderr, flush=True)
        return 130
    except KeyboardInterrupt:  # before Tune took over the signal: while Ray started, or checking the nodes
        saved = (out / SWEEP_FILE).is_file()
        print(
            "fedvsr sweep: interrupted "
            + (f"before its trials began; continue it with: {again}" if saved else "before anything was written"),
            file=sys.stderr,
            flush=True,
        )
        return 130
    if track:
        _end_mlflow_sweep(track, out)
    print(f"next: fedvsr best {out}   |   fedvsr report {out}", flush=True)
    return 0


def _concurrent(text: str) -> int | str:
    """``--concurrent``: an integer >= 1 or ``auto``."""
    if text == "auto":
        return text
    try:
        return int(text)  # below 1: refused by the command, in one line with the other bad inputs
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--concurrent = {text} is not allowed; expected an integer >= 1 or auto"
        ) from None


def _mlflow_sweep(uri: str | None, out: Path, spec):
    """``--mlflow URI``: the Tune callback that logs the sweep and its trials (:class:`fedvsr.tracking.MlflowSweep`),
    after checking the store; None without the flag (on ``--resume``: the URI the sweep started with, if any)."""
    from fedvsr import tracking
    from fedvsr.sweeps.persist import saved_spec
    from fedvsr.sweeps.trial import run_folder_name

    saved = out / tracking.MLFLOW_FILE
    started = json.loads(saved.read_text()).get("tracking_uri") if saved.is_file() else None
    if spec is None and uri and uri != started:  # Tune restores a sweep with the callbacks it started with
        raise ConfigError(
            f"--mlflow {uri}: the sweep in {str(out)!r} was started "
            + (f"with --mlflow {started}" if started else "without --mlflow")
            + "; a resumed sweep keeps how it was tracked: drop --mlflow"
        )
    uri = uri or (started if spec is None else None)
    if not uri:
        return None
    tracking.check_mlflow(uri)
    spec = spec or saved_spec(out)

    def params(trial) -> dict:
        overrides = spec.trial_overrides(trial.config)
        try:
            config = tracking.flatten(spec.experiment_config(overrides).to_dict())
        except ConfigError:  # the trial fails with it (its error is in trials.parquet): its values are the params
            config = overrides
        return {**config, "fedvsr.trial": trial.trial_id}

    def folder(trial) -> Path:
        return out / "runs" / run_folder_name(trial.trial_id, spec.trial_overrides(trial.config))

    return tracking.MlflowSweep(uri, out, spec.name, params, folder)


def _end_mlflow_sweep(track, out: Path) -> None:
    """The sweep's parent run gets its spec, trials.parquet, the best config's YAML and the report's plots."""
    import tempfile

    from fedvsr import tracking
    from fedvsr.report import sweep_report
    from fedvsr.sweeps.persist import saved_spec
    from fedvsr.sweeps.points import best_yaml, rank_points
    from fedvsr.sweeps.results import collect_rows

    spec = saved_spec(out)
    with tempfile.TemporaryDirectory() as tmp:
        best = Path(tmp) / "best.yaml"
        try:
            best.write_text(best_yaml(rank_points(collect_rows([out]), spec.metric, spec.mode)))
            report = Path(tmp) / "report"
            sweep_report(out, report)
        except Exception as err:  # no finished trial to rank: the parent run still ends
            tracking.warn(out, f"MLflow: the sweep's best config or report not made: {type(err).__name__}: {err}")
            report = None
        track.end("FINISHED", [out / SWEEP_FILE, out / "trials.parquet", best], {"report": report} if report else None)


def _check_points_fit(spec, base) -> None:
    """Each grid point against this machine (:func:`fedvsr.preflight.check_fits_machine`): a point whose workers need
    more CPUs than a local Ray has would wait for them forever. (Optuna's points are drawn later; the fixed keys are
    checked with the base config.)"""
    from fedvsr.preflight import check_fits_machine
    from fedvsr.sweeps.trial import trial_plan

    if spec.search != "grid" or base.platform.address:
        return
    for point in spec.grid_points():
        try:
            check_fits_machine(trial_plan(spec, point).cfg)
        except ConfigError as err:
            values = ", ".join(f"{k}={v}" for k, v in point.items())
            raise ConfigError(f"sweep spec {spec.name!r}, grid point {values}: {err}") from None


def _best(args: argparse.Namespace) -> int:
    from fedvsr.sweeps.points import best_yaml, point_json, rank_points, top_table, winner_warnings
    from fedvsr.sweeps.results import collect_rows, parse_where

    try:
        rows = collect_rows(args.dirs)
        ranking = rank_points(rows, args.metric, args.mode, parse_where(args.where), args.include_stopped)
        ranked = ranking.points
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(str(err)) from None
    missing, total = _not_ranked(rows, args)
    if not ranked:
        raise ConfigError(
            f"no {'finished ' if missing else ''}run to rank among {len(rows)}"
            + (" matching --where" if args.where else "")
            + (f"; {missing}" if missing else "")
        )
    partial = total > len(rows) or any(r.get("status") not in ("finished", "stopped") for r in rows)
    if partial:  # rank what finished, say what is not there (a sweep whose trials ASHA stopped is not partial)
        print(
            f"fedvsr best: ranking the {ranking.runs} finished of {total} runs; {missing}", file=sys.stderr, flush=True
        )
    for warning in winner_warnings(ranking):
        print(warning, file=sys.stderr)
    if args.json:
        top = [point_json(p, i, ranking.column) for i, p in enumerate(ranked[: args.top or 1], 1)]
        print(json.dumps(top if args.top else top[0], indent=2, default=str))
    elif args.top:
        print(top_table(ranking, args.top), end="")
    else:
        print(best_yaml(ranking), end="")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from fedvsr.compare import run_compare

    try:
        out, text = run_compare(args.dirs, args.out, args.label, args.metric)
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(str(err)) from None
    print(text, end="")
    print(f"-> {out / 'compare.md'}, {out / 'compare.png'}, {out / 'compare.json'}")
    return 0


def _not_ranked(rows: list[dict[str, Any]], args: argparse.Namespace) -> tuple[str, int]:
    """What ``fedvsr best`` leaves out, counted by status, with what finishes it (``"not ranked: 2 incomplete
    (interrupted: ...), 1 stopped (...)"``; empty when every run and every trial the sweep planned is there), and
    the number of runs there should be."""
    rankable = {"finished", "stopped"} if args.include_stopped else {"finished"}
    counts: dict[str, int] = {}
    for r in rows:
        if r.get("status") not in rankable:
            counts[r.get("status")] = counts.get(r.get("status"), 0) + 1
    resume = "fedvsr sweep --resume --out DIR"
    if len(args.dirs) == 1 and (Path(args.dirs[0]) / SWEEP_FILE).is_file():  # its sweep.yaml counts the trials
        resume = f"fedvsr sweep --resume --out {shlex.quote(args.dirs[0])}"
        try:  # every trial runs the spec's replicates (a run folder each)
            saved = yaml.safe_load((Path(args.dirs[0]) / SWEEP_FILE).read_text()) or {}
            planned = int(saved.get("trials") or 0) * int(saved.get("replicates") or 1)
        except (OSError, ValueError, TypeError, yaml.YAMLError):
            planned = 0
        if planned > len(rows):
            counts["not started"] = planned - len(rows)
    why = {
        "incomplete": f"interrupted: {resume} finishes them"
        if "DIR" not in resume
        else f"interrupted: {resume} (a sweep) or fedvsr simulate --resume --out DIR (a run) finishes them",
        "not started": f"{resume} runs them",
        "stopped": "stopped early by ASHA: --include-stopped ranks them by their last round",
        "error": "failed: their errors are in trials.parquet",
    }
    parts = [f"{n} {status} ({why.get(status, 'not ranked')})" for status, n in sorted(counts.items())]
    return ("not ranked: " + ", ".join(parts) if parts else ""), len(rows) + counts.get("not started", 0)


def _report(args: argparse.Namespace) -> int:
    from fedvsr.report import sweep_report

    try:
        paths = sweep_report(args.dir, args.out, top=args.top, compare=args.compare)
    except FileNotFoundError as err:
        raise ConfigError(str(err)) from None
    for p in paths:
        print(p)
    return 0


def add_commands(sub) -> None:
    """Register ``sweep``, ``best``, ``compare`` and ``report`` on the ``fedvsr`` subparsers."""
    _sweep_parser(sub)
    _best_parser(sub)
    _compare_parser(sub)
    _report_parser(sub)


def _sweep_parser(sub) -> None:
    """``fedvsr sweep``: a Ray Tune sweep of experiments."""
    sw = sub.add_parser(
        "sweep",
        help="run a Ray Tune sweep of experiments (Optuna or grid, ASHA on rounds)",
        description="Run a sweep: SPEC is a shipped spec (fedvsr sweep --list) or a YAML file.",
    )
    sw.add_argument("spec", nargs="?", help="shipped spec name or YAML file")
    sw.add_argument("--list", action="store_true", help="list the shipped specs and exit")
    sw.add_argument("--out", help="sweep folder (default: runs/sweep-<spec>-<time>)")
    sw.add_argument("--trials", type=int, help="optuna: number of trials (overrides the spec)")
    sw.add_argument(
        "--concurrent",
        type=_concurrent,
        help="trials running at once (default: as many as resources "
        "allow), or auto: each trial's workers sized to the trial and as many trials side by side as "
        "keep the CPUs (or GPUs) busy",
    )
    sw.add_argument("--seed", type=int, help="seed of the searcher (overrides the spec's)")
    sw.add_argument(
        "--replicates",
        type=int,
        metavar="N",
        help="training seeds per point (overrides the spec's "
        "`replicates`): each trial runs N replicates and ASHA / Optuna decide on their mean",
    )
    sw.add_argument(
        "--address",
        help="Ray cluster to run on (host:port of its head, or auto); default: the job's "
        "cluster under `ray job submit`, else a local Ray. On several nodes --out must be on a file "
        "system they all mount (docs/cluster.md)",
    )
    sw.add_argument("--resume", action="store_true", help="continue the sweep in --out (finished trials are kept)")
    sw.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fix a config key for every trial, e.g. --set fl.rounds=10 (repeatable)",
    )
    sw.add_argument(
        "--mlflow",
        metavar="URI",
        help="log the sweep (a parent run) and each trial (a child run) to "
        "this MLflow tracking server or store, e.g. sqlite:///mlflow.db (docs/tracking.md)",
    )
    sw.set_defaults(func=_sweep)


def _best_parser(sub) -> None:
    """``fedvsr best``: the best config of sweeps and runs."""
    best = sub.add_parser("best", help="the best config of sweeps and runs (YAML for simulate --config)")
    best.add_argument("dirs", nargs="+", metavar="DIR", help="sweep folders, run folders, or folders holding them")
    best.add_argument("--metric", default="psnr", help="psnr, ssim, loss (final values) or a column (best_psnr)")
    best.add_argument("--mode", choices=["max", "min"], help="default: max for psnr/ssim, min for loss")
    best.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="only runs with this config value, e.g. --where fl.strategy=fedvsr (repeatable)",
    )
    best.add_argument("--top", type=int, help="print the top K as a table instead of the winner's YAML")
    best.add_argument(
        "--include-stopped", action="store_true", help="also rank trials ASHA stopped early (their last-round value)"
    )
    best.add_argument("--json", action="store_true", help="print JSON rows")
    best.set_defaults(func=_best)


def _compare_parser(sub) -> None:
    """``fedvsr compare``: experiments side by side."""
    cmp = sub.add_parser(
        "compare",
        help="experiments side by side with intervals and paired tests (the first is the reference)",
        description="Compare run folders, replicate groups, folders of runs of one "
        "config, or sweeps (each contributes its best point by mean) against the first.",
    )
    cmp.add_argument("dirs", nargs="+", metavar="RUN_OR_SWEEP", help="two or more folders; the first is the reference")
    cmp.add_argument(
        "--label",
        action="append",
        metavar="NAME",
        help="a name per folder, in order (default: the config keys that differ, e.g. fl.strategy=fedvsr)",
    )
    cmp.add_argument(
        "--metric",
        default="psnr",
        help="what the paired difference is of: psnr, ssim, loss (final values) or a column (best_psnr)",
    )
    cmp.add_argument("--out", help="folder of compare.md, compare.png, compare.json (default: compare-<time>)")
    cmp.set_defaults(func=_compare)


def _report_parser(sub) -> None:
    """``fedvsr report``: plots and a Markdown summary of a sweep."""
    rep = sub.add_parser("report", help="plots and a Markdown summary of a sweep")
    rep.add_argument("dir", help="sweep folder")
    rep.add_argument("--out", help="report folder (default: DIR/report)")
    rep.add_argument("--top", type=int, default=5, help="trials drawn in the per-round plot")
    rep.add_argument(
        "--compare",
        nargs="*",
        default=[],
        metavar="RUN",
        help="run folders drawn beside the sweep (e.g. a centralized upper bound)",
    )
    rep.set_defaults(func=_report)
