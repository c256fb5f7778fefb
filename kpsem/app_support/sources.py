"""The user's choices, resolved without Streamlit: checkpoint files, uploads, data sets and devices.

Every choice becomes a plain value with a cache key (path, size, modification time), so caches stay
valid until the file changes, and every failure becomes one sentence for ``st.error``.

Uploads are written to ``<temp>/kpsem-uploads-<uid>/<server pid>-<its start time>/<session id>/``: the
session's folder goes when the session ends, the server's at a clean exit, and a server that was killed
leaves a folder whose owner is gone, which :func:`sweep_uploads` removes at the next start.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from kpsem.app_support.config import PathNotAllowed, ServerSettings, check_path
from kpsem.io import atomic_write_bytes

__all__ = [
    "FileKey",
    "UploadError",
    "file_key",
    "save_upload",
    "device_options",
    "resolve_device",
    "check_data_classes",
    "user_path",
    "check_upload",
    "UPLOAD_TYPES",
    "uploads_parent",
    "session_uploads",
    "sweep_uploads",
]

FileKey = tuple[str, int, int]  # (absolute path, size in bytes, modification time in ns)

VIDEO_UPLOAD_TYPES = ("mp4", "avi", "mkv", "webm", "mov", "m4v", "mpg", "mpeg")
CHECKPOINT_UPLOAD_TYPES = ("pt", "pth", "tar", "ckpt", "bin")
# what stored uploads may be, by kind (the sub-folder), as extensions without the dot
UPLOAD_TYPES = {"checkpoints": CHECKPOINT_UPLOAD_TYPES, "videos": VIDEO_UPLOAD_TYPES, "tables": ("parquet",)}


class UploadError(ValueError):
    """An upload that is refused (too large, empty, of a type the box does not take); the message says why."""


def file_key(path: str | os.PathLike) -> FileKey:
    """A cache key that changes whenever the file (or frame folder) changes."""
    path = Path(path)
    stat = path.stat()
    return (str(path), int(stat.st_size), int(stat.st_mtime_ns))


def user_path(text: str, settings: ServerSettings, *, what: str, must_be: str = "file") -> Path:
    """A path the user typed, checked against the server's browse roots and for existence."""
    path = check_path(text, settings, what=what)
    if must_be == "file" and not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist or is not a file; check the path")
    if must_be == "dir" and not path.is_dir():
        raise FileNotFoundError(f"{what} {path} does not exist or is not a folder; check the path")
    return path


def _safe_name(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).name).strip("._") or "upload"
    return stem[-80:]


def check_upload(name: str, size: int, *, max_mb: int, types: tuple[str, ...] | None = None) -> None:
    """Refuse an upload that is empty, over the cap or (given ``types``, extensions without the dot) of
    another type, before its bytes are copied or written.

    Why here too: Streamlit's endpoint enforces ``server.maxUploadSize`` and the browser the widget's
    ``max_upload_size`` and types; a file that got past them (a changed setting, a client that skips the
    browser's checks) stops here, with a message in the section that asked for it."""
    if "\0" in name:
        raise UploadError("the uploaded file's name contains a null byte; upload it under a plain name")
    if types is not None and Path(name).suffix.lower().lstrip(".") not in types:
        *rest, last = [f".{t}" for t in types]
        raise UploadError(f"the uploaded file {name!r} is not a {', '.join(rest) + ' or ' if rest else ''}{last} "
                          "file; remove it and upload one of those")
    if size <= 0:
        raise UploadError(f"the uploaded file {name!r} is empty (0 bytes)")
    if size > max_mb * 2**20:
        raise UploadError(f"the uploaded file {name!r} is {size / 2**20:.1f} MB; "
                          f"this server accepts at most {max_mb} MB")


def save_upload(data: bytes, name: str, folder: str | os.PathLike, *, max_mb: int) -> Path:
    """Write an upload into the session's folder under a content-addressed name; refuse empty or
    oversized files. The same bytes uploaded twice give the same path (so caches hit)."""
    check_upload(name, len(data), max_mb=max_mb)
    digest = hashlib.sha256(data).hexdigest()[:16]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{digest}-{_safe_name(name)}"
    if not path.is_file() or path.stat().st_size != len(data):
        atomic_write_bytes(path, data)
    return path


