"""Frames are what they say they are: no padding of truncated videos, frame numbers of variable-rate videos
from their timestamps, frame folders in number order and refused with a gap."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import kpsem.data.clips as clips_module
from kpsem.data import ClipDataset, ShortVideoError, VideoError, load_clip, open_dataset, probe_video, read_frames
from kpsem.data.synth import write_video
from kpsem.data.video import decode_frames


def ramp(frames: int, size: int = 32) -> np.ndarray:
    """Flat grey frames whose value is 10 + 5 t: each frame's number can be read back from its mean."""
    values = (10 + 5 * np.arange(frames)).astype(np.uint8)
    return np.broadcast_to(values[:, None, None, None], (frames, size, size, 3)).copy()


def ramp_numbers(frames: np.ndarray) -> list[int]:
    return [round((f.mean() - 10) / 5) for f in frames]


def coded(t: int, size: int = 32) -> np.ndarray:
    """Frame ``t`` written as 8 black or white stripes (its bits), which survive lossy coding."""
    image = np.zeros((size, size, 3), np.uint8)
    for bit in range(8):
        if t >> bit & 1:
            image[:, bit * 4:(bit + 1) * 4] = 255
    return image


def coded_numbers(frames: np.ndarray) -> list[int]:
    return [sum(1 << bit for bit in range(8) if f[:, bit * 4 + 1:bit * 4 + 3].mean() > 127) for f in frames]


