"""Decoding, sampling and the clip transform, on tiny generated videos with hand-checkable pixels."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

import kpsem.data.video as video_module
from kpsem.constants import MFNET_MEAN, MFNET_STD
from kpsem.data import (
    ClipTransform,
    ShortVideoError,
    VideoError,
    denormalise,
    load_clip,
    mirrored_labels,
    normalise,
    probe_video,
    read_frames,
    sample_indices,
)
from kpsem.data.synth import write_video


def ramp(frames: int, height: int = 32, width: int = 32) -> np.ndarray:
    """Flat grey frames whose value is 10 + 5 t: each frame's number can be read back from its mean."""
    values = (10 + 5 * np.arange(frames)).astype(np.uint8)
    return np.broadcast_to(values[:, None, None, None], (frames, height, width, 3)).copy()


def frame_numbers(frames: np.ndarray) -> list[int]:
    return [round((f.mean() - 10) / 5) for f in frames]


@pytest.fixture(scope="module")
def ramp_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("v") / "ramp.mp4", ramp(20), fps=10)


def test_probe_reads_count_rate_and_size(ramp_mp4: Path) -> None:
    info = probe_video(ramp_mp4)
    assert (info.num_frames, info.fps, info.height, info.width, info.kind) == (20, 10.0, 32, 32, "video")


def test_read_frames_returns_the_asked_frames_in_the_asked_order(ramp_mp4: Path) -> None:
    frames = read_frames(ramp_mp4, [0, 7, 3, 7, 19])
    assert frames.shape == (5, 32, 32, 3) and frames.dtype == np.uint8
    assert frame_numbers(frames) == [0, 7, 3, 7, 19]


def test_indices_past_a_too_high_count_are_refused_not_repeated(ramp_mp4: Path) -> None:
    info = probe_video(ramp_mp4)
    info.num_frames, info.exact = 21, False  # as if estimated from the duration, one frame high
    message = r"only 20 of about 21 frames \(a count estimated from its duration\) could be decoded"
    with pytest.raises(ShortVideoError, match=message) as caught:
        read_frames(ramp_mp4, [18, 19, 20], info=info)
    assert (caught.value.decoded, caught.value.truncated) == (20, False)  # within an estimate's slack


def test_seeking_into_a_long_video_gives_the_same_frames_as_streaming(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "long.mp4"
    with av.open(str(path), "w") as container:  # keyframe every 16 frames, so that seeking skips decoding
        stream = container.add_stream("libx264", rate=25, options={"g": "16", "crf": "10"})
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for t in range(200):
            value = np.full((32, 32, 3), 10 + (t % 48) * 5, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(value, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    wanted = [150, 151, 170, 199]
    seeked = read_frames(path, wanted)
    monkeypatch.setattr(video_module, "_SEEK_AFTER", 10**9)
    streamed = read_frames(path, wanted)
    np.testing.assert_array_equal(seeked, streamed)
    assert frame_numbers(seeked) == [t % 48 for t in wanted]  # 6, 7, 26, 7


def test_large_frames_are_downscaled_while_decoding(tmp_path: Path) -> None:
    path = write_video(tmp_path / "wide.mp4", ramp(3, 64, 96))
    assert read_frames(path, [0, 2], short_side_cap=32).shape == (2, 32, 48, 3)
    assert read_frames(path, [0], short_side_cap=None).shape == (1, 64, 96, 3)


def test_grey_video_becomes_three_equal_channels(tmp_path: Path) -> None:
    path = tmp_path / "grey.avi"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "gray"
        for value in (40, 80, 120):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.full((32, 32), value, np.uint8), format="gray")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    frames = read_frames(path, [0, 2])
    assert frames.shape == (2, 32, 32, 3)
    assert np.array_equal(frames[..., 0], frames[..., 2]) and abs(int(frames[1].mean()) - 120) <= 2


def test_frame_folder_with_a_grey_image(tmp_path: Path) -> None:
    folder = write_video(tmp_path / "clip", ramp(4))
    cv2.imwrite(str(folder / "00003.jpg"), np.full((32, 32), 20, np.uint8))  # a grey-scale JPEG among RGB ones
    info = probe_video(folder)
    assert (info.num_frames, info.kind, info.height) == (4, "frames", 32)
    frames = read_frames(folder, [3, 2, 0])
    assert frames.shape == (3, 32, 32, 3) and frame_numbers(frames) == [3, 2, 0]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b""), r"is empty \(0 bytes\)"),
        (lambda p: p.write_bytes(np.random.default_rng(0).bytes(4000)), "cannot be opened as a video"),
        (lambda p: None, "does not exist"),
    ],
    ids=["empty", "corrupt", "missing"],
)
def test_unusable_files_raise_video_error(tmp_path: Path, make, message: str) -> None:
    path = tmp_path / "bad.mp4"
    make(path)
    with pytest.raises(VideoError, match=message):
        load_clip(path)


