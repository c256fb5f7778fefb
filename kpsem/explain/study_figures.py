"""Fig. 5 of the paper from a design study: accuracy against KPSEM's position, K, G and d_e.

Drawing only: the panels' numbers come from :func:`kpsem.study.design_panels`. Kept apart from
:mod:`kpsem.explain.figures` (the per-model paper figures) and built on its :class:`FigureStyle` and
:class:`PaperFigure`, so the figure is saved like every other one (PNG, PDF, SVG and a JSON sidecar).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING

import matplotlib
import numpy as np

from kpsem.explain.figures import FigureStyle, PaperFigure

if TYPE_CHECKING:
    from kpsem.study import Panel

__all__ = ["figure_design_study"]

VARIANT_COLOUR = "#D55E00"  # MF-KPSEM's colour in the project's figures
BASELINE_COLOUR = "#7f7f7f"  # the baseline's grey


def figure_design_study(panels: Sequence[Panel], *, plan_name: str = "", style: FigureStyle | None = None
                        ) -> PaperFigure:
    """Fig. 5: one panel per option, video top-1 (%) with the standard deviation over seeds as error bars and
    the baseline as a dashed line (its spread shaded). Values the plan asks for that have no finished run, or
    that this build cannot run, keep their tick and are named in the panel's note; a panel the plan does not
    vary is drawn empty with a note saying so."""
    style = style or FigureStyle()
    size = style.font_size
    rows = int(np.ceil(len(panels) / 2)) or 1
    with matplotlib.rc_context(style.rc()):
        fig = style.figure(2.0 * rows + 0.5)
        axes = fig.subplots(rows, 2, squeeze=False).ravel()
        for ax in axes[len(panels):]:
            ax.set_visible(False)
        wrap = max(20, int(style.width / 2 * 72 / (size * 0.5)))  # characters per note line in half the width
        for ax, panel in zip(axes, panels):
            x = {tick: i for i, tick in enumerate(panel.ticks)}
            if panel.baseline is not None and not np.isnan(panel.baseline[1]):
                label, mean, std = panel.baseline
                ax.axhline(mean * 100, color=BASELINE_COLOUR, linestyle="--", linewidth=1.0, label=label)
                if not np.isnan(std):
                    ax.axhspan((mean - std) * 100, (mean + std) * 100, color=BASELINE_COLOUR, alpha=0.15, linewidth=0)
            if len(panel.points):
                xs = [x[t] for t in panel.points["tick"]]
                means = panel.points["mean"].to_numpy(dtype=float) * 100
                errors = np.nan_to_num(panel.points["std"].to_numpy(dtype=float) * 100)  # one seed: no bar
                ax.errorbar(xs, means, yerr=errors, color=VARIANT_COLOUR, marker="o", markersize=3.5, linewidth=1.0,
                            capsize=2.5, elinewidth=0.8, label="MF-KPSEM")
            # A value without a point says why under its tick; the full reasons are in the sidecar.
            ax.set_xticks(range(len(panel.ticks)),
                          [t + (f"\n({panel.missing[t]})" if t in panel.missing else "") for t in panel.ticks])
            ax.set_xlim(-0.5, max(len(panel.ticks), 1) - 0.5)
            ax.set_xlabel(panel.axis if panel.varied else f"{panel.axis} (not varied by this plan)")
            ax.set_ylabel("top-1 (%)")
            ax.set_title(panel.title, loc="left")
            ax.grid(axis="y", linewidth=0.4, alpha=0.5)
            if not len(panel.points) and panel.baseline is None:  # nothing to draw: say why in the panel
                ax.text(0.5, 0.5, "\n".join(textwrap.fill(n, wrap) for n in panel.notes or ["no finished run yet"]),
                        transform=ax.transAxes, ha="center", va="center", fontsize=size * 0.7, color="0.3")
                ax.set_yticks([])
        handles = {}
        for ax in axes[:len(panels)]:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(label, handle)
        if handles:
            fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=len(handles),
                       fontsize=size * 0.85, frameon=False)
    settings = {
        "plan": plan_name,
        "panels": [{"option": p.option, "title": p.title, "ticks": list(p.ticks), "notes": list(p.notes),
                    "points": [{k: _number(v) for k, v in point.items()} for point in p.points.to_dict("records")],
                    "baseline": None if p.baseline is None else [_number(v) for v in p.baseline]} for p in panels],
        "error_bars": "sample standard deviation over seeds (n - 1); none for a single seed",
    }
    return PaperFigure("fig5_design", fig, settings, style)


def _number(value: object) -> object:
    """NaN (a spread over one seed) as None, so that the sidecar is valid JSON."""
    return None if isinstance(value, float) and np.isnan(value) else value
