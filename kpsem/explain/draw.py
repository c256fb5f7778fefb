"""Drawing, kept apart from computing: Grad-CAM overlays, split lines, key points and shift arrows.

Two kinds of output share one code path: ``draw_*`` functions add matplotlib artists to an Axes that
shows an S x S frame with ``imshow`` (pixel centres at integer coordinates, the convention of
:class:`~kpsem.explain.analysis.ClipAnalysis`), so paper figures stay vector graphics;
``render_keypoint_frame`` (and ``render_frame``) draw the same artists off-screen on a transparent
canvas and blend them over the upscaled frame, a numpy RGB image for the Streamlit app.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg", force=False)  # headless by default; a caller's own backend choice wins

import numpy as np
from matplotlib import colormaps
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrow

from kpsem.explain.analysis import ClipAnalysis

__all__ = [
    "REGION_COLOURS",
    "REGION_NAMES",
    "REGION_MARKERS",
    "DEFAULT_CMAP",
    "DEFAULT_DIFFERENCE_CMAP",
    "KeyPointOptions",
    "cam_overlay",
    "difference_overlay",
    "channel_scores",
    "select_channels",
    "region_of",
    "crossing_shifts",
    "draw_split_lines",
    "draw_keypoints",
    "upscale",
    "blend_layer",
    "render_frame",
    "render_keypoint_frame",
]

# Okabe-Ito colours (distinguishable with colour-vision deficiencies), region k = 2 * bottom + right.
REGION_COLOURS: tuple[str, ...] = ("#E69F00", "#56B4E9", "#009E73", "#CC79A7")
REGION_NAMES: tuple[str, ...] = ("top-left", "top-right", "bottom-left", "bottom-right")
# One shape per region as well as a colour, for print in greyscale and for readers who cannot tell the
# colours apart: two crosses (x, +) and two hollow outlines (triangle, square) that leave the frame visible.
REGION_MARKERS: tuple[str, ...] = ("x", "+", "^", "s")
# Perceptually uniform defaults: equal steps in a CAM read as equal steps in lightness (jet's bright bands
# invent edges), and viridis stays ordered in greyscale and for colour-vision deficiencies. Differences use
# Moreland's diverging coolwarm: a light middle for "no difference" and equally light ends.
DEFAULT_CMAP = "viridis"
DEFAULT_DIFFERENCE_CMAP = "coolwarm"


@dataclass
class KeyPointOptions:
    """What :func:`draw_keypoints` shows; the defaults make a readable first picture."""

    sets: tuple[int, ...] = (0,)  # AReSE sets to draw (G of them exist); each has its own split
    channels: tuple[int, ...] | None = None  # channels to draw; None: the top_channels by score
    top_channels: int = 5  # how many channels when choosing automatically (see channel_scores)
    regions: tuple[int, ...] = (0, 1, 2, 3)  # regions to draw (K = 1 models only have region 0)
    arrow_scale: float = 1.0  # multiply every shift's pixel length by this for visibility
    split_lines: bool = True  # draw the set's separation centre and quadrant borders
    highlight_crossing: bool = True  # mark shifts whose arrow ends in another region (dashed, outlined)
    marker_size: float = 7.0  # key point cross size, points
    line_width: float = 1.2  # arrow and split line width, points


def _colormap_rgb(values: np.ndarray, cmap: str) -> np.ndarray:
    """values in [0, 1] -> float RGB in [0, 1] through a matplotlib colour map."""
    return colormaps[cmap](np.clip(values, 0.0, 1.0))[..., :3]


def _check_frame(frame: np.ndarray, heat: np.ndarray) -> None:
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be an (H, W, 3) RGB image; got shape {frame.shape}")
    if heat.shape != frame.shape[:2]:
        raise ValueError(f"map of shape {heat.shape} does not match the frame's {frame.shape[:2]}")


def cam_overlay(
    frame: np.ndarray,
    cam: np.ndarray,
    *,
    cmap: str = DEFAULT_CMAP,
    alpha: float = 0.5,
    vmin: float = 0.0,
    vmax: float = 1.0,
) -> np.ndarray:
    """Blend a CAM onto a frame: uint8 (S, S, 3) and (S, S) -> uint8 (S, S, 3).

    ``vmin``/``vmax`` set the colour scale (pass a pair's ``shared_scale`` as vmax with raw maps to
    give two models one scale); ``alpha`` is the heat map's weight."""
    _check_frame(frame, cam)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha}")
    span = vmax - vmin if vmax > vmin else 1.0
    heat = _colormap_rgb((cam - vmin) / span, cmap)
    base = frame.astype(np.float64) / (255.0 if frame.dtype == np.uint8 else 1.0)
    return np.round(((1 - alpha) * base + alpha * heat) * 255).astype(np.uint8)


