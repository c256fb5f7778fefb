"""Checkpoints: the project's own format, and the published formats the architectures map.

Our format is a dict of plain data and tensors, always read with ``weights_only=True``::

    {"format": "kpsem-studio", "format_version": 1, "arch": "mf_kpsem", "config": {...},
     "class_names": [...], "clip": {"frames": 16, "size": 224, "mean": [...], "std": [...]},
     "provenance": {...}, "state_dict": {...}, "training_state": {...} (optional)}

Since the checksum was added, ``save_checkpoint`` also stores ``"state_dict_sha256"``: SHA-256 over each
tensor's name, dtype, shape and bytes, so a file whose bytes were overwritten after saving (which still
unpickles: torch reads zip entries without checking their CRC) is refused as corrupt. Files without one
(published ones, ours from before) load with a note that they could not be verified.

Published MFNet checkpoints are ``{"epoch": ..., "state_dict": ...}`` saved from DataParallel, so keys
carry ``module.`` and, from an old PyTorch, no ``num_batches_tracked`` buffers. What is specific to an
architecture (how its published keys map, which keys are its classifier, whether it has KPSEM, how a
published file's config is read off its shapes) the model class says; this module asks it or the
registry, and imports no architecture module.

Every file is untrusted input: its declared sizes are checked against :mod:`kpsem.limits` before it is
read, its metadata before a model is built (on the meta device first, so a config that would take
gigabytes never does), and its tensors must be finite.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import math
import pickle
import pickletools
import re
import threading
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kpsem import limits
from kpsem.constants import CLIP_FRAMES, CLIP_SIZE, MFNET_MEAN, MFNET_STD, placeholder_class_names
from kpsem.io import atomic_path
from kpsem.limits import format_bytes
from kpsem.models._registry import has_kpsem, list_models, model_class, model_entrypoint, recognise_published
from kpsem.models.memory_format import set_memory_format

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "CHECKSUM_KEY",
    "CheckpointError",
    "NonFiniteOutputError",
    "CheckpointInfo",
    "LoadReport",
    "LoadedCheckpoint",
    "read_checkpoint",
    "clean_state_dict",
    "describe_checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "load_weights_into",
    "model_from_config",
    "state_dict_checksum",
    "check_finite_logits",
]

FORMAT = "kpsem-studio"
FORMAT_VERSION = 1
CHECKSUM_KEY = "state_dict_sha256"  # top-level key of our format: hex SHA-256 of the state dict (absent in old files)
_SHOWN_KEYS = 8  # how many offending keys an error message names before "... and N more"
# torch's weights-only unpickler refuses a global in two wordings (torch 2.13): "Unsupported global:
# GLOBAL x was not an allowed global by default" and, for os, subprocess and the like, "Trying to load
# unsupported GLOBAL posix.system whose module posix is blocked". Case-insensitive, to match both.
_REFUSED_GLOBAL = re.compile(r"unsupported global", re.IGNORECASE)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says what is wrong and what to do."""


class NonFiniteOutputError(ValueError):
    """A forward pass gave NaN or infinite scores: there is no prediction to show, so none is."""


@dataclass
class CheckpointInfo:
    """What a checkpoint says about itself (published files say little: arch and class count)."""

    arch: str  # registered model name
    num_classes: int  # classifier outputs
    config: dict[str, Any]  # keyword config for create_model (num_classes excluded)
    class_names: list[str]  # one name per class; "class_i" when the file has none
    clip_frames: int  # frames per clip the model was trained on
    clip_size: int  # side of the square crop
    mean: tuple[float, ...]  # normalisation mean (RGB, [0, 1] scale)
    std: tuple[float, ...]  # normalisation std
    provenance: dict[str, Any] = field(default_factory=dict)  # how it was made
    source_format: str = FORMAT  # "kpsem-studio", "mfnet-published" or "state-dict"
    integrity: str = ""  # whether the tensors matched a checksum saved with them, in words
    has_kpsem: bool = False  # the architecture has KPSEM (internals to draw); filled from the registry
    baseline_arch: str = "mfnet"  # registered name of the baseline it is compared with (the paper's: MFNet)
    baseline_name: str = "MFNet"  # that baseline's name in the paper


