"""Which frames make a clip: MFNet's sampling (SPEC section 1), written out as one pure function."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kpsem.constants import CLIP_FRAMES, FRAME_INTERVAL

__all__ = ["sample_indices", "clip_span", "KINETICS_INTERVALS"]

KINETICS_INTERVALS: tuple[int, ...] = (1, 2, 2, 3)  # MFNet draws the Kinetics training interval from these


def _evenly(num_video_frames: int, frames: int) -> list[int]:
    """``frames`` indices spread over the whole video, in order; repeats when the video is shorter."""
    return np.floor(np.linspace(0, num_video_frames - 1, frames) + 0.5).astype(int).tolist()


def sample_indices(
    num_video_frames: int,
    *,
    frames: int = CLIP_FRAMES,
    interval: int | Sequence[int] = FRAME_INTERVAL,
    train: bool,
    clip_index: int = 0,
    num_clips: int = 1,
    rng: np.random.Generator | None = None,
    start: int | None = None,
) -> list[int]:
    """Frame numbers of one clip of ``frames`` frames taken every ``interval`` frames.

    train: the interval is ``interval`` (or drawn from it when it is a list, e.g. Kinetics' (1, 2, 2, 3))
    and the start is uniform over every position where the clip fits.
    test: deterministic; clip ``clip_index`` of ``num_clips`` starts at the centre of its share of the
    possible starts (one clip: the centre of the video); a list of intervals uses its median.
    ``start`` (test only): the clip's first frame instead of ``clip_index``'s, for a window the user
    chose in a long video; it must leave room for the clip (0 .. video frames - :func:`clip_span`).
    A video shorter than the clip's span gets ``frames`` indices spread evenly over all of it, in
    order, repeating frames when it has fewer than ``frames`` (a one-frame video repeats frame 0);
    ``start`` can then only be 0.
    """
    if num_video_frames < 1:
        raise ValueError(f"num_video_frames must be at least 1; got {num_video_frames}")
    if frames < 1:
        raise ValueError(f"frames must be at least 1; got {frames}")
    if not 0 <= clip_index < num_clips:
        raise ValueError(f"clip_index must be in [0, {num_clips}); got {clip_index}")
    choices = [interval] if isinstance(interval, int) else [int(i) for i in interval]
    if not choices or min(choices) < 1:
        raise ValueError(f"interval must be a positive int or a non-empty list of them; got {interval!r}")
    if start is not None and train:
        raise ValueError("start chooses a test clip's window; training draws its own start (pass train=False)")
    if train:
        rng = rng if rng is not None else np.random.default_rng()
        step = int(choices[int(rng.integers(len(choices)))])
    else:
        step = sorted(choices)[(len(choices) - 1) // 2]  # median (low): (1, 2, 2, 3) -> 2
    span = (frames - 1) * step + 1
    room = max(0, num_video_frames - span)  # the last possible start
    if start is not None and not 0 <= start <= room:
        raise ValueError(f"start {start} leaves no room for a clip of {span} frames in a video of {num_video_frames}; "
                         f"choose a start in 0..{room}")
    if span > num_video_frames:
        return _evenly(num_video_frames, frames)
    if start is not None:
        return list(range(start, start + span, step))
    # training: a random start; testing: clips spaced evenly over the video
    start = (int(rng.integers(room + 1)) if train
             else int(np.floor((clip_index + 0.5) * (room + 1) / num_clips)))
    return list(range(start, start + span, step))


def clip_span(frames: int = CLIP_FRAMES, interval: int | Sequence[int] = FRAME_INTERVAL) -> int:
    """Video frames a test clip covers, first to last: a window starts at 0 .. video frames - span."""
    choices = [interval] if isinstance(interval, int) else [int(i) for i in interval]
    return (frames - 1) * sorted(choices)[(len(choices) - 1) // 2] + 1
