"""The analysed clip as a video: both models side by side, as an H.264 MP4 a browser plays.

Each frame of the video is one frame of the clip, laid out in a 2 x 2 grid of panels:

====================================  ====================================
baseline, Grad-CAM                    MF-KPSEM, Grad-CAM
baseline minus MF-KPSEM (difference)  MF-KPSEM, key points and shifts
====================================  ====================================

Both CAMs share one colour scale (the pair's maximum) and the difference one symmetric range fitted
to the whole clip (:func:`kpsem.explain.draw.difference_limit`), so a colour means the same thing in every
panel and every frame; both scales are drawn with ticks under the grid. Computing (:func:`plan_video`: the layout, the
ranges, the texts) is kept apart from drawing (:func:`draw_video`), which calls only the public
functions of :mod:`kpsem.explain.draw`; :func:`write_h264` of :mod:`kpsem.data.video` encodes.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kpsem.explain.analysis import ClipAnalysis, PairAnalysis

__all__ = [
    "VIDEO_FPS",
    "VideoLayout",
    "VideoPlan",
    "video_layout",
    "frame_captions",
    "plan_video",
    "draw_video",
    "write_explanation_video",
    "explanation_video_bytes",
]

VIDEO_FPS = 4.0  # frames a second: a 16-frame clip plays in 4 s, slow enough to follow the arrows
_PANEL_SIDE = 256  # pixels a panel aims for: clip pixels are repeated a whole number of times to reach it




@dataclass(frozen=True)
class VideoLayout:
    """Where things go in one frame of the video, in pixels. Width and height are even (H.264 4:2:0)."""

    clip_size: int  # S: the clip's side in pixels
    scale: int  # each clip pixel drawn as scale x scale pixels
    gap: int = 8  # between panels and around the grid
    label: int = 22  # text band above each panel
    header: int = 26  # the frame's number and time, above the grid
    footer: int = 70  # the two colour bars, below the grid
    columns: int = 2
    rows: int = 2

    @property
    def panel(self) -> int:
        """A panel's side in pixels."""
        return self.clip_size * self.scale

    @property
    def width(self) -> int:
        raw = self.columns * self.panel + (self.columns + 1) * self.gap
        return raw + raw % 2

    @property
    def height(self) -> int:
        raw = self.header + self.rows * (self.label + self.panel) + self.rows * self.gap + self.footer
        return raw + raw % 2

    def panel_origin(self, row: int, column: int) -> tuple[int, int]:
        """(top, left) of a panel's image (its label band lies just above it)."""
        top = self.header + row * (self.label + self.panel + self.gap) + self.label
        return top, self.gap + column * (self.panel + self.gap)


def video_layout(clip_size: int, *, panel_side: int = _PANEL_SIDE) -> VideoLayout:
    """The layout for S x S clips: whole-pixel upscaling to about ``panel_side`` (never below the clip)."""
    if clip_size < 1:
        raise ValueError(f"clip_size must be at least 1; got {clip_size}")
    return VideoLayout(clip_size=clip_size, scale=max(1, round(panel_side / clip_size)))


def frame_captions(num_frames: int, indices: Sequence[int] | None = None,
                   times: Sequence[float] | None = None) -> list[str]:
    """One line per clip frame: its place in the clip and, when known, the video frame and time it shows."""
    lines = []
    for t in range(num_frames):
        text = f"clip frame {t + 1}/{num_frames}"
        if indices is not None:
            text += f" · video frame {int(indices[t])}"
        if times is not None:
            text += f" · {float(times[t]):.2f} s"
        lines.append(text)
    return lines


@dataclass(frozen=True)
class VideoPlan:
    """Everything :func:`draw_video` needs beyond the pixels: computed once, from the analyses only."""

    layout: VideoLayout
    names: tuple[str, str]  # the two models as the figures name them
    labels: tuple[str, str, str, str]  # panel texts, cut to fit when drawn: baseline CAM, KPSEM CAM, difference, points
    captions: tuple[str, ...]  # one per frame (header line)
    cam_scale: float  # the pair's shared maximum: raw CAM units at the top of the CAM colour bar
    limit: float  # the difference's symmetric range, in units of the shared maximum
    cmap: str
    difference_cmap: str
    alpha: float


