"""Images and charts for the app, drawn from the library's analyses (no computation of models here).

Frames come back as uint8 RGB arrays, and as JPEG bytes for ``st.image``; charts as plotly figures
(the top-k bars as a figure dict), every name in them escaped with
:func:`~kpsem.app_support.drawing.text.escape_plotly` (class names and model ids come from files, and plotly
reads tags in them). Key points and arrows are drawn by :func:`kpsem.explain.draw.draw_keypoints`,
the code the paper figures use.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from matplotlib import colormaps
from PIL import Image

from kpsem.app_support.drawing.text import escape_plotly
from kpsem.explain.analysis import CentreMovement, ClipAnalysis
from kpsem.explain.draw import (
    DEFAULT_CMAP,
    DEFAULT_DIFFERENCE_CMAP,
    DIFFERENCE_PERCENTILE,
    REGION_COLOURS,
    REGION_MARKERS,
    SET_FILLS,
    KeyPointOptions,
    cam_overlay,
    density_overlay,
    difference_limit,
    difference_overlay,
    region_names,
    render_frame,
    render_keypoint_frame,
)

__all__ = [
    "MODEL_COLOURS",
    "density_shares",
    "TRUE_COLOUR",
    "DrawnFrame",
    "encode_jpeg",
    "draw_frame",
    "colour_bar",
    "DIFFERENCE_PERCENTILE",
    "difference_limit",
    "difference_caption",
    "filmstrip",
    "topk_chart",
    "per_class_chart",
    "confusion_heatmap",
    "region_legend_html",
    "centre_chart",
    "movement_table",
]

MODEL_COLOURS = ("#7f7f7f", "#D55E00")  # baseline grey, KPSEM vermillion (as in the paper figures)
TRUE_COLOUR = "#009E73"  # the true class, in every chart
DISPLAY_SIDE = 448  # pixels a side for drawn frames (crosses and arrows need room)


@dataclass
class DrawnFrame:
    image: np.ndarray  # (H, W, 3) uint8
    arrows: int = 0  # shift arrows drawn
    crossing: int = 0  # of which end in another region
    key_points: int = 0  # key point markers drawn

    @cached_property
    def jpeg(self) -> bytes:
        """The image as JPEG bytes for ``st.image`` (see :func:`encode_jpeg`)."""
        return encode_jpeg(self.image)


def encode_jpeg(image: np.ndarray, *, quality: int = 92) -> bytes:
    """JPEG bytes of a uint8 RGB image with full-resolution colour (4:4:4), so thin coloured arrows stay sharp.

    Why not hand ``st.image`` the array: Streamlit encodes arrays as JPEG at quality 100 (twice the bytes
    to send) or as PNG (about 12 ms a frame here, more than drawing the key points). At quality 92 the
    error is about 1 grey level on average and invisible at screen size.
    """
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buffer, format="JPEG", quality=quality,
                                                                      subsampling=0)
    return buffer.getvalue()


def draw_frame(
    frame_rgb: np.ndarray,
    *,
    cam: np.ndarray | None = None,
    difference: np.ndarray | None = None,
    limit: float = 1.0,
    cmap: str = DEFAULT_CMAP,
    alpha: float = 0.5,
    analysis: ClipAnalysis | None = None,
    frame: int = 0,
    keypoints: KeyPointOptions | None = None,
    density: np.ndarray | None = None,
    density_max: float | None = None,
) -> DrawnFrame:
    """One frame for the app: the clip's pixels, optionally blended with a CAM (or a signed
    difference, coloured over [-limit, limit]: see :func:`difference_limit`; or a key point density
    (H', W') grid, coloured over [0, density_max]), optionally with KPSEM's split lines, key points and
    shift arrows on top."""
    if cam is not None:
        base = cam_overlay(frame_rgb, cam, cmap=cmap, alpha=alpha)
    elif density is not None:
        base = density_overlay(frame_rgb, density, cmap=cmap, alpha=max(alpha, 0.6), vmax=density_max)
    elif difference is not None:
        base = difference_overlay(frame_rgb, difference, limit=limit if limit > 0 else 1.0)
    else:
        base = frame_rgb
    scale = max(1, round(DISPLAY_SIDE / base.shape[0]))  # whole pixels per clip pixel, the same for every view
    if analysis is None or keypoints is None or not analysis.has_kpsem:
        return DrawnFrame(render_frame(base, scale=scale))
    image, artists = render_keypoint_frame(base, analysis, frame, keypoints, scale=scale)
    arrows = [a for a in artists if a.get_gid() in ("shift", "crossing")]
    points = sum(len(a.get_xdata()) for a in artists if a.get_gid() == "keypoints")  # type: ignore[attr-defined]
    return DrawnFrame(image, arrows=len(arrows), crossing=sum(a.get_gid() == "crossing" for a in arrows),
                      key_points=points)


def colour_bar(cmap: str, *, width: int = 256, height: int = 14, diverging: bool = False) -> np.ndarray:
    """A horizontal colour bar (uint8 RGB) of ``cmap`` from its low to its high end."""
    ramp = np.linspace(0.0, 1.0, width)
    rgb = colormaps[DEFAULT_DIFFERENCE_CMAP if diverging else cmap](ramp)[:, :3]
    return np.round(np.repeat(rgb[None], height, axis=0) * 255).astype(np.uint8)






def difference_caption(limit: float, *, shared: bool) -> str:
    """The colour bar's text: the subtraction order, both ends with their numbers, the units and the rule."""
    if limit <= 0:
        return "baseline minus KPSEM: 0 everywhere, the two maps are identical"
    units = ("in units of the pair's shared maximum" if shared else "each map divided by its own maximum")
    return (f"baseline minus KPSEM, {units}: \N{MINUS SIGN}{limit:.2g} (KPSEM looks more) … 0 … +{limit:.2g} "
            f"(baseline looks more); the range is the {DIFFERENCE_PERCENTILE:.0f}th percentile of |difference| "
            "over the clip's frames, larger values take the end colours")


