"""The ``fedvsr`` command.

fedvsr simulate [--config FILE] [--set key=value ...] [--out DIR] [--resume] [--address ADDR]
                [--replicates N [--vary-data]]
fedvsr train-central [--config FILE] [--set key=value ...] [--out DIR] [--workers N] [--gpu]
fedvsr models [--json] [--flops]
fedvsr sweep SPEC [--out DIR] [--trials N] [--concurrent K] [--resume] [--address ADDR] [--set k=v ...]
fedvsr best DIR... [--metric psnr|ssim|loss] [--where k=v ...] [--top K] [--json]
fedvsr report DIR
fedvsr upscale IN OUT --checkpoint RUN_OR_FILE [--tile N] [--tile-overlap N] [--side-by-side] [--device D]
fedvsr evaluate --checkpoint RUN_OR_FILE --data PATH... [--degradation D] [--out FILE.parquet]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path

from fedvsr.config import MAX_REPLICATES, SEED_MAX, ConfigError, ExperimentConfig, load_config
from fedvsr.platform.cluster import ClusterUnreachable
from fedvsr.platform.errors import RunFailed
from fedvsr.preflight import check_output_folder
from fedvsr.starting import say_starting

#: the files that make a folder a run of ``fedvsr simulate`` (one run, or a group of replicates)
RUN_FILES = ("config.yaml", "replicates.json")


def _simulate(args: argparse.Namespace) -> int:
    from fedvsr.platform.run import run_experiment

    cfg = _simulate_config(args)
    out = Path(args.out or f"runs/sim-{time.strftime('%Y%m%d-%H%M%S')}")
    args.out = str(out)  # for the interrupted message of main()
    check_output_folder(out, resume=args.resume, ours=RUN_FILES)
    args.runs_in = out  # main() draws the plots of the runs finished in it
    from fedvsr.platform.replicates import is_replicate_group
    from fedvsr.tracking import ends_on_error

    track = _mlflow_run(args, out)  # None without --mlflow; the store is checked before Ray starts
    if cfg is not None:
        say_starting(cfg)
    else:
        print(f"fedvsr: resuming the run in {out}: starting Ray and its workers ...", flush=True)
    if args.resume and args.address:  # a resumed run keeps its saved config; --address says where it runs now
        from fedvsr.platform.cluster import join_cluster

        join_cluster(args.address, include_dashboard=False, logging_level="ERROR", log_to_driver=True)
    if args.replicates != 1 or args.vary_data or (args.resume and is_replicate_group(out)):
        return _simulate_replicates(args, cfg, out)

    def on_start(info: dict) -> None:
        b, i = info["bicubic"], info["initial"]
        print(f"fedvsr: {info['params']:,} parameters, {info['workers']} workers, output in {out}", flush=True)
        print(f"bicubic    psnr {b['psnr']:6.2f}  ssim {b['ssim']:.4f}", flush=True)
        if info["start_round"] == 1:
            print(f"round   0  psnr {i['psnr']:6.2f}  ssim {i['ssim']:.4f}  (initial model)", flush=True)
        else:
            print(f"resuming at round {info['start_round']}", flush=True)
        if track:
            track.start()

    tty = sys.stdout.isatty()

    def on_progress(item: dict) -> None:  # a bar on a terminal; nothing between round lines otherwise
        if tty:
            done, total = item["progress"]
            bar = "#" * (20 * done // total)
            print(f"\rround {item['round']:3d}  [{bar:<20}] {done}/{total} clients", end="", flush=True)

    def on_round(row: dict) -> None:
        extra = "".join(f"  {row[k]} {k}" for k in ("retried", "cut") if row.get(k))
        extra += "  FAILED" if row.get("status") == "failed" else ""
        clear = "\r\033[K" if tty else ""  # wipe the progress bar
        print(
            f"{clear}round {row['round']:3d}  psnr {row['psnr']:6.2f}  ssim {row['ssim']:.4f}  "
            f"loss {row['train_loss']:.5f}  clients {row['aggregated']}/{row['clients']}{extra}  "
            f"{row['updates_per_s']:.2f} upd/s  {row['samples_per_s']:.1f} samples/s  {row['seconds']:5.1f}s",
            flush=True,
        )
        if track:
            track.round(row)

    with ends_on_error(track):
        summary = run_experiment(
            cfg, out, resume=args.resume, on_round=on_round, on_start=on_start, on_progress=on_progress
        )
    _end_mlflow(track, out)
    gain = summary["final_psnr"] - summary["bicubic_psnr"]
    print(
        f"final      psnr {summary['final_psnr']:6.2f}  ssim {summary['final_ssim']:.4f}  "
        f"({gain:+.2f} dB over bicubic)  -> {out}/summary.json",
        flush=True,
    )
    return 0


def _simulate_config(args: argparse.Namespace) -> ExperimentConfig | None:
    """The experiment ``fedvsr simulate`` runs (its replicate seeds checked), or None with ``--resume``, which
    continues the run in ``--out`` with its saved config: a flag that would change it is a ConfigError."""
    if args.resume:
        if not args.out:
            raise ConfigError("--resume needs --out DIR, the folder of the run to continue")
        given = [
            flag
            for flag, on in (
                ("--config", args.config),
                ("--set", args.set),
                ("--vary-data", args.vary_data),
                ("--replicates", args.replicates != 1),
            )
            if on
        ]
        if given:
            raise ConfigError(
                f"--resume continues a run as it was started (the config saved in --out); "
                f"{', '.join(given)} cannot change it: drop {'them' if len(given) > 1 else 'it'}, or "
                f"start a new run in another --out"
            )
        return None
    cfg = load_config(args.config, [*args.set, *([f"platform.address={args.address}"] if args.address else [])])
    _check_replicate_seeds(cfg, args.replicates, args.vary_data)
    return cfg


def _end_mlflow(track, out: Path) -> None:
    """Draw the run's plots (psnr.png) so that an MLflow run logs them, then end the tracking; nothing without it.
    (``main`` draws the plots of a run however it ended, too: drawing is skipped when they are up to date.)"""
    if track is None:
        return
    from fedvsr.report import plot_runs

    plot_runs(out)
    track.end()


def _mlflow_run(args: argparse.Namespace, out: Path):
    """``--mlflow URI``: the run's :class:`fedvsr.tracking.MlflowRun` (its store checked); None without it."""
    from fedvsr.platform.replicates import is_replicate_group
    from fedvsr.tracking import mlflow_run

    if args.mlflow and (args.replicates != 1 or args.vary_data or (args.resume and is_replicate_group(out))):
        raise ConfigError(
            "--mlflow does not log a group of --replicates yet; run `fedvsr sweep` with "
            "replicates, or each seed as its own `fedvsr simulate --mlflow` run"
        )
    return mlflow_run(args.mlflow, out)