def plan_video(pair: PairAnalysis, *, difference: PairAnalysis | None = None, names: Sequence[str] | None = None,
               captions: Sequence[str] | None = None, cmap: str | None = None, difference_cmap: str | None = None,
               alpha: float = 0.5, key_point_sets: Sequence[int] = (0,)) -> VideoPlan:
    """The layout, the colour ranges and the texts of the video of ``pair``.

    ``difference``: a pair whose two CAMs explain one class (its difference row is drawn); by default
    ``pair`` itself, which must then explain one class with both models (see
    :func:`~kpsem.explain.analysis.common_target`)."""
    from kpsem.explain.draw import DEFAULT_CMAP, DEFAULT_DIFFERENCE_CMAP, difference_limit

    same = difference if difference is not None else pair
    if same.difference is None:
        raise ValueError(
            f"the two CAMs explain different classes ({pair.baseline.class_names[pair.baseline.target]!r} and "
            f"{pair.kpsem.class_names[pair.kpsem.target]!r}), so their difference means nothing; pass difference= "
            "a pair analysed for one class (kpsem.explain.analysis.common_target)")
    frames = pair.baseline.num_frames
    if same.baseline.num_frames != frames or same.baseline.size != pair.baseline.size:
        raise ValueError(f"the difference pair has {same.baseline.num_frames} frames of {same.baseline.size} px; the "
                         f"pair has {frames} of {pair.baseline.size} px: analyse the same clip")
    captions = list(captions) if captions is not None else frame_captions(frames)
    if len(captions) != frames:
        raise ValueError(f"captions has {len(captions)} lines; the clip has {frames} frames")
    layout = video_layout(pair.baseline.size)
    first, second = (tuple(names) if names is not None else (pair.baseline.model_name, pair.kpsem.model_name))

    def cam_label(name: str, analysis: ClipAnalysis) -> str:
        top = analysis.topk[0]
        return f"{name}: {top.name} {top.probability:.0%} · CAM of {analysis.class_names[analysis.target]}"

    kp = pair.kpsem
    sets = ", ".join(str(g) for g in key_point_sets)
    points = f"{second}: key points, shifts (set {sets})" if kp.has_kpsem else f"{second}: no KPSEM, no key points"
    labels = (cam_label(first, pair.baseline), cam_label(second, kp),
              f"{first} minus {second}, CAM of {same.baseline.class_names[same.baseline.target]}", points)
    return VideoPlan(
        layout=layout, names=(first, second), labels=labels,
        captions=tuple(captions), cam_scale=float(pair.shared_scale), limit=difference_limit(same.difference),
        cmap=cmap or DEFAULT_CMAP, difference_cmap=difference_cmap or DEFAULT_DIFFERENCE_CMAP, alpha=alpha)


# ---- drawing ------------------------------------------------------------------------------------------


