"""Evaluation: top-1/top-5 per clip and per video, and the predictions table the app compares.

A video's score is the mean softmax over its views (SPEC section 1): its clips, or its clips x crops
under the "3crop" protocol (:class:`kpsem.data.EvalProtocol`; the protocol is recorded in the summary and
the table's metadata). Every view and every video gets one row in a Parquet table (:data:`COLUMNS`); the
app and ``python -m kpsem compare`` read it back with :func:`read_predictions`. Under ``torchrun`` each
rank evaluates its own shard of clips and rank 0 gathers the rows and writes the files.

:func:`scored_batches` is the one loop over a data set's clips (stand-ins left out; device moves, autocast
and the non-finite check in its step :func:`score_clips`): :func:`predict_clips`, which ``evaluate`` and the
app's class comparison run, and the motion probes (:mod:`kpsem.probes`) all go through it (workers decode
ahead of the model; on CUDA, pinned memory and non-blocking copies).
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from kpsem.constants import FRAME_INTERVAL, are_placeholder_names
from kpsem.distributed import DistInfo, ShardSampler, current, gather_to_main
from kpsem.io import atomic_path, atomic_write_text

__all__ = [
    "COLUMNS",
    "CentreStats",
    "ClipPredictions",
    "PREDICTIONS_FORMAT",
    "EvalResult",
    "PredictionsError",
    "autocast_context",
    "resolve_amp_dtype",
    "predictions_precision",
    "predictions_protocol",
    "clip_loader",
    "evaluation_dataset",
    "ScoredBatch",
    "score_clips",
    "scored_batches",
    "predict_clips",
    "evaluate_model",
    "evaluate_checkpoint",
    "predictions_table",
    "write_predictions",
    "read_predictions",
    "default_model_id",
]

PREDICTIONS_FORMAT = "kpsem-predictions/1"  # stored in the Parquet metadata; bumped on a breaking change
TOP_K = 5  # classes listed per row (fewer when the model has fewer classes)

# Column -> meaning. ``clip_index`` is -1 on video rows (they average all of a video's clips).
COLUMNS: dict[str, str] = {
    "video_id": "the data set's id of the video",
    "true_label": "ground-truth class index",
    "true_class": "ground-truth class name",
    "model_id": "which model made the prediction (checkpoint stem:arch)",
    "level": "'clip' (one clip) or 'video' (mean softmax over the video's clips)",
    "clip_index": "view number within the video (clip x crops + crop; the protocol's crops); -1 on video rows",
    "num_clips": "views behind the row: 1 on clip rows, the video's view count on video rows",
    "topk_classes": "names of the top-5 classes, most probable first",
    "topk_labels": "indices of the top-5 classes",
    "topk_probs": "their probabilities",
    "probs": "the full probability vector (one float per class)",
    "correct_top1": "whether the top class is the true one",
    "correct_top5": "whether the true class is among the top 5",
}
_LEVELS = ("clip", "video")


class PredictionsError(ValueError):
    """A predictions file that cannot be read; the message says why and what to do."""


@dataclass
class EvalResult:
    """Accuracy figures and the per-clip/per-video table of one evaluation."""

    model_id: str  # label of the model in tables and plots
    split: str  # data split evaluated
    class_names: list[str]  # index -> name
    num_videos: int  # distinct videos
    num_clips: int  # clips evaluated (videos x clips per video)
    clip_top1: float  # fraction of clips whose top class is right
    clip_top5: float  # fraction of clips with the right class in the top 5
    video_top1: float  # same, per video, on the mean softmax over its clips
    video_top5: float
    clip_loss: float  # mean cross-entropy over clips
    per_class_top1: dict[str, float]  # video-level top-1 per true class (classes present only)
    seconds: float  # wall time of the evaluation
    predictions: pd.DataFrame = field(repr=False)  # one row per clip and per video (:data:`COLUMNS`)
    info: dict[str, Any] = field(default_factory=dict)  # checkpoint, data set, clip settings
    precision: dict[str, str] = field(default_factory=dict)  # what ran, and why (kpsem.precision.Precision.as_dict)
    protocol: dict[str, Any] = field(default_factory=dict)  # which views were scored (kpsem.data.EvalProtocol.as_dict)

    def summary(self) -> dict[str, Any]:
        """Everything except the table, as plain JSON-able data."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "predictions"}  # no table copy
        out["format"] = PREDICTIONS_FORMAT
        return out


def autocast_context(device: torch.device, amp: str) -> Any:
    """Deprecated, for callers of the ``amp`` names: use :func:`kpsem.precision.resolve_precision`.

    ``torch.autocast`` for ``amp`` on ``device``, or a no-op: ``amp`` is off (or fp32), bf16, fp16 or
    auto, where this old ``auto`` keeps its old meaning (bf16, or fp16, on CUDA; full precision on the
    CPU), unlike the new ``precision="auto"``, which also takes bf16 on CPUs with native bf16.
    """
    dtype = resolve_amp_dtype(device, amp)
    return nullcontext() if dtype is None else torch.autocast(torch.device(device).type, dtype=dtype)


def resolve_amp_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """Deprecated: the autocast dtype of an ``amp`` name on ``device`` (see :func:`autocast_context`);
    ``None`` for full precision."""
    from kpsem.precision import resolve_precision

    if amp == "auto" and torch.device(device).type == "cpu":
        return None  # the old auto: low precision on the CPU only when asked for
    return resolve_precision(device, amp).dtype


