"""Faithfulness of Grad-CAM explanations in 3-D: deletion and insertion curves, their areas, random floors
and average drop, for one clip and over a split.

Why these and not pytorch-grad-cam's metrics: its ROAD and perturbation metrics work on 2-D images only.
What is measured here, on the CAM's own space-time grid (T' x H' x W' cells of the CAM layer):

* **Cells.** Feature cell (t', i, j) owns the clip pixels whose nearest cell centre it is: frames
  ``floor(t * T' / T) == t'`` and likewise for rows and columns. That is where the CAM's trilinear
  upsampling (``align_corners=False``) is dominated by that cell, so a cell's pixels are the block of
  the clip the upsampled CAM paints with its value.
* **Order.** Cells from most to least salient by the raw CAM at the layer's resolution; equal values
  (typically the zeros ReLU leaves) in a seeded random order, so that ties do not favour early frames
  or the top-left corner. The floor is a seeded random order of all cells (the same for both models of
  a pair, so their floors are paired too).
* **Fill.** A removed cell shows a blurred copy of the clip: a Gaussian in time, rows and columns with
  a standard deviation of half a cell on each axis (replicate padding), clamped to each channel's range
  in the clip. Why blur and not the clip's mean: a constant fill puts a hard-edged flat block at every
  removed cell, edges the clip never had and early filters respond to; a blur is a positive weighted
  mean of the clip's own values, so it adds no value outside the clip's range and no edge (its total
  variation is at most the clip's), while a Gaussian of half a cell damps detail at the cell's scale to
  under 1% (exp(-2 pi^2 / 4)), so what the cell showed is gone. ``fill="mean"`` is there to compare.
* **Curves.** ``steps`` + 1 points (fractions k/n of the n cells, k = round(i * n / steps)). Deletion
  replaces the top-k cells with the fill, from the clip (fraction 0) to the fill alone (fraction 1);
  insertion shows only the top-k cells on the fill, from the fill to the clip. The value is the
  softmax probability of the target class.
* **Areas.** Trapezoid rule over the fraction of cells removed (deletion) or shown (insertion), in
  [0, 1]: a faithful map has a low deletion AUC and a high insertion AUC, below and above its random floor.
* **Average drop** (Chattopadhyay et al., Grad-CAM++, WACV 2018, with a top-k mask instead of the map
  as a soft mask): for a clip with target probability p on the whole clip and p_k when only the most
  salient fraction ``keep`` of the cells (rounded, at least one) is shown on the fill,
  drop = max(0, p - p_k) / p; "average drop" is 100 x the mean of drop over clips (over a split: the
  mean over videos of each video's mean). Lower is better; the same for a random ``keep`` fraction is its floor.

Cost: every distinct masked clip of one model goes through the model once, in batches of ``batch_size``
under ``torch.inference_mode``: the clip, the fill alone, ``steps - 1`` inner points of 2 orders x 2
curves, and the two average-drop clips unless they fall on a step (at most 4 * steps + 2: 66 for 16
steps), so one model's curves cost ``ceil(distinct / batch_size)`` forward calls, not one per step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from kpsem.checkpoint import check_finite_logits
from kpsem.explain.analysis import CommonTarget, PairAnalysis, analyse_pair, common_target, feature_frame_of
from kpsem.explain.gradcam import Weighting, explaining
from kpsem.io import atomic_path, atomic_write_text
from kpsem.names import FAITHFULNESS_FILLS
from kpsem.pairing import require_pair

__all__ = [
    "FILLS",
    "METRICS",
    "Fill",
    "FaithfulnessCurves",
    "PairFaithfulness",
    "cell_order",
    "make_fill",
    "curve_auc",
    "faithfulness_curves",
    "pair_faithfulness",
    "paired_bootstrap",
    "evaluate_faithfulness",
    "summarise_faithfulness",
    "write_faithfulness",
]

Fill = Literal["blur", "mean"]
FILLS: tuple[str, ...] = FAITHFULNESS_FILLS
# Per-clip numbers in the table and the summary; lower is better for deletion and average drop.
METRICS: tuple[str, ...] = ("auc_deletion", "auc_insertion", "auc_deletion_random", "auc_insertion_random",
                            "average_drop", "average_drop_random")

_Key = tuple  # ("all",), ("none",) or (ordering, "prefix" | "suffix", k): which cells a masked clip shows


# --- pieces ---------------------------------------------------------------------------------------


def cell_order(saliency: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flat cell indices from most to least salient; equal values in ``rng``'s random order."""
    values = np.asarray(saliency, dtype=np.float64).ravel()
    return np.lexsort((rng.random(values.size), -values))  # last key sorts first: saliency, then the tie-break


