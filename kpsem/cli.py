"""The one command line: ``python -m kpsem <command> ...``; commands live in ``kpsem.commands``."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType

__all__ = ["main", "build_parser", "parse_clip"]


def parse_clip(text: str) -> tuple[int, int, int]:
    """'16x224x224' -> (16, 224, 224)."""
    try:
        frames, height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"clip must look like 16x224x224 (frames x height x width); got {text!r}"
        ) from None
    return frames, height, width


def _command_modules() -> dict[str, ModuleType]:
    import kpsem.commands

    names = sorted(m.name for m in pkgutil.iter_modules(kpsem.commands.__path__) if not m.name.startswith("_"))
    return {name: importlib.import_module(f"kpsem.commands.{name}") for name in names}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``only``, just that command's options are built (the others are listed
    by name and help), because building a command's options may import torch or matplotlib."""
    from kpsem import __version__

    parser = argparse.ArgumentParser(prog="kpsem", description="KPSEM Studio: MFNet and MF-KPSEM tools")
    parser.add_argument("--version", action="version", version=f"kpsem {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in _command_modules().items():
        sub = commands.add_parser(name, help=module.HELP, description=module.HELP)
        if only is None or only == name:
            module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; known bad input ends with a one-line message and exit status 2 (the project's own
    errors, CheckpointError, VideoError and the rest, are ValueErrors)."""
    words = sys.argv[1:] if argv is None else list(argv)
    names = _command_modules()
    chosen = next((word for word in words if word in names), "")  # "" builds no command's options
    args = build_parser(chosen).parse_args(words)
    try:
        return int(args.run(args) or 0)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