def predictions_precision(table: pd.DataFrame) -> str | None:
    """The precision a predictions table was computed in (fp32, bf16 or fp16), from the metadata that
    :func:`read_predictions` puts in ``table.attrs``; ``None`` for tables written before it was recorded."""
    summary = table.attrs.get("kpsem") or {}
    recorded = summary.get("precision") or {}
    return recorded.get("precision") if isinstance(recorded, dict) else None


def predictions_protocol(table: pd.DataFrame) -> dict[str, Any] | None:
    """The evaluation protocol of a predictions table (name, clips, crops, resize, seed, ...), from the
    metadata :func:`read_predictions` puts in ``table.attrs``; ``None`` for tables written before it was
    recorded (they used the "centre" protocol)."""
    summary = table.attrs.get("kpsem") or {}
    recorded = summary.get("protocol")
    return recorded if isinstance(recorded, dict) and recorded else None


def default_model_id(checkpoint: str | Path, arch: str) -> str:
    """'runs/mfnet/final.pt' + 'mfnet' -> 'final:mfnet' (file stem and architecture)."""
    return f"{Path(checkpoint).stem}:{arch}"


@dataclass
class ClipPredictions:
    """What :func:`predict_clips` saw: one row per scored view, and the videos it left out."""

    probs: np.ndarray  # (views, classes) float32 softmax
    labels: list[int]  # true class of each row
    video_ids: list[str]
    clip_indices: list[int]  # view number within its video
    loss_sum: float  # summed cross-entropy of the rows
    replaced: list[str]  # undecodable videos whose neighbour's clips were left out

    @classmethod
    def joined(cls, parts: Sequence[ClipPredictions]) -> ClipPredictions:
        """The rows of ``parts`` (every rank's shard, in rank order) as one."""
        return cls(probs=np.concatenate([p.probs for p in parts]), labels=[v for p in parts for v in p.labels],
                   video_ids=[v for p in parts for v in p.video_ids],
                   clip_indices=[v for p in parts for v in p.clip_indices],
                   loss_sum=sum(p.loss_sum for p in parts), replaced=[v for p in parts for v in p.replaced])


def clip_loader(dataset: Dataset, *, batch_size: int, workers: int, device: torch.device,
                sampler: Sampler[int] | None = None) -> DataLoader:
    """Batches of ``dataset`` for :func:`predict_clips`: ``workers`` processes decode ahead of the model (two
    batches each in flight), into pinned memory on CUDA so that the copy to the GPU does not block."""
    ahead = {"prefetch_factor": 2} if workers > 0 else {}
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=torch.device(device).type == "cuda", persistent_workers=False, **ahead)


Scores = torch.Tensor | dict[str, torch.Tensor]  # (N, classes) logits, or several such named (the probes)


def score_clips(
    forward: Callable[[torch.Tensor], Scores],
    clips: torch.Tensor,
    *,
    device: torch.device,
    precision: Any,
    name: str,
    lock: AbstractContextManager | None = None,
    items: Sequence[str] | None = None,
) -> Scores:
    """``forward(clips)`` on ``device`` under ``precision``'s autocast, as fp32 logits checked to be finite.

    The one step every loop over clips takes (evaluation, the probes, one uploaded video's probes), so that
    they agree on device moves, precision and what counts as a prediction. ``forward`` returns one tensor of
    logits (N, classes) or several by name; the error on non-finite scores names the model by ``name``, an
    output as ``name (output)``, and the rows by ``items``. ``lock`` is held around the forward pass (a
    model shared between threads). ``precision``: a :class:`kpsem.precision.Precision`.
    """
    with torch.no_grad():
        clips = clips.to(device, non_blocking=True)  # (N, 3, T, H, W)
        with lock or nullcontext(), precision.autocast():
            outputs = forward(clips)
        return _checked_fp32(outputs, name=name, items=items)


def _checked_fp32(outputs: Scores, *, name: str, items: Sequence[str] | None) -> Scores:
    from kpsem.checkpoint import check_finite_logits

    if isinstance(outputs, torch.Tensor):
        logits = outputs.float()
        check_finite_logits(logits, model=name, items=items)
        return logits
    return {key: _checked_fp32(value, name=f"{name} ({key})", items=items) for key, value in outputs.items()}


@dataclass
class ScoredBatch:
    """One batch of a loader after :func:`scored_batches`: its decodable items and their scores."""

    size: int  # items in the loader's batch, stand-ins included
    replaced: list[str]  # undecodable videos whose stand-ins were left out
    clips: torch.Tensor  # (N', 3, T, H, W) the kept clips, as the loader gave them
    labels: torch.Tensor  # (N',) their true classes, on the CPU
    video_ids: list[str]
    clip_indices: list[int]  # view number within each video
    scores: Scores | None  # as :func:`score_clips` returns them; None when every item was a stand-in


