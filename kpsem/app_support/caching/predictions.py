"""Predictions tables for the class comparison: computed here through evaluate's own loop
(:func:`kpsem.evaluate.predict_clips`, clip by clip, with a progress callback that may stop the work) and kept
on disk where :mod:`kpsem.app_support.choices.stored_results` says, so a second visit reads them back at once;
and the runs of a comparison aligned by the library (:func:`compare_runs`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
from torch import nn

from kpsem.app_support.choices.selection import Selection
from kpsem.app_support.choices.stored_results import TableSource

__all__ = ["CancelledError", "compute_predictions", "compute_missing_tables", "common_levels", "compare_runs"]


class CancelledError(RuntimeError):
    """The user stopped a computation; nothing was written."""


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

    The views are evaluate's "centre" protocol with ``clips`` clips per video, in full precision (fp32),
    one clip at a time: ``progress(done, total)`` is called after every clip; ``should_stop()`` returning
    True raises :class:`CancelledError`. ``lock`` is held around each forward pass (models are shared
    between sessions). Undecodable videos are left out (:class:`kpsem.data.ClipDataset` would substitute a
    neighbour). The table's metadata records the protocol and precision, as ``evaluate`` does.
    """
    from kpsem.evaluate import clip_loader, evaluation_dataset, predict_clips, predictions_table, write_predictions
    from kpsem.precision import resolve_precision

    dataset = evaluation_dataset(index, info, clips=clips)
    total = len(dataset)
    if total == 0:
        raise ValueError(f"the data split has no videos to predict ({index.summary()})")
    device = next(model.parameters()).device
    done = 0

    def tick(count: int) -> None:
        nonlocal done
        done += count
        if progress is not None:
            progress(done, total)
        if should_stop is not None and done < total and should_stop():
            raise CancelledError(f"stopped after {done} of {total} clips; nothing was saved")

    if should_stop is not None and should_stop():
        raise CancelledError(f"stopped after 0 of {total} clips; nothing was saved")
    # One clip a batch and no worker processes: progress per clip, and no fork of the server's threads.
    loader = clip_loader(dataset, batch_size=1, workers=0, device=device)
    precision = resolve_precision(device, "fp32")
    seen = predict_clips(model, loader, device=device, precision=precision, name=model_id, progress=tick, lock=lock)
    if not seen.labels:
        raise ValueError(f"no video of the split could be decoded ({index.summary()})")
    table = predictions_table(seen.probs, seen.labels, seen.video_ids, seen.clip_indices,
                              class_names=info.class_names, model_id=model_id)
    if out is not None:
        write_predictions(table, out, summary={"model_id": model_id, "split": index.split, "clips_per_video": clips,
                                               "data": str(index.root), "computed_by": "kpsem app",
                                               "protocol": dataset.protocol.as_dict(),
                                               "precision": precision.as_dict()})
    return table


def compute_missing_tables(chosen: Selection, missing: list[TableSource], *, clips: int,
                           progress: Callable[[str, int, int], None], lock: threading.Lock | None = None) -> None:
    """Compute and write the table of each of ``missing`` (the sidebar's models on its data split);
    ``progress(checkpoint name, done, total)`` after every clip."""
    for source in missing:
        slot = chosen.baseline if source.role == "baseline" else chosen.kpsem
        compute_predictions(slot.model, slot.info, chosen.data.index, model_id=slot.model_id, clips=clips,
                            out=source.path, progress=lambda done, total, name=slot.name: progress(name, done, total),
                            lock=lock)


def common_levels(runs: Sequence[tuple[pd.DataFrame, pd.DataFrame, str]]) -> list[str]:
    """The levels (``video``, ``clip``) every table of every run holds, video first."""
    return sorted(set.intersection(*(set(table["level"].unique().tolist()) for run in runs for table in run[:2])),
                  reverse=True)


def compare_runs(runs: Sequence[tuple[pd.DataFrame, pd.DataFrame, str]], level: str | None) -> list:
    """:func:`kpsem.explain.compare.compare_predictions` of each (baseline table, KPSEM table, label) run; a
    failure of one of several runs names the run."""
    from kpsem.explain.compare import compare_predictions

    aligned = []
    for number, (baseline_table, kpsem_table, label) in enumerate(runs, start=1):
        try:
            aligned.append(compare_predictions(baseline_table, kpsem_table, level=level))
        except ValueError as error:
            if len(runs) == 1:
                raise
            raise ValueError(f"run {number} ({label}): {error}") from None
    return aligned
