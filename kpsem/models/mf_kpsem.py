"""MF-KPSEM: MFNet-3D with KPSEM reading one stage's output (paper section 3.1, Fig. 6).

The spatial feature is MFNet's pooled ``tail`` output; the temporal feature is KPSEM's; the two are
concatenated (eq. 1) and classified by one linear layer (:class:`~kpsem.models.with_kpsem.WithKPSEM`).
Module names of the backbone are MFNet's, so a published MFNet state dict loads into the backbone unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from kpsem.models._registry import register_model
from kpsem.models.kpsem_module import KPSEMConfig
from kpsem.models.mfnet import MFNet, MFNetConfig
from kpsem.models.with_kpsem import KNOCKOUTS, KPSEMOptions, WithKPSEM

__all__ = ["KNOCKOUTS", "MFKPSEMConfig", "MFKPSEM", "mf_kpsem", "temporal_frames"]

Stage = Literal["conv2", "conv3", "conv4", "conv5"]


def temporal_frames(num_frames: int) -> int:
    """Frames left after MFNet's one temporal stride (kernel 3, stride 2, padding 1)."""
    return (num_frames - 1) // 2 + 1


@dataclass
class MFKPSEMConfig(KPSEMOptions):
    insert_after: Stage = "conv4"  # stage whose output KPSEM reads
    backbone: MFNetConfig = field(default_factory=MFNetConfig)  # the MFNet it extends

    def __post_init__(self) -> None:
        if isinstance(self.backbone, dict):
            self.backbone = MFNetConfig(**self.backbone)
        if self.insert_after not in MFNet.stage_names:
            raise ValueError(f"insert_after must be one of {MFNet.stage_names}; got {self.insert_after!r}")
        if temporal_frames(self.num_frames) < 2:
            raise ValueError(f"MF-KPSEM needs clips of at least 3 frames; got num_frames={self.num_frames}")

    def kpsem_config(self) -> KPSEMConfig:
        stage = MFNet.stage_names.index(self.insert_after)
        return self.module_config(in_channels=self.backbone.widths[stage],
                                  feature_frames=temporal_frames(self.num_frames))


class MFKPSEM(WithKPSEM, MFNet):
    """MFNet whose classifier sees [spatial (C5), temporal (C/4 * (T-1))] features."""

    arch: ClassVar[str] = "mf_kpsem"
    display_name: ClassVar[str] = "MF-KPSEM"
    baseline_arch: ClassVar[str] = "mfnet"  # the model it is compared with (Table 2)
    published_config = None  # its weights come from this project's checkpoints only

    def __init__(self, config: MFKPSEMConfig) -> None:
        super().__init__(config.backbone)
        self._attach_kpsem(config, config.kpsem_config(), config.backbone.num_classes)


@register_model
def mf_kpsem(*, num_classes: int = 400, backbone: dict | None = None, **config: object) -> MFKPSEM:
    """MF-KPSEM with the paper's defaults (K=4, G=8, d_e=24, after conv4).

    Ablations are config: ``num_regions=1`` (single key point), ``fixed_regions=True``, ``num_sets=1``.
    Backbone fields (``widths``, ``depths`` ...) go in ``backbone=``.
    """
    backbone_config = MFNetConfig(**{**(backbone or {}), "num_classes": num_classes})
    return MFKPSEM(MFKPSEMConfig(backbone=backbone_config, **config))  # type: ignore[arg-type]
