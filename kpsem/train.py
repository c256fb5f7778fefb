"""Training: the paper's fine-tuning recipe, resumable bit for bit, on one process or many (torchrun).

Recipe (SPEC section 1, MFNet reference): SGD, momentum 0.9, Nesterov, weight decay 1e-4, lr 0.005,
step decay x0.1. As in the MFNet reference, parameters loaded from a pretrained checkpoint (``init``)
learn at 0.2x the base rate and new ones (classifier, KPSEM) at 1x; from scratch everything is 1x.

A run folder holds ``config.json`` (the resolved :class:`TrainConfig`), ``metrics.jsonl`` (one JSON
record per log interval and per epoch), ``checkpoints/epoch_NNN.pt`` (project format, with the full
training state), ``checkpoints/latest.json`` (which checkpoint a resume starts from) and ``final.pt``
(weights and metadata only). Resuming restores model, optimiser, scheduler, GradScaler, epoch, step,
every rank's RNG states and the metrics so far; the data order and augmentation of an epoch depend
only on (seed, epoch, item), so a resumed run ends with exactly the weights of an uninterrupted one.
"""

from __future__ import annotations

import datetime as _dt
import json
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from kpsem.constants import CLIP_FRAMES, CLIP_SIZE, FRAME_INTERVAL, MFNET_MEAN, MFNET_STD
from kpsem.distributed import DistInfo, all_reduce_sums, barrier, current, gather_to_main, pick_device
from kpsem.evaluate import CentreStats, evaluate_model
from kpsem.io import atomic_write_text
from kpsem.models import has_kpsem
from kpsem.models.memory_format import set_memory_format, torch_memory_format
from kpsem.precision import normalise_precision, resolve_precision

__all__ = [
    "TrainConfig",
    "TrainData",
    "TrainResult",
    "ResumeError",
    "open_train_data",
    "build_model",
    "parameter_groups",
    "train",
    "latest_checkpoint",
]

BACKBONE_LR_MULT = 0.2  # MFNet reference: pretrained layers learn at 0.2x when fine-tuning
_BACKBONE_FIELDS = ("conv1_channels", "widths", "depths", "groups", "dropout")
# Fields that may change between a run and its resumption without changing what is computed.
_RESUMABLE_CHANGES = frozenset(
    {"epochs", "resume", "progress", "workers", "save_every", "keep_checkpoints", "log_every", "device", "out",
     "memory_format"}  # a layout changes no value beyond float rounding (~1e-7), as a device does
)
_LEGACY_FIELDS = {"amp": "precision"}  # names in config.json and checkpoints written before the rename


class ResumeError(ValueError):
    """A resume that would not continue the same run; the message says which setting differs."""