def difference_overlay(
    frame: np.ndarray, difference: np.ndarray, *, cmap: str = "RdBu_r", alpha: float = 0.6, limit: float = 1.0
) -> np.ndarray:
    """Blend a signed map (baseline minus KPSEM, in [-limit, limit]) with a diverging colour map:
    red where the baseline looks more, blue where KPSEM does.

    The default stays RdBu_r because the Explorer's colour bar (kpsem/app_support/render.py) draws that
    map; paper figures pass their style's ``difference_cmap`` (DEFAULT_DIFFERENCE_CMAP unless chosen)."""
    return cam_overlay(frame, difference, cmap=cmap, alpha=alpha, vmin=-limit, vmax=limit)


def _require_kpsem(analysis: ClipAnalysis) -> None:
    if not analysis.has_kpsem or analysis.internals is None:
        raise ValueError(f"{analysis.model_name} has no KPSEM module, so it has no key points or shifts to draw")


def channel_scores(analysis: ClipAnalysis, set_index: int = 0) -> np.ndarray:
    """(C,) how much shift each channel carries into RKPS for one set: the clip's mean over frame
    pairs of sum_k W_R[k] * |S[k]| (eq. 12 before the regions' vectors can cancel out)."""
    _require_kpsem(analysis)
    internals = analysis.internals
    assert internals is not None
    assert analysis.shifts_px is not None
    num_sets = internals.centres.shape[1]
    if not 0 <= set_index < num_sets:
        raise ValueError(f"set {set_index} does not exist; this model has sets 0..{num_sets - 1}")
    weights = internals.regional_weights[0, set_index].numpy()  # (K, C, T'-1)
    lengths = np.linalg.norm(analysis.shifts_px[set_index], axis=-1)  # (K, C, T'-1)
    return (weights * lengths).sum(axis=0).mean(axis=-1)


def select_channels(analysis: ClipAnalysis, set_index: int = 0, top: int = 5) -> list[int]:
    """The ``top`` channels by :func:`channel_scores`, strongest first (ties: lower index first)."""
    scores = channel_scores(analysis, set_index)
    return [int(c) for c in np.argsort(-scores, kind="stable")[: max(0, top)]]


