"""`fedvsr upscale` and `fedvsr evaluate` (fedvsr/inference.py, fedvsr/evaluation.py, fedvsr/data/streaming.py) on real
video files written here."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from fractions import Fraction

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from fedvsr import cli
from fedvsr.config import ConfigError, load_config
from fedvsr.data.datasets import load_pair
from fedvsr.data.streaming import FrameReader
from fedvsr.data.video import VideoEntry, VideoError, read_video, write_video
from fedvsr.evaluation import average_row, evaluate
from fedvsr.fl.strategy import float_state
from fedvsr.inference import LoadedModel, frame_windows, load_model, restore_frames, tile_spans, tiled_forward, upscale
from fedvsr.metrics import bicubic_upsample, quantize, score
from fedvsr.models import VSRModel, build_model
from fedvsr.platform.checkpoint import save_arrays

T, H, W = 12, 37, 45  # odd LR sizes: tiles shift back at the border, the H.264 output is still even (x4)


def _frames(seed: int, t: int, h: int, w: int) -> np.ndarray:
    """Smooth random frames (noise upsampled), different from frame to frame."""
    rng = np.random.default_rng(seed)
    small = torch.from_numpy(rng.random((t, 3, (h + 3) // 4, (w + 3) // 4))).float()
    up = torch.nn.functional.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    return (up.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A run folder (config.yaml + model.safetensors of an EFVSR tiny with a non-zero last layer, so it is not
    plain bicubic) and a 20-frame 45x37 input clip at 25 fps, lossless (FFV1)."""
    root = tmp_path_factory.mktemp("inference")
    run = root / "run"
    run.mkdir()
    (run / "config.yaml").write_text(load_config(None, ["model.preset=tiny"]).to_yaml())
    torch.manual_seed(0)
    model = build_model("efvsr", "tiny")
    nn.init.normal_(model.tail.weight, std=0.05)
    save_arrays(run / "model.safetensors", {k: v.numpy() for k, v in float_state(model).items()})
    clip = _frames(1, T, H, W)
    write_video(root / "in.mkv", clip, fps=25, codec="ffv1", pix_fmt="bgr0")
    return {"root": root, "run": run, "input": root / "in.mkv", "clip": clip, "model": model.eval()}


def _untiled(model: VSRModel, clip: np.ndarray) -> torch.Tensor:
    """The reference: the model on each replicate-padded window, whole frames, float ``(T, 3, 4H, 4W)``."""
    x = torch.from_numpy(clip).permute(0, 3, 1, 2).float() / 255
    half = model.num_frames // 2
    with torch.no_grad():
        return torch.cat(
            [model(x[[min(max(i + d, 0), len(x) - 1) for d in range(-half, half + 1)]][None]) for i in range(len(x))]
        )


def _decode(path) -> tuple[np.ndarray, Fraction, str]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        rate, codec = s.average_rate, s.codec_context.name
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(s)])
    return frames, rate, codec


def _audio_streams(path) -> int:
    with av.open(str(path)) as c:
        return len(c.streams.audio)


# ----------------------------------------------------------------------------- windows and tiles


def test_tile_spans_worked_example():
    # 100 px, tiles of 40 overlapping by 10: starts 0, 30 and (shifted back) 60; cuts at the overlaps' middles
    # (37 px, tiles of 16 by 8: the last tile starts at 21, its overlap with [16, 32) is [21, 32), cut at 26)
    assert tile_spans(100, 40, 10) == [(0, 40, 0, 35), (30, 70, 35, 65), (60, 100, 65, 100)]
    assert tile_spans(37, 16, 8) == [(0, 16, 0, 12), (8, 24, 12, 20), (16, 32, 20, 26), (21, 37, 26, 37)]
    assert tile_spans(30, 40, 10) == [(0, 30, 0, 30)] and tile_spans(30, 0, 0) == [(0, 30, 0, 30)]
    with pytest.raises(ValueError, match="tile overlap must be in"):
        tile_spans(100, 16, 16)


