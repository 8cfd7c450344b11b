"""PyAV video I/O: round trips, frame folders, and the errors for bad inputs."""

from __future__ import annotations

import av
import numpy as np
import pytest

from fedvsr.data.synthetic import synth_video
from fedvsr.data.video import VideoError, encode_image, read_video, write_frame_folder, write_video


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255**2 / mse)


def _luma(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return synth_video(3, "waves-rotate", 6, 32, 48)


@pytest.mark.parametrize("suffix", ["mp4", "mkv"])
def test_crf0_yuv444_round_trip_is_nearly_lossless(tmp_path, suffix):
    frames = np.random.default_rng(0).integers(0, 256, (5, 24, 40, 3), dtype=np.uint8)
    path = tmp_path / f"clip.{suffix}"
    write_video(path, frames, crf=0, pix_fmt="yuv444p")
    out = read_video(path)
    assert out.shape == frames.shape and out.dtype == np.uint8
    diff = np.abs(out.astype(int) - frames)
    # only the RGB <-> YUV conversion rounds: a couple of levels at most, most pixels exact
    assert diff.max() <= 2
    assert diff.mean() < 0.5


def test_lossy_mp4_is_close(tmp_path, clip):
    path = tmp_path / "clip.mp4"
    write_video(path, clip, crf=18)
    out = read_video(path)
    assert out.shape == clip.shape
    # lossy but close; 4:2:0 drops fine chroma, so luma is much closer than RGB
    assert 38 < _psnr(_luma(out), _luma(clip)) < 60
    assert _psnr(out, clip) > 28


def test_odd_size_is_fine_with_yuv444(tmp_path):
    frames = np.full((2, 17, 23, 3), 77, np.uint8)
    write_video(tmp_path / "odd.mp4", frames, crf=0, pix_fmt="yuv444p")
    out = read_video(tmp_path / "odd.mp4")
    assert out.shape == (2, 17, 23, 3)
    assert np.abs(out.astype(int) - 77).max() <= 1


def test_hevc_qp_round_trip(tmp_path, clip):
    frames = np.ascontiguousarray(np.concatenate([clip, clip], axis=2))  # 96 wide: outside x265's crash widths
    write_video(tmp_path / "clip.mkv", frames, codec="libx265", qp=22)
    out = read_video(tmp_path / "clip.mkv")
    assert out.shape == frames.shape
    assert _psnr(out, frames) > 28


def test_write_replaces_atomically_and_leaves_no_temp(tmp_path, clip):
    path = tmp_path / "clip.mp4"
    write_video(path, clip[:2], crf=30)
    write_video(path, clip, crf=30)
    assert read_video(path).shape[0] == clip.shape[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_failed_encode_keeps_old_file(tmp_path, clip):
    path = tmp_path / "clip.mp4"
    write_video(path, clip, crf=30)
    before = path.read_bytes()
    with pytest.raises(VideoError, match="clip.mp4"):
        write_video(path, clip, crf=-3)  # x264 rejects a negative CRF when the encoder opens
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


@pytest.mark.parametrize(
    ("frames", "kwargs", "message"),
    [
        (np.zeros((2, 16, 16, 3), np.float32), {}, "dtype uint8"),
        (np.zeros((16, 16, 3), np.uint8), {}, r"shape \(T, H, W, 3\), got \(16, 16, 3\)"),
        (np.zeros((2, 16, 16, 4), np.uint8), {}, r"shape \(T, H, W, 3\)"),
        (np.zeros((0, 16, 16, 3), np.uint8), {}, "at least one"),
        (np.zeros((2, 15, 16, 3), np.uint8), {}, "even height and width, got frames of 15x16"),
        (np.zeros((2, 16, 16, 3), np.uint8), {"codec": "no-such-codec"}, "not available"),
        (np.zeros((2, 32, 40, 3), np.uint8), {"codec": "libx265"}, "width 40"),
        (np.zeros((2, 8, 64, 3), np.uint8), {"codec": "libx265"}, "at least 16x16"),
    ],
)
def test_write_video_validates(tmp_path, frames, kwargs, message):
    with pytest.raises(ValueError, match=message):
        write_video(tmp_path / "bad.mp4", frames, **kwargs)
    assert not any(tmp_path.iterdir())


def test_write_video_needs_suffix(tmp_path, clip):
    with pytest.raises(ValueError, match="suffix"):
        write_video(tmp_path / "noext", clip)


@pytest.mark.parametrize("ext", ["png", "bmp"])
def test_frame_folder_is_bit_exact(tmp_path, clip, ext):
    paths = write_frame_folder(tmp_path / "frames", clip, ext=ext)
    assert [p.name for p in paths] == [f"{i:08d}.{ext}" for i in range(len(clip))]
    out = read_video(tmp_path / "frames")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, clip)


def test_jpeg_frame_folder_is_close(tmp_path, clip):
    write_frame_folder(tmp_path / "frames", clip, ext="jpg")
    out = read_video(tmp_path / "frames")
    assert out.shape == clip.shape
    assert _psnr(out, clip) > 28


def test_frame_folder_natural_order(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    for value, name in [(1, "frame1"), (2, "frame2"), (9, "frame9"), (10, "frame10"), (11, "frame11")]:
        (folder / f"{name}.png").write_bytes(encode_image(np.full((4, 6, 3), value, np.uint8)))
    (folder / "notes.txt").write_text("not a frame")
    out = read_video(folder)
    assert out.shape == (5, 4, 6, 3)
    assert out[:, 0, 0, 0].tolist() == [1, 2, 9, 10, 11]


def test_missing_path(tmp_path):
    with pytest.raises(VideoError, match=r"nope\.mp4: no such file"):
        read_video(tmp_path / "nope.mp4")


def test_random_bytes_are_not_a_video(tmp_path):
    path = tmp_path / "random.mp4"
    path.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(VideoError, match=r"random\.mp4: PyAV cannot decode"):
        read_video(path)


def test_truncated_and_empty_files(tmp_path, clip):
    path = tmp_path / "clip.mp4"
    write_video(path, clip, crf=23)
    data = path.read_bytes()
    (tmp_path / "half.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.mp4").write_bytes(b"")
    for name in ["half.mp4", "empty.mp4"]:
        with pytest.raises(VideoError, match=name):
            read_video(tmp_path / name)


@pytest.mark.parametrize("cut", [0.1, 0.3, 0.5, 0.8, 0.95])
def test_truncated_mp4_names_the_file(tmp_path, clip, cut):
    """An MP4 cut short gives a VideoError naming it (cannot decode, no stream at all, or no frame)."""
    path = tmp_path / "clip.mp4"
    write_video(path, clip, crf=23)
    data = path.read_bytes()
    bad = tmp_path / "cut.mp4"
    bad.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(VideoError, match=r"cut\.mp4: (PyAV cannot decode|no stream at all|no frames decoded)"):
        read_video(bad)


def test_mp4_without_its_trailing_metadata_is_whole(tmp_path, clip):
    """The last bytes of our MP4s are metadata after the frame index: cutting them loses no frame."""
    path = tmp_path / "clip.mp4"
    write_video(path, clip, crf=23)
    data = path.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[:-20])
    np.testing.assert_array_equal(read_video(tmp_path / "cut.mp4"), read_video(path))


def test_empty_and_text_files_named_mp4(tmp_path):
    (tmp_path / "zero.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match=r"zero\.mp4: empty file \(0 bytes\), not a video"):
        read_video(tmp_path / "zero.mp4")
    (tmp_path / "notes.mp4").write_text("these are my notes, not a video\n" * 20)
    with pytest.raises(VideoError, match=r"notes\.mp4: PyAV cannot decode it .*corrupt, truncated or not a video"):
        read_video(tmp_path / "notes.mp4")


def test_truncated_avi_reports_missing_frames(tmp_path):
    """AVI declares its frame count: one cut short decodes fewer frames and says how many."""
    frames = np.random.default_rng(1).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    path = tmp_path / "clip.avi"
    write_video(path, frames, crf=23)
    data = path.read_bytes()
    messages = set()
    for cut in (0.5, 0.7, 0.8, 0.9):  # (the last 5% of this AVI is its index: cutting it loses no frame)
        (tmp_path / "cut.avi").write_bytes(data[: int(len(data) * cut)])
        with pytest.raises(VideoError, match=r"cut\.avi: ") as err:
            read_video(tmp_path / "cut.avi")
        messages.add(str(err.value).split(": ", 1)[1][:30])
    assert any(m.startswith("truncated or corrupt: decoded ") for m in messages), messages  # e.g. 5 of the 8


@pytest.mark.parametrize("codec, opts", [("libx264", {"crf": 25}), ("libx265", {"qp": 32})])
def test_bframes_zero_means_no_reordering(tmp_path, codec, opts):
    """By default both encoders reorder frames (B-frames); ``bframes=0`` writes I and P frames in display order."""
    frames = synth_video(0, "noise-objects", 10, 32, 64)
    stats = {}
    for bframes in (None, 0):
        path = tmp_path / f"{bframes}.mp4"
        write_video(path, frames, codec=codec, bframes=bframes, **opts)
        with av.open(str(path)) as c:
            pts = [p.pts for p in c.demux(c.streams.video[0]) if p.size]
        with av.open(str(path)) as c:
            types = {int(f.pict_type) for f in c.decode(video=0)}
        stats[bframes] = (pts == sorted(pts), int(av.video.frame.PictureType.B) in types)
    assert stats == {None: (False, True), 0: (True, False)}
    with pytest.raises(ValueError, match="bframes must be a non-negative integer or None, got -1"):
        write_video(tmp_path / "x.mp4", frames, bframes=-1)


def test_folder_without_images(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(VideoError, match="no frame images"):
        read_video(tmp_path)


def test_folder_with_different_sizes(tmp_path):
    (tmp_path / "0001.png").write_bytes(encode_image(np.zeros((8, 8, 3), np.uint8)))
    (tmp_path / "0002.png").write_bytes(encode_image(np.zeros((8, 10, 3), np.uint8)))
    with pytest.raises(VideoError, match=r"0002\.png is 10x8"):
        read_video(tmp_path)


def test_corrupt_image_in_folder(tmp_path):
    (tmp_path / "0001.png").write_bytes(encode_image(np.zeros((8, 8, 3), np.uint8)))
    (tmp_path / "0002.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(VideoError, match=r"0002\.png"):
        read_video(tmp_path)


def test_audio_only_file(tmp_path):
    path = tmp_path / "sound.wav"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(VideoError, match=r"sound\.wav: no video stream"):
        read_video(path)


def test_write_accepts_non_contiguous_frames(tmp_path, clip):
    flipped = clip[:, ::-1, ::-1]
    write_video(tmp_path / "f.mp4", flipped, crf=0, pix_fmt="yuv444p")
    assert np.abs(read_video(tmp_path / "f.mp4").astype(int) - flipped).max() <= 2