def uploads_parent() -> Path:
    """``<temp>/kpsem-uploads-<uid>``: every server's upload folders, private to this account (0700).

    Why a known parent: a server started later finds what a killed one left. Refused when it is a link or
    another account's folder (someone else could read or plant uploads there)."""
    uid = os.getuid() if hasattr(os, "getuid") else None
    parent = Path(tempfile.gettempdir()) / f"kpsem-uploads-{uid if uid is not None else 'user'}"
    parent.mkdir(mode=0o700, exist_ok=True)
    info = parent.lstat()
    if not stat.S_ISDIR(info.st_mode) or (uid is not None and info.st_uid != uid):
        raise UploadError(f"{parent} is a link or another account's folder; uploads cannot be kept there: remove it")
    return parent


def _process_stamp(pid: int) -> str | None:
    """A name for one process over its whole life (its start time), None when no such process runs.

    Why not the PID alone: PIDs are reused, and a folder must not look owned by a stranger's new process."""
    if os.path.exists("/proc/self/stat"):
        try:
            with open(f"/proc/{pid}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            return None
        return fields[19].decode()  # field 22 of proc(5): start time, in clock ticks after boot
    try:  # no /proc (macOS): only whether the PID runs
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return "0"


_LEFT_AT_EXIT: set[Path] = set()


def _server_uploads() -> Path:
    """This server's folder in :func:`uploads_parent`, removed at a clean exit."""
    folder = uploads_parent() / f"{os.getpid()}-{_process_stamp(os.getpid())}"
    folder.mkdir(mode=0o700, exist_ok=True)
    if folder not in _LEFT_AT_EXIT:
        _LEFT_AT_EXIT.add(folder)
        atexit.register(shutil.rmtree, folder, True)
    return folder


def session_uploads(session_id: str) -> Path:
    """The upload folder of one session of this server (made if missing)."""
    folder = _server_uploads() / _safe_name(session_id)
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def sweep_uploads(is_active_session: Callable[[str], bool] | None = None) -> list[Path]:
    """Remove upload folders nobody owns; return them.

    Those of servers that no longer run (killed: no clean exit removed them) and, given
    ``is_active_session``, this server's folders of sessions that have ended."""
    parent = uploads_parent()
    mine = f"{os.getpid()}-{_process_stamp(os.getpid())}"
    gone = []
    for folder in sorted(parent.iterdir()):
        pid, _, stamp = folder.name.partition("-")
        if folder.name == mine:
            if is_active_session is not None:
                gone += [session for session in sorted(folder.iterdir()) if not is_active_session(session.name)]
        elif pid.isdigit() and _process_stamp(int(pid)) != stamp:
            gone.append(folder)
    for folder in gone:
        shutil.rmtree(folder, ignore_errors=True)
    return gone


def device_options() -> list[str]:
    """``auto``, ``cpu`` and one ``cuda:N`` per visible GPU."""
    options = ["auto", "cpu"]
    if torch.cuda.is_available():
        options += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return options


def device_label(option: str) -> str:
    """What the device menu shows for an option."""
    if option == "auto":
        return f"automatic ({'CUDA' if torch.cuda.is_available() else 'CPU'})"
    if option.startswith("cuda:"):
        return f"{option} ({torch.cuda.get_device_name(int(option.split(':')[1]))})"
    return "CPU"


def resolve_device(option: str) -> str:
    """``auto`` -> ``cuda`` when ``torch.cuda.is_available()`` else ``cpu``; others are checked."""
    if option == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if option == "cpu":
        return "cpu"
    if option.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {option} was chosen but no CUDA GPU is available here; choose CPU or automatic")
        index = int(option.split(":")[1]) if ":" in option else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {option} does not exist; this machine has {torch.cuda.device_count()} GPUs")
        return f"cuda:{index}"
    raise ValueError(f"unknown device {option!r}; choose one of {', '.join(device_options())}")


def check_data_classes(model_classes: list[str], data_classes: list[str]) -> str | None:
    """A sentence when a data set and a model disagree about the classes, else None."""
    if len(model_classes) != len(data_classes):
        return (f"the data set has {len(data_classes)} classes but the models predict {len(model_classes)}; "
                "true labels cannot be matched to predictions: choose the data set the models were trained on")
    placeholders = model_classes == [f"class_{i}" for i in range(len(model_classes))]
    if not placeholders and model_classes != data_classes:
        diff = [f"{a!r} vs {b!r}" for a, b in zip(model_classes, data_classes) if a != b]
        return f"the data set names classes differently from the models ({'; '.join(diff[:3])})"
    return None


__all__ += ["VIDEO_UPLOAD_TYPES", "CHECKPOINT_UPLOAD_TYPES", "device_label", "PathNotAllowed"]
