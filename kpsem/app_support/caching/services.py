"""The app's caches around the library: models, data set indexes, clips, analyses, costs, tables.

* Models (``st.cache_resource``): one per (checkpoint file, device), shared by all sessions. They are
  only used under :data:`MODEL_LOCK`, so two sessions never run Grad-CAM hooks on one model at once
  (:class:`kpsem.explain.gradcam.VideoGradCAM` adds hooks for one call and always removes them).
* Clips and analyses (``st.cache_resource``, read-only by convention): keyed on file keys (path,
  size, mtime) and every setting that changes the numbers, so moving the frame slider or changing
  how things are drawn never recomputes a model. :func:`analyse` also says whether it computed.
* Data set indexes (``st.cache_resource``, read-only by convention, keyed on the root's mtime).
* Layouts and costs (``st.cache_data``): small, plain data. Predictions tables
  (``st.cache_resource``, read-only by convention): a Kinetics-sized one is too big to copy per rerun.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st
import torch

from kpsem.app_support.choices.config import DEMO, DemoPaths
from kpsem.app_support.choices.sources import FileKey, ModelKey

ClipKey = FileKey | tuple[str, int, int, int]  # a video's FileKey, plus the first frame of a chosen window

if TYPE_CHECKING:  # pandas only for the class comparison's tables: the Explorer never loads it from here
    import pandas as pd

__all__ = [
    "MODEL_LOCK",
    "AnalysisRun",
    "demo_paths",
    "load_model",
    "detect_data_layout",
    "open_data",
    "ClipKey",
    "clip_sample",
    "analyse",
    "model_cost_cached",
    "read_table",
]

MODEL_LOCK = threading.RLock()  # held around every use of a cached model
_local = threading.local()  # per-thread flag: did the last analyse() call compute?


def demo_paths() -> DemoPaths:
    """The bundled demo (assets/demo); whether its files are there is checked where they are chosen."""
    return DEMO


@st.cache_resource(max_entries=8, show_spinner=False)
def _load_file(key: FileKey, device: str):  # noqa: ANN202 - kpsem.checkpoint.LoadedCheckpoint
    """The model a checkpoint file describes, on ``device``, in eval mode (raises CheckpointError)."""
    from kpsem.checkpoint import CheckpointError, load_checkpoint

    try:
        return load_checkpoint(key[0], map_location=device)
    except CheckpointError:
        raise
    except Exception as error:  # noqa: BLE001 - e.g. IndexError from torch.load on arbitrary bytes
        raise CheckpointError(
            f"checkpoint {key[0]} is truncated or not a PyTorch file ({type(error).__name__} while reading it); "
            "re-download or re-save it") from None


def load_model(key: ModelKey, device: str):  # noqa: ANN201 - kpsem.checkpoint.LoadedCheckpoint
    """The model of a checkpoint key, with the class names the key carries when the user loaded a file of them.

    Why a copy of the metadata and not of the model: one model per file and device serves every session
    (and every names file); the names travel in the key, so each cache keyed on it shows the right ones."""
    loaded = _load_file(tuple(key[:3]), device)
    if len(key) < 4:
        return loaded
    from kpsem.app_support.choices.sources import names_for_model

    names = names_for_model(list(key[3]), loaded.info.num_classes, filename="the class names file")
    info = dataclasses.replace(loaded.info, class_names=names)
    return dataclasses.replace(loaded, info=info)


@st.cache_data(max_entries=32, show_spinner=False, ttl=600)
def detect_data_layout(root: str, stamp: int, roots: tuple[str, ...] | None = None) -> str:
    """The layout of a data set root (``stamp``: the root's mtime); scanning it on every rerun costs.
    ``roots``: the server's browse roots, outside which nothing is looked at (None: no limit)."""
    from kpsem.data.datasets import confined_to, detect_layout

    with confined_to(roots):
        return detect_layout(root)


@st.cache_resource(max_entries=32, show_spinner=False, ttl=600)
def open_data(root: str, layout: str | None, split: str, split_id: int, stamp: int,  # noqa: ANN201 - DatasetIndex
              roots: tuple[str, ...] | None = None):
    """The index of one split (``stamp``: the root's mtime, so new annotation files are seen). ``roots``:
    the server's browse roots; entries leading outside them are skipped, never opened (None: no limit).

    A resource, read-only by convention: ``st.cache_data`` would unpickle thousands of records on every rerun.
    """
    from kpsem.data.datasets import confined_to, open_dataset

    with confined_to(roots):
        return open_dataset(root, split=split, layout=layout, split_id=split_id)


@st.cache_resource(max_entries=16, show_spinner=False)
def clip_sample(key: ClipKey, frames: int, size: int, mean: tuple[float, ...], std: tuple[float, ...]):  # noqa: ANN201
    """Test-time clip of a video (:class:`kpsem.data.ClipSample`); raises VideoError.

    A key with a fourth item is the window that starts at that video frame (chosen in a long video); a
    plain file key, MFNet's test clip from the middle. Every cache keyed on the clip's key (analyses,
    faithfulness, probes) then follows the window."""
    from kpsem.data import load_clip

    return load_clip(key[0], frames=frames, size=size, mean=mean, std=std, start=key[3] if len(key) > 3 else None)


@dataclass
class AnalysisRun:
    """A pair analysis and how it was made."""

    pair: object  # kpsem.explain.analysis.PairAnalysis (read-only: shared between sessions)
    seconds: float  # wall time of the two analyses
    device: str  # where they ran
    precision: str = "fp32"  # what ran and why (kpsem.precision.Precision.describe)


@st.cache_resource(max_entries=24, show_spinner=False)
def _analyse(baseline: ModelKey, kpsem: ModelKey, device: str, clip: FileKey, frames: int, size: int,
             mean: tuple[float, ...], std: tuple[float, ...], cam_layer: str, target: int | None,
             weighting: str, precision: str = "fp32") -> AnalysisRun:
    from kpsem.explain.analysis import analyse_pair
    from kpsem.precision import resolve_precision

    base, ours = load_model(baseline, device), load_model(kpsem, device)
    sample = clip_sample(clip, frames, size, mean, std)
    resolved = resolve_precision(device, precision)
    with MODEL_LOCK, resolved.autocast():
        started = time.perf_counter()
        pair = analyse_pair(base.model, ours.model, sample.clips[:1].to(device), cam_layer=cam_layer, target=target,
                            weighting=weighting, class_names=base.info.class_names,
                            kpsem_class_names=ours.info.class_names)
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - started
    _local.fresh = True
    return AnalysisRun(pair=pair, seconds=seconds, device=device, precision=resolved.describe())


def analyse(baseline: ModelKey, kpsem: ModelKey, device: str, clip: FileKey, *, frames: int, size: int,
            mean: tuple[float, ...], std: tuple[float, ...], cam_layer: str, target: int | None,
            weighting: str, precision: str = "fp32") -> tuple[AnalysisRun, bool]:
    """Both models on one clip, cached; returns (result, whether it was computed by this call).

    ``precision``: fp32 (the default, exact), bf16, fp16 or auto (:mod:`kpsem.precision`); the pages pass
    the sidebar's choice."""
    _local.fresh = False
    run = _analyse(baseline, kpsem, device, clip, frames, size, tuple(mean), tuple(std), cam_layer, target, weighting,
                   precision)
    return run, bool(getattr(_local, "fresh", False))


@st.cache_data(max_entries=16, show_spinner="Counting parameters and multiply-adds ...")
def model_cost_cached(key: ModelKey, device: str, name: str, clip: tuple[int, int, int]):  # noqa: ANN201 - ModelCost
    """Table 1 numbers of a loaded checkpoint (:func:`kpsem.profile.model_cost`)."""
    from kpsem.profile import model_cost

    loaded = load_model(key, device)
    with MODEL_LOCK:
        return model_cost(loaded.model, name=name, clip=clip)


@st.cache_resource(max_entries=16, show_spinner=False)
def read_table(key: FileKey) -> pd.DataFrame:
    """A predictions table written by ``python -m kpsem evaluate`` (raises PredictionsError).

    A resource, read-only by convention: ``st.cache_data`` unpickled a copy on every rerun, 0.4 s for a
    table of 20k videos x 400 classes, each time a slider moved."""
    from kpsem.evaluate import read_predictions

    return read_predictions(Path(key[0]))
