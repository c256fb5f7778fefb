"""Class comparison of two models from their predictions tables (``python -m kpsem evaluate``).

Pure pandas/numpy: per-class accuracy with Wilson intervals (Fig. 7), confusion matrices, the clips that
KPSEM fixes or breaks, and the significance of the difference (:mod:`kpsem.explain.significance`). Rows
are matched on ``video_id`` (video level) or ``(video_id, clip_index)`` (clip level). Tables made on other
videos, class lists or clip protocols are refused, naming the difference: a comparison on the videos two
tables happen to share would be a different test set, shown as if it were the one asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from kpsem.explain.significance import PairedSignificance, bootstrap_difference, mcnemar_exact, wilson_interval

__all__ = [
    "REQUIRED_COLUMNS",
    "Level",
    "ComparedPredictions",
    "load_predictions",
    "check_comparable",
    "compare_predictions",
    "per_class_accuracy",
    "paired_significance",
    "confusion_matrix",
    "fixed_and_broken",
]

REQUIRED_COLUMNS = ("video_id", "true_label", "true_class", "model_id", "level", "clip_index", "probs")
Level = Literal["video", "clip"]


def load_predictions(path: str | Path) -> pd.DataFrame:
    """Read a predictions Parquet file, through :func:`kpsem.evaluate.read_predictions` when present."""
    try:
        from kpsem.evaluate import read_predictions
    except ImportError:  # the evaluate module is optional here; plain Parquet still works
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"predictions file {path} does not exist") from None
        return pd.read_parquet(path)
    return read_predictions(path)


@dataclass
class ComparedPredictions:
    """Two models' predictions on the same items, aligned row by row."""

    level: Level  # "video" or "clip"
    baseline_id: str  # model_id of the baseline
    kpsem_id: str  # model_id of the model compared with it
    class_names: list[str]  # one per class
    items: pd.DataFrame  # video_id, clip_index, true_label, true_class, baseline_pred, kpsem_pred, *_prob
    baseline_probs: np.ndarray  # (items, classes)
    kpsem_probs: np.ndarray  # (items, classes)


def _check_columns(df: pd.DataFrame, what: str) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks columns {', '.join(missing)}; expected a `python -m kpsem evaluate` table")


def _rows_at(df: pd.DataFrame, level: Level, what: str) -> pd.DataFrame:
    rows = df[df["level"] == level]
    if rows.empty:
        raise ValueError(f"{what} has no {level!r} rows (levels present: {sorted(df['level'].unique())})")
    key = ["video_id"] if level == "video" else ["video_id", "clip_index"]
    duplicated = rows.duplicated(key)
    if duplicated.any():
        raise ValueError(f"{what} holds {int(duplicated.sum())} duplicate {level} rows, e.g. "
                         f"{rows[duplicated].iloc[0]['video_id']!r}; pass one model's predictions per table")
    return rows


def _class_names(df: pd.DataFrame, num_classes: int) -> list[str]:
    names = [f"class_{i}" for i in range(num_classes)]
    for label, name in zip(df["true_label"], df["true_class"]):
        names[int(label)] = str(name)
    if "topk_labels" in df.columns and "topk_classes" in df.columns:
        for labels, classes in zip(df["topk_labels"], df["topk_classes"]):
            for label, name in zip(labels, classes):
                if names[int(label)] == f"class_{int(label)}":
                    names[int(label)] = str(name)
    return names


def _some(names: Sequence[str], shown: int = 5) -> str:
    """"['a', 'b']", or the first ``shown`` names then '...' and the count."""
    names = sorted(names)
    if len(names) <= shown:
        return repr(names)
    return repr(names[:shown])[:-1] + f", ...] ({len(names)} in all)"


def _class_list(df: pd.DataFrame) -> list[str | None]:
    """The table's class names by index: from its summary when `evaluate` wrote one, else from the names
    its rows show (None where no row names that class)."""
    width = len(df["probs"].iloc[0]) if len(df) else 0
    stated = df.attrs.get("kpsem", {}).get("class_names")
    if isinstance(stated, list) and len(stated) == width:
        return [str(name) for name in stated]
    inferred = _class_names(df, width)
    return [None if name == f"class_{i}" else name for i, name in enumerate(inferred)]


def _clips_per_video(df: pd.DataFrame) -> dict[str, int]:
    """Clips behind each video: its video row's ``num_clips``, else the count of its clip rows."""
    videos = df[df["level"] == "video"]
    if len(videos) and "num_clips" in df.columns:
        return dict(zip(videos["video_id"].astype(str), videos["num_clips"].astype(int)))
    clips = df[df["level"] == "clip"]
    return {str(k): int(v) for k, v in clips.groupby("video_id").size().items()}


