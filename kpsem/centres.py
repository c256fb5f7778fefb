"""How far KPSEM's separation centres move, and two training levers that ask them to move more.

The paper's argument for adaptive regions (Table 2b) rests on centres that follow each clip and frame, yet
the centres the project trains barely leave the geometric centre. :func:`centre_movement` measures, per
set, how far they move across clips and across the frames of a clip, in feature cells and input pixels;
:func:`centre_report` runs a checkpoint over a data set's clips to get them (``kpsem centres``).

The levers (``TrainConfig.centre_init_std`` and ``centre_spread_weight``): :func:`init_centre_mlp` draws the
centre MLP's last layer from a normal distribution instead of zeros, so the centres depend on the clip from
the first step; :func:`spread_penalty` is a loss term that rewards spread of the centres across the clips
of a batch and penalises centres near the bound, so that it cannot be won by pinning them to the edges.

Centres here are KPSEM's ``internals.centres`` (N, G, T, 2), normalised (``kpsem_module``'s convention):
for K = 4 the separation centre, for K = 9 and 16 the mean split position per axis.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kpsem.models import has_kpsem

__all__ = [
    "SPREAD_MARGIN",
    "SetMovement",
    "CentreReport",
    "centre_movement",
    "collect_centres",
    "centre_report",
    "format_report",
    "init_centre_mlp",
    "spread_penalty",
    "CentreSpread",
]

SPREAD_MARGIN = 0.5  # fraction of the allowed offset where spread_penalty's edge term starts
NEAR_BOUND = 0.95  # a coordinate at this fraction of its bound or beyond counts as "at the bound"


@dataclass
class SetMovement:
    """One set's centres over C clips x T feature frames; distances Euclidean, in cells and input pixels."""

    set_index: int
    offset_median_cells: float  # median distance of a centre from the geometric centre
    offset_max_cells: float
    clips_median_cells: float  # median distance of a clip's mean centre (over frames) from the mean over clips
    clips_max_cells: float
    clips_spread_cells: float  # root of the summed variances (x, y) of the clip means across clips
    frames_median_cells: float  # median distance of a frame's centre from its clip's mean centre
    frames_max_cells: float
    frames_spread_cells: float  # root of the summed variances across frames, averaged over clips
    near_bound: float  # fraction of coordinates at 95% of their bound or beyond
    cell_pixels: tuple[float, float]  # input pixels per feature cell (x, y): the factor to pixels

    def pixels(self, name: str) -> float:
        """A distance field in input pixels (a cell's side is ``cell_pixels``; cells are square here)."""
        return getattr(self, f"{name}_cells") * math.sqrt(self.cell_pixels[0] * self.cell_pixels[1])


@dataclass
class CentreReport:
    """What :func:`centre_report` measured, per set."""

    sets: list[SetMovement]
    clips: int  # clips read
    frames: int  # feature frames T per clip
    feature_size: tuple[int, int]  # (H, W) of the map KPSEM reads
    input_size: tuple[int, int]  # (H, W) of the clips
    source: dict[str, Any] = field(default_factory=dict)  # checkpoint, data, split, model settings

    def as_dict(self) -> dict[str, Any]:
        """Plain data (for ``--json``), with every distance also in pixels."""
        data = asdict(self)
        distances = ("offset_median", "offset_max", "clips_median", "clips_max", "clips_spread", "frames_median",
                     "frames_max", "frames_spread")
        for row, movement in zip(data["sets"], self.sets):
            row.update({f"{name}_pixels": movement.pixels(name) for name in distances})
        return data


