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

:func:`train` runs named steps over one :class:`_Run` (what they share) whose progress is a typed
:class:`TrainState`: set up (:func:`_set_up`, :func:`_restore`), one epoch (:func:`_train_epoch`, each batch
through :func:`train_step`), its end with validation and checkpoint (:func:`_end_epoch`, :func:`_save`) and
the summary (:func:`_finish`). :class:`TrainConfig` lives in :mod:`kpsem.train_config`, free of torch.
"""

from __future__ import annotations

import datetime as _dt
import json
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from kpsem.centres import CentreSpread
from kpsem.constants import MFNET_MEAN, MFNET_STD
from kpsem.distributed import DistInfo, all_reduce_sums, barrier, current, gather_to_main, pick_device
from kpsem.evaluate import CentreStats, evaluate_model
from kpsem.io import atomic_write_text
from kpsem.models import has_kpsem
from kpsem.models.memory_format import set_memory_format
from kpsem.precision import Precision, resolve_precision
from kpsem.train_config import TrainConfig, renamed_fields

__all__ = [
    "TrainConfig",
    "TrainData",
    "TrainResult",
    "TrainState",
    "EpochSums",
    "ResumeError",
    "open_train_data",
    "build_model",
    "parameter_groups",
    "build_optimizer",
    "grad_scaler",
    "train_step",
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


class ResumeError(ValueError):
    """A resume that would not continue the same run; the message says which setting differs."""


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
    if config.centre_init_std:  # before init: an init checkpoint's centre MLP, if it has one, wins
        from kpsem.centres import init_centre_mlp

        init_centre_mlp(model, config.centre_init_std, generator=torch.Generator().manual_seed(config.seed))
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
    saved = renamed_fields(saved)
    current_cfg = config.to_dict()
    changed = sorted(k for k in current_cfg if k not in _RESUMABLE_CHANGES and saved.get(k) != current_cfg[k])
    if changed:
        detail = "; ".join(f"{k}: {saved.get(k)!r} -> {current_cfg[k]!r}" for k in changed[:6])
        raise ResumeError(
            f"cannot resume from {path}: these settings differ from the interrupted run ({detail}); "
            "resume with the same settings or start a new run folder (--out)"
        )


class _MetricsLog:
    """``metrics.jsonl`` on rank 0, and the same records in memory: appended to ``records`` (the run's
    :attr:`TrainState.metrics`, which travel in checkpoints)."""

    def __init__(self, path: Path, enabled: bool, records: list[dict[str, Any]]) -> None:
        self.path, self.enabled, self.records = path, enabled, records
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


_StepDecay = torch.optim.lr_scheduler.MultiStepLR


@dataclass
class EpochSums:
    """Sums over the clips of one epoch (or one log window) on this process; all-reduced when reported."""

    loss: float = 0.0  # per-clip cross-entropy, summed
    correct: float = 0.0  # top-1 hits
    count: float = 0.0  # clips
    seconds: float = 0.0  # time spent in training steps (not validation or checkpoints)
    replaced: float = 0.0  # clips the data set replaced because they could not be decoded

    def add(self, loss: float, correct: float, count: int) -> None:
        self.loss += loss * count
        self.correct += correct
        self.count += count


@dataclass
class TrainState:
    """How far a run has come: with the optimiser, scheduler, scaler and RNG states, what a checkpoint's
    ``training_state`` restores (there as plain data, ``running`` a dict)."""

    epoch: int = 0  # epochs completed
    epoch_step: int = 0  # optimiser steps taken in the current epoch
    step: int = 0  # optimiser steps taken in all
    metrics: list[dict[str, Any]] = field(default_factory=list)  # every metrics.jsonl record so far
    running: EpochSums | None = None  # the current epoch's sums, at a mid-epoch checkpoint


@dataclass
class _Run:
    """What the steps of one training run share; built by :func:`_set_up`."""

    config: TrainConfig
    data: TrainData
    dist_info: DistInfo
    model: nn.Module  # the model itself: saved and evaluated
    train_model: nn.Module  # what the steps run: the model or its DDP wrapper
    optimizer: torch.optim.Optimizer
    scheduler: _StepDecay
    scaler: torch.amp.GradScaler
    precision: Precision
    state: TrainState
    init_info: dict[str, Any]  # what --init did (or, resumed, what it did then)
    command: list[str]
    resumed_from: Path | None
    log: _MetricsLog = field(init=False)  # opened once config.json is written
    bar: Any = None  # tqdm bar on rank 0, if any

    @property
    def out(self) -> Path:
        return Path(self.config.out)

    @property
    def checkpoints(self) -> Path:
        return self.out / "checkpoints"


def build_optimizer(model: nn.Module, config: TrainConfig) -> tuple[torch.optim.SGD, _StepDecay]:
    """The recipe's SGD over :func:`parameter_groups` and its step decay."""
    optimizer = torch.optim.SGD(parameter_groups(model, config), lr=config.lr, momentum=config.momentum,
                                nesterov=config.nesterov, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(config.lr_steps), gamma=config.lr_factor)
    return optimizer, scheduler