def check_comparable(baseline: pd.DataFrame, kpsem: pd.DataFrame) -> None:
    """Refuse two one-model tables that were not made on the same videos, class list and clip protocol
    (clips per video, levels), with a ValueError naming the first difference."""
    videos_b, videos_k = set(baseline["video_id"].astype(str)), set(kpsem["video_id"].astype(str))
    if videos_b != videos_k:
        missing = [f"missing from KPSEM: {_some(videos_b - videos_k)}"] if videos_b - videos_k else []
        missing += [f"missing from the baseline: {_some(videos_k - videos_b)}"] if videos_k - videos_b else []
        raise ValueError(f"the baseline table has {len(videos_b)} videos, the KPSEM table {len(videos_k)}: "
                         + "; ".join(missing))
    classes_b, classes_k = _class_list(baseline), _class_list(kpsem)
    for i, (name_b, name_k) in enumerate(zip(classes_b, classes_k)):
        if name_b is not None and name_k is not None and name_b != name_k:
            raise ValueError(f"class lists differ at index {i}: {name_b!r} vs {name_k!r}")
    if len(classes_b) != len(classes_k):
        raise ValueError(f"class lists differ in length: the baseline table has {len(classes_b)} classes, "
                         f"the KPSEM table {len(classes_k)}")
    levels_b, levels_k = sorted(baseline["level"].unique()), sorted(kpsem["level"].unique())
    if levels_b != levels_k:
        raise ValueError(f"levels differ: the baseline table has {levels_b}, the KPSEM table {levels_k}")
    clips_b, clips_k = _clips_per_video(baseline), _clips_per_video(kpsem)
    for video in sorted(clips_b):
        if clips_b[video] != clips_k.get(video, clips_b[video]):
            uniform = len(set(clips_b.values())) == 1 and len(set(clips_k.values())) == 1
            where = "" if uniform else f" (video {video!r})"
            raise ValueError(f"clips per video differ: {clips_b[video]} vs {clips_k[video]}{where}")


def compare_predictions(
    baseline: pd.DataFrame,
    kpsem: pd.DataFrame,
    *,
    level: Level | None = None,
    baseline_id: str | None = None,
    kpsem_id: str | None = None,
) -> ComparedPredictions:
    """Align two predictions tables (or one table holding two ``model_id`` values: pass it twice with
    the two ids). ``level`` defaults to "video" when both tables have video rows, else "clip". Tables that
    fail :func:`check_comparable` are refused."""
    _check_columns(baseline, "the baseline table")
    _check_columns(kpsem, "the KPSEM table")
    if baseline_id is not None:
        baseline = baseline[baseline["model_id"] == baseline_id]
    if kpsem_id is not None:
        kpsem = kpsem[kpsem["model_id"] == kpsem_id]
    for what, df in (("the baseline table", baseline), ("the KPSEM table", kpsem)):
        ids = sorted(df["model_id"].unique())
        if len(ids) != 1:
            raise ValueError(f"{what} holds {len(ids)} models ({ids}); choose one with its model id")
    check_comparable(baseline, kpsem)
    if level is None:
        level = "video" if (baseline["level"] == "video").any() and (kpsem["level"] == "video").any() else "clip"
    if level not in ("video", "clip"):
        raise ValueError(f"level must be 'video' or 'clip'; got {level!r}")
    left, right = _rows_at(baseline, level, "the baseline table"), _rows_at(kpsem, level, "the KPSEM table")
    key = ["video_id"] if level == "video" else ["video_id", "clip_index"]
    merged = left.merge(right, on=key, suffixes=("_b", "_k"), validate="one_to_one")
    if merged.empty:
        raise ValueError(f"the two tables share no {level} rows; were they made on the same data split?")
    mismatch = merged["true_label_b"] != merged["true_label_k"]
    if mismatch.any():
        raise ValueError(f"{int(mismatch.sum())} items have different true labels in the two tables, e.g. "
                         f"{merged[mismatch].iloc[0]['video_id']!r}; the tables use different class lists")
    probs_b = np.stack([np.asarray(p, dtype=np.float64) for p in merged["probs_b"]])  # (items, classes)
    probs_k = np.stack([np.asarray(p, dtype=np.float64) for p in merged["probs_k"]])
    if probs_b.shape != probs_k.shape:
        raise ValueError(f"the models have {probs_b.shape[1]} and {probs_k.shape[1]} classes; "
                         f"compare models of one class list")
    names = _class_names(pd.concat([left, right]), probs_b.shape[1])
    labels = merged["true_label_b"].to_numpy(dtype=np.int64)
    pred_b, pred_k = probs_b.argmax(axis=1), probs_k.argmax(axis=1)
    rows = np.arange(len(labels))
    items = pd.DataFrame({
        "video_id": merged["video_id"].to_numpy(),
        "clip_index": (merged["clip_index"] if level == "clip" else merged["clip_index_b"]).to_numpy(),
        "true_label": labels,
        "true_class": [names[i] for i in labels],
        "baseline_pred": pred_b,
        "baseline_class": [names[i] for i in pred_b],
        "baseline_true_prob": probs_b[rows, labels],
        "kpsem_pred": pred_k,
        "kpsem_class": [names[i] for i in pred_k],
        "kpsem_true_prob": probs_k[rows, labels],
    })
    return ComparedPredictions(
        level=level,
        baseline_id=str(left["model_id"].iloc[0]),
        kpsem_id=str(right["model_id"].iloc[0]),
        class_names=names,
        items=items,
        baseline_probs=probs_b,
        kpsem_probs=probs_k,
    )