def scored_batches(
    forward: Callable[[torch.Tensor], Scores],
    loader: Iterable[dict[str, Any]],
    *,
    device: torch.device,
    precision: Any,
    name: str,
    lock: AbstractContextManager | None = None,
) -> Iterator[ScoredBatch]:
    """The one loop over a loader of clips (items as :class:`kpsem.data.ClipDataset` yields): every batch,
    its stand-ins left out, the rest scored by :func:`score_clips`. Callers keep their own tally (and
    progress) per batch; :func:`predict_clips` and :func:`kpsem.probes.probe_model` are two."""
    for batch in loader:
        size = len(batch["clip"])
        # ClipDataset stands a decodable neighbour in for an undecodable video; counting that neighbour
        # twice would skew the accuracy, so such items are left out and the videos listed instead.
        stand_ins = [str(r) for r in batch.get("replaced", [""] * size)]
        keep = [not r for r in stand_ins]
        clips, labels = batch["clip"], torch.as_tensor(batch["label"])
        if not all(keep):  # indexing copies out of pinned memory: only when something is left out
            mask = torch.tensor(keep)  # (N,)
            clips, labels = clips[mask], labels[mask]
        video_ids = [str(v) for v, k in zip(batch["video_id"], keep) if k]
        clip_indices = [int(c) for c, k in zip(torch.as_tensor(batch["clip_index"]).tolist(), keep) if k]
        scores = None
        if video_ids:
            scores = score_clips(forward, clips, device=device, precision=precision, name=name, lock=lock,
                                 items=[f"{v} clip {c}" for v, c in zip(video_ids, clip_indices)])
        yield ScoredBatch(size=size, replaced=[r for r in stand_ins if r], clips=clips, labels=labels,
                          video_ids=video_ids, clip_indices=clip_indices, scores=scores)


@torch.no_grad()
def predict_clips(
    model: nn.Module,
    loader: Iterable[dict[str, Any]],
    *,
    device: torch.device,
    precision: Any,
    name: str | None = None,
    progress: Callable[[int], Any] | None = None,
    lock: AbstractContextManager | None = None,
) -> ClipPredictions:
    """Softmax scores of ``model`` on every batch of ``loader`` (items as :class:`kpsem.data.ClipDataset` yields).

    ``precision``: a :class:`kpsem.precision.Precision`. ``name`` names the model in the error on non-finite
    scores (default: its class). ``progress(n)`` is called after every batch with its item count (stand-ins
    included); it may raise to stop the loop. ``lock`` is held around each forward pass (a model shared
    between threads). Stand-ins for undecodable videos are left out and listed in ``replaced``.
    """
    probs: list[np.ndarray] = []
    labels: list[int] = []
    video_ids: list[str] = []
    clip_indices: list[int] = []
    replaced: list[str] = []
    loss = torch.zeros((), dtype=torch.float64, device=device)  # summed on the device: no sync per batch for it
    for batch in scored_batches(model, loader, device=device, precision=precision,
                                name=name or type(model).__name__, lock=lock):
        replaced.extend(batch.replaced)
        if batch.scores is not None:
            logits = batch.scores  # (N', classes)
            loss += F.cross_entropy(logits, batch.labels.to(device, non_blocking=True), reduction="sum")
            probs.append(F.softmax(logits, dim=1).cpu().numpy())
            labels.extend(int(v) for v in batch.labels.tolist())
            video_ids.extend(batch.video_ids)
            clip_indices.extend(batch.clip_indices)
        if progress is not None:
            progress(batch.size)
    classes = probs[0].shape[1] if probs else 0
    return ClipPredictions(probs=np.concatenate(probs) if probs else np.zeros((0, classes), np.float32),
                           labels=labels, video_ids=video_ids, clip_indices=clip_indices,
                           loss_sum=float(loss.item()), replaced=replaced)


def _topk(probs: np.ndarray, k: int) -> np.ndarray:
    """(rows, classes) -> (rows, k) class indices, most probable first (ties: lower index first).

    A full stable sort of every row costs most of the table's time at 400 classes; the k largest are
    found by partition instead, ties at the k-th value taken lowest index first, as the sort would."""
    rows, classes = probs.shape
    if k >= classes or not rows:
        return np.argsort(-probs, axis=1, kind="stable")[:, :k]
    kth = -np.partition(-probs, k - 1, axis=1)[:, k - 1:k]  # (rows, 1): the k-th largest value
    above, tied = probs > kth, probs == kth
    need = k - above.sum(axis=1)  # (rows,): places left for values equal to the k-th
    take = above | tied
    crowded = np.flatnonzero(tied.sum(axis=1) > need)  # rows with more such values than places: rare
    if len(crowded):
        take[crowded] = above[crowded] | (tied[crowded] & (np.cumsum(tied[crowded], axis=1) <= need[crowded, None]))
    if take.sum() != rows * k:  # NaN compares with nothing: leave such rows to the sort
        return np.argsort(-probs, axis=1, kind="stable")[:, :k]
    chosen = np.nonzero(take)[1].reshape(rows, k)  # (rows, k), in class order
    order = np.argsort(-np.take_along_axis(probs, chosen, axis=1), axis=1, kind="stable")
    return np.take_along_axis(chosen, order, axis=1)