def _text_band(text: str, width: int, height: int, *, size: float, bold: bool = False) -> np.ndarray:
    """``text`` in dark grey on white, left-aligned, as uint8 RGB (height, width), cut with an ellipsis
    where it would run past the band: drawn by matplotlib's Agg with its bundled font, so any script
    and no font file from outside."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width / 100, height / 100), dpi=100, facecolor="white")
    canvas = FigureCanvasAgg(fig)
    artist = fig.text(2 / width, 0.5, text, va="center", ha="left", fontsize=size * 72 / 100, color="#222222",
                      fontweight="bold" if bold else "normal")
    renderer = canvas.get_renderer()
    shown = text
    while len(shown) > 1 and artist.get_window_extent(renderer).x1 > width - 2:
        shown = shown[:-2] + "…"  # one character fewer each time, the ellipsis kept
        artist.set_text(shown)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _colour_bars(plan: VideoPlan) -> np.ndarray:
    """The footer: the CAM scale (0 .. 1 of the shared maximum) and the difference's, with ticks and units."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    layout = plan.layout
    width, height = layout.width, layout.footer
    fig = Figure(figsize=(width / 100, height / 100), dpi=100, facecolor="white")
    half = (layout.panel / width, 14 / height)
    limit = plan.limit if plan.limit > 0 else 1.0
    bars = (
        (0, Normalize(0.0, 1.0), plan.cmap, [0.0, 0.5, 1.0],
         f"Grad-CAM, both models on one scale (1 = {plan.cam_scale:.3g})"),
        (1, Normalize(-limit, limit), plan.difference_cmap, [-limit, 0.0, limit],
         f"{plan.names[0]} minus {plan.names[1]} (99th pct. of |diff.|)"),
    )
    for column, norm, cmap, ticks, label in bars:
        left = (layout.gap + column * (layout.panel + layout.gap)) / width
        ax = fig.add_axes((left, 1 - (8 + half[1] * height) / height, half[0], half[1]))
        bar = fig.colorbar(ScalarMappable(norm=norm, cmap=colormaps[cmap]), cax=ax, orientation="horizontal")
        bar.set_ticks(ticks)
        bar.ax.tick_params(labelsize=7, length=2, pad=1)
        texts = bar.ax.set_xticklabels([f"{v:+.2g}" if column and v else f"{v:.2g}" for v in ticks])
        texts[0].set_horizontalalignment("left")  # the end labels stay over their bar, not over the other
        texts[-1].set_horizontalalignment("right")
        bar.set_label(label, fontsize=7, labelpad=1)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def draw_video(plan: VideoPlan, pair: PairAnalysis, display: np.ndarray, *, difference: PairAnalysis | None = None,
               keypoints=None) -> np.ndarray:  # noqa: ANN001 - kpsem.explain.draw.KeyPointOptions | None
    """The video's frames, (T, height, width, 3) uint8, from ``plan_video``'s plan and the clip's pixels
    ``display`` (T, S, S, 3): the panels of the module docstring, the labels, the captions, the colour bars."""
    from kpsem.explain.draw import KeyPointOptions, cam_overlay, difference_overlay, render_frame

    layout = plan.layout
    frames, size = pair.baseline.num_frames, layout.clip_size
    if display.shape != (frames, size, size, 3) or display.dtype != np.uint8:
        raise ValueError(f"display must be uint8 ({frames}, {size}, {size}, 3), the clip's pixels; got "
                         f"{display.dtype} {display.shape}")
    same = difference if difference is not None else pair
    assert same.difference is not None  # plan_video refused a pair without one
    kp = pair.kpsem
    options = keypoints if keypoints is not None else KeyPointOptions()
    static = np.full((layout.height, layout.width, 3), 255, np.uint8)
    for k, text in enumerate(plan.labels):
        top, left = layout.panel_origin(*divmod(k, 2))
        static[top - layout.label:top, left:left + layout.panel] = _text_band(
            text, layout.panel, layout.label, size=12)
    static[layout.height - layout.footer:] = _colour_bars(plan)
    out = np.empty((frames, layout.height, layout.width, 3), np.uint8)
    scale = layout.scale
    for t in range(frames):
        frame = display[t]
        panels = (
            render_frame(cam_overlay(frame, pair.baseline_shared[t], cmap=plan.cmap, alpha=plan.alpha), scale=scale),
            render_frame(cam_overlay(frame, pair.kpsem_shared[t], cmap=plan.cmap, alpha=plan.alpha), scale=scale),
            render_frame(difference_overlay(frame, same.difference[t], cmap=plan.difference_cmap,
                                            limit=plan.limit if plan.limit > 0 else 1.0), scale=scale),
            render_frame(frame, kp if kp.has_kpsem else None, t, keypoints=options if kp.has_kpsem else None,
                         scale=scale),
        )
        image = out[t]
        image[:] = static
        image[:layout.header] = _text_band(plan.captions[t], layout.width, layout.header, size=14, bold=True)
        for k, panel in enumerate(panels):
            top, left = layout.panel_origin(*divmod(k, 2))
            image[top:top + layout.panel, left:left + layout.panel] = panel
    return out


def write_explanation_video(path: str | os.PathLike, pair: PairAnalysis, display: np.ndarray, *,
                            difference: PairAnalysis | None = None, names: Sequence[str] | None = None,
                            captions: Sequence[str] | None = None, keypoints=None,  # noqa: ANN001 - KeyPointOptions
                            cmap: str | None = None, difference_cmap: str | None = None, alpha: float = 0.5,
                            fps: float = VIDEO_FPS) -> Path:
    """Plan, draw and encode the video of ``pair`` on ``display`` to ``path`` (an H.264 MP4, index first)."""
    from kpsem.data.video import write_h264

    sets = tuple(keypoints.sets) if keypoints is not None else (0,)
    plan = plan_video(pair, difference=difference, names=names, captions=captions, cmap=cmap,
                      difference_cmap=difference_cmap, alpha=alpha, key_point_sets=sets)
    frames = draw_video(plan, pair, display, difference=difference, keypoints=keypoints)
    return write_h264(path, frames, fps, faststart=True)


def explanation_video_bytes(pair: PairAnalysis, display: np.ndarray, **options) -> bytes:  # noqa: ANN003
    """The MP4 of :func:`write_explanation_video` as bytes (for a download button); same input, same bytes."""
    with tempfile.TemporaryDirectory(prefix="kpsem-video-") as folder:
        return write_explanation_video(Path(folder) / "clip.mp4", pair, display, **options).read_bytes()
