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
