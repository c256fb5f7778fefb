"""Clips for models: a torch Dataset over a :class:`DatasetIndex`, and :func:`load_clip` for one video.

A video that turns out undecodable inside a data set does not stop a run. ``ClipDataset`` logs a
warning, remembers the video in ``failures`` (path -> reason) and returns the clip of the next
decodable video instead (index + 1, + 2, ... wrapping around: deterministic, so a test epoch gives
the same items every time). The substitute item carries its own label and video_id, and
``replaced`` names the video it stands in for ("" normally), so that a training loop can count
substitutions even when the items come from DataLoader worker processes (which keep their own
``failures``). If no video of the index decodes, the original :class:`VideoError` is raised.
``open_dataset(..., verify=True)`` finds broken files before training instead.

Frame numbers are real: a video that decodes fewer frames than its header claims is a bad video
(:class:`~kpsem.data.video.ShortVideoError`), while a count only estimated from the duration is
corrected to the frames that decoded and the clip sampled again. A video shorter than a clip repeats
frames (MFNet's rule); ``ClipSample.repeated`` says how many, so the app can say so.

Test clips follow an evaluation protocol (:class:`EvalProtocol`, :data:`PROTOCOLS`): which frames and
crops make a video's views, whose mean softmax is the video's score. "centre" (the default, the SPEC's
test transform): evenly spaced clips, short side resized to 256/224 of the crop, centre crop. "mfnet" (the
MFNet reference's test script): clips at seeded random starts, frames resized to a 256/224 square, a seeded
random crop each, no flip. "3crop": evenly spaced clips, short side resized to the crop size, three crops
along the long side (start, centre, end) of every clip.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from kpsem.constants import CLIP_FRAMES, CLIP_SIZE, FRAME_INTERVAL, MFNET_MEAN, MFNET_STD
from kpsem.data.datasets import DatasetIndex
from kpsem.data.sampling import sample_indices
from kpsem.data.transforms import ClipTransform, TransformedClip, mirrored_labels
from kpsem.data.video import (
    DEFAULT_SHORT_SIDE_CAP,
    DecodedFrames,
    ShortVideoError,
    VideoError,
    VideoInfo,
    decode_frames,
    probe_video,
)

__all__ = ["FLIP_MODES", "PROTOCOLS", "ClipDataset", "ClipSample", "EvalProtocol", "eval_protocol",
           "check_protocol", "load_clip"]

FLIP_MODES = ("mirror", "plain", "off")  # training flips: mirror-image labels swapped, labels kept, or none

PROTOCOLS = ("centre", "mfnet", "3crop")  # evaluation protocols (see the module docstring)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalProtocol:
    """How the test views of a video are taken; every predictions table records it (:meth:`as_dict`)."""

    name: str  # one of PROTOCOLS
    clips: int  # clips per video, in time
    crops: int  # crops per clip: 3 for "3crop", else 1
    size: int  # side of the square crop the model sees
    resize: int  # frames are resized to this short side (or to resize x resize when ``square``) before cropping
    square: bool  # resize to a square (the MFNet reference's test transform) instead of keeping the aspect
    crop: str  # "centre", "three" (along the long side) or "random" (kpsem.data.transforms.view_geometry)
    random_start: bool  # clips start at seeded random frames instead of evenly spaced ones
    seed: int | None  # seed of the random starts and crops; None when nothing is random

    @property
    def views(self) -> int:
        """Views per video (clips x crops): a video's score is the mean softmax over them."""
        return self.clips * self.crops

    def as_dict(self) -> dict[str, Any]:
        """Plain data for the predictions table's metadata and the evaluation summary."""
        return {"name": self.name, "clips": self.clips, "crops": self.crops, "views": self.views, "size": self.size,
                "resize": self.resize, "resize_to": "square" if self.square else "short side", "crop": self.crop,
                "random_start": self.random_start, "seed": self.seed}


def check_protocol(name: str, clips: int) -> None:
    """Refuse an unknown protocol or a clip count below one, with what to pass instead."""
    if name not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}; got {name!r}")
    if isinstance(clips, bool) or not isinstance(clips, int) or clips < 1:
        raise ValueError(f"clips must be a whole number of at least 1 (clips per video); got {clips!r}")


