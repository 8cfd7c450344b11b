"""Video I/O with PyAV: decode video files or frame folders, encode clips, write frame folders.

Every array here is ``(T, H, W, 3)`` ``uint8`` RGB. Encoding runs single-threaded (x264/x265 output
depends on the thread count); decoding is bit-exact whatever the threads. Even single-threaded,
the libx264 and libx265 bundled with PyAV are not always deterministic: measured with
``MALLOC_PERTURB_``, libx264's mb-tree lookahead reads uninitialised memory at every frame size
tried (32x32 to 320x180), and libx265 does at some sizes (64x64, 72x64, 128x64), so the same frames
can encode to other bytes in another process. FFV1 (lossless) is deterministic; the built-in
synthetic videos use it.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

#: suffixes of the frame images read from a frame folder (case-insensitive)
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp")

# image suffix -> (PyAV encoder, pixel format it is fed)
_IMAGE_ENCODERS: dict[str, tuple[str, str]] = {
    "png": ("png", "rgb24"),
    "bmp": ("bmp", "bgr24"),
    "jpg": ("mjpeg", "yuvj444p"),
    "jpeg": ("mjpeg", "yuvj444p"),
}

# pixel formats whose chroma planes are subsampled by two in both directions
_SUBSAMPLED_420 = {"yuv420p", "yuvj420p", "nv12", "yuv420p10le"}


@dataclass(frozen=True)
class VideoEntry:
    """One video of a dataset."""

    path: str  #: absolute path of the video file (or frame folder)
    label: str  #: content class, for class-based partitions
    name: str  #: unique name, e.g. ``"stripes-pan_0003"``
    #: the dataset's pre-made LR frames of this video (a frame folder), used instead of resampling the HR;
    #: None: the LR video is made from the HR one (see :mod:`fedvsr.data.layouts`)
    lr_path: str | None = None
    #: a segment of the video (``data.segment_frames``): frames ``frame_start .. frame_stop - 1`` only;
    #: ``frame_stop = 0``: the whole video
    frame_start: int = 0
    frame_stop: int = 0
    #: this video's own degradation (a :mod:`fedvsr.data.degrade` name) and its parameters as sorted ``(key,
    #: value)`` pairs, used instead of ``data.degradation`` (``fl.partition = by-degradation`` gives each client's
    #: videos its device's, see :func:`fedvsr.fl.partition.with_degradations`); ``""``: the experiment's
    degradation: str = ""
    degradation_params: tuple[tuple[str, Any], ...] = ()

    def segment(self, start: int, stop: int) -> VideoEntry:
        """The segment of frames ``start .. stop - 1`` of this whole video, named ``<name>[start:stop]``."""
        if self.frame_stop:
            raise ValueError(f"{self.name!r} is already a segment")
        if not 0 <= start < stop:
            raise ValueError(f"a segment needs 0 <= start < stop, got {start}:{stop}")
        return replace(self, name=f"{self.name}[{start}:{stop}]", frame_start=start, frame_stop=stop)

    def whole(self) -> VideoEntry:
        """The whole video a segment was cut from (itself if it is not a segment)."""
        if not self.frame_stop:
            return self
        return replace(
            self, name=self.name[: -len(f"[{self.frame_start}:{self.frame_stop}]")], frame_start=0, frame_stop=0
        )


#: how an evaluation video that cannot be read is reported, before the error naming it (the platform's
#: ``video_skipped`` events and ``fedvsr evaluate``)
LEFT_OUT = "evaluation video left out: "


class VideoError(ValueError):
    """A video or frame folder that cannot be read; the message names the path and the problem."""


def natural_key(name: str) -> list[int | str]:
    """Sort key putting ``frame9.png`` before ``frame10.png``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _iter_file(path: Path) -> Iterator[np.ndarray]:
    """Decode the frames of the first video stream of ``path`` one at a time, as ``(H, W, 3)`` uint8 RGB.

    Raises :class:`VideoError` naming the file for an empty file, a file that is not a container PyAV can
    read (a text file named ``.mp4``), a file without a video stream, a decoding error (a truncated or corrupt
    stream), and a file that decodes fewer frames than its container declares (a truncated AVI; raised after
    its last frame). An MP4 cut short usually loses its index and fails to open; Matroska declares no frame
    count and MP4 edit lists may drop declared samples, so such files cut short between frames decode as
    shorter videos.
    """
    if path.is_file() and path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file (0 bytes), not a video")
    decoded = declared = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                what = (
                    "no video stream in the file"
                    if container.streams
                    else "no stream at all in the file (truncated, or not a video)"
                )
                raise VideoError(f"{path}: {what}")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            # an MP4 / MOV may declare samples that its edit list drops, so its count is not checked
            declared = 0 if "mov" in container.format.name else stream.frames
            for frame in container.decode(stream):
                decoded += 1
                yield frame.to_ndarray(format="rgb24")
    except av.FFmpegError as err:
        raise VideoError(
            f"{path}: PyAV cannot decode it ({err}); the file is corrupt, truncated or not a video"
        ) from err
    if decoded and declared > decoded:
        raise VideoError(
            f"{path}: truncated or corrupt: decoded {decoded} of the {declared} frames its container declares"
        )


