"""A long video is a video: the clip window, the H.264 writer and the side-by-side explanation video."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from kpsem.data import load_clip, sample_indices
from kpsem.data.sampling import clip_span
from kpsem.data.synth import write_video
from kpsem.data.video import write_h264


def ramp(frames: int, height: int = 32, width: int = 48) -> np.ndarray:
    """Flat frames that spell their number: red 20 + 20 x its units digit, green 20 + 20 x its tens digit
    (steps of 20 survive H.264, which skips blocks that change by a few grey levels)."""
    t = np.arange(frames)
    video = np.zeros((frames, height, width, 3), np.uint8)
    video[..., 0] = (20 + 20 * (t % 10))[:, None, None]
    video[..., 1] = (20 + 20 * (t // 10))[:, None, None]
    return video


def frame_numbers(frames: np.ndarray) -> list[int]:
    red, green = frames[..., 0].mean(axis=(1, 2)), frames[..., 1].mean(axis=(1, 2))
    return [int(round((r - 20) / 20) + 10 * round((g - 20) / 20)) for r, g in zip(red, green)]


@pytest.fixture(scope="module")
def long_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """100 frames at 10 fps (10 s): far longer than one 16-frame clip at interval 2 (31 frames)."""
    return write_video(tmp_path_factory.mktemp("long") / "long.mp4", ramp(100), fps=10)


# ---- the clip window ----------------------------------------------------------------------------------


def test_a_chosen_start_gives_that_window_and_the_default_is_the_middle() -> None:
    assert clip_span(16, 2) == 31 and clip_span(8, (1, 2, 2, 3)) == 15
    assert sample_indices(100, frames=4, interval=3, train=False, start=0) == [0, 3, 6, 9]
    assert sample_indices(100, frames=4, interval=3, train=False, start=90) == [90, 93, 96, 99]  # the last window
    # without a start, one test clip sits in the middle: room 90, start floor(0.5 * 91) = 45
    assert sample_indices(100, frames=4, interval=3, train=False) == [45, 48, 51, 54]
    # a short video has one window, spread over all of it
    assert sample_indices(5, frames=4, interval=3, train=False, start=0) == [0, 1, 3, 4]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"start": 91}, r"start 91 leaves no room for a clip of 10 frames in a video of 100; choose a start in 0\.\.90"),
    ({"start": -1}, r"choose a start in 0\.\.90"),
    ({"start": 1, "num_video_frames": 5}, r"choose a start in 0\.\.0"),
    ({"start": 3, "train": True}, r"start chooses a test clip's window; training draws its own start"),
])
def test_a_start_without_room_for_the_clip_is_refused(kwargs: dict, message: str) -> None:
    arguments = {"num_video_frames": 100, "frames": 4, "interval": 3, "train": False, **kwargs}
    with pytest.raises(ValueError, match=message):
        sample_indices(arguments.pop("num_video_frames"), **arguments)


def test_load_clip_decodes_the_chosen_window_of_a_long_video(long_mp4: Path) -> None:
    sample = load_clip(long_mp4, frames=4, interval=3, size=32, start=70)
    assert sample.indices == [[70, 73, 76, 79]]
    assert sample.times == [[pytest.approx(7.0), pytest.approx(7.3), pytest.approx(7.6), pytest.approx(7.9)]]
    assert frame_numbers(sample.display[0]) == [70, 73, 76, 79]  # the pixels of those frames, not others
    assert load_clip(long_mp4, frames=4, interval=3, size=32).indices == [[45, 48, 51, 54]]  # the middle
    with pytest.raises(ValueError, match=r"start chooses one clip's window; got num_clips=2"):
        load_clip(long_mp4, frames=4, size=32, start=0, num_clips=2)


# ---- the H.264 writer ---------------------------------------------------------------------------------


def test_write_h264_decodes_back_and_repeats_its_bytes(tmp_path: Path) -> None:
    video = ramp(6, 32, 48)
    first = write_h264(tmp_path / "a.mp4", video, 4.0, faststart=True).read_bytes()
    assert write_h264(tmp_path / "b.mp4", video, 4.0, faststart=True).read_bytes() == first
    assert first.find(b"moov") < first.find(b"mdat")  # faststart: the index before the frames
    with av.open(str(tmp_path / "a.mp4")) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert (stream.codec_context.name, float(stream.average_rate)) == ("h264", 4.0)
    assert len(frames) == 6 and frames[0].shape == (32, 48, 3)
    assert frame_numbers(np.stack(frames)) == list(range(6))


@pytest.mark.parametrize(("video", "message"), [
    (np.zeros((2, 31, 48, 3), np.uint8), r"H\.264 \(4:2:0\) needs an even width and height; got 48x31"),
    (np.zeros((2, 32, 48, 3), np.float32), r"video must be \(T, H, W, 3\) uint8 RGB with T >= 1"),
    (np.zeros((0, 32, 48, 3), np.uint8), r"with T >= 1; got \(0, 32, 48, 3\)"),
])
def test_write_h264_refuses_what_it_cannot_encode(tmp_path: Path, video: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_h264(tmp_path / "x.mp4", video, 4.0)