def eval_protocol(name: str = "centre", *, clips: int = 1, size: int = CLIP_SIZE, seed: int = 0) -> EvalProtocol:
    """The protocol ``name`` with ``clips`` clips per video for ``size`` x ``size`` crops.

    The resize follows the 224-pixel recipes and scales with ``size``: round(size * 256 / 224) for "centre"
    and "mfnet" (256 at 224), ``size`` for "3crop" (the three square crops then cover the whole long side).
    ``seed`` only matters for "mfnet" (recorded as None elsewhere)."""
    check_protocol(name, clips)
    test_resize = round(size * 256 / 224)
    if name == "mfnet":
        return EvalProtocol(name, clips, 1, size, test_resize, True, "random", True, int(seed))
    if name == "3crop":
        return EvalProtocol(name, clips, 3, size, size, False, "three", False, None)
    return EvalProtocol(name, clips, 1, size, test_resize, False, "centre", False, None)


@dataclass
class ClipSample:
    """Clips of one video as the model sees them, and what the app needs to draw them."""

    clips: torch.Tensor  # (num_clips, 3, T, size, size) float32, normalised
    display: np.ndarray  # (num_clips, T, size, size, 3) uint8: the pixels of ``clips`` before normalisation
    indices: list[list[int]]  # sampled frame numbers of each clip, in the original video (0 = its first frame)
    fps: float  # frames per second of the video (the average for a variable frame rate)
    num_frames: int  # frames in the video (decoded, where the header only estimated them)
    original_size: tuple[int, int]  # (height, width) of the video's frames
    crop_box: tuple[int, int, int, int]  # (top, left, height, width) in the resized frame
    resize_scale: float  # resized / original pixels (decoding cap and test resize together)
    path: Path | None = None  # the video file or frame folder
    times: list[list[float]] | None = None  # seconds from the video's start of each sampled frame (timestamps)
    repeated: int = 0  # frames of the first clip that repeat an earlier one: the video is shorter than a clip
    constant_rate: bool = True  # False for a variable frame rate (times are then not index / fps)

    def original_box(self) -> tuple[float, float, float, float]:
        """``crop_box`` in original pixels: (top, left, height, width)."""
        return tuple(v / self.resize_scale for v in self.crop_box)  # type: ignore[return-value]


def _decode_cap(transform: ClipTransform) -> int:
    return max(DEFAULT_SHORT_SIDE_CAP, transform.needed_short_side)


def _decode_sampled(
    path: str | os.PathLike, info: VideoInfo, sample: Callable[[int], list[int]], cap: int
) -> tuple[DecodedFrames, list[int], VideoInfo]:
    """Sample frame numbers from ``info.num_frames`` and decode them: (frames, numbers, info).

    A count estimated from the duration that proves a few frames high is replaced by the frames that
    decoded and the numbers are sampled again (so no frame is a stand-in); a real shortfall raises."""
    indices = sample(info.num_frames)
    try:
        return decode_frames(path, indices, short_side_cap=cap, info=info), indices, info
    except ShortVideoError as short:
        if short.truncated:
            raise
        info = replace(info, num_frames=short.decoded, exact=True)
        indices = sample(info.num_frames)
        return decode_frames(path, indices, short_side_cap=cap, info=info), indices, info


