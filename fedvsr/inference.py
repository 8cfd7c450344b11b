"""Inference on real videos: ``fedvsr upscale`` (super-resolve a video file) and ``fedvsr evaluate``
(PSNR / SSIM of a checkpoint and of bicubic on given videos).

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

import io
import json
import logging
import math
import os
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, TextIO

import av
import numpy as np
import pyarrow as pa
import torch
import yaml

from fedvsr.config import ConfigError, ExperimentConfig, config_from_dict
from fedvsr.data.video import IMAGE_SUFFIXES, LEFT_OUT, VideoError, list_frame_files
from fedvsr.metrics import bicubic_upsample, psnr_rgb, psnr_y, ssim_rgb, ssim_y
from fedvsr.models import VSRModel, build_model
from fedvsr.platform.checkpoint import latest_weights, load_arrays

#: the weights file of a run folder (written by ``fedvsr simulate`` / ``train-central`` at the end)
RUN_WEIGHTS = "model.safetensors"
#: the latest round's weights of a run that has not finished (fedvsr.platform.checkpoint.latest_weights)
RUN_CHECKPOINT_WEIGHTS = Path("checkpoint") / "round-*" / "global.safetensors"
DEFAULT_TILE = 128
DEFAULT_OVERLAP = 32
DEFAULT_FPS = Fraction(24)
#: FFmpeg demuxers that turn text into frames (a text file "opens" as a 640x400 ANSI-art video)
_TEXT_DEMUXERS = {"tty", "srt", "ass", "webvtt", "subviewer", "txt"}
#: the sample rate an input's audio is re-encoded at when PyAV's AAC encoder does not take its own
AAC_FALLBACK_RATE = 48000
#: the channel layout AAC is written in for a channel count whose layout the input leaves unspecified
_USUAL_LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1", 8: "7.1"}

log = logging.getLogger(__name__)


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


def load_model(checkpoint: str | os.PathLike, model: str | None = None, preset: str | None = None,
               options: dict[str, Any] | None = None, device: str = "cpu") -> LoadedModel:
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
            raise ConfigError(f"checkpoint {str(path)!r} is a folder without config.yaml: not a run folder of "
                              f"`fedvsr simulate` / `train-central` (or give the .safetensors file with --model "
                              f"and --preset)")
        weights = path / RUN_WEIGHTS
        if not weights.is_file():
            weights = latest_weights(path / "checkpoint") or path / RUN_CHECKPOINT_WEIGHTS
        if not weights.is_file():
            raise ConfigError(f"checkpoint {str(path)!r} holds no weights: neither {RUN_WEIGHTS} nor "
                              f"{RUN_CHECKPOINT_WEIGHTS} (did the run finish a round?)")
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
        raise ConfigError(f"checkpoint {str(path)!r} is a bare weights file with no run config.yaml beside it: "
                          f"name its model with --model NAME --preset PRESET (and --options if it was built "
                          f"with any); `fedvsr models` lists them")
    name = model or cfg.model.name
    preset_name = preset or (cfg.model.preset if cfg is not None and name == cfg.model.name else None)
    if preset_name is None:
        raise ConfigError(f"--model {name} differs from the run's model {cfg.model.name}: give its --preset too")
    opts = dict(options) if options is not None else (
        dict(cfg.model.options) if cfg is not None and name == cfg.model.name else {})
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
        raise ConfigError(f"{weights}: the weights do not fit model {what}: {', '.join(parts)} tensors; "
                          f"check --model / --preset / --options")
    with torch.no_grad():
        for k, v in arrays.items():
            # a 0-d entry (a step counter) is stored with shape (1,): save_arrays' np.ascontiguousarray makes it 1-d
            if tuple(state[k].shape) != v.shape and not (state[k].dim() == 0 and v.size == 1):
                raise ConfigError(f"{weights}: the weights do not fit model {what}: {k} has shape {v.shape}, the "
                                  f"model's is {tuple(state[k].shape)}; check --model / --preset / --options")
            state[k].copy_(torch.from_numpy(np.ascontiguousarray(v)).reshape(state[k].shape))


# ----------------------------------------------------------------------------- reading frames


def frame_rate(fps: float) -> Fraction:
    """``--fps`` as a Fraction; 23.976, 29.97, 59.94 and 119.88 mean the NTSC rates ``n * 1000 / 1001``."""
    if fps <= 0:
        raise ConfigError(f"--fps {fps} is not allowed; expected a positive frame rate")
    for n in (24, 30, 60, 120):
        if abs(fps - n * 1000 / 1001) < 0.005:
            return Fraction(n * 1000, 1001)
    return Fraction(fps).limit_denominator(1000)


class FrameReader:
    """Streams the frames of a video file (first video stream) or a folder of frame images as
    ``(H, W, 3)`` uint8 RGB, one at a time. Use as a context manager; ``fps`` (a Fraction), ``frames``
    (the count the container announces, None if unknown), ``width`` and ``height`` are known on entry.

    Every failure is a :class:`VideoError` naming the file: a missing, unreadable, corrupt or unsupported
    file, a video that stops before the frame count its container announces (truncated), frames that
    change size."""

    def __init__(self, path: str | os.PathLike, fps: float | None = None) -> None:
        self.path = Path(path)
        self._fps_override = fps
        self._container = None
        self._files: list[Path] | None = None
        self.fps: Fraction = DEFAULT_FPS
        self.frames: int | None = None
        self._seconds: float | None = None
        self.width = self.height = 0

    def __enter__(self) -> FrameReader:
        path = self.path
        if not path.exists():
            raise VideoError(f"{path}: no such file or directory")
        if path.is_dir():
            self._files = list_frame_files(path)
            if not self._files:
                raise VideoError(f"{path}: folder holds no frame images ({', '.join(IMAGE_SUFFIXES)})")
            self.frames = len(self._files)
            first = self._image(self._files[0])
            self.height, self.width = first.shape[:2]
        else:
            try:
                self._container = av.open(str(path))
            except av.FFmpegError as err:
                raise VideoError(f"{path}: not a video PyAV can read: corrupt, truncated or unsupported "
                                 f"({err})") from err
            if not self._container.streams.video:
                self._container.close()
                raise VideoError(f"{path}: no video stream in the file")
            stream = self._container.streams.video[0]
            stream.thread_type = "AUTO"
            if self._container.format.name in _TEXT_DEMUXERS:  # FFmpeg renders any text file as ANSI art
                self._container.close()
                raise VideoError(f"{path}: not a video file (FFmpeg reads it as text, format "
                                 f"{self._container.format.name!r})")
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            self.fps = Fraction(rate) if rate else DEFAULT_FPS
            # the length the container announces (Matroska: only a duration, no frame count)
            if stream.duration and stream.time_base:
                self._seconds = float(stream.duration * stream.time_base)
            elif self._container.duration and len(self._container.streams) == 1:
                self._seconds = self._container.duration / av.time_base
            self.frames = stream.frames or (round(self._seconds * float(self.fps)) if self._seconds else None)
            self.width, self.height = stream.codec_context.width, stream.codec_context.height
        if self._fps_override:
            self.fps = frame_rate(self._fps_override)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._container is not None:
            self._container.close()

    def _image(self, file: Path) -> np.ndarray:
        try:
            with av.open(str(file)) as c:
                for frame in c.decode(video=0):
                    return frame.to_ndarray(format="rgb24")
        except (av.FFmpegError, IndexError) as err:
            raise VideoError(f"{file}: cannot decode the frame image ({err})") from err
        raise VideoError(f"{file}: no frame decoded from the image")

    def _check(self, frame: np.ndarray, where: str) -> np.ndarray:
        if frame.shape[:2] != (self.height, self.width):
            raise VideoError(f"{where}: frame is {frame.shape[1]}x{frame.shape[0]}, the first frame is "
                             f"{self.width}x{self.height} (width x height); frames must keep one size")
        return frame

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._files is not None:
            for file in self._files:
                yield self._check(self._image(file), str(file))
            return
        count = 0
        first = last = None
        try:
            for frame in self._container.decode(self._container.streams.video[0]):
                count += 1
                if count == 1 and (frame.width, frame.height) != (self.width, self.height):
                    self.width, self.height = frame.width, frame.height
                if frame.time is not None:
                    first, last = frame.time if first is None else first, frame.time
                yield self._check(frame.to_ndarray(format="rgb24"), f"{self.path} frame {count - 1}")
        except av.FFmpegError as err:
            raise VideoError(f"{self.path}: decoding failed after {count} frames: corrupt or truncated ({err})") \
                from err
        if count == 0:
            raise VideoError(f"{self.path}: no frames decoded: corrupt, truncated or empty")
        announced = self._container.streams.video[0].frames
        if announced and count < announced:
            raise VideoError(f"{self.path}: truncated: its container announces {announced} frames, "
                             f"only {count} could be decoded")
        if self._seconds and first is not None:
            frame_s = 1 / float(self.fps)
            decoded = last - first + frame_s
            if decoded < self._seconds - 1.5 * frame_s:
                raise VideoError(f"{self.path}: truncated: its container announces {self._seconds:.3f} s of video, "
                                 f"decoding stopped after {count} frames ({decoded:.3f} s)")


# ----------------------------------------------------------------------------- windows and tiles


def frame_windows(frames: Iterator[np.ndarray], num_frames: int, center_output: bool
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
def tiled_forward(model: VSRModel, lr: torch.Tensor, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP,
                  quantize: bool = False) -> torch.Tensor:
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
            y = y[..., s * (lo0 - a0): s * (hi0 - a0), s * (lo1 - a1): s * (hi1 - a1)].cpu()
            if quantize:
                y = to_uint8(y)
            if out is None:
                out = torch.empty((*y.shape[:-2], s * h, s * w), dtype=y.dtype)
            out[..., s * lo0: s * hi0, s * lo1: s * hi1] = y
    assert out is not None
    return out


def _clip_tensor(frames: list[np.ndarray] | np.ndarray) -> torch.Tensor:
    """``(t, h, w, 3)`` uint8 frames -> ``(1, t, 3, h, w)`` float32 in [0, 1]."""
    arr = np.ascontiguousarray(np.stack(frames) if isinstance(frames, list) else frames)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255)[None]


def restore_frames(loaded: LoadedModel, frames: Iterator[np.ndarray], tile: int = DEFAULT_TILE,
                   overlap: int = DEFAULT_OVERLAP, bicubic: bool = False
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
            return (f"{self.label} |{'#' * fill}{'.' * (width - fill)}| {self.done}/{self.total} "
                    f"{pct:3.0f}%  {rate:.2f} s/frame  eta {_hms(eta)}")
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


def _takes_audio(fmt: str, template: av.AudioStream | None = None, rate: int = 0, layout: str = "") -> bool:
    """Whether an output of container format ``fmt`` takes the audio stream ``template`` copied as it is
    (or, without one, PyAV's AAC encoder at ``rate`` / ``layout``): a header is written to memory with that
    stream alone, so the muxer's own checks (its codec tags, "experimental in this container") decide."""
    try:
        with av.open(io.BytesIO(), "w", format=fmt) as probe:
            if template is not None:
                probe.add_stream_from_template(template)
            else:
                probe.add_stream("aac", rate=rate, layout=layout)
            probe.start_encoding()
    except (av.FFmpegError, ValueError, TypeError):
        return False
    return True


class _AudioTrack:
    """The first audio stream of a video file, carried into the upscaled output beside the new video.

    Its packets are copied as they are when the output's container takes its codec (AAC into MP4, anything
    into Matroska), else decoded and re-encoded with PyAV's AAC encoder (at the input's sample rate and
    channel layout where AAC takes them, else :data:`AAC_FALLBACK_RATE` / the usual layout of its channel
    count / stereo). Times are shifted so that the input's first video frame is at 0, as the written video
    starts at 0, and the audio stops at the end of the written video: a copied stream keeps whole packets,
    those that start before the end (so it ends at most one audio packet after the video: 1024 samples for
    AAC; the packet that ends at the video's start is kept too, as the decoder's pre-roll), a re-encoded one
    is cut at the sample. Audio shorter than the video stays shorter.

    Audio is never a reason to lose the video: an audio stream that cannot be opened, that the output's
    container takes neither as it is nor as AAC, or that fails to read or to write part way is left out from
    there on (what was read before the failure is kept), and :attr:`error` says why, naming the file (also
    logged as a warning)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.error: str | None = None  #: why the audio is missing from the output or stops early
        self.mode = ""  #: "copy" or "aac" once added to an output
        self.stream: av.AudioStream | None = None  #: the output's audio stream
        self.input = None
        self.source: av.AudioStream | None = None
        self.start = 0.0  # the input's time of its first video frame: the output's 0
        self._eof = False  # nothing more is read from the input (its end, or a read error)
        self._broken = False  # nothing more is written (a write error)
        self._read_to = 0.0  # output time of the end of the last packet read
        self._next: av.Packet | None = None  # copy: the first packet at or beyond the end muxed so far
        self._preroll: av.Packet | None = None  # copy: the last packet that ends at or before the video's start
        self._resampler: av.AudioResampler | None = None
        self._rate, self._layout = 0, ""
        self._pending: np.ndarray | None = None  # aac: resampled samples (channels, n) not encoded yet ...
        self._position: int | None = None  # ... and the output sample index of their first one
        try:
            self.input = av.open(str(path))
            if not self.input.streams.audio:
                self.close()
                return
            self.source = self.input.streams.audio[0]
            video = self.input.streams.video[0]
            if video.start_time is not None:
                self.start = float(video.start_time * video.time_base)
            self._packets = self.input.demux(self.source)
        except (av.FFmpegError, IndexError) as err:
            self.close()
            self.source = None
            self._fail(f"cannot open its audio stream ({err})")

    @property
    def description(self) -> str:
        """What the output carries: ``'aac 44100 Hz mono, copied'``, ``'flac 44100 Hz mono, re-encoded to aac
        44100 Hz mono'``, or ``''`` (no audio)."""
        if self.stream is None or self.source is None:
            return ""
        ctx = self.source.codec_context
        what = f"{ctx.name} {ctx.sample_rate} Hz {ctx.layout.name}"
        return f"{what}, copied" if self.mode == "copy" else f"{what}, re-encoded to aac {self._rate} Hz {self._layout}"

    def _fail(self, why: str) -> None:
        if self.error is None:
            self.error = f"{self.path}: audio left out: {why}"
            log.warning("%s", self.error)

    def add_to(self, container: av.container.OutputContainer) -> None:
        """Add the output's audio stream to ``container`` (before anything is muxed into it)."""
        if self.source is None:
            return
        fmt = container.format.name
        ctx = self.source.codec_context
        if _takes_audio(fmt, self.source):
            self.stream = container.add_stream_from_template(self.source)
            self.mode = "copy"
            return
        rates = av.Codec("aac", "w").audio_rates or ()
        rate = ctx.sample_rate if ctx.sample_rate in rates else AAC_FALLBACK_RATE
        # its layout, or the usual one of its channel count (for a layout of unspecified order: "1 channels"), or
        # stereo
        usual = _USUAL_LAYOUTS.get(ctx.layout.nb_channels, "stereo")
        for layout in dict.fromkeys((ctx.layout.name, usual, "stereo")):
            if _takes_audio(fmt, rate=rate, layout=layout):
                self.stream = container.add_stream("aac", rate=rate, layout=layout)
                self.mode, self._rate, self._layout = "aac", rate, layout
                self._resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
                return
        self._fail(f"the output's container ({fmt}) takes neither its {ctx.name} audio as it is nor AAC")

    def mux_until(self, container: av.container.OutputContainer, end: float) -> None:
        """Mux the audio from the video's start up to ``end`` seconds of the output's video."""
        if self.stream is None or self._broken:
            return
        try:
            if self.mode == "copy":
                self._copy_until(container, end)
            else:
                self._encode_until(container, end)
        except (av.FFmpegError, ValueError) as err:
            self._broken = True
            self._fail(f"cannot write it after {self._written():.3f} s ({err}); the output's audio stops there")

    def finish(self, container: av.container.OutputContainer, end: float) -> None:
        """Mux the audio up to ``end`` (the video's end) and flush the AAC encoder."""
        self.mux_until(container, end)
        if self.mode != "aac" or self.stream is None or self._broken:
            return
        try:
            if self._position is not None:
                self._take(self._resampler.resample(None))  # the resampler's delayed samples
                self._emit(container, round(end * self._rate))
            container.mux(self.stream.encode(None))
        except (av.FFmpegError, ValueError) as err:
            self._broken = True
            self._fail(f"cannot write it after {self._written():.3f} s ({err}); the output's audio stops there")

    def close(self) -> None:
        if self.input is not None:
            self.input.close()
            self.input = None

    def _read(self) -> av.Packet | None:
        """The next audio packet of the input (None at its end, or after a read error: recorded)."""
        if self._next is not None:
            packet, self._next = self._next, None
            return packet
        if self._eof:
            return None
        try:
            for packet in self._packets:
                if packet.size and packet.pts is not None:
                    self._read_to = float((packet.pts + (packet.duration or 0)) * packet.time_base) - self.start
                    return packet
        except av.FFmpegError as err:
            self._read_failed(err, self._read_to)
        self._eof = True
        return None

    def _read_failed(self, err: Exception, at: float) -> None:
        """Stop reading: ``err`` came after ``at`` seconds of the output's audio."""
        self._eof = True
        self._fail(f"cannot read it after {max(at, 0.0):.3f} s ({err}); the output's audio stops there")

    def _written(self) -> float:
        if self.mode == "aac":
            return max(self._position or 0, 0) / self._rate
        return max(self._read_to, 0.0)

    # copy: whole packets, shifted
    def _copy_until(self, container: av.container.OutputContainer, end: float) -> None:
        while (packet := self._read()) is not None:
            t = float(packet.pts * packet.time_base) - self.start
            if t >= end:
                self._next = packet
                return
            if t + float((packet.duration or 0) * packet.time_base) <= 0:
                self._preroll = packet  # before the video's start: only the last one is kept
                continue
            for p in (self._preroll, packet) if self._preroll is not None else (packet,):
                shift = round(self.start / p.time_base)
                p.pts -= shift
                if p.dts is not None:
                    p.dts -= shift
                p.stream = self.stream
                container.mux(p)
            self._preroll = None

    # aac: decoded, resampled, cut at the sample, re-encoded
    def _pending_samples(self) -> int:
        return 0 if self._pending is None else self._pending.shape[1]

    def _take(self, frames: list[av.AudioFrame]) -> None:
        """Append resampled frames to the pending samples."""
        if frames:
            new = np.concatenate([f.to_ndarray() for f in frames], axis=1)
            self._pending = new if self._pending is None else np.concatenate([self._pending, new], axis=1)

    def _emit(self, container: av.container.OutputContainer, stop: int) -> None:
        """Encode the pending samples of output index below ``stop`` (those before 0 are dropped)."""
        if self._pending is None:
            return
        a, n = self._position, self._pending.shape[1]
        lo = min(n, max(0, -a))
        hi = max(lo, min(n, stop - a))
        if hi > lo:
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(self._pending[:, lo:hi]), format="fltp",
                                               layout=self._layout)
            frame.sample_rate = self._rate
            frame.pts = a + lo
            frame.time_base = Fraction(1, self._rate)
            container.mux(self.stream.encode(frame))
        self._pending = self._pending[:, hi:] if hi < n else None
        self._position = a + hi

    def _encode_until(self, container: av.container.OutputContainer, end: float) -> None:
        stop = round(end * self._rate)
        while self._position is None or self._position + self._pending_samples() < stop:
            packet = self._read()
            if packet is None:
                break
            try:
                frames = packet.decode()
            except av.FFmpegError as err:
                self._read_failed(err, float(packet.pts * packet.time_base) - self.start)
                break
            for frame in frames:
                if self._position is None:  # the first sample's time; from there on the samples follow on
                    t = (frame.time if frame.time is not None else self.start) - self.start
                    self._position = round(t * self._rate)
                self._take(self._resampler.resample(frame))
        self._emit(container, stop)


