"""Checkpoints: the project's own format, and the published MFNet format.

Our format is a dict of plain data and tensors, always read with ``weights_only=True``::

    {"format": "kpsem-studio", "format_version": 1, "arch": "mf_kpsem", "config": {...},
     "class_names": [...], "clip": {"frames": 16, "size": 224, "mean": [...], "std": [...]},
     "provenance": {...}, "state_dict": {...}, "training_state": {...} (optional)}

Published MFNet checkpoints are ``{"epoch": ..., "state_dict": ...}`` saved from DataParallel, so keys
carry ``module.`` and, from an old PyTorch, no ``num_batches_tracked`` buffers.
"""

from __future__ import annotations

import datetime as _dt
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kpsem.constants import CLIP_FRAMES, CLIP_SIZE, MFNET_MEAN, MFNET_STD
from kpsem.models._registry import create_model
from kpsem.models.mf_kpsem import MFKPSEM
from kpsem.models.mfnet import MFNet

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "CheckpointError",
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
]

FORMAT = "kpsem-studio"
FORMAT_VERSION = 1
_SHOWN_KEYS = 8  # how many offending keys an error message names before "... and N more"
# torch's weights-only unpickler refuses a global in two wordings (torch 2.13): "Unsupported global:
# GLOBAL x was not an allowed global by default" and, for os, subprocess and the like, "Trying to load
# unsupported GLOBAL posix.system whose module posix is blocked". Case-insensitive, to match both.
_REFUSED_GLOBAL = re.compile(r"unsupported global", re.IGNORECASE)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says what is wrong and what to do."""


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
    shown = ", ".join(keys[:_SHOWN_KEYS])
    return shown + (f" ... and {len(keys) - _SHOWN_KEYS} more" if len(keys) > _SHOWN_KEYS else "")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` with an error that says what is wrong with the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (or is not a file); check the path")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes); the file was not written completely")
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
    return obj


def _state_dict_of(obj: dict[str, Any], path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    if obj.get("format") == FORMAT:
        return obj["state_dict"], FORMAT
    if isinstance(obj.get("state_dict"), dict):
        return obj["state_dict"], "mfnet-published"
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, "state-dict"
    raise CheckpointError(
        f"{path} is not a model checkpoint: it has no 'state_dict' and is not a dict of tensors "
        f"(top-level keys: {_name_keys(sorted(map(str, obj)))})"
    )


def clean_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Pure key remapping for published files: strip DataParallel's ``module.`` prefix."""
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state_dict.items()}


def _infer_published_info(state_dict: dict[str, torch.Tensor], source_format: str, path: Path) -> CheckpointInfo:
    if "classifier.weight" not in state_dict or "conv1.conv.weight" not in state_dict:
        raise CheckpointError(
            f"{path} does not look like an MFNet checkpoint: it lacks conv1.conv.weight or classifier.weight "
            f"(first keys: {_name_keys(list(state_dict))})"
        )
    num_classes = int(state_dict["classifier.weight"].shape[0])
    widths = tuple(int(state_dict[f"conv{i}.B01.conv_m2.conv.weight"].shape[0]) for i in range(2, 6))
    depths = tuple(
        len({k.split(".")[1] for k in state_dict if k.startswith(f"conv{i}.B")}) for i in range(2, 6)
    )
    config: dict[str, Any] = {"conv1_channels": int(state_dict["conv1.conv.weight"].shape[0])}
    if widths != (96, 192, 384, 768) or depths != (3, 4, 6, 3):
        config.update(widths=widths, depths=depths)
    return CheckpointInfo(
        arch="mfnet",
        num_classes=num_classes,
        config=config,
        class_names=[f"class_{i}" for i in range(num_classes)],
        clip_frames=CLIP_FRAMES,
        clip_size=CLIP_SIZE,
        mean=MFNET_MEAN,
        std=MFNET_STD,
        provenance={"source": str(path), "note": "published MFNet format; class names unknown"},
        source_format=source_format,
    )


