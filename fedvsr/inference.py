"""Inference on real videos: a checkpoint loaded as a model (:func:`load_model`), its tiled, streamed restoration
of a video (:func:`restore_frames`) and ``fedvsr upscale`` (super-resolve a video file). The frames are read and
written by :mod:`fedvsr.data.streaming`; ``fedvsr evaluate`` is :mod:`fedvsr.evaluation`.

Streaming: the input is decoded frame by frame and the model sees a sliding window of its
``num_frames`` LR frames; each restored frame is encoded as soon as it is done, so neither the
input nor the HR output is ever held whole. A model that restores the centre frame gets one window
per frame, the frames beyond either end of the video replaced by the first or last frame
(replication, BasicSR's ``generate_frame_indices(padding='replicate')``); a model that restores every
frame of its window (a recurrent one) gets consecutive windows of ``num_frames`` frames, the last one
moved back to end at the last frame (only its new frames are written) or, for a video shorter than
the window, filled up by repeating the last frame.

Tiling: each window is cut into LR tiles of ``tile`` pixels overlapping by ``overlap`` pixels
(:func:`tile_spans`); every HR tile contributes only the part of it up to the middle of its overlap
with the next tile. The result equals the untiled output exactly (up to float rounding) when the
model's receptive field reaches at most ``overlap // 2`` LR pixels from an output pixel: a convolution
stack does (EFVSR ``small``: about 12 pixels, within the default overlap of 32); a model with a global
operation (VSRGAN's non-local attention, FCVSR's frequency masks, FCA2's colour correction, optical
flow estimated on a resized frame) gives a close but not identical output per tile. ``tile = 0`` runs
whole frames.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
import yaml

from fedvsr.config import ConfigError, ExperimentConfig, config_from_dict
from fedvsr.data.streaming import AudioTrack, FrameReader, H264Writer
from fedvsr.metrics import bicubic_upsample
from fedvsr.models import VSRModel, build_model
from fedvsr.platform.checkpoint import latest_weights, load_arrays

#: the weights file of a run folder (written by ``fedvsr simulate`` / ``train-central`` at the end)
RUN_WEIGHTS = "model.safetensors"
#: the latest round's weights of a run that has not finished (fedvsr.platform.checkpoint.latest_weights)
RUN_CHECKPOINT_WEIGHTS = Path("checkpoint") / "round-*" / "global.safetensors"
DEFAULT_TILE = 128
DEFAULT_OVERLAP = 32


# ----------------------------------------------------------------------------- checkpoints


@dataclass
class LoadedModel:
    """A model with its weights loaded, in eval mode, and where they came from."""

    model: VSRModel
    name: str
    preset: str
    options: dict[str, Any]
    weights: Path  #: the safetensors file read
    config: ExperimentConfig | None  #: the run's config (None for a bare weights file)
    device: torch.device

    @property
    def scale(self) -> int:
        return self.model.scale

    def restore(
        self,
        frames: Iterator[np.ndarray],
        tile: int = DEFAULT_TILE,
        overlap: int = DEFAULT_OVERLAP,
        bicubic: bool = False,
    ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """:func:`restore_frames` with this model (what :mod:`fedvsr.evaluation` calls)."""
        return restore_frames(self, frames, tile, overlap, bicubic)


def _find_run_config(weights: Path) -> Path | None:
    """The ``config.yaml`` of the run a weights file belongs to (``<run>/model.safetensors``,
    ``<run>/checkpoint/round-<t>/global.safetensors``, or the older ``<run>/checkpoint/global.safetensors``), or
    None."""
    for folder in weights.parents[:3]:
        if (folder / "config.yaml").is_file():
            return folder / "config.yaml"
    return None


def parse_options(text: str | None) -> dict[str, Any]:
    """``--options``: a JSON object (``{"channels": 48}``) or ``key=value`` pairs separated by commas
    (values parsed as YAML scalars: ``channels=48,blocks=6``)."""
    if not text:
        return {}
    text = text.strip()
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"--options {text!r} is not a valid JSON object: {err}") from None
        if not isinstance(value, dict):
            raise ConfigError(f"--options {text!r} must be a JSON object")
        return value
    out: dict[str, Any] = {}
    for part in text.split(","):
        key, sep, raw = part.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--options: {part!r} is not of the form key=value (or give a JSON object)")
        out[key.strip()] = yaml.safe_load(raw)
    return out


def resolve_device(device: str) -> torch.device:
    """``cpu``, ``cuda`` (``cuda:N``) or ``auto`` (CUDA when available)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: this machine has no CUDA GPU; allowed here: cpu, auto")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"--device {device!r} is not allowed; expected cpu, cuda, cuda:N or auto")
    return torch.device(device)


