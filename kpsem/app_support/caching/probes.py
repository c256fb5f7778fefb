"""Motion probes for the app: a split's probe table read (or computed and written), and one clip's probes for
each model, cached. The probes themselves are :mod:`kpsem.probes`; nothing here runs a model except through it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import streamlit as st

from kpsem.app_support.caching import services
from kpsem.app_support.choices.selection import Selection
from kpsem.app_support.choices.sources import FileKey
from kpsem.app_support.choices.stored_results import StoredTable
from kpsem.probes import PROBES, ProbeResult

__all__ = ["read_probe_table", "compute_probes", "clip_rows"]


@st.cache_data(max_entries=16, show_spinner=False)
def read_probe_table(key: FileKey) -> ProbeResult:
    """A table written by ``python -m kpsem probe`` or by :func:`compute_probes` (raises ProbeError)."""
    from kpsem.probes import read_probes

    return read_probes(Path(key[0]))


def compute_probes(chosen: Selection, source: StoredTable, progress: Callable[[str, int, int], None]) -> ProbeResult:
    """Every probe on the sidebar's two models and data split, written to ``source.path`` when done."""
    from kpsem.probes import probe_index, write_probes

    models = [(slot.model, slot.info, slot.model_id) for slot in (chosen.baseline, chosen.kpsem)]
    result = probe_index(models, chosen.data.index, probes=PROBES, clips=source.clips, progress=progress,
                         lock=services.MODEL_LOCK, precision=chosen.precision)
    for slot in (chosen.baseline, chosen.kpsem):
        result.models[slot.model_id]["checkpoint"] = str(slot.key[0])
    write_probes(result, source.path)
    return result


@st.cache_data(max_entries=64, show_spinner=False)
def clip_rows(model: FileKey, device: str, clip: FileKey, frames: int, size: int, mean: tuple[float, ...],
              std: tuple[float, ...], true_label: int | None, name: str, precision: str) -> pd.DataFrame:
    """One model's predictions on one clip under every probe (cached per model, clip, label and precision)."""
    from kpsem.probes import probe_clip

    loaded = services.load_model(model, device)
    sample = services.clip_sample(clip, frames, size, mean, std)
    with services.MODEL_LOCK:
        return probe_clip(loaded.model, sample.clips[:1], class_names=loaded.info.class_names, true_label=true_label,
                          model_id=name, arch=loaded.info.arch, precision=precision)
