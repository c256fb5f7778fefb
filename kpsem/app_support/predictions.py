"""Predictions tables for the class comparison: read the ones ``python -m kpsem evaluate`` wrote, or
compute them here (clip by clip, with a progress callback that may stop the work) and keep them on
disk, keyed on the checkpoint file and the data split, so a second visit reads them back at once.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from kpsem.app_support.sources import FileKey

__all__ = ["CancelledError", "cache_path", "compute_predictions", "load_or_none"]


class CancelledError(RuntimeError):
    """The user stopped a computation; nothing was written."""


def cache_path(cache_dir: Path, checkpoint: FileKey, data_key: tuple, clips: int) -> Path:
    """Where the table of one checkpoint on one data split lives in the disk cache."""
    text = json.dumps([list(checkpoint), [str(v) for v in data_key], clips])
    digest = hashlib.sha256(text.encode()).hexdigest()[:20]
    return cache_dir / "predictions" / f"{Path(checkpoint[0]).stem}-{digest}.parquet"


def load_or_none(path: Path) -> pd.DataFrame | None:
    """The cached table, or None when absent or unreadable (then it is recomputed)."""
    from kpsem.evaluate import PredictionsError, read_predictions

    if not path.is_file():
        return None
    try:
        return read_predictions(path)
    except PredictionsError:
        return None


def compute_predictions(
    model: nn.Module,
    info,  # noqa: ANN001 - kpsem.checkpoint.CheckpointInfo
    index,  # noqa: ANN001 - kpsem.data.DatasetIndex
    *,
    model_id: str,
    clips: int = 1,
    out: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    lock: threading.Lock | None = None,
) -> pd.DataFrame:
    """Clip and video predictions of ``model`` on every video of ``index`` (the library's table format).

    ``progress(done, total)`` is called after every clip; ``should_stop()`` returning True raises
    :class:`CancelledError`. ``lock`` is held around each forward pass (models are shared between sessions).
    Undecodable videos are left out (:class:`kpsem.data.ClipDataset` would substitute a neighbour).
    """
    from kpsem.checkpoint import check_finite_logits
    from kpsem.data import ClipDataset
    from kpsem.evaluate import predictions_table, write_predictions

    dataset = ClipDataset(index, train=False, frames=info.clip_frames, size=info.clip_size, clips_per_video=clips,
                          mean=tuple(info.mean), std=tuple(info.std))
    total = len(dataset)
    if total == 0:
        raise ValueError(f"the data split has no videos to predict ({index.summary()})")
    device = next(model.parameters()).device
    probs, labels, video_ids, clip_indices = [], [], [], []
    for item in range(total):
        if should_stop is not None and should_stop():
            raise CancelledError(f"stopped after {item} of {total} clips; nothing was saved")
        sample = dataset[item]
        if sample["replaced"]:  # undecodable: left out here (evaluation would count a neighbour twice)
            if progress is not None:
                progress(item + 1, total)
            continue
        with lock or nullcontext(), torch.no_grad():
            logits = model(sample["clip"][None].to(device))  # (1, classes)
        check_finite_logits(logits, model=model_id, items=[f"{sample['video_id']} clip {sample['clip_index']}"])
        probs.append(torch.softmax(logits.float(), dim=1)[0].cpu().numpy())
        labels.append(int(sample["label"]))
        video_ids.append(str(sample["video_id"]))
        clip_indices.append(int(sample["clip_index"]))
        if progress is not None:
            progress(item + 1, total)
    if not probs:
        raise ValueError(f"no video of the split could be decoded ({index.summary()})")
    table = predictions_table(np.stack(probs), labels, video_ids, clip_indices, class_names=info.class_names,
                              model_id=model_id)
    if out is not None:
        write_predictions(table, out, summary={"model_id": model_id, "split": index.split, "clips_per_video": clips,
                                               "data": str(index.root), "computed_by": "kpsem app"})
    return table