class _H264Writer:
    """Encodes ``(H, W, 3)`` uint8 RGB frames with libx264 (yuv420p) into a temporary file beside ``path``,
    renamed over ``path`` by :meth:`finish`; odd sizes get one replicated row / column (yuv420p needs
    even sizes). With ``audio``, its stream is muxed beside the video, up to the end of each frame written."""

    def __init__(self, path: Path, fps: Fraction, crf: int, preset: str, audio: _AudioTrack | None = None) -> None:
        if not path.suffix:
            raise ConfigError(f"output {str(path)!r} needs a suffix naming the container (.mp4, .mkv, .mov)")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.tmp = path.parent / f".{path.stem}.{uuid.uuid4().hex}.tmp{path.suffix}"
        self.fps, self.crf, self.preset = fps, crf, preset
        self.audio = audio
        self.container = None
        self.stream = None
        self.count = 0

    def _open(self, h: int, w: int) -> None:
        try:
            self.container = av.open(str(self.tmp), mode="w")
            self.stream = self.container.add_stream("libx264", rate=self.fps)
        except (av.FFmpegError, ValueError) as err:
            self.abort()
            raise ConfigError(f"output {str(self.path)!r}: cannot write H.264 into this container ({err})") from err
        self.stream.width, self.stream.height = w + w % 2, h + h % 2
        self.stream.pix_fmt = "yuv420p"
        self.stream.codec_context.time_base = 1 / self.fps
        self.stream.options = {"crf": str(self.crf), "preset": self.preset}
        if self.audio is not None:
            self.audio.add_to(self.container)

    def write(self, frame: np.ndarray) -> None:
        h, w, _ = frame.shape
        if self.container is None:
            self._open(h, w)
        if h % 2 or w % 2:
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        vf.pts = self.count
        vf.time_base = 1 / self.fps
        self.container.mux(self.stream.encode(vf))
        self.count += 1
        if self.audio is not None:
            self.audio.mux_until(self.container, float(self.count / self.fps))

    def finish(self) -> None:
        if self.audio is not None:
            self.audio.finish(self.container, float(self.count / self.fps))
        self.container.mux(self.stream.encode(None))
        self.container.close()
        self.container = None
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self.container is not None:
            try:
                self.container.close()
            except av.FFmpegError:
                pass
            self.container = None
        self.tmp.unlink(missing_ok=True)


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


