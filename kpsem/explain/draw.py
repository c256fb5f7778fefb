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
from typing import Any

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
from kpsem.names import DEFAULT_CMAP, DEFAULT_DIFFERENCE_CMAP

__all__ = [
    "REGION_COLOURS",
    "REGION_NAMES",
    "REGION_MARKERS",
    "SET_LINESTYLES",
    "SET_FILLS",
    "DEFAULT_CMAP",
    "DEFAULT_DIFFERENCE_CMAP",
    "DIFFERENCE_PERCENTILE",
    "difference_limit",
    "KeyPointOptions",
    "region_names",
    "cam_overlay",
    "difference_overlay",
    "cells_to_frame",
    "density_overlay",
    "channel_scores",
    "select_channels",
    "strongest_shifts",
    "region_of",
    "split_positions",
    "crossing_shifts",
    "clip_segment",
    "draw_split_lines",
    "draw_centre_paths",
    "draw_tracks",
    "draw_keypoints",
    "upscale",
    "blend_layer",
    "render_frame",
    "render_keypoint_frame",
]

# Okabe-Ito colours (distinguishable with colour-vision deficiencies), then a grey; region k of a K-region
# split takes colour k mod 8 and marker k: with K = 9 or 16 colours repeat, but no (colour, shape) pair does.
# Quadrants: k = 2 * bottom + right.
REGION_COLOURS: tuple[str, ...] = ("#E69F00", "#56B4E9", "#009E73", "#CC79A7", "#0072B2", "#D55E00", "#F0E442",
                                   "#999999") * 2
REGION_NAMES: tuple[str, ...] = ("top-left", "top-right", "bottom-left", "bottom-right")
# One shape per region as well as a colour, for print in greyscale and for readers who cannot tell the colours
# apart: circle, square, triangle, diamond first (the four quadrants), then twelve more for K up to 16. Drawn
# hollow for the first set, so the frame under a key point stays visible.
REGION_MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "p", "<", ">", "h", "*", "d", "8", "H", "x")
# Sets told apart by the line style of their split lines, centre paths and tracks, and by how their key point
# markers are filled (hollow, full, half ...); cycled for G > 6.
SET_LINESTYLES: tuple[Any, ...] = ("--", ":", "-.", (0, (6, 2, 1, 2, 1, 2)), (0, (1, 3)), (0, (8, 3)))
SET_FILLS: tuple[str, ...] = ("none", "full", "left", "bottom", "right", "top")
# Perceptually uniform defaults (kpsem.names): equal steps in a CAM read as equal steps in lightness (jet's
# bright bands invent edges); differences in Moreland's diverging coolwarm.


@dataclass
class KeyPointOptions:
    """What :func:`draw_keypoints` shows; the defaults make a readable first picture: a few channels, the
    four strongest shifts as thin arrows, the set's split and its centre's path over the clip."""

    sets: tuple[int, ...] = (0,)  # AReSE sets to draw (G of them exist); each has its own split
    channels: tuple[int, ...] | None = None  # channels to draw; None: the top_channels by score
    top_channels: int = 3  # how many channels when choosing automatically (see channel_scores)
    regions: tuple[int, ...] | None = None  # regions to draw; None: all K of the model
    arrow_scale: float = 1.0  # multiply every shift's pixel length by this for visibility
    split_lines: bool = True  # draw the set's separation centre and quadrant borders
    highlight_crossing: bool = True  # mark shifts that end in another region (dashed shaft, black-edged head)
    marker_size: float = 6.0  # key point marker size, points
    line_width: float = 1.0  # width of arrow shafts, split lines and marker edges, points
    max_arrows: int | None = 4  # per set and frame, arrows for this many (region, channel) pairs by W_R; None: all
    centre_paths: bool = True  # the set's separation centre over all frames, as a path
    tracks: bool = False  # each drawn key point's position over all frames, as a path


def region_names(num_regions: int) -> tuple[str, ...]:
    """Names of a K-region split: the whole map, the four quadrants, or grid cells row by row ("row 1, col 2")."""
    if num_regions == 1:
        return ("whole map",)
    if num_regions == 4:
        return REGION_NAMES
    side = round(num_regions**0.5)
    if side * side != num_regions:
        return tuple(f"region {k}" for k in range(num_regions))
    return tuple(f"row {k // side + 1}, col {k % side + 1}" for k in range(num_regions))