@dataclass
class LoadReport:
    """What loading did beyond a plain exact match; never silent."""

    loaded: int = 0  # tensors copied
    missing_num_batches_tracked: int = 0  # BatchNorm counters absent from old files (harmless)
    reinitialised: list[str] = field(default_factory=list)  # keys left at their fresh init, and why
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"loaded {self.loaded} tensors"]
        if self.missing_num_batches_tracked:
            parts.append(f"{self.missing_num_batches_tracked} BatchNorm counters absent (old PyTorch file)")
        parts.extend(self.notes)
        return "; ".join(parts)


@dataclass
class LoadedCheckpoint:
    model: nn.Module
    info: CheckpointInfo
    report: LoadReport


def _name_keys(keys: list[str]) -> str:
    # a hostile file can hold a key of a million characters: a message shows each one shortened
    keys = [k if len(k) <= 80 else k[:77] + "..." for k in keys]
    shown = ", ".join(keys[:_SHOWN_KEYS])
    return shown + (f" ... and {len(keys) - _SHOWN_KEYS} more" if len(keys) > _SHOWN_KEYS else "")


def _short(value: Any) -> str:
    """``repr(value)`` cut to a length a one-line message can carry."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _legacy_pickle_size(path: Path) -> int | None:
    """Bytes of the pickles that open a legacy (non-zip) torch file, read op by op without building any
    object; None when the file is not one (torch.load then says what it is).

    A legacy file is four pickles (magic number, protocol, system info, the object) and then the tensor
    bytes. Only the first limit + 1 bytes are read: a pickle that runs past them is too large anyway."""
    with open(path, "rb") as handle:
        head = handle.read(limits.MAX_CHECKPOINT_PICKLE_BYTES + 1)
    stream = io.BytesIO(head)
    try:
        for _ in range(4):
            for _op in pickletools.genops(stream):
                pass
    except Exception:  # noqa: BLE001 - genops fails in many ways on bytes that are not a pickle
        return len(head) if stream.tell() >= len(head) > limits.MAX_CHECKPOINT_PICKLE_BYTES else None
    return stream.tell()


def _check_declared_sizes(path: Path) -> None:
    """Refuse a file that would unpack to more than the limits, before torch.load reads any of it.

    torch.load allocates each zip entry at the size the zip's directory declares, and reads deflated
    entries too: 3 GB of zeros deflate to 14 MB. A legacy file stores its tensors as they are, so its
    size bounds them, but its pickle is checked like a zip's. The pickle is capped on its own because
    unpickling multiplies it: each 2-byte op can make a 64-byte object.
    """
    disk = path.stat().st_size
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                entries = archive.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
            return  # a directory Python cannot read; torch.load fails on it too and says so
        unpacked = sum(entry.file_size for entry in entries)
        pickled = sum(entry.file_size for entry in entries if entry.filename.endswith(".pkl"))
    else:
        unpacked, pickled = disk, _legacy_pickle_size(path) or 0
    if pickled > limits.MAX_CHECKPOINT_PICKLE_BYTES:
        raise CheckpointError(
            f"checkpoint {path} holds {format_bytes(pickled)} of pickled metadata (names, config, class list) "
            f"beside its tensors; at most {format_bytes(limits.MAX_CHECKPOINT_PICKLE_BYTES)} is read (a kpsem "
            "checkpoint has well under 1 MB): it is not a checkpoint this project can load"
        )
    if unpacked > limits.MAX_CHECKPOINT_BYTES:
        raise CheckpointError(
            f"checkpoint {path} would unpack to {format_bytes(unpacked)} ({format_bytes(disk)} on disk); at most "
            f"{format_bytes(limits.MAX_CHECKPOINT_BYTES)} is loaded, far more than an MFNet or MF-KPSEM "
            "checkpoint holds (about 30 MB): it is not a checkpoint this project can load"
        )


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` with an error that says what is wrong with the file.

    Sizes are checked first (:func:`_check_declared_sizes`); our own format's tensors are checked
    against the checksum saved with them, so every caller gets a file whose bytes are as saved."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (or is not a file); check the path")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes); the file was not written completely")
    _check_declared_sizes(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if _REFUSED_GLOBAL.search(str(error)):
            raise CheckpointError(
                f"refused to load {path}: it contains Python objects other than tensors and plain containers, "
                "which could run code when loaded. Checkpoints are untrusted input and are only read with "
                "weights_only=True; if you trust the file, re-save its state_dict with torch.save"
            ) from None
        raise CheckpointError(
            f"checkpoint {path} is truncated or not a PyTorch file (its pickle stream is unreadable); "
            "re-download or re-save it"
        ) from None
    except Exception as error:  # noqa: BLE001 - arbitrary bytes fail in many ways inside torch.load
        raise CheckpointError(
            f"checkpoint {path} is truncated or not a PyTorch file ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else 'no detail'}); re-download or re-save it"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(obj).__name__}, not a state dict or a checkpoint dict"
        )
    if obj.get("format") == FORMAT:
        _verify_checksum(obj, _state_dict_of(obj, path)[0], path)
    return obj


def state_dict_checksum(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Hex SHA-256 over each tensor's name, dtype, shape and bytes, in name order.

    Why: torch reads zip entries without checking their CRC, so a tensor whose bytes were overwritten
    (a bad disk, a broken copy) still loads; this is what tells such a file from the one saved."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(repr((name, str(tensor.dtype), tuple(tensor.shape))).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())  # the raw bytes, without a copy
    return digest.hexdigest()


def _verify_checksum(obj: dict[str, Any], state_dict: dict[str, torch.Tensor], path: Path) -> None:
    saved = obj.get(CHECKSUM_KEY)
    if saved is not None and saved != state_dict_checksum(state_dict):
        raise CheckpointError(
            f"checkpoint {path} is corrupt: its tensors do not match the SHA-256 checksum saved with them, so "
            "bytes changed after it was written (a disk or copy error, or an edit); re-download it or save it "
            "again from where it came from"
        )


def _integrity(obj: dict[str, Any], source_format: str) -> str:
    """Whether the tensors were verified, in words (:func:`read_checkpoint` already refused a mismatch)."""
    if source_format == FORMAT and CHECKSUM_KEY in obj:
        return "tensors verified against the SHA-256 checksum saved with them"
    if source_format == FORMAT:
        return "tensors could not be verified: saved without a checksum (by kpsem before it stored them)"
    if source_format == "mfnet-published":
        return "tensors could not be verified: the published MFNet format carries no checksum"
    return "tensors could not be verified: a bare state dict carries no checksum"


def _is_plain_tensor(value: Any) -> bool:
    return (isinstance(value, torch.Tensor) and value.layout == torch.strided and value.device.type == "cpu"
            and not value.is_quantized)


def _check_tensors(state_dict: Any, label: str | Path) -> None:
    """A state dict must map names to dense CPU tensors; anything else would fail later, less clearly."""
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(
            f"{label} is damaged: its 'state_dict' is a {type(state_dict).__name__}, not a mapping of names to "
            "tensors; save the model's state_dict() again with kpsem"
        )
    if not state_dict:
        raise CheckpointError(f"{label} has an empty 'state_dict': it holds no weights to load")
    bad = [str(k) for k, v in state_dict.items() if not isinstance(k, str) or not _is_plain_tensor(v)]
    if bad:
        raise CheckpointError(
            f"{label} is damaged: {len(bad)} entries of its 'state_dict' are not tensors named by strings: "
            f"{_name_keys(bad)}; save the model's state_dict() again with kpsem"
        )


def _all_finite(tensor: torch.Tensor) -> bool:
    # numpy where it can: torch's intra-op thread pool costs milliseconds per small tensor on a busy
    # machine (1.2 s for the demo checkpoint's 267 tensors, against 10 ms this way)
    if tensor.dtype in (torch.float16, torch.float32, torch.float64):
        return bool(np.isfinite(tensor.numpy()).all())
    return bool(torch.isfinite(tensor).all())


def _check_finite(state_dict: Mapping[str, torch.Tensor], label: str | Path) -> None:
    """Refuse NaN or infinite weights and buffers: every score of such a model is meaningless."""
    bad = [k for k, v in state_dict.items() if (v.is_floating_point() or v.is_complex()) and not _all_finite(v)]
    if bad:
        raise CheckpointError(
            f"{label} has non-finite values (NaN or inf) in {len(bad)} tensor{'s' if len(bad) > 1 else ''}: "
            f"{_name_keys(bad)}; a model with them gives no meaningful scores: use an earlier checkpoint of the "
            "run, or download the file again"
        )


def check_finite_logits(logits: torch.Tensor, *, model: str, items: Sequence[str] | None = None) -> None:
    """Raise :class:`NonFiniteOutputError` when a score in ``logits`` (N, classes) is NaN or infinite.

    Why one function: the app, ``explain`` and ``evaluate`` all show scores, and a softmax of NaN is not
    a prediction; each calls this before using them. ``items`` names the N rows (e.g. video ids).
    """
    rows = torch.isfinite(logits.reshape(len(logits), -1)).all(dim=1)  # (N,)
    if bool(rows.all()):
        return
    bad = [i for i, ok in enumerate(rows.tolist()) if not ok]
    which = f" for {len(bad)} of {len(rows)} clips ({_name_keys([items[i] for i in bad])})" if items else ""
    raise NonFiniteOutputError(
        f"{model} gave non-finite scores (NaN or inf){which}, so there is no prediction to show. Weights with NaN "
        "or inf are refused on load, so the clip holds such values or the scores overflowed: check the clip, run "
        "in full precision (--precision fp32), or use another checkpoint"
    )


def _state_dict_of(obj: dict[str, Any], path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    if obj.get("format") == FORMAT:
        if "state_dict" not in obj:
            raise CheckpointError(f"checkpoint {path} has no 'state_dict': its weights are missing; save it again "
                                  "with kpsem")
        state_dict, source_format = obj["state_dict"], FORMAT
    elif isinstance(obj.get("state_dict"), Mapping):
        state_dict, source_format = obj["state_dict"], "mfnet-published"
    elif obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state_dict, source_format = obj, "state-dict"
    else:
        raise CheckpointError(
            f"{path} is not a model checkpoint: it has no 'state_dict' and is not a dict of tensors "
            f"(top-level keys: {_name_keys(sorted(map(str, obj)))})"
        )
    _check_tensors(state_dict, f"checkpoint {path}")
    return dict(state_dict), source_format


def clean_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Pure key remapping for published files: strip DataParallel's ``module.`` prefix."""
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state_dict.items()}