def upscale(loaded: LoadedModel, src: str | os.PathLike, dst: str | os.PathLike, tile: int = DEFAULT_TILE,
            overlap: int = DEFAULT_OVERLAP, side_by_side: bool = False, crf: int = 18, x264_preset: str = "medium",
            fps: float | None = None, progress: bool = True) -> UpscaleStats:
    """Super-resolve the video (or frame folder) ``src`` into the H.264 file ``dst`` at the input's frame
    rate (``fps`` for a frame folder, default 24), streaming (see the module docstring). With
    ``side_by_side`` each output frame is ``bicubic | model`` (twice as wide). Written to a temporary
    file and renamed: a failure leaves no ``dst``.

    The first audio stream of a video file is carried into ``dst``, copied as it is when ``dst``'s container
    takes its codec, else re-encoded to AAC, and cut at the end of the video (see :class:`_AudioTrack`);
    audio that cannot be carried (whole or in part) never fails the upscale: ``audio_error`` of the result says
    what is missing and why. A frame folder has no audio."""
    start = time.perf_counter()
    if tile < 0 or (tile > 0 and not 0 <= overlap < tile):
        raise ConfigError(f"--tile {tile} --tile-overlap {overlap}: expected tile >= 0 (0 = whole frames) and "
                          f"0 <= overlap < tile")
    src, dst = Path(src), Path(dst)
    if dst.resolve() == src.resolve():
        raise ConfigError(f"output {str(dst)!r} is the input file")
    model_s = encode_s = 0.0
    with FrameReader(src, fps) as reader:
        audio = _AudioTrack(src) if src.is_file() else None
        try:
            writer = _H264Writer(dst, reader.fps, crf, x264_preset, audio)
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
        return UpscaleStats(str(src), str(dst), writer.count, (reader.width, reader.height),
                            (s * reader.width, s * reader.height), float(reader.fps), time.perf_counter() - start,
                            model_s, encode_s, tile, overlap, audio=audio.description if audio else "",
                            audio_error=audio.error if audio else None)


