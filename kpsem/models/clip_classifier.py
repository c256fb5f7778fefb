"""What every backbone here shares: a stem, named stages, a tail and a pooled linear classifier.

MFNet and R3D-50 differ in their blocks and strides only; the forward pass in timm's split
(``forward_features`` -> the ``tail`` map where Grad-CAM looks, ``forward_head`` -> pooled logits), the
checkpoint config, the classifier swap and the learning-rate groups are the same, and live here once.
A subclass builds ``conv1``, ``maxpool``, the stages named in ``stage_names``, ``tail``, ``globalpool``,
``dropout`` and ``classifier``, and sets ``config`` (a dataclass with ``num_classes``) and ``memory_format``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, ClassVar

import torch
from torch import nn

from kpsem.models.memory_format import torch_memory_format

__all__ = ["ClipClassifier", "check_clip_shape", "init_conv_bn"]


def check_clip_shape(x: torch.Tensor, *, min_frames: int = 1) -> None:
    """Reject a clip the backbone cannot take, with a message that says what fits."""
    if x.dim() != 5 or x.shape[1] != 3:
        raise ValueError(
            f"expected a clip batch of shape (N, 3, T, H, W), e.g. (1, 3, 16, 224, 224); got {tuple(x.shape)}"
        )
    frames, height, width = x.shape[2:]
    if frames < min_frames:
        raise ValueError(f"clip has {frames} frames; this model needs at least {min_frames}")
    if height < 32 or width < 32 or height % 16 or width % 16:
        raise ValueError(
            f"clip frames are {height}x{width}; height and width must be multiples of 16 and at least 32 "
            "(so that conv4's 16-pixel grid tiles the frame exactly), e.g. 224x224, 160x160 or 112x112"
        )


def init_conv_bn(model: nn.Module) -> None:
    """He init (fan out) for convolutions and unit BatchNorm: the choice of the published MFNet code and of
    torchvision's ResNet.

    Tensors on the meta device (the checkpoint size check builds models there) are left alone: they hold
    no values, and drawing normal ones would import ``torch._dynamo`` (about 1 s) for nothing.
    """
    for module in model.modules():
        if isinstance(module, (nn.Conv3d, nn.Conv2d)) and not module.weight.is_meta:
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, (nn.BatchNorm3d, nn.BatchNorm2d)) and not module.weight.is_meta:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class ClipClassifier(nn.Module):
    """A clip classifier: stem, ``stage_names`` in order, ``tail``, global pooling, dropout, ``classifier``."""

    stage_names: tuple[str, ...]
    config: Any  # the architecture's config dataclass
    memory_format: str  # layout of weights and activations (kpsem.models.memory_format); not in the config
    # What the rest of the project asks a model (kpsem.models._registry, kpsem.checkpoint, kpsem.train):
    arch: ClassVar[str]  # registered name, saved in checkpoints
    display_name: ClassVar[str]  # the paper's name
    has_kpsem: ClassVar[bool] = False  # a KPSEM module, its internals to draw and its knock-outs
    classifier_keys: ClassVar[tuple[str, ...]] = ("classifier.weight", "classifier.bias")
    cam_layers: ClassVar[tuple[str, ...]]  # Grad-CAM layers, top first
    source_format: ClassVar[str]  # what a published file of this architecture is called

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """conv1 then max pooling, the pooling in the stem's own precision under any autocast.

        Why: CPU autocast lists max_pool3d as a float32 op, so a bf16 stem output would be widened (a
        copy of the largest map in the network) and every layer up to conv2's first convolution would
        run in float32. A maximum picks one of its inputs, so pooling the bf16 map gives exactly the
        values pooling its float32 copy would."""
        return self.pool_stem(self.conv1(x))

    def pool_stem(self, h: torch.Tensor) -> torch.Tensor:
        """``maxpool`` in ``h``'s own precision, autocast or not (:meth:`forward_stem` says why)."""
        if torch.is_autocast_enabled(h.device.type):
            with torch.autocast(h.device.type, enabled=False):
                return self.maxpool(h)
        return self.maxpool(h)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, T, H, W) -> (N, C5, T', H/32, W/32): the ``tail`` output, where Grad-CAM looks."""
        check_clip_shape(x)
        h = self.forward_stem(x.contiguous(memory_format=torch_memory_format(self.memory_format)))
        for name in self.stage_names:
            h = getattr(self, name)(h)
        return self.tail(h)

    def forward_head(self, features: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        pooled = self.globalpool(features).flatten(1)  # (N, C5)
        return pooled if pre_logits else self.classify(pooled)

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        """Dropout and the classifier, in float32 under any autocast: one small matrix product, and the logits
        keep fp32's resolution, so two near-equal classes are ordered as in fp32 (bf16's 8-bit mantissa tied a
        demo clip's two best classes, 0.473 and 0.443 in fp32)."""
        if torch.is_autocast_enabled(pooled.device.type):
            with torch.autocast(pooled.device.type, enabled=False):
                return self.classifier(self.dropout(pooled.float()))
        return self.classifier(self.dropout(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def extra_config(self) -> dict:
        """The config as plain data, for checkpoints."""
        return asdict(self.config)

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh classifier for ``num_classes`` outputs (fine-tuning on another class count)."""
        old = self.classifier
        self.classifier = nn.Linear(old.in_features, num_classes, device=old.weight.device, dtype=old.weight.dtype)
        self.config.num_classes = num_classes

    def parameter_group(self, name: str) -> str:
        """The learning-rate group of parameter ``name``: ``classifier`` (new layer) or ``backbone``."""
        return "classifier" if name.startswith("classifier.") else "backbone"
