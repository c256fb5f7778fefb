"""The user's choices, resolved without Streamlit: checkpoint files, uploads, data sets and devices.

Every choice becomes a plain value with a cache key (path, size, modification time), so caches stay
valid until the file changes, and every failure becomes one sentence for ``st.error``.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kpsem.app_support.config import PathNotAllowed, ServerSettings, check_path

__all__ = [
    "FileKey",
    "UploadError",
    "file_key",
    "save_upload",
    "device_options",
    "resolve_device",
    "PairCheck",
    "check_pair",
    "check_data_classes",
    "user_path",
]

FileKey = tuple[str, int, int]  # (absolute path, size in bytes, modification time in ns)

VIDEO_UPLOAD_TYPES = ("mp4", "avi", "mkv", "webm", "mov", "m4v", "mpg", "mpeg")
CHECKPOINT_UPLOAD_TYPES = ("pt", "pth", "tar", "ckpt", "bin")


class UploadError(ValueError):
    """An upload that is refused (too large, empty); the message says why."""


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


def save_upload(data: bytes, name: str, folder: str | os.PathLike, *, max_mb: int) -> Path:
    """Write an upload into the session's folder under a content-addressed name; refuse empty or
    oversized files. The same bytes uploaded twice give the same path (so caches hit)."""
    size_mb = len(data) / 2**20
    if not data:
        raise UploadError(f"the uploaded file {name!r} is empty (0 bytes)")
    if size_mb > max_mb:
        raise UploadError(f"the uploaded file {name!r} is {size_mb:.1f} MB; this server accepts at most {max_mb} MB")
    digest = hashlib.sha256(data).hexdigest()[:16]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{digest}-{_safe_name(name)}"
    if not path.is_file() or path.stat().st_size != len(data):
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(data)
        partial.replace(path)
    return path


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


@dataclass
class PairCheck:
    """Whether a baseline and a KPSEM checkpoint can be compared; errors block, warnings inform."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def check_pair(baseline, kpsem) -> PairCheck:  # noqa: ANN001 - CheckpointInfo (kept lazy)
    """Compare what two checkpoints say about themselves (:class:`kpsem.checkpoint.CheckpointInfo`)."""
    check = PairCheck()
    if baseline.arch != "mfnet":
        check.warnings.append(f"the baseline slot holds an {baseline.arch} checkpoint; the paper's baseline is MFNet")
    if kpsem.arch != "mf_kpsem":
        check.warnings.append(f"the KPSEM slot holds an {kpsem.arch} checkpoint: it has no key points or shifts to show")
    if (baseline.clip_frames, baseline.clip_size) != (kpsem.clip_frames, kpsem.clip_size):
        check.errors.append(
            f"the checkpoints read different clips: {baseline.clip_frames} frames of {baseline.clip_size} px (baseline) "
            f"and {kpsem.clip_frames} frames of {kpsem.clip_size} px (KPSEM); choose two that read the same clips")
    if baseline.num_classes != kpsem.num_classes:
        check.errors.append(f"the checkpoints predict {baseline.num_classes} and {kpsem.num_classes} classes; "
                            "choose two models of the same data set")
    elif baseline.class_names != kpsem.class_names:
        check.warnings.append("the checkpoints name their classes differently; the KPSEM checkpoint's names are shown")
    if tuple(baseline.mean) != tuple(kpsem.mean) or tuple(baseline.std) != tuple(kpsem.std):
        check.warnings.append("the checkpoints normalise clips differently; the KPSEM checkpoint's normalisation is used")
    return check


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