# ----------------------------------------------------------------------------- evaluate


def evaluation_videos(paths: list[str | os.PathLike], scale: int = 4, degradation: str = "bicubic") -> list:
    """The videos to evaluate on, as :class:`~fedvsr.data.synthetic.VideoEntry`: each path is a video file,
    a frame folder, a dataset root (REDS, Vid4-like ``GT/``, Vimeo-90K: its test split, with its pre-made
    LR frames where they fit ``degradation``) or a folder of videos and frame folders (every one of them).
    A path that does not exist raises :class:`VideoError` naming it."""
    return _evaluation_entries(paths, scale, degradation)[0]


def _evaluation_entries(paths: list[str | os.PathLike], scale: int, degradation: str
                        ) -> tuple[list, list[tuple[str, str]]]:
    """:func:`evaluation_videos` and the ``(path, reason)`` of the videos a dataset root's scan left out."""
    from fedvsr.data.layouts import detect_layout, scan_dataset
    from fedvsr.data.sources import scan_folder
    from fedvsr.data.synthetic import VideoEntry

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


def evaluate_clip(loaded: LoadedModel, entry, degradation: str, scale: int, params: dict[str, Any],
                  tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP, chunk: int = 8) -> dict[str, Any]:
    """One row of ``fedvsr evaluate``: the clip's frames degraded (as training degrades them), restored
    whole (every frame, border frames by replication), and PSNR / SSIM on Y and RGB with a border crop of
    ``scale`` for the model and for bicubic, each the mean over the clip's frames."""
    from fedvsr.data.datasets import load_pair

    start = time.perf_counter()
    pair = load_pair(entry, degradation, scale, **params)
    model_scores, bic_scores = _FrameScores(scale), _FrameScores(scale)
    sr_buf, bic_buf, i = [], [], 0
    for hr_frame, bic in restore_frames(loaded, iter(pair.lr), tile, overlap, bicubic=True):
        sr_buf.append(hr_frame)
        bic_buf.append(bic)
        if len(sr_buf) == chunk:
            model_scores.add(np.stack(sr_buf), pair.hr[i: i + chunk])
            bic_scores.add(np.stack(bic_buf), pair.hr[i: i + chunk])
            i += chunk
            sr_buf, bic_buf = [], []
    if sr_buf:
        model_scores.add(np.stack(sr_buf), pair.hr[i:])
        bic_scores.add(np.stack(bic_buf), pair.hr[i:])
    t, h, w, _ = pair.hr.shape
    return {"clip": entry.name, "path": entry.path, "frames": t, "width": w, "height": h,
            **model_scores.means(), **{f"bicubic_{k}": v for k, v in bic_scores.means().items()},
            "seconds": time.perf_counter() - start}