def filmstrip(display: np.ndarray, current: int, *, thumb: int = 56, border: int = 3) -> np.ndarray:
    """All sampled frames side by side, ``thumb`` pixels a side, the current one framed in the KPSEM colour.

    Kept narrower than Streamlit's widest image (1460 px), which it would decode, shrink and encode again."""
    import cv2

    frames = display.shape[0]
    cell = thumb + 2 * border
    strip = np.full((cell, frames * cell, 3), 255, dtype=np.uint8)
    strip[:, current * cell:(current + 1) * cell] = [int(MODEL_COLOURS[1][i:i + 2], 16) for i in (1, 3, 5)]
    for t in range(frames):
        strip[border:border + thumb, t * cell + border:t * cell + border + thumb] = cv2.resize(
            display[t], (thumb, thumb), interpolation=cv2.INTER_AREA)
    return strip


def topk_chart(analysis: ClipAnalysis, *, true_label: int | None, colour: str, k: int = 5) -> dict:
    """Horizontal bars of the top-k probabilities on a 0-1 axis, the true class in green: a plotly
    figure as a plain dict, which ``st.plotly_chart`` validates once (a ``go.Figure`` would be built,
    copied to a dict and validated again, several milliseconds a chart on every redraw)."""
    top = analysis.topk[:k]
    names = [escape_plotly(t.name) for t in top][::-1]
    probs = [t.probability for t in top][::-1]
    colours = [TRUE_COLOUR if true_label is not None and t.index == true_label else colour for t in top][::-1]
    bar = dict(type="bar", x=probs, y=names, orientation="h", marker=dict(color=colours),
               text=[f"{p:.1%}" for p in probs], textposition="auto", hovertemplate="%{y}: %{x:.3f}<extra></extra>")
    layout = dict(height=40 + 32 * len(top), margin=dict(l=4, r=4, t=4, b=24), showlegend=False,
                  xaxis=dict(range=[0, 1], tickformat=".0%", fixedrange=True), yaxis=dict(fixedrange=True))
    return dict(data=[bar], layout=layout)