def _first_frame(file: Path) -> np.ndarray:
    """The first frame of an image file."""
    for frame in _iter_file(file):
        return frame
    raise VideoError(f"{file}: no frame decoded from the image")


def list_frame_files(folder: str | os.PathLike) -> list[Path]:
    """The frame images of ``folder`` (png/jpg/jpeg/bmp) in natural order."""
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=lambda p: natural_key(p.name))


def iter_video(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """The frames of a video file or a folder of frame images, one at a time, with :func:`read_video`'s checks
    (a frame of another size than the first and a video without frames raise :class:`VideoError` where they
    are met), so that a video can be checked without holding all of it in memory."""
    path = Path(path)
    if not path.exists():
        raise VideoError(f"{path}: no such file or directory")
    if path.is_dir():
        files = list_frame_files(path)
        if not files:
            raise VideoError(f"{path}: folder holds no frame images ({', '.join(IMAGE_SUFFIXES)})")
        frames, names = map(_first_frame, files), [f.name for f in files]
    else:
        frames, names = _iter_file(path), None
    first = None
    for i, frame in enumerate(frames):
        if first is None:
            first = frame.shape
        elif frame.shape != first:
            where = names[i] if names is not None else f"frame {i}"
            raise VideoError(
                f"{path}: frames differ in size: {where} is {frame.shape[1]}x{frame.shape[0]}, "
                f"the first frame is {first[1]}x{first[0]} (width x height)"
            )
        yield frame
    if first is None:
        raise VideoError(f"{path}: no frames decoded (a truncated or empty video)")


def read_video(path: str | os.PathLike) -> np.ndarray:
    """Decode a video file or a folder of frame images.

    Parameters
    ----------
    path
        A video file PyAV can open (mp4, mkv, avi, mov, ...) or a directory of png/jpg/jpeg/bmp
        frames, read in natural order (``frame10`` after ``frame9``).

    Returns
    -------
    np.ndarray
        ``(T, H, W, 3)`` uint8 RGB.

    Raises
    ------
    VideoError
        Missing path, undecodable file, zero frames, folder without images, frames of different sizes.
    """
    return np.stack(list(iter_video(path)))


def _check_frames(frames: np.ndarray, what: str = "frames") -> None:
    if not isinstance(frames, np.ndarray):
        raise ValueError(f"{what} must be a numpy array, got {type(frames).__name__}")
    if frames.dtype != np.uint8:
        raise ValueError(f"{what} must have dtype uint8, got {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{what} must have shape (T, H, W, 3), got {tuple(frames.shape)}")
    if frames.shape[0] == 0 or frames.shape[1] == 0 or frames.shape[2] == 0:
        raise ValueError(f"{what} must hold at least one non-empty frame, got {tuple(frames.shape)}")


def _temp_path(path: Path) -> Path:
    """A fresh file in ``path``'s directory with the same suffix (so the muxer is guessed alike)."""
    return path.parent / f".{path.stem}.{uuid.uuid4().hex}.tmp{path.suffix}"


# libx265 as bundled with PyAV 18 corrupts the heap (the process aborts) for these frame widths
X265_CRASH_WIDTHS = range(33, 49)
X265_MIN_SIZE = 16


def _check_x265_size(h: int, w: int) -> None:
    if h < X265_MIN_SIZE or w < X265_MIN_SIZE:
        raise ValueError(f"libx265 needs frames of at least {X265_MIN_SIZE}x{X265_MIN_SIZE}, got {h}x{w} (HxW)")
    if w in X265_CRASH_WIDTHS:
        raise ValueError(
            f"libx265 crashes the process on frames {X265_CRASH_WIDTHS.start}-{X265_CRASH_WIDTHS.stop - 1} "
            f"pixels wide (a bug of the x265 bundled with PyAV), got width {w}; pad the frames to 64"
        )


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: int = 24,
    codec: str = "libx264",
    crf: int | None = None,
    qp: int | None = None,
    pix_fmt: str = "yuv420p",
    bframes: int | None = None,
) -> None:
    """Encode ``frames`` ``(T, H, W, 3)`` uint8 RGB into the video file ``path``, atomically.

    ``crf`` / ``qp`` are passed to the encoder as options (libx264, libx265). ``bframes`` caps the
    consecutive B-frames (``None``: the encoder's default, 3 for libx264 and 4 for libx265); ``bframes=0``
    gives I- and P-frames only, each referring to earlier frames: no frame reordering. ``crf=0`` with
    ``pix_fmt="yuv444p"`` and libx264 is lossless up to the RGB <-> YUV conversion (off by at
    most a few levels); ``codec="ffv1", pix_fmt="bgr0"`` is lossless in RGB. The muxer runs
    bit-exact (no random ids or version strings), so a deterministic encoder gives the same bytes
    every time. The file is encoded next to ``path`` and renamed over it, so a reader never sees
    half a file. The container follows the suffix of ``path``.
    """
    path = Path(path)
    _check_frames(frames)
    if not path.suffix:
        raise ValueError(f"{path}: the file name needs a suffix naming the container (.mp4, .mkv, ...)")
    t, h, w, _ = frames.shape
    if pix_fmt in _SUBSAMPLED_420 and (h % 2 or w % 2):
        raise ValueError(f"pix_fmt {pix_fmt!r} needs an even height and width, got frames of {h}x{w} (HxW)")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if codec not in av.codecs_available:
        raise ValueError(f"codec {codec!r} is not available in this PyAV build")
    if codec == "libx265":
        _check_x265_size(h, w)
    options: dict[str, str] = {}
    if crf is not None:
        options["crf"] = str(crf)
    if qp is not None:
        options["qp"] = str(qp)
    if bframes is not None and (isinstance(bframes, bool) or not isinstance(bframes, int) or bframes < 0):
        raise ValueError(f"bframes must be a non-negative integer or None, got {bframes!r}")
    if codec == "libx265":
        # x265 logs to stderr by default; one frame thread keeps its output reproducible
        options["x265-params"] = "log-level=error:frame-threads=1:pools=none" + (
            f":bframes={bframes}" if bframes is not None else ""
        )
    elif bframes is not None:
        options["bf"] = str(bframes)  # FFmpeg's generic option (libx264 maps it to x264's bframes)

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(path)
    try:
        with av.open(str(tmp), mode="w", container_options={"fflags": "+bitexact"}) as container:
            stream = container.add_stream(codec, rate=fps)
            stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
            stream.codec_context.time_base = Fraction(1, fps)
            stream.codec_context.thread_count = 1
            stream.options = options
            for i in range(t):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i]), format="rgb24")
                frame.pts = i
                frame.time_base = Fraction(1, fps)
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        os.replace(tmp, path)
    except av.FFmpegError as err:
        raise VideoError(f"{path}: encoding with {codec} ({pix_fmt}) failed: {err}") from err
    finally:
        tmp.unlink(missing_ok=True)


