"""Streaming video I/O for inference: :class:`FrameReader` decodes a video file (or a folder of frame images)
one frame at a time, :class:`H264Writer` encodes frames with libx264 as they come, and :class:`AudioTrack`
carries the input's audio into the output beside them (copied, or re-encoded to AAC), so that neither the input
nor the output is ever held whole. Whole-clip reading and writing (the training data) is :mod:`fedvsr.data.video`.
"""

from __future__ import annotations

import io
import logging
import os
import uuid
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from fedvsr.config import ConfigError
from fedvsr.data.video import IMAGE_SUFFIXES, VideoError, list_frame_files

#: the frame rate of a frame folder's output without ``--fps``
DEFAULT_FPS = Fraction(24)
#: FFmpeg demuxers that turn text into frames (a text file "opens" as a 640x400 ANSI-art video)
_TEXT_DEMUXERS = {"tty", "srt", "ass", "webvtt", "subviewer", "txt"}
#: the sample rate an input's audio is re-encoded at when PyAV's AAC encoder does not take its own
AAC_FALLBACK_RATE = 48000
#: the channel layout AAC is written in for a channel count whose layout the input leaves unspecified
_USUAL_LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1", 8: "7.1"}

log = logging.getLogger(__name__)


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
                raise VideoError(
                    f"{path}: not a video PyAV can read: corrupt, truncated or unsupported ({err})"
                ) from err
            if not self._container.streams.video:
                self._container.close()
                raise VideoError(f"{path}: no video stream in the file")
            stream = self._container.streams.video[0]
            stream.thread_type = "AUTO"
            if self._container.format.name in _TEXT_DEMUXERS:  # FFmpeg renders any text file as ANSI art
                self._container.close()
                raise VideoError(
                    f"{path}: not a video file (FFmpeg reads it as text, format {self._container.format.name!r})"
                )
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
            raise VideoError(
                f"{where}: frame is {frame.shape[1]}x{frame.shape[0]}, the first frame is "
                f"{self.width}x{self.height} (width x height); frames must keep one size"
            )
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
            raise VideoError(
                f"{self.path}: decoding failed after {count} frames: corrupt or truncated ({err})"
            ) from err
        if count == 0:
            raise VideoError(f"{self.path}: no frames decoded: corrupt, truncated or empty")
        announced = self._container.streams.video[0].frames
        if announced and count < announced:
            raise VideoError(
                f"{self.path}: truncated: its container announces {announced} frames, only {count} could be decoded"
            )
        if self._seconds and first is not None:
            frame_s = 1 / float(self.fps)
            decoded = last - first + frame_s
            if decoded < self._seconds - 1.5 * frame_s:
                raise VideoError(
                    f"{self.path}: truncated: its container announces {self._seconds:.3f} s of video, "
                    f"decoding stopped after {count} frames ({decoded:.3f} s)"
                )


# ----------------------------------------------------------------------------- writing


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


class AudioTrack:
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
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(self._pending[:, lo:hi]), format="fltp", layout=self._layout
            )
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


class H264Writer:
    """Encodes ``(H, W, 3)`` uint8 RGB frames with libx264 (yuv420p) into a temporary file beside ``path``,
    renamed over ``path`` by :meth:`finish`; odd sizes get one replicated row / column (yuv420p needs
    even sizes). With ``audio``, its stream is muxed beside the video, up to the end of each frame written."""

    def __init__(self, path: Path, fps: Fraction, crf: int, preset: str, audio: AudioTrack | None = None) -> None:
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
