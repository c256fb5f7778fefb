"""Decoding: a few frames out of one video file or JPEG frame folder, never the whole video.

Videos are read with PyAV: frames are streamed from the start (or from a keyframe found by seeking
when the first wanted frame lies far in), only the wanted frames are converted to RGB, and decoding
stops after the last wanted frame. Frame folders (Something-Something, extracted UCF/HMDB frames)
are listed by frame number and only the wanted images are read, with OpenCV.

Frame numbers are the frames that exist: a video whose header claims more frames than decode raises
:class:`ShortVideoError` (never padded with repeats), a variable-frame-rate video is counted from its
start (frame numbers cannot be computed from timestamps there), every decoded frame carries its
presentation time, and a frame folder with a gap in its numbering (00001, 00002, 00004) is refused,
since closing the gap would shift every later frame in time.

Writing is one function, :func:`write_h264`, shared by the synthetic data set and the explanation videos.

Every frame is returned as uint8 RGB; grey-scale sources become three equal channels, and frames
whose short side exceeds ``short_side_cap`` are downscaled while decoding, so that a 4K video costs
no more memory than a 320p one. Anything that makes a single clip unusable raises :class:`VideoError`
with the path, what is wrong and what to do; data sets catch it and skip or substitute the video.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "VideoError",
    "ShortVideoError",
    "VideoInfo",
    "DecodedFrames",
    "VIDEO_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "DEFAULT_SHORT_SIDE_CAP",
    "FRAME_FOLDER_FPS",
    "list_frame_files",
    "probe_video",
    "read_frames",
    "decode_frames",
    "decoded_size",
    "H264_OPTIONS",
    "write_h264",
]

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
DEFAULT_SHORT_SIDE_CAP = 320  # frames are downscaled on decode to this short side (train scales reach 288)
FRAME_FOLDER_FPS = 12.0  # frame folders carry no rate; Something-Something v1 was extracted at 12 fps
_SEEK_AFTER = 64  # seek (instead of streaming from frame 0) when the first wanted frame is further in
_NUMBERED = re.compile(r"^(.*?)(\d+)$")  # a frame file's stem: a prefix and its frame number


class VideoError(ValueError):
    """A single clip that cannot be used; the message names the file, the problem and what to do."""


class ShortVideoError(VideoError):
    """Fewer frames decode than the video claims (truncated or corrupt past ``decoded``).

    A count estimated from the duration (``estimated``) may be a few frames high without the file
    being damaged: :attr:`truncated` is False then, and a caller may sample again from ``decoded``.
    """

    def __init__(self, path: Path, *, decoded: int, claimed: int, estimated: bool, reason: str | None = None) -> None:
        self.path, self.decoded, self.claimed, self.estimated, self.reason = path, decoded, claimed, estimated, reason
        what = (f"about {claimed} frames (a count estimated from its duration)" if estimated
                else f"the {claimed} frames its header claims")
        why = f" (decoding frame {decoded} failed: {reason})" if reason else ""
        super().__init__(f"{path}: only {decoded} of {what} could be decoded{why}; the file is truncated or "
                         "corrupt: re-encode it or remove it")

    @property
    def truncated(self) -> bool:
        """Whether the shortfall is damage rather than the slack of a count estimated from the duration."""
        slack = max(2, round(0.02 * self.claimed))  # duration x rate rounds, and the last frame's duration varies
        return self.reason is not None or not self.estimated or self.decoded < self.claimed - slack or self.decoded == 0


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
    constant_rate: bool = True  # False for a variable frame rate: fps is then the average, times differ


@dataclass
class DecodedFrames:
    """Frames and when they are shown."""

    frames: np.ndarray  # (T, H, W, 3) uint8 RGB, in the order asked for
    times: list[float]  # presentation time of each frame in seconds from the video's start (its timestamp)


def list_frame_files(folder: str | os.PathLike) -> list[Path]:
    """Images in ``folder`` in frame order, hidden files left out; :class:`VideoError` for a gap.

    Numbered names (``00001.jpg``, ``img_7.png``: one prefix, then digits) are ordered by number, not
    by name (``10.jpg`` after ``9.jpg``), and must be consecutive: a missing or doubled number is
    refused, because indexing past the gap would show frame 00004 as frame 3 and shift the motion in
    time. Names without a common numbering keep their sorted order.
    """
    with os.scandir(folder) as entries:
        names = sorted(
            e.name for e in entries
            if not e.name.startswith(".") and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS
        )
    matches = [_NUMBERED.match(os.path.splitext(name)[0]) for name in names]
    if names and all(matches) and len({m.group(1) for m in matches}) == 1:
        numbered = sorted(zip((int(m.group(2)) for m in matches), names))
        _check_numbering(Path(folder), numbered, width=len(matches[0].group(2)))
        names = [name for _, name in numbered]
    return [Path(folder) / name for name in names]


def _check_numbering(folder: Path, numbered: list[tuple[int, str]], *, width: int) -> None:
    """Refuse doubled or missing frame numbers, naming the first one."""
    for (previous, name_a), (number, name_b) in itertools.pairwise(numbered):
        if number == previous:
            raise VideoError(f"{folder} has two files for frame {number} ({name_a} and {name_b}); "
                             "keep one and re-extract the frames")
        if number != previous + 1:
            prefix, ext = _NUMBERED.match(os.path.splitext(name_a)[0]).group(1), os.path.splitext(name_a)[1]
            missing = f"{prefix}{str(previous + 1).zfill(width)}{ext}"
            gaps = len(set(range(numbered[0][0], numbered[-1][0] + 1)) - {n for n, _ in numbered})
            raise VideoError(
                f"{folder} is missing frame {missing} ({gaps} of the numbers {numbered[0][1]}..{numbered[-1][1]} "
                "absent); indexing past a gap would shift every later frame in time: re-extract the frames "
                "or remove the folder"
            )


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


def _open(path: Path) -> Any:  # an av.container.InputContainer (PyAV is imported lazily)
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
        if stream.codec_context is None:  # e.g. an mp4 cut before its index: a stream with no codec parameters
            raise VideoError(f"{path} has a video stream that cannot be decoded (no codec parameters: truncated "
                             "or an unknown codec); re-encode it or remove it")
        height, width = stream.codec_context.height, stream.codec_context.width
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 25.0
        exact, constant = True, _constant_rate(stream)
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
    return VideoInfo(path=path, num_frames=num_frames, fps=fps, height=height, width=width, kind="video", exact=exact,
                     constant_rate=constant)


def _constant_rate(stream) -> bool:  # noqa: ANN001 - av.VideoStream
    """Whether the stream's frames are evenly spaced: its average rate (frames / duration) agrees with
    the rate every timestamp is a multiple of (FFmpeg's r_frame_rate). Only then does a timestamp
    tell a frame's number; unknown counts as variable."""
    average, base = stream.average_rate, stream.base_rate
    return bool(average) and bool(base) and abs(float(average) - float(base)) <= 0.01 * float(base)


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # JPEG start-of-frame (not DHT, JPG, DAC)


def _unreadable(path: Path) -> VideoError:
    return VideoError(f"frame {path} cannot be read as an image (corrupt or truncated); re-extract the frames")


def _jpeg_size(handle, path: Path) -> tuple[int, int]:  # noqa: ANN001 - a binary file
    """(height, width) from a JPEG's start-of-frame segment, skipping the segments before it."""
    handle.seek(2)
    for _ in range(1000):  # real files reach SOF within a few segments; a loop of garbage ends here
        byte = handle.read(1)
        while byte and byte != b"\xff":
            byte = handle.read(1)
        while byte == b"\xff":  # fill bytes before the marker
            byte = handle.read(1)
        if not byte:
            break
        marker = byte[0]
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            break
        length = int.from_bytes(handle.read(2), "big")
        if marker in _SOF_MARKERS:
            header = handle.read(5)  # precision, height, width
            if len(header) == 5:
                return int.from_bytes(header[1:3], "big"), int.from_bytes(header[3:5], "big")
            break
        if length < 2:
            break
        handle.seek(length - 2, os.SEEK_CUR)
    raise _unreadable(path)


def _image_header(path: Path) -> tuple[int, int, str]:
    """(height, width, "jpeg" | "png" | "bmp") from the image's header, without decoding it; refuses
    sizes past :data:`kpsem.limits.MAX_FRAME_PIXELS` (a few KB of JPEG can declare 65535 x 65535)."""
    from kpsem.limits import MAX_FRAME_PIXELS

    try:
        with open(path, "rb") as handle:
            head = handle.read(26)
            if head.startswith(b"\xff\xd8\xff"):
                (height, width), kind = _jpeg_size(handle, path), "jpeg"
            elif head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
                width, height, kind = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big"), "png"
            elif head.startswith(b"BM") and len(head) == 26:
                if int.from_bytes(head[14:18], "little") == 12:  # OS/2 header: 16-bit sizes
                    width, height = int.from_bytes(head[18:20], "little"), int.from_bytes(head[20:22], "little")
                else:  # height is negative for top-down rows
                    width, height = (abs(int.from_bytes(head[i:i + 4], "little", signed=True)) for i in (18, 22))
                kind = "bmp"
            else:
                raise VideoError(f"frame {path} cannot be read as an image (not a JPEG, PNG or BMP, or truncated); "
                                 "re-extract the frames")
    except OSError as error:
        raise VideoError(f"frame {path} cannot be opened ({error.strerror or error}); check the folder") from None
    if height <= 0 or width <= 0:
        raise _unreadable(path)
    if height * width > MAX_FRAME_PIXELS:
        raise VideoError(
            f"frame {path} declares {width}x{height} pixels; at most {MAX_FRAME_PIXELS:,} pixels are accepted "
            "(a decompression bomb, or no video frame): remove it or re-extract the frames"
        )
    return height, width, kind


def _read_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    """A frame image as uint8 RGB of ``size`` (height, width), never decoded larger than it must be.

    A JPEG is decoded at 1/2, 1/4 or 1/8 scale straight from the file (libjpeg's DCT scaling) when that
    still covers ``size``, as videos are downscaled while decoding, so a 16k x 16k frame costs 12 MB, not
    768 MB. PNG and BMP decode whole, so their size is capped by :data:`kpsem.limits.MAX_DECODED_FRAME_PIXELS`.
    """
    import cv2

    from kpsem.limits import MAX_DECODED_FRAME_PIXELS

    height, width, kind = _image_header(path)
    if size[0] * size[1] > MAX_DECODED_FRAME_PIXELS:
        raise VideoError(f"frame {path} would be read at {size[1]}x{size[0]} pixels; at most "
                         f"{MAX_DECODED_FRAME_PIXELS:,} pixels are decoded per frame: read it with a short side cap")
    scale = 1
    while kind == "jpeg" and scale < 8 and height // (2 * scale) >= size[0] and width // (2 * scale) >= size[1]:
        scale *= 2
    if math.ceil(height / scale) * math.ceil(width / scale) > MAX_DECODED_FRAME_PIXELS:
        raise VideoError(
            f"frame {path} is {width}x{height} pixels, too large to decode (at most {MAX_DECODED_FRAME_PIXELS:,} "
            "pixels; a JPEG is decoded at up to 1/8 scale, a PNG or BMP whole): re-extract the frames smaller"
        )
    reduced = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
               8: cv2.IMREAD_REDUCED_COLOR_8}[scale]
    # EXIF rotation is ignored so that the decoded size is the header's (video frames carry none)
    image = cv2.imread(str(path), reduced | cv2.IMREAD_IGNORE_ORIENTATION)  # grey, 16-bit, RGBA -> 8-bit BGR
    if image is None:
        raise _unreadable(path)
    return _resize(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), size)


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
        height, width, _ = _image_header(files[0])  # the header is enough: frames are decoded when read
        return VideoInfo(path=path, num_frames=len(files), fps=FRAME_FOLDER_FPS, height=height, width=width,
                         kind="frames")
    return _probe_file(path)


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    if image.shape[:2] == size:
        return image
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def _frame_time(frame, stream, position: int, fps: float) -> float:  # noqa: ANN001 - av.VideoFrame, av.VideoStream
    """Seconds from the stream's start to when ``frame`` is shown: its timestamp (which is what a
    variable frame rate needs), or ``position / fps`` for a frame without one."""
    if frame.pts is None or not stream.time_base:
        return position / fps
    return float((frame.pts - (stream.start_time or 0)) * stream.time_base)