def grad_scaler(device: torch.device, precision: Precision) -> torch.amp.GradScaler:
    """fp16's narrow range underflows small gradients, so it trains scaled; bf16 has fp32's range and needs none
    (the scaler is then a no-op)."""
    return torch.amp.GradScaler(device.type, enabled=precision.name == "fp16")


def train_step(model: nn.Module, clips: torch.Tensor, labels: torch.Tensor, *, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, precision: Precision) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on one batch, as :func:`train` takes it (and the benchmark times it): forward under
    the precision's autocast, cross-entropy in float32, backward through the scaler, SGD. Returns
    ``(loss, logits)``."""
    with precision.autocast():
        logits = model(clips)  # (N, classes)
        loss = F.cross_entropy(logits.float(), labels)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss, logits


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
    resume_path = _resume_path(config)
    data = data or open_train_data(config)
    payload = _read_resume(resume_path)
    run = _set_up(config, data, dist_info, payload, resumed_from=resume_path,
                  command=list(command) if command is not None else sys.argv)
    items, sampler, steps_per_epoch = _training_order(run)
    _write_run_config(run)
    run.log = _MetricsLog(run.out / "metrics.jsonl", dist_info.is_main, run.state.metrics)
    centre_stats = CentreStats(run.model, training=True)
    spread = CentreSpread(run.model, config.centre_spread_weight,
                          loss_scale=run.scaler.get_scale if run.scaler.is_enabled() else None)
    run.bar = _progress_bar(run, steps_per_epoch)
    epoch_metrics: dict[str, Any] | None = None
    try:
        while run.state.epoch < config.epochs:
            sums = _train_epoch(run, items, sampler, steps_per_epoch, on_step)
            epoch_metrics = _end_epoch(run, sums, centre_stats)
    finally:
        centre_stats.close()
        spread.close()
        if run.bar is not None:
            run.bar.close()
    final = _finish(run, epoch_metrics, started)
    return TrainResult(out=run.out, final_checkpoint=final, epochs=run.state.epoch, steps=run.state.step,
                       metrics=run.state.metrics, resumed_from=resume_path)


def _resume_path(config: TrainConfig) -> Path | None:
    """The checkpoint ``config.resume`` names: the run folder's latest for "auto" (None in a fresh folder)."""
    if config.resume == "auto":
        return latest_checkpoint(config.out)
    return Path(config.resume) if config.resume else None


def _read_resume(path: Path | None) -> dict[str, Any] | None:
    """The checkpoint a resume continues from, refused unless it holds a training state."""
    if path is None:
        return None
    from kpsem.checkpoint import read_checkpoint

    payload = read_checkpoint(path)
    if payload.get("training_state") is None:
        raise ResumeError(f"{path} has no training state (a final or published checkpoint); "
                          "pass it as --init to fine-tune from it instead")
    return payload