def predictions_table(
    probs: np.ndarray,
    labels: Sequence[int],
    video_ids: Sequence[str],
    clip_indices: Sequence[int],
    *,
    class_names: Sequence[str],
    model_id: str,
) -> pd.DataFrame:
    """Clip rows plus one video row per video (mean softmax over its clips), in :data:`COLUMNS` order."""
    probs = np.asarray(probs, dtype=np.float32)  # (clips, classes)
    if probs.ndim != 2 or probs.shape[1] != len(class_names):
        raise ValueError(f"probs must be (clips, {len(class_names)}); got {probs.shape}")
    labels_a = np.asarray(labels, dtype=np.int64)
    clip_df = pd.DataFrame({"video_id": list(video_ids), "true_label": labels_a, "clip_index": list(clip_indices)})
    order = clip_df.sort_values(["video_id", "clip_index"], kind="stable").index.to_numpy()
    clip_df, probs = clip_df.iloc[order].reset_index(drop=True), probs[order]
    videos, first, counts = np.unique(clip_df["video_id"].to_numpy(), return_index=True, return_counts=True)
    # Rows are sorted by video, so each video's clips are one run of rows (np.add.at, unbuffered, took a
    # quarter of a second on a Kinetics-sized table); with as many clips for every video, one reshape.
    if not len(counts):
        video_probs = np.zeros((0, probs.shape[1]))
    elif (np.diff(first) <= 0).any():  # the two sorts disagree (ids that are not plain strings): no runs
        _, inverse = np.unique(clip_df["video_id"].to_numpy(), return_inverse=True)
        video_probs = np.zeros((len(videos), probs.shape[1]))
        np.add.at(video_probs, inverse, probs)
        video_probs /= counts[:, None]
    elif (counts == counts[0]).all():
        video_probs = probs.reshape(len(counts), int(counts[0]), -1).mean(axis=1, dtype=np.float64)
    else:
        video_probs = np.add.reduceat(probs, first, axis=0, dtype=np.float64) / counts[:, None]
    video_probs = video_probs.astype(np.float32)  # (videos, classes)
    video_labels = clip_df["true_label"].to_numpy()[first]
    k = min(TOP_K, len(class_names))
    names = np.asarray(class_names, dtype=object)

    def rows(level: str, p: np.ndarray, y: np.ndarray, vids: Sequence[str], clip_idx: Sequence[int],
             nclips: Sequence[int]) -> pd.DataFrame:
        top = _topk(p, k)  # (rows, k)
        # List cells are row views of one array each (not Python lists): building 8 million Python floats
        # took longer than the evaluation's bookkeeping, and the writer stacks the rows back without a loop.
        return pd.DataFrame({
            "video_id": list(vids),
            "true_label": y.astype(np.int64),
            "true_class": names[y].tolist() if len(y) else [],
            "model_id": model_id,
            "level": level,
            "clip_index": np.asarray(clip_idx, dtype=np.int64),
            "num_clips": np.asarray(nclips, dtype=np.int64),
            "topk_classes": list(names[top]),
            "topk_labels": list(top.astype(np.int64)),
            "topk_probs": list(np.take_along_axis(p, top, axis=1)),
            "probs": list(p),
            "correct_top1": top[:, 0] == y if len(y) else np.zeros(0, bool),
            "correct_top5": (top == y[:, None]).any(axis=1) if len(y) else np.zeros(0, bool),
        })

    clip_rows = rows("clip", probs, clip_df["true_label"].to_numpy(), clip_df["video_id"].tolist(),
                     clip_df["clip_index"].tolist(), [1] * len(clip_df))
    video_rows = rows("video", video_probs, video_labels, videos.tolist(), [-1] * len(videos), counts.tolist())
    return pd.concat([clip_rows, video_rows], ignore_index=True)[list(COLUMNS)]


_LIST_COLUMNS = {"topk_classes": "string", "topk_labels": "int64", "topk_probs": "float32", "probs": "float32"}
_TEXT_COLUMNS = ("video_id", "true_class", "model_id", "level", "topk_classes.list.element")  # Parquet dictionaries


def _schema(num_classes: int | None = None, top_k: int | None = None) -> Any:
    """The table's Arrow schema: list columns as fixed-size lists of ``top_k`` and ``num_classes`` items,
    as written since fixed-size lists replaced plain ones; with no sizes, the plain lists of older tables
    (still read)."""
    import pyarrow as pa

    def listed(name: str, size: int | None) -> Any:
        item = getattr(pa, _LIST_COLUMNS[name])()
        if size is None:
            return pa.field(name, pa.list_(item))
        # Required lists of required items: Parquet then stores no definition levels for them, which
        # made reading 8 million probabilities 40% faster.
        return pa.field(name, pa.list_(pa.field("element", item, nullable=False), size), nullable=False)

    return pa.schema([
        ("video_id", pa.string()), ("true_label", pa.int64()), ("true_class", pa.string()),
        ("model_id", pa.string()), ("level", pa.string()), ("clip_index", pa.int64()),
        ("num_clips", pa.int64()), listed("topk_classes", top_k), listed("topk_labels", top_k),
        listed("topk_probs", top_k), listed("probs", num_classes), ("correct_top1", pa.bool_()),
        ("correct_top5", pa.bool_()),
    ])


def _stacked(table: pd.DataFrame, column: str, dtype: Any) -> np.ndarray:
    """A list column as one (rows, items) array; a ValueError naming the column when its rows differ in length."""
    cells = table[column].to_numpy()
    if not len(cells):
        return np.zeros((0, 0), dtype=dtype)
    try:
        return np.stack(cells).astype(dtype, copy=False)  # one copy; row views of one array, or plain lists
    except (ValueError, TypeError):
        lengths = sorted({len(cell) if hasattr(cell, "__len__") else -1 for cell in cells})
        if lengths[0] < 0:
            raise ValueError(f"column {column!r} holds a value that is not a list; every row of a predictions "
                             "table has a list there") from None
        raise ValueError(f"column {column!r} holds lists of {lengths[0]} to {lengths[-1]} items; every row of a "
                         "predictions table has as many (one per class, or the top k)") from None


