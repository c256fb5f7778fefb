"""A long video in the Explorer: where the clip comes from in it, and the analysed clip as a video.

* :func:`window_control`: a time slider for where the analysed clip starts (a video longer than one
  clip; MFNet's test clip from the middle by default) and a timeline of the frames it samples.
* :func:`full_frame`: the whole video frame with the crop the models read marked on it.
* :func:`explorer_section`: the MP4 of :mod:`kpsem.explain.video` (both models side by side), played
  in the page and offered for download.

The window travels in the clip's cache key (``services.ClipKey``), so every cached analysis of the
page follows it and no model runs again for a window analysed before.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import streamlit as st

from kpsem.app_support.caching import services
from kpsem.app_support.caching.video import explanation_video, full_frame_image, probe
from kpsem.app_support.choices.sources import FileKey
from kpsem.app_support.drawing.text import escape_markdown
from kpsem.app_support.drawing.video import timeline_chart
from kpsem.constants import FRAME_INTERVAL

__all__ = ["window_control", "full_frame", "clip_context", "explorer_section"]


def window_control(key: FileKey, frames: int, *, interval: int = FRAME_INTERVAL) -> services.ClipKey:
    """The clip's cache key with the window the user chose; a time slider where the video is longer than
    one clip, nothing where it is not (the clip then spans all of it).

    The slider starts at MFNet's test clip (the middle) for every new video; the window's first frame is
    the frame at the chosen time, kept inside the video."""
    from kpsem.data import sample_indices
    from kpsem.data.sampling import clip_span

    info = probe(key)
    span = clip_span(frames, interval)
    room = info.num_frames - span  # the last possible start
    if room <= 0:
        return key
    middle = sample_indices(info.num_frames, frames=frames, interval=interval, train=False)[0]
    last = room / info.fps
    if st.session_state.get("_ex_window_video") != key or not 0 <= st.session_state.get("ex_window", 0) <= last:
        st.session_state["_ex_window_video"] = key
        st.session_state["ex_window"] = round(middle / info.fps, 2)
    seconds = st.slider(
        "Clip starts at (seconds)", 0.0, float(round(last, 2)), key="ex_window", step=max(0.01, round(1 / info.fps, 2)),
        help=f"The models read {frames} frames, one every {interval}: {span} video frames "
             f"({span / info.fps:.2f} s) of this {info.num_frames / info.fps:.1f} s video. The default is the "
             "middle, where MFNet's test clip is taken.")
    start = min(room, max(0, int(np.floor(seconds * info.fps + 0.5))))
    return (*key, start)


def full_frame(key: FileKey, sample) -> None:  # noqa: ANN001 - kpsem.data.ClipSample
    """The clip's middle frame as the video shows it, with the square the models read outlined."""
    frame = len(sample.indices[0]) // 2
    index = int(sample.indices[0][frame])
    data, (height, width) = full_frame_image(tuple(key[:3]), index, tuple(float(v) for v in sample.original_box()))
    size = sample.display.shape[2]
    _, _, box_h, box_w = sample.original_box()
    st.image(data, output_format="JPEG", width="stretch",
             caption=f"Video frame {index} in full ({sample.original_size[1]}×{sample.original_size[0]} px, shown at "
                     f"{width}×{height}); the box is the {box_w:.0f}×{box_h:.0f} px square the models read, "
                     f"resized to {size}×{size} (the clip's frame {frame + 1})")


def clip_context(key: services.ClipKey, sample) -> None:  # noqa: ANN001 - kpsem.data.ClipSample
    """Where the clip lies in the video (a time line of its sampled frames) and in the frame (the crop)."""
    times = sample.times[0] if sample.times else [i / sample.fps for i in sample.indices[0]]
    st.plotly_chart(timeline_chart(sample.num_frames, sample.fps, list(sample.indices[0]), list(times)),
                    key="ex_timeline", config={"displayModeBar": False})
    st.caption(f"The video's {sample.num_frames / max(sample.fps, 1e-6):.1f} s; shaded, the clip's window; each tick "
               "a sampled frame (hover for its number).")
    full_frame(key, sample)


def explorer_section(sample, pair, difference_pair: Callable[[], object], keypoints, *,  # noqa: ANN001
                     analysis_key: tuple, cmap: str, alpha: float) -> None:
    """The analysed clip as a video of both models side by side (made when asked), played and downloadable.

    ``difference_pair`` gives the pair analysed for the common target (the difference row needs one class);
    it is called only when the video is made."""
    from kpsem.explain.video import VIDEO_FPS, frame_captions

    st.subheader("The clip as a video", anchor=False)
    if not st.toggle("Make an MP4 of both models on this clip", key="ex_video",
                     help="Grad-CAM of both models on one colour scale, their difference, and the key points and "
                          f"shifts, frame by frame at {VIDEO_FPS:g} frames a second; H.264, plays in any browser"):
        st.caption("Each frame of the clip with both Grad-CAMs, their difference and the key points, as an H.264 "
                   "video to play here or download.")
        return
    times = sample.times[0] if sample.times else [i / sample.fps for i in sample.indices[0]]
    captions = tuple(frame_captions(len(sample.indices[0]), sample.indices[0], times))
    settings = dataclasses.asdict(keypoints) if keypoints is not None else None
    names = (pair.baseline.model_name, pair.kpsem.model_name)
    with st.spinner("Drawing and encoding the video ..."):
        data = explanation_video((*analysis_key, repr(settings)), pair, difference_pair(), sample.display[0],
                                 keypoints, names, captions, cmap, float(alpha))
    st.video(data, format="video/mp4")
    stem = Path(sample.path).stem if sample.path is not None else "clip"
    first = int(sample.indices[0][0])
    st.download_button("Download the MP4", data, file_name=f"{stem}_from_frame_{first}_explained.mp4",
                       mime="video/mp4", key="ex_video_download", icon=":material/download:")
    st.caption(f"{len(data) / 1024:.0f} KB · {len(captions)} frames at {VIDEO_FPS:g} fps · top: "
               f"{escape_markdown(names[0])} and {escape_markdown(names[1])} Grad-CAM on one scale; bottom: their "
               "difference on a range fitted to the clip, and the key points and shifts. The same video comes from "
               "`kpsem explain --video`.")