def truncated_mp4(path: Path, frames: int = 40, keep: float = 0.8) -> Path:
    """An mp4 whose index (moov, written first) claims ``frames`` frames, cut to ``keep`` of its bytes."""
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=10, options={"x264-params": "threads=1"})
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for image in ramp(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    return path


def variable_rate_mp4(path: Path) -> Path:
    """160 coded frames: the first 80 shown 200 ms each, the rest 20 ms each (keyframe every 16)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"g": "16", "crf": "10"})
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        shown = 0
        for t in range(160):
            frame = av.VideoFrame.from_ndarray(coded(t), format="rgb24")
            frame.pts, frame.time_base = shown, Fraction(1, 1000)
            shown += 200 if t < 80 else 20
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


# ------------------------------------------------------------------------------------ truncated videos


def test_a_truncated_video_is_refused_saying_how_many_frames_decoded(tmp_path: Path) -> None:
    path = truncated_mp4(tmp_path / "cut.mp4")
    info = probe_video(path)
    assert (info.num_frames, info.exact) == (40, True)  # the header still claims every frame
    with pytest.raises(ShortVideoError, match=r"cut\.mp4: only \d+ of the 40 frames its header claims could be "
                                              r"decoded; the file is truncated or corrupt") as caught:
        load_clip(path, frames=8, size=32)
    assert 0 < caught.value.decoded < 40 and caught.value.truncated
    frames = read_frames(path, [0, 5])  # the frames that do decode are still the right ones
    assert ramp_numbers(frames) == [0, 5]


def test_a_truncated_video_in_a_data_set_is_replaced_and_reported(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_video(root / "up" / "good.mp4", ramp(40), fps=10)
    truncated_mp4(root / "up" / "cut.mp4")
    dataset = ClipDataset(open_dataset(root, split="test", layout="folders"), train=False, frames=8, size=32)
    ids = [dataset.index.videos[i].video_id for i in range(2)]
    bad = ids.index("up/cut")
    item = dataset[bad]
    assert (item["video_id"], item["replaced"]) == ("up/good", "up/cut")  # a neighbour stands in, named
    assert list(dataset.failures) == [str(root / "up" / "cut.mp4")]
    assert "only" in dataset.failures[str(root / "up" / "cut.mp4")]
    assert dataset.failure_summary().startswith("1 undecodable videos replaced by neighbours (first: ")
    assert "of the 40 frames its header claims could be decoded" in dataset.failure_summary()


def test_an_estimated_count_a_frame_high_is_corrected_not_padded(tmp_path: Path, monkeypatch) -> None:
    path = write_video(tmp_path / "ramp.mp4", ramp(20), fps=10)
    real_probe = clips_module.probe_video

    def estimated(target: Path) -> object:  # as a container without a frame count reports it
        info = real_probe(target)
        info.num_frames, info.exact = 21, False
        return info

    monkeypatch.setattr(clips_module, "probe_video", estimated)
    sample = load_clip(path, frames=20, interval=1, size=32)
    assert sample.num_frames == 20  # the frames that decoded, not the estimate
    assert sample.indices == [list(range(20))]
    assert ramp_numbers(sample.display[0]) == list(range(20))  # every frame is its own, none repeated
    assert sample.repeated == 0


def test_a_video_shorter_than_the_clip_reports_its_repeats(tmp_path: Path) -> None:
    path = write_video(tmp_path / "short.mp4", ramp(5), fps=10)
    sample = load_clip(path, frames=8, size=32)
    assert sample.indices == [[0, 1, 1, 2, 2, 3, 3, 4]]
    assert (sample.num_frames, sample.repeated) == (5, 3)
    assert sample.times == [[0.0, 0.1, 0.1, 0.2, 0.2, 0.3, 0.3, 0.4]]


# ------------------------------------------------------------------------------- variable frame rate


def test_variable_frame_rate_frames_are_counted_not_computed_from_timestamps(tmp_path: Path) -> None:
    path = variable_rate_mp4(tmp_path / "vfr.mp4")
    info = probe_video(path)
    assert (info.num_frames, info.constant_rate) == (160, False)
    wanted = [100, 120, 150]  # far enough in that a constant-rate video would be seeked into
    decoded = decode_frames(path, wanted, short_side_cap=None)
    assert coded_numbers(decoded.frames) == wanted
    # 80 frames of 200 ms, then 20 ms each: the frames' own timestamps, not index / average fps
    assert decoded.times == pytest.approx([16.4, 16.8, 17.4], abs=1e-3)


def test_a_variable_rate_that_claims_a_constant_one_is_caught_after_seeking(tmp_path: Path) -> None:
    path = variable_rate_mp4(tmp_path / "vfr.mp4")
    info = probe_video(path)
    info.constant_rate = True  # as a container with misleading rates would report it
    assert coded_numbers(read_frames(path, [100, 120, 150], short_side_cap=None, info=info)) == [100, 120, 150]


def test_load_clip_of_a_variable_rate_video_labels_frames_by_their_times(tmp_path: Path) -> None:
    path = variable_rate_mp4(tmp_path / "vfr.mp4")
    sample = load_clip(path, frames=4, interval=20, size=32)
    assert sample.indices == [[50, 70, 90, 110]]
    assert sample.times == [pytest.approx([10.0, 14.0, 16.2, 16.6], abs=1e-3)]
    assert not sample.constant_rate


# ------------------------------------------------------------------------------------- frame folders


def test_a_frame_folder_with_a_gap_is_refused(tmp_path: Path) -> None:
    folder = write_video(tmp_path / "clip", ramp(4))
    (folder / "00003.jpg").unlink()  # 00001, 00002, 00004
    message = (r"clip is missing frame 00003\.jpg \(1 of the numbers 00001\.jpg\.\.00004\.jpg absent\); indexing "
               r"past a gap would shift every later frame in time: re-extract the frames or remove the folder")
    with pytest.raises(VideoError, match=message):
        probe_video(folder)
    with pytest.raises(VideoError, match=message):
        load_clip(folder, frames=4, size=32)


def test_a_frame_folder_with_a_doubled_number_is_refused(tmp_path: Path) -> None:
    folder = write_video(tmp_path / "clip", ramp(3))
    (folder / "002.png").write_bytes((folder / "00002.jpg").read_bytes())
    with pytest.raises(VideoError, match=r"clip has two files for frame 2 \(00002\.jpg and 002\.png\)"):
        probe_video(folder)


def test_frame_folders_are_read_in_number_order(tmp_path: Path) -> None:
    folder = write_video(tmp_path / "clip", ramp(12))
    for path in sorted(folder.iterdir()):  # 00001.jpg .. 00012.jpg -> 1.jpg .. 12.jpg: name order is 1, 10, 11, 12, 2
        path.rename(folder / f"{int(path.stem)}.jpg")
    assert probe_video(folder).num_frames == 12
    assert ramp_numbers(read_frames(folder, [1, 9, 10, 11])) == [1, 9, 10, 11]
    sample = load_clip(folder, frames=12, interval=1, size=32)
    assert ramp_numbers(sample.display[0]) == list(range(12))


# ------------------------------------------------------------------------------------------- the app


def test_the_explorer_shows_repeats_truncation_and_frame_times(app, tmp_path: Path) -> None:
    at = app.run()
    at.radio(key="ex_source").set_value("upload").run()

    short = write_video(tmp_path / "short.mp4", ramp(5, size=96), fps=10)
    at.file_uploader(key="ex_upload").upload("short.mp4", short.read_bytes()).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert [w.value for w in at.warning] == [
        "The video has only 5 frames, fewer than the 16 the models read: 11 of the clip's frames repeat the frame "
        "before them."]

    variable = variable_rate_mp4(tmp_path / "vfr.mp4")
    at.file_uploader(key="ex_upload").upload("vfr.mp4", variable.read_bytes()).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    facts = " ".join(m.value for m in at.markdown)
    assert "160 frames at 8.9 fps on average (variable frame rate)" in facts
    assert "sampled frames**: 65, 67, 69" in facts  # 16 frames at interval 2 around the middle
    assert "93, 95 (at 13.00 … 16.30 s)" in facts  # the first and last sampled frames' own timestamps
    at.slider(key="frame").set_value(16).run()
    captions = [c.value for c in at.caption]  # the frame slider's own caption
    # index / average fps would say 95 / 8.9 = 10.7 s: the frame's timestamp says when it is really shown
    assert "Frame 16 of the 16 sampled frames is video frame 95 (counted from 0), shown at 16.30 s" in captions

    cut = truncated_mp4(tmp_path / "cut.mp4")
    at.file_uploader(key="ex_upload").upload("cut.mp4", cut.read_bytes()).run()
    assert not at.exception
    errors = " ".join(e.value for e in at.error)
    assert "Could not read the clip:" in errors and "of the 40 frames its header claims could be decoded" in errors