def _gaussian(sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def make_fill(clip: torch.Tensor, fill: Fill, grid: tuple[int, int, int]) -> torch.Tensor:
    """What a removed cell shows, (N, 3, T, H, W) like ``clip``: a blurred copy (see the module doc) or
    each channel's mean. ``grid`` (T', H', W') sets the blur: half a cell on each axis."""
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {FILLS}; got {fill!r}")
    if fill == "mean":
        return clip.mean(dim=(2, 3, 4), keepdim=True).expand_as(clip).clone()
    out = clip.float()
    for axis, cells in zip((2, 3, 4), grid):
        sigma = clip.shape[axis] / cells / 2
        kernel = _gaussian(sigma).to(device=clip.device, dtype=torch.float32)
        radius = (kernel.numel() - 1) // 2
        moved = out.movedim(axis, -1)  # (..., L) with the blurred axis last
        flat = moved.reshape(-1, 1, moved.shape[-1])
        blurred = F.conv1d(F.pad(flat, (radius, radius), mode="replicate"), kernel.view(1, 1, -1))
        out = blurred.reshape(moved.shape).movedim(-1, axis)
    # A positive kernel summing to 1 keeps every value inside the channel's range; the clamp removes the
    # last float rounding (a sum of weights of 1 + 1e-7) so that the guarantee is exact.
    low = clip.amin(dim=(2, 3, 4), keepdim=True)
    high = clip.amax(dim=(2, 3, 4), keepdim=True)
    return torch.minimum(torch.maximum(out, low), high).to(clip.dtype)


def curve_auc(fractions: Sequence[float] | np.ndarray, values: Sequence[float] | np.ndarray) -> float:
    """Area under a curve by the trapezoid rule over ``fractions`` (increasing, from 0 to 1)."""
    x, y = np.asarray(fractions, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size < 2:
        raise ValueError(f"a curve needs matching 1-D fractions and values with at least 2 points; got "
                         f"{x.shape} and {y.shape}")
    if np.any(np.diff(x) < 0) or x[0] != 0 or x[-1] != 1:
        raise ValueError(f"fractions must increase from 0 to 1; got {x.tolist()}")
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))


# --- one model, one clip --------------------------------------------------------------------------


@dataclass
class FaithfulnessCurves:
    """Deletion and insertion curves of one model on one clip, for one target class and saliency map."""

    model_name: str  # e.g. "MFNet"
    target: int  # class whose probability is traced
    grid: tuple[int, int, int]  # (T', H', W') cells of the CAM
    fill: str  # "blur" or "mean"
    fractions: np.ndarray  # (steps + 1,) fraction of cells removed (deletion) or shown (insertion), 0 .. 1
    deletion: np.ndarray  # (steps + 1,) target probability, most salient cells removed first
    insertion: np.ndarray  # (steps + 1,) target probability, most salient cells shown first on the fill
    deletion_random: np.ndarray  # (steps + 1,) the same in a random cell order (the floor)
    insertion_random: np.ndarray  # (steps + 1,)
    keep: float  # fraction of cells kept for average drop
    kept_cells: int  # how many cells that is (rounded, at least 1)
    p_full: float  # target probability on the whole clip
    p_keep: float  # ... with only the top kept_cells cells shown on the fill
    p_keep_random: float  # ... with kept_cells random cells shown
    forwards: int  # batched forward calls it took

    @property
    def auc_deletion(self) -> float:
        return curve_auc(self.fractions, self.deletion)

    @property
    def auc_insertion(self) -> float:
        return curve_auc(self.fractions, self.insertion)

    @property
    def auc_deletion_random(self) -> float:
        return curve_auc(self.fractions, self.deletion_random)

    @property
    def auc_insertion_random(self) -> float:
        return curve_auc(self.fractions, self.insertion_random)

    @property
    def average_drop(self) -> float:
        """max(0, p - p_k) / p for the top-k cells (a fraction in [0, 1]; 0 when p is 0)."""
        return max(0.0, self.p_full - self.p_keep) / self.p_full if self.p_full > 0 else 0.0

    @property
    def average_drop_random(self) -> float:
        return max(0.0, self.p_full - self.p_keep_random) / self.p_full if self.p_full > 0 else 0.0

    def metrics(self) -> dict[str, float]:
        """The per-clip numbers of :data:`METRICS`."""
        return {name: float(getattr(self, name)) for name in METRICS}


