"""Paper figures (section 4.4 of the paper) with matplotlib, from models and data the user chose.

Every builder returns a :class:`PaperFigure`: the matplotlib ``Figure`` (made without pyplot, so the
Streamlit app can build them from several threads) and the settings that made it. ``save`` writes PNG
at a chosen DPI, PDF and SVG, plus one JSON sidecar of those settings, so a figure can be remade exactly.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from kpsem.explain.analysis import ClipAnalysis, CommonTarget, PairAnalysis
from kpsem.explain.compare import ComparedPredictions, confusion_matrix
from kpsem.explain.draw import (
    REGION_COLOURS,
    REGION_NAMES,
    KeyPointOptions,
    cam_overlay,
    difference_overlay,
    draw_keypoints,
)
from kpsem.io import atomic_path, atomic_write_text
from kpsem.profile import ModelCost

__all__ = [
    "COLUMN_WIDTHS",
    "FORMATS",
    "FigureStyle",
    "PaperFigure",
    "sample_frames",
    "figure_per_class_accuracy",
    "figure_top_predictions",
    "figure_gradcam",
    "figure_keypoints",
    "cost_table",
    "figure_cost_table",
    "figure_confusion",
]

COLUMN_WIDTHS = {"single": 3.5, "double": 7.16}  # inches: a two-column paper's column and full width
FORMATS = ("png", "pdf", "svg")
MODEL_COLOURS = ("#7f7f7f", "#D55E00")  # baseline grey, KPSEM vermillion, in every figure


@dataclass
class FigureStyle:
    """Look of a figure; stored in its sidecar."""

    column: Literal["single", "double"] = "double"  # width: one column or the full page width
    font_size: float = 8.0  # base font size in points
    cmap: str = "jet"  # colour map of Grad-CAM overlays
    dpi: int = 300  # PNG resolution (vector formats ignore it)

    def __post_init__(self) -> None:
        if self.column not in COLUMN_WIDTHS:
            raise ValueError(f"column must be one of {tuple(COLUMN_WIDTHS)}; got {self.column!r}")
        if self.font_size <= 0:
            raise ValueError(f"font_size must be positive; got {self.font_size}")
        if self.cmap not in matplotlib.colormaps:
            raise ValueError(f"unknown colour map {self.cmap!r}; use a matplotlib name such as "
                             f"'jet', 'viridis', 'inferno'")
        if self.dpi < 10:
            raise ValueError(f"dpi must be at least 10; got {self.dpi}")

    @property
    def width(self) -> float:
        return COLUMN_WIDTHS[self.column]

    def figure(self, height: float) -> Figure:
        """A pyplot-free Figure of the style's width with constrained layout."""
        return Figure(figsize=(self.width, height), layout="constrained")

    def rc(self) -> dict[str, Any]:
        size = self.font_size
        return {"font.size": size, "axes.titlesize": size, "axes.labelsize": size, "xtick.labelsize": size * 0.85,
                "ytick.labelsize": size * 0.85, "legend.fontsize": size * 0.85, "svg.hashsalt": "kpsem",
                "pdf.fonttype": 42, "svg.fonttype": "path"}


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
                if fmt in ("pdf", "svg"):
                    metadata["Date"] = None  # reproducible files
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
    of one or two videos is well inside it."""
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
    with matplotlib.rc_context(style.rc()):
        fig = style.figure(2.4 if style.column == "double" else 2.2)
        ax = fig.add_subplot()
        if chosen.empty:
            ax.text(0.5, 0.5, f"no class where {names[1]} {'wins' if mode == 'wins' else 'loses'} "
                    f"by at least {margin:.0%}",
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
            ax.set_xticks(x, chosen["class_name"], rotation=60, ha="right")
            fig.legend(loc="outside upper right", ncols=2, frameon=False)
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        verb = "beats" if mode == "wins" else "trails"
        by = f" by {margin:.0%} or more" if margin > 0 else ""
        whiskers_note = "; whiskers: Wilson 95%" if intervals and not chosen.empty else ""
        ax.set_title(f"{names[1]} {verb} {names[0]}{by}: {len(chosen)} classes{whiskers_note}", loc="left")
    settings = {"margin": margin, "mode": mode, "names": list(names), "max_classes": max_classes,
                "classes": chosen["class_name"].tolist(), "intervals": "Wilson 95%" if intervals else None}
    return PaperFigure("fig7_per_class_" + mode, fig, settings, style)


# --- Fig. 8 ---------------------------------------------------------------------------------------


def figure_top_predictions(
    pairs: Sequence[PairAnalysis],
    frames: Sequence[np.ndarray],
    *,
    true_labels: Sequence[str | None] | None = None,
    topk: int = 3,
    style: FigureStyle | None = None,
) -> PaperFigure:
    """Fig. 8: one column per clip: a frame, then each model's top-``topk`` probabilities (true class
    in bold). ``frames[i]`` is a uint8 (S, S, 3) frame of clip i."""
    style = style or FigureStyle()
    if len(pairs) != len(frames) or not pairs:
        raise ValueError(f"need one frame per analysed clip and at least one clip; got {len(pairs)} "
                         f"clips, {len(frames)} frames")
    truths = list(true_labels) if true_labels is not None else [None] * len(pairs)
    columns = len(pairs)
    with matplotlib.rc_context(style.rc()):
        fig = style.figure(style.width / columns * 1.0 + 1.6)
        grid = fig.add_gridspec(3, columns, height_ratios=(2.2, 1, 1))
        for i, (pair, frame, truth) in enumerate(zip(pairs, frames, truths)):
            ax = fig.add_subplot(grid[0, i])
            ax.imshow(frame)
            _image_axis(ax)
            if truth is not None:
                ax.set_title(truth)
            for row, (analysis, colour) in enumerate(zip((pair.baseline, pair.kpsem), MODEL_COLOURS), start=1):
                bar_ax = fig.add_subplot(grid[row, i])
                top = analysis.topk[:topk]
                y = np.arange(len(top))
                bar_ax.barh(y, [t.probability for t in top], color=colour)
                for yi, t in zip(y, top):
                    bar_ax.text(min(t.probability + 0.02, 0.75), yi, f"{t.probability:.2f}", va="center",
                                fontsize=style.font_size * 0.8)
                bar_ax.set_yticks(y, [t.name for t in top])
                for label, t in zip(bar_ax.get_yticklabels(), top):
                    label.set_fontweight("bold" if truth is not None and t.name == truth else "normal")
                bar_ax.invert_yaxis()
                bar_ax.set_xlim(0, 1)
                if i == 0:
                    bar_ax.set_ylabel(analysis.model_name)
                if row == 1:
                    bar_ax.set_xticklabels([])
    settings = {"topk": topk, "true_labels": truths,
                "predictions": [[p.baseline.summary(), p.kpsem.summary()] for p in pairs]}
    return PaperFigure("fig8_top_predictions", fig, settings, style)


# --- Fig. 9 ---------------------------------------------------------------------------------------


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
    style: FigureStyle | None = None,
) -> PaperFigure:
    """Fig. 9: Grad-CAM rows, baseline above and KPSEM below, on ``num_frames`` evenly sampled frames
    (or ``frames``). ``shared_scale``: one colour bar for both rows (raw maps over the pair's maximum);
    otherwise each row is normalised to its own maximum. ``difference_row`` adds baseline minus KPSEM,
    which needs both CAMs for one class; ``common`` (:func:`~kpsem.explain.analysis.common_target`) says
    which and why, in the sidecar and, when the models' own predictions differ, on the figure."""
    style = style or FigureStyle()
    _check_display(display, pair.baseline)
    if difference_row and not pair.same_target:
        names = pair.baseline.class_names
        raise ValueError(
            f"the difference row compares two CAMs of one class, but these explain {names[pair.baseline.target]!r} "
            f"({pair.baseline.model_name}) and {names[pair.kpsem.target]!r} ({pair.kpsem.model_name}); analyse the "
            "pair for one target (kpsem.explain.analysis.common_target)")
    if difference_row and common is not None and not common.explains(pair):
        raise ValueError(f"common target {common.name!r} is not the class these CAMs explain "
                         f"({pair.baseline.class_names[pair.baseline.target]!r})")
    total = pair.baseline.num_frames
    chosen = _check_frames(frames, total) if frames is not None else sample_frames(total, num_frames)
    maps = (pair.baseline_shared, pair.kpsem_shared) if shared_scale else (pair.baseline.cam, pair.kpsem.cam)
    rows = [(pair.baseline, maps[0]), (pair.kpsem, maps[1])]
    n_rows = 3 if difference_row else 2
    with matplotlib.rc_context(style.rc()):
        fig = style.figure(style.width / (len(chosen) + 0.3) * n_rows + 0.3)
        axes = fig.subplots(n_rows, len(chosen), squeeze=False)
        for r, (analysis, cams) in enumerate(rows):
            for c, f in enumerate(chosen):
                ax = axes[r, c]
                ax.imshow(cam_overlay(display[f], cams[f], cmap=style.cmap, alpha=alpha))
                _image_axis(ax)
                if r == 0:
                    ax.set_title(f"frame {f + 1}")
            axes[r, 0].set_ylabel(f"{analysis.model_name}\n{analysis.class_names[analysis.target]}")
        mappable = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(0, 1), cmap=style.cmap)
        label = "Grad-CAM, each model's max"
        if shared_scale:
            label = f"Grad-CAM, shared scale (max {pair.shared_scale:.3g})"
        fig.colorbar(mappable, ax=axes[:2, :], fraction=0.03, pad=0.01, label=label)
        if difference_row:
            for c, f in enumerate(chosen):
                ax = axes[2, c]
                signed = pair.difference[f] if shared_scale else pair.difference_normalised[f]
                ax.imshow(difference_overlay(display[f], signed))
                _image_axis(ax)
            target_name = pair.baseline.class_names[pair.baseline.target]
            axes[2, 0].set_ylabel(f"baseline\nminus KPSEM\n{target_name}")
            diverging = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(-1, 1), cmap="RdBu_r")
            fig.colorbar(diverging, ax=axes[2:, :], fraction=0.03, pad=0.01, label="difference")
            if common is not None and common.predictions_differ:  # the reader must not take it for both predictions
                fig.suptitle(common.message(), fontsize=style.font_size * 0.85)
    settings = {"frames": chosen, "shared_scale": shared_scale, "difference_row": difference_row, "alpha": alpha,
                "cam_layer": pair.baseline.cam_layer, "weighting": pair.baseline.weighting,
                "targets": [pair.baseline.target, pair.kpsem.target], "shared_max": pair.shared_scale}
    if difference_row:
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
    style: FigureStyle | None = None,
) -> PaperFigure:
    """Fig. 10: key points as crosses coloured by region and shifts as arrows of the same colours, over
    frames. Raises ValueError for a model without KPSEM (MFNet has no key points)."""
    style = style or FigureStyle()
    options = options or KeyPointOptions()
    if not analysis.has_kpsem:
        raise ValueError(f"Fig. 10 needs an MF-KPSEM model; {analysis.model_name} has no KPSEM "
                         f"module, so no key points")
    _check_display(display, analysis)
    total = analysis.num_frames
    chosen = _check_frames(frames, total) if frames is not None else sample_frames(total, num_frames)
    with matplotlib.rc_context(style.rc()):
        fig = style.figure(style.width / len(chosen) + 0.45)
        axes = fig.subplots(1, len(chosen), squeeze=False)[0]
        for ax, f in zip(axes, chosen):
            ax.imshow(display[f])
            draw_keypoints(ax, analysis, f, options)
            _image_axis(ax)
            ax.set_title(f"frame {f + 1}")
        regions = [k for k in options.regions if k < analysis.key_points_px.shape[1]]  # type: ignore[union-attr]
        handles = [Line2D([], [], color=REGION_COLOURS[k], marker="x", ls="-", label=REGION_NAMES[k]) for k in regions]
        if options.highlight_crossing:
            handles.append(Line2D([], [], color="black", ls="--", label="crosses a border"))
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False)
    settings = {"frames": chosen, "options": asdict(options), "model": analysis.model_name}
    return PaperFigure("fig10_keypoints", fig, settings, style)


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
    """Table 1: parameters (M) and multiply-adds (G, the paper's "FLOPs") of each model, per part."""
    style = style or FigureStyle()
    if not costs:
        raise ValueError("Table 1 needs at least one model cost (kpsem.profile.model_cost)")
    table = cost_table(costs)
    cells = [[r.model, r.part, f"{r.params_M:.3f}", f"{r.gmacs:.3f}"] for r in table.itertuples()]
    with matplotlib.rc_context(style.rc()):
        fig = style.figure(0.3 + 0.2 * (len(cells) + 1))
        ax = fig.add_subplot()
        ax.set_axis_off()
        drawn = ax.table(cellText=cells, colLabels=["model", "part", "params (M)", "mult-adds (G)"], loc="center",
                         cellLoc="right", colLoc="right")
        drawn.auto_set_font_size(False)
        drawn.set_fontsize(style.font_size)
        first = costs[0]
        ax.set_title(f"{first.num_classes} classes, one {'x'.join(map(str, first.clip))} clip")
    settings = {"costs": [c.as_dict() for c in costs]}
    return PaperFigure("table1_cost", fig, settings, style)


