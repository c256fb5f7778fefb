"""What defines a training run: :class:`TrainConfig`, one list of fields from which the command line is made.

Each field carries its help text, its option group and, where the command line needs it, how its text is
parsed (``field(metadata=...)``); ``kpsem.commands._fields`` turns them into ``kpsem train``'s flags, so a new
field is a new flag with nothing else to write. The module imports no torch (``kpsem train --help`` reads
it); validating a precision or memory format imports it when a config is made.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from kpsem.constants import CLIP_FRAMES, CLIP_SIZE, FRAME_INTERVAL

__all__ = [
    "TrainConfig",
    "KPSEMFlags",
    "command_defaults",
    "read_config_file",
    "renamed_fields",
    "parse_ints",
    "parse_stage_ints",
    "parse_interval",
    "parse_split",
]

# registered models train builds (kpsem.models.list_models: a test checks)
ARCHS = ("mfnet", "mf_kpsem", "r3d50", "r3d50_kpsem")
# each baseline's KPSEM model, torch-free (the model classes' has_kpsem and baseline_arch: a test checks)
KPSEM_OF = {"mfnet": "mf_kpsem", "r3d50": "r3d50_kpsem"}
FLIP_CHOICES = ("mirror", "plain", "off")  # kpsem.data.FLIP_MODES, spelled here without importing torch
MEMORY_FORMAT_CHOICES = ("channels_last_3d", "contiguous")  # kpsem.models.memory_format.MEMORY_FORMATS
# The KPSEM spellings kpsem train's flags offer, torch-free (tests/test_train_cli.py checks them against the models):
STAGE_CHOICES = ("conv2", "conv3", "conv4", "conv5", "res2", "res3", "res4", "res5")  # MFNet's, then R3D-50's stages
REGION_CHOICES = (1, 4, 9, 16)  # kpsem.models.kpsem_module.SUPPORTED_REGIONS
GRADIENT_CHOICES = ("straight_through", "hard")  # KPSEMOptions.gradient
_LEGACY_FIELDS = {"amp": "precision"}  # names in config.json and checkpoints written before the rename


def parse_ints(text: str) -> tuple[int, ...]:
    """'20,27' -> (20, 27); the command line's spelling of a list of integers."""
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"expected comma-separated integers, e.g. 20,27; got {text!r}") from None