def test_frame_windows_replicate_the_ends():
    centre = [(w, k) for w, k in frame_windows(iter(range(4)), 3, True)]
    assert centre == [([0, 0, 1], [0]), ([0, 1, 2], [0]), ([1, 2, 3], [0]), ([2, 3, 3], [0])]
    assert [w for w, _ in frame_windows(iter(range(2)), 5, True)] == [[0, 0, 0, 1, 1], [0, 0, 1, 1, 1]]
    # all-frames model: chunks of 3; the last chunk moves back to end at the last frame, only frame 6 is new
    chunks = list(frame_windows(iter(range(7)), 3, False))
    assert chunks == [([0, 1, 2], [0, 1, 2]), ([3, 4, 5], [0, 1, 2]), ([4, 5, 6], [2])]
    assert list(frame_windows(iter(range(2)), 3, False)) == [([0, 1, 1], [0, 1])]


def test_tiled_equals_untiled_within_the_receptive_field(files):
    model = files["model"]
    x = torch.rand(1, 3, 3, H, W, generator=torch.Generator().manual_seed(3))
    # receptive field: the LR pixels one output pixel depends on lie within r of its own LR pixel
    y0 = model(x)
    x2 = x.clone()
    x2[..., 18, 22] += 0.5
    ys, xs = torch.nonzero((model(x2) - y0).abs().amax(dim=(0, 1)) > 0, as_tuple=True)
    r = max((18 - ys // 4).abs().max(), (22 - xs // 4).abs().max()).item()
    assert r == 8  # head 1 + 2 blocks x 2 + body tail 1 + upsampler 1 + 2x / 4x convs and bicubic's 2 taps < 1
    with torch.no_grad():
        ref = model(x)
    tiled = tiled_forward(model, x, tile=24, overlap=16)  # 16 // 2 = 8 = r: exact
    assert tiled.shape == ref.shape == (1, 3, 4 * H, 4 * W)
    assert (tiled - ref).abs().max().item() < 1e-5
    too_small = tiled_forward(model, x, tile=24, overlap=4)  # the kept part reaches 2 px from the tile's edge
    assert (too_small - ref).abs().max().item() > 1e-3
    q = tiled_forward(model, x, tile=20, overlap=16, quantize=True)  # each tile quantised as fedvsr.metrics does
    assert q.dtype == torch.uint8
    assert torch.equal(q, quantize(tiled_forward(model, x, tile=20, overlap=16)).to(torch.uint8))


class _PerFrame(VSRModel):
    """An all-frames model (center_output False): a 3x3 conv + pixel shuffle applied to every frame."""

    num_frames, center_output, scale = 4, False, 2

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, lr):
        b, t, c, h, w = lr.shape
        return torch.sigmoid(self.shuffle(self.conv(lr.reshape(b * t, c, h, w)))).reshape(b, t, c, 2 * h, 2 * w)


def test_all_frames_model_restores_every_frame_once_in_order(files):
    torch.manual_seed(0)
    model = _PerFrame().eval()
    loaded = LoadedModel(model, "per-frame", "-", {}, files["input"], None, torch.device("cpu"))
    clip = files["clip"][:7]  # windows of 4: frames 0-3, then 3-6 of which 4-6 are new
    out = list(restore_frames(loaded, iter(clip), tile=16, overlap=4, bicubic=True))
    assert len(out) == 7
    x = torch.from_numpy(clip).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        first, last = model(x[None, :4])[0], model(x[None, 3:])[0]
    expect = quantize(torch.cat([first, last[1:]])).to(torch.uint8)
    got = torch.from_numpy(np.stack([hr for hr, _ in out])).permute(0, 3, 1, 2)
    assert torch.equal(got, expect)
    bic = quantize(bicubic_upsample(x[6], 2)).to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(out[6][1], bic)


# ----------------------------------------------------------------------------- fedvsr upscale


def test_upscale_cli_keeps_frames_rate_and_scales_by_four(files, tmp_path):
    out = tmp_path / "out.mp4"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedvsr.cli",
            "upscale",
            str(files["input"]),
            str(out),
            "--checkpoint",
            str(files["run"]),
            "--tile",
            "32",
            "--tile-overlap",
            "16",
            "--crf",
            "0",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"{T} frames {W}x{H} -> {4 * W}x{4 * H} at 25 fps, efvsr/tiny on cpu" in proc.stdout
    assert "upscale in.mkv" in proc.stderr and f"{T}/{T} 100%" in proc.stderr  # plain progress lines (no tty)
    frames, rate, codec = _decode(out)
    assert codec == "h264" and rate == 25
    assert frames.shape == (T, 4 * H, 4 * W, 3)
    assert _audio_streams(out) == 0  # an input without audio: none made up
    # each decoded frame is the model's frame of the same index (H.264 at crf 0 in yuv420p: close, not exact)
    ref = (_untiled(files["model"], files["clip"]).clamp(0, 1) * 255).round().permute(0, 2, 3, 1).numpy()
    mse = ((frames[:, None].astype(np.float64) - ref[None]) ** 2).mean(axis=(2, 3, 4))
    assert list(mse.argmin(axis=1)) == list(range(T))
    assert 10 * np.log10(255**2 / mse.diagonal().max()) > 25 and mse.min(axis=0).min() < mse.diagonal().max() * 1.01
    assert not list(tmp_path.glob(".*tmp*"))  # the temporary file was renamed


def test_upscale_side_by_side_and_frame_folder_fps(files, tmp_path):
    folder = tmp_path / "frames"
    from fedvsr.data.video import write_frame_folder

    write_frame_folder(folder, files["clip"][:3])
    out = tmp_path / "sbs.mkv"
    assert (
        cli.main(
            [
                "upscale",
                str(folder),
                str(out),
                "--checkpoint",
                str(files["run"]),
                "--side-by-side",
                "--fps",
                "29.97",
                "--crf",
                "0",
                "--quiet",
                "--tile",
                "0",
            ]
        )
        == 0
    )
    frames, rate, _ = _decode(out)
    assert frames.shape == (3, 4 * H, 2 * 4 * W, 3)
    assert rate == Fraction(30000, 1001)
    assert _audio_streams(out) == 0
    x = torch.from_numpy(files["clip"][:3]).permute(0, 3, 1, 2).float() / 255
    bic = (bicubic_upsample(x, 4) * 255).round().permute(0, 2, 3, 1).numpy()
    ref = (_untiled(files["model"], files["clip"][:3]).clamp(0, 1) * 255).round().permute(0, 2, 3, 1).numpy()
    left, right = frames[:, :, : 4 * W].astype(np.float64), frames[:, :, 4 * W :].astype(np.float64)
    assert ((left - bic) ** 2).mean() < ((left - ref) ** 2).mean()  # bicubic on the left, the model on the right
    assert ((right - ref) ** 2).mean() < ((right - bic) ** 2).mean()


# ----------------------------------------------------------------------------- fedvsr upscale: the input's audio

AUDIO_RATE, TONE, FPS, AV_FRAMES = 44100, 440.0, 8, 8  # 8 frames at 8 fps: 1 s of video


def _write_av(path, acodec: str, seconds: float = 1.5, garbage_after: float | None = None) -> None:
    """A 32x32 H.264 video of ``AV_FRAMES`` frames at ``FPS`` with ``seconds`` of a mono ``TONE`` Hz sine at
    ``AUDIO_RATE`` (half amplitude) encoded with ``acodec``; with ``garbage_after`` the audio packets from that
    time on are replaced by random bytes of the same size (timestamps kept): a stream that fails to decode there."""
    tmp = path.with_name(f"clean-{path.name}")
    with av.open(str(tmp if garbage_after is not None else path), "w") as c:
        v = c.add_stream("libx264", rate=FPS)
        v.width = v.height = 32
        v.pix_fmt = "yuv420p"
        a = c.add_stream(acodec, rate=AUDIO_RATE, layout="mono")
        for i, img in enumerate(_frames(7, AV_FRAMES, 32, 32)):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = i
            c.mux(v.encode(f))
        c.mux(v.encode(None))
        n = round(AUDIO_RATE * seconds)
        sine = 0.5 * np.sin(2 * np.pi * TONE * np.arange(n) / AUDIO_RATE)
        samples = sine[None].astype(np.float32) if a.format.name == "fltp" else (sine[None] * 32767).astype(np.int16)
        for k in range(0, n, 1024):
            f = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(samples[:, k : k + 1024]), format=a.format.name, layout="mono"
            )
            f.sample_rate, f.pts = AUDIO_RATE, k
            c.mux(a.encode(f))
        c.mux(a.encode(None))
    if garbage_after is None:
        return
    rng = np.random.default_rng(0)
    with av.open(str(tmp)) as i, av.open(str(path), "w") as o:
        streams = {s.index: o.add_stream_from_template(s) for s in i.streams}
        for p in i.demux():
            if not p.size:
                continue
            out_stream = streams[p.stream.index]
            if p.stream.type == "audio" and p.pts * p.time_base >= garbage_after:
                q = av.Packet(rng.integers(0, 256, p.size, dtype=np.uint8).tobytes())
                q.pts, q.dts, q.duration, q.time_base = p.pts, p.dts, p.duration, p.time_base
                p = q
            p.stream = out_stream
            o.mux(p)
    tmp.unlink()