def write_predictions(table: pd.DataFrame, path: str | Path, *, summary: dict[str, Any] | None = None) -> Path:
    """Write the table as Parquet (atomically), with ``summary`` in the file's metadata.

    List columns are written as Arrow fixed-size lists built from one flat array each, never from
    Python lists (20k rows x 400 classes: milliseconds instead of seconds); :func:`read_predictions`
    also reads the plain lists of tables written before."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = table[list(COLUMNS)]
    lists = {name: _stacked(table, name, object if kind == "string" else np.dtype(kind))
             for name, kind in _LIST_COLUMNS.items()}
    schema = _schema(lists["probs"].shape[1], lists["topk_probs"].shape[1])
    columns = []
    for field_ in schema:
        if field_.name in lists and not len(table):
            columns.append(pa.array([], type=field_.type))  # from_arrays of size 0 kills the process (SIGFPE)
        elif field_.name in lists:
            if not field_.type.list_size:
                raise ValueError(f"column {field_.name!r} holds empty lists; a predictions table has one "
                                 "probability per class and at least one class")
            flat = lists[field_.name].reshape(-1)
            columns.append(pa.FixedSizeListArray.from_arrays(pa.array(flat, type=field_.type.value_type),
                                                             type=field_.type))
        else:
            values = table[field_.name].to_numpy()
            columns.append(pa.array(values if len(values) else [], type=field_.type))  # pandas types [] as floats
    meta = {b"kpsem_format": PREDICTIONS_FORMAT.encode()}
    if summary is not None:
        meta[b"kpsem_summary"] = json.dumps(summary).encode()
    arrow = pa.Table.from_arrays(columns, schema=schema.with_metadata(meta))
    with atomic_path(path) as partial:
        # Dictionaries only for the text: tried on 8 million probabilities they are built, then dropped.
        pq.write_table(arrow, partial, use_dictionary=list(_TEXT_COLUMNS))
    return path


def read_predictions(path: str | Path) -> pd.DataFrame:
    """Read a predictions table written by ``python -m kpsem evaluate``; the summary is in ``df.attrs``.

    Raises :class:`PredictionsError` naming the problem for a missing, empty or non-Parquet file and
    for a table without the expected columns or levels.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise PredictionsError(
            f"predictions file {path} does not exist; make one with "
            "`python -m kpsem evaluate --checkpoint CKPT --data ROOT --out PATH.parquet`"
        )
    if path.stat().st_size == 0:
        raise PredictionsError(f"predictions file {path} is empty (0 bytes); it was not written completely")
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below; one open for every read (see kpsem.io)
    except OSError as error:
        raise PredictionsError(f"predictions file {path} cannot be opened ({error.strerror or error})") from None
    try:
        parquet = pq.ParquetFile(handle)
        names = parquet.schema_arrow.names
        missing = [c for c in COLUMNS if c not in names]
        if missing:
            raise PredictionsError(
                f"{path} is not a kpsem predictions table: it lacks columns {', '.join(missing)} "
                f"(it has {', '.join(names) or 'none'})"
            )
        text_columns = _check_table_size(parquet, path)
        arrow = pq.read_table(handle, read_dictionary=text_columns)  # strings stay encoded until measured
    except (pa.ArrowInvalid, OSError) as error:
        raise PredictionsError(
            f"{path} is not a Parquet predictions table ({str(error).splitlines()[0]}); "
            "pass the .parquet file that `python -m kpsem evaluate --out` wrote"
        ) from None
    finally:
        handle.close()
    arrow = _expand_text(arrow, parquet.schema_arrow, path)
    df = arrow.to_pandas()
    bad_levels = sorted(set(df["level"].unique()) - set(_LEVELS))
    if bad_levels:
        raise PredictionsError(f"{path}: column 'level' holds {bad_levels}; expected only 'clip' and 'video'")
    meta = arrow.schema.metadata or {}
    df.attrs["format"] = meta.get(b"kpsem_format", b"").decode() or None
    df.attrs["kpsem"] = json.loads(meta[b"kpsem_summary"]) if b"kpsem_summary" in meta else {}
    return df


