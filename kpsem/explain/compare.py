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

from kpsem.constants import placeholder_class_names
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
    baseline_probs: np.ndarray  # (items, classes), float32 as the tables store them
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
    """Class names by index as the rows show them: a row's true class (the last row naming a label wins),
    else the first top-k entry naming it, else ``class_<index>``.

    Vectorised: a loop over the rows and their top-k lists took half a second on a Kinetics-sized table."""
    names = np.array(placeholder_class_names(num_classes), dtype=object)
    placeholder = names.copy()
    truth = pd.DataFrame({"label": df["true_label"].to_numpy(dtype=np.int64),
                          "name": df["true_class"].astype(str).to_numpy(dtype=object)})
    truth = truth.drop_duplicates("label", keep="last")
    names[truth["label"].to_numpy()] = truth["name"].to_numpy()
    unnamed = names == placeholder
    if unnamed.any() and len(df) and "topk_labels" in df.columns and "topk_classes" in df.columns:
        labels = np.concatenate([np.asarray(cell, dtype=np.int64).reshape(-1) for cell in df["topk_labels"]])
        classes = np.concatenate([np.asarray(cell, dtype=object).reshape(-1) for cell in df["topk_classes"]])
        listed = pd.DataFrame({"label": labels, "name": classes.astype(str)})
        listed = listed[unnamed[listed["label"].to_numpy()]]  # only labels no true class named
        listed = listed[listed["name"].to_numpy() != placeholder[listed["label"].to_numpy()]]
        listed = listed.drop_duplicates("label", keep="first")
        names[listed["label"].to_numpy()] = listed["name"].to_numpy()
    return names.tolist()


def _some(names: Sequence[str], shown: int = 5) -> str:
    """"['a', 'b']", or the first ``shown`` names then '...' and the count."""
    names = sorted(names)
    if len(names) <= shown:
        return repr(names)
    return repr(names[:shown])[:-1] + f", ...] ({len(names)} in all)"


def _stated_classes(df: pd.DataFrame, width: int) -> list[str] | None:
    """The class list `evaluate` recorded in the table's summary, when it has one of ``width`` names."""
    stated = df.attrs.get("kpsem", {}).get("class_names")
    if isinstance(stated, list) and len(stated) == width:
        return [str(name) for name in stated]
    return None


def _stack_probs(cells: pd.Series) -> np.ndarray:
    """A column of probability vectors as one (rows, classes) array, without a loop in Python: float32 as
    tables store them (a float64 copy took 40 ms per model at 20k videos x 400 classes and changes no
    value), float64 for hand-made lists of Python floats."""
    if not len(cells):
        return np.zeros((0, 0))
    try:
        stacked = np.stack(cells.to_numpy())
        return stacked if np.issubdtype(stacked.dtype, np.floating) else stacked.astype(np.float64)
    except ValueError:
        raise ValueError("the table's rows hold probability vectors of different lengths; every row has one "
                         "value per class") from None


def _class_list(df: pd.DataFrame) -> list[str | None]:
    """The table's class names by index: from its summary when `evaluate` wrote one, else from the names
    its rows show (None where no row names that class)."""
    width = len(df["probs"].iloc[0]) if len(df) else 0
    stated = _stated_classes(df, width)
    if stated is not None:
        return stated
    inferred = _class_names(df, width)
    return [None if name == stand_in else name for name, stand_in in zip(inferred, placeholder_class_names(width))]


def _clips_per_video(df: pd.DataFrame) -> pd.Series:
    """Clips behind each video, indexed by video id: its video row's ``num_clips``, else the count of its
    clip rows."""
    videos = df[df["level"] == "video"]
    if len(videos) and "num_clips" in df.columns:
        return pd.Series(videos["num_clips"].to_numpy(dtype=np.int64), index=videos["video_id"].astype(str).to_numpy())
    clips = df[df["level"] == "clip"]
    counts = clips.groupby(clips["video_id"].astype(str)).size()
    return pd.Series(counts.to_numpy(dtype=np.int64), index=counts.index.to_numpy())


def _video_ids(df: pd.DataFrame) -> set[str]:
    # unique() first: iterating pandas' Arrow-backed strings costs a microsecond per row
    return set(df["video_id"].astype(str).unique().tolist())


def check_comparable(baseline: pd.DataFrame, kpsem: pd.DataFrame) -> None:
    """Refuse two one-model tables that were not made on the same videos, class list and clip protocol
    (clips per video, levels), with a ValueError naming the first difference."""
    videos_b, videos_k = _video_ids(baseline), _video_ids(kpsem)
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
    clips_b, clips_k = clips_b[~clips_b.index.duplicated(keep="last")], clips_k[~clips_k.index.duplicated(keep="last")]
    paired = clips_k.reindex(clips_b.index)
    differ = paired.notna().to_numpy() & (paired.to_numpy() != clips_b.to_numpy())
    if differ.any():
        video = min(clips_b.index[differ])  # the first in sorted order, as the message always named
        uniform = clips_b.nunique() == 1 and clips_k.nunique() == 1
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
    probs_b, probs_k = _stack_probs(merged["probs_b"]), _stack_probs(merged["probs_k"])  # (items, classes)
    if probs_b.shape != probs_k.shape:
        raise ValueError(f"the models have {probs_b.shape[1]} and {probs_k.shape[1]} classes; "
                         f"compare models of one class list")
    stated_b, stated_k = _stated_classes(baseline, probs_b.shape[1]), _stated_classes(kpsem, probs_b.shape[1])
    if stated_b is not None and stated_b == stated_k:
        names = stated_b  # what evaluate recorded; the rows' names agree with it (check_comparable)
    else:
        names = _class_names(pd.concat([left, right]), probs_b.shape[1])
    labels = merged["true_label_b"].to_numpy(dtype=np.int64)
    pred_b, pred_k = probs_b.argmax(axis=1), probs_k.argmax(axis=1)
    rows = np.arange(len(labels))
    lookup = np.asarray(names, dtype=object)
    items = pd.DataFrame({
        "video_id": merged["video_id"].to_numpy(),
        "clip_index": (merged["clip_index"] if level == "clip" else merged["clip_index_b"]).to_numpy(),
        "true_label": labels,
        "true_class": lookup[labels],
        "baseline_pred": pred_b,
        "baseline_class": lookup[pred_b],
        "baseline_true_prob": probs_b[rows, labels],
        "kpsem_pred": pred_k,
        "kpsem_class": lookup[pred_k],
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
    true, predicted = np.asarray(true_labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)
    if true.shape != predicted.shape:
        raise ValueError(f"one prediction per true label; got {true.shape} and {predicted.shape}")
    for what, values in (("true label", true), ("prediction", predicted)):
        if len(values) and not 0 <= values.min() <= values.max() < num_classes:
            bad = values[(values < 0) | (values >= num_classes)][0]
            raise ValueError(f"{what} {bad} is outside the {num_classes} classes")
    cells = np.bincount(true * num_classes + predicted, minlength=num_classes * num_classes)  # one pass
    return cells.reshape(num_classes, num_classes)


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