def _audio_out(path) -> dict:
    """The output's streams: audio codec, rate, duration (s, as the container says: MP4 rounds it to its
    edit list's milliseconds), end (s: of its last packet), packet payloads, decoded mono samples; video frames
    and duration (s)."""
    with av.open(str(path)) as c:
        assert len(c.streams.audio) == 1 and len(c.streams.video) == 1
        a, v = c.streams.audio[0], c.streams.video[0]
        out = {
            "codec": a.codec_context.name,
            "rate": a.sample_rate,
            "seconds": a.duration * a.time_base,
            "video_seconds": v.duration * v.time_base,
            "frames": v.frames,
        }
        packets = [p for p in c.demux(a) if p.size]
        out["packets"] = [bytes(p) for p in packets]
        out["end"] = max((p.pts + p.duration) * p.time_base for p in packets)
    with av.open(str(path)) as c:
        out["samples"] = np.concatenate([f.to_ndarray()[0] for f in c.decode(audio=0)]).astype(np.float64)
    return out


def _peak_hz(samples: np.ndarray, rate: int) -> float:
    """The dominant frequency of ``samples`` (FFT bin of the largest magnitude)."""
    return float(np.argmax(np.abs(np.fft.rfft(samples))) * rate / len(samples))


def _sine_match(samples: np.ndarray) -> float:
    """Correlation of the first half second of ``samples`` with the input's sine from its phase 0: near 1 only
    when the audio survived and starts with the video (the decoder drops AAC's priming samples)."""
    x = samples[: AUDIO_RATE // 2]
    return float(np.corrcoef(x, 0.5 * np.sin(2 * np.pi * TONE * np.arange(len(x)) / AUDIO_RATE))[0, 1])


def test_upscale_copies_aac_audio_into_mp4_cut_at_the_video_end(files, tmp_path):
    src, out = tmp_path / "tone.mp4", tmp_path / "up.mp4"
    _write_av(src, "aac")  # 1.5 s of audio, 1 s of video
    st = upscale(load_model(files["run"], device="cpu"), src, out, tile=0, progress=False)
    assert (st.frames, st.audio, st.audio_error) == (AV_FRAMES, "aac 44100 Hz mono, copied", None)
    got = _audio_out(out)
    assert (got["codec"], got["rate"], got["frames"], got["video_seconds"]) == ("aac", AUDIO_RATE, AV_FRAMES, 1)
    # AAC packets of 1024 samples: those starting before 1 s (44100 samples) are kept, the last one starts at
    # 43 * 1024 = 44032 and ends at 45056, one packet past the video at most (and well within a frame: 1/8 s)
    assert got["end"] == Fraction(45056, AUDIO_RATE)
    assert abs(got["seconds"] - got["video_seconds"]) < Fraction(1, FPS)
    with av.open(str(src)) as c:
        source = [bytes(p) for p in c.demux(audio=0) if p.size]
    assert len(source) > 60 and got["packets"] == source[:45]  # copied as they are: the priming packet + 44
    assert abs(_peak_hz(got["samples"], AUDIO_RATE) - TONE) < 2
    assert _sine_match(got["samples"]) > 0.99


def test_upscale_reencodes_audio_the_container_cannot_take_to_aac_cut_at_the_sample(files, tmp_path):
    src, out = tmp_path / "tone.mkv", tmp_path / "up.mov"
    _write_av(src, "flac")  # FLAC in QuickTime is refused by FFmpeg's mov muxer: re-encoded
    st = upscale(load_model(files["run"], device="cpu"), src, out, tile=0, progress=False)
    assert (st.audio, st.audio_error) == ("flac 44100 Hz mono, re-encoded to aac 44100 Hz mono", None)
    got = _audio_out(out)
    assert (got["codec"], got["rate"], got["frames"], got["video_seconds"]) == ("aac", AUDIO_RATE, AV_FRAMES, 1)
    assert got["end"] == 1 and got["seconds"] == 1  # cut at the video's last sample
    assert abs(_peak_hz(got["samples"], AUDIO_RATE) - TONE) < 2
    assert _sine_match(got["samples"]) > 0.99


def test_audio_that_breaks_or_does_not_fit_never_costs_the_video(files, tmp_path, caplog):
    loaded = load_model(files["run"], device="cpu")
    # FLAC packets of 4608 samples; from 0.5 s on they are garbage: the 6th packet (at 23040 samples) fails
    broken, out = tmp_path / "broken.mkv", tmp_path / "up.mov"
    _write_av(broken, "flac", garbage_after=0.5)
    with caplog.at_level(logging.WARNING, logger="fedvsr.data.streaming"):
        st = upscale(loaded, broken, out, tile=0, progress=False)
    assert st.audio == "flac 44100 Hz mono, re-encoded to aac 44100 Hz mono"
    assert st.audio_error.startswith(f"{broken}: audio left out: cannot read it after 0.522 s (")
    assert st.audio_error.endswith("); the output's audio stops there")
    assert st.audio_error in caplog.text
    got = _audio_out(out)
    assert (got["frames"], got["video_seconds"]) == (AV_FRAMES, 1)  # the whole video
    assert got["end"] == Fraction(23040, AUDIO_RATE)  # the audio read before the failure, all of it
    assert abs(_peak_hz(got["samples"], AUDIO_RATE) - TONE) < 3
    # a container that takes no audio at all (raw H.264): the video is written, the audio's absence said
    src, raw = tmp_path / "tone.mp4", tmp_path / "up.h264"
    _write_av(src, "aac")
    st = upscale(loaded, src, raw, tile=0, progress=False)
    assert st.audio == ""
    assert (
        st.audio_error == f"{src}: audio left out: the output's container (h264) takes neither its aac audio "
        f"as it is nor AAC"
    )
    assert _decode(raw)[0].shape == (AV_FRAMES, 128, 128, 3)


# ----------------------------------------------------------------------------- fedvsr evaluate


def test_evaluate_table_and_parquet_match_metrics(files, tmp_path, capsys):
    data = tmp_path / "videos"
    write_video(data / "a.mkv", _frames(5, 6, 64, 72), fps=24, codec="ffv1", pix_fmt="bgr0")
    write_video(data / "b.mkv", _frames(6, 4, 48, 64), fps=24, codec="ffv1", pix_fmt="bgr0")
    out = tmp_path / "eval.parquet"
    assert (
        cli.main(
            [
                "evaluate",
                "--checkpoint",
                str(files["run"]),
                "--data",
                str(data),
                "--out",
                str(out),
                "--quiet",
                "--tile",
                "32",
                "--tile-overlap",
                "16",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "PSNR-Y" in printed and "bic PSNR-Y" in printed and "average" in printed
    table = pq.read_table(out).to_pylist()
    assert [r["clip"] for r in table] == ["a", "b", "average"]
    assert {
        "psnr",
        "ssim",
        "psnr_rgb",
        "ssim_rgb",
        "bicubic_psnr",
        "bicubic_ssim",
        "bicubic_psnr_rgb",
        "bicubic_ssim_rgb",
        "psnr_gain",
        "frames",
        "model",
        "preset",
        "degradation",
    } <= set(table[0])
    model = files["model"]
    for row, name in zip(table, ("a", "b"), strict=False):
        pair = load_pair(VideoEntry(str(data / f"{name}.mkv"), "all", name), "bicubic", 4)
        hr = torch.from_numpy(pair.hr).permute(0, 3, 1, 2).float() / 255
        lr = torch.from_numpy(pair.lr).permute(0, 3, 1, 2).float() / 255
        expect = score([(_untiled(model, pair.lr).clamp(0, 1), hr)], 4, "y+rgb")
        bic = score([(bicubic_upsample(lr, 4), hr)], 4, "y+rgb")
        assert row["frames"] == len(hr) and (row["width"], row["height"]) == (hr.shape[-1], hr.shape[-2])
        for k in ("psnr", "ssim", "psnr_rgb", "ssim_rgb"):
            assert row[k] == pytest.approx(expect[k], abs=1e-6)
            assert row[f"bicubic_{k}"] == pytest.approx(bic[k], abs=1e-6)
    assert table[2]["psnr"] == pytest.approx((table[0]["psnr"] + table[1]["psnr"]) / 2)
    assert f"{table[2]['psnr']:7.2f}" in printed.splitlines()[-2]


def test_evaluate_leaves_out_unreadable_videos_and_averages_the_readable_ones(files, tmp_path, capsys):
    data = tmp_path / "videos"
    write_video(data / "a.mkv", _frames(5, 4, 32, 40), fps=24, codec="ffv1", pix_fmt="bgr0")
    (data / "b.mkv").write_bytes(b"")
    write_video(data / "c.mkv", _frames(6, 3, 40, 32), fps=24, codec="ffv1", pix_fmt="bgr0")
    (data / "d.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    b, d = (data / "b.mkv").resolve(), (data / "d.mp4").resolve()
    loaded = load_model(files["run"], device="cpu")
    seen = []
    rows = evaluate(loaded, [data], tile=32, overlap=16, on_skip=lambda path, reason: seen.append((path, reason)))
    assert [r["clip"] for r in rows] == ["a", "c"]
    assert rows.skipped == seen and [path for path, _ in rows.skipped] == [str(b), str(d)]
    assert rows.skipped[0][1] == f"evaluation video left out: {b}: empty file (0 bytes), not a video"
    assert rows.skipped[1][1].startswith(f"evaluation video left out: {d}: PyAV cannot decode it (")
    # exactly the rows, so the averages, of evaluating the readable videos alone
    alone = evaluate(loaded, [data / "a.mkv", data / "c.mkv"], tile=32, overlap=16)
    assert alone.skipped == []
    drop = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    assert [drop(r) for r in rows] == [drop(r) for r in alone]
    assert drop(average_row(rows)) == drop(average_row(alone))
    assert average_row(rows)["psnr"] == (rows[0]["psnr"] + rows[1]["psnr"]) / 2
    # the CLI prints them under the table and keeps them in the Parquet file's metadata
    out = tmp_path / "eval.parquet"
    assert (
        cli.main(
            [
                "evaluate",
                "--checkpoint",
                str(files["run"]),
                "--data",
                str(data),
                "--out",
                str(out),
                "--quiet",
                "--tile",
                "32",
                "--tile-overlap",
                "16",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out.splitlines()
    assert printed[-3:-1] == [reason for _, reason in rows.skipped]
    assert printed[-1].endswith(f"2 clips, 2 left out -> {out}")
    table = pq.read_table(out)
    assert [r["clip"] for r in table.to_pylist()] == ["a", "c", "average"]
    assert table.to_pylist()[2]["psnr"] == pytest.approx(average_row(alone)["psnr"])
    assert json.loads(table.schema.metadata[b"fedvsr.skipped"]) == [{"path": p, "reason": r} for p, r in rows.skipped]


def test_evaluate_raises_naming_every_video_when_none_can_be_read(files, tmp_path, capsys):
    data = tmp_path / "videos"
    data.mkdir()
    (data / "b.mkv").write_bytes(b"")
    (data / "d.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    b, d = (data / "b.mkv").resolve(), (data / "d.mp4").resolve()
    loaded = load_model(files["run"], device="cpu")
    with pytest.raises(VideoError) as err:
        evaluate(loaded, [data], tile=32, overlap=16)
    msg = str(err.value)
    assert msg.startswith(
        f"none of the 2 evaluation videos can be read: {b}: empty file (0 bytes), not a video; "
        f"{d}: PyAV cannot decode it ("
    )
    out = tmp_path / "eval.parquet"
    assert (
        cli.main(["evaluate", "--checkpoint", str(files["run"]), "--data", str(data), "--out", str(out), "--quiet"])
        == 1
    )
    assert f"fedvsr: video error: {msg}" in capsys.readouterr().err
    assert not out.exists()


# ----------------------------------------------------------------------------- errors


def test_missing_checkpoint_and_bare_weights(files, tmp_path, capsys):
    code = cli.main(["upscale", str(files["input"]), str(tmp_path / "o.mp4"), "--checkpoint", str(tmp_path / "nope")])
    assert code == 2
    assert f"checkpoint {str(tmp_path / 'nope')!r} does not exist" in capsys.readouterr().err
    bare = tmp_path / "weights.safetensors"
    shutil.copy(files["run"] / "model.safetensors", bare)
    with pytest.raises(ConfigError, match=r"bare weights file .* --model NAME --preset PRESET"):
        load_model(bare)
    # small has 4 residual blocks of 32 channels, tiny 2 of 16: blocks 2 and 3 (4 tensors each) are missing
    with pytest.raises(ConfigError, match=r"do not fit model efvsr/small: 8 missing \(e\.g\. body\.2\.conv1\.bias\)"):
        load_model(bare, "efvsr", "small")
    assert load_model(bare, "efvsr", "tiny").model.num_frames == 3
    assert not (tmp_path / "o.mp4").exists()


def test_zero_dim_entries_load_as_the_platform_saves_them(tmp_path):
    # save_arrays stores a 0-d tensor (BasicVSR's step counter) with shape (1,); loading must accept it
    from fedvsr.inference import _load_weights
    from fedvsr.platform.checkpoint import load_arrays

    model = _PerFrame()
    model.register_buffer("iteration", torch.tensor(0.0))
    state = {k: v.numpy() + 1 for k, v in float_state(model).items()}
    save_arrays(tmp_path / "w.safetensors", state)
    arrays = load_arrays(tmp_path / "w.safetensors")
    assert arrays["iteration"].shape == (1,)
    _load_weights(model, arrays, tmp_path / "w.safetensors", "per-frame")
    assert model.iteration.shape == () and model.iteration.item() == 1.0
    assert torch.equal(model.conv.bias, torch.from_numpy(state["conv.bias"]))


def test_corrupt_truncated_and_unsupported_inputs_name_the_file(files, tmp_path, capsys):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(5000))
    out = tmp_path / "o.mp4"
    assert cli.main(["upscale", str(garbage), str(out), "--checkpoint", str(files["run"]), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"fedvsr: video error: {garbage}: not a video PyAV can read" in err
    # an mp4 cut in half: its index (moov, written at the end) is gone
    whole = tmp_path / "whole.mp4"
    write_video(whole, files["clip"][:, :36, :44], fps=25)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(VideoError, match=rf"^{cut}: not a video PyAV can read: corrupt, truncated"):
        with FrameReader(cut):
            pass
    # not a video at all
    text = tmp_path / "notes.txt"
    text.write_text("not a video\n" * 50)
    assert cli.main(["upscale", str(text), str(out), "--checkpoint", str(files["run"]), "--quiet"]) == 1
    assert str(text) in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".o.*"))
    assert read_video(whole).shape[0] == T  # the intact file reads


def test_truncated_stream_is_an_error_not_a_short_output(files, tmp_path):
    whole = tmp_path / "whole.mkv"
    write_video(whole, files["clip"], fps=25, codec="ffv1", pix_fmt="bgr0")
    cut = tmp_path / "cut.mkv"
    data = whole.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    loaded = load_model(files["run"], device="cpu")
    out = tmp_path / "o.mp4"
    with pytest.raises(VideoError, match=rf"^{cut}: "):
        upscale(loaded, cut, out, progress=False)
    assert not out.exists()


def test_evaluate_restores_with_the_tiling_of_upscale():
    """fedvsr.evaluation sits below fedvsr.inference (the platform uses it) and keeps its own copy of the defaults."""
    from fedvsr import evaluation, inference

    assert (evaluation.DEFAULT_TILE, evaluation.DEFAULT_OVERLAP) == (inference.DEFAULT_TILE, inference.DEFAULT_OVERLAP)
    assert (evaluation.DEFAULT_TILE, evaluation.DEFAULT_OVERLAP) == (128, 32)  # what --tile / --tile-overlap say