def _check_replicate_seeds(cfg: ExperimentConfig, replicates: int, vary_data: bool) -> None:
    """Replicate r runs seed + r (and data.seed + r with --vary-data): the last must still be a valid seed."""
    if not 1 <= replicates <= MAX_REPLICATES:
        raise ConfigError(
            f"--replicates = {replicates} is not allowed; expected an integer >= 1 and <= {MAX_REPLICATES}"
        )
    if vary_data and replicates < 2:
        raise ConfigError("--vary-data needs --replicates N with N >= 2 (it varies data.seed across the replicates)")
    for key, seed in (("seed", cfg.seed), *((("data.seed", cfg.data.seed),) if vary_data else ())):
        if seed + replicates - 1 > SEED_MAX:
            raise ConfigError(
                f"{key} = {seed} with --replicates {replicates} gives replicate seeds up to "
                f"{seed + replicates - 1}, above {SEED_MAX} (2^63 - 1); allowed: {key} <= "
                f"{SEED_MAX - replicates + 1}"
            )


def _simulate_replicates(args: argparse.Namespace, cfg, out: Path) -> int:
    """``fedvsr simulate --replicates N``: the replicates stepped together, one aggregate line per round."""
    from fedvsr.platform.replicates import run_replicates

    tty = sys.stdout.isatty()

    def on_start(info: dict) -> None:
        b, i = info["bicubic"], info["initial"]
        how = "each with its own workers" if info["parallel"] else "sharing the workers' CPUs, one after another"
        print(
            f"fedvsr: {info['params']:,} parameters, {info['replicates']} replicates (training seeds "
            f"{', '.join(map(str, info['seeds']))}; data seeds {', '.join(map(str, sorted(set(info['data_seeds']))))}"
            f"), {info['workers']} workers each, {how}; output in {out}",
            flush=True,
        )
        print(f"bicubic    psnr {b['psnr']:6.2f}  ssim {b['ssim']:.4f}  (replicate 0)", flush=True)
        if info["start_round"] == 1:
            print(f"round   0  psnr {i['psnr']:6.2f}  ssim {i['ssim']:.4f}  (initial model, replicate 0)", flush=True)
        else:
            print(f"resuming at round {info['start_round']}", flush=True)

    def on_progress(item: dict) -> None:
        if tty:
            done, total = item["progress"]
            print(
                f"\rround {item['round']:3d}  replicate {item['replicate']}  [{'#' * (20 * done // total):<20}] "
                f"{done}/{total} clients",
                end="",
                flush=True,
            )

    def on_round(agg: dict, rows: list[dict]) -> None:
        clear = "\r\033[K" if tty else ""
        each = " ".join(f"{r['psnr']:.2f}" for r in rows)
        print(
            f"{clear}round {agg['round']:3d}  psnr {_pm(agg, 'psnr', 3)}  ssim {_pm(agg, 'ssim', 4)}  "
            f"loss {agg['train_loss_mean']:.5f}  (n={agg['n']}: {each})  {agg['seconds']:5.1f}s",
            flush=True,
        )

    s = run_replicates(
        cfg,
        out,
        args.replicates,
        args.vary_data,
        resume=args.resume,
        on_start=on_start,
        on_round=on_round,
        on_progress=on_progress,
    )
    print(
        f"final      psnr {_pm(s, 'final_psnr', 3, '')}  ssim {_pm(s, 'final_ssim', 4, '')}  "
        f"({_pm(s, 'gain_db', 2, '', sign=True)} dB over bicubic, 95% interval over {s['replicates']} replicates)"
        f"  -> {out}/summary.json",
        flush=True,
    )
    return 0