def encode_image(frame: np.ndarray, ext: str = "png") -> bytes:
    """Encode one ``(H, W, 3)`` uint8 RGB frame as an image file's bytes with PyAV."""
    ext = ext.lower().lstrip(".")
    if ext not in _IMAGE_ENCODERS:
        raise ValueError(f"image format {ext!r} is not supported; use one of {sorted(_IMAGE_ENCODERS)}")
    codec, pix_fmt = _IMAGE_ENCODERS[ext]
    h, w, _ = frame.shape
    ctx = av.CodecContext.create(codec, "w")
    ctx.width, ctx.height, ctx.pix_fmt = w, h, pix_fmt
    ctx.time_base = Fraction(1, 25)
    av_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
    packets = ctx.encode(av_frame) + ctx.encode(None)
    return b"".join(bytes(p) for p in packets)


def write_frame_folder(folder: str | os.PathLike, frames: np.ndarray, ext: str = "png") -> list[Path]:
    """Write ``frames`` ``(T, H, W, 3)`` uint8 RGB as ``00000000.png``, ``00000001.png``, ... (REDS style).

    PNG and BMP are lossless (``read_video(folder)`` returns ``frames`` bit-exactly); JPEG is not.
    Each file is written to a temporary name and renamed. Returns the paths in frame order.
    """
    _check_frames(frames)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ext = ext.lower().lstrip(".")
    paths = []
    for i, frame in enumerate(frames):
        data = encode_image(frame, ext)
        target = folder / f"{i:08d}.{ext}"
        tmp = _temp_path(target)
        try:
            tmp.write_bytes(data)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        paths.append(target)
    return paths