def per_class_accuracy(compared: ComparedPredictions) -> pd.DataFrame:
    """One row per class present: count, baseline and KPSEM top-1 accuracy, difference (KPSEM - baseline),
    then each model's Wilson score 95% interval (``baseline_wilson_low`` ... ``kpsem_wilson_high``: a class
    has a handful of videos, so its accuracy is uncertain by tens of points), sorted by difference,
    largest gain first."""
    items = compared.items.assign(
        baseline=lambda d: d["baseline_pred"] == d["true_label"],
        kpsem=lambda d: d["kpsem_pred"] == d["true_label"],
    )
    table = items.groupby("true_label").agg(count=("video_id", "size"), baseline=("baseline", "mean"),
                                            kpsem=("kpsem", "mean"), right_b=("baseline", "sum"),
                                            right_k=("kpsem", "sum"))
    table.insert(0, "class_name", [compared.class_names[i] for i in table.index])
    table.insert(4, "difference", table["kpsem"] - table["baseline"])
    for model, right in (("baseline", table.pop("right_b")), ("kpsem", table.pop("right_k"))):
        bounds = [wilson_interval(int(r), int(n)) for r, n in zip(right, table["count"])]
        table[f"{model}_wilson_low"] = [low for low, _ in bounds]
        table[f"{model}_wilson_high"] = [high for _, high in bounds]
    table = table.reset_index().rename(columns={"true_label": "class_index"})
    table = table.sort_values(["difference", "class_index"], ascending=[False, True], kind="stable")
    return table.reset_index(drop=True)


def confusion_matrix(true_labels: Sequence[int] | np.ndarray, predictions: Sequence[int] | np.ndarray,
                     num_classes: int) -> np.ndarray:
    """(classes, classes) counts: row = true class, column = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(true_labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)), 1)
    return matrix


def fixed_and_broken(compared: ComparedPredictions) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Items the baseline gets wrong and KPSEM right (fixed), and the reverse (broken), by video id."""
    items = compared.items
    right_b = items["baseline_pred"] == items["true_label"]
    right_k = items["kpsem_pred"] == items["true_label"]
    fixed = items[~right_b & right_k].sort_values(["video_id", "clip_index"], kind="stable").reset_index(drop=True)
    broken = items[right_b & ~right_k].sort_values(["video_id", "clip_index"], kind="stable").reset_index(drop=True)
    return fixed, broken


def paired_significance(compared: ComparedPredictions, *, resamples: int = 10_000, seed: int = 0,
                        confidence: float = 0.95) -> PairedSignificance:
    """Top-1 and mean class accuracy of both models, McNemar's exact test on the items they disagree on
    and a bootstrap interval of the top-1 difference (items resampled with replacement)."""
    items = compared.items
    right_b = (items["baseline_pred"] == items["true_label"]).to_numpy()
    right_k = (items["kpsem_pred"] == items["true_label"]).to_numpy()
    fixed, broken = (len(frame) for frame in fixed_and_broken(compared))
    low, high = bootstrap_difference(right_b, right_k, resamples=resamples, seed=seed, confidence=confidence)
    per_class = per_class_accuracy(compared)
    return PairedSignificance(
        level=compared.level, baseline_id=compared.baseline_id, kpsem_id=compared.kpsem_id, items=len(items),
        top1_baseline=float(right_b.mean()), top1_kpsem=float(right_k.mean()),
        mean_class_baseline=float(per_class["baseline"].mean()), mean_class_kpsem=float(per_class["kpsem"].mean()),
        fixed=fixed, broken=broken, p_value=mcnemar_exact(fixed, broken), ci_low=low, ci_high=high,
        resamples=int(resamples), seed=int(seed), confidence=confidence,
    )
