"""Data: decoding, data set layouts, MFNet sampling and transforms, clips, and the synthetic demo set."""

from kpsem.data.clips import FLIP_MODES, PROTOCOLS, ClipDataset, ClipSample, EvalProtocol, eval_protocol, load_clip
from kpsem.data.datasets import (
    LAYOUTS,
    SPLITS,
    AnnotationError,
    DatasetIndex,
    VideoRecord,
    detect_layout,
    open_dataset,
)
from kpsem.data.sampling import KINETICS_INTERVALS, sample_indices
from kpsem.data.synth import SynthConfig, SynthSummary, generate, write_video
from kpsem.data.transforms import ClipTransform, TransformedClip, denormalise, mirrored_labels, normalise
from kpsem.data.video import ShortVideoError, VideoError, VideoInfo, probe_video, read_frames

__all__ = [
    "AnnotationError",
    "FLIP_MODES",
    "ClipDataset",
    "ClipSample",
    "ClipTransform",
    "EvalProtocol",
    "DatasetIndex",
    "KINETICS_INTERVALS",
    "PROTOCOLS",
    "LAYOUTS",
    "SPLITS",
    "ShortVideoError",
    "SynthConfig",
    "SynthSummary",
    "TransformedClip",
    "VideoError",
    "VideoInfo",
    "VideoRecord",
    "denormalise",
    "detect_layout",
    "eval_protocol",
    "generate",
    "load_clip",
    "mirrored_labels",
    "normalise",
    "open_dataset",
    "probe_video",
    "read_frames",
    "sample_indices",
    "write_video",
]