def describe_checkpoint(path: str | Path) -> CheckpointInfo:
    """Read what a checkpoint says about itself without building a model."""
    obj = read_checkpoint(path)
    state_dict, source_format = _state_dict_of(obj, path)
    if source_format != FORMAT:
        return _infer_published_info(clean_state_dict(state_dict), source_format, Path(path))
    try:
        clip = obj["clip"]
        return CheckpointInfo(
            arch=obj["arch"],
            num_classes=len(obj["class_names"]),
            config=dict(obj["config"]),
            class_names=list(obj["class_names"]),
            clip_frames=int(clip["frames"]),
            clip_size=int(clip["size"]),
            mean=tuple(clip["mean"]),
            std=tuple(clip["std"]),
            provenance=dict(obj.get("provenance", {})),
        )
    except (KeyError, TypeError) as error:
        raise CheckpointError(f"checkpoint {path} is missing metadata field {error}; it was not saved by kpsem") from None


def model_from_config(arch: str, num_classes: int, config: dict[str, Any]) -> nn.Module:
    """Build a registered model from the plain config a checkpoint stores."""
    config = dict(config)
    config.pop("num_classes", None)
    if isinstance(config.get("backbone"), dict):
        config["backbone"] = {k: v for k, v in config["backbone"].items() if k != "num_classes"}
    try:
        return create_model(arch, num_classes=num_classes, **config)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"cannot build model {arch!r} from the checkpoint's config: {error}") from None


def _model_config(model: nn.Module) -> tuple[str, dict[str, Any]]:
    if isinstance(model, MFKPSEM):
        return "mf_kpsem", model.extra_config()
    if isinstance(model, MFNet):
        return "mfnet", model.extra_config()
    raise TypeError(f"save_checkpoint takes an MFNet or MF-KPSEM model; got {type(model).__name__}")


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
        "provenance": {"saved": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **(provenance or {})},
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    if training_state is not None:
        payload["training_state"] = training_state
    partial = path.with_name(path.name + ".partial")
    torch.save(payload, partial)
    partial.replace(path)
    return path


def _classifier_mismatch(model_sd: dict[str, torch.Tensor], sd: dict[str, torch.Tensor]) -> bool:
    return any(
        key in sd and key in model_sd and sd[key].shape != model_sd[key].shape
        for key in ("classifier.weight", "classifier.bias")
    )


def load_weights_into(
    model: nn.Module,
    source: str | Path | dict[str, torch.Tensor],
    *,
    reinit_classifier: bool = False,
) -> LoadReport:
    """Copy weights from ``source`` into ``model`` and say exactly what did not match.

    Tolerated: the ``module.`` prefix and absent ``num_batches_tracked`` (published files); an MFNet
    file loaded into MF-KPSEM, whose KPSEM and wider classifier then keep their fresh init; a classifier
    of another class count when ``reinit_classifier`` is set. Anything else missing, unexpected or
    misshapen raises :class:`CheckpointError` naming the keys.
    """
    path = Path(source) if not isinstance(source, dict) else Path("<state dict>")
    if isinstance(source, dict):
        state_dict = source
    else:
        state_dict, _ = _state_dict_of(read_checkpoint(path), path)
    state_dict = clean_state_dict(state_dict)
    model_sd = model.state_dict()
    report = LoadReport()
    backbone_only = isinstance(model, MFKPSEM) and not any(k.startswith("kpsem.") for k in state_dict)
    if backbone_only:
        report.reinitialised += [k for k in model_sd if k.startswith("kpsem.")]
        report.notes.append("MFNet weights loaded into the MF-KPSEM backbone; KPSEM starts fresh")
    classifier_mismatch = _classifier_mismatch(model_sd, state_dict)
    if classifier_mismatch and (reinit_classifier or backbone_only):
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("classifier.")}
        report.reinitialised += ["classifier.weight", "classifier.bias"]
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
        theirs = tuple(state_dict["classifier.weight"].shape)
        ours = tuple(model_sd["classifier.weight"].shape)
        raise CheckpointError(
            f"{path}: its classifier has shape {theirs} (classes x features) but the model's is {ours}; "
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
            f"{path} does not fit {type(model).__name__}: " + "; ".join(problems)
            + ". Check that the architecture and its config match the file"
        )
    with torch.no_grad():
        for key, value in state_dict.items():
            model_sd[key].copy_(value)
    report.loaded = len(state_dict)
    report.missing_num_batches_tracked = len(tolerated)
    return report


def load_checkpoint(
    path: str | Path, *, map_location: str | torch.device = "cpu"
) -> LoadedCheckpoint:
    """Build the model a checkpoint describes and load its weights, ready for ``eval()``."""
    info = describe_checkpoint(path)
    model = model_from_config(info.arch, info.num_classes, info.config)
    report = load_weights_into(model, path)
    return LoadedCheckpoint(model=model.to(map_location).eval(), info=info, report=report)