def evaluate(loaded: LoadedModel, paths: list[str | os.PathLike], degradation: str | None = None,
             crf: int | None = None, qp: int | None = None, tile: int = DEFAULT_TILE,
             overlap: int = DEFAULT_OVERLAP, on_clip: Callable[[dict[str, Any]], None] | None = None,
             on_skip: Callable[[str, str], None] | None = None) -> EvaluationRows:
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
    params = {"blur-h264": {"crf": d.crf if crf is None else crf},
              "hevc": {"qp": d.qp if qp is None else qp}}.get(degradation, {})
    entries, scan_skipped = _evaluation_entries(paths, scale, degradation)
    if not entries:
        raise VideoError(f"no videos found in {', '.join(map(str, paths))}"
                         + "".join(f"; {reason}" for _, reason in scan_skipped))
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
    out: dict[str, Any] = {"clip": "average", "path": None, "frames": int(sum(r["frames"] for r in rows)),
                           "width": None, "height": None}
    out.update({k: float(np.mean([r[k] for r in rows])) for k in keys})
    out["seconds"] = float(sum(r["seconds"] for r in rows))
    return out


def evaluation_table(rows: list[dict[str, Any]], loaded: LoadedModel) -> pa.Table:
    """The Parquet table: one row per clip then the ``average`` row, with the model and checkpoint. The videos
    left out (``rows.skipped`` of :class:`EvaluationRows`) are in the schema's metadata under
    ``fedvsr.skipped``: a JSON list of ``{"path", "reason"}``."""
    all_rows = [*rows, {**average_row(rows), **{k: rows[0][k] for k in ("degradation", "crf", "qp") if k in rows[0]}}]
    cols: dict[str, list] = {k: [r.get(k) for r in all_rows] for k in all_rows[0]}
    for k in (f"{m}_gain" for m in ("psnr", "psnr_rgb")):
        base = k[: -len("_gain")]
        cols[k] = [r[base] - r[f"bicubic_{base}"] for r in all_rows]
    n = len(all_rows)
    cols.update({"model": [loaded.name] * n, "preset": [loaded.preset] * n, "scale": [loaded.scale] * n,
                 "checkpoint": [str(loaded.weights)] * n})
    skipped = [{"path": path, "reason": reason} for path, reason in getattr(rows, "skipped", ())]
    return pa.table(cols, metadata={"fedvsr.skipped": json.dumps(skipped)})


