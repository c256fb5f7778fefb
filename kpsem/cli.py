"""The one command line: ``python -m kpsem <command> ...``; commands live in ``kpsem.commands``."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import NoReturn

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


def _announce(name: str, module: ModuleType, words: Sequence[str]) -> None:
    """Say at once what the command is about to do, before its options are built and it runs: both import
    PyTorch and more, seconds in which a command that prints nothing looks hung. A command's
    ``starting(words)`` gives the line; help, ``--json`` output and the other ranks of torchrun print none."""
    if {"-h", "--help", "--version", "--json"} & set(words) or os.environ.get("RANK", "0") != "0":
        return
    starting = getattr(module, "starting", None)
    print(starting(words) if starting is not None else f"kpsem {name}: starting ...", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; known bad input ends with a one-line message and exit status 2 (the project's own
    errors, CheckpointError, VideoError and the rest, are ValueErrors)."""
    words = sys.argv[1:] if argv is None else list(argv)
    names = _command_modules()
    chosen = next((word for word in words if word in names), "")  # "" builds no command's options
    if chosen:
        _announce(chosen, names[chosen], words)
    args = build_parser(chosen).parse_args(words)
    try:
        status = int(args.run(args) or 0)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        status = 2
    if argv is None and getattr(names[chosen], "EXIT_AT_ONCE", False):  # the program itself, not a caller
        _exit_at_once(status)
    return status


def _exit_at_once(status: int) -> NoReturn:
    """End the process now, after the atexit handlers, without the interpreter's teardown.

    Why: with PyTorch, grad-cam (scikit-learn, torchvision) and matplotlib loaded, tearing the interpreter
    down took 1 to 3 s after the last line was printed. A command that opts in (``EXIT_AT_ONCE``) has
    written and closed every file by then; streams are flushed here."""
    import atexit

    atexit._run_exitfuncs()  # logging, multiprocessing, weakref finalizers: what a normal exit runs first
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