def per_class_chart(table: pd.DataFrame, *, names: tuple[str, str], whiskers: bool = False) -> go.Figure:
    """Grouped bars of per-class accuracy, in the table's order (Fig. 7 on screen); ``whiskers``: each bar's
    Wilson 95% interval (the table's ``<model>_wilson_low`` and ``_high`` columns)."""
    fig = go.Figure()
    classes = [escape_plotly(name) for name in table["class_name"]]
    for column, name, colour in (("baseline", names[0], MODEL_COLOURS[0]), ("kpsem", names[1], MODEL_COLOURS[1])):
        fig.add_bar(x=classes, y=table[column], name=escape_plotly(name), marker_color=colour,
                    customdata=np.stack([table["difference"], table["count"]], axis=1),
                    hovertemplate="%{x}<br>%{fullData.name}: %{y:.1%}<br>difference %{customdata[0]:+.1%}"
                                  "<br>%{customdata[1]} items<extra></extra>")
        if whiskers:
            fig.data[-1].error_y = dict(type="data", symmetric=False, thickness=1, width=3,
                                        array=(table[f"{column}_wilson_high"] - table[column]).to_numpy(),
                                        arrayminus=(table[column] - table[f"{column}_wilson_low"]).to_numpy())
    fig.update_layout(barmode="group", height=340, margin=dict(l=4, r=4, t=24, b=4),
                      yaxis=dict(range=[0, 1], tickformat=".0%", title="top-1 accuracy"),
                      legend=dict(orientation="h", y=1.1))
    return fig


def confusion_heatmap(matrix: np.ndarray, class_names: list[str], *, title: str, diverging: bool = False) -> go.Figure:
    """A confusion matrix (rows: true class, columns: predicted) with counts on hover."""
    limit = float(np.abs(matrix).max()) or 1.0
    names = [escape_plotly(name) for name in class_names]
    fig = go.Figure(go.Heatmap(
        z=matrix, x=names, y=names, colorscale="RdBu" if diverging else "Blues",
        zmin=-limit if diverging else 0, zmax=limit, zmid=0 if diverging else None,
        hovertemplate="true %{y}<br>predicted %{x}<br>" + ("change" if diverging else "count")
        + " %{z}<extra></extra>"))
    fig.update_layout(title=dict(text=escape_plotly(title), font=dict(size=13)), height=360,
                      margin=dict(l=4, r=4, t=32, b=4),
                      yaxis=dict(autorange="reversed", title="true"), xaxis=dict(title="predicted"))
    return fig


# The shape of each of REGION_MARKERS as a character, for the legend under the frame.
_MARKER_GLYPHS = {"o": "&#x25CB;", "s": "&#x25A1;", "^": "&#x25B3;", "D": "&#x25C7;", "v": "&#x25BD;",
                  "P": "&#x271A;", "X": "&#x2716;", "p": "&#x2B20;", "<": "&#x25C1;", ">": "&#x25B7;",
                  "h": "&#x2B21;", "*": "&#x2606;", "d": "&#x25CA;", "8": "&#x25EF;", "H": "&#x2B22;",
                  "x": "&#x2715;"}
_FILL_WORDS = {"none": "hollow", "full": "filled", "left": "left half filled", "bottom": "bottom half filled",
               "right": "right half filled", "top": "top half filled"}
_DASH_WORDS = ("dashed", "dotted", "dash-dot", "dash-dot-dot", "loosely dotted", "long dashes")


def region_legend_html(num_regions: int, *, crossing: bool, sets: tuple[int, ...] = ()) -> str:
    """A one-line legend: each region's marker shape in its colour, the drawn sets' marker fill and line
    style, and the mark of a shift that crosses a region border."""
    names = region_names(num_regions)
    items = [f'<span style="color:{REGION_COLOURS[k]};font-weight:700">{_MARKER_GLYPHS[REGION_MARKERS[k]]} '
             f'&#x2192;</span> {names[k]}' for k in range(num_regions)]
    for position, g in enumerate(sets):
        fill = _FILL_WORDS[SET_FILLS[position % len(SET_FILLS)]]
        items.append(f"<b>set {g}</b>: {fill} markers, {_DASH_WORDS[position % len(_DASH_WORDS)]} split and path")
    if crossing:
        items.append('<span style="font-weight:700">&#x2192;</span> outlined in black: crosses a region border')
    return '<div class="kpsem-legend" style="font-size:0.85rem">' + " &nbsp; ".join(items) + "</div>"


