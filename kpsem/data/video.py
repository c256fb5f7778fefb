"""Decoding: a few frames out of one video file or JPEG frame folder, never the whole video.

Videos are read with PyAV: frames are streamed from the start (or from a keyframe found by seeking
when the first wanted frame lies far in), only the wanted frames are converted to RGB, and decoding
stops after the last wanted frame. Frame folders (Something-Something, extracted UCF/HMDB frames)
are listed by name and only the wanted images are read, with OpenCV.

Every frame is returned as uint8 RGB; grey-scale sources become three equal channels, and frames
whose short side exceeds ``short_side_cap`` are downscaled while decoding, so that a 4K video costs
no more memory than a 320p one. Anything that makes a single clip unusable raises :class:`VideoError`
with the path, what is wrong and what to do; data sets catch it and skip or substitute the video.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "VideoError",
    "VideoInfo",
    "VIDEO_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "DEFAULT_SHORT_SIDE_CAP",
    "FRAME_FOLDER_FPS",
    "is_video_file",
    "is_frame_folder",
    "list_frame_files",
    "probe_video",
    "read_frames",
    "decoded_size",
]

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
DEFAULT_SHORT_SIDE_CAP = 320  # frames are downscaled on decode to this short side (train scales reach 288)
FRAME_FOLDER_FPS = 12.0  # frame folders carry no rate; Something-Something v1 was extracted at 12 fps
_SEEK_AFTER = 64  # seek (instead of streaming from frame 0) when the first wanted frame is further in


class VideoError(ValueError):
    """A single clip that cannot be used; the message names the file, the problem and what to do."""


@dataclass
class VideoInfo:
    """What a video says about itself, read without decoding its frames."""

    path: Path  # the video file or frame folder
    num_frames: int  # frames in the video (see ``exact``)
    fps: float  # frames per second; FRAME_FOLDER_FPS for frame folders
    height: int  # original frame height in pixels
    width: int  # original frame width in pixels
    kind: str  # "video" (a file decoded with PyAV) or "frames" (a folder of images)
    exact: bool = True  # False when num_frames was estimated from duration x fps (may be off by a few)


def is_video_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a file with a known video extension."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def list_frame_files(folder: str | os.PathLike) -> list[Path]:
    """Images in ``folder`` sorted by name (``00001.jpg`` ...), hidden files left out."""
    with os.scandir(folder) as entries:
        names = sorted(
            e.name for e in entries
            if not e.name.startswith(".") and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS
        )
    return [Path(folder) / name for name in names]


def is_frame_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding at least one image (a clip stored as frames)."""
    path = Path(path)
    if not path.is_dir():
        return False
    with os.scandir(path) as entries:
        return any(os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS for e in entries if e.is_file())


def decoded_size(height: int, width: int, short_side_cap: int | None) -> tuple[int, int]:
    """(height, width) after capping the short side at ``short_side_cap`` (aspect ratio kept)."""
    if short_side_cap is None or min(height, width) <= short_side_cap:
        return height, width
    scale = short_side_cap / min(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise VideoError(f"{path} does not exist; check the path or re-run the indexing of the data set")
    if path.is_file() and path.stat().st_size == 0:
        raise VideoError(f"{path} is empty (0 bytes); the download or extraction failed: re-create it or remove it")


def _open(path: Path):  # -> av.container.InputContainer
    import av

    try:
        container = av.open(str(path))
    except av.error.FFmpegError as error:
        raise VideoError(
            f"{path} cannot be opened as a video ({error.strerror or error}); the file is corrupt or not a "
            "video: re-encode it (e.g. ffmpeg -i in.avi out.mp4) or remove it"
        ) from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path} has no video stream (audio only?); remove it from the data set")
    return container


def _probe_file(path: Path) -> VideoInfo:
    import av

    container = _open(path)
    try:
        stream = container.streams.video[0]
        height, width = stream.codec_context.height, stream.codec_context.width
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 25.0
        exact = True
        num_frames = int(stream.frames or 0)
        if num_frames <= 0:
            seconds = None
            if stream.duration and stream.time_base:
                seconds = float(stream.duration * stream.time_base)
            elif container.duration:
                seconds = container.duration / 1_000_000
            if seconds:
                num_frames, exact = max(1, math.floor(seconds * fps + 0.5)), False
            else:  # no count and no duration: count the packets (demuxing only, no decoding)
                num_frames = sum(1 for packet in container.demux(stream) if packet.size)
        if num_frames <= 0:
            raise VideoError(f"{path} has a video stream but zero frames; re-encode it or remove it")
        if height <= 0 or width <= 0:
            raise VideoError(f"{path} declares frames of {height}x{width} pixels; re-encode it or remove it")
    except av.error.FFmpegError as error:
        raise VideoError(f"{path} cannot be read ({error.strerror or error}); re-encode it or remove it") from None
    finally:
        container.close()
    return VideoInfo(path=path, num_frames=num_frames, fps=fps, height=height, width=width, kind="video", exact=exact)