def _frame_index(frame, stream, fps: float) -> int | None:  # noqa: ANN001 - av.VideoFrame, av.VideoStream
    """A frame's number from its timestamp; right only for a constant frame rate."""
    if frame.pts is None or not stream.time_base:
        return None
    return math.floor(_frame_time(frame, stream, 0, fps) * fps + 0.5)


@dataclass
class _Decoded:
    """What one pass over a video found."""

    found: dict[int, tuple[np.ndarray, float]]  # frame number -> (RGB frame, presentation time)
    decoded: int  # frames the stream yielded before it ended (or failed); the last wanted + 1 if it did not
    error: str | None = None  # the decoder's message when decoding failed part way


def _decode_wanted(
    path: Path, wanted: list[int], info: VideoInfo, size: tuple[int, int], *, allow_seek: bool = True
) -> _Decoded:
    """Decode the frames numbered in ``wanted`` (sorted, unique); stops after the last one.

    Seeking is used only for a constant frame rate, where a timestamp gives a frame's number; after a
    seek every frame's timestamp must step by one frame, or decoding starts over from frame 0 (a
    variable rate that reports a constant one would otherwise label frames wrongly)."""
    import av

    found: dict[int, tuple[np.ndarray, float]] = {}
    container = _open(path)
    position = 0  # number of the next frame ``frames`` yields (counted from the start, or set after a seek)
    counted = True  # False until the first frame after a seek has given the position
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames = container.decode(stream)
        if allow_seek and info.constant_rate and wanted[0] >= _SEEK_AFTER and stream.time_base:
            target = wanted[0] / info.fps / float(stream.time_base) + (stream.start_time or 0)
            container.seek(int(target), stream=stream, backward=True, any_frame=False)
            frames, counted = container.decode(stream), False
        last = wanted[-1]
        want = set(wanted)
        seeked = not counted
        for frame in frames:
            if seeked:  # after a seek, frame numbers come from timestamps; check each against the count
                index = _frame_index(frame, stream, info.fps)
                overshot = not counted and index is not None and index > wanted[0]
                if index is None or overshot or (counted and index != position):
                    container.close()
                    return _decode_wanted(path, wanted, info, size, allow_seek=False)
                position, counted = index, True
            if position in want:
                image = frame.to_ndarray(width=size[1], height=size[0], format="rgb24", interpolation="AREA")
                found[position] = (image, _frame_time(frame, stream, position, info.fps))
            if position >= last:
                return _Decoded(found, last + 1)
            position += 1
    except av.error.FFmpegError as error:
        if not counted:  # failed before the first frame after a seek: count from the start instead
            container.close()
            return _decode_wanted(path, wanted, info, size, allow_seek=False)
        return _Decoded(found, position, str(error.strerror or error))
    finally:
        container.close()
    return _Decoded(found, position)