def parse_stage_ints(text: str) -> tuple[int, int, int, int]:
    """'48,96,192,384' -> one integer per backbone stage conv2..conv5."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise ValueError(f"expected 4 comma-separated integers for conv2..conv5, e.g. 48,96,192,384; got {text!r}")
    return values  # type: ignore[return-value]


def parse_interval(text: str) -> int | tuple[int, ...]:
    """'2' -> 2; '1,2,2,3' -> (1, 2, 2, 3), one interval drawn per clip."""
    values = parse_ints(text)
    if not values:
        raise ValueError(f"expected an interval like 2 or 1,2,2,3; got {text!r}")
    return values[0] if len(values) == 1 else values


def parse_split(text: str) -> str | None:
    """A split name; 'none' (or nothing) means no split."""
    return None if text.strip().lower() in ("none", "") else text


def _opt(default: Any, help_text: str, group: str, **cli: Any) -> Any:
    """A field with its help text and option group; ``cli`` may add ``flag`` (None: no flag of its own),
    ``choices``, ``parse`` (text -> value, ValueError with a message), ``metavar``, ``const`` (the value of
    the bare flag), ``required`` (by the command) and ``command_default`` (the command's, where it differs)."""
    return field(default=default, metadata={"help": help_text, "group": group, **cli})


@dataclass
class TrainConfig:
    """Everything that defines a training run; written to ``config.json`` in the run folder.

    ``data`` may stay None when the caller passes :class:`kpsem.train.TrainData` itself."""

    arch: str = _opt("mf_kpsem", "registered model to train", "model", choices=ARCHS)
    data: str | None = _opt(None, "data set root (HMDB51, UCF101, Kinetics, SSv1 or class folders)", "data",
                            required=True)
    out: str = _opt("runs/train", "run folder", "run")
    layout: str | None = _opt(None, "data set layout (default: detect from the folder)", "data")
    split_id: int = _opt(1, "official split number (HMDB51/UCF101)", "data")
    annotations: str | None = _opt(None, "annotation file or folder, if not in the standard place", "data")
    train_split: str = _opt("train", "split to train on", "data")
    val_split: str | None = _opt("val", "split evaluated after each epoch ('none' to skip); HMDB51/UCF101: the "
                                 "test list", "data", parse=parse_split)
    val_clips: int = _opt(1, "clips per video in that validation", "data")
    epochs: int = _opt(30, "passes over the training set", "optimisation")
    batch_size: int = _opt(16, "clips per optimiser step on each process; the paper's ablations use 16", "optimisation")
    lr: float = _opt(0.005, "base learning rate (paper 4.1)", "optimisation")
    momentum: float = _opt(0.9, "SGD momentum", "optimisation")
    nesterov: bool = _opt(True, "Nesterov momentum (MFNet reference)", "optimisation")
    weight_decay: float = _opt(1e-4, "L2 penalty on every parameter", "optimisation")
    backbone_lr_mult: float | None = _opt(None, "lr multiplier of the MFNet layers (default 0.2 with --init, 1.0 "
                                          "from scratch)", "optimisation")
    kpsem_lr_mult: float = _opt(1.0, "lr multiplier of KPSEM (new layers)", "optimisation")
    centre_lr_mult: float = _opt(1.0, "extra lr multiplier for KPSEM's centre MLPs (kpsem.centre_*), e.g. 0.1",
                                 "optimisation")
    # The centre levers (kpsem.centres; README "Adaptive centres examined"): a clip-dependent start and a spread reward.
    centre_init_std: float = _opt(0.0, "std of the centre MLPs' last-layer weights at the start (0: zeros, every "
                                  "centre starts at the geometric centre)", "optimisation")
    centre_spread_weight: float = _opt(0.0, "weight of the centre spread regulariser in the loss (rewards centres "
                                       "that differ across a batch's clips, penalises the bound; 0: off)",
                                       "optimisation")
    classifier_lr_mult: float = _opt(1.0, "lr multiplier of the classifier (new layer)", "optimisation")
    lr_steps: tuple[int, ...] = _opt((20, 27), "epochs after which the lr is multiplied by --lr-factor",
                                     "optimisation", parse=parse_ints)
    lr_factor: float = _opt(0.1, "step decay factor", "optimisation")
    frames: int = _opt(CLIP_FRAMES, "frames per clip", "data")
    interval: int | tuple[int, ...] = _opt(FRAME_INTERVAL, "frame interval; a list draws one per clip, e.g. "
                                           "1,2,2,3 (Kinetics)", "data", parse=parse_interval)
    size: int = _opt(CLIP_SIZE, "crop side, a multiple of 16 and at least 32", "data")
    flip: str = _opt("mirror", "training flips: 'mirror' swaps the labels of mirror-image classes "
                     "(slide_left/slide_right, ... from left to right/right to left), 'plain' keeps every label "
                     "(MFNet's reference), 'off' never flips", "data", choices=FLIP_CHOICES)
    conv1_channels: int | None = _opt(None, "stem width (default MFNet's 16, or --init's)", "model")
    widths: tuple[int, int, int, int] | None = _opt(None, "conv2..conv5 widths, e.g. 48,96,192,384 (default "
                                                    "MFNet's, or --init's)", "model", parse=parse_stage_ints)
    depths: tuple[int, int, int, int] | None = _opt(None, "conv2..conv5 units, e.g. 1,2,3,1 (default MFNet's, or "
                                                    "--init's)", "model", parse=parse_stage_ints)
    dropout: float | None = _opt(None, "dropout before the classifier (default 0, or --init's)", "model")
    model_options: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "more create_model keywords (MF-KPSEM's options)", "group": "model",
        "flag": None})  # the command's MF-KPSEM group fills it
    init: str | None = _opt(None, "start from this checkpoint (ours or a published MFNet file); MF-KPSEM takes an "
                            "MFNet checkpoint into its backbone; backbone widths/depths default to the "
                            "checkpoint's", "model", metavar="CKPT")
    reinit_classifier: bool = _opt(False, "drop --init's classifier (other class count)", "model")
    precision: str = _opt("fp32", "fp32, bf16, fp16 (+ GradScaler) autocast, or auto (kpsem.precision)",
                          "optimisation", flag=None, command_default="auto")  # kpsem.commands._precision's flag
    memory_format: str = _opt("channels_last_3d", "layout of weights and activations "
                              "(kpsem.models.memory_format)", "run", choices=MEMORY_FORMAT_CHOICES)
    sync_bn: bool = _opt(False, "SyncBatchNorm across GPUs (CUDA + torchrun only)", "optimisation")
    seed: int = _opt(0, "seeds model init, data order and augmentation", "optimisation")
    workers: int = _opt(4, "data loader processes per training process", "data")
    eval_batch_size: int | None = _opt(None, "validation batch size (default: --batch-size)", "run")
    save_every: int = _opt(0, "also checkpoint every N steps mid-epoch (0: only at epoch ends)", "run")
    keep_checkpoints: int = _opt(0, "epoch checkpoints kept on disk, newest first (0: all)", "run")
    log_every: int = _opt(10, "steps between metrics.jsonl records", "run")
    resume: str | None = _opt(None, "continue an interrupted run from CKPT, or (no value) from the run folder's "
                              "latest", "run", metavar="CKPT", const="auto")
    device: str = _opt("auto", "auto (GPU when available), cpu, cuda, cuda:1", "run")
    progress: bool = _opt(True, "tqdm progress bar on rank 0", "run")

    def __post_init__(self) -> None:
        from kpsem.models.memory_format import torch_memory_format
        from kpsem.precision import normalise_precision

        self.lr_steps = tuple(int(s) for s in self.lr_steps)
        if self.widths is not None:
            self.widths = tuple(int(w) for w in self.widths)  # type: ignore[assignment]
        if self.depths is not None:
            self.depths = tuple(int(d) for d in self.depths)  # type: ignore[assignment]
        if self.size < 32 or self.size % 16:
            raise ValueError(f"size must be a multiple of 16 and at least 32 (e.g. 112, 160, 224); got {self.size}")
        if not isinstance(self.interval, int):
            self.interval = tuple(int(i) for i in self.interval)
            if not self.interval or min(self.interval) < 1:
                raise ValueError(f"interval must be positive frame counts; got {list(self.interval)}")
        for name in ("epochs", "batch_size", "frames", "val_clips", "log_every") + (
            ("interval",) if isinstance(self.interval, int) else ()
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1; got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive; got {self.lr}")
        for name in ("centre_init_std", "centre_spread_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be at least 0; got {getattr(self, name)}")
        self.precision = normalise_precision(self.precision)
        torch_memory_format(self.memory_format)  # a bad name fails here, not after the data is opened
        if list(self.lr_steps) != sorted(set(self.lr_steps)):
            raise ValueError(f"lr_steps must be increasing epochs; got {list(self.lr_steps)}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """The config a ``config.json`` or checkpoint holds; older files' ``amp`` is read as ``precision``."""
        data = renamed_fields(data)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}; known: {sorted(known)}")
        return cls(**data)


@dataclass
class KPSEMFlags:
    """The MF-KPSEM options ``kpsem train`` offers as flags, with MFKPSEMConfig's names and defaults; the flags
    given go into :attr:`TrainConfig.model_options`, the rest keep the model's default (insert_after's is the
    backbone's: conv4 on MFNet, res3 on R3D-50). Spelled out here so that ``--help`` imports no torch."""

    insert_after: str = _opt("conv4", "stage KPSEM reads: conv2..conv5 (MF-KPSEM, default conv4), res2..res5 (R3D-50, "
                             "res3)", "kpsem", choices=STAGE_CHOICES)
    num_regions: int = _opt(4, "K (1 = single key point; 9, 16: a 3x3 or 4x4 grid)", "kpsem", choices=REGION_CHOICES)
    num_sets: int = _opt(8, "G, AReSE sets", "kpsem")
    embed_dim: int = _opt(24, "d_e", "kpsem")
    fixed_regions: bool = _opt(False, "ablation: random frozen centres", "kpsem")
    gradient: str = _opt("straight_through", "KPSEM's training backward rule (default straight_through)", "kpsem",
                         choices=GRADIENT_CHOICES)


def renamed_fields(data: dict[str, Any]) -> dict[str, Any]:
    """A config dict with the fields of older versions under their current names (``amp`` -> ``precision``,
    whose ``off`` is ``fp32``)."""
    from kpsem.precision import normalise_precision

    data = dict(data)
    for old, new in _LEGACY_FIELDS.items():
        if old in data and new not in data:
            data[new] = normalise_precision(data.pop(old)) if new == "precision" else data.pop(old)
    return data


def command_defaults() -> dict[str, Any]:
    """The fields whose default on the command line differs from the library's (precision: auto)."""
    return {f.name: f.metadata["command_default"] for f in fields(TrainConfig) if "command_default" in f.metadata}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The TrainConfig fields a JSON file holds: a run's ``config.json`` (fields under ``"config"``) or an
    object of fields. Unknown keys are refused by name, with the nearest field."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--config {path} does not exist; pass a run's config.json (RUN/config.json)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"--config {path} is not JSON ({error})") from None
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        data = data["config"]  # a run folder's config.json: the resolved config beside provenance
    if not isinstance(data, dict):
        raise ValueError(f"--config {path} must hold a JSON object of TrainConfig fields; got {type(data).__name__}")
    data = renamed_fields(data)
    known = [f.name for f in fields(TrainConfig)]
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"--config {path}: unknown TrainConfig field {key!r}{hint}; the fields are the long "
                             "options of kpsem train, with _ for -")
    return data

