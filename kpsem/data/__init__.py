"""Data: decoding, data set layouts, MFNet sampling and transforms, clips, and the synthetic demo set.

The names below are imported on first use (PEP 562): ``kpsem synth --help`` and the modules that need
only decoding or data set layouts do not pay for torch, which clips and transforms import.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {  # name -> the module that defines it
    "AnnotationError": "kpsem.data.datasets",
    "ClipDataset": "kpsem.data.clips",
    "ClipSample": "kpsem.data.clips",
    "ClipTransform": "kpsem.data.transforms",
    "DatasetIndex": "kpsem.data.datasets",
    "EvalProtocol": "kpsem.data.clips",
    "FLIP_MODES": "kpsem.data.clips",
    "KINETICS_INTERVALS": "kpsem.data.sampling",
    "LAYOUTS": "kpsem.data.datasets",
    "PROTOCOLS": "kpsem.data.clips",
    "SPLITS": "kpsem.data.datasets",
    "ShortVideoError": "kpsem.data.video",
    "SynthConfig": "kpsem.data.synth",
    "SynthSummary": "kpsem.data.synth",
    "TransformedClip": "kpsem.data.transforms",
    "VideoError": "kpsem.data.video",
    "VideoInfo": "kpsem.data.video",
    "VideoRecord": "kpsem.data.datasets",
    "denormalise": "kpsem.data.transforms",
    "detect_layout": "kpsem.data.datasets",
    "eval_protocol": "kpsem.data.clips",
    "generate": "kpsem.data.synth",
    "load_clip": "kpsem.data.clips",
    "mirrored_labels": "kpsem.data.transforms",
    "normalise": "kpsem.data.transforms",
    "open_dataset": "kpsem.data.datasets",
    "probe_video": "kpsem.data.video",
    "read_frames": "kpsem.data.video",
    "sample_indices": "kpsem.data.sampling",
    "write_video": "kpsem.data.synth",
}

__all__ = [*_HOMES]


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'kpsem.data' has no attribute {name!r}")
