"""The Explorer's key point settings (sets, channels, arrows, overlays, colour map, frame), shared with the
Figure studio through one session-state entry, so a figure shows what the Explorer showed.

Why an entry of its own rather than the widgets' keys: Streamlit forgets a widget's state once its page is
left, so the studio could never read the Explorer's widgets. The Explorer copies what they hold here on every
run (:func:`remember`, :func:`remember_frame`); the studio starts its own widgets from it (:func:`recall`).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from kpsem.explain.draw import DEFAULT_CMAP, KeyPointOptions

__all__ = ["SHARED", "WIDGET_KEYS", "SharedKeyPointSettings", "remember", "remember_frame", "recall"]

SHARED = "_keypoint_settings"  # the session-state entry both pages read and the Explorer writes
# The Explorer's widget keys for each shared setting (tests and the URL state address the widgets by them).
WIDGET_KEYS = {"sets": "kp_sets", "top_channels": "kp_top", "max_arrows": "kp_arrows", "arrow_scale": "kp_arrow",
               "split_lines": "kp_split", "highlight_crossing": "kp_cross", "tracks": "kp_tracks",
               "centre_paths": "kp_paths", "cmap": "cmap", "frame": "frame"}


@dataclass(frozen=True)
class SharedKeyPointSettings:
    """What the Explorer draws key points with; the defaults are the Explorer's own."""

    sets: tuple[int, ...] = (0,)  # AReSE sets drawn
    top_channels: int = 3  # channels per set, the strongest by regional weight
    max_arrows: int | None = 4  # arrows per set and frame (None: one per key point)
    arrow_scale: float = 1.0  # shift length multiplier
    split_lines: bool = True  # the split's centre and borders
    highlight_crossing: bool = True  # mark shifts that end in another region
    tracks: bool = False  # each key point's path over the clip
    centre_paths: bool = True  # each set's centre path over the clip
    cmap: str = DEFAULT_CMAP  # colour map of Grad-CAM and density overlays
    frame: int = 0  # the clip frame shown (0-based)

    def options(self, *, line_width: float = 1.0) -> KeyPointOptions:
        """The drawing options these settings mean (channels chosen by score, all regions)."""
        return KeyPointOptions(sets=self.sets, top_channels=self.top_channels, max_arrows=self.max_arrows,
                               arrow_scale=self.arrow_scale, split_lines=self.split_lines,
                               highlight_crossing=self.highlight_crossing, tracks=self.tracks,
                               centre_paths=self.centre_paths, line_width=line_width)


def remember(state: MutableMapping[str, Any], settings: SharedKeyPointSettings) -> None:
    """Store the Explorer's settings for other pages (its frame is kept: the frame viewer writes that)."""
    frame = recall(state).frame
    state[SHARED] = asdict(replace(settings, frame=frame))


def remember_frame(state: MutableMapping[str, Any], frame: int) -> None:
    """Store the frame the Explorer shows (0-based), keeping the other settings."""
    state[SHARED] = asdict(replace(recall(state), frame=int(frame)))


def recall(state: Mapping[str, Any]) -> SharedKeyPointSettings:
    """The settings the Explorer last used; its defaults before it ran (or for an entry that is not ours)."""
    stored = state.get(SHARED)
    if not isinstance(stored, dict):
        return SharedKeyPointSettings()
    try:
        return SharedKeyPointSettings(**{**stored, "sets": tuple(stored.get("sets", (0,)))})
    except TypeError:  # an entry from another version of the app: start from the defaults
        return SharedKeyPointSettings()