def _region_style(k: int) -> tuple[str, str]:
    """(colour, marker) of region k."""
    return REGION_COLOURS[k % len(REGION_COLOURS)], REGION_MARKERS[k % len(REGION_MARKERS)]


def _set_style(position: int) -> tuple[Any, str]:
    """(line style, marker fill) of the ``position``-th set drawn."""
    return SET_LINESTYLES[position % len(SET_LINESTYLES)], SET_FILLS[position % len(SET_FILLS)]


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
    frame: np.ndarray, difference: np.ndarray, *, cmap: str = DEFAULT_DIFFERENCE_CMAP, alpha: float = 0.6,
    limit: float = 1.0
) -> np.ndarray:
    """Blend a signed map (baseline minus KPSEM, in [-limit, limit]) with a diverging colour map:
    red where the baseline looks more, blue where KPSEM does (the one order and map everywhere)."""
    return cam_overlay(frame, difference, cmap=cmap, alpha=alpha, vmin=-limit, vmax=limit)


DIFFERENCE_PERCENTILE = 99.0  # of |difference| over the clip: the end of the difference colour range


def difference_limit(difference: np.ndarray) -> float:
    """The end of a symmetric colour range for a signed map, fitted to the data: the 99th percentile of
    |difference| over all of its frames (its maximum where most of it is exactly 0); 0 when it is all 0.

    Why not a fixed +-1: two maps that differ by a few per cent would show as a uniform pale wash. Why not
    the maximum: one hot pixel would do the same. Why the whole clip and not one frame: moving between
    frames must not change what a colour means."""
    magnitude = np.abs(np.asarray(difference, dtype=np.float64))
    if magnitude.size == 0:
        return 0.0
    limit = float(np.percentile(magnitude, DIFFERENCE_PERCENTILE))
    return limit if limit > 0 else float(magnitude.max())


def cells_to_frame(cells: np.ndarray, size: int) -> np.ndarray:
    """A feature-map grid (..., H', W') as an (..., S, S) image: each pixel takes the value of the feature cell
    its centre lies in (nearest, so a cell stays a block; no values are invented between cells)."""
    height, width = cells.shape[-2:]
    rows = np.minimum((np.arange(size) + 0.5) * height / size, height - 1).astype(np.int64)  # (S,) cell of each row
    cols = np.minimum((np.arange(size) + 0.5) * width / size, width - 1).astype(np.int64)
    return cells[..., rows[:, None], cols[None, :]]


def density_overlay(frame: np.ndarray, density: np.ndarray, *, cmap: str = DEFAULT_CMAP, alpha: float = 0.6,
                    vmax: float | None = None) -> np.ndarray:
    """Blend a key point density (H', W') feature grid (e.g. a frame of
    :func:`~kpsem.explain.analysis.keypoint_density` divided by its total) onto an (S, S, 3) frame, on a
    colour scale from 0 to ``vmax`` (default the grid's maximum)."""
    top = float(density.max()) if vmax is None else float(vmax)
    return cam_overlay(frame, cells_to_frame(np.asarray(density, dtype=np.float64), frame.shape[0]), cmap=cmap,
                       alpha=alpha, vmin=0.0, vmax=top if top > 0 else 1.0)


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


def strongest_shifts(analysis: ClipAnalysis, set_index: int, feature_frame: int, regions: Sequence[int],
                     channels: Sequence[int], count: int | None) -> set[tuple[int, int]]:
    """The ``count`` (region, channel) pairs among ``regions`` x ``channels`` whose regional weight W_R
    (eq. 11) at ``feature_frame`` is largest (ties: lower region, then lower channel): the shifts that weigh
    most in RKPS (eq. 12). All pairs when ``count`` is None; none on the last feature frame (no shift)."""
    _require_kpsem(analysis)
    assert analysis.internals is not None
    weights = analysis.internals.regional_weights[0, set_index].numpy()  # (K, C, T'-1)
    if feature_frame >= weights.shape[-1]:
        return set()
    pairs = [(k, c) for k in regions for c in channels]
    if count is None:
        return set(pairs)
    ranked = sorted(pairs, key=lambda kc: (-float(weights[kc[0], kc[1], feature_frame]), kc))
    return set(ranked[: max(0, count)])