def _pm(row: dict, key: str, digits: int, suffix: str = "_mean", sign: bool = False) -> str:
    """``"25.431 +- 0.052"``: a mean and the half width of its 95% interval (just the mean when n = 1)."""
    mean, low, high = row[f"{key}{suffix}"], row.get(f"{key}_low", math.nan), row.get(f"{key}_high", math.nan)
    text = f"{mean:+.{digits}f}" if sign else f"{mean:.{digits}f}"
    return text if not math.isfinite(high - low) else f"{text} +- {(high - low) / 2:.{digits}f}"


def _train_central(args: argparse.Namespace) -> int:
    from fedvsr.platform.central import CentralTrainingError, central_config, run_central

    cfg = load_config(args.config, args.set)
    out = Path(args.out or f"runs/central-{time.strftime('%Y%m%d-%H%M%S')}")
    check_output_folder(out, ours=RUN_FILES)
    args.runs_in = out  # main() draws the plots of the runs finished in it
    say_starting(central_config(cfg, args.workers, True if args.gpu else None))
    from fedvsr.tracking import CentralTracking, ends_on_error

    track = CentralTracking(out, args.mlflow)  # TensorBoard events, --mlflow (checked before Ray starts)

    def on_start(info: dict) -> None:
        track.start()
        b, i = info["bicubic"], info["initial"]
        print(
            f"fedvsr: {info['params']:,} parameters, central training on {info['workers']} Ray Train workers "
            f"({info['device']}), output in {out}",
            flush=True,
        )
        print(f"bicubic    psnr {b['psnr']:6.2f}  ssim {b['ssim']:.4f}", flush=True)
        print(f"epoch   0  psnr {i['psnr']:6.2f}  ssim {i['ssim']:.4f}  (initial model)", flush=True)

    def on_epoch(row: dict) -> None:
        print(
            f"epoch {row['round']:3d}  psnr {row['psnr']:6.2f}  ssim {row['ssim']:.4f}  "
            f"loss {row['train_loss']:.5f}  clips {row['samples']}  {row['seconds']:5.1f}s",
            flush=True,
        )
        track.round(row)

    try:
        with ends_on_error(track):
            summary = run_central(
                cfg, out, workers=args.workers, use_gpu=True if args.gpu else None, on_start=on_start, on_epoch=on_epoch
            )
    except CentralTrainingError as err:
        print(f"fedvsr: {err}", file=sys.stderr)
        return 1
    _end_mlflow(track, out)
    gain = summary["final_psnr"] - summary["bicubic_psnr"]
    print(
        f"final      psnr {summary['final_psnr']:6.2f}  ssim {summary['final_ssim']:.4f}  "
        f"({gain:+.2f} dB over bicubic)  -> {out}/summary.json",
        flush=True,
    )
    return 0


