"""KPSEM on a backbone: the options, the two-branch head and the knock-outs every KPSEM model shares.

A backbone (MFNet, R3D-50) gives ``forward_stem``, named ``stage_names``, a ``tail`` and a pooled
classifier; :class:`WithKPSEM` placed before it in the bases runs KPSEM on one stage's output and
classifies the concatenation [spatial (pooled tail), temporal (KPSEM)] (paper eq. 1). What differs per
backbone (which stages exist, how many frames reach KPSEM, its input width) stays in the backbone's
module; what is the same (the forward passes, the knock-outs, the internals) is written once here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from kpsem.models.clip_classifier import check_clip_shape
from kpsem.models.kpsem_module import KPSEM, KPSEMConfig, KPSEMInternals
from kpsem.models.memory_format import torch_memory_format

__all__ = ["KNOCKOUTS", "KPSEMOptions", "WithKPSEM"]

# Test-time knock-outs of the module (``model.forward(x, knockout=...)``): which part does a prediction rest on?
KNOCKOUTS: dict[str, str] = {
    "zero_temporal": "the temporal (KPSEM) half of the classifier input set to zero",
    "geometric_centres": "every separation centre fixed at the geometric centre (0, 0)",
    "zero_spatial": "the spatial (pooled tail) half of the classifier input set to zero",
}
_HEAD_KNOCKOUTS = ("zero_temporal", "zero_spatial")


@dataclass
class KPSEMOptions:
    """KPSEM's options on any backbone; a backbone's config adds itself and the stage names it accepts."""

    num_frames: int = 16  # clip length the temporal feature (and classifier) is built for
    insert_after: str = ""  # stage whose output KPSEM reads (each backbone's config sets its default)
    num_regions: int = 4  # K
    num_sets: int = 8  # G
    embed_dim: int = 24  # d_e
    centre_hidden: int = 8  # hidden width of each centre MLP
    fixed_regions: bool = False  # ablation: random frozen centres
    fixed_seed: int = 0  # seed of the frozen centres
    gradient: Literal["straight_through", "hard"] = "straight_through"  # training backward rule
    soft_temperature: float = 1.0  # soft-argmax temperature of the straight-through backward
    mask_sharpness: float = 1.0  # soft region border width in cells

    def module_config(self, *, in_channels: int, feature_frames: int) -> KPSEMConfig:
        """The :class:`KPSEMConfig` for a stage of ``in_channels`` maps with ``feature_frames`` frames."""
        return KPSEMConfig(
            in_channels=in_channels,
            num_frames=feature_frames,
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


class WithKPSEM:
    """Mixin for a backbone with KPSEM after one stage; put it before the backbone class in the bases.

    The subclass's ``__init__`` builds the backbone and then calls :meth:`_attach_kpsem`.
    """

    has_kpsem: ClassVar[bool] = True
    display_name: ClassVar[str]
    kpsem_config: Any  # the model's config (a KPSEMOptions with its backbone)
    kpsem: KPSEM
    num_temporal_features: int

    def _attach_kpsem(self, config: KPSEMOptions, kpsem_config: KPSEMConfig, num_classes: int) -> None:
        """KPSEM from ``kpsem_config`` and a classifier over [spatial, temporal] features."""
        self.kpsem_config = config
        self.kpsem = KPSEM(kpsem_config)
        self.num_temporal_features = self.kpsem.config.out_features
        self.classifier = nn.Linear(self.num_features + self.num_temporal_features, num_classes)  # type: ignore[attr-defined]

    def parameter_group(self, name: str) -> str:
        """``kpsem.centre`` (the centre MLPs), ``kpsem`` (the rest of the new module), else the backbone's."""
        if name.startswith("kpsem.centre_"):
            return "kpsem.centre"
        if name.startswith("kpsem."):
            return "kpsem"
        return super().parameter_group(name)  # type: ignore[misc]

    def _check_frames(self, x: torch.Tensor) -> None:
        check_clip_shape(x)
        if x.shape[2] != self.kpsem_config.num_frames:
            raise ValueError(
                f"this {self.display_name} was built for {self.kpsem_config.num_frames}-frame clips (its temporal "
                f"feature has {self.num_temporal_features} values); got a clip of {x.shape[2]} frames"
            )

    def forward_features(
        self, x: torch.Tensor, *, return_internals: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, KPSEMInternals]:
        """(N, 3, T, H, W) -> (tail map (N, C5, T', H', W'), temporal feature (N, C/4 * (T'-1)))."""
        self._check_frames(x)
        h = self.forward_stem(x.contiguous(memory_format=torch_memory_format(self.memory_format)))  # type: ignore[attr-defined]
        temporal, internals = None, None
        for name in self.stage_names:  # type: ignore[attr-defined]
            h = getattr(self, name)(h)
            if name == self.kpsem_config.insert_after:
                temporal, internals = self.kpsem(h, return_internals=True)
        spatial_map = self.tail(h)  # type: ignore[attr-defined]
        return (spatial_map, temporal, internals) if return_internals else (spatial_map, temporal)

    def forward_head(
        self, features: tuple[torch.Tensor, torch.Tensor], *, pre_logits: bool = False, knockout: str | None = None
    ) -> torch.Tensor:
        """Classify [spatial, temporal]; ``knockout`` "zero_temporal" / "zero_spatial" zeroes that half."""
        spatial_map, temporal = features[0], features[1]
        spatial = self.globalpool(spatial_map).flatten(1)  # type: ignore[attr-defined]  # (N, C5)
        if knockout is not None and knockout not in _HEAD_KNOCKOUTS:
            raise ValueError(f"forward_head knocks out one of {', '.join(_HEAD_KNOCKOUTS)}; got {knockout!r}"
                             + (" (it acts inside KPSEM: use forward(x, knockout=...))"
                                if knockout == "geometric_centres" else ""))
        if knockout == "zero_spatial":
            spatial = torch.zeros_like(spatial)
        elif knockout == "zero_temporal":
            temporal = torch.zeros_like(temporal)
        pooled = torch.cat([spatial, temporal], dim=1)  # (N, C5 + C/4*(T'-1))
        return pooled if pre_logits else self.classify(pooled)  # type: ignore[attr-defined]

    def forward(self, x: torch.Tensor, *, knockout: str | None = None) -> torch.Tensor:
        """Logits; ``knockout`` (one of :data:`KNOCKOUTS`) switches a part of the module off for this call."""
        if knockout is not None and knockout not in KNOCKOUTS:
            raise ValueError(f"knockout must be one of {', '.join(KNOCKOUTS)}; got {knockout!r}")
        if knockout == "geometric_centres":
            with self.geometric_centres():
                return self.forward_head(self.forward_features(x))  # type: ignore[arg-type]
        return self.forward_head(self.forward_features(x), knockout=knockout)  # type: ignore[arg-type]

    @contextmanager
    def geometric_centres(self) -> Iterator[None]:
        """Inside the block every set's separation centre is the geometric centre (0, 0) for every frame.

        Why: the knock-out "geometric_centres" asks whether the adaptive splits matter. The centre MLP (or the
        frozen random centres) is bypassed for the block only; no weight changes, so a shared model is safe
        as long as its users hold a lock around the call (the app does).
        """
        with self.kpsem.geometric_splits():  # K = 9, 16: equally spaced splits
            yield

    def forward_with_internals(self, x: torch.Tensor) -> tuple[torch.Tensor, KPSEMInternals]:
        """Logits and KPSEM's internals from one forward pass."""
        spatial_map, temporal, internals = self.forward_features(x, return_internals=True)  # type: ignore[misc]
        return self.forward_head((spatial_map, temporal)), internals

    def extra_config(self) -> dict:
        """The config as plain data, for checkpoints (backbone nested under ``backbone``)."""
        return asdict(self.kpsem_config)
