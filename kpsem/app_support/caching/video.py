"""Pictures of videos for the app, cached per file: a video's header, one full frame with the models' crop
marked, a gallery thumbnail, and the explanation MP4 of :mod:`kpsem.explain.video`."""

from __future__ import annotations

import os

import numpy as np
import streamlit as st

from kpsem.app_support.choices.sources import FileKey
from kpsem.app_support.drawing.gallery import THUMB_WIDTH
from kpsem.app_support.drawing.render import MODEL_COLOURS, encode_jpeg

__all__ = ["probe", "full_frame_image", "thumbnail", "explanation_video"]


@st.cache_data(max_entries=64, show_spinner=False)
def probe(key: FileKey):  # noqa: ANN201 - kpsem.data.VideoInfo
    """Frame count, rate and size of a video (read from its header: no frame is decoded)."""
    from kpsem.data import probe_video

    return probe_video(key[0])


@st.cache_data(max_entries=32, show_spinner=False)
def full_frame_image(key: FileKey, index: int, box: tuple[float, float, float, float]) -> tuple[bytes, tuple[int, int]]:
    """JPEG of video frame ``index`` as decoded (short side capped) with ``box`` (top, left, height, width
    in original pixels) drawn on it, and the decoded (height, width)."""
    import cv2

    from kpsem.data import probe_video, read_frames

    info = probe_video(key[0])
    image = read_frames(key[0], [index], info=info)[0].copy()  # (h, w, 3), the short side capped while decoding
    scale = image.shape[0] / info.height
    top, left, height, width = (v * scale for v in box)
    thickness = max(2, round(min(image.shape[:2]) / 150))
    rgb = tuple(int(MODEL_COLOURS[1][i:i + 2], 16) for i in (1, 3, 5))
    cv2.rectangle(image, (round(left), round(top)), (round(left + width) - 1, round(top + height) - 1), rgb,
                  thickness)
    return encode_jpeg(image), image.shape[:2]


@st.cache_data(show_spinner=False, max_entries=1024)
def thumbnail(key: FileKey, width: int = THUMB_WIDTH) -> bytes:
    """JPEG of the middle frame of the video or frame folder ``key`` names, ``width`` pixels wide.

    Why cached by (path, size, modification time): a gallery page shows the same clips on every rerun, and
    decoding a frame of a long video takes tens of milliseconds; a changed file gets a new picture."""
    from PIL import Image

    from kpsem.data.video import probe_video, read_frames

    path = os.fspath(key[0])
    info = probe_video(path)
    frame = read_frames(path, [info.num_frames // 2], short_side_cap=width, info=info)[0]  # (H, W, 3)
    height = max(1, round(frame.shape[0] * width / frame.shape[1]))
    small = np.asarray(Image.fromarray(frame).resize((width, height), Image.BILINEAR))
    return encode_jpeg(small, quality=85)


@st.cache_data(max_entries=8, show_spinner=False)
def explanation_video(key: tuple, _pair, _difference, _display: np.ndarray, _keypoints, names: tuple[str, str],  # noqa: ANN001
                      captions: tuple[str, ...], cmap: str, alpha: float) -> bytes:
    """The MP4 of :func:`kpsem.explain.video.explanation_video_bytes`, cached on ``key``: everything that
    decides the analyses (checkpoints, device, clip and window, layer, target, weighting, precision) and
    the key point settings; the arguments with a leading underscore follow from it and are not hashed."""
    from kpsem.explain.video import explanation_video_bytes

    return explanation_video_bytes(_pair, _display, difference=_difference, names=names, captions=captions,
                                   keypoints=_keypoints, cmap=cmap, alpha=alpha)
