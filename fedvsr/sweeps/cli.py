"""The sweep and result commands of ``fedvsr``: ``sweep``, ``best``, ``compare`` and ``report``.

    fedvsr sweep SPEC [--out DIR] [--trials N] [--concurrent K] [--seed S] [--replicates N] [--address ADDR]
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
import sys
import time
from pathlib import Path

from fedvsr.config import ConfigError


def _sweep(args: argparse.Namespace) -> int:
    from fedvsr.sweeps.spec import list_specs, load_spec

    if args.list:
        specs = list_specs()
        width = max(len(n) for n, _ in specs)
        for name, description in specs:
            print(f"{name:<{width}}  {' '.join(description.split())}")
        return 0
    if not args.spec and not args.resume:
        raise ConfigError("fedvsr sweep needs a SPEC (a shipped name, see --list, or a YAML file), "
                          "or --resume --out DIR")
    if args.resume:
        if not args.out:
            raise ConfigError("--resume needs --out DIR, the folder of the sweep to continue")
        if args.set or args.trials is not None or args.seed is not None or args.replicates is not None:
            raise ConfigError("--resume continues a sweep as it was started; --set, --trials, --seed and --replicates "
                              "cannot change "
                              "it (Tune cannot change a sweep's search space on restore)")
    spec = load_spec(args.spec, args.set, args.trials, args.seed, args.replicates) if args.spec else None
    out = Path(args.out or f"runs/sweep-{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}")

    from fedvsr.sweeps.runner import run_sweep

    run_sweep(spec, out, concurrent=args.concurrent, resume=args.resume, address=args.address)
    print(f"next: fedvsr best {out}   |   fedvsr report {out}", flush=True)
    return 0


def _best(args: argparse.Namespace) -> int:
    from fedvsr.sweeps.results import (
        best_yaml,
        collect_rows,
        parse_where,
        point_json,
        rank_points,
        top_table,
        winner_warnings,
    )

    try:
        rows = collect_rows(args.dirs)
        ranking = rank_points(rows, args.metric, args.mode, parse_where(args.where), args.include_stopped)
        ranked = ranking.points
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(str(err)) from None
    if not ranked:
        statuses = {}
        for r in rows:
            statuses[r["status"]] = statuses.get(r["status"], 0) + 1
        raise ConfigError(f"no run to rank among {len(rows)} ({', '.join(f'{n} {s}' for s, n in statuses.items())})"
                          + (" matching --where" if args.where else "")
                          + ("" if args.include_stopped else "; --include-stopped also ranks trials ASHA stopped"))
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
    sw = sub.add_parser("sweep", help="run a Ray Tune sweep of experiments (Optuna or grid, ASHA on rounds)",
                        description="Run a sweep: SPEC is a shipped spec (fedvsr sweep --list) or a YAML file.")
    sw.add_argument("spec", nargs="?", help="shipped spec name or YAML file")
    sw.add_argument("--list", action="store_true", help="list the shipped specs and exit")
    sw.add_argument("--out", help="sweep folder (default: runs/sweep-<spec>-<time>)")
    sw.add_argument("--trials", type=int, help="optuna: number of trials (overrides the spec)")
    sw.add_argument("--concurrent", type=int, help="trials running at once (default: as many as resources allow)")
    sw.add_argument("--seed", type=int, help="seed of the searcher (overrides the spec's)")
    sw.add_argument("--replicates", type=int, metavar="N", help="training seeds per point (overrides the spec's "
                    "`replicates`): each trial runs N replicates and ASHA / Optuna decide on their mean")
    sw.add_argument("--address", help="Ray cluster to run on (host:port of its head, or auto); default: the job's "
                    "cluster under `ray job submit`, else a local Ray. On several nodes --out must be on a file "
                    "system they all mount (docs/cluster.md)")
    sw.add_argument("--resume", action="store_true", help="continue the sweep in --out (finished trials are kept)")
    sw.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="fix a config key for every trial, e.g. --set fl.rounds=10 (repeatable)")
    sw.set_defaults(func=_sweep)

    best = sub.add_parser("best", help="the best config of sweeps and runs (YAML for simulate --config)")
    best.add_argument("dirs", nargs="+", metavar="DIR", help="sweep folders, run folders, or folders holding them")
    best.add_argument("--metric", default="psnr", help="psnr, ssim, loss (final values) or a column (best_psnr)")
    best.add_argument("--mode", choices=["max", "min"], help="default: max for psnr/ssim, min for loss")
    best.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                      help="only runs with this config value, e.g. --where fl.strategy=fedvsr (repeatable)")
    best.add_argument("--top", type=int, help="print the top K as a table instead of the winner's YAML")
    best.add_argument("--include-stopped", action="store_true",
                      help="also rank trials ASHA stopped early (their last-round value)")
    best.add_argument("--json", action="store_true", help="print JSON rows")
    best.set_defaults(func=_best)

    cmp = sub.add_parser("compare", help="experiments side by side with intervals and paired tests (the first is the "
                         "reference)", description="Compare run folders, replicate groups, folders of runs of one "
                         "config, or sweeps (each contributes its best point by mean) against the first.")
    cmp.add_argument("dirs", nargs="+", metavar="RUN_OR_SWEEP", help="two or more folders; the first is the reference")
    cmp.add_argument("--label", action="append", metavar="NAME",
                     help="a name per folder, in order (default: the config keys that differ, e.g. fl.strategy=fedvsr)")
    cmp.add_argument("--metric", default="psnr", help="what the paired difference is of: psnr, ssim, loss (final "
                     "values) or a column (best_psnr)")
    cmp.add_argument("--out", help="folder of compare.md, compare.png, compare.json (default: compare-<time>)")
    cmp.set_defaults(func=_compare)

    rep = sub.add_parser("report", help="plots and a Markdown summary of a sweep")
    rep.add_argument("dir", help="sweep folder")
    rep.add_argument("--out", help="report folder (default: DIR/report)")
    rep.add_argument("--top", type=int, default=5, help="trials drawn in the per-round plot")
    rep.add_argument("--compare", nargs="*", default=[], metavar="RUN",
                     help="run folders drawn beside the sweep (e.g. a centralized upper bound)")
    rep.set_defaults(func=_report)


