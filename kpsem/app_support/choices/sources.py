"""The user's choices, resolved without Streamlit: checkpoint files, uploads, class names files, data sets
and devices; and the notes a page owes its reader about them (classes the models do not know, an enlarged
video, a weighting that changes nothing at a layer).

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from kpsem import limits
from kpsem.app_support.choices.config import PathNotAllowed, ServerSettings, check_path
from kpsem.constants import are_placeholder_names
from kpsem.io import atomic_write_bytes

__all__ = [
    "FileKey",
    "UploadError",
    "file_key",
    "save_upload",
    "device_options",
    "resolve_device",
    "user_path",
    "check_upload",
    "UPLOAD_TYPES",
    "uploads_parent",
    "session_uploads",
    "sweep_uploads",
]

FileKey = tuple[str, int, int]  # (absolute path, size in bytes, modification time in ns)
# A checkpoint as the app uses it: its FileKey, plus the class names the user loaded for it when any. Every
# cache that loads a model by key (analyses, probes, faithfulness, figures, predictions on disk) then shows
# and stores those names, and two sessions with different names files never share an entry.
ModelKey = tuple[str, int, int] | tuple[str, int, int, tuple[str, ...]]

VIDEO_UPLOAD_TYPES = ("mp4", "avi", "mkv", "webm", "mov", "m4v", "mpg", "mpeg")
CHECKPOINT_UPLOAD_TYPES = ("pt", "pth", "tar", "ckpt", "bin")
# what stored uploads may be, by kind (the sub-folder), as extensions without the dot
NAMES_UPLOAD_TYPES = ("txt", "csv")  # class names: one per line, or id,name rows
UPLOAD_TYPES = {"checkpoints": CHECKPOINT_UPLOAD_TYPES, "videos": VIDEO_UPLOAD_TYPES, "tables": ("parquet",),
                "names": NAMES_UPLOAD_TYPES}
MAX_NAMES_FILE_MB = 8  # a class names file: Kinetics-700's list is 12 KB
MAX_CLASS_NAME_CHARS = 500  # one class name (the longest in Kinetics-700 has 52)


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


class ClassNamesError(ValueError):
    """A class names file that cannot be used (blank line, duplicate, wrong count); the message says where."""


def read_class_names(data: bytes, filename: str) -> list[str]:
    """The class names in a class names file: one name per line (a label list such as Kinetics-400's), or
    rows ``id,name`` (a CSV, a header row allowed; also ``id name`` as UCF101's classInd.txt) numbered
    0..n-1 or 1..n, put in the order of their ids.

    Why so strict: name i labels output i, so a blank line or a repeated name would shift or merge every
    class after it and each score shown would carry the wrong name. Refusals name the file and the line."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ClassNamesError(f"{filename} is not UTF-8 text; save the class list as UTF-8") from None
    if "\0" in text:
        raise ClassNamesError(f"{filename} is not a text file; give a list of class names, one per line")
    lines = text.splitlines()
    while lines and not lines[-1].strip():  # blank lines after the last name shift nothing
        lines.pop()
    if not lines:
        raise ClassNamesError(f"{filename} holds no class names; give one name per line")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise ClassNamesError(f"{filename} line {number} is blank: every line must name one class (a blank "
                                  "line would shift the names after it); remove it")
    rows = _numbered_rows(lines, filename)
    if rows is None:
        named = [(number, line.strip()) for number, line in enumerate(lines, start=1)]
    else:
        named = _ordered_by_id(rows, filename)
    if len(named) > limits.MAX_CLASSES:
        raise ClassNamesError(f"{filename} lists {len(named):,} names; at most {limits.MAX_CLASSES:,} are accepted")
    seen: dict[str, int] = {}
    for number, name in named:
        if not name:
            raise ClassNamesError(f"{filename} line {number} has an empty class name; give every id a name")
        if len(name) > MAX_CLASS_NAME_CHARS:
            raise ClassNamesError(f"{filename} line {number} has a name of {len(name):,} characters; at most "
                                  f"{MAX_CLASS_NAME_CHARS} are accepted")
        if name in seen:
            raise ClassNamesError(f"{filename} names {name!r} twice (lines {seen[name]} and {number}); every class "
                                  "needs its own name")
        seen[name] = number
    return [name for _, name in named]


_NUMBERED = re.compile(r"^\s*(\d+)\s*(?:,|\t|\s)\s*(.*?)\s*$")  # "12,name", "12\tname", "12 name"


def _numbered_rows(lines: list[str], filename: str) -> list[tuple[int, int, str]] | None:
    """(line, id, name) of ``id,name`` rows, or None for a plain list of names.

    A CSV file is read as a CSV (quotes allowed, a header row skipped); a text file counts as numbered only
    when every line starts with a number, so that a plain list whose names start with digits stays plain."""
    if filename.lower().endswith(".csv"):
        import csv

        rows = []
        for number, cells in enumerate(csv.reader(lines), start=1):
            if number == 1 and (not cells or not cells[0].strip().isdigit()):
                continue  # a header such as "id,name"
            if len(cells) != 2 or not cells[0].strip().isdigit():
                raise ClassNamesError(f"{filename} line {number} reads {','.join(cells)[:80]!r}; expected "
                                      "'<id>,<name>' (quote a name that holds a comma)")
            rows.append((number, int(cells[0]), cells[1].strip()))
        if not rows:
            raise ClassNamesError(f"{filename} has a header but no rows; give one '<id>,<name>' row per class")
        return rows
    matches = [_NUMBERED.match(line) for line in lines]
    if not all(matches):
        return None
    return [(number, int(m.group(1)), m.group(2)) for number, m in enumerate(matches, start=1)]  # type: ignore[union-attr]


def _ordered_by_id(rows: list[tuple[int, int, str]], filename: str) -> list[tuple[int, str]]:
    """(line, name) in the order of the rows' ids, which must be 0..n-1 or 1..n, each once."""
    ids = sorted(i for _, i, _ in rows)
    first = ids[0]
    if first not in (0, 1) or ids != list(range(first, first + len(ids))):
        missing = sorted(set(range(first, first + len(ids))) - set(ids))[:3]
        repeated = sorted({i for i in ids if ids.count(i) > 1})[:3] if len(set(ids)) != len(ids) else []
        what = (f"id {repeated[0]} appears twice" if repeated else f"ids start at {first}" if first not in (0, 1)
                else f"id {missing[0]} is missing")
        raise ClassNamesError(f"{filename}: the ids must run 0..n-1 or 1..n, each once, but {what}; number the "
                              "classes in the order of the model's outputs")
    return [(number, name) for number, _, name in sorted(rows, key=lambda row: row[1])]


def names_for_model(names: list[str], num_classes: int, *, filename: str, role: str = "model") -> list[str]:
    """``names`` when there is one per output of a model with ``num_classes`` classes; else a refusal."""
    if len(names) != num_classes:
        raise ClassNamesError(f"{filename} lists {len(names):,} class names but the {role} predicts "
                              f"{num_classes:,} classes; load the list it was trained with (one name per output, "
                              "in order)")
    return list(names)


def names_for_data(data_names: list[str], names: list[str], *, filename: str) -> tuple[list[str], str | None]:
    """A data set's class names replaced by a file's: (names in the data set's label order, a note).

    Label i of a data set is its i-th class (sorted folder names, or its own list). Folders named by
    number ('0', '1', ... '10') sort as text, so there folder k takes the file's name of id k (line k+1,
    or k when they start at 1); the note says so."""
    if len(names) != len(data_names):
        raise ClassNamesError(f"{filename} lists {len(names):,} class names but the data set has "
                              f"{len(data_names):,} classes; load the list of this data set's classes")
    numbers = [int(n) for n in data_names if n.strip().isdigit()]
    if len(numbers) == len(data_names):
        base = min(numbers)
        if base in (0, 1) and sorted(numbers) == list(range(base, base + len(numbers))):
            return ([names[k - base] for k in numbers],
                    f"class folders are numbered from {base}: folder k takes line {'k+1' if base == 0 else 'k'}")
    return list(names), None


@dataclass(frozen=True)
class ClassMatch:
    """How a data set's classes line up with the models': whether its labels can score their predictions."""

    model_classes: int  # classes the models predict
    data_classes: int  # classes of the data set
    scorable: bool  # label i of the data set is output i of the models
    message: str | None = None  # why not (and what to do), or a note on how they were matched
    by_index: bool = False  # the models carry no names: labels are matched to outputs by position


def match_classes(model_names: list[str], data_names: list[str]) -> ClassMatch:
    """Whether the data set's labels can score the models' predictions; when not, a sentence that names both
    class counts and what to do."""
    m, d = len(model_names), len(data_names)
    if m != d:
        return ClassMatch(m, d, False, (
            f"the models predict {m:,} classes but the data set has {d:,}: its true labels cannot be matched to "
            f"the models' outputs, so nothing can be scored. Choose a data set of the models' {m:,} classes in the "
            "sidebar (the one they were trained on), or models trained on this data set"))
    if are_placeholder_names(model_names):
        return ClassMatch(m, d, True, (
            f"the checkpoints carry no class names: the data set's {d:,} classes are matched to the models' outputs "
            "by position; load a class names file for them in the sidebar to check the order"), by_index=True)
    if list(model_names) != list(data_names):
        differ = [i for i, (a, b) in enumerate(zip(model_names, data_names)) if a != b]
        how = ("lists the same classes in another order" if sorted(model_names) == sorted(data_names)
               else f"names {len(differ):,} of the {m:,} classes differently")
        sample = "; ".join(f"{i}: {model_names[i]!r} vs {data_names[i]!r}" for i in differ[:3])
        return ClassMatch(m, d, False, (
            f"the data set {how} from the models ({sample}): its true labels cannot be matched to the models' "
            "outputs, so nothing can be scored. Choose the data set the models were trained on, or load a class "
            "names file (one name per line, in the models' order) for the data set or the checkpoints in the "
            "sidebar"))
    return ClassMatch(m, d, True)


def known_classes(names: list[str], *, shown: int = 12) -> str:
    """'rise, approach, ... (and 388 more)': the classes a model knows, in one line."""
    listed = ", ".join(names[:shown])
    return listed + (f" … and {len(names) - shown:,} more (the Models page lists them)" if len(names) > shown else "")


def outside_classes_note(names: list[str], predictions: Sequence[tuple[str, str, float]], *,
                         clip_class: str | None = None, synthetic: bool = False) -> str:
    """Why the predictions say nothing about a clip from outside the models' classes: an upload of no known
    class, or a data set clip whose class (``clip_class``) the models do not know. ``predictions``: (model,
    its top-1 class, its probability) of each model."""
    kind = "synthetic classes" if synthetic else "classes"
    said = " and ".join(f"{model}'s {name!r} at {probability:.0%}" for model, name, probability in predictions)
    if clip_class is None:
        return (f"These models know {len(names):,} {kind} only: {known_classes(names)}. They give every video one "
                f"of them: if this video shows none of them, {said} say nothing about it.")
    return (f"This clip is {clip_class!r} in the data set, a class these models do not know (they know "
            f"{len(names):,} {kind}: {known_classes(names)}); {said} say nothing about it.")


def upscaled_note(original_size: tuple[int, int], clip_size: int, scale: float) -> str | None:
    """A sentence when a video is smaller than the models' clip (enlarged to fit), else None."""
    height, width = original_size
    if min(height, width) >= clip_size:
        return None
    return (f"The video is {width}×{height} px, smaller than the {clip_size}×{clip_size} px the models read: it "
            f"was enlarged ×{scale:.2g} to fit, so the models (and the maps) see interpolated pixels, not detail.")


# Layers after which the network only pools globally and classifies: d score / d activation is the same at
# every place and time, so one weight per channel per clip equals one per time slice and the maps agree.
POOLED_LAYERS = ("tail",)


def weighting_note(cam_layer: str) -> str | None:
    """Why the clip/slice weighting control changes nothing at ``cam_layer``, or None where it matters."""
    if cam_layer not in POOLED_LAYERS:
        return None
    return (f"At {cam_layer} both weightings give the same map: the next step is a global average pool, so the "
            "gradient is uniform over space and time. Choose conv4 to compare them.")


__all__ += ["VIDEO_UPLOAD_TYPES", "CHECKPOINT_UPLOAD_TYPES", "NAMES_UPLOAD_TYPES", "device_label", "PathNotAllowed",
            "ModelKey", "ClassNamesError", "read_class_names", "names_for_model", "names_for_data",
            "ClassMatch", "match_classes", "known_classes", "outside_classes_note",
            "upscaled_note", "POOLED_LAYERS", "weighting_note"]
