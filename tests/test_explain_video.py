"""A long video is a video: the clip window, the H.264 writer and the side-by-side explanation video."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from conftest import TINY_BACKBONE

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


# ---- the explanation video ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_analysis():
    """A tiny MFNet and MF-KPSEM pair analysed for class 0 on one seeded 8x64x64 clip, and its pixels."""
    import torch

    import kpsem
    from kpsem.explain.analysis import analyse_pair

    torch.manual_seed(0)
    backbone = dict(TINY_BACKBONE)
    baseline = kpsem.create_model("mfnet", num_classes=5, **backbone).eval()
    ours = kpsem.create_model("mf_kpsem", num_classes=5, backbone=dict(backbone), num_frames=8).eval()
    clip = torch.randn(1, 3, 8, 64, 64, generator=torch.Generator().manual_seed(1))
    pair = analyse_pair(baseline, ours, clip, target=0, class_names=[f"c{i}" for i in range(5)])
    display = np.random.default_rng(0).integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
    return pair, display


def test_layout_sizes_add_up_and_are_even() -> None:
    from kpsem.explain.video import video_layout

    layout = video_layout(64)  # 64 px clip -> 4x -> 256 px panels
    assert (layout.scale, layout.panel) == (4, 256)
    assert layout.width == 2 * 256 + 3 * 8 == 536
    assert layout.height == 26 + 2 * (22 + 256) + 2 * 8 + 70 == 668
    assert layout.panel_origin(0, 0) == (26 + 22, 8) and layout.panel_origin(1, 1) == (26 + 22 + 256 + 8 + 22, 272)
    odd = video_layout(97)  # 3x: 291 px panels; the odd sums are padded to even
    assert (odd.scale, odd.panel, odd.width % 2, odd.height % 2) == (3, 291, 0, 0)
    assert video_layout(400).scale == 1  # never smaller than the clip
    with pytest.raises(ValueError, match="clip_size must be at least 1; got 0"):
        video_layout(0)


def test_difference_limit_fits_the_data_symmetrically() -> None:
    from kpsem.explain.draw import difference_limit

    diff = np.zeros((2, 10, 10))
    assert difference_limit(diff) == 0.0
    diff[0, 0, 0] = -0.3  # one value in 200: the 99th percentile is 0, so the maximum is the range
    assert difference_limit(diff) == pytest.approx(0.3)
    ramp_values = np.linspace(-0.5, 0.5, 101)  # |d| = 0, 0.01 (twice) ... 0.5 (twice): 99th percentile 0.5
    assert difference_limit(ramp_values) == pytest.approx(np.percentile(np.abs(ramp_values), 99))


def test_frames_are_panels_of_the_library_drawings(tiny_analysis) -> None:
    from kpsem.explain.draw import KeyPointOptions, cam_overlay, render_frame
    from kpsem.explain.video import draw_video, frame_captions, plan_video

    pair, display = tiny_analysis
    captions = frame_captions(8, indices=range(40, 56, 2), times=[i / 10 for i in range(40, 56, 2)])
    assert captions[1] == "clip frame 2/8 · video frame 42 · 4.20 s"
    plan = plan_video(pair, captions=captions, cmap="viridis")
    assert plan.labels[2].startswith("MFNet minus MF-KPSEM") and plan.names == ("MFNet", "MF-KPSEM")
    frames = draw_video(plan, pair, display, keypoints=KeyPointOptions(top_channels=2))
    layout = plan.layout
    assert frames.shape == (8, layout.height, layout.width, 3) and frames.dtype == np.uint8
    top, left = layout.panel_origin(0, 1)  # frame 3's KPSEM CAM, exactly as draw.py draws it
    expected = render_frame(cam_overlay(display[3], pair.kpsem_shared[3], cmap="viridis"), scale=layout.scale)
    np.testing.assert_array_equal(frames[3, top:top + layout.panel, left:left + layout.panel], expected)
    assert not np.array_equal(frames[0, :layout.header], frames[1, :layout.header])  # each frame's own caption


def test_video_decodes_to_the_clip_frames_and_repeats_its_bytes(tiny_analysis, tmp_path: Path) -> None:
    from kpsem.explain.video import explanation_video_bytes, video_layout, write_explanation_video

    pair, display = tiny_analysis
    data = explanation_video_bytes(pair, display)
    assert explanation_video_bytes(pair, display) == data  # same input, same bytes, in one process
    path = write_explanation_video(tmp_path / "clip.mp4", pair, display)
    assert path.read_bytes() == data
    layout = video_layout(64)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = list(container.decode(stream))
        assert stream.codec_context.name == "h264" and float(stream.average_rate) == 4.0
    assert len(decoded) == 8 and (decoded[0].width, decoded[0].height) == (layout.width, layout.height)


def test_a_pair_explaining_two_classes_needs_a_difference_pair(tiny_analysis) -> None:
    import dataclasses

    from kpsem.explain.video import plan_video

    pair, _ = tiny_analysis
    split = dataclasses.replace(pair, kpsem=dataclasses.replace(pair.kpsem, target=1), difference=None)
    with pytest.raises(ValueError, match=r"the two CAMs explain different classes \('c0' and 'c1'\).*pass difference="):
        plan_video(split)
    assert plan_video(split, difference=pair).labels[2].endswith("CAM of c0")


def test_explain_command_writes_the_video_of_a_chosen_window(tmp_path: Path, capsys) -> None:
    import json

    import torch

    import kpsem
    from kpsem.checkpoint import save_checkpoint
    from kpsem.cli import main

    torch.manual_seed(0)
    backbone = dict(TINY_BACKBONE)
    models = (kpsem.create_model("mfnet", num_classes=5, **backbone).eval(),
              kpsem.create_model("mf_kpsem", num_classes=5, backbone=dict(backbone), num_frames=8).eval())
    for model, stem in zip(models, ("base", "ours")):
        save_checkpoint(tmp_path / f"{stem}.pt", model, class_names=[f"c{i}" for i in range(5)], clip_frames=8,
                        clip_size=64)
    video = write_video(tmp_path / "long.mp4", ramp(100, 64, 80), fps=10)  # 10 s; an 8-frame clip spans 15 frames
    out = tmp_path / "out"
    args = ["explain", "--baseline", str(tmp_path / "base.pt"), "--kpsem", str(tmp_path / "ours.pt"), "--clip",
            str(video), "--out", str(out), "--formats", "png", "--dpi", "30", "--jobs", "1", "--video"]
    assert main([*args, "--start", "5"]) == 0
    facts = json.loads((out / "analysis.json").read_text())["inputs"]["clip_facts"]
    assert facts["frame_indices"] == list(range(50, 65, 2))  # 5 s x 10 fps = frame 50, then every 2nd
    with av.open(str(out / "explained.mp4")) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert stream.codec_context.name == "h264"
    assert len(frames) == 8 and frames[0].shape == (668, 536, 3)  # 64 px clip: four 256 px panels
    capsys.readouterr()
    assert main([*args, "--start", "9"]) == 2  # the last window starts at frame 85: 8.5 s
    assert ("--start 9 s is outside this 10.00 s video's clip windows: a 8-frame clip can start at 0 … 8.50 s"
            in capsys.readouterr().err)
