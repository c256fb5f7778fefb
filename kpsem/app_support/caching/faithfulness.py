"""Faithfulness for the Explorer: both models' deletion and insertion curves on one clip, cached.

The curves are :func:`kpsem.explain.faithfulness.pair_faithfulness` on the pair the Explorer already analysed
for the common target (:func:`kpsem.explain.analysis.common_target`); this module caches them and runs no
model except through the library.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import streamlit as st

from kpsem.app_support.caching import services
from kpsem.app_support.choices.sources import FileKey
from kpsem.explain.analysis import CommonTarget, PairAnalysis
from kpsem.explain.faithfulness import PairFaithfulness

__all__ = ["FaithfulnessRun", "pair_curves"]


@dataclass
class FaithfulnessRun:
    """Both models' curves on one clip, and how long they took."""

    result: PairFaithfulness  # read-only: shared between sessions
    seconds: float  # wall time of the batched forwards
    device: str
    precision: str  # what ran and why (kpsem.precision.Precision.describe)


@st.cache_resource(max_entries=16, show_spinner=False)
def pair_curves(baseline: FileKey, kpsem: FileKey, device: str, clip: FileKey, frames: int, size: int,
                mean: tuple[float, ...], std: tuple[float, ...], cam_layer: str, weighting: str, target: int,
                reason: str, steps: int, precision: str = "fp32") -> FaithfulnessRun:
    """Curves of both models for ``target`` on the cached pair analysed for that target (one CAM each).

    The page chose the target by :func:`~kpsem.explain.analysis.common_target`; its index and reason
    come here as plain values (cache keys) and travel with the curves. ``precision`` is the sidebar's, as in
    the explorer's analysis the target came from."""
    from kpsem.explain.faithfulness import pair_faithfulness
    from kpsem.precision import resolve_precision

    run, _ = services.analyse(baseline, kpsem, device, clip, frames=frames, size=size, mean=mean, std=std,
                              cam_layer=cam_layer, target=target, weighting=weighting, precision=precision)
    pair: PairAnalysis = run.pair  # type: ignore[assignment]
    common = CommonTarget(index=target, reason=reason, class_names=tuple(pair.baseline.class_names),  # type: ignore[arg-type]
                          predictions=(pair.baseline.prediction, pair.kpsem.prediction),
                          model_names=(pair.baseline.model_name, pair.kpsem.model_name))
    base, ours = services.load_model(baseline, device), services.load_model(kpsem, device)
    sample = services.clip_sample(clip, frames, size, mean, std)
    resolved = resolve_precision(device, precision)
    with services.MODEL_LOCK, resolved.autocast():
        started = time.perf_counter()
        result = pair_faithfulness(base.model, ours.model, sample.clips[:1].to(device), pair, common, steps=steps)
        seconds = time.perf_counter() - started
    return FaithfulnessRun(result=result, seconds=seconds, device=device, precision=resolved.describe())