def _check_table_size(parquet: Any, path: Path) -> list[str]:
    """Refuse a table past :mod:`kpsem.limits` from its Parquet metadata alone, before any data is read;
    return the paths of its string columns (read dictionary-encoded, see :func:`_expand_text`).

    Why the metadata: a few KB of Parquet can hold a billion run-length-encoded zeros (4 GB once read),
    and page sizes alone do not show it, so values are counted too."""
    from kpsem.limits import (
        MAX_CLASSES,
        MAX_PREDICTION_BYTES,
        MAX_PREDICTION_ROWS,
        MAX_PREDICTION_VALUES,
        format_bytes,
    )

    meta = parquet.metadata
    rows = meta.num_rows
    if rows > MAX_PREDICTION_ROWS:
        raise PredictionsError(f"{path} has {rows:,} rows; at most {MAX_PREDICTION_ROWS:,} are read (a 10-clip "
                               "evaluation of Kinetics-400 has 220,000): split the evaluation into several tables")
    values: dict[str, int] = {}
    unpacked = 0
    for group in range(meta.num_row_groups):
        row_group = meta.row_group(group)
        for index in range(row_group.num_columns):
            column = row_group.column(index)
            values[column.path_in_schema] = values.get(column.path_in_schema, 0) + column.num_values
            unpacked += column.total_uncompressed_size
    probs = sum(count for name, count in values.items() if name.split(".")[0] == "probs")  # list items
    if rows and probs / rows > MAX_CLASSES:
        raise PredictionsError(f"{path} holds probability vectors of {probs // rows:,} values on average; at "
                               f"most {MAX_CLASSES:,} classes are read: it is not a predictions table of a classifier")
    if sum(values.values()) > MAX_PREDICTION_VALUES:
        raise PredictionsError(
            f"{path} holds {sum(values.values()):,} values ({format_bytes(4 * sum(values.values()))} or more once "
            f"read); at most {MAX_PREDICTION_VALUES:,} are read: split the evaluation into several tables"
        )
    leaves = [parquet.schema.column(i) for i in range(len(parquet.schema))]
    for leaf in leaves:  # dictionary-encoded fixed-size bytes expand to their declared size each
        if leaf.physical_type == "FIXED_LEN_BYTE_ARRAY":
            unpacked += values.get(leaf.path, 0) * leaf.length
    if unpacked > MAX_PREDICTION_BYTES:
        limit = format_bytes(MAX_PREDICTION_BYTES)
        raise PredictionsError(f"{path} unpacks to {format_bytes(unpacked)}; at most {limit} is read: split the "
                               "evaluation into several tables")
    return [leaf.path for leaf in leaves if leaf.physical_type == "BYTE_ARRAY" and leaf.path in values]


