"""The ``--precision`` option that every model-running command shares, and the ``--amp`` it replaces.

Kept free of torch imports: a command's options are built for ``--help`` too.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["CHOICES", "add_precision_argument", "precision_from_args", "announce"]

CHOICES = ("auto", "fp32", "bf16", "fp16")  # kpsem.precision.PRECISIONS (tests check that they agree)
_AMP_CHOICES = ("auto", "bf16", "fp16", "off")  # the deprecated --amp's values; off is fp32
HELP = ("numeric precision: auto (default) is bf16 autocast on CUDA and on CPUs with native bf16 "
        "(avx512_bf16 or amx_bf16 flag), fp32 elsewhere; or fp32, bf16, fp16 (autocast; weights stay float32). "
        "The command prints which ran and why")


def add_precision_argument(parser: argparse.ArgumentParser | Any, *, amp_alias: bool = False,
                           extra_help: str = "") -> None:
    """Add ``--precision`` (and, where a command had it, the deprecated ``--amp``) to ``parser``."""
    parser.add_argument("--precision", choices=CHOICES, default=None, help=HELP + extra_help)
    if amp_alias:
        parser.add_argument("--amp", choices=_AMP_CHOICES, default=None,
                            help="deprecated alias of --precision (off is fp32); prints a warning")


def precision_from_args(args: argparse.Namespace) -> str:
    """The precision the command line asks for: ``--precision``, else the deprecated ``--amp`` (with a
    warning on stderr), else auto. Both given and different is refused."""
    precision, amp = getattr(args, "precision", None), getattr(args, "amp", None)
    if amp is None:
        return precision or "auto"
    mapped = "fp32" if amp == "off" else amp
    if precision is not None and precision != mapped:
        raise ValueError(f"--amp {amp} and --precision {precision} ask for different precisions; "
                         "use --precision alone (--amp is deprecated)")
    print(f"warning: --amp is deprecated; use --precision {mapped}", file=sys.stderr)
    return mapped


def announce(device: Any, precision: str, *, what: str = "") -> Any:
    """Resolve ``precision`` on ``device`` (:func:`kpsem.precision.resolve_precision`), print which one runs
    and why, and return it."""
    from kpsem.precision import resolve_precision

    resolved = resolve_precision(device, precision)
    print(f"{what}{resolved.describe()} on {device}")
    return resolved
