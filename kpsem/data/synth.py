"""The synthetic demo data set (SPEC section 5): classes that differ only in how key parts move.

Every video shows one actor: a striped oval body with two round parts, in colours drawn from the
same distribution for every class, over a textured background. A single frame says nothing about the
class; only the motion does. Classes come in pairs that differ in direction, order or destination:

- ``rise`` / ``fall`` / ``slide_left`` / ``slide_right``: one part moves up, down, left or right
  relative to the (slowly drifting) body;
- ``approach`` / ``separate``: the two parts move towards or away from each other;
- ``turn_cw`` / ``turn_ccw``: one part turns three quarters of a circle around the body;
- ``jump_within`` / ``jump_adjacent``: the whole actor jumps three times, staying inside one quadrant
  of the frame, or back and forth between two side-by-side quadrants;
- ``hop_cw`` / ``hop_ccw`` / ``hop_diagonal``: three large jumps visiting the quadrants clockwise,
  anticlockwise, or back and forth between diagonally opposite quadrants (these differ only in the
  order or destination of jumps across region borders, which is what KPSEM's cross-region shifts see).

Medium and hard add smaller look-alike distractors performing another class's motion, an occluding
bar sweeping across, camera panning, pixel noise and smaller, more varied motions. Each video is
seeded by (seed, class, split, number), so the same seed gives the same frames (and, with the same PyAV
build, the same files) and changing how many training videos there are leaves the validation and test
videos as they were.

Output: ``<out>/<class>/<class>_<split>_<nnn>.mp4`` (H.264 through PyAV; MJPEG ``.avi`` through
OpenCV when PyAV has no H.264 encoder; or JPEG frame folders), ``classes.txt``, ``train.txt``,
``val.txt``, ``test.txt`` (lines ``<class>/<file> <label>``) and ``synth.json`` (config and counts):
the ``folders`` layout that :func:`kpsem.data.open_dataset` reads.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from kpsem.data.datasets import DatasetIndex, open_dataset
from kpsem.io import atomic_write_text

__all__ = ["SYNTH_CLASSES", "DIFFICULTIES", "SynthConfig", "SynthSummary", "generate", "render_video",
           "default_format", "write_video"]

SYNTH_CLASSES: dict[str, str] = {
    "rise": "one part moves up relative to the body",
    "fall": "one part moves down relative to the body",
    "slide_left": "one part moves left relative to the body",
    "slide_right": "one part moves right relative to the body",
    "approach": "the two parts move towards each other",
    "separate": "the two parts move away from each other",
    "turn_cw": "one part turns clockwise around the body",
    "turn_ccw": "one part turns anticlockwise around the body",
    "jump_within": "the actor jumps three times inside one quadrant",
    "jump_adjacent": "the actor jumps back and forth between two side-by-side quadrants",
    "hop_cw": "the actor visits the quadrants clockwise in three jumps",
    "hop_ccw": "the actor visits the quadrants anticlockwise in three jumps",
    "hop_diagonal": "the actor jumps back and forth between opposite quadrants",
}
_SPLITS = ("train", "val", "test")
_FORMATS = ("auto", "mp4", "avi", "jpg")


@dataclass(frozen=True)
class _Difficulty:
    distractors: tuple[int, int]  # min and max look-alike distractors per video
    distractor_scale: tuple[float, float]  # their size relative to the actor
    occluder: float  # probability of an occluding bar sweeping across
    pan: float  # largest camera pan over the video, as a fraction of the frame side
    noise: float  # std of the pixel noise (0..255)
    amplitude: tuple[float, float]  # motion amplitude multiplier range
    scale: tuple[float, float]  # actor size multiplier range
    contrast: float  # background texture contrast (0..1)


DIFFICULTIES: dict[str, _Difficulty] = {
    "easy": _Difficulty((0, 0), (0.6, 0.6), 0.0, 0.0, 2.0, (1.0, 1.0), (1.0, 1.1), 0.25),
    "medium": _Difficulty((1, 2), (0.6, 0.8), 0.5, 0.08, 6.0, (0.7, 1.0), (0.85, 1.1), 0.45),
    "hard": _Difficulty((2, 3), (0.7, 0.95), 0.9, 0.15, 10.0, (0.5, 0.85), (0.75, 1.05), 0.6),
}


@dataclass
class SynthConfig:
    """What to generate; the defaults make the demo data set the shipped checkpoints were trained on."""

    classes: tuple[str, ...] = tuple(SYNTH_CLASSES)  # class names, from SYNTH_CLASSES, in label order
    videos_per_class: int = 40  # videos per class over all splits
    frames: int = 32  # frames per video (a 16-frame clip at interval 2 spans 31)
    size: int = 128  # frame side in pixels (square; even, for H.264)
    difficulty: str = "medium"  # "easy", "medium" or "hard"
    seed: int = 0  # same seed, same frames (and the same files with the same PyAV build)
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)  # train, val, test fractions of videos_per_class
    train_per_class: int | None = None  # cap on training videos per class (a low-data regime), None = no cap
    fps: int = 12  # frame rate written into the files
    format: str = "auto"  # "mp4" (H.264), "avi" (MJPEG), "jpg" (frame folders) or "auto" (mp4 if possible)
    workers: int = 0  # processes; 0 = up to 2 (the CPU count when lower)

    def __post_init__(self) -> None:
        self.classes = tuple(self.classes)
        unknown = [c for c in self.classes if c not in SYNTH_CLASSES]
        if unknown or len(set(self.classes)) != len(self.classes) or len(self.classes) < 2:
            raise ValueError(f"classes must be at least 2 distinct names from {', '.join(SYNTH_CLASSES)}; "
                             f"got {list(self.classes)}")
        if self.difficulty not in DIFFICULTIES:
            raise ValueError(f"difficulty must be one of {', '.join(DIFFICULTIES)}; got {self.difficulty!r}")
        if self.size < 32 or self.size % 2:
            raise ValueError(f"size must be an even number of pixels, at least 32; got {self.size}")
        if self.frames < 8:
            raise ValueError(f"frames must be at least 8 (three jumps need room); got {self.frames}")
        if self.format not in _FORMATS:
            raise ValueError(f"format must be one of {', '.join(_FORMATS)}; got {self.format!r}")
        self.split = tuple(float(f) for f in self.split)  # type: ignore[assignment]
        if len(self.split) != 3 or min(self.split) < 0 or abs(sum(self.split) - 1) > 1e-6:
            raise ValueError(f"split needs three fractions >= 0 that sum to 1 (train, val, test); got {self.split}")
        counts = self.split_counts()
        if min(counts.values()) < 1:
            raise ValueError(f"videos_per_class={self.videos_per_class} with split {self.split} leaves a split "
                             f"empty ({counts}); use more videos per class")

    def split_counts(self) -> dict[str, int]:
        """Videos per class in each split."""
        n = self.videos_per_class
        n_train = round(self.split[0] * n)
        n_val = round(self.split[1] * n)
        counts = {"train": n_train, "val": n_val, "test": n - n_train - n_val}
        if self.train_per_class is not None:
            counts["train"] = min(counts["train"], self.train_per_class)
        return counts


@dataclass
class SynthSummary:
    """What :func:`generate` wrote."""

    out_dir: Path  # the data set root (folders layout)
    class_names: list[str]  # label i is class_names[i]
    counts: dict[str, int]  # videos per split over all classes
    format: str  # "mp4", "avi" or "jpg"
    seconds: float  # wall time of the generation
    config: SynthConfig = field(repr=False)  # the resolved config

    def index(self, split: str = "train") -> DatasetIndex:
        """The written split, as :func:`kpsem.data.open_dataset` reads it."""
        return open_dataset(self.out_dir, split=split, layout="folders")


def default_format() -> str:
    """"mp4" when PyAV can encode H.264 here, else "avi" (MJPEG through OpenCV)."""
    try:
        import av

        return "mp4" if "libx264" in av.codecs_available or "libopenh264" in av.codecs_available else "avi"
    except ImportError:
        return "avi"


# ---------------------------------------------------------------------------------------------- drawing


class _Canvas:
    """Float RGB frames (T, S, S, 3) and coordinate grids, composited layer by layer."""

    def __init__(self, frames: int, size: int) -> None:
        self.size = size
        grid = np.arange(size, dtype=np.float32)
        self.yy = grid[None, :, None]  # (1, S, 1)
        self.xx = grid[None, None, :]  # (1, 1, S)
        self.image = np.zeros((frames, size, size, 3), dtype=np.float32)  # (T, S, S, 3)

    def ellipse_alpha(self, cy: np.ndarray, cx: np.ndarray, ry: float, rx: float) -> np.ndarray:
        """Anti-aliased filled ellipse per frame; cy, cx (T,) -> alpha (T, S, S)."""
        dy = (self.yy - cy[:, None, None]) / ry
        dx = (self.xx - cx[:, None, None]) / rx
        return np.clip((1 - np.sqrt(dy * dy + dx * dx)) * min(ry, rx) + 0.5, 0, 1)

    def paint(self, alpha: np.ndarray, colour: np.ndarray | Callable[[tuple], np.ndarray]) -> None:
        """Composite ``colour`` with ``alpha`` (T, S, S), touching only the pixels the shape covers.

        colour: (3,), an array that broadcasts to (T, S, S, 3), or a function of the covered pixels'
        (t, y, x) index arrays that returns their (P, 3) colours.
        """
        where = np.nonzero(alpha > 0)  # 3 x (P,)
        a = alpha[where][:, None]  # (P, 1)
        if callable(colour):
            paint = colour(where)
        elif np.ndim(colour) == 1:
            paint = colour
        else:
            paint = np.broadcast_to(colour, self.image.shape)[where]
        self.image[where] = self.image[where] * (1 - a) + a * paint


def _texture(rng: np.random.Generator, size: int, contrast: float) -> np.ndarray:
    """A coloured texture (size, size, 3) in 0..255: smooth blotches plus two oriented gratings."""
    import cv2

    base = rng.uniform(40, 215, 3).astype(np.float32)
    blotch = cv2.resize(rng.normal(0, 1, (6, 6, 3)).astype(np.float32), (size, size),
                        interpolation=cv2.INTER_CUBIC)
    grid = np.arange(size, dtype=np.float32)
    yy, xx = grid[:, None], grid[None, :]
    waves = np.zeros((size, size), dtype=np.float32)
    for _ in range(2):
        angle, freq, phase = rng.uniform(0, np.pi), rng.uniform(0.08, 0.35), rng.uniform(0, 2 * np.pi)
        waves += np.sign(np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy) + phase))
    texture = base + contrast * (35 * blotch + 18 * waves[..., None] * rng.uniform(0.3, 1.0, 3))
    return np.clip(texture, 0, 255).astype(np.float32)


def _colour(rng: np.random.Generator) -> np.ndarray:
    """A saturated random colour (3,) in 0..255, from one distribution for actors and distractors alike."""
    hue = rng.uniform(0, 1)
    rgb = np.clip(np.abs(((hue * 6 + np.array([0.0, 4.0, 2.0])) % 6) - 3) - 1, 0, 1)
    return (rgb * rng.uniform(150, 235) + rng.uniform(0, 40)).astype(np.float32)


_QUADRANTS = ((0, 0), (0, 1), (1, 1), (1, 0))  # (row, col) in clockwise order: TL, TR, BR, BL


def _segments(rng: np.random.Generator, frames: int, pieces: int) -> np.ndarray:
    """Which of ``pieces`` consecutive segments each frame falls in; every segment >= frames / (2 pieces)."""
    lengths = rng.dirichlet(np.full(pieces, 4.0)) * frames * 0.5 + frames * 0.5 / pieces
    bounds = np.round(np.cumsum(lengths)[:-1]).astype(int)
    return np.searchsorted(bounds, np.arange(frames), side="right")  # (T,)


def _trajectory(name: str, rng: np.random.Generator, frames: int, size: int, reach: float, amplitude: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Body centre (T, 2), part A offset (T, 2) and part B offset (T, 2), as (y, x) pixels."""
    t = np.linspace(0, 1, frames, dtype=np.float32)[:, None]  # (T, 1) progress through the video
    theta = rng.uniform(0, 2 * np.pi)
    rest = reach * np.array([np.sin(theta), np.cos(theta)], dtype=np.float32)  # part A's rest offset
    a_off = np.repeat(rest[None], frames, 0)
    b_off = np.repeat(-rest[None], frames, 0)
    margin = 0.2 * size
    if name.startswith(("jump_", "hop_")):
        half = size / 2
        pieces = 4
        seg = _segments(rng, frames, pieces)
        q0 = int(rng.integers(4))
        orders = {
            "hop_cw": [q0, (q0 + 1) % 4, (q0 + 2) % 4, (q0 + 3) % 4],
            "hop_ccw": [q0, (q0 - 1) % 4, (q0 - 2) % 4, (q0 - 3) % 4],
            "hop_diagonal": [q0, (q0 + 2) % 4] * 2,
            "jump_within": [q0] * 4,
        }
        if name == "jump_adjacent":
            q1 = (q0 + (1 if rng.random() < 0.5 else -1)) % 4
            orders[name] = [q0, q1] * 2
        quads = [_QUADRANTS[q] for q in orders[name]]
        lo, hi = 0.5 * margin + reach * 0.6, half - reach * 0.6 - 0.1 * margin  # centre range inside a quadrant
        spots = rng.uniform(lo, max(lo + 1, hi), (pieces, 2)).astype(np.float32)
        if name == "jump_within":  # jumps inside the quadrant must be visible: spread the spots apart
            spots = np.array([[lo, lo], [hi, hi], [lo, hi], [hi, lo]], dtype=np.float32)[rng.permutation(4)]
            spots += rng.normal(0, 0.03 * size, spots.shape).astype(np.float32)
        centres = np.array([[r * half, c * half] for r, c in quads], dtype=np.float32) + spots  # (4, 2)
        body = centres[seg] + rng.normal(0, 0.004 * size, (frames, 2)).cumsum(0).astype(np.float32)
        return body, a_off, b_off
    start = rng.uniform(margin + reach, size - margin - reach, 2).astype(np.float32)
    drift = rng.normal(0, 0.06 * size, 2).astype(np.float32)
    body = start + (t - 0.5) * drift
    travel = 1.1 * reach * amplitude
    if name in ("rise", "fall", "slide_left", "slide_right"):
        direction = {"rise": (-1, 0), "fall": (1, 0), "slide_left": (0, -1), "slide_right": (0, 1)}[name]
        a_off = rest + (t - 0.5) * travel * np.array(direction, dtype=np.float32)
    elif name in ("approach", "separate"):
        r = (1.3 - 1.0 * t) if name == "approach" else (0.3 + 1.0 * t)  # (T, 1) distance from the body
        r = 1 + (r - 0.8) * amplitude
        a_off, b_off = rest * r, -rest * r
    elif name in ("turn_cw", "turn_ccw"):
        sign = 1 if name == "turn_cw" else -1  # y points down: increasing angle turns clockwise on screen
        angle = theta + sign * 1.5 * np.pi * amplitude * (t[:, 0] - 0.5)
        a_off = reach * np.stack([np.sin(angle), np.cos(angle)], 1).astype(np.float32)
    else:
        raise ValueError(f"unknown synthetic class {name!r}")
    return body, a_off, b_off


