"""The ``fedvsr upscale`` and ``fedvsr evaluate`` commands: a trained model on real videos (streamed, tiled
restoration with :mod:`fedvsr.inference`; PSNR / SSIM with :mod:`fedvsr.evaluation`). :mod:`fedvsr.cli` adds them
to the ``fedvsr`` command with :func:`add_inference_commands`.

fedvsr upscale IN OUT --checkpoint RUN_OR_FILE [--tile N] [--tile-overlap N] [--side-by-side] [--device D]
fedvsr evaluate --checkpoint RUN_OR_FILE --data PATH... [--degradation D] [--out FILE.parquet]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_inference_commands(sub) -> None:
    """The ``upscale`` and ``evaluate`` subcommands, on the ``fedvsr`` command's subparsers."""
    up = sub.add_parser("upscale", help="super-resolve a video file (H.264 out, streamed and tiled)")
    up.add_argument("input", help="video file (mp4, mkv, ...) or folder of frame images")
    up.add_argument("output", help="output video file; its suffix names the container (.mp4, .mkv, .mov)")
    _add_inference_args(up)
    up.add_argument("--side-by-side", action="store_true", help="write bicubic | model side by side (2x wide)")
    up.add_argument("--crf", type=int, default=18, help="libx264 constant rate factor (default 18)")
    up.add_argument("--x264-preset", default="medium", help="libx264 speed preset (default medium)")
    up.add_argument(
        "--fps", type=float, help="frame rate of a frame folder's output (default 24; a video file keeps its own)"
    )
    up.set_defaults(func=_upscale)

    ev = sub.add_parser("evaluate", help="PSNR / SSIM (Y and RGB) of a checkpoint and of bicubic on videos")
    _add_inference_args(ev)
    ev.add_argument(
        "--data",
        nargs="+",
        required=True,
        help="video files, frame folders, folders of videos or dataset roots (REDS, Vid4, Vimeo-90K: their test split)",
    )
    ev.add_argument("--degradation", help="how LR frames are made (default: the run's data.degradation, else bicubic)")
    ev.add_argument("--crf", type=int, help="blur-h264 CRF (default: the run's data.crf)")
    ev.add_argument("--qp", type=int, help="hevc QP (default: the run's data.qp)")
    ev.add_argument(
        "--out",
        help="Parquet file (default: <run>/evaluation.parquet, or <weights>.evaluation.parquet beside a weights file)",
    )
    ev.set_defaults(func=_evaluate)


def _inference_model(args: argparse.Namespace):
    from fedvsr.inference import load_model, parse_options

    options = parse_options(args.options) if args.options else None
    return load_model(args.checkpoint, args.model, args.preset, options, args.device)


def _upscale(args: argparse.Namespace) -> int:
    from fedvsr.data.video import VideoError
    from fedvsr.inference import upscale

    loaded = _inference_model(args)
    try:
        st = upscale(
            loaded,
            args.input,
            args.output,
            args.tile,
            args.tile_overlap,
            args.side_by_side,
            args.crf,
            args.x264_preset,
            args.fps,
            progress=not args.quiet,
        )
    except VideoError as err:
        print(f"fedvsr: video error: {err}", file=sys.stderr)
        return 1
    (w, h), (W, H) = st.lr_size, st.hr_size
    sbs = " side by side with bicubic" if args.side_by_side else ""
    audio = f", audio {st.audio}" if st.audio else ""
    print(
        f"fedvsr: {st.output}: {st.frames} frames {w}x{h} -> {W}x{H}{sbs}"
        f" at {st.fps:g} fps{audio}, {loaded.name}/{loaded.preset} on {loaded.device}, {st.seconds:.1f} s "
        f"({st.seconds_per_frame:.3f} s/frame: model {st.model_seconds / max(st.frames, 1):.3f}, "
        f"encode {st.encode_seconds / max(st.frames, 1):.3f})",
        flush=True,
    )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from fedvsr.data.video import VideoError
    from fedvsr.evaluation import default_evaluation_path, evaluate, evaluation_table, format_table
    from fedvsr.platform.results import write_parquet_atomic

    loaded = _inference_model(args)
    out = Path(args.out) if args.out else default_evaluation_path(loaded, args.checkpoint)

    def on_clip(row: dict) -> None:
        if not args.quiet:
            print(
                f"{row['clip']}: psnr {row['psnr']:.2f} (bicubic {row['bicubic_psnr']:.2f})  "
                f"{row['frames']} frames  {row['seconds']:.1f} s",
                file=sys.stderr,
                flush=True,
            )

    def on_skip(path: str, reason: str) -> None:
        print(f"fedvsr: {reason}", file=sys.stderr, flush=True)

    try:
        rows = evaluate(
            loaded,
            args.data,
            args.degradation,
            args.crf,
            args.qp,
            args.tile,
            args.tile_overlap,
            on_clip=on_clip,
            on_skip=on_skip,
        )
    except (VideoError, FileNotFoundError) as err:
        print(f"fedvsr: video error: {err}", file=sys.stderr)
        return 1
    print(format_table(rows))
    write_parquet_atomic(out, evaluation_table(rows, loaded))
    left_out = f", {len(rows.skipped)} left out" if rows.skipped else ""
    print(
        f"fedvsr: {loaded.name}/{loaded.preset}, degradation {rows[0]['degradation']}, "
        f"{len(rows)} clips{left_out} -> {out}",
        flush=True,
    )
    return 0


def _add_inference_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint",
        required=True,
        help="run folder (its config.yaml names the model) or a .safetensors weights file",
    )
    p.add_argument("--model", help="model family (needed for a bare weights file; overrides the run's)")
    p.add_argument("--preset", help="size preset of --model")
    p.add_argument("--options", help="model constructor arguments: JSON object or key=value,key=value")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: CUDA when available)")
    p.add_argument("--tile", type=int, default=128, help="LR tile size in pixels (0 = whole frames; default 128)")
    p.add_argument(
        "--tile-overlap",
        type=int,
        default=32,
        help="overlap of neighbouring tiles in LR pixels "
        "(default 32: exact for models whose receptive field reaches at most 16 pixels)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")