def test_zero_frame_video_raises(tmp_path: Path) -> None:
    path = tmp_path / "zero.avi"
    container = av.open(str(path), "w")
    stream = container.add_stream("mpeg4", rate=25)
    stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
    container.start_encoding()
    container.close()
    with pytest.raises(VideoError, match="has a video stream but zero frames"):
        probe_video(path)


def test_bad_frame_folders_raise(tmp_path: Path) -> None:
    (tmp_path / "nothing").mkdir()
    with pytest.raises(VideoError, match="is a folder without images"):
        probe_video(tmp_path / "nothing")
    folder = write_video(tmp_path / "clip", ramp(3))
    (folder / "00002.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(VideoError, match=r"frame .*00002\.jpg cannot be read as an image"):
        read_frames(folder, [0, 1])


def test_one_frame_video_repeats_its_frame(tmp_path: Path) -> None:
    path = write_video(tmp_path / "one.mp4", ramp(1))
    sample = load_clip(path, frames=4, size=32)
    assert sample.indices == [[0, 0, 0, 0]] and sample.num_frames == 1
    assert all(np.array_equal(sample.display[0, 0], frame) for frame in sample.display[0])


# --------------------------------------------------------------------------------------------- sampling


def test_test_sampling_is_centred_and_deterministic() -> None:
    # 100 frames, span (16 - 1) * 2 + 1 = 31, starts 0..69: one clip starts at 35, two at 17 and 52
    assert sample_indices(100, train=False) == list(range(35, 66, 2))
    assert [sample_indices(100, train=False, clip_index=k, num_clips=2)[0] for k in (0, 1)] == [17, 52]
    assert sample_indices(100, interval=(1, 2, 2, 3), train=False) == list(range(35, 66, 2))  # median interval


def test_train_sampling_random_start_and_interval_choice() -> None:
    rng = np.random.default_rng(0)
    starts, steps = set(), set()
    for _ in range(200):
        indices = sample_indices(40, frames=4, interval=(1, 2, 2, 3), train=True, rng=rng)
        step = indices[1] - indices[0]
        assert indices == list(range(indices[0], indices[0] + 4 * step, step)) and indices[-1] < 40
        starts.add(indices[0])
        steps.add(step)
    assert steps == {1, 2, 3} and min(starts) == 0 and max(starts) == 39 - 3


def test_short_videos_spread_and_repeat_frames() -> None:
    assert sample_indices(10, frames=4, interval=4, train=False) == [0, 3, 6, 9]  # span 13 > 10
    assert sample_indices(3, frames=6, train=True, rng=np.random.default_rng(0)) == [0, 0, 1, 1, 2, 2]
    assert sample_indices(1, frames=3, train=False) == [0, 0, 0]


def test_sampling_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="num_video_frames must be at least 1; got 0"):
        sample_indices(0, train=False)
    with pytest.raises(ValueError, match=r"clip_index must be in \[0, 2\); got 2"):
        sample_indices(50, train=False, clip_index=2, num_clips=2)
    with pytest.raises(ValueError, match="interval must be a positive int"):
        sample_indices(50, interval=0, train=False)


# --------------------------------------------------------------------------------------------- transform


def test_test_transform_resizes_short_side_and_centre_crops() -> None:
    frames = np.zeros((3, 40, 60, 3), np.uint8)
    frames[:, :, 30:] = 255  # right half white
    out = ClipTransform(train=False, size=32).apply(frames)
    # resize = round(32 * 256 / 224) = 37: 40x60 -> 37x56 (55.5 rounds to 56); crop top (37-32)//2 = 2, left 12
    assert out.resized_size == (37, 56) and out.crop_box == (2, 12, 32, 32) and not out.flipped
    assert out.clip.shape == (3, 3, 32, 32) and out.display.shape == (3, 32, 32, 3)
    white = (1 - MFNET_MEAN[0]) / MFNET_STD[0]  # (1 - 124/255) / 0.2348 = 2.188
    assert out.clip[0, 0, 0, -1].item() == pytest.approx(white, abs=1e-4)
    assert out.clip[0, 0, 0, 0].item() == pytest.approx(-MFNET_MEAN[0] / MFNET_STD[0], abs=1e-4)