def _point_key(order: str, curve: str, k: int, n: int) -> _Key:
    """Which cells the clip at step k shows: deletion keeps all but the first k, insertion the first k."""
    shown = n - k if curve == "deletion" else k
    if shown == n:
        return ("all",)
    if shown == 0:
        return ("none",)
    return (order, "suffix", k) if curve == "deletion" else (order, "prefix", k)


def _shown_cells(key: _Key, orders: dict[str, np.ndarray], n: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    if key[0] == "all":
        mask[:] = True
    elif key[0] != "none":
        order, part, k = key
        mask[orders[order][k:] if part == "suffix" else orders[order][:k]] = True
    return mask


def faithfulness_curves(
    model: nn.Module,
    clip: torch.Tensor,
    saliency: np.ndarray,
    target: int,
    *,
    steps: int = 16,
    fill: Fill = "blur",
    keep: float = 0.5,
    seed: int | Sequence[int] = 0,
    batch_size: int = 32,
    name: str | None = None,
) -> FaithfulnessCurves:
    """Deletion/insertion curves of ``model`` on one normalised clip (1, 3, T, H, W) for ``target``,
    with cells ordered by ``saliency`` (T', H', W'), e.g. ``ClipAnalysis.cam_feature``.

    ``seed`` fixes the random floor's order and the tie-break; two models given the same seed and grid
    get the same random order. The model runs in eval mode (its mode is restored)."""
    if clip.dim() != 5 or clip.shape[0] != 1 or clip.shape[1] != 3:
        raise ValueError(f"faithfulness_curves takes one clip of shape (1, 3, T, H, W); got {tuple(clip.shape)}")
    saliency = np.asarray(saliency)
    if saliency.ndim != 3:
        raise ValueError(f"saliency must be a (T', H', W') map at the CAM layer's resolution; got {saliency.shape}")
    grid = tuple(int(v) for v in saliency.shape)
    for axis, cells, size in zip("THW", grid, clip.shape[2:]):
        if not 1 <= cells <= size:
            raise ValueError(f"saliency has {cells} cells along {axis} but the clip has {size} there")
    if steps < 2:
        raise ValueError(f"steps must be at least 2; got {steps}")
    if not 0 < keep <= 1:
        raise ValueError(f"keep is a fraction of the cells in (0, 1]; got {keep}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1; got {batch_size}")
    n = int(np.prod(grid))
    rng = np.random.default_rng(seed)
    orders = {"random": rng.permutation(n)}  # drawn first: the floor does not depend on the saliency
    orders["cam"] = cell_order(saliency, rng)
    counts = np.floor(np.arange(steps + 1) * n / steps + 0.5).astype(int)  # cells removed / shown per step
    kept = max(1, math.floor(keep * n + 0.5))
    points = {(order, curve): [_point_key(order, curve, int(k), n) for k in counts]
              for order in ("cam", "random") for curve in ("deletion", "insertion")}
    extra = {"keep": ("cam", "prefix", kept) if kept < n else ("all",),
             "keep_random": ("random", "prefix", kept) if kept < n else ("all",)}
    unique: list[_Key] = list(dict.fromkeys([k for keys in points.values() for k in keys] + list(extra.values())))

    device = next(model.parameters(), torch.empty(0)).device
    clip = clip.to(device)
    filled = make_fill(clip, fill, grid)  # (1, 3, T, H, W)
    index = [torch.as_tensor(feature_frame_of(size, cells), device=device) for size, cells in zip(clip.shape[2:], grid)]
    probs = np.empty(len(unique), dtype=np.float64)
    forwards = 0
    with explaining(model), torch.inference_mode():  # eval mode, the model's lock, every module's mode kept
        for start in range(0, len(unique), batch_size):
            keys = unique[start:start + batch_size]
            cells = torch.as_tensor(np.stack([_shown_cells(k, orders, n) for k in keys]), device=device)
            cells = cells.view(len(keys), *grid)  # (B, T', H', W')
            pixels = cells[:, index[0]][:, :, index[1]][:, :, :, index[2]]  # (B, T, H, W)
            batch = torch.where(pixels[:, None], clip, filled)  # (B, 3, T, H, W)
            logits = model(batch)
            check_finite_logits(logits, model=name or type(model).__name__)
            forwards += 1
            if not 0 <= target < logits.shape[1]:
                raise ValueError(f"target class {target} is out of range for a model with {logits.shape[1]} "
                                 f"classes (0..{logits.shape[1] - 1})")
            probs[start:start + len(keys)] = torch.softmax(logits.double(), dim=1)[:, target].cpu().numpy()
    where = {key: i for i, key in enumerate(unique)}

    def curve(order: str, kind: str) -> np.ndarray:
        return np.array([probs[where[k]] for k in points[(order, kind)]])

    return FaithfulnessCurves(
        model_name=name or type(model).__name__, target=int(target), grid=grid, fill=fill,  # type: ignore[arg-type]
        fractions=counts / n, deletion=curve("cam", "deletion"), insertion=curve("cam", "insertion"),
        deletion_random=curve("random", "deletion"), insertion_random=curve("random", "insertion"),
        keep=float(keep), kept_cells=kept, p_full=float(probs[where[("all",)]]),
        p_keep=float(probs[where[extra["keep"]]]), p_keep_random=float(probs[where[extra["keep_random"]]]),
        forwards=forwards,
    )


# --- both models ----------------------------------------------------------------------------------


@dataclass
class PairFaithfulness:
    """Both models' curves on one clip, for one common target."""

    baseline: FaithfulnessCurves
    kpsem: FaithfulnessCurves
    common: CommonTarget  # the class both curves trace, and why


def pair_faithfulness(
    baseline: nn.Module,
    kpsem_model: nn.Module,
    clip: torch.Tensor,
    pair: PairAnalysis,
    common: CommonTarget,
    *,
    steps: int = 16,
    fill: Fill = "blur",
    keep: float = 0.5,
    seed: int | Sequence[int] = 0,
    batch_size: int = 32,
) -> PairFaithfulness:
    """Curves of both models of ``pair`` (analysed on ``clip``) for the common target, each ordered by its
    own CAM; one seed, so the random floors of the two models use one cell order."""
    if not common.explains(pair):
        names = pair.baseline.class_names
        raise ValueError(
            f"faithfulness compares both models on one class ({common.name!r}), but the CAMs explain "
            f"{names[pair.baseline.target]!r} and {names[pair.kpsem.target]!r}; analyse the pair with "
            f"target={common.index}")
    options: dict[str, Any] = {"steps": steps, "fill": fill, "keep": keep, "seed": seed, "batch_size": batch_size}
    return PairFaithfulness(
        baseline=faithfulness_curves(baseline, clip, pair.baseline.cam_feature, common.index,
                                     name=pair.baseline.model_name, **options),
        kpsem=faithfulness_curves(kpsem_model, clip, pair.kpsem.cam_feature, common.index,
                                  name=pair.kpsem.model_name, **options),
        common=common,
    )


# --- intervals ------------------------------------------------------------------------------------


def paired_bootstrap(
    baseline: np.ndarray, kpsem: np.ndarray, *, resamples: int = 10_000, seed: int = 0, confidence: float = 0.95
) -> dict[str, dict[str, float]]:
    """Means of paired per-video values and percentile bootstrap intervals, for each model and for the
    difference KPSEM minus baseline: a resample draws as many videos as there are, with replacement, and
    both models are read on the same draw. The interval is the (1-confidence)/2 and (1+confidence)/2
    quantiles of ``resamples`` means from ``numpy.random.default_rng(seed)``.

    :func:`kpsem.explain.significance.bootstrap_difference` does this for right/wrong flags; these are
    real values (areas, drops), so the draw of videos is made here."""
    a, b = np.asarray(baseline, dtype=np.float64), np.asarray(kpsem, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired_bootstrap needs two 1-D arrays of equal, non-zero length; got {a.shape}, {b.shape}")
    if resamples < 1:
        raise ValueError(f"resamples must be a positive integer; got {resamples!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1; got {confidence!r}")
    draws = np.random.default_rng(seed).integers(0, a.size, size=(resamples, a.size))  # (R, videos)
    out = {}
    for label, values in (("baseline", a), ("kpsem", b), ("difference", b - a)):
        low, high = np.quantile(values[draws].mean(axis=1), [(1 - confidence) / 2, (1 + confidence) / 2])
        out[label] = {"mean": float(values.mean()), "low": float(low), "high": float(high)}
    return out


# --- over a split ---------------------------------------------------------------------------------


def _clip_rows(baseline: nn.Module, kpsem_model: nn.Module, item: dict[str, Any], ids: tuple[str, str],
               class_names: list[str], device: torch.device, *, cam_layer: str, weighting: Weighting,
               **options: Any) -> list[dict[str, Any]]:
    """Table rows (baseline, KPSEM) of one data set item, both explained for its true class."""
    clip, label = item["clip"][None].to(device), int(item["label"])  # (1, 3, T, S, S)
    pair = analyse_pair(baseline, kpsem_model, clip, cam_layer=cam_layer, target=label, weighting=weighting,
                        class_names=class_names)
    common = common_target(pair.baseline.probs, pair.kpsem.probs, class_names, true_label=label,
                           model_names=(pair.baseline.model_name, pair.kpsem.model_name))
    result = pair_faithfulness(baseline, kpsem_model, clip, pair, common, **options)
    rows = []
    for role, curves, model_id, prediction in (("baseline", result.baseline, ids[0], common.predictions[0]),
                                               ("kpsem", result.kpsem, ids[1], common.predictions[1])):
        rows.append({
            "video_id": item["video_id"], "clip_index": int(item["clip_index"]), "true_label": label,
            "true_class": class_names[label], "role": role, "model_id": model_id, "model": curves.model_name,
            "target": curves.target, "prediction": prediction, "prediction_class": class_names[prediction],
            "predictions_differ": common.predictions_differ, "p_full": curves.p_full, "p_keep": curves.p_keep,
            "p_keep_random": curves.p_keep_random, **curves.metrics(), "fractions": curves.fractions.tolist(),
            "deletion": curves.deletion.tolist(), "insertion": curves.insertion.tolist(),
            "deletion_random": curves.deletion_random.tolist(), "insertion_random": curves.insertion_random.tolist(),
            "cells": int(np.prod(curves.grid)),
        })
    return rows


def evaluate_faithfulness(
    baseline_checkpoint: str | Path,
    kpsem_checkpoint: str | Path,
    *,
    data: str | Path,
    split: str = "test",
    clips_per_video: int = 1,
    steps: int = 16,
    cam_layer: str = "tail",
    weighting: Weighting = "clip",
    fill: Fill = "blur",
    keep: float = 0.5,
    seed: int = 0,
    batch_size: int = 32,
    device: str = "auto",
    layout: str | None = None,
    split_id: int = 1,
    annotations: str | Path | None = None,
    workers: int = 2,
    progress: bool = False,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Curves of both checkpoints on ``clips_per_video`` test clips of every video of ``data``'s ``split``:
    one table row per clip and model, and the settings. The common target is each video's true class.

    A video that cannot be decoded is left out (the data set lends a neighbour's clip; that clip is skipped
    and the video named in the settings), as evaluation does."""
    from torch.utils.data import DataLoader

    from kpsem.checkpoint import load_checkpoint
    from kpsem.data import open_dataset
    from kpsem.distributed import pick_device
    from kpsem.evaluate import _check_classes, default_model_id, evaluation_dataset

    if clips_per_video < 1:
        raise ValueError(f"clips_per_video must be at least 1; got {clips_per_video}")
    where = pick_device(0, device)
    base = load_checkpoint(baseline_checkpoint, map_location=where)
    ours = load_checkpoint(kpsem_checkpoint, map_location=where)
    bi, ki = base.info, ours.info
    require_pair(bi, ki, task="faithfulness")
    index = open_dataset(data, split=split, layout=layout, split_id=split_id, annotations=annotations)  # type: ignore[arg-type]
    _check_classes(ki.class_names, list(index.class_names), Path(kpsem_checkpoint))
    dataset = evaluation_dataset(index, ki, clips=clips_per_video)  # the views evaluation and the probes score
    if len(dataset) == 0:
        raise ValueError(f"the {split} split of {data} has no videos")
    ids = (default_model_id(baseline_checkpoint, bi.arch), default_model_id(kpsem_checkpoint, ki.arch))
    loader = DataLoader(dataset, batch_size=None, num_workers=workers)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(dataset), desc=f"faithfulness {split}", unit="clip", dynamic_ncols=True)
    rows: list[dict[str, Any]] = []
    skipped: set[str] = set()
    started = time.perf_counter()
    try:
        for item in loader:
            if item["replaced"]:
                skipped.add(str(item["replaced"]))
            else:
                rows += _clip_rows(base.model, ours.model, item, ids, ki.class_names, where, cam_layer=cam_layer,
                                   weighting=weighting, steps=steps, fill=fill, keep=keep,
                                   seed=[seed, int(item["index"])], batch_size=batch_size)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    settings = {
        "baseline": str(baseline_checkpoint), "kpsem": str(kpsem_checkpoint), "model_ids": list(ids),
        "data": str(data), "layout": index.layout, "split": split, "clips_per_video": clips_per_video,
        "steps": steps, "cam_layer": cam_layer, "weighting": weighting, "fill": fill, "keep": keep, "seed": seed,
        "batch_size": batch_size, "device": str(where), "target": "the true class of each video",
        "undecodable_videos": sorted(skipped), "seconds": round(time.perf_counter() - started, 1),
    }
    return pd.DataFrame(rows), settings


def summarise_faithfulness(table: pd.DataFrame, *, resamples: int = 10_000, confidence: float = 0.95,
                           seed: int = 0) -> dict[str, Any]:
    """Mean of each metric per model with bootstrap intervals over videos (a video's value is the mean
    over its clips), the paired difference KPSEM minus baseline, and each model's margin over its random
    floor (positive = better than random: floor minus CAM for deletion, CAM minus floor for insertion)."""
    if table.empty:
        raise ValueError("no clips to summarise")
    per_video = table.groupby(["role", "video_id"])[list(METRICS)].mean()  # (2 * videos, metrics)
    base, ours = per_video.loc["baseline"], per_video.loc["kpsem"]
    ours = ours.loc[base.index]  # pair the videos
    summary: dict[str, Any] = {"videos": len(base), "clips": int((table["role"] == "baseline").sum()),
                               "confidence": confidence, "resamples": resamples, "bootstrap_seed": seed,
                               "predictions_differ_clips": int(table.loc[table["role"] == "baseline",
                                                                         "predictions_differ"].sum()),
                               "models": {"baseline": {}, "kpsem": {}}, "difference": {}, "over_random": {}}
    for metric in METRICS:
        scale = 100.0 if metric.startswith("average_drop") else 1.0  # average drop in percent, as published
        result = paired_bootstrap(base[metric].to_numpy() * scale, ours[metric].to_numpy() * scale,
                                  resamples=resamples, confidence=confidence, seed=seed)
        summary["models"]["baseline"][metric] = result["baseline"]
        summary["models"]["kpsem"][metric] = result["kpsem"]
        summary["difference"][metric] = result["difference"]  # KPSEM minus baseline
    margins = {"deletion": ("auc_deletion_random", "auc_deletion"),
               "insertion": ("auc_insertion", "auc_insertion_random")}
    for curve, (high, low) in margins.items():
        gains = paired_bootstrap((base[high] - base[low]).to_numpy(), (ours[high] - ours[low]).to_numpy(),
                                 resamples=resamples, confidence=confidence, seed=seed)
        summary["over_random"][curve] = gains
    return summary


def write_faithfulness(table: pd.DataFrame, out: str | Path, summary: dict[str, Any],
                       summary_path: str | Path | None = None) -> tuple[Path, Path]:
    """The table as Parquet at ``out`` and the summary as JSON beside it (default: ``out`` with .json)."""
    import json

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as partial:
        table.to_parquet(partial, index=False)
    json_path = Path(summary_path) if summary_path else out.with_suffix(".json")
    atomic_write_text(json_path, json.dumps(summary, indent=2) + "\n")
    return out, json_path

