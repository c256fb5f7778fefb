"""Command-line options made from a typed config's fields, so that each field is written once.

A field's ``metadata`` holds its ``help`` and option ``group``, and may say ``flag`` (None: the command adds
it itself), ``choices``, ``parse`` (text -> value; its ValueError becomes the usage error), ``metavar``,
``const`` (the value of the bare flag) and ``required`` (by the command, from the flag or a config file).
The type, the default shown in the help and how a bool is spelled (``--x`` for a False default,
``--no-x`` for True) come from the dataclass itself. Options left out of a command line are absent from
the namespace (``argparse.SUPPRESS``), so that only those given override a config file.

Kept free of torch imports: a command's options are built for ``--help`` too.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["add_field_arguments", "given_fields", "check_required"]


def _plain_type(hint: Any) -> Any:
    """``int | None`` -> ``int``; other unions and generics are returned as they are."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        return rest[0] if len(rest) == 1 else hint
    return hint


def _parser_of(parse: Callable[[str], Any], name: str) -> Callable[[str], Any]:
    """``parse`` with its ValueError shown as the usage error, message and all."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = name  # argparse names the type in its own messages
    return convert


def _shown(value: Any) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, tuple | list) else str(value)


def _help(spec: dataclasses.Field, shown_default: Any) -> str:
    text = spec.metadata["help"]
    if spec.metadata.get("required"):
        text += " (required, here or in a config file)"
    elif shown_default is True:
        text += " (on by default; this flag turns it off)"
    elif shown_default is not None and not isinstance(shown_default, bool) and "default" not in text:
        text += f" (default {_shown(shown_default)})"
    return text.replace("%", "%%")  # argparse formats help text with %


def add_field_arguments(groups: Mapping[str, Any], config_type: type, *,
                        defaults: Mapping[str, Any] | None = None) -> None:
    """One option per field of dataclass ``config_type``, in the argument group its metadata names; ``defaults``
    are the command's own where they differ from the dataclass's (shown in the help)."""
    hints = typing.get_type_hints(config_type)
    for spec in dataclasses.fields(config_type):
        meta = spec.metadata
        if "help" not in meta or "group" not in meta:
            raise TypeError(f"{config_type.__name__}.{spec.name} has no help text or group in its metadata")
        if not _has_flag(spec):
            continue
        default = (defaults or {}).get(spec.name, spec.default)
        if default is dataclasses.MISSING:
            default = None
        kind = _plain_type(hints[spec.name])
        name = spec.name.replace("_", "-")
        options: dict[str, Any] = {"dest": spec.name, "default": argparse.SUPPRESS, "help": _help(spec, default)}
        if kind is bool:
            flags = [f"--no-{name}" if default else f"--{name}"]
            options["action"] = "store_false" if default else "store_true"
        else:
            flags = [f"--{name}"]
            if "parse" in meta:
                options["type"] = _parser_of(meta["parse"], spec.name)
            elif kind in (int, float, str):
                options["type"] = kind
            else:
                raise TypeError(f"{config_type.__name__}.{spec.name}: say in its metadata how to parse {kind}")
            for key in ("choices", "metavar"):
                if key in meta:
                    options[key] = meta[key]
            if "const" in meta:
                options.update(nargs="?", const=meta["const"])
        groups[meta["group"]].add_argument(*flags, **options)


def _has_flag(spec: dataclasses.Field) -> bool:
    return not ("flag" in spec.metadata and spec.metadata["flag"] is None)


def given_fields(args: argparse.Namespace, config_type: type) -> dict[str, Any]:
    """The fields of ``config_type`` that the command line set with their own flags (those left out are absent)."""
    return {spec.name: getattr(args, spec.name) for spec in dataclasses.fields(config_type)
            if _has_flag(spec) and hasattr(args, spec.name)}


def check_required(values: Mapping[str, Any], config_type: type) -> None:
    """Refuse values that leave a field the command requires unset, naming its flag."""
    for spec in dataclasses.fields(config_type):
        if spec.metadata.get("required") and values.get(spec.name) is None:
            flag = "--" + spec.name.replace("_", "-")
            raise ValueError(f"{flag} is required: pass {flag} {spec.name.upper()}, or --config with a file that "
                             f"sets {spec.name}")
