"""The class comparison's clip gallery: which clips each model gets right, and a small picture of each.

The four filters split the compared items (videos or clips) by the two models' top-1 verdicts: *fixed*
(KPSEM right, the baseline wrong), *broken* (the reverse), *both right* and *both wrong*; every item falls in
exactly one. A thumbnail is the clip's middle frame, decoded at a small size and cached per file.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import streamlit as st

from kpsem.app_support.sources import FileKey

__all__ = ["FILTERS", "verdicts", "gallery_rows", "filter_counts", "thumbnail", "THUMB_WIDTH"]

FILTERS = {  # filter: what it shows, in words
    "fixed": "KPSEM right, baseline wrong",
    "broken": "baseline right, KPSEM wrong",
    "both right": "both models right",
    "both wrong": "both models wrong",
}
THUMB_WIDTH = 160  # pixels; four to a row at 1280 px


def verdicts(items: pd.DataFrame) -> pd.Series:
    """The filter each item falls in, one per row of ``items`` (``true_label``, ``baseline_pred``, ``kpsem_pred``)."""
    right_b = (items["baseline_pred"] == items["true_label"]).to_numpy()
    right_k = (items["kpsem_pred"] == items["true_label"]).to_numpy()
    names = np.array(list(FILTERS))
    order = np.array([3, 0, 1, 2])  # 2 * baseline right + KPSEM right (0 both wrong ... 3 both right) -> FILTERS
    return pd.Series(names[order[2 * right_b.astype(int) + right_k.astype(int)]], index=items.index, name="filter")


def gallery_rows(items: pd.DataFrame, which: str) -> pd.DataFrame:
    """The items of one filter, ordered by video id and clip index."""
    if which not in FILTERS:
        raise ValueError(f"unknown gallery filter {which!r}; choose one of {', '.join(FILTERS)}")
    rows = items[verdicts(items) == which]
    return rows.sort_values(["video_id", "clip_index"], kind="stable").reset_index(drop=True)


def filter_counts(items: pd.DataFrame) -> dict[str, int]:
    """How many items fall in each filter (they add up to all items)."""
    counts = verdicts(items).value_counts()
    return {name: int(counts.get(name, 0)) for name in FILTERS}


@st.cache_data(show_spinner=False, max_entries=1024)
def thumbnail(key: FileKey, width: int = THUMB_WIDTH) -> bytes:
    """JPEG of the middle frame of the video or frame folder ``key`` names, ``width`` pixels wide.

    Why cached by (path, size, modification time): a gallery page shows the same clips on every rerun, and
    decoding a frame of a long video takes tens of milliseconds; a changed file gets a new picture."""
    from PIL import Image

    from kpsem.app_support.render import encode_jpeg
    from kpsem.data.video import probe_video, read_frames

    path = os.fspath(key[0])
    info = probe_video(path)
    frame = read_frames(path, [info.num_frames // 2], short_side_cap=width, info=info)[0]  # (H, W, 3)
    height = max(1, round(frame.shape[0] * width / frame.shape[1]))
    small = np.asarray(Image.fromarray(frame).resize((width, height), Image.BILINEAR))
    return encode_jpeg(small, quality=85)
