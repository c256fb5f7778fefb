"""One analysis per clip and model: probabilities, top-k, Grad-CAM and (MF-KPSEM) KPSEM's internals.

Everything comes from a single forward pass and a single backward pass to the CAM layer per model
(:class:`~kpsem.explain.gradcam.VideoGradCAM`); drawing lives in :mod:`kpsem.explain.draw`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import nn

from kpsem.constants import placeholder_class_names
from kpsem.models import has_kpsem
from kpsem.models.kpsem_module import KPSEMInternals, normalised_to_pixels

if TYPE_CHECKING:
    from kpsem.explain.gradcam import Weighting

# kpsem.explain.gradcam (grad-cam, which loads torchvision, scikit-learn and SciPy: about 2.5 s) is imported
# where a CAM is computed, not here: the app's pages, the figures and explain's early steps need these types
# and helpers without it, and explain imports it on a thread while the checkpoints load.

__all__ = [
    "TopK",
    "ClipAnalysis",
    "PairAnalysis",
    "CommonTarget",
    "common_target",
    "analyse_clip",
    "analyse_pair",
    "combine_pair",
    "model_label",
    "feature_frame_of",
    "crop_to_original",
    "internals_to_pixels",
    "clip_to_display",
    "CentreMovement",
    "centre_movement",
    "movement_summary",
    "keypoint_density",
]


@dataclass
class TopK:
    index: int  # class index
    name: str  # class name
    probability: float  # softmax probability


@dataclass
class ClipAnalysis:
    """What one model makes of one clip. Pixel coordinates are pixel centres of the S x S clip
    (the model's input crop, the same pixels as ``ClipSample.display``): x right, y down."""

    model_name: str  # label for figures, e.g. "MFNet" or "MF-KPSEM"
    class_names: list[str]  # one per class
    logits: np.ndarray  # (classes,)
    probs: np.ndarray  # (classes,) softmax
    topk: list[TopK]  # the k most probable classes, best first
    target: int  # class the CAM explains (default: the prediction)
    cam_layer: str  # layer the CAM was taken at
    weighting: Weighting  # "clip" (one weight per channel) or "slice" (per channel and time slice)
    cam_feature: np.ndarray  # (T', H', W') raw map at the layer's resolution
    cam_raw: np.ndarray  # (T, S, S) raw map (ReLU'd, unnormalised): comparable across models
    cam: np.ndarray  # (T, S, S) cam_raw / its maximum, in [0, 1]
    frame_to_feature: np.ndarray  # (T,) feature frame t' that each clip frame falls in
    has_kpsem: bool  # False for MFNet: then everything below is None
    internals: KPSEMInternals | None = None  # (N=1, ...) detached, CPU, normalised coordinates
    centres_px: np.ndarray | None = None  # (G, T', 2) separation centres in pixels
    key_points_px: np.ndarray | None = None  # (G, K, C, T', 2) key points in pixels
    shifts_px: np.ndarray | None = None  # (G, K, C, T'-1, 2) shifts S (eq. 10) as pixel displacements

    @property
    def prediction(self) -> int:
        return int(self.probs.argmax())

    @property
    def num_frames(self) -> int:
        return int(self.cam.shape[0])

    @property
    def size(self) -> int:
        return int(self.cam.shape[-1])

    def summary(self) -> dict:
        """Plain data for JSON: model, target, top-k, and whether key points exist."""
        return {
            "model": self.model_name,
            "prediction": self.prediction,
            "prediction_name": self.class_names[self.prediction],
            "target": self.target,
            "cam_layer": self.cam_layer,
            "weighting": self.weighting,
            "topk": [{"index": t.index, "name": t.name, "probability": t.probability} for t in self.topk],
            "has_kpsem": self.has_kpsem,
        }


@dataclass
class PairAnalysis:
    """Baseline and MF-KPSEM on the same clip, with one colour scale for both CAMs."""

    baseline: ClipAnalysis
    kpsem: ClipAnalysis
    shared_scale: float  # max of both raw CAMs: divide raw maps by it to share one colour bar
    baseline_shared: np.ndarray  # (T, S, S) baseline cam_raw / shared_scale, in [0, 1]
    kpsem_shared: np.ndarray  # (T, S, S) kpsem cam_raw / shared_scale, in [0, 1]
    # A difference of two CAMs means something only for one class: both are None when the two CAMs
    # explain different classes (each model's own prediction, and the predictions differ).
    difference: np.ndarray | None  # (T, S, S) baseline_shared - kpsem_shared, in [-1, 1]
    difference_normalised: np.ndarray | None  # (T, S, S) baseline.cam - kpsem.cam (each own maximum), in [-1, 1]

    @property
    def same_target(self) -> bool:
        """Whether both CAMs explain one class (only then are the difference maps set)."""
        return self.baseline.target == self.kpsem.target


TargetReason = Literal["true class", "chosen", "most probable"]


@dataclass(frozen=True)
class CommonTarget:
    """The one class a comparison of two models' explanations is made for, and why that class."""

    index: int  # class index both CAMs explain
    reason: TargetReason  # "true class" (known label), "chosen" (by the user), "most probable" (the default)
    class_names: tuple[str, ...]  # one per class
    predictions: tuple[int, int]  # each model's own top-1 (baseline, KPSEM)
    model_names: tuple[str, str]  # (baseline, KPSEM) labels

    @property
    def name(self) -> str:
        return self.class_names[self.index]

    @property
    def predictions_differ(self) -> bool:
        return self.predictions[0] != self.predictions[1]

    def explains(self, pair: PairAnalysis) -> bool:
        """Whether both CAMs of ``pair`` already explain this class (no second analysis needed)."""
        return pair.baseline.target == pair.kpsem.target == self.index

    def message(self, what: str = "difference") -> str:
        """One line for the screen and the sidecar, e.g. "difference for the true class 'hop_cw';
        MFNet predicts hop_ccw, MF-KPSEM hop_cw"."""
        if self.reason == "true class":
            head = f"{what} for the true class {self.name!r}"
        elif self.reason == "chosen":
            head = f"{what} for the chosen class {self.name!r}"
        else:
            head = (f"{what} for {self.name!r}, the class the two models together find most probable "
                    "(no true class given; choose a class to change it)")
        names, preds = self.model_names, [self.class_names[p] for p in self.predictions]
        if self.predictions_differ:
            return f"{head}; {names[0]} predicts {preds[0]}, {names[1]} {preds[1]}"
        return f"{head}; both models predict {preds[0]}"

    def as_dict(self) -> dict:
        """Plain data for JSON sidecars and summaries."""
        return {"index": self.index, "name": self.name, "reason": self.reason,
                "predictions": {n: self.class_names[p] for n, p in zip(self.model_names, self.predictions)},
                "predictions_differ": self.predictions_differ, "message": self.message()}


def common_target(
    baseline_probs: np.ndarray,
    kpsem_probs: np.ndarray,
    class_names: Sequence[str],
    *,
    true_label: int | None = None,
    chosen: int | None = None,
    model_names: tuple[str, str] = ("MFNet", "MF-KPSEM"),
) -> CommonTarget:
    """The class two models' explanations are compared for: the true class when it is known, else the
    class the user chose, else the class with the highest mean of the two models' probabilities.

    Why that default: it is symmetric (neither model's prediction is preferred), and when both models
    predict one class it is that class."""
    first, second = np.asarray(baseline_probs, dtype=np.float64), np.asarray(kpsem_probs, dtype=np.float64)
    names = tuple(class_names)
    if first.shape != second.shape or first.shape != (len(names),):
        raise ValueError(f"both models need one probability per class ({len(names)}); got {first.shape} and "
                         f"{second.shape}")
    for label, value in (("true_label", true_label), ("chosen", chosen)):
        if value is not None and not 0 <= int(value) < len(names):
            raise ValueError(f"{label} {value} is out of range for {len(names)} classes (0..{len(names) - 1})")
    reason: TargetReason
    if true_label is not None:
        index, reason = int(true_label), "true class"
    elif chosen is not None:
        index, reason = int(chosen), "chosen"
    else:
        index, reason = int(np.argmax(first + second)), "most probable"
    return CommonTarget(index=index, reason=reason, class_names=names,
                        predictions=(int(first.argmax()), int(second.argmax())), model_names=model_names)


def model_label(model: nn.Module) -> str:
    """The paper's name for a model (MFNet, MF-KPSEM, R3D-50, ...), as its class says."""
    return str(getattr(model, "display_name", type(model).__name__))


def feature_frame_of(num_frames: int, feature_frames: int) -> np.ndarray:
    """(T,) index of the feature frame each clip frame belongs to: t' = floor(t * T' / T).

    MFNet's one temporal stride (kernel 3, stride 2, padding 1) centres feature frame t' on clip frame
    2t', so for T = 16, T' = 8 frames 2t' and 2t'+1 show feature frame t'."""
    return np.minimum(np.arange(num_frames) * feature_frames // num_frames, feature_frames - 1)


def crop_to_original(points: np.ndarray, crop_box: Sequence[float], resize_scale: float) -> np.ndarray:
    """Map pixel-centre (x, y) in the model's crop back to the original video frame.

    ``crop_box`` = (top, left, height, width) of the crop in the resized frame and ``resize_scale`` =
    resized / original pixels, as :class:`kpsem.data.ClipSample` reports them."""
    points = np.asarray(points, dtype=np.float64)
    offset = np.array([crop_box[1], crop_box[0]], dtype=np.float64)  # (left, top) as (x, y)
    return (points + 0.5 + offset) / resize_scale - 0.5


def clip_to_display(clip: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Undo the normalisation of one clip: (1, 3, T, S, S) or (3, T, S, S) -> uint8 (T, S, S, 3).

    For tensors that arrive without ``ClipSample.display`` (tests, uploads of tensors)."""
    frames = clip[0] if clip.dim() == 5 else clip
    mean_t = torch.as_tensor(mean, dtype=frames.dtype).view(3, 1, 1, 1)
    std_t = torch.as_tensor(std, dtype=frames.dtype).view(3, 1, 1, 1)
    rgb = (frames.detach().cpu() * std_t + mean_t).clamp(0, 1)  # (3, T, S, S) in [0, 1]
    return (rgb.permute(1, 2, 3, 0) * 255).round().to(torch.uint8).numpy()


def internals_to_pixels(
    internals: KPSEMInternals, size: int, index: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clip ``index`` of the batch in pixels of the S x S crop: centres (G, T', 2), key points
    (G, K, C, T', 2) and shifts (G, K, C, T'-1, 2). MFNet's strides tile the frame exactly, so the
    feature map's normalised coordinates are the crop's (:func:`~kpsem.models.kpsem_module.normalised_to_pixels`)."""
    centres = normalised_to_pixels(internals.centres[index], size, size).numpy()
    key_points = normalised_to_pixels(internals.key_points[index], size, size).numpy()
    shifts = (internals.shifts[index] * (size / 2)).numpy()  # a displacement: scaled, with no -0.5 offset
    return centres, key_points, shifts


def _check_clip(model: nn.Module, clip: torch.Tensor) -> None:
    if not isinstance(clip, torch.Tensor) or clip.dim() != 5 or clip.shape[0] != 1 or clip.shape[1] != 3:
        shape = tuple(clip.shape) if isinstance(clip, torch.Tensor) else type(clip).__name__
        raise ValueError(f"analyse_clip takes one clip of shape (1, 3, T, S, S), e.g. (1, 3, 16, "
                         f"224, 224); got {shape}")
    if clip.shape[3] != clip.shape[4]:
        raise ValueError(f"analyse_clip takes square clips (S x S crops); got {clip.shape[3]}x{clip.shape[4]}")
    config = model.kpsem_config if has_kpsem(model) else None
    if config is not None and clip.shape[2] != config.num_frames:
        raise ValueError(
            f"clip has {clip.shape[2]} frames but this MF-KPSEM needs exactly {config.num_frames} "
            "(its temporal feature is sized for them); sample the clip with that many frames"
        )


def analyse_clip(
    model: nn.Module,
    clip: torch.Tensor,
    *,
    cam_layer: str = "tail",
    target: int | None = None,
    weighting: Weighting = "clip",
    topk: int = 5,
    class_names: Sequence[str] | None = None,
    name: str | None = None,
) -> ClipAnalysis:
    """Analyse one clip (1, 3, T, S, S), already normalised, with one forward and one backward pass.

    ``target`` is the class the CAM explains (default: the prediction). A model without KPSEM gives
    ``has_kpsem=False`` and no key points; it never fails for that reason.
    """
    from kpsem.explain.gradcam import VideoGradCAM

    _check_clip(model, clip)
    device = next(model.parameters()).device
    with VideoGradCAM(model, layer=cam_layer, weighting=weighting) as explainer:
        result = explainer.explain(clip.to(device), None if target is None else [target])
    from kpsem.checkpoint import check_finite_logits

    check_finite_logits(result.logits, model=name or model_label(model))  # a softmax of NaN is no result to show
    logits = result.logits[0].double()
    num_classes = logits.numel()
    names = list(class_names) if class_names is not None else placeholder_class_names(num_classes)
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for a model with {num_classes} classes")
    probs = torch.softmax(logits, dim=0).numpy()
    order = np.argsort(-probs, kind="stable")[: max(1, min(topk, num_classes))]
    size = clip.shape[-1]
    analysis = ClipAnalysis(
        model_name=name or model_label(model),
        class_names=names,
        logits=logits.numpy(),
        probs=probs,
        topk=[TopK(int(i), names[i], float(probs[i])) for i in order],
        target=result.targets[0],
        cam_layer=cam_layer,
        weighting=weighting,
        cam_feature=result.cam_feature[0],
        cam_raw=result.cam_raw[0],
        cam=result.cam[0],
        frame_to_feature=feature_frame_of(clip.shape[2], result.cam_feature.shape[1]),
        has_kpsem=result.internals is not None,
    )
    internals = result.internals
    if internals is not None:
        analysis.internals = internals
        analysis.frame_to_feature = feature_frame_of(clip.shape[2], internals.centres.shape[2])
        analysis.centres_px, analysis.key_points_px, analysis.shifts_px = internals_to_pixels(internals, size)
    return analysis


def analyse_pair(
    baseline: nn.Module,
    kpsem_model: nn.Module,
    clip: torch.Tensor,
    *,
    cam_layer: str = "tail",
    target: int | None = None,
    weighting: Weighting = "clip",
    topk: int = 5,
    class_names: Sequence[str] | None = None,
    kpsem_class_names: Sequence[str] | None = None,
) -> PairAnalysis:
    """Both models on one clip, with a shared colour scale and a baseline-minus-KPSEM difference map.

    ``target`` (default: each model's own prediction) is explained by both CAMs; the difference maps are
    set only when both CAMs explain one class (see :func:`common_target` for choosing that class)."""
    first = analyse_clip(baseline, clip, cam_layer=cam_layer, target=target, weighting=weighting, topk=topk,
                         class_names=class_names)
    second = analyse_clip(kpsem_model, clip, cam_layer=cam_layer, target=target, weighting=weighting, topk=topk,
                          class_names=kpsem_class_names if kpsem_class_names is not None else class_names)
    if first.model_name == second.model_name:  # two checkpoints of one architecture: keep them apart
        first.model_name, second.model_name = f"{first.model_name} (baseline)", f"{second.model_name} (compared)"
    return combine_pair(first, second)


def combine_pair(first: ClipAnalysis, second: ClipAnalysis) -> PairAnalysis:
    """Two analyses of one clip as a pair: the shared colour scale and, when both CAMs explain one class,
    the difference maps. Why apart from :func:`analyse_pair`: a pair for another target can reuse the
    analysis of a model whose CAM already explains it, instead of running that model again."""
    from kpsem.explain.gradcam import normalise_cam

    scale = float(max(first.cam_raw.max(), second.cam_raw.max()))
    base_shared, kpsem_shared = normalise_cam(first.cam_raw, scale), normalise_cam(second.cam_raw, scale)
    return PairAnalysis(
        baseline=first,
        kpsem=second,
        shared_scale=scale,
        baseline_shared=base_shared,
        kpsem_shared=kpsem_shared,
        difference=base_shared - kpsem_shared if first.target == second.target else None,
        difference_normalised=first.cam - second.cam if first.target == second.target else None,
    )


# --- views drawn from KPSEM's own internals: where the centres go, where the key points gather ---------


@dataclass(frozen=True)
class CentreMovement:
    """How far one set's separation centre travels over a clip, in feature cells and in input pixels."""

    set_index: int  # AReSE set g
    span_cells: float  # largest distance between two of the set's centres in the clip, feature cells
    span_px: float  # the same, in pixels of the model's input crop
    path_cells: float  # length of the centre's path, feature frame to feature frame, feature cells
    path_px: float  # the same, in input pixels
    mean_px: tuple[float, float]  # the centre's mean (x, y) over the clip, input pixels

    def moves(self, threshold_px: float = 1.0) -> bool:
        """Whether the centre moves at least ``threshold_px`` input pixels (its span) over the clip."""
        return self.span_px >= threshold_px


def _span(points: np.ndarray) -> float:
    """Largest distance between two of the (T, 2) points (T is a handful of feature frames)."""
    gaps = points[:, None, :] - points[None, :, :]  # (T, T, 2)
    return float(np.sqrt((gaps**2).sum(-1)).max()) if len(points) else 0.0


def centre_movement(internals: KPSEMInternals, size: int, *, index: int = 0) -> list[CentreMovement]:
    """Per set, how far the separation centre (eq. 5) moves over clip ``index``: its span (the farthest two
    of its centres) and its path length, in feature cells and in pixels of the S x S input crop (``size``).

    Why both units: the module decides on the feature map (a cell of a 14 x 14 map is 16 input pixels at
    224), while a reader judges the drawing in pixels; a centre that moves a tenth of a cell looks frozen."""
    if size < 1:
        raise ValueError(f"size is the input crop's side in pixels; got {size}")
    height, width = internals.feature_size
    centres = internals.centres[index].double().numpy()  # (G, T, 2) normalised (x, y)
    half = np.array([width / 2, height / 2])  # normalised -> feature cells, per axis
    movements = []
    for g, track in enumerate(centres):
        cells, pixels = track * half, track * (size / 2)  # (T, 2): an offset does not change a distance
        steps_cells, steps_px = np.diff(cells, axis=0), np.diff(pixels, axis=0)  # (T-1, 2)
        mean = (track.mean(axis=0) + 1) * (size / 2) - 0.5  # pixel centres, as normalised_to_pixels
        movements.append(CentreMovement(
            set_index=g, span_cells=_span(cells), span_px=_span(pixels),
            path_cells=float(np.linalg.norm(steps_cells, axis=-1).sum()),
            path_px=float(np.linalg.norm(steps_px, axis=-1).sum()), mean_px=(float(mean[0]), float(mean[1]))))
    return movements


def movement_summary(movements: Sequence[CentreMovement], *, threshold_px: float = 1.0) -> str:
    """One sentence for the screen: which sets' centres move (and by how much), which stay put."""
    if not movements:
        return "no separation centres: this model has no KPSEM sets"
    moving = sorted((m for m in movements if m.moves(threshold_px)), key=lambda m: -m.span_px)
    still = [m.set_index for m in movements if not m.moves(threshold_px)]
    parts = [f"set {m.set_index} by {m.span_px:.1f} px ({m.span_cells:.2f} cells)" for m in moving]
    text = ("centres that move over the clip (farthest two positions): " + ", ".join(parts) if parts
            else f"no set's centre moves {threshold_px:g} px or more over the clip")
    if still and parts:
        names = ", ".join(str(g) for g in still)
        text += f"; set{'s' if len(still) > 1 else ''} {names} stay{'' if len(still) > 1 else 's'} within " \
                f"{threshold_px:g} px"
    return text


def keypoint_density(internals: KPSEMInternals, *, sets: Sequence[int] | None = None, index: int = 0) -> np.ndarray:
    """(T, H', W') how many key points (eq. 6-7) of clip ``index`` fall in each feature cell per feature
    frame, over every channel and region of the chosen ``sets`` (default all): where the module looks.
    Each frame sums to len(sets) * K * C. Key points sit on cell centres (an argmax position), so the
    count is exact, not binned."""
    num_sets = internals.centres.shape[1]
    chosen = list(range(num_sets)) if sets is None else [int(g) for g in sets]
    bad = [g for g in chosen if not 0 <= g < num_sets]
    if bad or not chosen:
        raise ValueError(f"sets {bad or chosen} do not exist; this model has sets 0..{num_sets - 1}")
    height, width = internals.feature_size
    points = internals.key_points[index, chosen].double().numpy()  # (g, K, C, T, 2) normalised
    frames = points.shape[3]
    cols = np.clip(np.rint((points[..., 0] + 1) * width / 2 - 0.5), 0, width - 1).astype(np.int64)  # (g, K, C, T)
    rows = np.clip(np.rint((points[..., 1] + 1) * height / 2 - 0.5), 0, height - 1).astype(np.int64)
    flat = (np.arange(frames) * height + rows) * width + cols  # (g, K, C, T): one bin per frame and cell
    counts = np.bincount(flat.reshape(-1), minlength=frames * height * width)
    return counts.reshape(frames, height, width).astype(np.float64)  # (T, H', W')
