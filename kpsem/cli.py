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


def build_parser() -> argparse.ArgumentParser:
    from kpsem import __version__

    parser = argparse.ArgumentParser(prog="python -m kpsem", description="KPSEM Studio: MFNet and MF-KPSEM tools")
    parser.add_argument("--version", action="version", version=f"kpsem {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in _command_modules().items():
        sub = commands.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; known bad input ends with a one-line message and exit status 2."""
    from kpsem.checkpoint import CheckpointError

    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (CheckpointError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