def _set_up(config: TrainConfig, data: TrainData, dist_info: DistInfo, payload: dict[str, Any] | None, *,
            resumed_from: Path | None, command: list[str]) -> _Run:
    """Seeds, the model (built, or as the resumed checkpoint describes it), the optimiser, scheduler and scaler,
    restored from ``payload`` when resuming, and the model wrapped for several processes."""
    device = dist_info.device
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed)
    if payload is None:
        model, init_info = build_model(config, len(data.class_names))
    else:  # the checkpoint describes the model itself: the --init file need not exist any more
        from kpsem.checkpoint import model_from_config

        model, init_info = model_from_config(payload["arch"], len(data.class_names), payload["config"]), {}
    set_memory_format(model, config.memory_format)  # measured faster for training steps on CPU too (README)
    model.to(device)
    optimizer, scheduler = build_optimizer(model, config)
    precision = resolve_precision(device, config.precision)
    run = _Run(config=config, data=data, dist_info=dist_info, model=model, train_model=model, optimizer=optimizer,
               scheduler=scheduler, scaler=grad_scaler(device, precision), precision=precision, state=TrainState(),
               init_info=init_info, command=command, resumed_from=resumed_from)
    if payload is not None:
        _restore(run, payload)
    run.train_model = _wrap_for_processes(model, config, dist_info)
    return run


def _restore(run: _Run, payload: dict[str, Any]) -> None:
    """Continue where ``payload`` (a checkpoint with a training state) stopped: weights, optimiser, scheduler,
    scaler, this rank's RNG states and the progress; refused if the settings or the process count differ."""
    from kpsem.checkpoint import load_weights_into

    saved, path, dist_info = payload["training_state"], run.resumed_from, run.dist_info
    _check_resumable(saved["config"], run.config, path)
    if saved["world_size"] != dist_info.world_size and saved["epoch_step"]:
        raise ResumeError(
            f"cannot resume {path} in the middle of an epoch with {dist_info.world_size} processes: it was "
            f"saved by {saved['world_size']}; use {saved['world_size']} or resume from an epoch checkpoint"
        )
    load_weights_into(run.model, payload["state_dict"])
    run.optimizer.load_state_dict(saved["optimizer"])
    run.scheduler.load_state_dict(saved["scheduler"])
    if saved.get("scaler"):
        run.scaler.load_state_dict(saved["scaler"])
    rng_states = saved["rng"]
    _set_rng_state(rng_states[dist_info.rank] if len(rng_states) == dist_info.world_size else rng_states[0])
    running = saved["running"]
    run.state = TrainState(epoch=saved["epoch"], epoch_step=saved["epoch_step"], step=saved["step"],
                           metrics=list(saved["metrics"]), running=EpochSums(**running) if running else None)
    run.init_info = saved.get("init", run.init_info)


def _wrap_for_processes(model: nn.Module, config: TrainConfig, dist_info: DistInfo) -> nn.Module:
    """Under torchrun: SyncBatchNorm if asked for (CUDA), then DistributedDataParallel; else the model."""
    if not dist_info.distributed:
        return model
    device = dist_info.device
    train_model = model
    if config.sync_bn and device.type == "cuda":
        train_model = nn.SyncBatchNorm.convert_sync_batchnorm(train_model)
    find_unused = has_kpsem(config.arch) and config.model_options.get("gradient") == "hard"
    return nn.parallel.DistributedDataParallel(
        train_model, device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=find_unused,
    )


def _training_order(run: _Run) -> tuple[_SeededItems, DistributedSampler, int]:
    """The seeded training items, this process's sampler over them and the optimiser steps per epoch."""
    config, dist_info = run.config, run.dist_info
    items = _SeededItems(run.data.train, config.seed)
    sampler = DistributedSampler(items, num_replicas=dist_info.world_size, rank=dist_info.rank, shuffle=True,
                                 seed=config.seed)
    steps_per_epoch = len(sampler) // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(
            f"the training set has {len(items)} clips: fewer than batch_size={config.batch_size} per process "
            f"x {dist_info.world_size} processes; lower --batch-size"
        )
    return items, sampler, steps_per_epoch


def _epoch_loader(run: _Run, items: _SeededItems, sampler: DistributedSampler) -> DataLoader:
    """This epoch's batches, without those an interrupted run already took."""
    config, epoch = run.config, run.state.epoch
    sampler.set_epoch(epoch)
    items.set_epoch(epoch)
    skip = run.state.epoch_step * config.batch_size
    generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)  # worker seeds
    return DataLoader(items, batch_size=config.batch_size, sampler=_SkipSampler(sampler, skip),
                      num_workers=config.workers, drop_last=True, pin_memory=run.dist_info.device.type == "cuda",
                      generator=generator)