def region_of(points: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Quadrant index k = 2 * bottom + right of pixel points (..., 2) around a pixel centre (2,),
    with KPSEM's rule: right when x >= cx, bottom when y >= cy."""
    right = (points[..., 0] >= centre[0]).astype(int)
    bottom = (points[..., 1] >= centre[1]).astype(int)
    return 2 * bottom + right


def crossing_shifts(analysis: ClipAnalysis, set_index: int, feature_frame: int) -> np.ndarray:
    """(K, C) bool: the shift of region k's key point, drawn from feature frame t' (unscaled), ends
    in another quadrant of that frame's split. False everywhere on the last frame (no shift)."""
    _require_kpsem(analysis)
    assert analysis.key_points_px is not None
    assert analysis.shifts_px is not None
    assert analysis.centres_px is not None
    num_regions, channels = analysis.key_points_px.shape[1:3]
    if feature_frame >= analysis.shifts_px.shape[3] or num_regions == 1:
        return np.zeros((num_regions, channels), dtype=bool)
    start = analysis.key_points_px[set_index, :, :, feature_frame]  # (K, C, 2)
    end = start + analysis.shifts_px[set_index, :, :, feature_frame]
    centre = analysis.centres_px[set_index, feature_frame]
    return region_of(end, centre) != np.arange(num_regions)[:, None]


def _add_line(ax: Axes, x: Sequence[float], y: Sequence[float], **style: object) -> Line2D:
    """A line added without touching the axes' data limits (``ax.plot`` updates them: slow, and the
    callers fix the limits to the frame anyway)."""
    line = Line2D(x, y, **style)
    ax.add_artist(line)
    return line


def draw_split_lines(ax: Axes, analysis: ClipAnalysis, frame: int, set_index: int = 0, *,
                     colour: str = "white", line_width: float = 1.2) -> list[Artist]:
    """The set's adaptive separation centre on clip frame ``frame`` and the quadrant borders through it."""
    _require_kpsem(analysis)
    assert analysis.centres_px is not None
    t = int(analysis.frame_to_feature[frame])
    cx, cy = analysis.centres_px[set_index, t]
    size = analysis.size
    border = dict(color=colour, lw=line_width, ls="--", alpha=0.9)
    artists: list[Artist] = [
        _add_line(ax, [cx, cx], [0, 1], transform=ax.get_xaxis_transform(), **border),  # full height, as axvline
        _add_line(ax, [0, 1], [cy, cy], transform=ax.get_yaxis_transform(), **border),
        _add_line(ax, [cx], [cy], marker="o", ms=4, mfc=colour, mec="black", mew=0.6, ls=""),
    ]
    ax.set_xlim(-0.5, size - 0.5)
    ax.set_ylim(size - 0.5, -0.5)
    return artists


def _check_frame_index(analysis: ClipAnalysis, frame: int) -> None:
    if not 0 <= frame < analysis.num_frames:
        raise ValueError(f"frame {frame} is outside the clip's {analysis.num_frames} frames "
                         f"(0..{analysis.num_frames - 1})")


def draw_keypoints(
    ax: Axes, analysis: ClipAnalysis, frame: int, options: KeyPointOptions | None = None, *,
    markers: Sequence[str] | None = None,
) -> list[Artist]:
    """Key points coloured by region and their shifts as arrows of the same colour.

    ``frame`` is a clip frame; it shows feature frame ``analysis.frame_to_feature[frame]``, whose shift
    to the next feature frame is drawn (none on the last). Shifts that end in another region are
    dashed and outlined in black when ``options.highlight_crossing``. ``markers``: one marker per
    region (paper figures pass REGION_MARKERS); None draws crosses, as the Explorer counts and labels
    them (kpsem/app_support/render.py)."""
    options = options or KeyPointOptions()
    shapes = tuple(markers) if markers is not None else ("x",) * len(REGION_COLOURS)
    if len(shapes) < len(REGION_COLOURS):
        raise ValueError(f"markers needs one marker per region ({len(REGION_COLOURS)}); got {len(shapes)}")
    _require_kpsem(analysis)
    _check_frame_index(analysis, frame)
    assert analysis.key_points_px is not None
    assert analysis.shifts_px is not None
    num_sets, num_regions, channels = analysis.key_points_px.shape[:3]
    t = int(analysis.frame_to_feature[frame])
    artists: list[Artist] = []
    for g in options.sets:
        if not 0 <= g < num_sets:
            raise ValueError(f"set {g} does not exist; this model has sets 0..{num_sets - 1}")
        if options.channels is not None:
            chosen = list(options.channels)
        else:
            chosen = select_channels(analysis, g, options.top_channels)
        bad = [c for c in chosen if not 0 <= c < channels]
        if bad:
            raise ValueError(f"channels {bad} do not exist; KPSEM reads {channels} channels (0..{channels - 1})")
        if options.split_lines and num_regions > 1:
            artists += draw_split_lines(ax, analysis, frame, g, line_width=options.line_width)
        crossing = crossing_shifts(analysis, g, t)
        has_shift = t < analysis.shifts_px.shape[3]
        for k in options.regions:
            if not 0 <= k < num_regions:
                continue  # a K = 1 model has region 0 only
            colour = REGION_COLOURS[k]
            points = analysis.key_points_px[g, k, chosen, t]  # (n, 2)
            artists.append(_add_line(ax, points[:, 0], points[:, 1], ls="", marker=shapes[k], ms=options.marker_size,
                                     mew=options.line_width * 1.5, mfc="none", color=colour))
            if not has_shift:
                continue
            for c, (x, y) in zip(chosen, points):
                dx, dy = analysis.shifts_px[g, k, c, t] * options.arrow_scale
                crosses = bool(options.highlight_crossing and crossing[k, c])
                arrow = FancyArrow(
                    x, y, dx, dy, width=options.line_width * (1.6 if crosses else 0.8),
                    head_width=options.line_width * 4, head_length=options.line_width * 4,
                    length_includes_head=True, facecolor=colour,
                    edgecolor="black" if crosses else colour, linewidth=0.8 if crosses else 0.0,
                    linestyle="--" if crosses else "-",
                )
                arrow.set_gid("crossing" if crosses else "shift")  # tests and SVG readers can tell them apart
                ax.add_artist(arrow)  # not add_patch: the limits are set below, and updating them is slow
                artists.append(arrow)
    size = analysis.size
    ax.set_xlim(-0.5, size - 0.5)
    ax.set_ylim(size - 0.5, -0.5)
    return artists


_CANVAS_LOCK = threading.Lock()  # held while the shared figure below is drawn on
_SHARED_CANVAS: dict[tuple[int, int, int], tuple[FigureCanvasAgg, Axes]] = {}  # the last size drawn


def upscale(frame_rgb: np.ndarray, scale: int) -> np.ndarray:
    """Each pixel as a ``scale`` x ``scale`` block (nearest neighbour: the clip's pixels stay visible)."""
    import cv2  # nearest-neighbour resizing by a whole factor: the same blocks as np.repeat, 7x faster

    height, width = frame_rgb.shape[:2]
    return cv2.resize(frame_rgb, (width * scale, height * scale), interpolation=cv2.INTER_NEAREST)


def blend_layer(base_rgb: np.ndarray, layer_rgba: np.ndarray) -> np.ndarray:
    """Lay a straight-alpha RGBA layer (what Agg draws on a transparent figure) over an RGB image.

    Only the pixels the layer covers are computed: a few percent of a frame of key points."""
    if layer_rgba.shape[:2] != base_rgb.shape[:2]:
        raise ValueError(f"layer of {layer_rgba.shape[:2]} pixels cannot cover an image of {base_rgb.shape[:2]}")
    alpha = np.ascontiguousarray(layer_rgba[..., 3]).reshape(-1)
    covered = np.flatnonzero(alpha)
    out = np.array(base_rgb, dtype=np.uint8, order="C")  # a copy: the input is left as it was
    pixels = out.reshape(-1, 3)
    weight = alpha[covered, None].astype(np.float32) / 255.0  # (n, 1)
    colour = layer_rgba.reshape(-1, 4)[covered, :3]
    pixels[covered] = np.rint(pixels[covered] * (1.0 - weight) + colour * weight).astype(np.uint8)
    return out


def _new_canvas(height: int, width: int, scale: int) -> tuple[FigureCanvasAgg, Axes]:
    # A transparent figure of exactly (height * scale, width * scale) pixels: only the vector artists are
    # rasterised by Agg; the frame itself is blended in with numpy (imshow would resample it every time).
    fig = Figure(figsize=(width * scale / 100, height * scale / 100), dpi=100)
    fig.patch.set_alpha(0.0)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    return canvas, ax


def _draw_on(canvas: FigureCanvasAgg, ax: Axes, frame_rgb: np.ndarray, analysis: ClipAnalysis, frame: int,
             keypoints: KeyPointOptions, scale: int) -> tuple[np.ndarray, list[Artist]]:
    height, width = frame_rgb.shape[:2]
    try:
        artists = draw_keypoints(ax, analysis, frame, keypoints)
        ax.set_xlim(-0.5, width - 0.5)
        ax.set_ylim(height - 0.5, -0.5)
        canvas.draw()
        return blend_layer(upscale(frame_rgb, scale), np.asarray(canvas.buffer_rgba())), artists
    finally:  # everything drawn over the frame goes, also what a failed call added before raising
        for artist in [*ax.lines, *ax.patches, *ax.collections, *ax.texts]:
            artist.remove()


def render_keypoint_frame(
    frame_rgb: np.ndarray, analysis: ClipAnalysis, frame: int, keypoints: KeyPointOptions, *, scale: int
) -> tuple[np.ndarray, list[Artist]]:
    """A frame (already blended with a CAM, if wanted) with key points, split lines and shift arrows
    drawn on it: uint8 RGB of ``scale`` pixels per frame pixel, and the artists drawn (for counting).

    Why a shared figure: building a figure costs more than drawing a frame's key points on it, and the
    app redraws on every frame change (each Streamlit run is a new thread, so a per-thread figure
    would never be reused). Only one thread draws on it at a time; another gets a figure of its own.
    """
    key = (*frame_rgb.shape[:2], scale)
    if _CANVAS_LOCK.acquire(blocking=False):
        try:
            if key not in _SHARED_CANVAS:
                _SHARED_CANVAS.clear()
                _SHARED_CANVAS[key] = _new_canvas(*key)
            return _draw_on(*_SHARED_CANVAS[key], frame_rgb, analysis, frame, keypoints, scale)
        finally:
            _CANVAS_LOCK.release()
    return _draw_on(*_new_canvas(*key), frame_rgb, analysis, frame, keypoints, scale)


def render_frame(
    frame_rgb: np.ndarray,
    analysis: ClipAnalysis | None = None,
    frame: int = 0,
    *,
    keypoints: KeyPointOptions | None = None,
    scale: int = 2,
) -> np.ndarray:
    """A frame (already blended with a CAM, if wanted) with key points drawn on it, as uint8 RGB of
    ``scale * S`` pixels a side (drawn larger than the crop so crosses and arrows stay legible)."""
    if analysis is None or keypoints is None:
        return upscale(frame_rgb, scale)
    return render_keypoint_frame(frame_rgb, analysis, frame, keypoints, scale=scale)[0]