# --- confusion matrices ---------------------------------------------------------------------------


def figure_confusion(compared: ComparedPredictions, *, normalise: bool = True, max_labels: int = 30,
                     style: FigureStyle | None = None) -> PaperFigure:
    """Confusion matrices of both models (rows: true class) and their difference, KPSEM minus baseline
    (blue on the diagonal and red off it = KPSEM better). ``normalise`` divides each row by its count."""
    style = style or FigureStyle()
    n = len(compared.class_names)
    labels = compared.items["true_label"].to_numpy()
    mats = [confusion_matrix(labels, compared.items[col].to_numpy(), n) for col in ("baseline_pred", "kpsem_pred")]
    shown = [m.astype(np.float64) for m in mats]
    if normalise:
        rows = np.maximum(mats[0].sum(axis=1, keepdims=True), 1)
        shown = [m / rows for m in shown]
    difference = shown[1] - shown[0]
    limit = float(np.abs(difference).max()) or 1.0
    titles = (compared.baseline_id, compared.kpsem_id, "KPSEM minus baseline")
    with matplotlib.rc_context(style.rc()):
        fig = style.figure(style.width / 3 + 0.9)
        axes = fig.subplots(1, 3)
        vmax = 1.0 if normalise else float(max(m.max() for m in shown)) or 1.0
        for ax, data, title, cmap, lo, hi in zip(axes, (*shown, difference), titles, ("Blues", "Blues", "RdBu"),
                                                 (0, 0, -limit), (vmax, vmax, limit)):
            image = ax.imshow(data, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_title(title)
            if n <= max_labels:
                ax.set_xticks(range(n), compared.class_names, rotation=90)
                ax.set_yticks(range(n), compared.class_names if ax is axes[0] else [])
            else:
                ax.set_xticks([])
                ax.set_yticks([])
            ax.set_xlabel("predicted")
            fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
        axes[0].set_ylabel("true")
    settings = {"normalise": normalise, "level": compared.level, "baseline_id": compared.baseline_id,
                "kpsem_id": compared.kpsem_id, "items": len(labels)}
    return PaperFigure("confusion_matrices", fig, settings, style)
