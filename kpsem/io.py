"""Writing output files so that no reader or second writer ever meets half of one.

Every file the library writes for others to read (checkpoints, predictions and probe tables, figures,
JSON summaries, uploads kept by the app) goes through :func:`atomic_path` or its two shorthands. The
bytes go to a temporary file with a unique name in the target's own folder (``tempfile.mkstemp``: two
processes or sessions writing the same output never share one, as they did with a fixed
``<name>.partial``), are flushed to disk, and the finished file takes the target's name in one step
(``os.replace``, atomic within one POSIX file system). A reader sees the old file or the new one,
never a mixture; concurrent writers each install a complete file, and the last one stays. (On Windows
``os.replace`` refuses while a reader holds the old file open; this code is not tried there.)

Readers open a file once and read everything through that handle: a file replaced meanwhile is then
read whole, old or new. ``pyarrow.parquet.read_table(path)`` opens the path more than once (schema,
then data) and, with a writer replacing the file between the two, read half of each; so the Parquet
readers pass it an open file instead.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text"]


@cache
def _umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux: /proc), since
    setting it to read it back races with every other thread that creates a file."""
    try:
        status = Path("/proc/self/status").read_text()
        found = re.search(r"^Umask:\s*([0-7]+)", status, re.MULTILINE)
        if found:
            return int(found.group(1), 8)
    except OSError:
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


def _flush_to_disk(path: Path) -> None:
    descriptor = os.open(path, os.O_RDWR)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A fresh temporary path beside ``path`` for the caller to write to; when the block ends without
    an exception the file replaces ``path`` in one step, otherwise it is removed and ``path`` is untouched.

    >>> with atomic_path("run/final.pt") as partial:
    ...     torch.save(payload, partial)

    The temporary name starts with a dot (``.final.pt.<random>.tmp``), so folder listings that skip
    hidden files never pick it up. The finished file gets the permissions a plain ``open`` would give it.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(descriptor)
    partial = Path(name)
    try:
        yield partial
        _flush_to_disk(partial)
        os.chmod(partial, 0o666 & ~_umask())  # mkstemp makes it private (0600)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through :func:`atomic_path`; returns ``path``."""
    with atomic_path(path) as partial:
        partial.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_path`; returns ``path``."""
    with atomic_path(path) as partial:
        partial.write_text(text, encoding="utf-8")
    return Path(path)