@dataclass
class TrainConfig:
    """Everything that defines a training run; written to ``config.json`` in the run folder."""

    arch: str = "mf_kpsem"  # registered model: "mfnet" or "mf_kpsem"
    data: str | None = None  # data set root (None when the caller passes TrainData)
    out: str = "runs/train"  # run folder
    layout: str | None = None  # data set layout (None: detect from the folder)
    split_id: int = 1  # official split number for HMDB51 / UCF101
    annotations: str | None = None  # annotation file or folder when not in the standard place
    train_split: str = "train"  # split trained on
    val_split: str | None = "val"  # split evaluated after each epoch (None: none); HMDB51/UCF101: test list
    val_clips: int = 1  # clips per video in the per-epoch validation
    epochs: int = 30  # passes over the training set
    batch_size: int = 16  # clips per optimiser step on each process (paper's ablations: 16)
    lr: float = 0.005  # base learning rate (paper 4.1)
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = True  # Nesterov momentum (MFNet reference)
    weight_decay: float = 1e-4  # L2 penalty on every parameter
    backbone_lr_mult: float | None = None  # MFNet layers; None: 0.2 with --init, 1.0 from scratch
    kpsem_lr_mult: float = 1.0  # KPSEM (new layers)
    centre_lr_mult: float = 1.0  # KPSEM's centre MLPs (kpsem.centre_*), multiplied onto kpsem_lr_mult
    classifier_lr_mult: float = 1.0  # classifier (new layer)
    lr_steps: tuple[int, ...] = (20, 27)  # epochs after which the lr is multiplied by lr_factor
    lr_factor: float = 0.1  # step decay factor
    frames: int = CLIP_FRAMES  # frames per clip
    interval: int | tuple[int, ...] = FRAME_INTERVAL  # frame interval, or one drawn per clip (Kinetics: 1,2,2,3)
    size: int = CLIP_SIZE  # side of the square crop (multiple of 16)
    flip: str = "mirror"  # train flips: "mirror" (mirror-image classes swap labels: slide_left/right), "plain", "off"
    conv1_channels: int | None = None  # backbone stem width (None: MFNet's 16, or the init checkpoint's)
    widths: tuple[int, int, int, int] | None = None  # conv2..conv5 widths (None: MFNet's, or init's)
    depths: tuple[int, int, int, int] | None = None  # conv2..conv5 units (None: MFNet's, or init's)
    dropout: float | None = None  # dropout before the classifier (None: 0, or init's)
    model_options: dict[str, Any] = field(default_factory=dict)  # more create_model keywords (MF-KPSEM's)
    init: str | None = None  # checkpoint to start from (ours or published MFNet)
    reinit_classifier: bool = False  # drop init's classifier (another class count)
    precision: str = "fp32"  # fp32, bf16, fp16 (+ GradScaler) autocast, or auto (kpsem.precision); the command: auto
    memory_format: str = "channels_last_3d"  # layout of weights and activations (kpsem.models.memory_format)
    sync_bn: bool = False  # SyncBatchNorm across GPUs (CUDA + torchrun only)
    seed: int = 0  # seeds model init, data order and augmentation
    workers: int = 4  # data loader processes per training process
    eval_batch_size: int | None = None  # validation batch size (None: batch_size)
    save_every: int = 0  # extra mid-epoch checkpoint every N steps (0: only at epoch ends)
    keep_checkpoints: int = 0  # epoch checkpoints kept on disk, newest first (0: all)
    log_every: int = 10  # steps between metrics.jsonl records
    resume: str | None = None  # "auto" (latest in the run folder, if any) or a checkpoint path
    device: str = "auto"  # "auto" (GPU when available), "cpu", "cuda", "cuda:1"
    progress: bool = True  # tqdm progress bar on rank 0

    def __post_init__(self) -> None:
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
        data = _renamed_fields(data)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}; known: {sorted(known)}")
        return cls(**data)


def _renamed_fields(data: dict[str, Any]) -> dict[str, Any]:
    """A config dict with the fields of older versions under their current names (``amp`` -> ``precision``,
    whose ``off`` is ``fp32``)."""
    data = dict(data)
    for old, new in _LEGACY_FIELDS.items():
        if old in data and new not in data:
            data[new] = normalise_precision(data.pop(old)) if new == "precision" else data.pop(old)
    return data


@dataclass
class TrainData:
    """The data a run trains and validates on; :func:`open_train_data` builds it from a folder."""

    train: Dataset  # items: dict(clip=(3, T, S, S), label, video_id, clip_index, index)
    val: Dataset | None  # same items, test-time clips; None: no validation
    class_names: list[str]  # index -> name
    info: dict[str, Any] = field(default_factory=dict)  # what to record as the data set's provenance


@dataclass
class TrainResult:
    out: Path  # run folder
    final_checkpoint: Path | None  # final.pt (None on ranks other than 0)
    epochs: int  # epochs completed
    steps: int  # optimiser steps taken
    metrics: list[dict[str, Any]]  # every metrics.jsonl record
    resumed_from: Path | None  # checkpoint the run resumed from


def open_train_data(config: TrainConfig) -> TrainData:
    """Open ``config.data`` with the data layer: random clips for training, centre clips for validation."""
    from kpsem.data import ClipDataset, open_dataset

    if config.data is None:
        raise ValueError("no data set: pass --data ROOT (a data set folder)")
    options = {"layout": config.layout, "split_id": config.split_id, "annotations": config.annotations}
    train_index = open_dataset(config.data, split=config.train_split, **options)  # type: ignore[arg-type]
    clip = {"frames": config.frames, "interval": config.interval, "size": config.size}
    train_set = ClipDataset(train_index, train=True, seed=config.seed, flip=config.flip, **clip)
    names = train_index.class_names
    swapped = [[names[i], names[j]] for i, j in enumerate(train_set.mirrored) if i < j]
    val_set, val_info = None, None
    if config.val_split:
        val_index = open_dataset(config.data, split=config.val_split, **options)  # type: ignore[arg-type]
        if list(val_index.class_names) != list(train_index.class_names):
            raise ValueError(
                f"the {config.train_split} and {config.val_split} splits of {config.data} list different classes"
            )
        val_set = ClipDataset(val_index, train=False, clips_per_video=config.val_clips, seed=config.seed, **clip)
        val_info = {"split": config.val_split, "videos": len(val_index.videos), "skipped": len(val_index.skipped)}
    info = {
        "root": str(config.data), "layout": train_index.layout, "split_id": config.split_id,
        "train": {"split": config.train_split, "videos": len(train_index.videos), "skipped": len(train_index.skipped)},
        "val": val_info, "classes": len(train_index.class_names),
        "flip": config.flip, "mirror_pairs": swapped,
    }
    return TrainData(train=train_set, val=val_set, class_names=list(train_index.class_names), info=info)


