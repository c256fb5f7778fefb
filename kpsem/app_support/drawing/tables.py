"""The numbers of a comparison as a page shows them: the headline (top-1 and top-5 of both models), the per-run
table of a comparison over several runs, and each class's accuracy filtered to where KPSEM wins or loses."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from kpsem.explain.significance import PairedSignificance

__all__ = ["Headline", "headline", "RUN_COLUMNS", "runs_table", "classes_where", "confusion_matrices", "confusion_cell"]


@dataclass
class Headline:
    items: int  # videos (or clips) compared
    top1: tuple[float, float]  # baseline, KPSEM
    top5: tuple[float, float]


def headline(compared) -> Headline:  # noqa: ANN001 - ComparedPredictions
    """Top-1 and top-5 accuracy of both models on the aligned items."""
    labels = compared.items["true_label"].to_numpy()
    out = []
    for probs in (compared.baseline_probs, compared.kpsem_probs):
        # The true class's rank (ties: lower index first, as a stable sort orders them) from two
        # comparisons per value: sorting every row took most of a second at 20k videos x 400 classes.
        true = probs[np.arange(len(labels)), labels][:, None]  # (items, 1)
        lower = np.arange(probs.shape[1])[None, :] < labels[:, None]
        rank = (probs > true).sum(axis=1) + ((probs == true) & lower).sum(axis=1)  # (items,)
        out.append(((rank == 0).mean(), (rank < 5).mean()))
    return Headline(items=len(labels), top1=(float(out[0][0]), float(out[1][0])),
                    top5=(float(out[0][1]), float(out[1][1])))


# Columns of runs_table, each a key of PairedSignificance.to_dict().
RUN_COLUMNS = ("top1_baseline", "top1_kpsem", "top1_difference", "ci_low", "ci_high", "fixed", "broken", "mcnemar_p",
               "mean_class_baseline", "mean_class_kpsem")


def runs_table(results: Sequence[PairedSignificance], labels: Sequence[str]) -> pd.DataFrame:
    """One row per run: which tables, both models' top-1, the difference with its bootstrap interval, the
    discordant counts and McNemar p, both mean class accuracies."""
    if len(results) != len(labels):
        raise ValueError(f"one label per run: {len(results)} runs, {len(labels)} labels")
    frame = pd.DataFrame([result.to_dict() for result in results], columns=list(RUN_COLUMNS))
    frame.insert(0, "tables", list(labels))
    frame.insert(0, "run", range(1, len(results) + 1))
    return frame


def classes_where(per_class: pd.DataFrame, view: str, margin: float) -> pd.DataFrame:
    """The rows of :func:`kpsem.explain.compare.per_class_accuracy` where KPSEM ``view`` ("wins" or "loses") by at
    least ``margin`` (a share); losses with the largest first."""
    if view == "wins":
        return per_class[(per_class["difference"] > 0) & (per_class["difference"] >= margin)]
    shown = per_class[(per_class["difference"] < 0) & (per_class["difference"] <= -margin)]
    return shown.sort_values(["difference", "class_index"], kind="stable")


def confusion_matrices(compared) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001 - ComparedPredictions
    """Both models' confusion matrices (true class by row) on the aligned items."""
    from kpsem.explain.compare import confusion_matrix

    labels = compared.items["true_label"].to_numpy()
    n = len(compared.class_names)
    base, ours = (confusion_matrix(labels, compared.items[c].to_numpy(), n) for c in ("baseline_pred", "kpsem_pred"))
    return base, ours


def confusion_cell(items: pd.DataFrame, model: str, true_class: str, predicted_class: str) -> pd.DataFrame:
    """The items of one cell of ``model``'s ("baseline" or "kpsem") confusion matrix."""
    return items[(items["true_class"] == true_class) & (items[f"{model}_class"] == predicted_class)]