def load_clip(
    path: str | os.PathLike,
    *,
    frames: int = CLIP_FRAMES,
    interval: int | Sequence[int] = FRAME_INTERVAL,
    size: int = CLIP_SIZE,
    num_clips: int = 1,
    mean: tuple[float, ...] = MFNET_MEAN,
    std: tuple[float, ...] = MFNET_STD,
    start: int | None = None,
) -> ClipSample:
    """Test-time clips of one video file or frame folder (resize short side, centre crop, even clips).

    ``start``: one clip whose first frame is this video frame (a window chosen in a long video), instead
    of ``num_clips`` evenly spaced ones (see :func:`~kpsem.data.sampling.sample_indices`).

    Raises :class:`VideoError` for a missing, empty, corrupt or zero-frame video, and
    :class:`~kpsem.data.video.ShortVideoError` for one that decodes fewer frames than it claims.
    """
    if num_clips < 1:
        raise ValueError(f"num_clips must be at least 1; got {num_clips}")
    if start is not None and num_clips != 1:
        raise ValueError(f"start chooses one clip's window; got num_clips={num_clips} (pass num_clips=1)")
    transform = ClipTransform(train=False, size=size, mean=mean, std=std)

    def sample(count: int) -> list[int]:  # every clip's frame numbers, one after the other
        return [i for k in range(num_clips) for i in sample_indices(
            count, frames=frames, interval=interval, train=False, clip_index=k, num_clips=num_clips, start=start)]

    result, flat, info = _decode_sampled(path, probe_video(path), sample, _decode_cap(transform))
    decoded = result.frames  # (num_clips*T, h, w, 3)
    indices = [flat[k * frames:(k + 1) * frames] for k in range(num_clips)]
    outs = [transform.apply(decoded[k * frames:(k + 1) * frames]) for k in range(num_clips)]
    decode_scale = decoded.shape[1] / info.height  # 1.0 unless the decoding cap downscaled
    return ClipSample(
        clips=torch.stack([o.clip for o in outs]),  # (num_clips, 3, T, size, size)
        display=np.stack([o.display for o in outs]),  # (num_clips, T, size, size, 3)
        indices=indices,
        fps=info.fps,
        num_frames=info.num_frames,
        original_size=(info.height, info.width),
        crop_box=outs[0].crop_box,
        resize_scale=decode_scale * outs[0].scale[0],
        path=Path(path),
        times=[result.times[k * frames:(k + 1) * frames] for k in range(num_clips)],
        repeated=frames - len(set(indices[0])),
        constant_rate=info.constant_rate,
    )