def _expand_text(arrow: Any, schema: Any, path: Path) -> Any:
    """The table with its dictionary-encoded strings expanded, once their expanded size is known to fit.

    Why: one long string referenced from every row is a few bytes per row in the file and its full
    length per row in memory; the dictionary and the indices tell the expanded size without expanding."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from kpsem.limits import MAX_PREDICTION_TEXT_BYTES, format_bytes

    def expanded(array: Any) -> int:
        """Bytes of text ``array`` holds once its dictionaries are expanded, at any depth of lists or structs
        (plain, large and fixed-size lists alike: the schema is the file's, whatever it declares)."""
        kind = array.type
        if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
            return expanded(array.flatten())
        if pa.types.is_struct(kind):
            return sum(expanded(child) for child in array.flatten())
        if pa.types.is_dictionary(kind) and len(array):
            lengths = pc.binary_length(array.dictionary)
            return pc.sum(pc.take(lengths, array.indices)).as_py() or 0
        return 0

    total = sum(expanded(chunk) for column in arrow.columns for chunk in column.chunks)
    if total > MAX_PREDICTION_TEXT_BYTES:
        raise PredictionsError(f"{path} holds {format_bytes(total)} of text once its strings are expanded; at most "
                               f"{format_bytes(MAX_PREDICTION_TEXT_BYTES)} is read: it is not a kpsem predictions "
                               "table")
    arrow = arrow.cast(schema)
    if arrow.num_rows and pa.types.is_list(arrow.schema.field("probs").type):
        lengths = pc.min_max(pc.list_value_length(arrow["probs"])).as_py()
        if lengths["min"] != lengths["max"]:
            raise PredictionsError(f"{path}: its rows hold probability vectors of {lengths['min']} to {lengths['max']} "
                                   "values; every row of a predictions table has one per class")
    return arrow


def _accuracy(table: pd.DataFrame, level: str, column: str) -> float:
    rows = table[table["level"] == level]
    return float(rows[column].mean()) if len(rows) else float("nan")


class CentreStats:
    """How much MF-KPSEM's separation centres move, from a forward hook on ``model.kpsem``.

    SPEC section 2: a first experiment's centre MLPs ran into the tanh bound and barely varied
    across clips (a fixed lopsided split, not an adaptive one). Per epoch this records the std of the
    centres over the clips of a batch and over frames, and the fraction of coordinates within 5% of
    the bound, so such a collapse shows in ``metrics.jsonl`` (training batches, ``training=True``) and
    in an evaluation's summary (test clips, ``training=False``). Call :meth:`close` when done.
    """

    def __init__(self, model: nn.Module, *, training: bool) -> None:
        self.training = training  # record the forward passes made in this mode only
        self.sums = [0.0, 0.0, 0.0, 0.0]  # std over clips, std over frames, near-bound fraction, batches
        # The hook needs the KPSEM module itself, whatever holds it (a model, a DDP wrapper, a test's stand-in).
        kpsem = getattr(getattr(model, "module", model), "kpsem", None)
        learned = kpsem is not None and getattr(kpsem, "has_centre_mlp", False)
        self.handle = kpsem.register_forward_hook(self._hook) if learned else None

    def _hook(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if module.training != self.training or not isinstance(output, tuple):
            return
        from kpsem.models.kpsem_module import centre_bounds

        internals = output[1]
        centres = internals.centres.detach().float()  # (N, G, T, 2)
        h, w = internals.feature_size
        bounds = centre_bounds(h, w, device=centres.device)  # (2,) as (x, y)
        spread_clips = centres.std(dim=0).mean().item() if len(centres) > 1 else 0.0
        spread_frames = centres.std(dim=2).mean().item() if centres.shape[2] > 1 else 0.0
        near = (centres.abs() >= 0.95 * bounds).float().mean().item()
        for i, value in enumerate((spread_clips, spread_frames, near, 1.0)):
            self.sums[i] += value

    def take(self) -> dict[str, float]:
        """Epoch means (empty for models without learned centres); resets the sums."""
        sums, self.sums = self.sums, [0.0, 0.0, 0.0, 0.0]
        if not sums[3]:  # no recorded pass (or a model without learned centres)
            return {}
        return {"centre_std_clips": sums[0] / sums[3], "centre_std_frames": sums[1] / sums[3],
                "centre_near_bound": sums[2] / sums[3]}

    def close(self) -> None:
        """Remove the hook."""
        if self.handle is not None:
            self.handle.remove()
            self.handle = None


def evaluate_model(
    model: nn.Module,
    dataset: Dataset,
    *,
    class_names: Sequence[str],
    model_id: str,
    split: str = "test",
    batch_size: int = 8,
    workers: int = 0,
    precision: str = "fp32",
    dist_info: DistInfo | None = None,
    progress: bool = False,
    info: dict[str, Any] | None = None,
) -> EvalResult | None:
    """Evaluate ``model`` on every item of ``dataset`` (items as :class:`kpsem.data.ClipDataset` yields).

    Under ``torchrun`` every rank evaluates its shard; rank 0 returns the full result, the other
    ranks return ``None``. The model is put in eval mode and left there. ``precision`` is fp32, bf16,
    fp16 or auto (:func:`kpsem.precision.resolve_precision`); the result and the table's metadata say
    which ran. fp32 is the library's default so that results are exact unless asked otherwise; the
    ``evaluate`` command defaults to auto.
    """
    from kpsem.precision import resolve_precision

    dist_info = dist_info or current(next(model.parameters()).device)
    resolved = resolve_precision(dist_info.device, precision)
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise ValueError(f"the {split} set is empty: no clips to evaluate")
    started = time.perf_counter()
    shard, centre_info = _predict_shard(model, dataset, dist_info=dist_info, precision=resolved, split=split,
                                        batch_size=batch_size, workers=workers, progress=progress)
    if shard.probs.shape[1] == 0:
        shard.probs = np.zeros((0, len(class_names)), np.float32)
    gathered = gather_to_main(dist_info, shard)
    if gathered is None:
        return None
    result = _eval_result(ClipPredictions.joined(gathered), dataset, class_names=class_names, model_id=model_id,
                          split=split, info=info or {}, precision=resolved.as_dict(), started=started)
    result.info.update(centre_info)  # MF-KPSEM: how much the separation centres moved (rank 0's batches)
    return result


def _predict_shard(model: nn.Module, dataset: Dataset, *, dist_info: DistInfo, precision: Any, split: str,
                   batch_size: int, workers: int, progress: bool) -> tuple[ClipPredictions, dict[str, float]]:
    """This rank's share of ``dataset`` through :func:`predict_clips`, with a progress bar on rank 0, and how
    much MF-KPSEM's separation centres moved on it (:class:`CentreStats`; empty for other models)."""
    model.eval()
    sampler = ShardSampler(len(dataset), rank=dist_info.rank, world_size=dist_info.world_size)  # type: ignore[arg-type]
    loader = clip_loader(dataset, batch_size=batch_size, workers=workers, device=dist_info.device, sampler=sampler)
    bar = None
    if progress and dist_info.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(sampler), desc=f"evaluate {split}", unit="clip", dynamic_ncols=True)
    centre_stats = CentreStats(model, training=False)
    try:
        shard = predict_clips(model, loader, device=dist_info.device, precision=precision,
                              progress=bar.update if bar is not None else None)
        return shard, centre_stats.take()
    finally:
        centre_stats.close()
        if bar is not None:
            bar.close()


def _eval_result(seen: ClipPredictions, dataset: Dataset, *, class_names: Sequence[str], model_id: str, split: str,
                 info: dict[str, Any], precision: dict[str, str], started: float) -> EvalResult:
    """The accuracies and table of every rank's predictions together; ``started``: when the evaluation began
    (``time.perf_counter``)."""
    table = predictions_table(seen.probs, seen.labels, seen.video_ids, seen.clip_indices, class_names=class_names,
                              model_id=model_id)
    videos = table[table["level"] == "video"]
    per_class = videos.groupby("true_class")["correct_top1"].mean()
    described = getattr(dataset, "protocol", None)  # ClipDataset's EvalProtocol; other data sets may not say
    return EvalResult(
        model_id=model_id,
        split=split,
        class_names=list(class_names),
        num_videos=len(videos),
        num_clips=len(seen.labels),
        clip_top1=_accuracy(table, "clip", "correct_top1"),
        clip_top5=_accuracy(table, "clip", "correct_top5"),
        video_top1=_accuracy(table, "video", "correct_top1"),
        video_top5=_accuracy(table, "video", "correct_top5"),
        clip_loss=seen.loss_sum / max(len(seen.labels), 1),
        per_class_top1={str(k): float(v) for k, v in per_class.items()},
        seconds=time.perf_counter() - started,
        predictions=table,
        info={**info, "undecodable_videos": sorted(set(seen.replaced))},  # left out of the table and accuracies
        precision=precision,
        protocol=described.as_dict() if hasattr(described, "as_dict") else {"name": "unstated",
                                                                            "dataset": type(dataset).__name__},
    )


def _check_classes(checkpoint_classes: list[str], dataset_classes: list[str], checkpoint: Path) -> None:
    placeholders = are_placeholder_names(checkpoint_classes)
    if len(checkpoint_classes) != len(dataset_classes):
        raise ValueError(
            f"checkpoint {checkpoint} predicts {len(checkpoint_classes)} classes but the data set has "
            f"{len(dataset_classes)}; evaluate on the data set the model was trained for"
        )
    if not placeholders and checkpoint_classes != dataset_classes:
        diff = [f"{i}: {a!r} vs {b!r}" for i, (a, b) in enumerate(zip(checkpoint_classes, dataset_classes)) if a != b]
        raise ValueError(
            f"checkpoint {checkpoint} and the data set name their classes differently (checkpoint vs data): "
            + "; ".join(diff[:5]) + (f" ... and {len(diff) - 5} more" if len(diff) > 5 else "")
        )


def evaluation_dataset(index: Any, info: Any, *, clips: int, protocol: str = "centre", seed: int = 0) -> Dataset:
    """The test views of ``index`` (a :class:`kpsem.data.DatasetIndex`) for the model that ``info`` (a
    :class:`kpsem.checkpoint.CheckpointInfo`) describes: its clip length, size, normalisation and, when
    recorded, the frame interval it was trained with; ``clips`` per video under ``protocol``."""
    from kpsem.data import ClipDataset

    interval = info.provenance.get("config", {}).get("interval", FRAME_INTERVAL)  # as trained, when recorded
    return ClipDataset(index, train=False, frames=info.clip_frames, interval=interval, size=info.clip_size,
                       clips_per_video=clips, seed=seed, mean=tuple(info.mean), std=tuple(info.std),
                       protocol=protocol)


def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    data: str | Path | None = None,
    split: str = "test",
    clips: int = 10,
    protocol: str = "centre",
    seed: int = 0,
    batch_size: int = 8,
    workers: int = 2,
    precision: str = "fp32",
    out: str | Path | None = None,
    summary_path: str | Path | None = None,
    model_id: str | None = None,
    layout: str | None = None,
    split_id: int = 1,
    annotations: str | Path | None = None,
    dataset: Dataset | None = None,
    class_names: Sequence[str] | None = None,
    dist_info: DistInfo | None = None,
    progress: bool = False,
) -> EvalResult | None:
    """Load ``checkpoint``, evaluate ``clips`` clips per video of ``data``'s ``split``, write the table.

    ``protocol`` (:data:`kpsem.data.PROTOCOLS`: "centre", "mfnet" or "3crop") decides the views of each
    video; ``seed`` seeds the "mfnet" protocol's random clips and crops. The clip length and size come from
    the checkpoint. ``out`` (``.parquet``) gets the predictions and
    ``summary_path`` (default: ``out`` with ``.json``) the summary; only rank 0 writes and returns a
    result. ``dataset``/``class_names`` replace ``data`` (tests, custom data). ``precision``: as in
    :func:`evaluate_model`.
    """
    from kpsem.checkpoint import load_checkpoint
    from kpsem.data.clips import check_protocol

    check_protocol(protocol, clips)  # before the checkpoint is read
    checkpoint = Path(checkpoint)
    dist_info = dist_info or current()
    loaded = load_checkpoint(checkpoint, map_location=dist_info.device)
    info = loaded.info
    data_info: dict[str, Any]
    if dataset is None:
        if data is None:
            raise ValueError("evaluate_checkpoint needs data=ROOT (a data set folder) or dataset=")
        from kpsem.data import open_dataset

        index = open_dataset(data, split=split, layout=layout, split_id=split_id,
                             annotations=annotations)  # type: ignore[arg-type]
        class_names = list(index.class_names)
        dataset = evaluation_dataset(index, info, clips=clips, protocol=protocol, seed=seed)
        data_info = {"root": str(data), "layout": index.layout, "split": split, "split_id": split_id,
                     "videos": len(index.videos), "skipped": len(index.skipped)}
    else:
        if class_names is None:
            raise ValueError("pass class_names= with dataset=")
        data_info = {"root": None, "split": split, "items": len(dataset)}  # type: ignore[arg-type]
    _check_classes(info.class_names, list(class_names), checkpoint)
    result = evaluate_model(
        loaded.model, dataset, class_names=info.class_names,
        model_id=model_id or default_model_id(checkpoint, info.arch),
        split=split, batch_size=batch_size, workers=workers, precision=precision, dist_info=dist_info,
        progress=progress,
        info={
            "checkpoint": str(checkpoint), "arch": info.arch, "clip_frames": info.clip_frames,
            "clip_size": info.clip_size, "clips_per_video": clips, "data": data_info,
            "world_size": dist_info.world_size, "device": str(dist_info.device),
            "evaluated": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        },
    )
    if result is not None and out is not None:
        summary = result.summary()
        write_predictions(result.predictions, out, summary=summary)
        summary_file = Path(summary_path) if summary_path else Path(out).with_suffix(".json")
        atomic_write_text(summary_file, json.dumps(summary, indent=2) + "\n")
        result.info["predictions"], result.info["summary"] = str(out), str(summary_file)
    return result