def _classifier_weight_key(arch: Any) -> str:
    """The key of the classifier's weight in ``arch``'s state dict (the model class says)."""
    known = isinstance(arch, str) and arch in list_models()
    return model_class(arch).classifier_keys[0] if known else "classifier.weight"


def _infer_published_info(state_dict: dict[str, torch.Tensor], source_format: str, path: Path) -> CheckpointInfo:
    """Arch, class count and config of a published file, read off its shapes by the architecture it fits."""
    try:
        found = recognise_published(state_dict)
    except IndexError:
        found, damaged = None, True
    else:
        damaged = False
    if found is None:
        what = "has a scalar where a weight should be" if damaged else "has none of the keys they expect"
        names = ", ".join(model_class(n).display_name for n in list_models() if model_class(n).published_config)
        raise CheckpointError(
            f"{path} does not look like a checkpoint of a known architecture ({names}): it {what} "
            f"(first keys: {_name_keys(list(state_dict))})"
        )
    arch, num_classes, config = found
    if not 1 <= num_classes <= limits.MAX_CLASSES:
        raise CheckpointError(f"{path} has a classifier for {num_classes:,} classes; at least 1 and at most "
                              f"{limits.MAX_CLASSES:,} are accepted: it is not a checkpoint this project can load")
    cls = model_class(arch)
    if source_format != "state-dict":
        source_format = cls.source_format
    return CheckpointInfo(
        arch=arch,
        num_classes=num_classes,
        config=config,
        class_names=placeholder_class_names(num_classes),
        clip_frames=CLIP_FRAMES,
        clip_size=CLIP_SIZE,
        mean=MFNET_MEAN,
        std=MFNET_STD,
        provenance={"source": str(path), "note": f"published {cls.display_name} format; class names unknown"},
        source_format=source_format,
    )