def _read_image(path: Path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)  # grey, 16-bit and RGBA files become 8-bit BGR
    if image is None:
        raise VideoError(f"frame {path} cannot be read as an image (corrupt or truncated); re-extract the frames")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Frame count, rate and size of a video file or frame folder; :class:`VideoError` if unusable."""
    path = Path(path)
    _check_exists(path)
    if path.is_dir():
        files = list_frame_files(path)
        if not files:
            raise VideoError(
                f"{path} is a folder without images ({', '.join(IMAGE_EXTENSIONS)}); "
                "a frame folder must hold 00001.jpg, 00002.jpg, ..."
            )
        first = _read_image(files[0])
        return VideoInfo(path=path, num_frames=len(files), fps=FRAME_FOLDER_FPS, height=first.shape[0],
                         width=first.shape[1], kind="frames")
    return _probe_file(path)


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    if image.shape[:2] == size:
        return image
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def _frame_index(frame, stream, fps: float) -> int | None:  # noqa: ANN001 - av.VideoFrame, av.VideoStream
    if frame.pts is None or not stream.time_base:
        return None
    start = stream.start_time or 0
    return int(math.floor(float((frame.pts - start) * stream.time_base) * fps + 0.5))


def _decode_wanted(
    path: Path, wanted: list[int], info: VideoInfo, size: tuple[int, int], *, allow_seek: bool = True
) -> dict[int, np.ndarray]:
    """Decode the frames numbered in ``wanted`` (sorted, unique); stops after the last one."""
    import av

    found: dict[int, np.ndarray] = {}
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames = container.decode(stream)
        position = 0  # index of the next frame ``frames`` yields when counting from the start
        counted = True
        if allow_seek and wanted[0] >= _SEEK_AFTER and stream.time_base:
            target = wanted[0] / info.fps / float(stream.time_base) + (stream.start_time or 0)
            container.seek(int(target), stream=stream, backward=True, any_frame=False)
            frames, counted = container.decode(stream), False
        last = wanted[-1]
        want = set(wanted)
        for frame in frames:
            if not counted:  # after a seek, frame numbers come from timestamps
                index = _frame_index(frame, stream, info.fps)
                if index is None or index > wanted[0]:  # no timestamps, or the seek overshot: start over
                    container.close()
                    return _decode_wanted(path, wanted, info, size, allow_seek=False)
                position, counted = index, True
            if position in want:
                found[position] = frame.to_ndarray(
                    width=size[1], height=size[0], format="rgb24", interpolation="AREA"
                )
            if position >= last:
                break
            position += 1
    except av.error.FFmpegError as error:
        raise VideoError(
            f"{path} failed to decode near frame {position} ({error.strerror or error}); the file is corrupt: "
            "re-encode it or remove it"
        ) from None
    finally:
        container.close()
    return found


def read_frames(
    path: str | os.PathLike,
    indices: Sequence[int],
    *,
    short_side_cap: int | None = DEFAULT_SHORT_SIDE_CAP,
    info: VideoInfo | None = None,
) -> np.ndarray:
    """Frames ``indices`` (any order, repeats allowed) of a video or frame folder as (T, H, W, 3) uint8 RGB.

    Indices past the end (a frame count estimated from the duration can be a few frames too high)
    repeat the last frame that exists. ``info`` (from :func:`probe_video`) saves probing twice.
    """
    path = Path(path)
    if len(indices) == 0:
        raise ValueError("read_frames needs at least one frame index; got none")
    if min(indices) < 0:
        raise ValueError(f"frame indices must be >= 0; got {min(indices)}")
    info = info or probe_video(path)
    size = decoded_size(info.height, info.width, short_side_cap)
    wanted = sorted(set(int(i) for i in indices))
    if info.kind == "frames":
        files = list_frame_files(path)
        found = {i: _resize(_read_image(files[min(i, len(files) - 1)]), size) for i in wanted}
    else:
        found = _decode_wanted(path, wanted, info, size)
        if not found:
            raise VideoError(
                f"{path} yielded no frames (wanted frames {wanted[0]}..{wanted[-1]} of {info.num_frames}); "
                "the file is truncated or corrupt: re-encode it or remove it"
            )
        missing = [i for i in wanted if i not in found]
        if missing:
            available = sorted(found)
            log.debug("%s: frames %s not decoded (video shorter than declared); repeating earlier frames",
                      path, missing)
            for i in missing:
                earlier = [j for j in available if j < i]
                found[i] = found[earlier[-1] if earlier else available[0]]
    return np.stack([found[int(i)] for i in indices])  # (T, H, W, 3)