def _backbone_config(config: TrainConfig) -> dict[str, Any]:
    """Backbone fields: explicit ones from ``config``, the rest from the init checkpoint when it has them."""
    inherited: dict[str, Any] = {}
    if config.init:
        from kpsem.checkpoint import describe_checkpoint

        described = describe_checkpoint(config.init)
        source = described.config.get("backbone", {}) if has_kpsem(described.arch) else described.config
        inherited = {k: source[k] for k in _BACKBONE_FIELDS if k in source}
    explicit = {k: getattr(config, k) for k in _BACKBONE_FIELDS if getattr(config, k, None) is not None}
    return {**inherited, **explicit}


def build_model(config: TrainConfig, num_classes: int) -> tuple[nn.Module, dict[str, Any]]:
    """The model ``config`` describes, initialised from ``config.init`` if given; plus what init did."""
    from kpsem.checkpoint import load_weights_into
    from kpsem.models import create_model

    backbone = _backbone_config(config)
    if has_kpsem(config.arch):
        model = create_model(config.arch, num_classes=num_classes, backbone=backbone, num_frames=config.frames,
                             memory_format=config.memory_format, **config.model_options)
    elif config.model_options:
        raise ValueError(f"model_options {sorted(config.model_options)} apply to mf_kpsem only, not {config.arch}")
    else:
        model = create_model(config.arch, num_classes=num_classes, memory_format=config.memory_format, **backbone)
    init_info: dict[str, Any] = {}
    if config.init:
        report = load_weights_into(model, config.init, reinit_classifier=config.reinit_classifier)
        init_info = {"path": str(config.init), "load": report.summary(), "reinitialised": report.reinitialised}
    return model, init_info