def decode_frames(
    path: str | os.PathLike,
    indices: Sequence[int],
    *,
    short_side_cap: int | None = DEFAULT_SHORT_SIDE_CAP,
    info: VideoInfo | None = None,
) -> DecodedFrames:
    """Frames ``indices`` (any order, repeats allowed) of a video or frame folder, with their times.

    Every frame returned is the frame of that number: an index past the frames that decode raises
    :class:`ShortVideoError` (with how many decoded out of how many claimed), never a repeat of an
    earlier frame. ``info`` (from :func:`probe_video`) saves probing twice. Times of a frame folder
    are nominal: frame number / ``FRAME_FOLDER_FPS``.
    """
    path = Path(path)
    if len(indices) == 0:
        raise ValueError("read_frames needs at least one frame index; got none")
    if min(indices) < 0:
        raise ValueError(f"frame indices must be >= 0; got {min(indices)}")
    info = info or probe_video(path)
    size = decoded_size(info.height, info.width, short_side_cap)
    wanted = sorted({int(i) for i in indices})
    if info.kind == "frames":
        files = list_frame_files(path)
        if wanted[-1] >= len(files):
            raise VideoError(f"{path} holds {len(files)} frames, not the {info.num_frames} it held when it was "
                             f"probed (frame {wanted[-1]} was asked for); it changed: open it again")
        found = {i: (_read_image(files[i], size), i / info.fps) for i in wanted}
    else:
        result = _decode_wanted(path, wanted, info, size)
        if len(result.found) < len(wanted):
            raise ShortVideoError(path, decoded=result.decoded, claimed=info.num_frames, estimated=not info.exact,
                                  reason=result.error)
        found = result.found
    return DecodedFrames(
        frames=np.stack([found[int(i)][0] for i in indices]),  # (T, H, W, 3)
        times=[found[int(i)][1] for i in indices],
    )