def load_model(
    checkpoint: str | os.PathLike,
    model: str | None = None,
    preset: str | None = None,
    options: dict[str, Any] | None = None,
    device: str = "cpu",
) -> LoadedModel:
    """Build the model of ``checkpoint`` and load its weights.

    ``checkpoint`` is a run folder (its ``config.yaml`` names the model; the weights are
    ``model.safetensors``, or the newest checkpoint's ``global.safetensors`` of a run that has not finished) or a
    safetensors file (a run's ``config.yaml`` one to three folders up names the model; a bare file needs
    ``model`` and ``preset``). ``model`` / ``preset`` / ``options`` given here override the run's.
    Raises :class:`ConfigError` naming the path and what is missing or does not fit."""
    path = Path(checkpoint)
    if not path.exists():
        raise ConfigError(f"checkpoint {str(path)!r} does not exist (give a run folder or a .safetensors file)")
    if path.is_dir():
        config_path = path / "config.yaml"
        if not config_path.is_file():
            raise ConfigError(
                f"checkpoint {str(path)!r} is a folder without config.yaml: not a run folder of "
                f"`fedvsr simulate` / `train-central` (or give the .safetensors file with --model "
                f"and --preset)"
            )
        weights = path / RUN_WEIGHTS
        if not weights.is_file():
            weights = latest_weights(path / "checkpoint") or path / RUN_CHECKPOINT_WEIGHTS
        if not weights.is_file():
            raise ConfigError(
                f"checkpoint {str(path)!r} holds no weights: neither {RUN_WEIGHTS} nor "
                f"{RUN_CHECKPOINT_WEIGHTS} (did the run finish a round?)"
            )
    else:
        weights = path
        config_path = _find_run_config(path)
    cfg = None
    if config_path is not None:
        try:
            cfg = config_from_dict(yaml.safe_load(config_path.read_text()) or {})
        except (yaml.YAMLError, ConfigError) as err:
            raise ConfigError(f"{config_path}: cannot read the run's config: {err}") from None
    if cfg is None and (model is None or preset is None):
        raise ConfigError(
            f"checkpoint {str(path)!r} is a bare weights file with no run config.yaml beside it: "
            f"name its model with --model NAME --preset PRESET (and --options if it was built "
            f"with any); `fedvsr models` lists them"
        )
    name = model or cfg.model.name
    preset_name = preset or (cfg.model.preset if cfg is not None and name == cfg.model.name else None)
    if preset_name is None:
        raise ConfigError(f"--model {name} differs from the run's model {cfg.model.name}: give its --preset too")
    opts = (
        dict(options)
        if options is not None
        else (dict(cfg.model.options) if cfg is not None and name == cfg.model.name else {})
    )
    try:
        net = build_model(name, preset_name, opts)
    except (KeyError, TypeError, ValueError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise ConfigError(f"checkpoint {str(path)!r}: cannot build model {name}/{preset_name}: {msg}") from None
    try:
        arrays = load_arrays(weights)
    except Exception as err:  # safetensors raises its own error types for a damaged file
        raise ConfigError(f"{weights}: not a readable safetensors weights file ({err})") from None
    _load_weights(net, arrays, weights, f"{name}/{preset_name}")
    dev = resolve_device(device)
    net.to(dev).eval()
    return LoadedModel(net, name, preset_name, opts, weights, cfg, dev)


def _load_weights(model: VSRModel, arrays: dict[str, np.ndarray], weights: Path, what: str) -> None:
    """Copy ``arrays`` into ``model``'s state; every floating-point entry must be present with its shape."""
    state = model.state_dict()
    unexpected = sorted(set(arrays) - set(state))
    missing = sorted(k for k, v in state.items() if v.is_floating_point() and k not in arrays)
    if unexpected or missing:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise ConfigError(
            f"{weights}: the weights do not fit model {what}: {', '.join(parts)} tensors; "
            f"check --model / --preset / --options"
        )
    with torch.no_grad():
        for k, v in arrays.items():
            # a 0-d entry (a step counter) is stored with shape (1,): save_arrays' np.ascontiguousarray makes it 1-d
            if tuple(state[k].shape) != v.shape and not (state[k].dim() == 0 and v.size == 1):
                raise ConfigError(
                    f"{weights}: the weights do not fit model {what}: {k} has shape {v.shape}, the "
                    f"model's is {tuple(state[k].shape)}; check --model / --preset / --options"
                )
            state[k].copy_(torch.from_numpy(np.ascontiguousarray(v)).reshape(state[k].shape))


# ----------------------------------------------------------------------------- windows and tiles


def frame_windows(
    frames: Iterator[np.ndarray], num_frames: int, center_output: bool
) -> Iterator[tuple[list[np.ndarray], list[int]]]:
    """``(window, keep)``: the LR windows a model restores a whole video from, in order, and which of the
    window's outputs are new frames of the video (see the module docstring). A centre-output model's
    window yields one output, so ``keep == [0]``; for an all-frames model ``keep`` indexes its ``t``
    outputs. Holds at most ``num_frames`` (all-frames: ``2 num_frames``) frames at a time."""
    n = num_frames
    if center_output:
        half = n // 2
        window: deque[np.ndarray] = deque(maxlen=n)
        count = emitted = 0
        last = None
        for f in frames:
            if count == 0:
                window.extend([f] * half)
            window.append(f)
            count, last = count + 1, f
            if len(window) == n:
                yield list(window), [0]
                emitted += 1
        while emitted < count:
            window.append(last)
            if len(window) == n:
                yield list(window), [0]
                emitted += 1
        return
    prev: list[np.ndarray] = []
    chunk: list[np.ndarray] = []
    for f in frames:
        chunk.append(f)
        if len(chunk) == n:
            yield chunk, list(range(n))
            prev, chunk = chunk, []
    if chunk:
        k = len(chunk)
        if prev:
            yield prev[k:] + chunk, list(range(n - k, n))
        else:
            yield chunk + [chunk[-1]] * (n - k), list(range(k))


def tile_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """``(start, stop, keep_start, keep_stop)`` of the tiles along one axis of ``length`` LR pixels.

    Tiles of ``tile`` pixels start every ``tile - overlap`` pixels; the last starts at ``length - tile``
    (so it overlaps its neighbour by at least ``overlap``). A tile keeps its output from the middle of its
    overlap with the previous tile to the middle of its overlap with the next, so every kept pixel lies at
    least ``overlap // 2`` pixels inside its tile (or on the frame's own border). ``tile <= 0`` or
    ``length <= tile``: one tile."""
    if tile <= 0 or length <= tile:
        return [(0, length, 0, length)]
    if not 0 <= overlap < tile:
        raise ValueError(f"tile overlap must be in [0, tile), got overlap {overlap} for tile {tile}")
    starts = list(range(0, length - tile, tile - overlap)) + [length - tile]
    spans = []
    for j, a in enumerate(starts):
        lo = 0 if j == 0 else (a + starts[j - 1] + tile) // 2
        hi = length if j == len(starts) - 1 else (starts[j + 1] + a + tile) // 2
        spans.append((a, a + tile, lo, hi))
    return spans


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float in [0, 1] -> uint8, clamped and rounded in float64 exactly as :func:`fedvsr.metrics.quantize`."""
    return x.to(torch.float64).clamp_(0, 1).mul_(255).round_().to(torch.uint8)


@torch.inference_mode()
def tiled_forward(
    model: VSRModel, lr: torch.Tensor, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP, quantize: bool = False
) -> torch.Tensor:
    """Run ``model`` on ``lr (b, t, 3, h, w)`` (any device; moved to the model's) tile by tile.

    Returns the model's output ``(b, 3, s h, s w)`` or ``(b, t, 3, s h, s w)`` on the CPU: float32, or
    with ``quantize`` uint8 (each tile quantised as it is done, a quarter of the memory)."""
    device = next(model.parameters()).device
    s = model.scale
    h, w = lr.shape[-2:]
    rows, cols = tile_spans(h, tile, overlap), tile_spans(w, tile, overlap)
    out: torch.Tensor | None = None
    for a0, b0, lo0, hi0 in rows:
        for a1, b1, lo1, hi1 in cols:
            y = model(lr[..., a0:b0, a1:b1].to(device, torch.float32))
            y = y[..., s * (lo0 - a0) : s * (hi0 - a0), s * (lo1 - a1) : s * (hi1 - a1)].cpu()
            if quantize:
                y = to_uint8(y)
            if out is None:
                out = torch.empty((*y.shape[:-2], s * h, s * w), dtype=y.dtype)
            out[..., s * lo0 : s * hi0, s * lo1 : s * hi1] = y
    assert out is not None
    return out


def _clip_tensor(frames: list[np.ndarray] | np.ndarray) -> torch.Tensor:
    """``(t, h, w, 3)`` uint8 frames -> ``(1, t, 3, h, w)`` float32 in [0, 1]."""
    arr = np.ascontiguousarray(np.stack(frames) if isinstance(frames, list) else frames)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255)[None]


def restore_frames(
    loaded: LoadedModel,
    frames: Iterator[np.ndarray],
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    bicubic: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """The restored HR frames ``(sH, sW, 3)`` uint8 of a stream of LR frames, in order, one per input
    frame; with ``bicubic`` each comes with the bicubic upsampling of its LR frame (else None)."""
    model = loaded.model
    for window, keep in frame_windows(frames, model.num_frames, model.center_output):
        x = _clip_tensor(window)
        y = tiled_forward(model, x, tile, overlap, quantize=True)[0]  # (3, H, W) or (t, 3, H, W)
        if model.center_output:
            outs, lrs = [y], [x[0, model.num_frames // 2]]
        else:
            outs, lrs = [y[i] for i in keep], [x[0, i] for i in keep]
        for hr, lr in zip(outs, lrs, strict=True):
            bic = to_uint8(bicubic_upsample(lr, model.scale)).permute(1, 2, 0).numpy() if bicubic else None
            yield hr.permute(1, 2, 0).numpy(), bic


# ----------------------------------------------------------------------------- progress


class Progress:
    """A progress line on stderr: redrawn in place (``\\r``) on a terminal, else a plain line about every
    10 % (or every 30 s when the total is unknown)."""

    def __init__(self, total: int | None, label: str, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.total, self.label, self.enabled = total, label, enabled
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.done = 0
        self.start = self._last = time.perf_counter()
        self._next_pct = 10

    def _line(self) -> str:
        elapsed = time.perf_counter() - self.start
        rate = elapsed / self.done if self.done else 0.0
        if self.total:
            pct = 100 * self.done / self.total
            width = 24
            fill = int(width * self.done / self.total)
            eta = rate * (self.total - self.done)
            return (
                f"{self.label} |{'#' * fill}{'.' * (width - fill)}| {self.done}/{self.total} "
                f"{pct:3.0f}%  {rate:.2f} s/frame  eta {_hms(eta)}"
            )
        return f"{self.label} {self.done} frames  {rate:.2f} s/frame  {_hms(elapsed)}"

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.tty:
            if now - self._last >= 0.2 or self.done == self.total:
                self.stream.write("\r" + self._line())
                self.stream.flush()
                self._last = now
        elif self.total:
            pct = 100 * self.done / self.total
            if pct >= self._next_pct or self.done == self.total:
                print(self._line(), file=self.stream, flush=True)
                while self._next_pct <= pct:
                    self._next_pct += 10
        elif now - self._last >= 30:
            print(self._line(), file=self.stream, flush=True)
            self._last = now

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\r" + self._line() + "\n")
            self.stream.flush()


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


# ----------------------------------------------------------------------------- upscale


@dataclass
class UpscaleStats:
    input: str
    output: str
    frames: int
    lr_size: tuple[int, int]  #: (width, height)
    hr_size: tuple[int, int]  #: (width, height) of the restored frames (the file's is 2x wider side by side)
    fps: float
    seconds: float
    model_seconds: float
    encode_seconds: float
    tile: int
    overlap: int
    extra: dict[str, Any] = field(default_factory=dict)
    #: the input's audio carried into the output (``'aac 44100 Hz stereo, copied'``, ``'... re-encoded to aac
    #: ...'``), ``''`` when there is none
    audio: str = ""
    #: why the input's audio is missing from the output or stops early (naming the file); None when it is whole
    audio_error: str | None = None

    @property
    def seconds_per_frame(self) -> float:
        return self.seconds / max(self.frames, 1)


def upscale(
    loaded: LoadedModel,
    src: str | os.PathLike,
    dst: str | os.PathLike,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    side_by_side: bool = False,
    crf: int = 18,
    x264_preset: str = "medium",
    fps: float | None = None,
    progress: bool = True,
) -> UpscaleStats:
    """Super-resolve the video (or frame folder) ``src`` into the H.264 file ``dst`` at the input's frame
    rate (``fps`` for a frame folder, default 24), streaming (see the module docstring). With
    ``side_by_side`` each output frame is ``bicubic | model`` (twice as wide). Written to a temporary
    file and renamed: a failure leaves no ``dst``.

    The first audio stream of a video file is carried into ``dst``, copied as it is when ``dst``'s container
    takes its codec, else re-encoded to AAC, and cut at the end of the video (see :class:`AudioTrack`);
    audio that cannot be carried (whole or in part) never fails the upscale: ``audio_error`` of the result says
    what is missing and why. A frame folder has no audio."""
    start = time.perf_counter()
    if tile < 0 or (tile > 0 and not 0 <= overlap < tile):
        raise ConfigError(
            f"--tile {tile} --tile-overlap {overlap}: expected tile >= 0 (0 = whole frames) and 0 <= overlap < tile"
        )
    src, dst = Path(src), Path(dst)
    if dst.resolve() == src.resolve():
        raise ConfigError(f"output {str(dst)!r} is the input file")
    model_s = encode_s = 0.0
    with FrameReader(src, fps) as reader:
        audio = AudioTrack(src) if src.is_file() else None
        try:
            writer = H264Writer(dst, reader.fps, crf, x264_preset, audio)
        except BaseException:
            if audio is not None:
                audio.close()
            raise
        bar = Progress(reader.frames, f"upscale {src.name}", enabled=progress)
        try:
            frames = iter(reader)
            restored = restore_frames(loaded, frames, tile, overlap, bicubic=side_by_side)
            while True:
                t0 = time.perf_counter()
                item = next(restored, None)
                t1 = time.perf_counter()
                model_s += t1 - t0
                if item is None:
                    break
                hr, bic = item
                writer.write(np.concatenate([bic, hr], axis=1) if bic is not None else hr)
                encode_s += time.perf_counter() - t1
                bar.update()
            t1 = time.perf_counter()
            writer.finish()
            encode_s += time.perf_counter() - t1
        except BaseException:
            writer.abort()
            raise
        finally:
            bar.close()
            if audio is not None:
                audio.close()
        s = loaded.scale
        return UpscaleStats(
            str(src),
            str(dst),
            writer.count,
            (reader.width, reader.height),
            (s * reader.width, s * reader.height),
            float(reader.fps),
            time.perf_counter() - start,
            model_s,
            encode_s,
            tile,
            overlap,
            audio=audio.description if audio else "",
            audio_error=audio.error if audio else None,
        )
