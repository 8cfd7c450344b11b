"""Evaluation: PSNR / SSIM of a model and of bicubic upsampling.

Two uses, one metric code (:mod:`fedvsr.metrics`):

- on held-out clips during a run (:func:`evaluate_model`, :func:`evaluate_bicubic`, :func:`pair_scores_of_model`),
  called by the client workers and by ``fedvsr train-central``;
- ``fedvsr evaluate``, a checkpoint on given videos (:func:`evaluate`, one row per clip; :func:`evaluation_table`
  and :func:`format_table`): each clip is degraded as training degrades it and restored whole by the model's
  tiled restoration (:meth:`fedvsr.inference.LoadedModel.restore`; this module takes any :class:`Restorer`, so
  that it sits below the platform and the inference code, which both use it).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import torch

from fedvsr.config import ConfigError, ExperimentConfig
from fedvsr.data.video import LEFT_OUT, VideoEntry, VideoError, list_frame_files
from fedvsr.metrics import bicubic_upsample, pair_scores, psnr_rgb, psnr_y, score, ssim_rgb, ssim_y
from fedvsr.models import VSRModel

#: LR tile size and overlap of ``fedvsr evaluate``'s restoration (``fedvsr.inference.DEFAULT_TILE`` / ``_OVERLAP``)
DEFAULT_TILE = 128
DEFAULT_OVERLAP = 32


# ----------------------------------------------------------------------------- held-out clips of a run


@torch.no_grad()
def evaluate_model(
    model: VSRModel, clips: list[tuple[torch.Tensor, torch.Tensor]], cfg: ExperimentConfig, device: torch.device
) -> dict[str, float]:
    """Mean PSNR / SSIM (``eval.channels``, border crop = ``data.scale``) of ``model`` on ``(lr, hr)`` clips:
    the model in eval mode restores each clip, its output clamped to [0, 1], against ``model.target(hr)``.
    Leaves the model in eval mode."""
    model.eval()
    pairs = [(model(lr[None].to(device)).clamp(0, 1).cpu(), model.target(hr[None])) for lr, hr in clips]
    return score(pairs, cfg.data.scale, cfg.eval.channels)


@torch.no_grad()
def pair_scores_of_model(
    model: VSRModel, clips: list[tuple[torch.Tensor, torch.Tensor]], cfg: ExperimentConfig, device: torch.device
) -> list[dict[str, float]]:
    """:func:`evaluate_model` per clip (their mean over all clips, in clip order, is evaluate_model's value)."""
    model.eval()
    pairs = [(model(lr[None].to(device)).clamp(0, 1).cpu(), model.target(hr[None])) for lr, hr in clips]
    return pair_scores(pairs, cfg.data.scale, cfg.eval.channels)


def evaluate_bicubic(
    model: VSRModel, clips: list[tuple[torch.Tensor, torch.Tensor]], cfg: ExperimentConfig
) -> dict[str, float]:
    """The same metrics for bicubic upsampling of the LR frames ``model`` restores (its ``target`` of the LR clip)."""
    return score(
        [(bicubic_upsample(model.target(lr[None]), cfg.data.scale), model.target(hr[None])) for lr, hr in clips],
        cfg.data.scale,
        cfg.eval.channels,
    )


# ----------------------------------------------------------------------------- fedvsr evaluate


class Restorer(Protocol):
    """What ``fedvsr evaluate`` needs of a loaded model (:class:`fedvsr.inference.LoadedModel` is one)."""

    name: str
    preset: str
    weights: Path
    config: ExperimentConfig | None

    @property
    def scale(self) -> int: ...

    def restore(
        self, frames: Iterator[np.ndarray], tile: int, overlap: int, bicubic: bool
    ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]: ...


def evaluation_videos(paths: list[str | os.PathLike], scale: int = 4, degradation: str = "bicubic") -> list:
    """The videos to evaluate on, as :class:`~fedvsr.data.video.VideoEntry`: each path is a video file,
    a frame folder, a dataset root (REDS, Vid4-like ``GT/``, Vimeo-90K: its test split, with its pre-made
    LR frames where they fit ``degradation``) or a folder of videos and frame folders (every one of them).
    A path that does not exist raises :class:`VideoError` naming it."""
    return _evaluation_entries(paths, scale, degradation)[0]


def _evaluation_entries(
    paths: list[str | os.PathLike], scale: int, degradation: str
) -> tuple[list, list[tuple[str, str]]]:
    """:func:`evaluation_videos` and the ``(path, reason)`` of the videos a dataset root's scan left out."""
    from fedvsr.data.layouts import detect_layout, scan_dataset
    from fedvsr.data.sources import scan_folder

    entries: list[VideoEntry] = []
    skipped: list[tuple[str, str]] = []
    for p in map(Path, paths):
        if not p.exists():
            raise VideoError(f"{p}: no such file or directory")
        if p.is_file():
            entries.append(VideoEntry(path=str(p.resolve()), label="all", name=p.stem))
        elif list_frame_files(p):
            entries.append(VideoEntry(path=str(p.resolve()), label="all", name=p.name))
        elif (layout := detect_layout(p)) is not None:
            scan = scan_dataset(layout, p, scale, degradation)
            entries += scan.test or scan.train
            skipped += [(path, f"{LEFT_OUT}{path}: {reason}") for path, reason in scan.skipped]
        else:
            entries += scan_folder(p)
    seen: dict[str, int] = {}
    out = []
    for e in entries:  # names must tell the rows apart
        k = seen.get(e.name, 0)
        seen[e.name] = k + 1
        out.append(e if k == 0 else VideoEntry(e.path, e.label, f"{e.name}#{k}", e.lr_path))
    return out, skipped


class EvaluationRows(list):
    """What :func:`evaluate` returns: a list of rows, one per clip evaluated, in order, and :attr:`skipped`,
    the ``(path, reason)`` of every video left out because it could not be read (the reason names the file,
    worded as the platform's ``video_skipped`` events: ``"evaluation video left out: <path>: ..."``)."""

    def __init__(self, rows: Iterable[dict[str, Any]] = (), skipped: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(rows)
        self.skipped: list[tuple[str, str]] = list(skipped)


METRICS = ("psnr", "ssim", "psnr_rgb", "ssim_rgb")


class _FrameScores:
    """Per-frame PSNR / SSIM (Y and RGB) sums, fed in chunks so that a long clip is never held in float;
    the means equal :func:`fedvsr.metrics.score` with ``channels='y+rgb'`` on the whole clip."""

    def __init__(self, crop: int) -> None:
        self.crop = crop
        self.sums = dict.fromkeys(METRICS, 0.0)
        self.n = 0

    def add(self, sr: np.ndarray, hr: np.ndarray) -> None:
        """``sr, hr``: ``(n, H, W, 3)`` uint8."""
        a = torch.from_numpy(np.ascontiguousarray(sr)).permute(0, 3, 1, 2).double().div_(255)
        b = torch.from_numpy(np.ascontiguousarray(hr)).permute(0, 3, 1, 2).double().div_(255)
        k = a.shape[0]
        for name, fn in zip(METRICS, (psnr_y, ssim_y, psnr_rgb, ssim_rgb), strict=True):
            self.sums[name] += fn(a, b, self.crop) * k
        self.n += k

    def means(self) -> dict[str, float]:
        return {k: v / self.n for k, v in self.sums.items()}


def evaluate_clip(
    loaded: Restorer,
    entry,
    degradation: str,
    scale: int,
    params: dict[str, Any],
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    chunk: int = 8,
) -> dict[str, Any]:
    """One row of ``fedvsr evaluate``: the clip's frames degraded (as training degrades them), restored
    whole (every frame, border frames by replication), and PSNR / SSIM on Y and RGB with a border crop of
    ``scale`` for the model and for bicubic, each the mean over the clip's frames."""
    from fedvsr.data.datasets import load_pair

    start = time.perf_counter()
    pair = load_pair(entry, degradation, scale, **params)
    model_scores, bic_scores = _FrameScores(scale), _FrameScores(scale)
    sr_buf, bic_buf, i = [], [], 0
    for hr_frame, bic in loaded.restore(iter(pair.lr), tile, overlap, bicubic=True):
        sr_buf.append(hr_frame)
        bic_buf.append(bic)
        if len(sr_buf) == chunk:
            model_scores.add(np.stack(sr_buf), pair.hr[i : i + chunk])
            bic_scores.add(np.stack(bic_buf), pair.hr[i : i + chunk])
            i += chunk
            sr_buf, bic_buf = [], []
    if sr_buf:
        model_scores.add(np.stack(sr_buf), pair.hr[i:])
        bic_scores.add(np.stack(bic_buf), pair.hr[i:])
    t, h, w, _ = pair.hr.shape
    return {
        "clip": entry.name,
        "path": entry.path,
        "frames": t,
        "width": w,
        "height": h,
        **model_scores.means(),
        **{f"bicubic_{k}": v for k, v in bic_scores.means().items()},
        "seconds": time.perf_counter() - start,
    }


def evaluate(
    loaded: Restorer,
    paths: list[str | os.PathLike],
    degradation: str | None = None,
    crf: int | None = None,
    qp: int | None = None,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    on_clip: Callable[[dict[str, Any]], None] | None = None,
    on_skip: Callable[[str, str], None] | None = None,
) -> EvaluationRows:
    """``fedvsr evaluate``: one row per clip (:func:`evaluate_clip`). The degradation and its strength
    come from the run's config unless given; a bare weights file defaults to ``bicubic``, crf 25, qp 32
    (the config's defaults) at the model's scale.

    A video that cannot be read (corrupt, truncated, not a video: a :class:`VideoError` or an ``OSError``;
    or left out by a dataset root's scan) is left out and the others are evaluated: it is listed in the
    result's :attr:`~EvaluationRows.skipped` with the reason naming the file (and passed to ``on_skip(path,
    reason)`` when it happens), and the rows, so their averages, are exactly those of evaluating the readable
    videos alone. Only when none can be read is that an error, a :class:`VideoError` naming every one. A
    path that does not exist raises before anything is evaluated."""
    from fedvsr.config import DataConfig
    from fedvsr.data.degrade import DEGRADATIONS

    d = loaded.config.data if loaded.config is not None else DataConfig()
    degradation = degradation or d.degradation
    if degradation not in DEGRADATIONS:
        raise ConfigError(f"--degradation {degradation!r} is not allowed; expected one of {', '.join(DEGRADATIONS)}")
    scale = loaded.scale
    params = {"blur-h264": {"crf": d.crf if crf is None else crf}, "hevc": {"qp": d.qp if qp is None else qp}}.get(
        degradation, {}
    )
    entries, scan_skipped = _evaluation_entries(paths, scale, degradation)
    if not entries:
        raise VideoError(
            f"no videos found in {', '.join(map(str, paths))}" + "".join(f"; {reason}" for _, reason in scan_skipped)
        )
    rows = EvaluationRows()

    def skip(path: str, reason: str) -> None:
        rows.skipped.append((path, reason))
        if on_skip:
            on_skip(path, reason)

    for path, reason in scan_skipped:
        skip(path, reason)
    for e in entries:
        try:
            clip = evaluate_clip(loaded, e, degradation, scale, params, tile, overlap)
        except (VideoError, OSError) as err:
            skip(e.path, f"{LEFT_OUT}{err}")
            continue
        row = {**clip, "degradation": degradation, **{k: v for k, v in params.items()}}
        rows.append(row)
        if on_clip:
            on_clip(row)
    if not rows:
        errors = [reason.removeprefix(LEFT_OUT) for _, reason in rows.skipped]  # each names its file
        raise VideoError(f"none of the {len(errors)} evaluation videos can be read: {'; '.join(errors)}")
    return rows


def average_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean over clips of every metric (each clip counts once, as papers average over clips)."""
    keys = [*METRICS, *(f"bicubic_{k}" for k in METRICS)]
    out: dict[str, Any] = {
        "clip": "average",
        "path": None,
        "frames": int(sum(r["frames"] for r in rows)),
        "width": None,
        "height": None,
    }
    out.update({k: float(np.mean([r[k] for r in rows])) for k in keys})
    out["seconds"] = float(sum(r["seconds"] for r in rows))
    return out


def evaluation_table(rows: list[dict[str, Any]], loaded: Restorer) -> pa.Table:
    """The Parquet table: one row per clip then the ``average`` row, with the model and checkpoint. The videos
    left out (``rows.skipped`` of :class:`EvaluationRows`) are in the schema's metadata under
    ``fedvsr.skipped``: a JSON list of ``{"path", "reason"}``."""
    all_rows = [*rows, {**average_row(rows), **{k: rows[0][k] for k in ("degradation", "crf", "qp") if k in rows[0]}}]
    cols: dict[str, list] = {k: [r.get(k) for r in all_rows] for k in all_rows[0]}
    for k in (f"{m}_gain" for m in ("psnr", "psnr_rgb")):
        base = k[: -len("_gain")]
        cols[k] = [r[base] - r[f"bicubic_{base}"] for r in all_rows]
    n = len(all_rows)
    cols.update(
        {
            "model": [loaded.name] * n,
            "preset": [loaded.preset] * n,
            "scale": [loaded.scale] * n,
            "checkpoint": [str(loaded.weights)] * n,
        }
    )
    skipped = [{"path": path, "reason": reason} for path, reason in getattr(rows, "skipped", ())]
    return pa.table(cols, metadata={"fedvsr.skipped": json.dumps(skipped)})


def format_table(rows: list[dict[str, Any]]) -> str:
    """The printed table: per clip and the average, model and bicubic on Y and RGB; then one line per video
    left out (``rows.skipped`` of :class:`EvaluationRows`), its reason."""
    head = (
        f"{'clip':<24} {'frames':>6}  {'PSNR-Y':>7} {'SSIM-Y':>7} {'PSNR':>7} {'SSIM':>7}  "
        f"{'bic PSNR-Y':>10} {'bic SSIM-Y':>10} {'bic PSNR':>8} {'bic SSIM':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in [*rows, average_row(rows)]:
        if r["clip"] == "average":
            lines.append("-" * len(head))
        name = r["clip"] if len(r["clip"]) <= 24 else "..." + r["clip"][-21:]
        lines.append(
            f"{name:<24} {r['frames']:>6}  {_db(r['psnr'])} {r['ssim']:7.4f} {_db(r['psnr_rgb'])} "
            f"{r['ssim_rgb']:7.4f}  {_db(r['bicubic_psnr'], 10)} {r['bicubic_ssim']:10.4f} "
            f"{_db(r['bicubic_psnr_rgb'], 8)} {r['bicubic_ssim_rgb']:8.4f}"
        )
    lines += [reason for _, reason in getattr(rows, "skipped", ())]
    return "\n".join(lines)


def _db(x: float, width: int = 7) -> str:
    return f"{'inf':>{width}}" if math.isinf(x) else f"{x:{width}.2f}"


def default_evaluation_path(loaded: Restorer, checkpoint: str | os.PathLike) -> Path:
    """Where ``fedvsr evaluate`` writes its table without ``--out``: ``<run>/evaluation.parquet`` for a run
    folder, ``<weights stem>.evaluation.parquet`` beside a weights file."""
    p = Path(checkpoint)
    if p.is_dir():
        return p / "evaluation.parquet"
    return p.with_name(f"{p.stem}.evaluation.parquet")
