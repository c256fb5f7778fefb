"""The class comparison's clip gallery: which clips each model gets right, and a small picture of each.

The four filters split the compared items (videos or clips) by the two models' top-1 verdicts: *fixed*
(KPSEM right, the baseline wrong), *broken* (the reverse), *both right* and *both wrong*; every item falls in
exactly one. The thumbnails are :func:`kpsem.app_support.caching.video.thumbnail`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["FILTERS", "verdicts", "gallery_rows", "filter_counts", "THUMB_WIDTH"]

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
