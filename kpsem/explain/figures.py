"""Paper figures (section 4.4 of the paper) with matplotlib, from models and data the user chose.

Every builder returns a :class:`PaperFigure`: the matplotlib ``Figure`` (made without pyplot, so the
Streamlit app can build them from several threads) and the settings that made it. ``save`` writes PNG
at a chosen DPI, PDF and SVG, plus one JSON sidecar of those settings, so a figure can be remade exactly.

Every figure drops into a paper unchanged: its width is one column or the full page (``COLUMN_WIDTHS``),
its height is fitted to what it holds, and at every font size nothing is cut at the canvas's edges:
legends take as many columns as fit (more rows otherwise), long titles and colour-bar labels wrap, and
colour bars lie under the images they explain (tests/test_figure_layout.py checks each drawn text).
"""

from __future__ import annotations

import json
import platform
import re
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.legend import Legend
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.text import Text
from matplotlib.textpath import text_to_path

from kpsem.explain.analysis import ClipAnalysis, CommonTarget, PairAnalysis, centre_movement, keypoint_density
from kpsem.explain.compare import ComparedPredictions, confusion_matrix
from kpsem.explain.draw import (
    DEFAULT_CMAP,
    DEFAULT_DIFFERENCE_CMAP,
    REGION_COLOURS,
    REGION_MARKERS,
    SET_FILLS,
    SET_LINESTYLES,
    KeyPointOptions,
    cam_overlay,
    density_overlay,
    difference_overlay,
    draw_centre_paths,
    draw_keypoints,
    region_names,
)
from kpsem.io import atomic_path, atomic_write_text
from kpsem.models import list_models, paper_name
from kpsem.names import COLUMN_WIDTHS, FIGURE_FORMATS
from kpsem.profile import ModelCost

if TYPE_CHECKING:
    from kpsem.checkpoint import CheckpointInfo

__all__ = [
    "COLUMN_WIDTHS",
    "FORMATS",
    "DEFAULT_CMAP",
    "DEFAULT_DIFFERENCE_CMAP",
    "FigureStyle",
    "PaperFigure",
    "display_name",
    "display_names",
    "sample_frames",
    "figure_per_class_accuracy",
    "figure_top_predictions",
    "figure_gradcam",
    "figure_keypoints",
    "figure_centres",
    "figure_density",
    "cost_table",
    "figure_cost_table",
    "figure_confusion",
]

FORMATS = FIGURE_FORMATS
MODEL_COLOURS = ("#7f7f7f", "#D55E00")  # baseline grey, KPSEM vermillion, in every figure
MAX_IMAGE_SIDE = 2.0  # inches: a frame is never drawn larger than this, however few frames a row holds


def display_name(model_id: str | None = None, *, label: str | None = None, info: CheckpointInfo | None = None) -> str:
    """The one name a figure shows for a model: the user's ``label``; else the checkpoint's own
    ``provenance["display_name"]``; else the paper's name for its architecture (``info.arch``, or the
    architecture a ``model_id`` such as ``"final:mfnet"`` ends with); else the id as given.

    Why one function: titles, legends, colour-bar labels and sidecars must agree, and internal ids
    (``stem:arch``, registry names) mean nothing to a reader of the paper."""
    if label is not None and label.strip():
        return " ".join(label.split())
    if info is not None:
        own = info.provenance.get("display_name") if isinstance(info.provenance, dict) else None
        if isinstance(own, str) and own.strip():
            return " ".join(own.split())
        if info.arch in list_models():
            return paper_name(info.arch)
    if model_id:
        arch = model_id.rsplit(":", 1)[-1]
        return paper_name(arch) if arch in list_models() else model_id
    return info.arch if info is not None else "model"


def display_names(
    ids: Sequence[str | None] = (None, None),
    *,
    labels: Sequence[str | None] = (None, None),
    infos: Sequence[CheckpointInfo | None] = (None, None),
) -> tuple[str, str]:
    """(baseline, KPSEM) names through :func:`display_name`; two equal names become "X (baseline)" and
    "X (compared)", as :func:`~kpsem.explain.analysis.analyse_pair` names two models of one architecture,
    so no figure shows one name for two models."""
    first, second = (display_name(i, label=lab, info=inf) for i, lab, inf in zip(ids, labels, infos))
    if first == second:
        return f"{first} (baseline)", f"{second} (compared)"
    return first, second


@dataclass
class FigureStyle:
    """Look of a figure; stored in its sidecar."""

    column: Literal["single", "double"] = "double"  # width: one column or the full page width
    font_size: float = 8.0  # base font size in points
    cmap: str = DEFAULT_CMAP  # colour map of Grad-CAM overlays and their colour bar
    dpi: int = 300  # PNG resolution (vector formats ignore it)
    difference_cmap: str = DEFAULT_DIFFERENCE_CMAP  # diverging map of differences (Fig. 9, confusion)

    def __post_init__(self) -> None:
        if self.column not in COLUMN_WIDTHS:
            raise ValueError(f"column must be one of {tuple(COLUMN_WIDTHS)}; got {self.column!r}")
        if self.font_size <= 0:
            raise ValueError(f"font_size must be positive; got {self.font_size}")
        for option, name in (("cmap", self.cmap), ("difference_cmap", self.difference_cmap)):
            if name not in matplotlib.colormaps:
                raise ValueError(f"unknown colour map {name!r} for {option}; use a matplotlib name such as "
                                 f"'viridis', 'cividis', 'inferno' (CAMs) or 'coolwarm', 'RdBu_r' (differences)")
        if self.dpi < 10:
            raise ValueError(f"dpi must be at least 10; got {self.dpi}")

    @property
    def width(self) -> float:
        return COLUMN_WIDTHS[self.column]

    def figure(self, height: float) -> Figure:
        """A pyplot-free Figure of the style's width with constrained layout; an Agg canvas, so legends
        and labels can be measured while the figure is built."""
        fig = Figure(figsize=(self.width, height), layout="constrained")
        FigureCanvasAgg(fig)
        return fig

    def rc(self) -> dict[str, Any]:
        size = self.font_size
        # text.parse_math off: class names and user labels are plain text ("$" is a dollar, not math)
        return {"font.size": size, "axes.titlesize": size, "axes.labelsize": size, "xtick.labelsize": size * 0.85,
                "ytick.labelsize": size * 0.85, "legend.fontsize": size * 0.85, "svg.hashsalt": "kpsem",
                "pdf.fonttype": 42, "svg.fonttype": "path", "text.parse_math": False}


