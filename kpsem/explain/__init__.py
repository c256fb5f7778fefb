"""Explanations and paper figures: Grad-CAM for 3-D models, per-clip analyses, drawing, figures.

Computing (:mod:`.gradcam`, :mod:`.analysis`, :mod:`.compare`) is kept apart from drawing
(:mod:`.draw`, :mod:`.figures`), so the Streamlit app and the paper figures share one set of numbers.
"""

from kpsem.explain.analysis import ClipAnalysis, PairAnalysis, TopK, analyse_clip, analyse_pair
from kpsem.explain.gradcam import CAMResult, VideoGradCAM

__all__ = ["ClipAnalysis", "PairAnalysis", "TopK", "analyse_clip", "analyse_pair", "CAMResult", "VideoGradCAM"]