def _train_epoch(run: _Run, items: _SeededItems, sampler: DistributedSampler, steps_per_epoch: int,
                 on_step: Callable[[int], None] | None) -> EpochSums:
    """The rest of the current epoch's steps: a metrics record every ``log_every`` steps, a mid-epoch checkpoint
    every ``save_every``. Returns the epoch's sums on this process."""
    config, state, device = run.config, run.state, run.dist_info.device
    sums = state.running or EpochSums()
    window, window_started = EpochSums(), time.perf_counter()
    run.train_model.train()
    epoch_started = time.perf_counter()
    for batch in _epoch_loader(run, items, sampler):
        clips = batch["clip"].to(device, non_blocking=True)  # (N, 3, T, S, S)
        labels = torch.as_tensor(batch["label"]).to(device, non_blocking=True)  # (N,)
        loss, logits = train_step(run.train_model, clips, labels, optimizer=run.optimizer, scaler=run.scaler,
                                  precision=run.precision)
        state.step += 1
        state.epoch_step += 1
        correct = float((logits.argmax(1) == labels).sum())
        sums.replaced += sum(1 for r in batch.get("replaced", []) if r)  # undecodable stand-ins
        for acc in (sums, window):
            acc.add(float(loss.detach()), correct, len(labels))
        if run.bar is not None:
            run.bar.update(1)
            run.bar.set_postfix(epoch=state.epoch + 1, loss=f"{float(loss.detach()):.3f}",
                                lr=f"{run.optimizer.param_groups[0]['lr']:.2g}")
        if state.step % config.log_every == 0:
            _log_window(run, window, time.perf_counter() - window_started)
            window, window_started = EpochSums(), time.perf_counter()
        if config.save_every and state.step % config.save_every == 0 and state.epoch_step < steps_per_epoch:
            sums.seconds += time.perf_counter() - epoch_started
            epoch_started = time.perf_counter()
            state.running = sums
            _save(run, run.checkpoints / "last.pt", None)
        if on_step is not None:
            on_step(state.step)
    sums.seconds += time.perf_counter() - epoch_started
    return sums


def _log_window(run: _Run, window: EpochSums, elapsed: float) -> None:
    """A ``train`` record: loss, top-1 and speed over the last ``log_every`` steps of every process."""
    loss_sum, correct_sum, count = all_reduce_sums(run.dist_info, [window.loss, window.correct, window.count])
    run.log.write({"event": "train", "epoch": run.state.epoch + 1, "step": run.state.step, "loss": loss_sum / count,
                   "top1": correct_sum / count, "lr": run.scheduler.get_last_lr(),
                   "clips_per_s": count / max(elapsed, 1e-9)})


def _end_epoch(run: _Run, sums: EpochSums, centre_stats: CentreStats) -> dict[str, Any]:
    """Decay the lr, record the epoch (with validation), checkpoint it and prune old checkpoints."""
    config, state, is_main = run.config, run.state, run.dist_info.is_main
    run.scheduler.step()
    loss_sum, correct_sum, count, replaced = all_reduce_sums(
        run.dist_info, [sums.loss, sums.correct, sums.count, sums.replaced])
    metrics = {"event": "epoch", "epoch": state.epoch + 1, "step": state.step,
               "train_loss": loss_sum / count, "train_top1": correct_sum / count,
               "lr": [g["lr"] for g in run.optimizer.param_groups],
               "train_seconds": sums.seconds, "train_replaced_clips": int(replaced),
               **centre_stats.take()}  # rank 0's batches; of this session when resumed mid-epoch
    metrics.update(_validate(run))
    if is_main:
        run.log.write(metrics)
        if run.bar is not None:
            run.bar.write(_format_epoch(metrics))
    state.epoch, state.epoch_step, state.running = state.epoch + 1, 0, None
    _save(run, run.checkpoints / f"epoch_{state.epoch:03d}.pt", metrics)
    if is_main:
        _prune(run.checkpoints, config.keep_checkpoints)
        (run.checkpoints / "last.pt").unlink(missing_ok=True)
    return metrics