def _draw_actor(canvas: _Canvas, name: str, rng: np.random.Generator, scale: float, amplitude: float) -> None:
    size, frames = canvas.size, canvas.image.shape[0]
    body_r = np.array([0.11, 0.085]) * size * scale * rng.uniform(0.9, 1.1, 2)  # (ry, rx)
    part_r = 0.05 * size * scale
    reach = 0.2 * size * scale
    body, a_off, b_off = _trajectory(name, rng, frames, size, reach, amplitude)
    body_colour, part_colour = _colour(rng), _colour(rng)
    stripes = rng.uniform(0.25, 0.5)  # stripe frequency on the body
    alpha = canvas.ellipse_alpha(body[:, 0], body[:, 1], *body_r)

    def striped(where: tuple) -> np.ndarray:  # stripes that move with the body
        t, y, x = where
        relative = (y - body[t, 0]) + 0.6 * (x - body[t, 1])  # (P,)
        return (0.8 + 0.2 * np.sign(np.sin(stripes * relative)))[:, None] * body_colour

    canvas.paint(alpha, striped)
    for offset in (b_off, a_off):
        centre = body + offset
        canvas.paint(canvas.ellipse_alpha(centre[:, 0], centre[:, 1], part_r, part_r), part_colour)


def render_video(name: str, rng: np.random.Generator, *, frames: int = 32, size: int = 128,
                 difficulty: str = "medium", classes: tuple[str, ...] = tuple(SYNTH_CLASSES)) -> np.ndarray:
    """One video of class ``name`` as (T, S, S, 3) uint8 RGB; distractors move like other ``classes``."""
    level = DIFFICULTIES[difficulty]
    canvas = _Canvas(frames, size)
    pan = level.pan * size
    big = _texture(rng, size + int(np.ceil(pan)) + 2, level.contrast)
    start, end = rng.uniform(0, pan, 2), rng.uniform(0, pan, 2)
    path = start + np.linspace(0, 1, frames)[:, None] * (end - start)
    path = np.clip(np.round(path), 0, big.shape[0] - size).astype(int)  # (T, 2) top-left of the view
    for t, (y, x) in enumerate(path):
        canvas.image[t] = big[y:y + size, x:x + size]
    others = [c for c in classes if c != name] or [name]
    for _ in range(int(rng.integers(level.distractors[0], level.distractors[1] + 1))):
        other = others[int(rng.integers(len(others)))]
        _draw_actor(canvas, other, rng, rng.uniform(*level.distractor_scale), rng.uniform(*level.amplitude))
    _draw_actor(canvas, name, rng, rng.uniform(*level.scale), rng.uniform(*level.amplitude))
    if rng.random() < level.occluder:
        width = rng.uniform(0.12, 0.22) * size
        sweep = rng.uniform(-width, size + width, 2)
        centre = np.linspace(sweep[0], sweep[1], frames, dtype=np.float32)
        axis = canvas.xx if rng.random() < 0.5 else canvas.yy
        alpha = np.clip(width / 2 - np.abs(axis - centre[:, None, None]) + 0.5, 0, 1)  # (T, S, S)
        alpha = np.broadcast_to(alpha, canvas.image.shape[:3])
        canvas.paint(alpha, _texture(rng, size, 0.8)[None])
    image = canvas.image
    image += level.noise * rng.standard_normal(image.shape, dtype=np.float32)
    image *= rng.uniform(0.97, 1.03, (frames, 1, 1, 1)).astype(np.float32)  # flicker
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------- writing