def test_transform_defaults_scale_with_size() -> None:
    assert (ClipTransform(train=False).resize, ClipTransform(train=True).scale_range) == (256, (224, 288))
    assert (ClipTransform(train=False, size=112).resize, ClipTransform(train=True, size=112).scale_range) == (
        128, (112, 144))
    with pytest.raises(ValueError, match=r"resize \(100\) must be at least size \(112\)"):
        ClipTransform(train=False, size=112, resize=100)


def test_train_transform_is_random_but_seeded() -> None:
    frames = np.random.default_rng(1).integers(0, 256, (2, 50, 70, 3), dtype=np.uint8)
    transform = ClipTransform(train=True, size=32)
    a = transform.apply(frames, rng=np.random.default_rng(5))
    b = transform.apply(frames, rng=np.random.default_rng(5))
    assert torch.equal(a.clip, b.clip) and a.crop_box == b.crop_box
    side = a.resized_size[0]
    assert a.resized_size == (side, side) and 32 <= side <= 41  # square, in (32, round(32 * 288 / 224))
    boxes = {transform.apply(frames, rng=np.random.default_rng(s)).flipped for s in range(20)}
    assert boxes == {True, False}
    flipped = next(transform.apply(frames, rng=np.random.default_rng(s)) for s in range(20)
                   if transform.apply(frames, rng=np.random.default_rng(s)).flipped)
    top, left, _, _ = flipped.crop_box
    resized = cv2.resize(frames[0], flipped.resized_size[::-1], interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(flipped.display[0], resized[top:top + 32, left:left + 32][:, ::-1])
    no_flip = ClipTransform(train=True, size=32, flip=False)
    unflipped = [no_flip.apply(frames, rng=np.random.default_rng(s)) for s in range(20)]
    assert not any(u.flipped for u in unflipped)
    assert unflipped[3].crop_box == transform.apply(frames, rng=np.random.default_rng(3)).crop_box  # same draws


def test_mirrored_labels_pair_mirror_image_class_names() -> None:
    synth = ["rise", "slide_left", "slide_right", "turn_cw", "turn_ccw", "jump_adjacent", "hop_ccw", "hop_cw"]
    assert mirrored_labels(synth) == [0, 2, 1, 4, 3, 5, 7, 6]
    ssv1 = ["Pushing something from left to right", "Pushing something from right to left",
            "Turning the camera left while filming something", "Turning the camera right while filming something",
            "Spinning something clockwise", "Spinning something Counterclockwise", "Moving something left",
            "Left-handed wave"]
    assert mirrored_labels(ssv1) == [1, 0, 3, 2, 5, 4, 6, 7]  # the last two have no mirrored partner
    assert mirrored_labels(["brush_hair", "cartwheel"]) == [0, 1]


def test_normalise_round_trip() -> None:
    display = np.random.default_rng(2).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    clip = normalise(display)
    assert clip.shape == (3, 2, 8, 8)
    np.testing.assert_array_equal(denormalise(clip), display)


def test_load_clip_display_is_what_the_model_sees(tmp_path: Path) -> None:
    path = write_video(tmp_path / "wide.mp4", np.random.default_rng(3).integers(0, 256, (12, 48, 64, 3), np.uint8))
    sample = load_clip(path, frames=4, interval=2, size=32, num_clips=2)
    assert sample.clips.shape == (2, 3, 4, 32, 32) and sample.display.shape == (2, 4, 32, 32, 3)
    assert sample.indices == [[1, 3, 5, 7], [4, 6, 8, 10]]  # span 7, 6 starts: floor(0.5 * 6 / 2), floor(1.5 * 6 / 2)
    assert (sample.num_frames, sample.original_size, sample.fps) == (12, (48, 64), 12.0)
    assert sample.crop_box == (2, 8, 32, 32)  # 48x64 -> 37x49, centre crop
    assert sample.resize_scale == pytest.approx(37 / 48)
    for k in range(2):
        np.testing.assert_array_equal(denormalise(sample.clips[k]), sample.display[k])


def test_decoding_stops_after_the_last_wanted_frame(ramp_mp4: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    yielded = []
    real_open = video_module._open

    class Counting:
        def __init__(self, container) -> None:
            self.container = container

        def __getattr__(self, name: str):
            return getattr(self.container, name)

        def decode(self, *args, **kwargs):
            for frame in self.container.decode(*args, **kwargs):
                yielded.append(frame.pts)
                yield frame

    monkeypatch.setattr(video_module, "_open", lambda path: Counting(real_open(path)))
    assert frame_numbers(read_frames(ramp_mp4, [4, 2])) == [4, 2]
    assert len(yielded) == 5  # frames 0..4 of 20
