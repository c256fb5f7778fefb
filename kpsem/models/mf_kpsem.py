"""MF-KPSEM: MFNet-3D with KPSEM reading one stage's output (paper section 3.1, Fig. 6).

The spatial feature is MFNet's pooled ``tail`` output; the temporal feature is KPSEM's; the two are
concatenated (eq. 1) and classified by one linear layer. Module names of the backbone are MFNet's, so
a published MFNet state dict loads into the backbone unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
from torch import nn

from kpsem.models._registry import register_model
from kpsem.models.kpsem_module import KPSEM, KPSEMConfig, KPSEMInternals
from kpsem.models.memory_format import torch_memory_format
from kpsem.models.mfnet import MFNet, MFNetConfig, check_clip_shape

__all__ = ["KNOCKOUTS", "MFKPSEMConfig", "MFKPSEM", "mf_kpsem", "temporal_frames"]

Stage = Literal["conv2", "conv3", "conv4", "conv5"]

# Test-time knock-outs of the module (``MFKPSEM.forward(x, knockout=...)``): which part does a prediction rest on?
KNOCKOUTS: dict[str, str] = {
    "zero_temporal": "the temporal (KPSEM) half of the classifier input set to zero",
    "geometric_centres": "every separation centre fixed at the geometric centre (0, 0)",
    "zero_spatial": "the spatial (pooled tail) half of the classifier input set to zero",
}
_HEAD_KNOCKOUTS = ("zero_temporal", "zero_spatial")


def temporal_frames(num_frames: int) -> int:
    """Frames left after MFNet's one temporal stride (kernel 3, stride 2, padding 1)."""
    return (num_frames - 1) // 2 + 1


@dataclass
class MFKPSEMConfig:
    backbone: MFNetConfig = field(default_factory=MFNetConfig)  # the MFNet it extends
    num_frames: int = 16  # clip length the temporal feature (and classifier) is built for
    insert_after: Stage = "conv4"  # stage whose output KPSEM reads
    num_regions: int = 4  # K
    num_sets: int = 8  # G
    embed_dim: int = 24  # d_e
    centre_hidden: int = 8  # hidden width of each centre MLP
    fixed_regions: bool = False  # ablation: random frozen centres
    fixed_seed: int = 0  # seed of the frozen centres
    gradient: Literal["straight_through", "hard"] = "straight_through"  # training backward rule
    soft_temperature: float = 1.0  # soft-argmax temperature of the straight-through backward
    mask_sharpness: float = 1.0  # soft region border width in cells

    def __post_init__(self) -> None:
        if isinstance(self.backbone, dict):
            self.backbone = MFNetConfig(**self.backbone)
        if self.insert_after not in MFNet.stage_names:
            raise ValueError(f"insert_after must be one of {MFNet.stage_names}; got {self.insert_after!r}")
        if temporal_frames(self.num_frames) < 2:
            raise ValueError(f"MF-KPSEM needs clips of at least 3 frames; got num_frames={self.num_frames}")

    def kpsem_config(self) -> KPSEMConfig:
        stage = MFNet.stage_names.index(self.insert_after)
        return KPSEMConfig(
            in_channels=self.backbone.widths[stage],
            num_frames=temporal_frames(self.num_frames),
            num_regions=self.num_regions,
            num_sets=self.num_sets,
            embed_dim=self.embed_dim,
            centre_hidden=self.centre_hidden,
            fixed_regions=self.fixed_regions,
            fixed_seed=self.fixed_seed,
            gradient=self.gradient,
            soft_temperature=self.soft_temperature,
            mask_sharpness=self.mask_sharpness,
        )