def _write_mp4(path: Path, video: np.ndarray, fps: int) -> None:
    from kpsem.data.video import write_h264  # one H.264 writer for the data set and the explanation videos

    write_h264(path, video, fps)


def _write_avi(path: Path, video: np.ndarray, fps: int) -> None:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (video.shape[2], video.shape[1]))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write MJPEG to {path}")
    for frame in video:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def _write_jpg(path: Path, video: np.ndarray, fps: int) -> None:
    import cv2

    path.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(video, 1):
        cv2.imwrite(str(path / f"{t:05d}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 95])


_WRITERS: dict[str, tuple[str, Callable[[Path, np.ndarray, int], None]]] = {
    "mp4": (".mp4", _write_mp4), "avi": (".avi", _write_avi), "jpg": ("", _write_jpg),
}


def write_video(path: str | os.PathLike, video: np.ndarray, fps: int = 12) -> Path:
    """Write (T, H, W, 3) uint8 RGB as ``.mp4`` (H.264), ``.avi`` (MJPEG) or, without a suffix, JPEG frames.

    For tests and tools that need a real video; H and W must be even for ``.mp4``.
    """
    path = Path(path)
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
        raise ValueError(f"video must be (T, H, W, 3) uint8 RGB; got {video.shape} {video.dtype}")
    fmt = {".mp4": "mp4", ".avi": "avi", "": "jpg"}.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"write_video writes .mp4, .avi or a frame folder (no suffix); got {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    _WRITERS[fmt][1](path, video, fps)
    return path


@dataclass(frozen=True)
class _Job:
    out_dir: str
    relative: str
    name: str
    seed: tuple[int, ...]
    config: SynthConfig
    format: str


def _run_job(job: _Job) -> str:
    rng = np.random.default_rng(job.seed)
    cfg = job.config
    video = render_video(job.name, rng, frames=cfg.frames, size=cfg.size, difficulty=cfg.difficulty,
                         classes=cfg.classes)
    _WRITERS[job.format][1](Path(job.out_dir) / job.relative, video, cfg.fps)
    return job.relative


def _prepare(out_dir: Path) -> None:
    """Refuse to write into a folder that holds something other than an earlier synth output."""
    if out_dir.exists() and any(out_dir.iterdir()):
        if not (out_dir / "synth.json").is_file():
            raise ValueError(f"{out_dir} is not empty and holds no synth.json; choose a new or empty folder")
        old = json.loads((out_dir / "synth.json").read_text())
        for name in old.get("class_names", []):
            if name in SYNTH_CLASSES:
                shutil.rmtree(out_dir / name, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)


def generate(out_dir: str | os.PathLike, config: SynthConfig | None = None, *, progress: bool = False
             ) -> SynthSummary:
    """Write the synthetic data set to ``out_dir`` (folders layout) and return what was written."""
    config = config or SynthConfig()
    out_dir = Path(out_dir)
    fmt = default_format() if config.format == "auto" else config.format
    if fmt == "mp4" and default_format() != "mp4":
        raise ValueError("format 'mp4' needs PyAV with the libx264 encoder, absent here; use format='avi'")
    _prepare(out_dir)
    started = time.perf_counter()
    counts = config.split_counts()
    ext = _WRITERS[fmt][0]
    jobs: list[_Job] = []
    lists: dict[str, list[str]] = {s: [] for s in _SPLITS}
    class_ids = {name: i for i, name in enumerate(SYNTH_CLASSES)}  # stable seeds whatever subset is chosen
    for label, name in enumerate(config.classes):
        (out_dir / name).mkdir(exist_ok=True)
        for split_code, split in enumerate(_SPLITS):
            for number in range(counts[split]):
                relative = f"{name}/{name}_{split}_{number:03d}{ext}"
                seed = (config.seed, class_ids[name], split_code, number)
                jobs.append(_Job(str(out_dir), relative, name, seed, config, fmt))
                lists[split].append(f"{relative} {label}")
    workers = config.workers or min(2, os.cpu_count() or 1)
    for _ in _progress(_map(jobs, workers), total=len(jobs), enabled=progress):
        pass
    atomic_write_text(out_dir / "classes.txt", "\n".join(config.classes) + "\n")
    for split, lines in lists.items():
        atomic_write_text(out_dir / f"{split}.txt", "\n".join(lines) + "\n")
    seconds = time.perf_counter() - started
    totals = {split: len(lines) for split, lines in lists.items()}
    meta = {"generator": "kpsem.data.synth", "config": asdict(config), "format": fmt, "class_names":
            list(config.classes), "counts": totals, "descriptions": {c: SYNTH_CLASSES[c] for c in config.classes}}
    atomic_write_text(out_dir / "synth.json", json.dumps(meta, indent=2) + "\n")
    return SynthSummary(out_dir, list(config.classes), totals, fmt, seconds, config)


def _map(jobs: list[_Job], workers: int) -> Iterator[str]:
    if workers <= 1 or len(jobs) < 4:
        yield from map(_run_job, jobs)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_run_job, jobs, chunksize=4)


def _progress(items: Iterator[str], *, total: int, enabled: bool) -> Iterator[str]:
    if not enabled:
        return items
    from tqdm import tqdm

    return iter(tqdm(items, total=total, unit="video", desc="synth"))