def format_table(rows: list[dict[str, Any]]) -> str:
    """The printed table: per clip and the average, model and bicubic on Y and RGB; then one line per video
    left out (``rows.skipped`` of :class:`EvaluationRows`), its reason."""
    head = (f"{'clip':<24} {'frames':>6}  {'PSNR-Y':>7} {'SSIM-Y':>7} {'PSNR':>7} {'SSIM':>7}  "
            f"{'bic PSNR-Y':>10} {'bic SSIM-Y':>10} {'bic PSNR':>8} {'bic SSIM':>8}")
    lines = [head, "-" * len(head)]
    for r in [*rows, average_row(rows)]:
        if r["clip"] == "average":
            lines.append("-" * len(head))
        name = r["clip"] if len(r["clip"]) <= 24 else "..." + r["clip"][-21:]
        lines.append(f"{name:<24} {r['frames']:>6}  {_db(r['psnr'])} {r['ssim']:7.4f} {_db(r['psnr_rgb'])} "
                     f"{r['ssim_rgb']:7.4f}  {_db(r['bicubic_psnr'], 10)} {r['bicubic_ssim']:10.4f} "
                     f"{_db(r['bicubic_psnr_rgb'], 8)} {r['bicubic_ssim_rgb']:8.4f}")
    lines += [reason for _, reason in getattr(rows, "skipped", ())]
    return "\n".join(lines)


def _db(x: float, width: int = 7) -> str:
    return f"{'inf':>{width}}" if math.isinf(x) else f"{x:{width}.2f}"


def default_evaluation_path(loaded: LoadedModel, checkpoint: str | os.PathLike) -> Path:
    """Where ``fedvsr evaluate`` writes its table without ``--out``: ``<run>/evaluation.parquet`` for a run
    folder, ``<weights stem>.evaluation.parquet`` beside a weights file."""
    p = Path(checkpoint)
    if p.is_dir():
        return p / "evaluation.parquet"
    return p.with_name(f"{p.stem}.evaluation.parquet")
