"""R3D-50: a 3-D ResNet-50 whose every k x k kernel is inflated to 1 x k x k (the paper's Table 2d backbone).

With no kernel reaching across frames, an ImageNet ResNet-50 initialises it exactly: each 2-D weight
(O, I, k, k) becomes (O, I, 1, k, k) (:func:`checkpoint_filter_fn`), and on a clip of identical frames
the network computes the 2-D network's features frame by frame. Motion is left to what comes after the
backbone: global pooling for the baseline, KPSEM after res3 for R3D-50-KPSEM. No stride is temporal
(a 1 x k x k kernel can only drop frames, not fuse them), so every stage keeps the clip's T frames.
Module names are torchvision's inside each block; the stages are named res2..res5 as in the paper
(torchvision's layer1..layer4), the stem ``conv1.conv``/``conv1.bn`` like MFNet's and the head ``classifier``.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from kpsem.models._registry import register_model
from kpsem.models.clip_classifier import ClipClassifier, init_conv_bn
from kpsem.models.kpsem_module import KPSEMConfig
from kpsem.models.memory_format import DEFAULT_MEMORY_FORMAT, set_memory_format
from kpsem.models.with_kpsem import KPSEMOptions, WithKPSEM

__all__ = ["R3DConfig", "R3DKPSEMConfig", "Bottleneck3D", "R3D", "R3DKPSEM", "checkpoint_filter_fn",
           "published_config", "r3d50", "r3d50_kpsem"]

STAGES = ("res2", "res3", "res4", "res5")
_EXPANSION = 4  # a bottleneck's output is 4x its width (ResNet-50)


class Bottleneck3D(nn.Module):
    """ResNet's bottleneck (1x1, 3x3, 1x1, stride on the 3x3 as in torchvision) with 1 x k x k kernels."""

    def __init__(self, num_in: int, num_out: int, *, stride: int = 1) -> None:
        super().__init__()
        mid = num_out // _EXPANSION
        self.conv1 = nn.Conv3d(num_in, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(mid)
        self.conv2 = nn.Conv3d(mid, mid, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False)
        self.bn2 = nn.BatchNorm3d(mid)
        self.conv3 = nn.Conv3d(mid, num_out, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(num_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or num_in != num_out:
            self.downsample = nn.Sequential(nn.Conv3d(num_in, num_out, 1, stride=(1, stride, stride), bias=False),
                                            nn.BatchNorm3d(num_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.bn1(self.conv1(x)))
        h = self.relu(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(h + shortcut)


@dataclass
class R3DConfig:
    num_classes: int = 400  # size of the classifier output
    conv1_channels: int = 64  # output channels of the stem convolution
    widths: tuple[int, int, int, int] = (256, 512, 1024, 2048)  # output channels of res2..res5 (bottleneck: 1/4)
    depths: tuple[int, int, int, int] = (3, 4, 6, 3)  # bottlenecks in res2..res5 (ResNet-50)
    dropout: float = 0.0  # dropout before the classifier

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)  # type: ignore[assignment]
        self.depths = tuple(int(d) for d in self.depths)  # type: ignore[assignment]
        if len(self.widths) != 4 or len(self.depths) != 4:
            raise ValueError(f"widths and depths need 4 entries (res2..res5); got {self.widths}, {self.depths}")
        if any(w % _EXPANSION or w < _EXPANSION for w in self.widths) or min(self.depths) < 1:
            raise ValueError(f"every width must be a positive multiple of {_EXPANSION} (a bottleneck is a quarter "
                             f"of it) and every depth at least 1; got widths {self.widths}, depths {self.depths}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be at least 1; got {self.num_classes}")


class R3D(ClipClassifier):
    """R3D-50. ``forward_features`` gives the ``tail`` map (res5's output), ``forward_head`` pools and classifies."""

    stage_names: tuple[str, ...] = STAGES
    arch: ClassVar[str] = "r3d50"
    display_name: ClassVar[str] = "R3D-50"
    cam_layers: ClassVar[tuple[str, ...]] = ("tail", "res5", "res4", "res3", "res2")  # top first
    source_format: ClassVar[str] = "torchvision-resnet"

    def __init__(self, config: R3DConfig) -> None:
        super().__init__()
        self.config = config
        c1 = config.conv1_channels
        self.conv1 = nn.Sequential(OrderedDict([
            ("conv", nn.Conv3d(3, c1, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False)),
            ("bn", nn.BatchNorm3d(c1)),
            ("relu", nn.ReLU(inplace=True)),
        ]))
        self.maxpool = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        num_in = c1
        for name, width, depth, stride in zip(self.stage_names, config.widths, config.depths, (1, 2, 2, 2)):
            blocks = [Bottleneck3D(num_in if i == 0 else width, width, stride=stride if i == 0 else 1)
                      for i in range(depth)]
            setattr(self, name, nn.Sequential(*blocks))
            num_in = width
        self.tail = nn.Identity()  # res5 ends activated; a named layer where Grad-CAM looks, as in MFNet
        self.globalpool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(num_in, config.num_classes)
        self.num_features = num_in
        self.memory_format: str = DEFAULT_MEMORY_FORMAT  # layout of weights and activations; not in the config
        init_conv_bn(self)
        set_memory_format(self, self.memory_format)

    @staticmethod
    def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """torchvision ResNet keys -> this model's keys: :func:`checkpoint_filter_fn`."""
        return checkpoint_filter_fn(state_dict)

    @staticmethod
    def published_config(state_dict: Mapping[str, torch.Tensor]) -> tuple[int, dict[str, Any]] | None:
        """``(num_classes, config)`` of a torchvision ResNet state dict: :func:`published_config`."""
        return published_config(state_dict)


@dataclass
class R3DKPSEMConfig(KPSEMOptions):
    insert_after: str = "res3"  # stage whose output KPSEM reads (the paper's: res3)
    backbone: R3DConfig = field(default_factory=R3DConfig)  # the R3D-50 it extends

    def __post_init__(self) -> None:
        if isinstance(self.backbone, dict):
            self.backbone = R3DConfig(**self.backbone)
        if self.insert_after not in STAGES:
            raise ValueError(f"insert_after must be one of {STAGES}; got {self.insert_after!r}")
        if self.num_frames < 2:
            raise ValueError(f"R3D-50-KPSEM needs clips of at least 2 frames; got num_frames={self.num_frames}")

    def kpsem_config(self) -> KPSEMConfig:
        """No temporal stride: KPSEM sees all ``num_frames`` frames."""
        return self.module_config(in_channels=self.backbone.widths[STAGES.index(self.insert_after)],
                                  feature_frames=self.num_frames)


class R3DKPSEM(WithKPSEM, R3D):
    """R3D-50 whose classifier sees [spatial (C5), temporal (C/4 * (T-1))] features; KPSEM after res3."""

    arch: ClassVar[str] = "r3d50_kpsem"
    display_name: ClassVar[str] = "R3D-50-KPSEM"
    baseline_arch: ClassVar[str] = "r3d50"  # the model it is compared with (Table 2d)
    published_config = None  # its weights come from this project's checkpoints only

    def __init__(self, config: R3DKPSEMConfig) -> None:
        super().__init__(config.backbone)
        self._attach_kpsem(config, config.kpsem_config(), config.backbone.num_classes)


_TORCHVISION_KEY = re.compile(r"^(?:(conv1)\.weight|(bn1)\.(.+)|layer([1-4])\.(.+)|(fc)\.(.+))$")


def _map_key(key: str) -> str | None:
    """One torchvision ResNet key as this model's key; None when it is not a torchvision key."""
    match = _TORCHVISION_KEY.match(key)
    if match is None:
        return None
    conv1, bn1, bn1_rest, layer, layer_rest, _fc, fc_rest = match.groups()
    if conv1:
        return "conv1.conv.weight"
    if bn1:
        return f"conv1.bn.{bn1_rest}"
    if layer:
        return f"{STAGES[int(layer) - 1]}.{layer_rest}"
    return f"classifier.{fc_rest}"


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A torchvision ResNet state dict in this model's keys and shapes; a pure function.

    Stages ``layer1..4`` -> ``res2..5``, ``conv1``/``bn1`` -> ``conv1.conv``/``conv1.bn``, ``fc`` ->
    ``classifier``, and every 4-D convolution weight (O, I, k, k) -> (O, I, 1, k, k). Keys that are not
    torchvision's (this project's own, or anything else) pass unchanged, so the loader names every one
    that does not fit the model instead of dropping it."""
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        ours = _map_key(key)
        if ours is not None and value.dim() == 4:
            value = value.unsqueeze(2)  # (O, I, k, k) -> (O, I, 1, k, k)
        mapped[ours if ours is not None else key] = value
    return mapped


def published_config(state_dict: Mapping[str, torch.Tensor]) -> tuple[int, dict[str, Any]] | None:
    """``(num_classes, config)`` read off a torchvision ResNet state dict's shapes; None when it is not one."""
    keys = ("fc.weight", "conv1.weight", *(f"layer{i}.0.conv3.weight" for i in range(1, 5)))
    if not all(k in state_dict for k in keys):
        return None
    config: dict[str, Any] = {}
    conv1_channels = int(state_dict["conv1.weight"].shape[0])
    widths = tuple(int(state_dict[f"layer{i}.0.conv3.weight"].shape[0]) for i in range(1, 5))
    depths = tuple(len({k.split(".")[1] for k in state_dict if k.startswith(f"layer{i}.")}) for i in range(1, 5))
    defaults = R3DConfig()
    if conv1_channels != defaults.conv1_channels:
        config["conv1_channels"] = conv1_channels
    if widths != defaults.widths or depths != defaults.depths:
        config.update(widths=widths, depths=depths)
    return int(state_dict["fc.weight"].shape[0]), config


@register_model
def r3d50(*, num_classes: int = 400, **config: object) -> R3D:
    """R3D-50 (1 x k x k inflated ResNet-50); 1000 classes give ResNet-50's 25,557,032 parameters."""
    return R3D(R3DConfig(num_classes=num_classes, **config))  # type: ignore[arg-type]


@register_model
def r3d50_kpsem(*, num_classes: int = 400, backbone: dict | None = None, **config: object) -> R3DKPSEM:
    """R3D-50 with KPSEM after res3 (paper Table 2d) and the paper's KPSEM defaults (K=4, G=8, d_e=24).

    Backbone fields (``widths``, ``depths`` ...) go in ``backbone=``."""
    backbone_config = R3DConfig(**{**(backbone or {}), "num_classes": num_classes})
    return R3DKPSEM(R3DKPSEMConfig(backbone=backbone_config, **config))  # type: ignore[arg-type]