def _models(args: argparse.Namespace) -> int:
    from fedvsr.models.registry import get_entry, model_names

    rows = []
    for name in model_names():
        entry = get_entry(name)
        for preset in entry.presets:
            rows.append(_profile(name, preset, args.flops))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(
        f"{'name':<10} {'preset':<14} {'params':>12} {'frames':>6} {'output':>7}"
        + (f" {'GFLOPs@64x64':>13}" if args.flops else "")
    )
    for r in rows:
        line = (
            f"{r['name']:<10} {r['preset']:<14} {r['params']:>12,} {r['num_frames']:>6} "
            f"{'centre' if r['center_output'] else 'all':>7}"
        )
        if args.flops:
            line += f" {r['flops'] / 1e9:>13.2f}"
        print(line)
    return 0


def _profile(name: str, preset: str, flops: bool) -> dict:
    from fedvsr.models.profile import profile_model
    from fedvsr.models.registry import build_model, count_params

    if flops:
        return profile_model(name, preset)
    m = build_model(name, preset)
    return {
        "name": name,
        "preset": preset,
        "params": count_params(m),
        "num_frames": m.num_frames,
        "center_output": m.center_output,
        "scale": m.scale,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedvsr", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    from fedvsr.inference_cli import add_inference_commands
    from fedvsr.sweeps.cli import add_commands

    _simulate_parser(sub)
    _train_central_parser(sub)
    _models_parser(sub)
    _check_parser(sub)
    add_inference_commands(sub)  # upscale, evaluate
    add_commands(sub)  # sweep, best, compare, report
    return parser


def _simulate_parser(sub) -> None:
    """``fedvsr simulate``: one federated experiment (or a group of replicates)."""
    sim = sub.add_parser("simulate", help="run one federated experiment")
    sim.add_argument("--config", help="YAML experiment config (defaults apply to missing keys)")
    sim.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set fl.rounds=20 (repeatable)",
    )
    sim.add_argument("--out", help="output folder (default: runs/sim-<time>)")
    sim.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    sim.add_argument(
        "--replicates",
        type=int,
        default=1,
        metavar="N",
        help="run the experiment under N training seeds (seed, seed+1, ...; the data seed fixed) in "
        "one folder, with the mean and 95%% interval per round (default 1)",
    )
    sim.add_argument(
        "--vary-data",
        action="store_true",
        help="with --replicates: vary data.seed with the training seed (other videos, held-out clips "
        "and partition per replicate)",
    )
    sim.add_argument(
        "--mlflow",
        metavar="URI",
        help="log the run to this MLflow tracking server or store, e.g. "
        "sqlite:///mlflow.db: the config as params, PSNR / SSIM / loss per round, the YAML, tables "
        "and plots as artefacts (docs/tracking.md)",
    )
    sim.add_argument(
        "--address",
        help="Ray cluster to run on, host:port of its head (or auto); same as --set "
        "platform.address=...; default: the job's cluster under `ray job submit`, else a local Ray",
    )
    sim.set_defaults(func=_simulate)


