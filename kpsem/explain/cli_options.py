"""Figure style options shared by the `explain` and `compare` commands."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from kpsem.names import COLUMN_WIDTHS, DEFAULT_CMAP, DEFAULT_DIFFERENCE_CMAP, FIGURE_FORMATS

if TYPE_CHECKING:  # the options are built without matplotlib or torch (kpsem --help); these come on use
    from kpsem.checkpoint import CheckpointInfo
    from kpsem.explain.figures import FigureStyle

__all__ = ["add_style_arguments", "style_from_args", "formats_from_args", "names_from_args"]


def add_style_arguments(parser: argparse.ArgumentParser) -> None:
    """The figure options, in one group, so both commands draw alike."""
    group = parser.add_argument_group("figure style")
    group.add_argument("--column", choices=tuple(COLUMN_WIDTHS), default="double",
                       help="figure width: single (3.5 in) or double (7.16 in) column (default double)")
    group.add_argument("--font-size", type=float, default=8.0, help="base font size in points (default 8)")
    group.add_argument("--cmap", default=DEFAULT_CMAP, help=f"Grad-CAM colour map (default {DEFAULT_CMAP}, "
                       "perceptually uniform; any matplotlib name, e.g. cividis, inferno, jet)")
    group.add_argument("--difference-cmap", default=DEFAULT_DIFFERENCE_CMAP,
                       help=f"diverging colour map of differences (default {DEFAULT_DIFFERENCE_CMAP}; e.g. RdBu_r)")
    group.add_argument("--labels", nargs=2, default=None, metavar=("BASELINE", "KPSEM"),
                       help="model names on the figures (default: each checkpoint's display name, else the "
                            "paper's name for its architecture)")
    group.add_argument("--dpi", type=int, default=300, help="PNG resolution (default 300)")
    group.add_argument("--formats", nargs="+", choices=FIGURE_FORMATS, default=list(FIGURE_FORMATS),
                       help="files to write")


def style_from_args(args: argparse.Namespace) -> FigureStyle:
    from kpsem.explain.figures import FigureStyle

    return FigureStyle(column=args.column, font_size=args.font_size, cmap=args.cmap, dpi=args.dpi,
                       difference_cmap=args.difference_cmap)


def formats_from_args(args: argparse.Namespace) -> tuple[str, ...]:
    return tuple(args.formats)


def names_from_args(
    args: argparse.Namespace,
    *,
    ids: Sequence[str | None] = (None, None),
    infos: Sequence[CheckpointInfo | None] = (None, None),
) -> tuple[str, str]:
    """(baseline, KPSEM) names for the figures: ``--labels`` when given, else what the checkpoints
    (``infos``) or the predictions' model ids (``ids``) say, through :func:`~kpsem.explain.figures.display_names`."""
    from kpsem.explain.figures import display_names

    labels = getattr(args, "labels", None) or (None, None)
    return display_names(ids, labels=labels, infos=infos)