def _validate(run: _Run) -> dict[str, Any]:
    """The epoch's validation figures (none without a validation set; on rank 0 only under torchrun)."""
    config, data = run.config, run.data
    if data.val is None:
        return {}
    _broadcast_buffers(run.train_model, run.dist_info)
    result = evaluate_model(
        run.model, data.val, class_names=data.class_names, model_id=f"epoch_{run.state.epoch + 1:03d}:{config.arch}",
        split=config.val_split or "val", batch_size=config.eval_batch_size or config.batch_size,
        workers=config.workers, precision=run.precision.name, dist_info=run.dist_info,
    )
    if result is None:
        return {}
    return {"val_loss": result.clip_loss, "val_top1": result.clip_top1, "val_top5": result.clip_top5,
            "val_video_top1": result.video_top1, "val_video_top5": result.video_top5}


def _progress_bar(run: _Run, steps_per_epoch: int) -> Any:
    """A tqdm bar over the run's steps on rank 0 (None without ``progress``)."""
    if not (run.config.progress and run.dist_info.is_main):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=run.config.epochs * steps_per_epoch, initial=run.state.step, unit="step", dynamic_ncols=True,
                desc=f"train {run.config.arch}")


def _write_run_config(run: _Run) -> None:
    """``config.json``: the resolved config (``kpsem train --config`` repeats the run from it) with provenance."""
    if not run.dist_info.is_main:
        return
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.out / "config.json", json.dumps(
        {"config": run.config.to_dict(), "classes": run.data.class_names, "data": run.data.info,
         "init": run.init_info, "world_size": run.dist_info.world_size, "device": str(run.dist_info.device),
         "precision": run.precision.as_dict(), "command": run.command}, indent=2) + "\n")


def _provenance(run: _Run, metrics: dict[str, Any] | None) -> dict[str, Any]:
    """What a checkpoint records about how it was made."""
    import kpsem

    record = {
        "command": run.command, "config": run.config.to_dict(), "dataset": run.data.info, "epoch": run.state.epoch,
        "step": run.state.step, "metrics": metrics, "init": run.init_info, "world_size": run.dist_info.world_size,
        "torch": str(torch.__version__), "kpsem": kpsem.__version__,
    }
    return json.loads(json.dumps(record, default=str))  # plain data only: checkpoints load weights_only


def _save(run: _Run, path: Path, metrics: dict[str, Any] | None, *, with_state: bool = True) -> None:
    """Checkpoint the model (rank 0 writes; every rank sends its RNG states); ``with_state`` adds what a resume
    needs and points ``latest.json`` at it."""
    rng_all = gather_to_main(run.dist_info, _rng_state())
    if not run.dist_info.is_main:
        return
    from kpsem.checkpoint import save_checkpoint

    state, training_state = run.state, None
    if with_state:
        training_state = {
            "epoch": state.epoch, "epoch_step": state.epoch_step, "step": state.step,
            "running": asdict(state.running) if state.running else None,
            "metrics": state.metrics, "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict() if run.scaler.is_enabled()
            else None, "rng": rng_all, "config": run.config.to_dict(), "init": run.init_info,
            "world_size": run.dist_info.world_size,
        }
    save_checkpoint(path, run.model, class_names=run.data.class_names, clip_frames=run.config.frames,
                    clip_size=run.config.size, mean=MFNET_MEAN, std=MFNET_STD, provenance=_provenance(run, metrics),
                    training_state=training_state)
    if with_state:
        atomic_write_text(run.checkpoints / "latest.json",
                          json.dumps({"file": path.name, "epoch": state.epoch, "step": state.step}))


def _finish(run: _Run, epoch_metrics: dict[str, Any] | None, started: float) -> Path | None:
    """``final.pt`` (weights and metadata, no training state) and ``summary.json``; the final path on rank 0."""
    final = run.out / "final.pt"
    records = run.state.metrics
    _save(run, final, epoch_metrics or (records[-1] if records else None), with_state=False)
    barrier(run.dist_info)
    if not run.dist_info.is_main:
        return None
    atomic_write_text(run.out / "summary.json", json.dumps(
        {"final_checkpoint": str(final), "epochs": run.state.epoch, "steps": run.state.step,
         "seconds": time.perf_counter() - started, "last_epoch": epoch_metrics,
         "resumed_from": str(run.resumed_from) if run.resumed_from else None,
         "finished": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}, indent=2) + "\n")
    return final


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
