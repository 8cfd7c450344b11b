"""The ``fedvsr`` command.

    fedvsr simulate [--config FILE] [--set key=value ...] [--out DIR] [--resume]
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
        cfg = load_config(args.config, args.set)
    out = Path(args.out or f"runs/sim-{time.strftime('%Y%m%d-%H%M%S')}")

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
    print(f"{'name':<10} {'preset':<10} {'params':>12} {'frames':>6} {'output':>7}"
          + (f" {'GFLOPs@64x64':>13}" if args.flops else ""))
    for r in rows:
        line = f"{r['name']:<10} {r['preset']:<10} {r['params']:>12,} {r['num_frames']:>6} " \
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
    sim.set_defaults(func=_simulate)

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