def read_frames(
    path: str | os.PathLike,
    indices: Sequence[int],
    *,
    short_side_cap: int | None = DEFAULT_SHORT_SIDE_CAP,
    info: VideoInfo | None = None,
) -> np.ndarray:
    """Frames ``indices`` as (T, H, W, 3) uint8 RGB: :func:`decode_frames` without the times."""
    return decode_frames(path, indices, short_side_cap=short_side_cap, info=info).frames


# Same frames, same bytes. mbtree=0: on AVX-512 CPUs, libx264's macroblock-tree rate control gave
# different bitstreams for the same frames depending on what the process had done before (a decode in
# between was enough). threads=1: the default thread count follows the core count, and more than one
# x264 thread changes the output, so files would differ between machines. Written as x264-params so it
# overrides libavcodec's thread_count whatever PyAV sets there.
H264_OPTIONS: dict[str, str] = {"crf": "18", "preset": "veryfast", "x264-params": "mbtree=0:threads=1"}


def write_h264(path: str | os.PathLike, video: np.ndarray, fps: float, *, faststart: bool = False) -> Path:
    """Write (T, H, W, 3) uint8 RGB frames as an H.264 MP4 (libx264, yuv420p, :data:`H264_OPTIONS`).

    The same frames give the same bytes, in any process on any machine with the same libx264.
    ``faststart`` moves the index to the front, so a browser starts playing before the whole file has
    arrived. H and W must be even (4:2:0 chroma halves both)."""
    from fractions import Fraction

    import av

    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8 or len(video) == 0:
        raise ValueError(f"video must be (T, H, W, 3) uint8 RGB with T >= 1; got {video.shape} {video.dtype}")
    if video.shape[1] % 2 or video.shape[2] % 2:
        raise ValueError(f"H.264 (4:2:0) needs an even width and height; got {video.shape[2]}x{video.shape[1]}: "
                         "pad or crop the frames by one pixel")
    if not fps > 0:
        raise ValueError(f"fps must be positive; got {fps}")
    path = Path(path)
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", format="mp4", options=options) as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001),
                                      options=dict(H264_OPTIONS))
        stream.width, stream.height, stream.pix_fmt = video.shape[2], video.shape[1], "yuv420p"
        for frame in video:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