def _whole(value: Any, low: int, high: int) -> int | None:
    """``value`` as an int when it is a whole number in low..high (16 or 16.0), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return int(value) if value == int(value) and low <= value <= high else None


def _three_numbers(value: Any) -> tuple[float, ...] | None:
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        return None
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
        return None
    return tuple(float(v) for v in value)


def _own_info(obj: dict[str, Any], state_dict: dict[str, torch.Tensor], path: Path) -> CheckpointInfo:
    """Our format's metadata, each field checked against what a model and a clip can use (and the limits)."""
    try:
        clip, arch, config, names = obj["clip"], obj["arch"], obj["config"], obj["class_names"]
        frames, size, mean, std = clip["frames"], clip["size"], clip["mean"], clip["std"]
    except (KeyError, TypeError) as error:
        raise CheckpointError(
            f"checkpoint {path} is missing metadata field {error}; it was not saved by kpsem"
        ) from None
    provenance = obj.get("provenance", {})
    if not isinstance(arch, str) or not isinstance(config, Mapping) or not isinstance(provenance, Mapping):
        raise CheckpointError(f"checkpoint {path} has malformed metadata (arch {_short(arch)}, config and provenance "
                              "must be a name and two mappings); it was not saved by kpsem")
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise CheckpointError(
            f"checkpoint {path}: its class_names are not a list of strings; it was not saved by kpsem"
        )
    if not 1 <= len(names) <= limits.MAX_CLASSES:
        raise CheckpointError(f"checkpoint {path} declares {len(names):,} class names; at least 1 and at most "
                              f"{limits.MAX_CLASSES:,} are accepted: it is not a checkpoint this project can load")
    classifier = state_dict.get(_classifier_weight_key(arch))
    if classifier is not None and (classifier.dim() == 0 or classifier.shape[0] != len(names)):
        outputs = classifier.shape[0] if classifier.dim() else "no"
        raise CheckpointError(f"checkpoint {path} names {len(names):,} classes but its classifier has {outputs} "
                              "outputs; the file is inconsistent: save it again with kpsem")
    clip_frames = _whole(frames, 1, limits.MAX_CLIP_FRAMES)
    clip_size = _whole(size, 1, limits.MAX_CLIP_SIZE)
    if clip_frames is None or clip_size is None:
        raise CheckpointError(
            f"checkpoint {path} asks for clips of {_short(frames)} frames of {_short(size)} pixels square; accepted "
            f"are 1 to {limits.MAX_CLIP_FRAMES} frames of 1 to {limits.MAX_CLIP_SIZE} pixels: save it again with "
            "the clip it was trained on"
        )
    mean_values, std_values = _three_numbers(mean), _three_numbers(std)
    if mean_values is None or not all(math.isfinite(v) for v in mean_values):
        raise CheckpointError(f"checkpoint {path} has normalisation mean {_short(mean)}; expected three finite "
                              "numbers (R, G, B): save it again with the mean it was trained with")
    if std_values is None or not all(math.isfinite(v) and v > 0 for v in std_values):
        raise CheckpointError(
            f"checkpoint {path} has normalisation std {_short(std)}; expected three finite numbers above 0 (a clip "
            "divided by 0 or NaN is all inf or NaN): save it again with the std it was trained with (MFNet's is "
            "0.2348)"
        )
    return CheckpointInfo(
        arch=arch,
        num_classes=len(names),
        config=dict(config),
        class_names=list(names),
        clip_frames=clip_frames,
        clip_size=clip_size,
        mean=mean_values,
        std=std_values,
        provenance=dict(provenance),
    )