class MFKPSEM(MFNet):
    """MFNet whose classifier sees [spatial (C5), temporal (C/4 * (T-1))] features."""

    def __init__(self, config: MFKPSEMConfig) -> None:
        super().__init__(config.backbone)
        self.kpsem_config = config
        self.kpsem = KPSEM(config.kpsem_config())
        self.num_temporal_features = self.kpsem.config.out_features
        self.classifier = nn.Linear(self.num_features + self.num_temporal_features, config.backbone.num_classes)

    def _check_frames(self, x: torch.Tensor) -> None:
        check_clip_shape(x)
        if x.shape[2] != self.kpsem_config.num_frames:
            raise ValueError(
                f"this MF-KPSEM was built for {self.kpsem_config.num_frames}-frame clips (its temporal feature "
                f"has {self.num_temporal_features} values); got a clip of {x.shape[2]} frames"
            )

    def forward_features(  # type: ignore[override]
        self, x: torch.Tensor, *, return_internals: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, KPSEMInternals]:
        """(N, 3, T, H, W) -> (tail map (N, C5, T', H', W'), temporal feature (N, C/4 * (T'-1)))."""
        self._check_frames(x)
        h = self.forward_stem(x.contiguous(memory_format=torch_memory_format(self.memory_format)))
        temporal, internals = None, None
        for name in self.stage_names:
            h = getattr(self, name)(h)
            if name == self.kpsem_config.insert_after:
                temporal, internals = self.kpsem(h, return_internals=True)
        spatial_map = self.tail(h)
        return (spatial_map, temporal, internals) if return_internals else (spatial_map, temporal)

    def forward_head(  # type: ignore[override]
        self, features: tuple[torch.Tensor, torch.Tensor], *, pre_logits: bool = False, knockout: str | None = None
    ) -> torch.Tensor:
        """Classify [spatial, temporal]; ``knockout`` "zero_temporal" / "zero_spatial" zeroes that half."""
        spatial_map, temporal = features[0], features[1]
        spatial = self.globalpool(spatial_map).flatten(1)  # (N, C5)
        if knockout is not None and knockout not in _HEAD_KNOCKOUTS:
            raise ValueError(f"forward_head knocks out one of {', '.join(_HEAD_KNOCKOUTS)}; got {knockout!r}"
                             + (" (it acts inside KPSEM: use forward(x, knockout=...))"
                                if knockout == "geometric_centres" else ""))
        if knockout == "zero_spatial":
            spatial = torch.zeros_like(spatial)
        elif knockout == "zero_temporal":
            temporal = torch.zeros_like(temporal)
        pooled = torch.cat([spatial, temporal], dim=1)  # (N, C5 + C/4*(T'-1))
        return pooled if pre_logits else self.classifier(self.dropout(pooled))

    def forward(self, x: torch.Tensor, *, knockout: str | None = None) -> torch.Tensor:
        """Logits; ``knockout`` (one of :data:`KNOCKOUTS`) switches a part of the module off for this call."""
        if knockout is not None and knockout not in KNOCKOUTS:
            raise ValueError(f"knockout must be one of {', '.join(KNOCKOUTS)}; got {knockout!r}")
        if knockout == "geometric_centres":
            with self.geometric_centres():
                return self.forward_head(self.forward_features(x))
        return self.forward_head(self.forward_features(x), knockout=knockout)

    @contextmanager
    def geometric_centres(self) -> Iterator[None]:
        """Inside the block every set's separation centre is the geometric centre (0, 0) for every frame.

        Why: the knock-out "geometric_centres" asks whether the adaptive splits matter. The centre MLP (or the
        frozen random centres) is bypassed for the block only; no weight changes, so a shared model is safe
        as long as its users hold a lock around the call (the app does).
        """
        kpsem = self.kpsem

        def centred(features: torch.Tensor, *, cells: torch.Tensor | None = None) -> torch.Tensor:
            n, _, t = features.shape[:3]
            return torch.zeros(n, kpsem.config.num_sets, t, 2, device=features.device)  # (N, G, T, 2) float32

        kpsem.separation_centres = centred  # type: ignore[method-assign]  # instance attribute shadows the method
        try:
            yield
        finally:
            del kpsem.separation_centres

    def forward_with_internals(self, x: torch.Tensor) -> tuple[torch.Tensor, KPSEMInternals]:
        """Logits and KPSEM's internals from one forward pass."""
        spatial_map, temporal, internals = self.forward_features(x, return_internals=True)
        return self.forward_head((spatial_map, temporal)), internals

    def extra_config(self) -> dict:
        return asdict(self.kpsem_config)


@register_model
def mf_kpsem(*, num_classes: int = 400, backbone: dict | None = None, **config: object) -> MFKPSEM:
    """MF-KPSEM with the paper's defaults (K=4, G=8, d_e=24, after conv4).

    Ablations are config: ``num_regions=1`` (single key point), ``fixed_regions=True``, ``num_sets=1``.
    Backbone fields (``widths``, ``depths`` ...) go in ``backbone=``.
    """
    backbone_config = MFNetConfig(**{**(backbone or {}), "num_classes": num_classes})
    return MFKPSEM(MFKPSEMConfig(backbone=backbone_config, **config))  # type: ignore[arg-type]