def _train_central_parser(sub) -> None:
    """``fedvsr train-central``: the centralized upper bound on Ray Train."""
    central = sub.add_parser(
        "train-central",
        help="the centralized upper bound: train on all clients' data pooled (Ray Train, data-parallel)",
    )
    central.add_argument("--config", help="YAML experiment config (the same as simulate's)")
    central.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set fl.rounds=20 (epochs here; repeatable)",
    )
    central.add_argument("--out", help="output folder (default: runs/central-<time>)")
    central.add_argument("--workers", type=int, help="Ray Train workers (default: platform.workers)")
    central.add_argument(
        "--mlflow", metavar="URI", help="log the run to this MLflow tracking server or store (as simulate's --mlflow)"
    )
    central.add_argument("--gpu", action="store_true", help="one GPU per worker (default: platform.gpus_per_worker)")
    central.set_defaults(func=_train_central)


def _models_parser(sub) -> None:
    """``fedvsr models``: the model families and presets with their sizes."""
    models = sub.add_parser(
        "models", help="list model families and presets with their sizes (parameters; FLOPs with --flops)"
    )
    models.add_argument("--json", action="store_true", help="print a JSON list of objects")
    models.add_argument(
        "--flops",
        action="store_true",
        help="also count the FLOPs of one forward pass on a 64x64 LR clip (runs every preset once: "
        "tens of seconds of CPU; without it only the parameters are counted)",
    )
    models.set_defaults(func=_models)


def _check_parser(sub) -> None:
    """``fedvsr check``: whether a cluster will let this machine in, before anything is submitted."""
    check = sub.add_parser(
        "check",
        help="whether a Ray cluster lets this machine in: host:port (a driver, as simulate/sweep --address) or "
        "http://host:port (its dashboard, as ray job submit --address)",
    )
    check.add_argument("address", help="the cluster's GCS host:port, or its dashboard URL (e.g. http://127.0.0.1:8265)")
    check.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for an answer (default 5)")
    check.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> int:
    from fedvsr.platform.cluster import check_cluster

    print(check_cluster(args.address, args.timeout))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one ``fedvsr`` command; returns its exit code: 0, 1 (the command failed), 2 (a config, input or
    cluster error: one ``fedvsr: ...`` line, before Ray starts where it can be known then), 130 (interrupted),
    141 (the reader of its output went away, as ``fedvsr best --json | head``: quietly, as 128 + SIGPIPE)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ClusterUnreachable as err:
        print(f"fedvsr: cluster error: {err}", file=sys.stderr)
        return 2
    except ConfigError as err:
        print(f"fedvsr: config error: {err}", file=sys.stderr)
        return 2
    except RunFailed as err:  # too few clients trained in a round (fl.min_clients); what was done is kept
        print(f"fedvsr: run failed: {err}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print(f"fedvsr: interrupted{_how_to_continue(args)}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _discard_stdout()
        return 141
    finally:
        _draw_plots(args)


def _draw_plots(args: argparse.Namespace) -> None:
    """``psnr.png`` of every run that ``simulate``, ``train-central`` or ``sweep`` finished in its output folder
    (``args.runs_in``, set once the folder is checked), also when the command was interrupted or a later run
    failed: drawn here from the runs' results, as the runtime never draws (:func:`fedvsr.report.plot_runs`)."""
    runs_in = getattr(args, "runs_in", None)
    if runs_in is not None and Path(runs_in).is_dir():
        from fedvsr.report import plot_runs

        try:
            plot_runs(runs_in)
        except Exception as err:  # a figure must never turn a finished command into a crash; its results are saved
            print(f"fedvsr: the runs' psnr.png were not drawn ({type(err).__name__}: {err})", file=sys.stderr)


def _how_to_continue(args: argparse.Namespace) -> str:
    """``"; continue with: fedvsr simulate --resume --out DIR"`` when an interrupted command left a run to resume."""
    out = getattr(args, "out", None)
    if args.command == "simulate" and out and any((Path(out) / name).is_file() for name in RUN_FILES):
        return f"; continue with: fedvsr simulate --resume --out {shlex.quote(out)}"
    if args.command == "simulate" and out:
        return f"; nothing to resume in {out}"
    return ""


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush at exit finds no closed pipe (Python's
    documented recipe for SIGPIPE); nothing to do when stdout is not a file descriptor (a test's capture)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