def _describe(
    obj: dict[str, Any], state_dict: dict[str, torch.Tensor], source_format: str, path: Path
) -> CheckpointInfo:
    if source_format == FORMAT:
        info = _own_info(obj, state_dict, path)
    else:
        info = _infer_published_info(clean_state_dict(state_dict), source_format, path)
    info.integrity = _integrity(obj, source_format)
    if info.arch in list_models():  # an unknown arch fails when the model is built, with the known names
        cls = model_class(info.arch)
        info.has_kpsem = has_kpsem(info.arch)
        info.baseline_arch = getattr(cls, "baseline_arch", info.baseline_arch)
        info.baseline_name = model_class(info.baseline_arch).display_name
    return info


def describe_checkpoint(path: str | Path) -> CheckpointInfo:
    """Read what a checkpoint says about itself without building a model (metadata checked, see ``_own_info``)."""
    path = Path(path)
    obj = read_checkpoint(path)
    state_dict, source_format = _state_dict_of(obj, path)
    return _describe(obj, state_dict, source_format, path)


def model_from_config(arch: str, num_classes: int, config: dict[str, Any]) -> nn.Module:
    """Build a registered model from the plain config a checkpoint stores (a nested backbone's
    ``num_classes`` is overridden by its builder), in the default memory format."""
    config = dict(config)
    config.pop("num_classes", None)
    try:
        return set_memory_format(model_entrypoint(arch)(num_classes=num_classes, **config))
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"cannot build model {arch!r} from the checkpoint's config: {error}") from None