@dataclass
class PaperFigure:
    """A figure, its name, and the settings that made it."""

    name: str  # e.g. "fig9_gradcam"
    figure: Figure
    settings: dict[str, Any] = field(default_factory=dict)  # everything needed to remake it
    style: FigureStyle = field(default_factory=FigureStyle)

    def save(self, out_dir: str | Path, *, stem: str | None = None, formats: Sequence[str] = FORMATS,
             dpi: int | None = None, extra: dict[str, Any] | None = None) -> list[Path]:
        """Write ``<stem>.<format>`` for each format and ``<stem>.json``; returns the paths written."""
        bad = [f for f in formats if f not in FORMATS]
        if bad:
            raise ValueError(f"unsupported formats {bad}; choose from {FORMATS}")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        stem = stem or self.name
        dpi = int(dpi or self.style.dpi)
        paths = []
        with matplotlib.rc_context(self.style.rc()):
            for fmt in formats:
                path = out / f"{stem}.{fmt}"
                metadata = {"Creator": "kpsem-studio"} if fmt != "png" else {"Software": "kpsem-studio"}
                if fmt in ("pdf", "svg"):  # reproducible files: no creation date
                    metadata["CreationDate" if fmt == "pdf" else "Date"] = None
                with atomic_path(path) as partial:  # another run may be writing or reading the same figure
                    self.figure.savefig(partial, format=fmt, dpi=dpi, metadata=metadata)
                paths.append(path)
        from kpsem import __version__

        sidecar = {
            "figure": self.name,
            "settings": _plain(self.settings),
            "style": {**asdict(self.style), "dpi": dpi},
            "size_inches": [float(v) for v in self.figure.get_size_inches()],
            "files": [p.name for p in paths],
            "versions": {"kpsem": __version__, "matplotlib": matplotlib.__version__,
                         "python": platform.python_version()},
            **(_plain(extra) if extra else {}),
        }
        json_path = out / f"{stem}.json"
        atomic_write_text(json_path, json.dumps(sidecar, indent=2) + "\n")
        return [*paths, json_path]


def _plain(value: Any) -> Any:
    """JSON-safe copy: tuples to lists, numpy scalars to Python, paths to strings."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def sample_frames(num_frames: int, count: int = 4) -> list[int]:
    """``count`` evenly spaced clip frames, first and last included: 16 frames, 4 -> [0, 5, 10, 15]."""
    if count < 1:
        raise ValueError(f"count must be at least 1; got {count}")
    return sorted({round(float(v)) for v in np.linspace(0, num_frames - 1, min(count, num_frames))})


def _check_frames(frames: Sequence[int], num_frames: int) -> list[int]:
    frames = [int(f) for f in frames]
    bad = [f for f in frames if not 0 <= f < num_frames]
    if bad or not frames:
        raise ValueError(f"frames {bad or frames} are outside the clip's {num_frames} frames (0..{num_frames - 1})")
    return frames


def _check_display(display: np.ndarray, analysis: ClipAnalysis) -> None:
    expected = (analysis.num_frames, analysis.size, analysis.size, 3)
    if display.shape != expected:
        raise ValueError(f"display frames have shape {display.shape}; the analysed clip needs {expected} (T, S, S, 3)")


def _image_axis(ax: Any) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


# --- layout: measured, so that nothing is cut at the canvas's edges --------------------------------


def _text_width(text: str, size: float) -> float:
    """Width in points of the longest line of ``text`` at ``size`` points in the current rc font, measured
    from the glyphs (no renderer needed)."""
    prop = FontProperties(size=size)
    return max(text_to_path.get_text_width_height_descent(line, prop, ismath=False)[0] for line in text.split("\n"))


def _split_word(word: str, width: float, size: float) -> list[str]:
    """A word wider than a line, in pieces that fit (after "_" or "-" where possible, else anywhere)."""
    pieces, piece = [], ""
    for char in word:
        if piece and _text_width(piece + char, size) > width:
            cut = max(piece.rfind("_"), piece.rfind("-"))
            keep, piece = (piece[: cut + 1], piece[cut + 1:]) if cut > 0 else (piece, "")
            pieces.append(keep)
        piece += char
    return [*pieces, piece]


def _wrap(text: str, width: float, size: float) -> str:
    """Greedy word wrap of ``text`` to lines of at most ``width`` points at ``size`` points."""
    lines = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split():
            for part in _split_word(word, width, size) if _text_width(word, size) > width else [word]:
                trial = f"{line} {part}" if line else part
                if line and _text_width(trial, size) > width:
                    lines.append(line)
                    line = part
                else:
                    line = trial
        lines.append(line)
    return "\n".join(lines)


class _Wrapping:
    """The texts of one figure that follow the width the layout gives them (titles, colour-bar labels),
    each kept as given so that it can be wrapped again, losslessly, once the layout is known. One per
    figure, never shared: the app builds figures on several threads."""

    def __init__(self) -> None:
        self.items: list[tuple[Text, str, Axes]] = []  # (artist, text as given, axes whose width it follows)

    def put(self, artist: Text, text: str, width: float, ax: Axes | None = None) -> Text:
        """Show ``text`` on ``artist`` (a title, or ``ax``'s axis label: an axis label knows its axes only
        through its axis) wrapped to ``width`` points for now."""
        owner = ax if ax is not None else artist.axes
        if owner is None:
            raise ValueError("a wrapped text needs the axes whose width it follows")
        self.items.append((artist, text, owner))
        artist.set_text(_wrap(text, width, artist.get_fontsize()))
        return artist

    def fit(self, fig: Figure) -> bool:
        """Wrap each text again to the width of what it sits on as laid out: a title to its axes' slot (a
        frame's title may be as wide as its column), a bar's label to the bar; True when one changed.
        Why: constrained layout counts only a title's height (so a long title cannot squeeze its axes) and
        centres a bar's label on the bar, so either, wider than what it sits on, could run past the
        canvas at the figure's edge."""
        changed = False
        inches = fig.get_figwidth()
        for artist, text, ax in self.items:
            slot = ax.get_position() if ax.get_label() == "<colorbar>" else ax.get_position(original=True)
            size = artist.get_fontsize()
            wrapped = _wrap(text, max(slot.width * inches * 72, 2 * size), size)
            if wrapped != artist.get_text():
                artist.set_text(wrapped)
                changed = True
        return changed


