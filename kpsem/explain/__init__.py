"""Explanations and paper figures: Grad-CAM for 3-D models, per-clip analyses, drawing, figures.

Computing (:mod:`.gradcam`, :mod:`.analysis`, :mod:`.compare`) is kept apart from drawing
(:mod:`.draw`, :mod:`.figures`), so the Streamlit app and the paper figures share one set of numbers.

The names below are imported on first use (PEP 562): importing a light submodule such as
:mod:`.compare` must not pull in grad-cam, torchvision and scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {  # name -> submodule that defines it
    "ClipAnalysis": "analysis", "PairAnalysis": "analysis", "TopK": "analysis", "analyse_clip": "analysis",
    "analyse_pair": "analysis", "CAMResult": "gradcam", "VideoGradCAM": "gradcam",
}
__all__ = list(_HOMES)


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"kpsem.explain.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'kpsem.explain' has no attribute {name!r}")