_SET_DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")  # plotly's, one per set
_SET_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#999999")


def centre_chart(analysis: ClipAnalysis, *, current: int | None = None, sets: tuple[int, ...] | None = None) -> dict:
    """Each set's separation centre over the feature frames, x and y in input pixels side by side (a plotly
    figure as a plain dict): which splits follow the action and which stay put. ``current``: the feature frame
    to mark; ``sets``: the sets to show (default all; the drawn ones are what a user chose)."""
    if analysis.centres_px is None:
        raise ValueError(f"{analysis.model_name} has no KPSEM module, so it has no separation centres")
    centres = analysis.centres_px  # (G, T', 2)
    chosen = range(centres.shape[0]) if sets is None else sets
    frames = list(range(1, centres.shape[1] + 1))
    traces = []
    for g in chosen:
        colour, dash = _SET_COLOURS[g % len(_SET_COLOURS)], _SET_DASHES[g % len(_SET_DASHES)]
        for axis, (label, values) in enumerate((("x", centres[g, :, 0]), ("y", centres[g, :, 1]))):
            traces.append(dict(type="scatter", mode="lines+markers", x=frames, y=[float(v) for v in values],
                               name=f"set {g}", legendgroup=f"set {g}", showlegend=axis == 0,
                               xaxis="x" if axis == 0 else "x2", yaxis="y" if axis == 0 else "y2",
                               line=dict(color=colour, dash=dash, width=1.5), marker=dict(size=4),
                               hovertemplate=f"set {g}, feature frame %{{x}}: {label} = %{{y:.2f}} px<extra></extra>"))
    size = analysis.size
    axis = dict(title="feature frame", dtick=1, fixedrange=True)
    layout = dict(height=230, margin=dict(l=4, r=4, t=28, b=4), legend=dict(orientation="h", y=-0.35),
                  xaxis=dict(axis, domain=[0, 0.46]), xaxis2=dict(axis, domain=[0.54, 1]),
                  yaxis=dict(title="centre x (px)", range=[-0.5, size - 0.5], fixedrange=True),
                  yaxis2=dict(title="centre y (px)", range=[size - 0.5, -0.5], anchor="x2", fixedrange=True),
                  annotations=[dict(text="x: left to right", x=0.23, y=1.12, xref="paper", yref="paper",
                                    showarrow=False), dict(text="y: top to bottom", x=0.77, y=1.12, xref="paper",
                                                           yref="paper", showarrow=False)])
    if current is not None:
        layout["shapes"] = [dict(type="line", x0=current + 1, x1=current + 1, y0=0, y1=1, xref=ref, yref="paper",
                                 line=dict(color="#888888", width=1, dash="dot")) for ref in ("x", "x2")]
    return dict(data=traces, layout=layout)


def movement_table(movements: list[CentreMovement]) -> pd.DataFrame:
    """One row per set: how far its centre moves (span: the farthest two positions; path: frame to frame)."""
    return pd.DataFrame([{"set": m.set_index, "span (px)": round(m.span_px, 2), "span (cells)": round(m.span_cells, 3),
                          "path (px)": round(m.path_px, 2), "path (cells)": round(m.path_cells, 3),
                          "mean x (px)": round(m.mean_px[0], 1), "mean y (px)": round(m.mean_px[1], 1)}
                         for m in movements])


def density_shares(analysis: ClipAnalysis, sets: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(key point counts, their shares) per feature cell, (T', H', W'): each feature frame's shares sum to 1."""
    from kpsem.explain.analysis import keypoint_density

    counts = keypoint_density(analysis.internals, sets=sets)
    return counts, counts / counts.sum(axis=(1, 2), keepdims=True)