class ClipDataset(Dataset):
    """Clips of the videos of a :class:`DatasetIndex`, with MFNet's train or test sampling and transform.

    Item ``i`` is view ``i % views`` of video ``i // views``: a dict with ``clip`` (3, T, size, size)
    float32, ``label`` int, ``video_id`` str, ``clip_index`` int (the view: clip ``clip_index // crops``,
    crop ``clip_index % crops``), ``index`` int (the item index) and ``replaced`` str (see the module
    docstring). ``views`` is ``clips_per_video`` times the protocol's crops (one crop but for "3crop").
    test: ``protocol`` (:data:`PROTOCOLS`, default "centre") decides the views, deterministic for a given
    ``seed``; ``self.protocol`` describes them. train: every item draws a random start, scale,
    crop and flip from a generator seeded by ``torch.randint``, so runs repeat under
    ``torch.manual_seed`` (DataLoader seeds each worker from it) and differ from epoch to epoch.
    ``flip``: "mirror" (default) flips half the training clips left-right and gives a flipped clip of
    a mirror-image class its partner's label (:func:`mirrored_labels`: slide_left <-> slide_right);
    "plain" flips and keeps every label (the MFNet reference; only right where no class has a
    mirror-image partner); "off" never flips. Items also carry ``flipped`` (bool).
    """

    def __init__(
        self,
        index: DatasetIndex,
        *,
        train: bool,
        frames: int = CLIP_FRAMES,
        interval: int | Sequence[int] = FRAME_INTERVAL,
        size: int = CLIP_SIZE,
        clips_per_video: int = 1,
        seed: int = 0,
        mean: tuple[float, ...] = MFNET_MEAN,
        std: tuple[float, ...] = MFNET_STD,
        flip: str = "mirror",
        protocol: str = "centre",
    ) -> None:
        if train and protocol != "centre":
            raise ValueError(f"protocol={protocol!r} chooses test views; training clips use the training "
                             "augmentation (pass train=False to evaluate with it)")
        if flip not in FLIP_MODES:
            raise ValueError(f"flip must be one of {', '.join(FLIP_MODES)}; got {flip!r}")
        if clips_per_video < 1:
            raise ValueError(f"clips_per_video must be at least 1; got {clips_per_video}")
        if frames < 1:
            raise ValueError(f"frames must be at least 1; got {frames}")
        self.index = index
        self.train = bool(train)
        self.frames = int(frames)
        self.interval = interval
        self.size = int(size)
        self.clips_per_video = int(clips_per_video)
        self.seed = int(seed)
        self.flip = flip
        # The test protocol (None when training): which frames and crops make each video's views.
        self.protocol = None if self.train else eval_protocol(protocol, clips=self.clips_per_video, size=self.size,
                                                                seed=self.seed)
        if self.protocol is None:
            self.transform = ClipTransform(train=True, size=size, mean=mean, std=std, flip=flip != "off")
        else:
            self.transform = ClipTransform(train=False, size=size, resize=self.protocol.resize, mean=mean, std=std,
                                           crop=self.protocol.crop, square=self.protocol.square)
        self.views = self.clips_per_video * (self.protocol.crops if self.protocol else 1)  # items per video
        names = index.class_names  # label of a flipped clip, per label:
        self.mirrored = mirrored_labels(names) if flip == "mirror" else list(range(len(names)))
        self.failures: dict[str, str] = {}  # path -> reason, for videos that failed in this process
        self._infos: dict[int, VideoInfo] = {}  # probed headers, per video, in this process

    @property
    def class_names(self) -> list[str]:
        return self.index.class_names

    def __len__(self) -> int:
        return len(self.index.videos) * self.views

    def __repr__(self) -> str:
        protocol = f", protocol={self.protocol.name}" if self.protocol else ""
        return (f"ClipDataset({self.index.layout} {self.index.split}, {len(self.index.videos)} videos x "
                f"{self.views} views{protocol}, {self.transform!r}, frames={self.frames}, interval={self.interval})")

    def _rng(self, item: int) -> np.random.Generator | None:
        if not self.train:
            return None
        draw = int(torch.randint(0, 2**31 - 1, (1,)).item())  # follows torch's (per-worker) seed
        return np.random.default_rng([self.seed, item, draw])

    def _view_rng(self, video_id: str, clip_index: int, purpose: int) -> np.random.Generator:
        """The random draws of a test view, from (seed, video, clip, purpose) alone: the same views whatever
        the worker, the batch or the order (a video's id, not its position, so other videos do not matter)."""
        return np.random.default_rng([self.seed, zlib.crc32(video_id.encode()), clip_index, purpose])

    def _clip(self, video: int, view: int, rng: np.random.Generator | None) -> TransformedClip:
        record = self.index.videos[video]
        info = self._infos.get(video) or self._infos.setdefault(video, probe_video(record.path))
        protocol = self.protocol
        crops = protocol.crops if protocol else 1
        clip_index, position = divmod(view, crops)

        def sample(count: int) -> list[int]:
            if protocol is not None and protocol.random_start:  # a fresh generator: a re-sample repeats the draw
                steps = [self.interval] if isinstance(self.interval, int) else sorted(self.interval)
                return sample_indices(count, frames=self.frames, interval=steps[(len(steps) - 1) // 2], train=True,
                                      rng=self._view_rng(record.video_id, clip_index, 0))
            return sample_indices(count, frames=self.frames, interval=self.interval, train=self.train,
                                  clip_index=clip_index, num_clips=self.clips_per_video, rng=rng)

        decoded, _, self._infos[video] = _decode_sampled(record.path, info, sample, _decode_cap(self.transform))
        if protocol is not None and protocol.crop == "random":
            rng = self._view_rng(record.video_id, clip_index, 1)
        return self.transform.apply(decoded.frames, rng=rng, position=position)  # clip: (3, T, size, size)

    def __getitem__(self, item: int) -> dict[str, Any]:
        if not 0 <= item < len(self):
            raise IndexError(f"item {item} out of range for {len(self)} clips")
        video, clip_index = divmod(item, self.views)
        rng = self._rng(item)
        count = len(self.index.videos)
        first_error: VideoError | None = None
        for step in range(count):
            candidate = (video + step) % count
            try:
                transformed = self._clip(candidate, clip_index, rng)
            except VideoError as error:
                path = str(self.index.videos[candidate].path)
                if path not in self.failures:
                    self.failures[path] = str(error)
                    log.warning("skipping undecodable video (a neighbour stands in): %s", error)
                first_error = first_error or error
                continue
            record = self.index.videos[candidate]
            label = self.mirrored[record.label] if transformed.flipped else record.label
            return {
                "clip": transformed.clip,
                "label": label,
                "video_id": record.video_id,
                "clip_index": clip_index,
                "index": item,
                "replaced": self.index.videos[video].video_id if step else "",
                "flipped": transformed.flipped,
            }
        raise VideoError(f"no video of {self.index.summary()} could be decoded; first error: {first_error}")

    def failure_summary(self) -> str:
        """One line: how many videos failed in this process, and the first reason."""
        if not self.failures:
            return "all videos decoded"
        reason = next(iter(self.failures.values()))
        return f"{len(self.failures)} undecodable videos replaced by neighbours (first: {reason})"