class _TooManyModulesError(Exception):
    """Raised from the registration hook to stop building a model past :data:`limits.MAX_MODEL_MODULES`."""


_budget = threading.local()  # modules the current thread may still register; unset outside _check_model_size


def _count_module(module: nn.Module, name: str, submodule: nn.Module | None) -> None:
    left = getattr(_budget, "modules", None)
    if left is None:  # another thread, or no check running: not ours to count
        return
    if left <= 0:
        raise _TooManyModulesError
    _budget.modules = left - 1


@contextmanager
def _module_budget(count: int) -> Iterator[None]:
    """Stop any model built on this thread in the block after ``count`` submodules."""
    handle = torch.nn.modules.module.register_module_module_registration_hook(_count_module)
    _budget.modules = count
    try:
        yield
    finally:
        _budget.modules = None
        handle.remove()


def _check_model_size(info: CheckpointInfo, path: Path) -> None:
    """Build the model a checkpoint describes on the meta device (no memory for its tensors) and refuse it
    when it is larger than :data:`limits.MAX_CHECKPOINT_BYTES` or has too many modules, so that a config
    such as ``widths=(10**5, ...)`` or ``depths=(10**6, ...)`` fails here, not after taking the memory."""
    try:
        with _module_budget(limits.MAX_MODEL_MODULES), torch.device("meta"):
            model = model_from_config(info.arch, info.num_classes, info.config)
    except _TooManyModulesError:
        raise CheckpointError(
            f"checkpoint {path}: its config {_short(info.config)} builds more than {limits.MAX_MODEL_MODULES:,} "
            "modules (a full MF-KPSEM has 315): it is not a checkpoint this project can load"
        ) from None
    except CheckpointError:
        raise
    except Exception as error:  # noqa: BLE001 - a hostile config fails inside model code in many ways
        raise CheckpointError(f"cannot build model {info.arch!r} from the checkpoint's config ({type(error).__name__}: "
                              f"{str(error).splitlines()[0] if str(error) else 'no detail'})") from None
    size = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    if size > limits.MAX_CHECKPOINT_BYTES:
        raise CheckpointError(
            f"checkpoint {path}: the {info.arch} its config describes would take {format_bytes(size)}; at most "
            f"{format_bytes(limits.MAX_CHECKPOINT_BYTES)} is built: it is not a checkpoint this project can load"
        )