def _distances(delta: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Euclidean length of normalised (x, y) differences (..., 2) in cells: ``scale`` cells per unit."""
    return np.linalg.norm(delta * scale, axis=-1)


def centre_movement(centres: torch.Tensor | np.ndarray, feature_size: tuple[int, int],
                    input_size: tuple[int, int]) -> list[SetMovement]:
    """Per set, how far the centres (C clips, G sets, T frames, 2) move, from normalised coordinates.

    A normalised unit is W/2 cells along x and H/2 along y (the map spans [-1, 1]); a cell is ``input / map``
    pixels. Across clips compares each clip's mean over frames with the mean over clips; across frames, each
    frame with its own clip's mean, so the two movements are separated. Bounds: ``centre_bounds``.
    """
    from kpsem.models.kpsem_module import centre_bounds

    values = torch.as_tensor(centres).detach().double().cpu().numpy()
    if values.ndim != 4 or values.shape[-1] != 2 or not values.size:
        raise ValueError(f"centres must be (clips, sets, frames, 2) with at least one of each; got {values.shape}")
    h, w = feature_size
    scale = np.array([w / 2, h / 2])  # cells per normalised unit, (x, y)
    cell_pixels = (input_size[1] / w, input_size[0] / h)
    bounds = centre_bounds(h, w).double().numpy()
    result = []
    for g in range(values.shape[1]):
        c = values[:, g]  # (C, T, 2)
        clip_means = c.mean(axis=1)  # (C, 2)
        offset = _distances(c, scale)
        across_clips = _distances(clip_means - clip_means.mean(axis=0), scale)  # (C,)
        across_frames = _distances(c - clip_means[:, None], scale)  # (C, T)
        result.append(SetMovement(
            set_index=g,
            offset_median_cells=float(np.median(offset)), offset_max_cells=float(offset.max()),
            clips_median_cells=float(np.median(across_clips)), clips_max_cells=float(across_clips.max()),
            clips_spread_cells=float(np.sqrt((clip_means.var(axis=0) * scale**2).sum())),
            frames_median_cells=float(np.median(across_frames)), frames_max_cells=float(across_frames.max()),
            frames_spread_cells=float(np.sqrt((c.var(axis=1) * scale**2).sum(axis=-1)).mean()),
            near_bound=float((np.abs(c) >= NEAR_BOUND * bounds).mean()),
            cell_pixels=cell_pixels,
        ))
    return result


@torch.no_grad()
def collect_centres(model: nn.Module, batches: Iterable[torch.Tensor], *, device: torch.device,
                    precision: Any = None) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
    """Run ``model`` (with a ``kpsem`` module) over clip batches (N, 3, T, H, W): centres (C, G, T', 2) in
    float32, the feature map's (H', W') and the clips' (H, W). ``precision``: a :class:`kpsem.precision.Precision`
    (None: fp32); the forward passes are evaluation's (:func:`kpsem.evaluate.score_clips`)."""
    from kpsem.evaluate import score_clips
    from kpsem.precision import resolve_precision

    if not has_kpsem(model):
        raise ValueError(f"{type(model).__name__} has no KPSEM module, so it has no separation centres")
    found: list[torch.Tensor] = []
    sizes: dict[str, tuple[int, int]] = {}

    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        internals = output[1]
        found.append(internals.centres.detach().float().cpu())
        sizes["feature"] = tuple(internals.feature_size)  # type: ignore[assignment]

    handle = model.kpsem.register_forward_hook(hook)  # type: ignore[union-attr]
    try:
        model.eval()
        precision = precision or resolve_precision(device, "fp32")
        for clips in batches:
            sizes["input"] = tuple(clips.shape[-2:])  # type: ignore[assignment]
            score_clips(model, clips, device=device, precision=precision, name=type(model).__name__)
    finally:
        handle.remove()
    if not found:
        raise ValueError("no clips to read the centres from")
    return torch.cat(found), sizes["feature"], sizes["input"]


def _evenly(count: int, limit: int | None) -> list[int]:
    """At most ``limit`` indices spread evenly over ``range(count)`` (all when limit is None or larger)."""
    if limit is None or limit >= count:
        return list(range(count))
    return sorted({round(i * (count - 1) / max(limit - 1, 1)) for i in range(limit)})


def centre_report(checkpoint: str | Path, data: str | Path, *, split: str = "test", clips: int | None = None,
                  batch_size: int = 8, workers: int = 0, device: str = "auto", precision: str = "fp32",
                  layout: str | None = None, split_id: int = 1, annotations: str | Path | None = None) -> CentreReport:
    """Centre movement of an MF-KPSEM checkpoint on one centre clip per video of ``data``'s ``split``
    (``clips``: at most that many videos, spread evenly over the split's list)."""
    from torch.utils.data import Subset

    from kpsem.checkpoint import load_checkpoint
    from kpsem.data import open_dataset
    from kpsem.evaluate import clip_loader, evaluation_dataset
    from kpsem.precision import resolve_precision

    if clips is not None and clips < 1:
        raise ValueError(f"clips must be at least 1; got {clips}")
    target = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    loaded = load_checkpoint(checkpoint, map_location=target)
    model, info = loaded.model, loaded.info
    if not has_kpsem(model):
        raise ValueError(f"{checkpoint} holds a {info.arch} model; only models with KPSEM have separation centres")
    kpsem_module = model.kpsem
    if kpsem_module.config.num_regions == 1:
        raise ValueError(f"{checkpoint} has K = 1 (a single key point per frame): it splits nothing, so it has no "
                         "separation centres to report")
    index = open_dataset(data, split=split, layout=layout, split_id=split_id, annotations=annotations)  # type: ignore[arg-type]
    dataset = evaluation_dataset(index, info, clips=1)
    chosen = _evenly(len(dataset), clips)  # type: ignore[arg-type]
    loader = clip_loader(Subset(dataset, chosen), batch_size=batch_size, workers=workers, device=target)
    centres, feature_size, input_size = collect_centres(
        model.to(target), (batch["clip"] for batch in loader), device=target,
        precision=resolve_precision(target, precision))
    config = kpsem_module.config
    source = {"checkpoint": str(checkpoint), "arch": info.arch, "data": str(data), "split": split,
              "num_regions": config.num_regions, "num_sets": config.num_sets, "fixed_regions": config.fixed_regions}
    return CentreReport(sets=centre_movement(centres, feature_size, input_size), clips=len(centres),
                        frames=centres.shape[2], feature_size=feature_size, input_size=input_size, source=source)


def format_report(report: CentreReport) -> str:
    """The report as a Markdown table: one row per set, distances as cells (pixels)."""
    h, w = report.feature_size
    lines = [f"Separation centres of {report.source.get('checkpoint', 'the model')} on {report.clips} clips x "
             f"{report.frames} feature frames ({h}x{w} map, {report.input_size[0]}x{report.input_size[1]} input; "
             f"cells (input pixels))", "",
             "| set | offset median | offset max | clips median | clips max | clips spread | frames median "
             "| frames max | frames spread | at bound |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    names = ("offset_median", "offset_max", "clips_median", "clips_max", "clips_spread", "frames_median",
             "frames_max", "frames_spread")
    for s in report.sets:
        cells = [f"{getattr(s, f'{n}_cells'):.3f} ({s.pixels(n):.2f})" for n in names]
        lines.append(f"| {s.set_index} | " + " | ".join(cells) + f" | {s.near_bound:.0%} |")
    return "\n".join(lines)


# --- training levers -----------------------------------------------------------------------------------------


def init_centre_mlp(module: nn.Module, std: float, *, generator: torch.Generator | None = None) -> None:
    """Draw the centre MLP's last layer weights from N(0, std^2) (bias stays 0): the centres then depend on
    the clip from the first step, still centred on average. ``module``: a KPSEM module, or a model holding
    one as ``kpsem``. ``std`` 0 keeps the zero start; a module without a centre MLP is refused."""
    kpsem_module = getattr(module, "kpsem", module)
    if std < 0:
        raise ValueError(f"centre_init_std must be at least 0; got {std}")
    if not getattr(kpsem_module, "has_centre_mlp", False):
        raise ValueError("centre_init_std needs learned centres: a KPSEM model with num_regions 4, 9 or 16 and "
                         "without fixed_regions")
    with torch.no_grad():
        weight = kpsem_module.centre_out.weight
        weight.copy_(torch.randn(weight.shape, generator=generator, dtype=weight.dtype) * std)
        kpsem_module.centre_out.bias.zero_()


def spread_penalty(centres: torch.Tensor, bounds: torch.Tensor, *, margin: float = SPREAD_MARGIN) -> torch.Tensor:
    """``edge - spread`` for centres (N, G, T, 2) with bounds (2,) as (x, y); a scalar to add to the loss.

    With ``u = centres / bounds`` (the fraction of the allowed offset, in [-1, 1]): ``spread`` is the
    variance across the batch's N clips of u (population variance), averaged over sets, frames and axes;
    ``edge`` is ``(max(|u| - margin, 0) / (1 - margin))^2`` averaged over everything, 0 inside the margin and
    1 at the bound. Spread alone is largest with the centres at +-bound; with the edge term, two groups of
    clips at +-a score ``4(a - 1/2)^2 - a^2`` (margin 1/2), lowest at a = 2/3, so the term asks for centres
    that differ between clips at two thirds of the allowed offset at most.
    """
    u = centres / bounds.to(centres)
    spread = u.var(dim=0, unbiased=False).mean() if len(u) > 1 else u.new_zeros(())
    edge = ((u.abs() - margin).clamp_min(0) / (1 - margin)).square().mean()
    return edge - spread


class _AddToLoss(torch.autograd.Function):
    """Forward: ``features`` unchanged. Backward: ``features``' own gradient, and ``scale`` for ``term``, as if
    ``term`` had been added to the (scaled) loss. Why: the regulariser reaches the loss without the training
    step having to know it exists."""

    @staticmethod
    def forward(ctx: Any, features: torch.Tensor, term: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        ctx.term_dtype = term.dtype
        return features.view_as(features)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        return grad, torch.full((), ctx.scale, dtype=ctx.term_dtype, device=grad.device), None


class CentreSpread:
    """``weight * spread_penalty`` of every training forward pass of ``model.kpsem``, added to the loss's gradient.

    A forward hook passes KPSEM's temporal feature through :class:`_AddToLoss`, so the backward pass of the
    classification loss also carries the regulariser's gradient (times ``loss_scale()``: a GradScaler's scale,
    so fp16 training sees the same weight). :attr:`last` holds the latest value (for logging). ``close()``
    removes the hook. A model without learned centres, or weight 0, gets no hook.
    """

    def __init__(self, model: nn.Module, weight: float, *, loss_scale: Any = None) -> None:
        from kpsem.models.kpsem_module import centre_bounds

        if weight < 0:
            raise ValueError(f"centre_spread_weight must be at least 0; got {weight}")
        self.weight, self.last = weight, float("nan")
        self._bounds, self._scale = centre_bounds, loss_scale or (lambda: 1.0)
        kpsem_module = getattr(model, "kpsem", None)  # any module holding a KPSEM (tests hook a bare one)
        learned = kpsem_module is not None and getattr(kpsem_module, "has_centre_mlp", False)
        self.handle = kpsem_module.register_forward_hook(self._hook) if learned and weight > 0 else None

    def _hook(self, module: nn.Module, inputs: Any, output: Any) -> Any:
        if not (module.training and torch.is_grad_enabled() and isinstance(output, tuple)):
            return None
        temporal, internals = output
        h, w = internals.feature_size
        term = self.weight * spread_penalty(internals.centres, self._bounds(h, w, device=temporal.device))
        self.last = float(term.detach())
        return _AddToLoss.apply(temporal, term, float(self._scale())), internals

    def close(self) -> None:
        """Remove the hook."""
        if self.handle is not None:
            self.handle.remove()
            self.handle = None
