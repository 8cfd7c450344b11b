"""The ``fedvsr`` command.

    fedvsr simulate [--config FILE] [--set key=value ...] [--out DIR] [--resume] [--address ADDR]
    fedvsr train-central [--config FILE] [--set key=value ...] [--out DIR] [--workers N] [--gpu]
    fedvsr models [--json]
    fedvsr sweep SPEC [--out DIR] [--trials N] [--concurrent K] [--resume] [--address ADDR] [--set k=v ...]
    fedvsr best DIR... [--metric psnr|ssim|loss] [--where k=v ...] [--top K] [--json]
    fedvsr report DIR
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from fedvsr.config import ConfigError, load_config
from fedvsr.platform.cluster import ClusterUnreachable


def _simulate(args: argparse.Namespace) -> int:
    from fedvsr.platform.run import run_experiment

    if args.resume:
        if not args.out:
            raise ConfigError("--resume needs --out DIR, the folder of the run to continue")
        cfg = None
    else:
        cfg = load_config(args.config, [*args.set, *([f"platform.address={args.address}"] if args.address else [])])
    out = Path(args.out or f"runs/sim-{time.strftime('%Y%m%d-%H%M%S')}")
    if args.resume and args.address:  # a resumed run keeps its saved config; --address says where it runs now
        from fedvsr.platform.cluster import join_cluster

        join_cluster(args.address, include_dashboard=False, logging_level="ERROR", log_to_driver=True)

    def on_start(info: dict) -> None:
        b, i = info["bicubic"], info["initial"]
        print(f"fedvsr: {info['params']:,} parameters, {info['workers']} workers, output in {out}", flush=True)
        print(f"bicubic    psnr {b['psnr']:6.2f}  ssim {b['ssim']:.4f}", flush=True)
        if info["start_round"] == 1:
            print(f"round   0  psnr {i['psnr']:6.2f}  ssim {i['ssim']:.4f}  (initial model)", flush=True)
        else:
            print(f"resuming at round {info['start_round']}", flush=True)

    def on_round(row: dict) -> None:
        print(
            f"round {row['round']:3d}  psnr {row['psnr']:6.2f}  ssim {row['ssim']:.4f}  "
            f"loss {row['train_loss']:.5f}  clients {row['aggregated']}/{row['clients']}  "
            f"{row['seconds']:5.1f}s",
            flush=True,
        )

    summary = run_experiment(cfg, out, resume=args.resume, on_round=on_round, on_start=on_start)
    gain = summary["final_psnr"] - summary["bicubic_psnr"]
    print(
        f"final      psnr {summary['final_psnr']:6.2f}  ssim {summary['final_ssim']:.4f}  "
        f"({gain:+.2f} dB over bicubic)  -> {out}/summary.json",
        flush=True,
    )
    return 0


def _train_central(args: argparse.Namespace) -> int:
    from fedvsr.platform.central import CentralTrainingError, run_central

    cfg = load_config(args.config, args.set)
    out = Path(args.out or f"runs/central-{time.strftime('%Y%m%d-%H%M%S')}")
    def on_start(info: dict) -> None:
        b, i = info["bicubic"], info["initial"]
        print(f"fedvsr: {info['params']:,} parameters, central training on {info['workers']} Ray Train workers "
              f"({info['device']}), output in {out}", flush=True)
        print(f"bicubic    psnr {b['psnr']:6.2f}  ssim {b['ssim']:.4f}", flush=True)
        print(f"epoch   0  psnr {i['psnr']:6.2f}  ssim {i['ssim']:.4f}  (initial model)", flush=True)

    def on_epoch(row: dict) -> None:
        print(f"epoch {row['round']:3d}  psnr {row['psnr']:6.2f}  ssim {row['ssim']:.4f}  "
              f"loss {row['train_loss']:.5f}  clips {row['samples']}  {row['seconds']:5.1f}s", flush=True)

    try:
        summary = run_central(cfg, out, workers=args.workers, use_gpu=True if args.gpu else None,
                              on_start=on_start, on_epoch=on_epoch)
    except CentralTrainingError as err:
        print(f"fedvsr: {err}", file=sys.stderr)
        return 1
    gain = summary["final_psnr"] - summary["bicubic_psnr"]
    print(f"final      psnr {summary['final_psnr']:6.2f}  ssim {summary['final_ssim']:.4f}  "
          f"({gain:+.2f} dB over bicubic)  -> {out}/summary.json", flush=True)
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
    print(f"{'name':<10} {'preset':<14} {'params':>12} {'frames':>6} {'output':>7}"
          + (f" {'GFLOPs@64x64':>13}" if args.flops else ""))
    for r in rows:
        line = f"{r['name']:<10} {r['preset']:<14} {r['params']:>12,} {r['num_frames']:>6} " \
               f"{'centre' if r['center_output'] else 'all':>7}"
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
    return {"name": name, "preset": preset, "params": count_params(m), "num_frames": m.num_frames,
            "center_output": m.center_output, "scale": m.scale}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedvsr", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("simulate", help="run one federated experiment")
    sim.add_argument("--config", help="YAML experiment config (defaults apply to missing keys)")
    sim.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config key, e.g. --set fl.rounds=20 (repeatable)")
    sim.add_argument("--out", help="output folder (default: runs/sim-<time>)")
    sim.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    sim.add_argument("--address", help="Ray cluster to run on, host:port of its head (or auto); same as --set "
                     "platform.address=...; default: the job's cluster under `ray job submit`, else a local Ray")
    sim.set_defaults(func=_simulate)

    central = sub.add_parser("train-central", help="the centralized upper bound: train on all clients' data pooled "
                             "(Ray Train, data-parallel)")
    central.add_argument("--config", help="YAML experiment config (the same as simulate's)")
    central.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="override a config key, e.g. --set fl.rounds=20 (epochs here; repeatable)")
    central.add_argument("--out", help="output folder (default: runs/central-<time>)")
    central.add_argument("--workers", type=int, help="Ray Train workers (default: platform.workers)")
    central.add_argument("--gpu", action="store_true", help="one GPU per worker (default: platform.gpus_per_worker)")
    central.set_defaults(func=_train_central)

    models = sub.add_parser("models", help="list model families and presets with their sizes")
    models.add_argument("--json", action="store_true", help="print a JSON list of objects")
    models.add_argument("--no-flops", dest="flops", action="store_false",
                        help="skip counting FLOPs (faster)")
    models.set_defaults(func=_models)

    from fedvsr.sweeps.cli import add_commands

    add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ClusterUnreachable as err:
        print(f"fedvsr: cluster error: {err}", file=sys.stderr)
        return 2
    except ConfigError as err:
        print(f"fedvsr: config error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedvsr: interrupted; resume with --resume --out DIR", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
