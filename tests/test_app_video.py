"""The Explorer on a long video: choose the clip's window, see it on the time line and the full frame, get the MP4."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import av
import numpy as np
import pytest

from kpsem.data.synth import render_video, write_video


@pytest.fixture(scope="module")
def long_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 10.7 s video (128 frames at 12 fps, 112 px) of four synthetic actions one after the other."""
    parts = [render_video(name, np.random.default_rng(i), frames=32, size=112)
             for i, name in enumerate(("rise", "fall", "rise", "fall"))]
    return write_video(tmp_path_factory.mktemp("long") / "long.mp4", np.concatenate(parts), fps=12)


def _markdown(at) -> str:
    return re.sub(r"\\(.)", r"\1", " ".join(m.value for m in at.markdown))


def _clean(at) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


@pytest.fixture
def media(monkeypatch):
    """The bytes behind a media URL of the latest AppTest run: each run makes its own in-memory store."""
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
    from streamlit.testing.v1 import app_test

    stores: list[MemoryMediaFileStorage] = []

    class Recorded(MemoryMediaFileStorage):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            stores.append(self)

    monkeypatch.setattr(app_test, "MemoryMediaFileStorage", Recorded)
    return lambda url: stores[-1].get_file(url.rsplit("/", 1)[-1]).content


def test_a_window_of_a_long_video_is_chosen_shown_and_played_as_an_mp4(page, long_video, media):
    at = page("explorer").run()
    at.radio(key="ex_source").set_value("upload").run()
    at.file_uploader(key="ex_upload").upload(long_video.name, long_video.read_bytes()).run()
    _clean(at)
    window = at.slider(key="ex_window")
    # 16 frames every 2: 31 video frames; the last start is frame 97 (8.08 s); the default, MFNet's middle clip,
    # starts at floor(0.5 x 98) = 49 (4.08 s), and the full frame shown is the clip's 9th: 49 + 2 x 8 = 65
    assert (window.min, window.max, window.value) == (0.0, 8.08, 4.08)
    assert "**sampled frames**: 49, 51, 53" in _markdown(at)
    assert any("Video frame 65 in full (112×112 px" in i.captions[0] for i in at.get("image") if i.captions)
    timeline = json.loads(next(c for c in at.get("plotly_chart") if c.key == "ex_timeline").proto.spec)
    ticks = timeline["data"][0]
    assert [i for _, i in ticks["customdata"]] == list(range(49, 80, 2))  # every sampled frame a tick
    assert ticks["x"][0] == pytest.approx(49 / 12)
    assert timeline["layout"]["xaxis"]["range"] == [0, pytest.approx(128 / 12)]  # the whole video

    window.set_value(7.5).run()  # 7.5 s x 12 fps = frame 90
    _clean(at)
    assert "**sampled frames**: 90, 92, 94" in _markdown(at) and "120 (at 7.50 … 10.00 s)" in _markdown(at)
    assert any("Video frame 106 in full" in i.captions[0] for i in at.get("image") if i.captions)

    at.toggle(key="ex_video").set_value(True).run()
    _clean(at)
    video = at.get("video")
    buttons = at.get("download_button")
    assert len(video) == 1 and len(buttons) == 1
    assert buttons[0].proto.label == "Download the MP4"
    assert buttons[0].proto.url.endswith(".mp4")
    data = media(buttons[0].proto.url)
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        assert stream.codec_context.name == "h264"
    assert len(frames) == 16  # one video frame per clip frame
    assert (frames[0].width, frames[0].height) == (600, 732)  # two 288 px panels a row (96 px clip, 3x)