def parameter_groups(model: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """SGD groups ``backbone``, ``kpsem``, ``kpsem.centre``, ``classifier`` with their lr multipliers."""
    backbone_mult = config.backbone_lr_mult
    if backbone_mult is None:
        backbone_mult = BACKBONE_LR_MULT if config.init else 1.0
    mults = {
        "backbone": backbone_mult,
        "kpsem": config.kpsem_lr_mult,
        "kpsem.centre": config.kpsem_lr_mult * config.centre_lr_mult,
        "classifier": config.classifier_lr_mult,
    }
    grouped: dict[str, list[nn.Parameter]] = {name: [] for name in mults}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        grouped[model.parameter_group(name)].append(param)  # the model says which part a parameter is
    return [
        {"params": params, "name": name, "lr_mult": mults[name], "lr": config.lr * mults[name]}
        for name, params in grouped.items()
        if params
    ]


class _SeededItems(Dataset):
    """Loads item ``i`` of epoch ``e`` under RNGs seeded by (seed, e, i), then restores the RNGs.

    Augmentation then depends only on which item of which epoch is loaded, not on the process, the
    worker, or what was loaded before, which is what makes a resumed epoch identical.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        item_seed = int(np.random.SeedSequence([self.seed, self.epoch, int(index)]).generate_state(1)[0])
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed)
            random.seed(item_seed)
            np.random.seed(item_seed)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)


class _SkipSampler(Sampler[int]):
    """The first ``skip`` indices of ``sampler`` dropped: the rest of an interrupted epoch."""

    def __init__(self, sampler: Sampler[int], skip: int) -> None:
        self.sampler, self.skip = sampler, skip

    def __iter__(self) -> Iterator[int]:
        return islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        return max(len(self.sampler) - self.skip, 0)  # type: ignore[arg-type]


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def latest_checkpoint(out: str | Path) -> Path | None:
    """The checkpoint a resume of run folder ``out`` starts from, or ``None`` for a fresh run."""
    pointer = Path(out) / "checkpoints" / "latest.json"
    if not pointer.is_file():
        return None
    path = Path(out) / "checkpoints" / json.loads(pointer.read_text())["file"]
    if not path.is_file():
        raise ResumeError(f"{pointer} names {path.name}, which is missing; resume from an epoch checkpoint by path")
    return path


def _check_resumable(saved: dict[str, Any], config: TrainConfig, path: Path) -> None:
    saved = _renamed_fields(saved)
    current_cfg = config.to_dict()
    changed = sorted(k for k in current_cfg if k not in _RESUMABLE_CHANGES and saved.get(k) != current_cfg[k])
    if changed:
        detail = "; ".join(f"{k}: {saved.get(k)!r} -> {current_cfg[k]!r}" for k in changed[:6])
        raise ResumeError(
            f"cannot resume from {path}: these settings differ from the interrupted run ({detail}); "
            "resume with the same settings or start a new run folder (--out)"
        )


class _MetricsLog:
    """``metrics.jsonl`` on rank 0, and the same records in memory (they travel in checkpoints)."""

    def __init__(self, path: Path, enabled: bool, records: list[dict[str, Any]]) -> None:
        self.path, self.enabled, self.records = path, enabled, list(records)
        if enabled:  # rewrite from the checkpoint: records of a lost partial epoch disappear
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in self.records))

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if self.enabled:
            with self.path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _broadcast_buffers(model: nn.Module, dist_info: DistInfo) -> None:
    """Give every rank rank 0's BatchNorm statistics (DDP only syncs them at the next forward)."""
    if dist_info.distributed:
        for buffer in _unwrap(model).buffers():
            dist.broadcast(buffer, src=0)


def train(
    config: TrainConfig,
    *,
    data: TrainData | None = None,
    dist_info: DistInfo | None = None,
    command: Sequence[str] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train ``config.arch`` on ``data`` (default: :func:`open_train_data`) into ``config.out``.

    ``on_step(step)`` is called after every optimiser step (progress hooks; tests use it to simulate
    a crash). Under ``torchrun`` call :func:`kpsem.distributed.init_distributed` first and pass its
    result; rank 0 writes every file.
    """
    started = time.perf_counter()
    if dist_info is None:
        dist_info = current(pick_device(0, config.device))
    device, is_main = dist_info.device, dist_info.is_main
    out = Path(config.out)
    checkpoints = out / "checkpoints"
    resume_path: Path | None = None
    if config.resume == "auto":
        resume_path = latest_checkpoint(out)
    elif config.resume:
        resume_path = Path(config.resume)
    data = data or open_train_data(config)
    num_classes = len(data.class_names)

    payload: dict[str, Any] | None = None
    if resume_path is not None:
        from kpsem.checkpoint import model_from_config, read_checkpoint

        payload = read_checkpoint(resume_path)
        if payload.get("training_state") is None:
            raise ResumeError(f"{resume_path} has no training state (a final or published checkpoint); "
                              "pass it as --init to fine-tune from it instead")
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed)
    if payload is None:
        model, init_info = build_model(config, num_classes)
    else:  # the checkpoint describes the model itself: the --init file need not exist any more
        model, init_info = model_from_config(payload["arch"], num_classes, payload["config"]), {}
    set_memory_format(model, config.memory_format)  # measured faster for training steps on CPU too (README)
    model.to(device)
    groups = parameter_groups(model, config)
    optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                                weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(config.lr_steps), gamma=config.lr_factor)
    precision = resolve_precision(device, config.precision)
    # fp16's narrow range underflows small gradients; bf16 has fp32's range and needs no scaling.
    scaler = torch.amp.GradScaler(device.type, enabled=precision.name == "fp16")

    state: dict[str, Any] = {"epoch": 0, "epoch_step": 0, "step": 0, "metrics": [], "running": None}
    if payload is not None:
        from kpsem.checkpoint import load_weights_into

        saved = payload["training_state"]
        _check_resumable(saved["config"], config, resume_path)
        if saved["world_size"] != dist_info.world_size and saved["epoch_step"]:
            raise ResumeError(
                f"cannot resume {resume_path} in the middle of an epoch with {dist_info.world_size} processes: it was "
                f"saved by {saved['world_size']}; use {saved['world_size']} or resume from an epoch checkpoint"
            )
        load_weights_into(model, payload["state_dict"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        rng_states = saved["rng"]
        _set_rng_state(rng_states[dist_info.rank] if len(rng_states) == dist_info.world_size else rng_states[0])
        state = {k: saved[k] for k in ("epoch", "epoch_step", "step", "metrics", "running")}
        init_info = saved.get("init", init_info)

    train_model: nn.Module = model
    if dist_info.distributed:
        if config.sync_bn and device.type == "cuda":
            train_model = nn.SyncBatchNorm.convert_sync_batchnorm(train_model)
        find_unused = has_kpsem(config.arch) and config.model_options.get("gradient") == "hard"
        train_model = nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=find_unused,
        )

    train_items = _SeededItems(data.train, config.seed)
    sampler = DistributedSampler(train_items, num_replicas=dist_info.world_size, rank=dist_info.rank,
                                 shuffle=True, seed=config.seed)
    steps_per_epoch = len(sampler) // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(
            f"the training set has {len(train_items)} clips: fewer than batch_size={config.batch_size} per process "
            f"x {dist_info.world_size} processes; lower --batch-size"
        )

    if is_main:
        checkpoints.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.json", json.dumps(
            {"config": config.to_dict(), "classes": data.class_names, "data": data.info, "init": init_info,
             "world_size": dist_info.world_size, "device": str(device),
             "precision": precision.as_dict(),
             "command": list(command) if command is not None else sys.argv}, indent=2) + "\n")
    log = _MetricsLog(out / "metrics.jsonl", is_main, state["metrics"])

    def provenance(epoch: int, metrics: dict[str, Any] | None) -> dict[str, Any]:
        import kpsem

        record = {
            "command": list(command) if command is not None else sys.argv, "config": config.to_dict(),
            "dataset": data.info, "epoch": epoch, "step": state["step"], "metrics": metrics, "init": init_info,
            "world_size": dist_info.world_size, "torch": str(torch.__version__), "kpsem": kpsem.__version__,
        }
        return json.loads(json.dumps(record, default=str))  # plain data only: checkpoints load weights_only

    def save(path: Path, epoch_metrics: dict[str, Any] | None, *, with_state: bool = True) -> None:
        rng_all = gather_to_main(dist_info, _rng_state())
        if not is_main:
            return
        from kpsem.checkpoint import save_checkpoint

        training_state = None
        if with_state:
            training_state = {
                **{k: state[k] for k in ("epoch", "epoch_step", "step", "running")},
                "metrics": log.records, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler.is_enabled() else None, "rng": rng_all,
                "config": config.to_dict(), "init": init_info, "world_size": dist_info.world_size,
            }
        save_checkpoint(path, model, class_names=data.class_names, clip_frames=config.frames, clip_size=config.size,
                        mean=MFNET_MEAN, std=MFNET_STD, provenance=provenance(state["epoch"], epoch_metrics),
                        training_state=training_state)
        if with_state:
            atomic_write_text(checkpoints / "latest.json",
                              json.dumps({"file": path.name, "epoch": state["epoch"], "step": state["step"]}))

    centre_stats = CentreStats(model, training=True)
    bar = None
    if config.progress and is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.epochs * steps_per_epoch, initial=state["step"], unit="step", dynamic_ncols=True,
                   desc=f"train {config.arch}")
    epoch_metrics: dict[str, Any] | None = None
    try:
        while state["epoch"] < config.epochs:
            epoch = state["epoch"]
            sampler.set_epoch(epoch)
            train_items.set_epoch(epoch)
            skip = state["epoch_step"] * config.batch_size
            generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)  # worker seeds
            loader = DataLoader(train_items, batch_size=config.batch_size, sampler=_SkipSampler(sampler, skip),
                                num_workers=config.workers, drop_last=True, pin_memory=device.type == "cuda",
                                generator=generator)
            running = state["running"] or {"loss": 0.0, "correct": 0.0, "count": 0.0, "seconds": 0.0, "replaced": 0.0}
            window = {"loss": 0.0, "correct": 0.0, "count": 0.0, "since": time.perf_counter()}
            train_model.train()
            epoch_started = time.perf_counter()
            for batch in loader:
                clips = batch["clip"].to(device, non_blocking=True)  # (N, 3, T, S, S)
                labels = torch.as_tensor(batch["label"]).to(device, non_blocking=True)  # (N,)
                with precision.autocast():
                    logits = train_model(clips)  # (N, classes)
                    loss = F.cross_entropy(logits.float(), labels)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                state["step"] += 1
                state["epoch_step"] += 1
                correct = float((logits.argmax(1) == labels).sum())
                running["replaced"] += sum(1 for r in batch.get("replaced", []) if r)  # undecodable stand-ins
                for acc in (running, window):
                    acc["loss"] += float(loss.detach()) * len(labels)
                    acc["correct"] += correct
                    acc["count"] += len(labels)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(epoch=epoch + 1, loss=f"{float(loss.detach()):.3f}",
                                    lr=f"{optimizer.param_groups[0]['lr']:.2g}")
                if state["step"] % config.log_every == 0:
                    loss_sum, correct_sum, count = all_reduce_sums(
                        dist_info, [window["loss"], window["correct"], window["count"]])
                    elapsed = time.perf_counter() - window["since"]
                    log.write({"event": "train", "epoch": epoch + 1, "step": state["step"], "loss": loss_sum / count,
                               "top1": correct_sum / count, "lr": scheduler.get_last_lr(),
                               "clips_per_s": count / max(elapsed, 1e-9)})
                    window = {"loss": 0.0, "correct": 0.0, "count": 0.0, "since": time.perf_counter()}
                mid_epoch = state["epoch_step"] < steps_per_epoch
                if config.save_every and state["step"] % config.save_every == 0 and mid_epoch:
                    running["seconds"] += time.perf_counter() - epoch_started
                    epoch_started = time.perf_counter()
                    state["running"] = running
                    save(checkpoints / "last.pt", None)
                if on_step is not None:
                    on_step(state["step"])
            running["seconds"] += time.perf_counter() - epoch_started
            scheduler.step()
            loss_sum, correct_sum, count, replaced = all_reduce_sums(
                dist_info, [running["loss"], running["correct"], running["count"], running["replaced"]])
            epoch_metrics = {"event": "epoch", "epoch": epoch + 1, "step": state["step"],
                             "train_loss": loss_sum / count, "train_top1": correct_sum / count,
                             "lr": [g["lr"] for g in optimizer.param_groups],
                             "train_seconds": running["seconds"], "train_replaced_clips": int(replaced),
                             **centre_stats.take()}  # rank 0's batches; of this session when resumed mid-epoch
            if data.val is not None:
                _broadcast_buffers(train_model, dist_info)
                result = evaluate_model(
                    model, data.val, class_names=data.class_names, model_id=f"epoch_{epoch + 1:03d}:{config.arch}",
                    split=config.val_split or "val", batch_size=config.eval_batch_size or config.batch_size,
                    workers=config.workers, precision=precision.name, dist_info=dist_info,
                )
                if result is not None:
                    epoch_metrics.update(val_loss=result.clip_loss, val_top1=result.clip_top1,
                                         val_top5=result.clip_top5, val_video_top1=result.video_top1,
                                         val_video_top5=result.video_top5)
            if is_main:
                log.write(epoch_metrics)
                if bar is not None:
                    bar.write(_format_epoch(epoch_metrics))
            state.update(epoch=epoch + 1, epoch_step=0, running=None)
            save(checkpoints / f"epoch_{epoch + 1:03d}.pt", epoch_metrics)
            if is_main:
                _prune(checkpoints, config.keep_checkpoints)
                (checkpoints / "last.pt").unlink(missing_ok=True)
    finally:
        centre_stats.close()
        if bar is not None:
            bar.close()
    final = out / "final.pt"
    save(final, epoch_metrics or (log.records[-1] if log.records else None), with_state=False)
    barrier(dist_info)
    if is_main:
        total = time.perf_counter() - started
        atomic_write_text(out / "summary.json", json.dumps(
            {"final_checkpoint": str(final), "epochs": state["epoch"], "steps": state["step"], "seconds": total,
             "last_epoch": epoch_metrics, "resumed_from": str(resume_path) if resume_path else None,
             "finished": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}, indent=2) + "\n")
    return TrainResult(out=out, final_checkpoint=final if is_main else None, epochs=state["epoch"], steps=state["step"],
                       metrics=log.records, resumed_from=resume_path)


def _format_epoch(m: dict[str, Any]) -> str:
    text = f"epoch {m['epoch']}: train loss {m['train_loss']:.4f} top-1 {m['train_top1']:.2%}"
    if "val_top1" in m:
        text += f" | val loss {m['val_loss']:.4f} top-1 {m['val_top1']:.2%} top-5 {m['val_top5']:.2%}"
    return text


def _prune(checkpoints: Path, keep: int) -> None:
    if keep <= 0:
        return
    for old in sorted(checkpoints.glob("epoch_*.pt"))[:-keep]:
        old.unlink()
