"""Figure style options shared by the `explain` and `compare` commands."""

from __future__ import annotations

import argparse

from kpsem.explain.figures import COLUMN_WIDTHS, FORMATS, FigureStyle

__all__ = ["add_style_arguments", "style_from_args", "formats_from_args"]


def add_style_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("figure style")
    group.add_argument("--column", choices=tuple(COLUMN_WIDTHS), default="double", help="figure width (default double)")
    group.add_argument("--font-size", type=float, default=8.0, help="base font size in points (default 8)")
    group.add_argument("--cmap", default="jet", help="Grad-CAM colour map (default jet)")
    group.add_argument("--dpi", type=int, default=300, help="PNG resolution (default 300)")
    group.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS), help="files to write")


def style_from_args(args: argparse.Namespace) -> FigureStyle:
    return FigureStyle(column=args.column, font_size=args.font_size, cmap=args.cmap, dpi=args.dpi)


def formats_from_args(args: argparse.Namespace) -> tuple[str, ...]:
    return tuple(args.formats)