def _model_config(model: nn.Module) -> tuple[str, dict[str, Any]]:
    arch = getattr(model, "arch", None)
    if arch not in list_models() or not isinstance(model, model_class(arch)):
        raise TypeError(f"save_checkpoint takes a registered model ({', '.join(list_models())}); "
                        f"got {type(model).__name__}")
    return arch, model.extra_config()  # type: ignore[operator]


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    class_names: list[str],
    clip_frames: int = CLIP_FRAMES,
    clip_size: int = CLIP_SIZE,
    mean: tuple[float, ...] = MFNET_MEAN,
    std: tuple[float, ...] = MFNET_STD,
    provenance: dict[str, Any] | None = None,
    training_state: dict[str, Any] | None = None,
) -> Path:
    """Write weights and metadata atomically (a crash never leaves a half-written file)."""
    arch, config = _model_config(model)
    model_classes = model.classifier.out_features  # type: ignore[union-attr]
    if len(class_names) != model_classes:
        raise ValueError(f"{len(class_names)} class names for a model with {model_classes} classes")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": arch,
        "config": config,
        "class_names": list(class_names),
        "clip": {"frames": int(clip_frames), "size": int(clip_size), "mean": list(mean), "std": list(std)},
        "provenance": {"saved": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), **(provenance or {})},
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},  # any memory format
    }
    payload[CHECKSUM_KEY] = state_dict_checksum(payload["state_dict"])
    if training_state is not None:
        payload["training_state"] = training_state
    with atomic_path(path) as partial:
        torch.save(payload, partial)
    return path


def _classifier_mismatch(model_sd: dict[str, torch.Tensor], sd: dict[str, torch.Tensor], keys: Sequence[str]) -> bool:
    return any(key in sd and key in model_sd and sd[key].shape != model_sd[key].shape for key in keys)


def load_weights_into(
    model: nn.Module,
    source: str | Path | Mapping[str, torch.Tensor],
    *,
    reinit_classifier: bool = False,
) -> LoadReport:
    """Copy weights from ``source`` into ``model`` and say exactly what did not match.

    The model's own ``checkpoint_filter_fn`` maps published keys first (e.g. torchvision's ResNet-50 for
    R3D-50). Tolerated: the ``module.`` prefix and absent ``num_batches_tracked`` (published files); a
    backbone file loaded into a model with KPSEM, whose KPSEM and wider classifier then keep their fresh
    init; a classifier of another class count when ``reinit_classifier`` is set. Anything else missing, unexpected or
    misshapen, and any NaN or infinite value, raises :class:`CheckpointError` naming the keys.
    """
    if isinstance(source, Mapping):
        label = "<state dict>"
        _check_tensors(source, label)
        return _load_state_dict(model, dict(source), label, reinit_classifier=reinit_classifier)
    path = Path(source)
    obj = read_checkpoint(path)
    state_dict, source_format = _state_dict_of(obj, path)
    report = _load_state_dict(model, state_dict, str(path), reinit_classifier=reinit_classifier)
    report.notes.append(_integrity(obj, source_format))
    return report