def _legend(fig: Figure, handles: Sequence[Artist], size: float, *, loc: str = "outside lower center") -> Legend:
    """A figure legend in as many columns as fit the figure's width; the entries wrap onto more rows
    (and a label wider than the figure onto more lines) instead of running off the canvas."""
    width_pt = fig.get_figwidth() * 72
    for handle in handles:
        handle.set_label(_wrap(str(handle.get_label()), width_pt * 0.8, size))
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    for ncols in range(len(handles), 0, -1):
        legend = fig.legend(handles=handles, loc=loc, ncols=ncols, frameon=False, fontsize=size,
                            columnspacing=1.2, handlelength=1.8)
        if ncols == 1 or legend.get_window_extent(renderer).width <= fig.bbox.width * 0.97:
            return legend
        legend.remove()
    raise AssertionError("unreachable: one column is always kept")


def _colour_bar(fig: Figure, mappable: Any, axes: Any, label: str, ticks: Sequence[float], size: float,
                wrapping: _Wrapping) -> Any:
    """A horizontal colour bar under ``axes`` with explicit ticks (ends and middle, so tick labels never
    crowd) and a label wrapped to the bar's length: a vertical bar beside one row of frames is shorter
    than its own label."""
    bar = fig.colorbar(mappable, ax=axes, location="bottom", shrink=0.6, aspect=35, pad=0.02)
    bar.set_ticks(list(ticks), labels=[f"{t:.3g}".replace("-", "\N{MINUS SIGN}") for t in ticks])
    bar.set_label(label, fontsize=size)
    wrapping.put(bar.ax.xaxis.label, label, fig.get_figwidth() * 72 * 0.55, bar.ax)
    return bar


def _settle(
    fig: Figure, wrapping: _Wrapping, images: Sequence[Axes] = (), *, max_side: float = MAX_IMAGE_SIDE
) -> None:
    """Lay the figure out for good at its fixed width: ``wrapping``'s texts wrapped to what they sit on, a
    height that gives constrained layout room for every title, label, legend and colour bar, and, for
    ``images`` (aspect-locked axes), each row as tall as its width allows (at most ``max_side`` inches),
    with no empty bands around the frames."""
    tallest = fig.get_figheight() * 3  # a layout that still fails by then fails for want of width, not height
    for _ in range(10):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fig.draw_without_rendering()  # runs constrained layout, then each image's aspect
        width, height = fig.get_size_inches()
        if any("constrained_layout not applied" in str(w.message) for w in caught):
            if not wrapping.fit(fig) and height < tallest:  # not a long title: too short for the text
                fig.set_size_inches(width, min(height * 1.3, tallest))
            continue
        if wrapping.fit(fig):
            continue
        change: dict[tuple[float, float], float] = {}  # one entry per grid row
        for ax in images:
            slot, shown = ax.get_position(original=True), ax.get_position()
            aspect = shown.height * height / max(shown.width * width, 1e-9)  # the image's height / width
            want = min(slot.width * width * aspect, max_side)
            change[(round(slot.y0, 3), round(slot.y1, 3))] = want - slot.height * height
        step = sum(change.values())
        if abs(step) < 0.01:
            return
        fig.set_size_inches(width, float(np.clip(height + step, 0.5, 30.0)))


def _width_pt(style: FigureStyle) -> float:
    return style.width * 72 - 12  # the figure less constrained layout's pads


# --- Fig. 7 ---------------------------------------------------------------------------------------


