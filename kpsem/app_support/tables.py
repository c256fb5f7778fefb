"""Which predictions tables belong to the current selection, the headline numbers of a comparison, and
the per-run table of a comparison over several runs.

For the sidebar's checkpoints and data split, a table is found (in this order) as the bundled demo's
own file, or in the disk cache written by :func:`kpsem.app_support.predictions.compute_predictions`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kpsem.app_support import services
from kpsem.app_support.predictions import cache_path
from kpsem.app_support.sources import file_key
from kpsem.explain.significance import PairedSignificance

__all__ = ["TableSource", "table_source", "headline", "RUN_COLUMNS", "runs_table"]


@dataclass
class TableSource:
    """Where one model's table is (or would be written), and whether it exists."""

    role: str  # "baseline" or "kpsem"
    path: Path  # the Parquet file
    bundled: bool  # the demo's own table
    clips: int  # clips per video it was (or will be) computed with

    @property
    def exists(self) -> bool:
        return self.path.is_file()

    def read(self):  # noqa: ANN201 - pandas.DataFrame
        return services.read_table(file_key(self.path))


def table_source(chosen, role: str, clips: int) -> TableSource:  # noqa: ANN001 - ui.Selection
    """The table of the ``role`` checkpoint on the sidebar's data split."""
    slot = chosen.baseline if role == "baseline" else chosen.kpsem
    demo = chosen.demo
    bundled = demo.predictions_baseline if role == "baseline" else demo.predictions_kpsem
    demo_model = demo.baseline if role == "baseline" else demo.kpsem
    if (slot.source == "bundled demo" and chosen.data.source == "bundled demo" and chosen.data.split == demo.split
            and Path(slot.key[0]) == demo_model and bundled.is_file()):
        return TableSource(role, bundled, True, 0)
    path = cache_path(chosen.settings.cache_dir, slot.key, chosen.data.key, clips)
    return TableSource(role, path, False, clips)


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


__all__ += ["Headline"]

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