def _load_state_dict(
    model: nn.Module, state_dict: dict[str, torch.Tensor], label: str, *, reinit_classifier: bool = False
) -> LoadReport:
    filter_fn = getattr(model, "checkpoint_filter_fn", None)
    state_dict = clean_state_dict(state_dict)
    state_dict = filter_fn(state_dict) if filter_fn is not None else state_dict
    model_sd = model.state_dict()
    report = LoadReport()
    backbone_only = has_kpsem(model) and not any(k.startswith("kpsem.") for k in state_dict)
    if backbone_only:
        baseline = model_class(model.baseline_arch).display_name  # type: ignore[union-attr]
        report.reinitialised += [k for k in model_sd if k.startswith("kpsem.")]
        report.notes.append(f"{baseline} weights loaded into the {model.display_name} backbone; KPSEM starts fresh")
    classifier_keys = tuple(getattr(model, "classifier_keys", ("classifier.weight", "classifier.bias")))
    classifier_mismatch = _classifier_mismatch(model_sd, state_dict, classifier_keys)
    if classifier_mismatch and (reinit_classifier or backbone_only):
        state_dict = {k: v for k, v in state_dict.items() if k not in classifier_keys}
        report.reinitialised += list(classifier_keys)
        report.notes.append("classifier re-initialised (different class count or feature width)")
        classifier_mismatch = False
    unexpected = sorted(set(state_dict) - set(model_sd))
    missing = sorted(set(model_sd) - set(state_dict) - set(report.reinitialised))
    tolerated = [k for k in missing if k.endswith("num_batches_tracked")]
    missing = [k for k in missing if k not in tolerated]
    misshapen = sorted(
        f"{k} {tuple(state_dict[k].shape)} vs model {tuple(model_sd[k].shape)}"
        for k in set(state_dict) & set(model_sd)
        if state_dict[k].shape != model_sd[k].shape
    )
    if classifier_mismatch and len(misshapen) <= 2 and not missing and not unexpected:
        theirs = tuple(state_dict[classifier_keys[0]].shape)
        ours = tuple(model_sd[classifier_keys[0]].shape)
        raise CheckpointError(
            f"{label}: its classifier has shape {theirs} (classes x features) but the model's is {ours}; "
            "to fine-tune on another class count pass reinit_classifier=True (--reinit-classifier)"
        )
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_name_keys(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_name_keys(unexpected)}")
    if misshapen:
        problems.append(f"{len(misshapen)} keys of the wrong shape: {_name_keys(misshapen)}")
    if problems:
        raise CheckpointError(
            f"{label} does not fit {type(model).__name__}: " + "; ".join(problems)
            + ". Check that the architecture and its config match the file"
        )
    _check_finite(state_dict, label)  # after the fit: what is copied must be finite, a dropped classifier need not
    with torch.no_grad():
        for key, value in state_dict.items():
            model_sd[key].copy_(value)
    report.loaded = len(state_dict)
    report.missing_num_batches_tracked = len(tolerated)
    return report


def load_checkpoint(
    path: str | Path, *, map_location: str | torch.device = "cpu"
) -> LoadedCheckpoint:
    """Build the model a checkpoint describes and load its weights, ready for ``eval()``.

    The file is read once; its metadata is checked before the model is built, and the model's size on
    the meta device before it is built for real. The report's notes say whether the tensors were verified.
    """
    path = Path(path)
    obj = read_checkpoint(path)
    state_dict, source_format = _state_dict_of(obj, path)
    info = _describe(obj, state_dict, source_format, path)
    _check_model_size(info, path)
    model = model_from_config(info.arch, info.num_classes, info.config)
    report = _load_state_dict(model, state_dict, f"checkpoint {path}")
    report.notes.append(info.integrity)
    return LoadedCheckpoint(model=model.to(map_location).eval(), info=info, report=report)
