"""A checkpoint's metadata as tables a person reads: its model config and how it was made (provenance), nested
settings flattened to one row each (``metrics.val_top1``), lists on one line, the training command as the one
line a shell would take.

Values come from the file, so they are data: the Models page shows them in ``st.dataframe`` (plain text) and
``st.code``, never as Markdown.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from typing import Any

import pandas as pd

__all__ = ["MAX_CELL_CHARS", "SECTIONS", "cell", "flatten", "command_line", "provenance_tables", "config_table"]

MAX_CELL_CHARS = 2000  # one value as shown; a longer one is cut with its length stated
SECTIONS = {  # provenance key: title of its table (others are titled by their key)
    "config": "Training settings",
    "dataset": "Data set",
    "metrics": "Metrics at the last epoch",
    "init": "Initialisation",
}


def cell(value: Any) -> str:
    """One value as one line of text: numbers to 6 significant digits, lists joined by commas, None as "—"."""
    if value is None:
        text = "—"
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, list | tuple):
        text = ", ".join(cell(v) if not isinstance(v, list | tuple | Mapping) else _compact(v) for v in value)
        text = text or "(none)"
    elif isinstance(value, Mapping):
        text = _compact(value)
    else:
        text = " ".join(str(value).splitlines())
    if len(text) > MAX_CELL_CHARS:
        text = f"{text[:MAX_CELL_CHARS]} … ({len(text)} characters)"
    return text


def _compact(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False, separators=(", ", ": "))


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """(dotted name, value as text) for every leaf of a nested mapping, in the mapping's order."""
    rows: list[tuple[str, str]] = []
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            rows.extend(flatten(value, prefix=f"{name}."))
        else:
            rows.append((name, cell(value)))
    return rows


def _table(rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["setting", "value"])


def command_line(provenance: Mapping[str, Any]) -> str | None:
    """The command that trained the checkpoint, quoted so that a shell reads it back; None when unrecorded."""
    command = provenance.get("command")
    if isinstance(command, list | tuple) and command:
        return shlex.join(" ".join(str(part).splitlines()) for part in command)
    if isinstance(command, str) and command.strip():
        return " ".join(command.splitlines())
    return None


def config_table(config: Mapping[str, Any]) -> pd.DataFrame:
    """The model's keyword config (what ``create_model`` is given), one row per setting."""
    return _table(flatten(config))


def provenance_tables(provenance: Mapping[str, Any]) -> list[tuple[str, pd.DataFrame]]:
    """(title, table) for how a checkpoint was made: the single values first ("Run"), then one table per
    nested section (training settings, data set, metrics, initialisation, any other); the command is left
    to :func:`command_line`."""
    single = [(str(key), cell(value)) for key, value in provenance.items()
              if key != "command" and not (isinstance(value, Mapping) and value)]
    tables = [("Run", _table(single))] if single else []
    for key, value in provenance.items():
        if key != "command" and isinstance(value, Mapping) and value:
            tables.append((SECTIONS.get(str(key), str(key)), _table(flatten(value))))
    return tables