def region_of(points: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Quadrant index k = 2 * bottom + right of pixel points (..., 2) around a pixel centre (2,),
    with KPSEM's rule: right when x >= cx, bottom when y >= cy."""
    right = (points[..., 0] >= centre[0]).astype(int)
    bottom = (points[..., 1] >= centre[1]).astype(int)
    return 2 * bottom + right


def split_positions(analysis: ClipAnalysis, set_index: int, feature_frame: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The set's split positions on a feature frame in pixels, (x splits, y splits), each ordered: the
    centre for quadrants (K = 4), the g - 1 grid lines per axis for K = g x g (from the internals' ``splits``);
    None for K = 1 or when the internals do not carry a grid's splits."""
    _require_kpsem(analysis)
    assert analysis.key_points_px is not None
    assert analysis.centres_px is not None
    assert analysis.internals is not None
    num_regions = analysis.key_points_px.shape[1]
    if num_regions == 4:
        cx, cy = analysis.centres_px[set_index, feature_frame]
        return np.array([cx]), np.array([cy])
    splits = getattr(analysis.internals, "splits", None)  # (N, G, T', 2, g-1) normalised, K = 9 or 16
    if num_regions == 1 or splits is None:
        return None
    positions = (splits[0, set_index, feature_frame].double().numpy() + 1) * (analysis.size / 2) - 0.5  # (2, g-1)
    return positions[0], positions[1]


def crossing_shifts(analysis: ClipAnalysis, set_index: int, feature_frame: int) -> np.ndarray:
    """(K, C) bool: the shift of region k's key point, drawn from feature frame t' (unscaled), ends
    in another region of that frame's split (quadrants, or a grid's bands: a point right of (below) a
    split is past it, KPSEM's rule). False everywhere on the last frame (no shift) and for K = 1."""
    _require_kpsem(analysis)
    assert analysis.key_points_px is not None
    assert analysis.shifts_px is not None
    num_regions, channels = analysis.key_points_px.shape[1:3]
    split = split_positions(analysis, set_index, feature_frame) if feature_frame < analysis.shifts_px.shape[3] \
        else None
    if split is None:
        return np.zeros((num_regions, channels), dtype=bool)
    start = analysis.key_points_px[set_index, :, :, feature_frame]  # (K, C, 2)
    end = start + analysis.shifts_px[set_index, :, :, feature_frame]
    xs, ys = split
    column = (end[..., 0, None] >= xs).sum(-1)  # (K, C): splits at or left of the end
    row = (end[..., 1, None] >= ys).sum(-1)
    return row * (len(xs) + 1) + column != np.arange(num_regions)[:, None]


def _add_line(ax: Axes, x: Sequence[float], y: Sequence[float], **style: object) -> Line2D:
    """A line added without touching the axes' data limits (``ax.plot`` updates them: slow, and the
    callers fix the limits to the frame anyway)."""
    line = Line2D(x, y, **style)
    ax.add_artist(line)
    return line


def clip_segment(start: Sequence[float], end: Sequence[float], low: float, high: float) -> np.ndarray | None:
    """The end of the segment start -> end cut at the square [low, high]^2 (Liang-Barsky): ``end`` itself
    when it lies inside, the point where the segment leaves the square otherwise; None when ``start`` is
    outside. Why: an arrow scaled up for visibility must end on the frame's border with its head, not
    run off the picture (the head is drawn at the returned end)."""
    x0, y0 = float(start[0]), float(start[1])
    dx, dy = float(end[0]) - x0, float(end[1]) - y0
    if not (low <= x0 <= high and low <= y0 <= high):
        return None
    t = 1.0
    for origin, step in ((x0, dx), (y0, dy)):
        if step > 0:
            t = min(t, (high - origin) / step)
        elif step < 0:
            t = min(t, (low - origin) / step)
    return np.array([x0 + t * dx, y0 + t * dy])


def _frame_limits(ax: Axes, size: int) -> None:
    ax.set_xlim(-0.5, size - 0.5)
    ax.set_ylim(size - 0.5, -0.5)


def draw_split_lines(ax: Axes, analysis: ClipAnalysis, frame: int, set_index: int = 0, *,
                     colour: str = "white", line_width: float = 1.2, linestyle: Any = "--") -> list[Artist]:
    """The set's adaptive separation centre on clip frame ``frame`` and the region borders through it
    (quadrants; for K = 9 or 16 the grid's split lines, when the internals carry them)."""
    _require_kpsem(analysis)
    assert analysis.centres_px is not None
    t = int(analysis.frame_to_feature[frame])
    cx, cy = analysis.centres_px[set_index, t]
    border = dict(color=colour, lw=line_width, ls=linestyle, alpha=0.9)
    artists: list[Artist] = []
    split = split_positions(analysis, set_index, t)
    if split is not None:
        artists += [_add_line(ax, [x, x], [0, 1], transform=ax.get_xaxis_transform(), **border)  # as axvline
                    for x in split[0]]
        artists += [_add_line(ax, [0, 1], [y, y], transform=ax.get_yaxis_transform(), **border) for y in split[1]]
    centre = _add_line(ax, [cx], [cy], marker="o", ms=4, mfc=colour, mec="black", mew=0.6, ls="")
    centre.set_gid("centre")
    artists.append(centre)
    _frame_limits(ax, analysis.size)
    return artists


def draw_centre_paths(ax: Axes, analysis: ClipAnalysis, sets: Sequence[int] = (0,), *, colour: str = "white",
                      line_width: float = 1.0) -> list[Artist]:
    """Each set's separation centre over all feature frames, as a path (in the set's line style) with a dot
    per frame: whether the split follows the action or stays put."""
    _require_kpsem(analysis)
    assert analysis.centres_px is not None
    artists: list[Artist] = []
    for position, g in enumerate(sets):
        _check_set(analysis, g)
        linestyle, _ = _set_style(position)
        track = analysis.centres_px[g]  # (T', 2)
        path = _add_line(ax, track[:, 0], track[:, 1], color=colour, lw=line_width, ls=linestyle, marker=".",
                         ms=line_width * 3, mec="black", mew=0.3, alpha=0.9)
        path.set_gid("centre_path")
        artists.append(path)
    _frame_limits(ax, analysis.size)
    return artists


def draw_tracks(ax: Axes, analysis: ClipAnalysis, sets: Sequence[int], regions: Sequence[int],
                channels: Sequence[int], *, line_width: float = 0.8) -> list[Artist]:
    """Each key point's position over all feature frames (set x region x channel), a thin path in its region's
    colour and its set's line style."""
    _require_kpsem(analysis)
    assert analysis.key_points_px is not None
    artists: list[Artist] = []
    for position, g in enumerate(sets):
        _check_set(analysis, g)
        linestyle, _ = _set_style(position)
        for k in regions:
            colour, _ = _region_style(k)
            for c in channels:
                track = analysis.key_points_px[g, k, c]  # (T', 2)
                line = _add_line(ax, track[:, 0], track[:, 1], color=colour, lw=line_width, ls=linestyle, alpha=0.8)
                line.set_gid("track")
                artists.append(line)
    _frame_limits(ax, analysis.size)
    return artists


def _check_frame_index(analysis: ClipAnalysis, frame: int) -> None:
    if not 0 <= frame < analysis.num_frames:
        raise ValueError(f"frame {frame} is outside the clip's {analysis.num_frames} frames "
                         f"(0..{analysis.num_frames - 1})")


def _check_set(analysis: ClipAnalysis, set_index: int) -> None:
    assert analysis.key_points_px is not None
    num_sets = analysis.key_points_px.shape[0]
    if not 0 <= set_index < num_sets:
        raise ValueError(f"set {set_index} does not exist; this model has sets 0..{num_sets - 1}")


def _arrow(ax: Axes, start: np.ndarray, end: np.ndarray, colour: str, *, width: float, head: float,
           crosses: bool) -> list[Artist]:
    """A thin shaft (a line, ``width`` points; dashed when the shift crosses a region border) and a head of
    ``head`` clip pixels whose tip is ``end``. Why two artists: a dashed outline on a polygon arrow reads as
    a thick band, while a dashed line stays a line."""
    length = float(np.hypot(*(end - start)))
    size = min(head, length)  # a short arrow is all head, never past its end
    direction = (end - start) / length
    base = end - direction * size
    shaft = _add_line(ax, [start[0], base[0]], [start[1], base[1]], color=colour, lw=width,
                      ls=(0, (3, 1.5)) if crosses else "-", solid_capstyle="butt", dash_capstyle="butt")
    shaft.set_gid("shaft")
    tip = FancyArrow(float(base[0]), float(base[1]), *(float(v) for v in end - base), width=0.0, head_width=size * 0.9,
                     head_length=size, length_includes_head=True, facecolor=colour,
                     edgecolor="black" if crosses else colour, linewidth=0.5 if crosses else 0.0)
    tip.set_gid("crossing" if crosses else "shift")  # one per arrow: tests and SVG readers count these
    ax.add_artist(tip)  # not add_patch: the limits are fixed to the frame, and updating them is slow
    return [shaft, tip]


def draw_keypoints(
    ax: Axes, analysis: ClipAnalysis, frame: int, options: KeyPointOptions | None = None, *,
    markers: Sequence[str] | None = None,
) -> list[Artist]:
    """Key points marked by region (colour and shape) and set (marker fill), and the strongest shifts as thin
    arrows of the region's colour, cut at the frame's border with their heads kept.

    ``frame`` is a clip frame; it shows feature frame ``analysis.frame_to_feature[frame]``, whose shift to the
    next feature frame is drawn (none on the last). With ``options.highlight_crossing``, shifts that end in
    another region have a dashed shaft and a black-edged head. ``markers``: one marker per region (default
    REGION_MARKERS)."""
    options = options or KeyPointOptions()
    _require_kpsem(analysis)
    _check_frame_index(analysis, frame)
    assert analysis.key_points_px is not None
    assert analysis.shifts_px is not None
    num_regions, channels = analysis.key_points_px.shape[1:3]
    shapes = tuple(markers) if markers is not None else REGION_MARKERS
    if len(shapes) < num_regions:
        raise ValueError(f"markers needs one marker per region ({num_regions}); got {len(shapes)}")
    regions = [k for k in (options.regions if options.regions is not None else range(num_regions))
               if 0 <= k < num_regions]  # a K = 1 model has region 0 only
    t = int(analysis.frame_to_feature[frame])
    size = analysis.size
    width = options.line_width
    artists: list[Artist] = []
    for position, g in enumerate(options.sets):
        _check_set(analysis, g)
        linestyle, fill = _set_style(position)
        if options.channels is not None:
            chosen = list(options.channels)
        else:
            chosen = select_channels(analysis, g, options.top_channels)
        bad = [c for c in chosen if not 0 <= c < channels]
        if bad:
            raise ValueError(f"channels {bad} do not exist; KPSEM reads {channels} channels (0..{channels - 1})")
        if options.tracks:
            artists += draw_tracks(ax, analysis, [g], regions, chosen, line_width=width * 0.6)
        if options.centre_paths and num_regions > 1:
            artists += draw_centre_paths(ax, analysis, [g], line_width=width)
        if options.split_lines and num_regions > 1:
            artists += draw_split_lines(ax, analysis, frame, g, line_width=width, linestyle=linestyle)
        crossing = crossing_shifts(analysis, g, t)
        drawn_shifts = strongest_shifts(analysis, g, t, regions, chosen, options.max_arrows)
        for k in regions:
            colour, _ = _region_style(k)
            points = analysis.key_points_px[g, k, chosen, t]  # (n, 2)
            line = _add_line(ax, points[:, 0], points[:, 1], ls="", marker=shapes[k], ms=options.marker_size,
                             mew=width, color=colour, fillstyle=fill, mec=colour, mfc=colour,
                             mfcalt="none")
            line.set_gid("keypoints")
            artists.append(line)
            for c, start in zip(chosen, points):
                if (k, c) not in drawn_shifts:
                    continue
                end = clip_segment(start, start + analysis.shifts_px[g, k, c, t] * options.arrow_scale,
                                   -0.5, size - 0.5)
                if end is None or np.allclose(end, start):
                    continue  # no length to draw (a shift of zero, or a start outside the frame)
                crosses = bool(options.highlight_crossing and crossing[k, c])
                artists += _arrow(ax, start, end, colour, width=width, head=max(width * 2.5, size / 40),
                                  crosses=crosses)
    _frame_limits(ax, size)
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