def figure_per_class_accuracy(
    table: pd.DataFrame,
    *,
    margin: float = 0.0,
    mode: Literal["wins", "losses"] = "wins",
    names: tuple[str, str] = ("MFNet", "MF-KPSEM"),
    max_classes: int = 40,
    style: FigureStyle | None = None,
    intervals: bool = False,
) -> PaperFigure:
    """Fig. 7: per-class accuracy of both models where KPSEM wins (or, ``mode="losses"``, loses) by at
    least ``margin`` (accuracy points in [0, 1]). ``table`` from :func:`~kpsem.explain.compare.per_class_accuracy`.
    ``intervals`` draws each bar's Wilson 95% interval as a whisker: with a few videos per class, a gain
    of one or two videos is well inside it. ``names``: (baseline, KPSEM) as :func:`display_names` gives them."""
    style = style or FigureStyle()
    if mode not in ("wins", "losses"):
        raise ValueError(f"mode must be 'wins' or 'losses'; got {mode!r}")
    wilson = [f"{m}_wilson_{end}" for m in ("baseline", "kpsem") for end in ("low", "high")]
    if intervals and any(c not in table.columns for c in wilson):
        raise ValueError(f"interval whiskers need the columns {', '.join(wilson)} of per_class_accuracy; "
                         f"the table has {', '.join(map(str, table.columns))}")
    if margin < 0:
        raise ValueError(f"margin is a size (accuracy points, >= 0); got {margin}")
    if mode == "wins":
        chosen = table[(table["difference"] > 0) & (table["difference"] >= margin)]
        chosen = chosen.sort_values(["difference", "class_index"], ascending=[False, True], kind="stable")
    else:
        chosen = table[(table["difference"] < 0) & (table["difference"] <= -margin)]
        chosen = chosen.sort_values(["difference", "class_index"], ascending=[True, True], kind="stable")
    chosen = chosen.head(max_classes)
    size = style.font_size
    verb = "beats" if mode == "wins" else "trails"
    by = f" by {margin:.0%} or more" if margin > 0 else ""
    whiskers_note = "; whiskers: Wilson 95%" if intervals and not chosen.empty else ""
    wrapping = _Wrapping()  # titles and bar labels, wrapped again once laid out
    with matplotlib.rc_context(style.rc()):
        classes = [str(c) for c in chosen["class_name"]]
        # Wrapped now as well as when settled: layout places a title by its middle, so a long one-line title
        # would push the axes aside before it could be wrapped to them.
        title = f"{names[1]} {verb} {names[0]}{by}: {len(chosen)} classes{whiskers_note}"
        title_lines = _wrap(title, _width_pt(style) - 4 * size, size).count("\n") + 1
        legend_rows = 1 if sum(_text_width(n, size * 0.85) + 4 * size for n in names) < _width_pt(style) else 2
        # Rotated class names hang below the axes and the title and legend sit above: the height grows with
        # them, so the bars keep theirs.
        below = max((_text_width(c, size * 0.85) for c in classes), default=0.0) * 0.87 / 72
        above = (title_lines * 1.3 + legend_rows * 1.4) * size / 72
        fig = style.figure(1.4 + below + above + size * 2.5 / 72)
        ax = fig.add_subplot()
        if chosen.empty:
            ax.text(0.5, 0.5, _wrap(f"no class where {names[1]} {'wins' if mode == 'wins' else 'loses'} by at "
                                    f"least {margin:.0%}", _width_pt(style) * 0.8, size),
                    ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
        else:
            x = np.arange(len(chosen))
            for offset, model, name, colour in ((-0.2, "baseline", names[0], MODEL_COLOURS[0]),
                                                (0.2, "kpsem", names[1], MODEL_COLOURS[1])):
                accuracy = chosen[model].to_numpy() * 100
                whiskers = None
                if intervals:  # (2, classes): distance down to the low end, up to the high end
                    whiskers = np.stack([accuracy - chosen[f"{model}_wilson_low"].to_numpy() * 100,
                                         chosen[f"{model}_wilson_high"].to_numpy() * 100 - accuracy])
                ax.bar(x + offset, accuracy, 0.4, label=name, color=colour, yerr=whiskers, capsize=2,
                       error_kw={"elinewidth": 0.6, "capthick": 0.6, "ecolor": "0.2"})
            ax.set_xticks(x, classes, rotation=60, ha="right", rotation_mode="anchor")
            ax.set_xlim(-0.6, len(chosen) - 0.4)
            _legend(fig, ax.get_legend_handles_labels()[0], size * 0.85, loc="outside upper right")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        wrapping.put(ax.set_title(title, loc="left"), title, _width_pt(style) - 4 * size)
        _settle(fig, wrapping)
    settings = {"margin": margin, "mode": mode, "names": list(names), "max_classes": max_classes,
                "classes": classes, "intervals": "Wilson 95%" if intervals else None}
    return PaperFigure("fig7_per_class_" + mode, fig, settings, style)


# --- Fig. 8 ---------------------------------------------------------------------------------------


def figure_top_predictions(
    pairs: Sequence[PairAnalysis],
    frames: Sequence[np.ndarray],
    *,
    true_labels: Sequence[str | None] | None = None,
    topk: int = 3,
    names: tuple[str, str] | None = None,
    style: FigureStyle | None = None,
) -> PaperFigure:
    """Fig. 8: one column per clip: a frame, then each model's top-``topk`` probabilities (true class
    in bold; a legend names the models' colours). ``frames[i]`` is a uint8 (S, S, 3) frame of clip i. As
    many clips share a row as their class names leave room for, the rest go to further rows; with one
    clip a row, each frame stands beside its bars. ``names``: (baseline, KPSEM), default the analyses' own."""
    style = style or FigureStyle()
    if len(pairs) != len(frames) or not pairs:
        raise ValueError(f"need one frame per analysed clip and at least one clip; got {len(pairs)} "
                         f"clips, {len(frames)} frames")
    truths = list(true_labels) if true_labels is not None else [None] * len(pairs)
    names = names or (pairs[0].baseline.model_name, pairs[0].kpsem.model_name)
    size, tick = style.font_size, style.font_size * 0.85
    wrapping = _Wrapping()  # titles and bar labels, wrapped again once laid out
    with matplotlib.rc_context(style.rc()):
        shown = {t.name for p in pairs for a in (p.baseline, p.kpsem) for t in a.topk[:topk]}
        bold = FontProperties(size=tick, weight="bold")  # the true class is bold: the widest a name gets
        label_in = max(text_to_path.get_text_width_height_descent(n, bold, ismath=False)[0] for n in shown) / 72 + 0.1
        per_row = max(1, min(len(pairs), int(style.width // (label_in + 0.8))))  # 0.8 in: a bar you can read
        bars_in = (topk * 1.6 * tick + 6) / 72
        # One clip a row: the frame beside its bars rather than above them, so a figure of a few clips at one
        # column (or at a large font) stays a few inches tall.
        beside = per_row == 1 and style.width - label_in - 0.95 >= 0.8
        column = style.width - label_in - 0.95 if beside else style.width / per_row
        frame_in = min(column * 0.9, 1.6 if not beside else max(2 * bars_in + 2.6 * tick / 72, 0.8))
        lines = [_wrap(t, column * 72, size).count("\n") + 1 for t in truths if t is not None]
        title_in = max(lines, default=0) * size * 1.3 / 72
        bars_block = 2 * bars_in + 2.6 * tick / 72
        block_in = (max(frame_in, bars_block) if beside else frame_in + bars_block) + title_in + 0.15
        block_rows = -(-len(pairs) // per_row)
        fig = style.figure(block_rows * block_in + size * 2.5 / 72)
        if beside:
            widest = max((_text_width(t, size) / 72 + 0.05 for t in truths if t is not None), default=0.0)
            left = min(max(frame_in, widest), style.width - label_in - 0.95)  # a class name over its frame
            # Ratios share the width left after the margins, the bars' class names the largest of them.
            grid = fig.add_gridspec(2 * len(pairs), 2, width_ratios=(left, style.width - label_in - 0.3 - left))
            places = [(grid[2 * i:2 * i + 2, 0], grid[2 * i, 1], grid[2 * i + 1, 1]) for i in range(len(pairs))]
        else:
            grid = fig.add_gridspec(3 * block_rows, per_row, height_ratios=[frame_in, bars_in, bars_in] * block_rows)
            places = [(grid[3 * (i // per_row) + r, i % per_row] for r in range(3)) for i in range(len(pairs))]
        frame_axes = []
        for (frame_at, *bars_at), pair, frame, truth in zip(places, pairs, frames, truths):
            ax = fig.add_subplot(frame_at)
            ax.imshow(frame)
            _image_axis(ax)
            frame_axes.append(ax)
            if truth is not None:
                wrapping.put(ax.set_title(truth), truth, column * 72)
            for row, (at, analysis, colour) in enumerate(zip(bars_at, (pair.baseline, pair.kpsem), MODEL_COLOURS)):
                bar_ax = fig.add_subplot(at)
                top = analysis.topk[:topk]
                y = np.arange(len(top))
                bar_ax.barh(y, [t.probability for t in top], color=colour)
                for yi, t in zip(y, top):  # inside a long bar, beside a short one: never past the axes
                    inside = t.probability > 0.6
                    bar_ax.text(t.probability + (-0.03 if inside else 0.03), yi, f"{t.probability:.2f}",
                                va="center", ha="right" if inside else "left", fontsize=size * 0.8,
                                color="white" if inside else "black")
                bar_ax.set_yticks(y, [t.name for t in top])
                for label, t in zip(bar_ax.get_yticklabels(), top):
                    label.set_fontweight("bold" if truth is not None and t.name == truth else "normal")
                bar_ax.invert_yaxis()
                bar_ax.set_xlim(0, 1)
                bar_ax.set_xticks([0, 0.5, 1], ["0", "0.5", "1"] if row == 1 else [])
        _legend(fig, [Patch(color=c, label=n) for c, n in zip(MODEL_COLOURS, names)], size * 0.85)
        _settle(fig, wrapping, frame_axes if not beside else (), max_side=1.6)
    settings = {"topk": topk, "true_labels": truths, "names": list(names),
                "predictions": [[p.baseline.summary(), p.kpsem.summary()] for p in pairs]}
    return PaperFigure("fig8_top_predictions", fig, settings, style)


# --- Fig. 9 ---------------------------------------------------------------------------------------


def _check_gradcam_pair(pair: PairAnalysis, difference_row: bool, common: CommonTarget | None) -> None:
    """A difference row needs both CAMs explaining one class, and that class must be ``common``'s."""
    if difference_row and not pair.same_target:
        classes = pair.baseline.class_names
        raise ValueError(
            f"the difference row compares two CAMs of one class, but these explain {classes[pair.baseline.target]!r} "
            f"({pair.baseline.model_name}) and {classes[pair.kpsem.target]!r} ({pair.kpsem.model_name}); analyse the "
            "pair for one target (kpsem.explain.analysis.common_target)")
    if difference_row and common is not None and not common.explains(pair):
        raise ValueError(f"common target {common.name!r} is not the class these CAMs explain "
                         f"({pair.baseline.class_names[pair.baseline.target]!r})")


def _cam_rows(axes: np.ndarray, pair: PairAnalysis, display: np.ndarray, chosen: Sequence[int],
              maps: tuple[np.ndarray, np.ndarray], names: tuple[str, str], side: float, alpha: float,
              style: FigureStyle, wrapping: _Wrapping) -> None:
    """Fig. 9's two CAM rows, baseline above KPSEM: each frame's overlay, the frame numbers over the top
    row, and each row's model and class beside it."""
    for r, (analysis, cams, name) in enumerate(zip((pair.baseline, pair.kpsem), maps, names)):
        for c, f in enumerate(chosen):
            ax = axes[r, c]
            ax.imshow(cam_overlay(display[f], cams[f], cmap=style.cmap, alpha=alpha))
            _image_axis(ax)
            if r == 0:
                wrapping.put(ax.set_title(""), f"frame {f + 1}", side)
        axes[r, 0].set_ylabel(_wrap(f"{name}\n{analysis.class_names[analysis.target]}", side, style.font_size))


def _difference_row(fig: Figure, axes: np.ndarray, pair: PairAnalysis, display: np.ndarray, chosen: Sequence[int],
                    shared_scale: bool, scale: float, order: str, side: float, style: FigureStyle,
                    wrapping: _Wrapping) -> tuple[str, float]:
    """Fig. 9's third row, baseline minus KPSEM, with its symmetric colour bar that states the order;
    returns (the class both CAMs explain, the bar's limit)."""
    size = style.font_size
    for c, f in enumerate(chosen):
        ax = axes[2, c]
        signed = pair.difference[f] if shared_scale else pair.difference_normalised[f]
        ax.imshow(difference_overlay(display[f], signed, cmap=style.difference_cmap))
        _image_axis(ax)
    target_name = pair.baseline.class_names[pair.baseline.target]
    axes[2, 0].set_ylabel(_wrap(f"difference\n{target_name}", side, size))  # the order: on its bar
    limit = scale if shared_scale else 1.0
    units = "Grad-CAM, raw units" if shared_scale else "Grad-CAM \N{DIVISION SIGN} each row's maximum"
    diverging = matplotlib.cm.ScalarMappable(norm=Normalize(-limit, limit), cmap=style.difference_cmap)
    _colour_bar(fig, diverging, axes[2:, :], f"{order} ({units})", (-limit, 0.0, limit), size * 0.85, wrapping)
    return target_name, limit


def figure_gradcam(
    pair: PairAnalysis,
    display: np.ndarray,
    *,
    frames: Sequence[int] | None = None,
    num_frames: int = 4,
    shared_scale: bool = True,
    difference_row: bool = False,
    common: CommonTarget | None = None,
    alpha: float = 0.5,
    names: tuple[str, str] | None = None,
    style: FigureStyle | None = None,
) -> PaperFigure:
    """Fig. 9: Grad-CAM rows, baseline above and KPSEM below, on ``num_frames`` evenly sampled frames
    (or ``frames``). ``shared_scale``: one colour bar for both rows in the maps' raw units (the pair's
    maximum at its top); otherwise each row is normalised to its own maximum (0 to 1). ``difference_row``
    adds baseline minus KPSEM with a symmetric bar that states the order; it needs both CAMs for one
    class: ``common`` (:func:`~kpsem.explain.analysis.common_target`) says which and why, in the sidecar
    and, when the models' own predictions differ, on the figure. ``names``: (baseline, KPSEM), default
    the analyses' own."""
    style = style or FigureStyle()
    _check_display(display, pair.baseline)
    _check_gradcam_pair(pair, difference_row, common)
    names = names or (pair.baseline.model_name, pair.kpsem.model_name)
    total = pair.baseline.num_frames
    chosen = _check_frames(frames, total) if frames is not None else sample_frames(total, num_frames)
    maps = (pair.baseline_shared, pair.kpsem_shared) if shared_scale else (pair.baseline.cam, pair.kpsem.cam)
    n_rows = 3 if difference_row else 2
    size = style.font_size
    scale = pair.shared_scale if pair.shared_scale > 0 else 1.0  # all-zero maps: any positive scale shows zero
    order = f"{names[0]} \N{MINUS SIGN} {names[1]}"
    wrapping = _Wrapping()  # titles and bar labels, wrapped again once laid out
    with matplotlib.rc_context(style.rc()):
        fig = style.figure(style.width / (len(chosen) + 0.3) * n_rows + 1.0)
        axes = fig.subplots(n_rows, len(chosen), squeeze=False)
        side = min(_width_pt(style) / (len(chosen) + 0.5), MAX_IMAGE_SIDE * 72)  # a row's height: its labels' length
        _cam_rows(axes, pair, display, chosen, maps, names, side, alpha, style, wrapping)
        if shared_scale:
            norm, label = Normalize(0, scale), "Grad-CAM, raw units (one scale for both rows)"
        else:
            norm, label = Normalize(0, 1), "Grad-CAM \N{DIVISION SIGN} its row's maximum"
        mappable = matplotlib.cm.ScalarMappable(norm=norm, cmap=style.cmap)
        _colour_bar(fig, mappable, axes[:2, :], label, (norm.vmin, norm.vmax / 2, norm.vmax), size * 0.85,
                    wrapping)
        if difference_row:
            target_name, limit = _difference_row(fig, axes, pair, display, chosen, shared_scale, scale, order, side,
                                                 style, wrapping)
            if common is not None and common.predictions_differ:  # the reader must not take it for both predictions
                fig.suptitle(_wrap(common.message(), _width_pt(style), size * 0.85), fontsize=size * 0.85)
        _settle(fig, wrapping, list(axes.flat))
    settings = {"frames": chosen, "shared_scale": shared_scale, "difference_row": difference_row, "alpha": alpha,
                "cam_layer": pair.baseline.cam_layer, "weighting": pair.baseline.weighting, "names": list(names),
                "targets": [pair.baseline.target, pair.kpsem.target], "shared_max": pair.shared_scale,
                "colour_bar": {"cmap": style.cmap, "min": float(norm.vmin), "max": float(norm.vmax), "label": label}}
    if difference_row:
        settings["difference_bar"] = {"cmap": style.difference_cmap, "min": -float(limit), "max": float(limit),
                                      "order": order}
        settings["difference_target"] = (common.as_dict() if common is not None else
                                         {"index": pair.baseline.target, "name": target_name,
                                          "message": f"difference for {target_name!r}, the class both CAMs explain"})
    return PaperFigure("fig9_gradcam", fig, settings, style)


# --- Fig. 10 --------------------------------------------------------------------------------------


def figure_keypoints(
    analysis: ClipAnalysis,
    display: np.ndarray,
    *,
    frames: Sequence[int] | None = None,
    num_frames: int = 4,
    options: KeyPointOptions | None = None,
    name: str | None = None,
    style: FigureStyle | None = None,
) -> PaperFigure:
    """Fig. 10: key points marked by region, in colour and in shape (a reader in greyscale or with a
    colour-vision deficiency still tells them apart), sets by marker fill and line style, and the strongest
    shifts as thin arrows of the region's colour, cut at the frame's border, over frames. Raises ValueError
    for a model without KPSEM (MFNet has no key points)."""
    style = style or FigureStyle()
    options = options or KeyPointOptions()
    name = name or analysis.model_name
    if not analysis.has_kpsem:
        raise ValueError(f"Fig. 10 needs an MF-KPSEM model; {name} has no KPSEM module, so no key points")
    _check_display(display, analysis)
    total = analysis.num_frames
    chosen = _check_frames(frames, total) if frames is not None else sample_frames(total, num_frames)
    wrapping = _Wrapping()  # titles and bar labels, wrapped again once laid out
    num_regions = analysis.key_points_px.shape[1]  # type: ignore[union-attr]
    names = region_names(num_regions)
    regions = [k for k in (options.regions if options.regions is not None else range(num_regions)) if k < num_regions]
    with matplotlib.rc_context(style.rc()):
        fig = style.figure(style.width / len(chosen) + 0.6)
        axes = fig.subplots(1, len(chosen), squeeze=False)[0]
        side = min(_width_pt(style) / len(chosen), MAX_IMAGE_SIDE * 72)
        for ax, f in zip(axes, chosen):
            ax.imshow(display[f])
            draw_keypoints(ax, analysis, f, options)
            _image_axis(ax)
            wrapping.put(ax.set_title(""), f"frame {f + 1}", side)
        handles: list[Artist] = [Line2D([], [], color=REGION_COLOURS[k], marker=REGION_MARKERS[k], mfc="none",
                                        ls="-", label=names[k]) for k in regions]
        if len(options.sets) > 1:  # a set's entry shows its marker fill and line style
            handles += [Line2D([], [], color="0.3", marker="o", fillstyle=SET_FILLS[i % len(SET_FILLS)],
                               ls=SET_LINESTYLES[i % len(SET_LINESTYLES)], label=f"set {g}")
                        for i, g in enumerate(options.sets)]
        if options.highlight_crossing and num_regions > 1:
            handles.append(Patch(facecolor="0.8", edgecolor="black", label="crosses a border"))
        _legend(fig, handles, style.font_size * 0.85)
        _settle(fig, wrapping, list(axes))
    settings = {"frames": chosen, "options": asdict(options), "model": name,
                "markers": {names[k]: REGION_MARKERS[k] for k in regions}}
    return PaperFigure("fig10_keypoints", fig, settings, style)


# --- KPSEM's own views: centres over time, key point density -------------------------------------


_CENTRE_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#999999")


def figure_centres(
    analysis: ClipAnalysis,
    *,
    sets: Sequence[int] | None = None,
    name: str | None = None,
    style: FigureStyle | None = None,
) -> PaperFigure:
    """Each set's adaptive separation centre (eq. 5) over the feature frames: x and y in input pixels, one
    line per set (colour and line style), and in the sidecar how far each moves (span and path, in feature
    cells and input pixels, :func:`~kpsem.explain.analysis.centre_movement`)."""
    style = style or FigureStyle()
    name = name or analysis.model_name
    if not analysis.has_kpsem or analysis.internals is None or analysis.centres_px is None:
        raise ValueError(f"the centres figure needs an MF-KPSEM model; {name} has no KPSEM module, so no centres")
    centres = analysis.centres_px  # (G, T', 2)
    chosen = list(range(centres.shape[0])) if sets is None else [int(g) for g in sets]
    bad = [g for g in chosen if not 0 <= g < centres.shape[0]]
    if bad or not chosen:
        raise ValueError(f"sets {bad or chosen} do not exist; this model has sets 0..{centres.shape[0] - 1}")
    movements = centre_movement(analysis.internals, analysis.size)
    size = style.font_size
    frames = np.arange(1, centres.shape[1] + 1)
    wrapping = _Wrapping()
    with matplotlib.rc_context(style.rc()):
        fig = style.figure(style.width * 0.45 + 0.6)
        axes = fig.subplots(1, 2, sharex=True)
        for i, g in enumerate(chosen):
            for ax, axis in zip(axes, (0, 1)):
                ax.plot(frames, centres[g, :, axis], color=_CENTRE_COLOURS[i % len(_CENTRE_COLOURS)],
                        ls=SET_LINESTYLES[i % len(SET_LINESTYLES)] if i else "-", marker=".", lw=1.0, ms=3,
                        label=f"set {g} ({movements[g].span_px:.1f} px)")
        for ax, word in zip(axes, ("x (px, left to right)", "y (px, top to bottom)")):
            ax.set_xlabel("feature frame")
            wrapping.put(ax.set_title(""), f"centre {word}", _width_pt(style) / 2)
            ax.set_ylim(-0.5, analysis.size - 0.5)
            ax.set_xticks(frames if len(frames) <= 8 else frames[::2])
        axes[1].invert_yaxis()  # y grows downwards in an image
        _legend(fig, axes[0].get_legend_handles_labels()[0], size * 0.85)
        _settle(fig, wrapping)
    settings = {"model": name, "sets": chosen, "size": analysis.size,
                "movement": [asdict(m) for m in movements if m.set_index in chosen]}
    return PaperFigure("centres_over_time", fig, settings, style)


def figure_density(
    analysis: ClipAnalysis,
    display: np.ndarray,
    *,
    frames: Sequence[int] | None = None,
    num_frames: int = 4,
    sets: Sequence[int] | None = None,
    name: str | None = None,
    style: FigureStyle | None = None,
) -> PaperFigure:
    """Where the model looks, two ways: its Grad-CAM (above) and where KPSEM's key points gather (below: the
    share of the chosen sets' key points, over every channel and region, in each feature cell, with each
    set's centre path), on ``num_frames`` evenly sampled frames (or ``frames``)."""
    style = style or FigureStyle()
    name = name or analysis.model_name
    if not analysis.has_kpsem or analysis.internals is None:
        raise ValueError(f"the density figure needs an MF-KPSEM model; {name} has no KPSEM module, so no key points")
    _check_display(display, analysis)
    chosen = _check_frames(frames, analysis.num_frames) if frames is not None else sample_frames(
        analysis.num_frames, num_frames)
    drawn_sets = list(range(analysis.internals.centres.shape[1])) if sets is None else [int(g) for g in sets]
    counts = keypoint_density(analysis.internals, sets=drawn_sets)  # (T', H', W')
    shares = counts / counts.sum(axis=(1, 2), keepdims=True)  # each feature frame sums to 1
    top = float(shares.max()) or 1.0  # one scale for every frame of the clip
    size = style.font_size
    wrapping = _Wrapping()
    with matplotlib.rc_context(style.rc()):
        fig = style.figure(style.width / (len(chosen) + 0.3) * 2 + 1.0)
        axes = fig.subplots(2, len(chosen), squeeze=False)
        side = min(_width_pt(style) / (len(chosen) + 0.5), MAX_IMAGE_SIDE * 72)
        for c, f in enumerate(chosen):
            t = int(analysis.frame_to_feature[f])
            axes[0, c].imshow(cam_overlay(display[f], analysis.cam[f], cmap=style.cmap, alpha=0.5))
            axes[1, c].imshow(density_overlay(display[f], shares[t], cmap=style.cmap, vmax=top))
            if analysis.key_points_px is not None and analysis.key_points_px.shape[1] > 1:
                draw_centre_paths(axes[1, c], analysis, drawn_sets, line_width=0.8)
            for ax in axes[:, c]:
                _image_axis(ax)
            wrapping.put(axes[0, c].set_title(""), f"frame {f + 1}", side)
        axes[0, 0].set_ylabel(_wrap(f"{name}\nGrad-CAM", side, size))
        axes[1, 0].set_ylabel(_wrap("key points\nper cell", side, size))
        cam_norm = matplotlib.cm.ScalarMappable(norm=Normalize(0, 1), cmap=style.cmap)
        _colour_bar(fig, cam_norm, axes[:1, :], "Grad-CAM \N{DIVISION SIGN} its maximum", (0, 0.5, 1), size * 0.85,
                    wrapping)
        share_norm = matplotlib.cm.ScalarMappable(norm=Normalize(0, top), cmap=style.cmap)
        label = f"share of the key points of set{'s' if len(drawn_sets) > 1 else ''} " \
                f"{', '.join(map(str, drawn_sets))} in a feature cell (all channels and regions)"
        _colour_bar(fig, share_norm, axes[1:, :], label, (0, top / 2, top), size * 0.85, wrapping)
        _settle(fig, wrapping, list(axes.flat))
    settings = {"frames": chosen, "sets": drawn_sets, "model": name, "density_max": top,
                "feature_size": list(analysis.internals.feature_size)}
    return PaperFigure("keypoint_density", fig, settings, style)


# --- Table 1 --------------------------------------------------------------------------------------


def cost_table(costs: Sequence[ModelCost]) -> pd.DataFrame:
    """Table 1 as data: one row per model and part (and total), parameters and multiply-adds."""
    rows = []
    for cost in costs:
        for part, value in [*cost.parts.items(), ("total", cost.total)]:
            rows.append({"model": cost.model, "classes": cost.num_classes, "clip": "x".join(map(str, cost.clip)),
                         "part": part, "parameters": value.parameters, "params_M": value.parameters / 1e6,
                         "macs": value.macs, "gmacs": value.macs / 1e9})
    return pd.DataFrame(rows)


def figure_cost_table(costs: Sequence[ModelCost], *, style: FigureStyle | None = None) -> PaperFigure:
    """Table 1: parameters (M) and multiply-adds (G, the paper's "FLOPs") of each model, per part. Each
    model is shown by :func:`display_name` of its cost's name (a registry name becomes the paper's)."""
    style = style or FigureStyle()
    if not costs:
        raise ValueError("Table 1 needs at least one model cost (kpsem.profile.model_cost)")
    table = cost_table(costs)
    cells = [[display_name(r.model), r.part, f"{r.params_M:.3f}", f"{r.gmacs:.3f}"] for r in table.itertuples()]
    header = ["model", "part", "params (M)", "MACs (G)"]
    size = style.font_size
    first = costs[0]
    wrapping = _Wrapping()  # titles and bar labels, wrapped again once laid out
    with matplotlib.rc_context(style.rc()):
        title = f"{first.num_classes} classes, one {'x'.join(map(str, first.clip))} clip"
        title_lines = _wrap(title, _width_pt(style), size).count("\n") + 1
        rows = [header, *cells]
        room = _width_pt(style) - 8

        def natural(table_rows: list[list[str]], at: float) -> list[float]:  # a cell pads 10% of its width each side
            return [max(_text_width(v, at) for v in column) / 0.8 + 2 for column in zip(*table_rows)]

        # Too wide for the figure: the widest columns wrap first, at spaces and after hyphens only ("params (M)"
        # on two lines, "MF-" over "KPSEM"); only when whole words still do not fit does the table's text shrink.
        widths = natural(rows, size)
        for col in sorted(range(len(header)), key=lambda c: -widths[c]):
            excess = sum(widths) - room
            if excess <= 0:
                break
            shortest = max(_text_width(w, size) for row in rows for w in re.split(r"(?<=-)|\s+", row[col]) if w)
            target = max(shortest, (widths[col] - excess - 2) * 0.8)
            rows = [[_wrap(v, target, size) if c == col else v for c, v in enumerate(row)] for row in rows]
            widths = natural(rows, size)
        table_size = size * min(1.0, room / sum(widths))
        lines = max(v.count("\n") + 1 for row in rows for v in row)
        row_in = table_size * (1.25 * lines + 0.7) / 72
        fig = style.figure(title_lines * size * 1.4 / 72 + row_in * len(rows) + 0.15)
        ax = fig.add_subplot()
        ax.set_axis_off()
        drawn = ax.table(cellText=rows[1:], colLabels=rows[0], bbox=(0, 0, 1, 1), cellLoc="right", colLoc="right",
                         colWidths=[w / sum(widths) for w in widths])
        drawn.auto_set_font_size(False)
        drawn.set_fontsize(table_size)
        wrapping.put(ax.set_title(title), title, _width_pt(style))
        _settle(fig, wrapping)
    settings = {"costs": [c.as_dict() for c in costs], "names": list(dict.fromkeys(row[0] for row in cells)),
                "table_font_size": table_size}
    return PaperFigure("table1_cost", fig, settings, style)


# --- confusion matrices ---------------------------------------------------------------------------


def figure_confusion(compared: ComparedPredictions, *, normalise: bool = True, max_labels: int = 30,
                     names: tuple[str, str] | None = None, style: FigureStyle | None = None) -> PaperFigure:
    """Confusion matrices of both models (rows: true class) and their difference, KPSEM minus baseline
    (its title states the order), in the style's diverging map on a symmetric bar (with the default
    coolwarm: red on the diagonal and blue off it = KPSEM better). ``normalise`` divides each row by its count.
    ``names``: (baseline, KPSEM), default :func:`display_names` of the tables' model ids."""
    style = style or FigureStyle()
    names = names or display_names((compared.baseline_id, compared.kpsem_id))
    n = len(compared.class_names)
    labels = compared.items["true_label"].to_numpy()
    mats = [confusion_matrix(labels, compared.items[col].to_numpy(), n) for col in ("baseline_pred", "kpsem_pred")]
    shown = [m.astype(np.float64) for m in mats]
    if normalise:
        rows = np.maximum(mats[0].sum(axis=1, keepdims=True), 1)
        shown = [m / rows for m in shown]
    difference = shown[1] - shown[0]
    limit = float(np.abs(difference).max()) or 1.0
    order = f"{names[1]} \N{MINUS SIGN} {names[0]}"
    size, tick = style.font_size, style.font_size * 0.85
    units = "fraction of the true class" if normalise else compared.level + "s"
    wrapping = _Wrapping()  # titles and bar labels, wrapped again once laid out
    with matplotlib.rc_context(style.rc()):
        # Class names only where each matrix leaves every class a tick label's height: three matrices side by
        # side at one column and a large font leave no room for them, and names that overlap say nothing.
        names_in = max(_text_width(c, tick) for c in compared.class_names) / 72 + 0.05
        pads_in = 2.5 * size / 72 + 0.5  # "true", colour-bar and figure pads
        panel_pt = ((style.width - names_in - pads_in) * 72) / 3
        class_ticks = n <= max_labels and panel_pt >= 40 and panel_pt / n >= tick * 1.05
        if not class_ticks:
            names_in, panel_pt = 0.0, (style.width - pads_in) * 72 / 3
        fig = style.figure(style.width / 3 + names_in + 1.2)
        axes = fig.subplots(1, 3)
        vmax = 1.0 if normalise else float(max(m.max() for m in shown)) or 1.0
        for ax, data, title, cmap, lo, hi, bar_label in zip(
                axes, (*shown, difference), (*names, order), ("Blues", "Blues", style.difference_cmap),
                (0, 0, -limit), (vmax, vmax, limit), (units, units, units)):  # the title above states the order
            image = ax.imshow(data, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
            wrapping.put(ax.set_title(title), title, panel_pt)
            if class_ticks:
                ax.set_xticks(range(n), compared.class_names, rotation=90)
                ax.set_yticks(range(n), compared.class_names if ax is axes[0] else [])
            else:
                ax.set_xticks([])
                ax.set_yticks([])
            bar = fig.colorbar(image, ax=ax, location="bottom", shrink=0.9, aspect=15, pad=0.03)
            ticks = [lo, (lo + hi) / 2, hi]
            texts = [f"{t:.2g}".replace("-", "\N{MINUS SIGN}") for t in ticks]
            if sum(_text_width(t, tick) for t in texts) > panel_pt * 0.7:  # a short bar: its ends only
                ticks, texts = ticks[::2], texts[::2]
            bar.set_ticks(ticks, labels=texts)
            bar.set_label(bar_label, fontsize=tick)
            wrapping.put(bar.ax.xaxis.label, bar_label, panel_pt * 0.9, bar.ax)
        axes[0].set_xlabel("predicted")  # once, as "true" is: the three matrices share their axes
        axes[0].set_ylabel("true")
        _settle(fig, wrapping, list(axes))
    settings = {"normalise": normalise, "level": compared.level, "baseline_id": compared.baseline_id,
                "kpsem_id": compared.kpsem_id, "names": list(names), "difference": order, "items": len(labels)}
    return PaperFigure("confusion_matrices", fig, settings, style)
