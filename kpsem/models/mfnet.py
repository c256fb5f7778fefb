"""MFNet-3D (Chen et al., ECCV 2018) with the module names of the authors' public code.

Every module name matches the published implementation, so that published state dicts
(``conv2.B01.conv_i1.bn.weight`` ...) load without remapping.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from kpsem.models._registry import register_model
from kpsem.models.clip_classifier import ClipClassifier, init_conv_bn
from kpsem.models.memory_format import DEFAULT_MEMORY_FORMAT, may_fuse, set_memory_format

__all__ = ["MFNetConfig", "MFNet", "BN_AC_CONV3D", "MF_UNIT", "checkpoint_filter_fn",
           "published_config", "mfnet"]


@dataclass
class MFNetConfig:
    num_classes: int = 400  # size of the classifier output
    conv1_channels: int = 16  # output channels of the stem convolution
    widths: tuple[int, int, int, int] = (96, 192, 384, 768)  # output (and mid) channels of conv2..conv5
    depths: tuple[int, int, int, int] = (3, 4, 6, 3)  # multi-fibre units in conv2..conv5
    groups: int = 16  # fibres (convolution groups) in each unit
    dropout: float = 0.0  # dropout before the classifier (the published model has none)

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)  # type: ignore[assignment]
        self.depths = tuple(int(d) for d in self.depths)  # type: ignore[assignment]
        if len(self.widths) != 4 or len(self.depths) != 4:
            raise ValueError(f"widths and depths need 4 entries (conv2..conv5); got {self.widths}, {self.depths}")
        for width in (self.conv1_channels, *self.widths):
            if width % self.groups:
                raise ValueError(f"every width must be a multiple of groups={self.groups}; got {width}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be at least 1; got {self.num_classes}")


class BN_AC_CONV3D(nn.Module):  # noqa: N801 - the published name, kept for state-dict compatibility
    """Pre-activation unit: BatchNorm3d -> ReLU -> Conv3d (no bias)."""

    def __init__(
        self,
        num_in: int,
        num_filter: int,
        *,
        kernel: tuple[int, int, int] = (1, 1, 1),
        pad: tuple[int, int, int] = (0, 0, 0),
        stride: tuple[int, int, int] = (1, 1, 1),
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.bn = nn.BatchNorm3d(num_in)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv3d(num_in, num_filter, kernel, stride=stride, padding=pad, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.relu(self.bn(x)))

    def activate(self, x: torch.Tensor) -> torch.Tensor:
        """BatchNorm and ReLU only (the fused inference path runs the convolution itself)."""
        return self.relu(self.bn(x))


def _bn_affine(bn: nn.BatchNorm3d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as ``x * scale + shift`` per channel (running statistics)."""
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


def _fold_next_bn(conv: nn.Conv3d, bn: nn.BatchNorm3d) -> tuple[torch.Tensor, torch.Tensor]:
    """``conv``'s weight and a bias with the eval-mode ``bn`` that reads its output folded in.

    Computed on every call from the live parameters (a few thousand multiplies), so there is no stale
    copy to invalidate after ``load_state_dict``, an optimiser step or ``.to()``, and gradients (Grad-CAM
    runs with grad enabled in eval mode) flow to the same parameters."""
    scale, shift = _bn_affine(bn)
    return conv.weight * scale.view(-1, 1, 1, 1, 1), shift


def _pointwise(x: torch.Tensor, weight: torch.Tensor, *, stride: tuple[int, ...] = (1, 1, 1),
               bias: torch.Tensor | None = None, residual: torch.Tensor | None = None) -> torch.Tensor:
    """A 1x1x1 convolution of a channels_last_3d map as one matrix product: (N*T*H*W, C) x (C, C').

    Why: in float32 PyTorch sends 1x1x1 convolutions of small batches to its slow native kernel (on one
    thread, which copies channels_last maps to the plain layout and back) or to oneDNN; the channels_last
    map already is the (N*T*H*W, C) matrix, and addmm adds the bias or the residual in the same pass.
    The result is channels_last_3d."""
    if any(s != 1 for s in stride):
        x = x[:, :, :: stride[0], :: stride[1], :: stride[2]]
    n, c, t, h, w = x.shape
    rows = x.permute(0, 2, 3, 4, 1).reshape(-1, c)  # a view of a channels_last_3d map
    matrix = weight.flatten(1).t()  # (C, C')
    if residual is not None:
        out = torch.addmm(residual.permute(0, 2, 3, 4, 1).reshape(rows.shape[0], -1), rows, matrix)
    elif bias is not None:
        out = torch.addmm(bias, rows, matrix)
    else:
        out = rows @ matrix
    return out.view(n, t, h, w, -1).permute(0, 4, 1, 2, 3)


def _add_into(fresh: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``fresh + other``, written into ``fresh`` (a convolution's new output that nothing else holds).

    Why: a new activation-sized tensor costs an allocation whose pages the kernel must fault in and
    zero; in place costs nothing extra. Out of place when the two differ in layout or dtype (the sum
    then takes the layout PyTorch picks) or when autograd records (Grad-CAM in eval mode)."""
    if fresh.stride() == other.stride() and fresh.dtype == other.dtype and not torch.is_grad_enabled():
        return fresh.add_(other)
    return fresh + other


class MF_UNIT(nn.Module):  # noqa: N801 - the published name
    """Multi-fibre unit: a multiplexer (conv_i1, conv_i2) then grouped 3D convolutions."""

    def __init__(
        self,
        num_in: int,
        num_mid: int,
        num_out: int,
        *,
        groups: int = 16,
        stride: tuple[int, int, int] = (1, 1, 1),
        first_block: bool = False,
    ) -> None:
        super().__init__()
        self.memory_format: str = DEFAULT_MEMORY_FORMAT  # set_memory_format keeps it in step with the model's
        num_ix = num_mid // 4
        self.conv_i1 = BN_AC_CONV3D(num_in, num_ix)
        self.conv_i2 = BN_AC_CONV3D(num_ix, num_in)
        self.conv_m1 = BN_AC_CONV3D(num_in, num_mid, kernel=(3, 3, 3), pad=(1, 1, 1), stride=stride, groups=groups)
        if first_block:
            self.conv_m2 = BN_AC_CONV3D(num_mid, num_out)
            self.conv_w1 = BN_AC_CONV3D(num_in, num_out, stride=stride)
        else:
            self.conv_m2 = BN_AC_CONV3D(num_mid, num_out, kernel=(1, 3, 3), pad=(0, 1, 1), groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if may_fuse(self):
            return self._forward_fused(x)
        x_in = x + self.conv_i2(self.conv_i1(x))
        h = self.conv_m2(self.conv_m1(x_in))
        shortcut = self.conv_w1(x) if hasattr(self, "conv_w1") else x
        return h + shortcut

    def _forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        """The eval-mode forward of the fast path: the same function, in fewer passes over memory.

        conv_i2's and conv_m2's BatchNorms are folded into conv_i1 and conv_m1 (the only readers of their
        outputs), so those two BatchNorms cost nothing; in float32 every 1x1x1 convolution is a matrix
        product (:func:`_pointwise`) that also adds the residual, and conv_m1's BatchNorm and ReLU overwrite
        that product's output in place rather than filling a new map. Outputs equal the module-by-module
        path's to float rounding (tests/test_fast_path.py). Used only when no hook watches a submodule
        (:func:`~kpsem.models.memory_format.may_fuse`), so a hook on e.g. ``conv_m2.bn`` still fires.
        """
        i1, i2, m1, m2 = self.conv_i1, self.conv_i2, self.conv_m1, self.conv_m2
        gemm = x.dtype == torch.float32 and not torch.is_autocast_enabled(x.device.type)
        weight, bias = _fold_next_bn(i1.conv, i2.bn)
        a = i1.activate(x)
        t = (_pointwise(a, weight, bias=bias) if gemm else F.conv3d(a, weight, bias)).relu_()
        x_in = _pointwise(t, i2.conv.weight, residual=x) if gemm else _add_into(i2.conv(t), x)
        c = m1.conv
        weight, bias = _fold_next_bn(c, m2.bn)
        if gemm and not torch.is_grad_enabled():  # x_in is addmm's fresh output, read by nothing else
            scale, shift = _bn_affine(m1.bn)
            a = torch.addcmul(shift.view(-1, 1, 1, 1), x_in, scale.view(-1, 1, 1, 1), out=x_in).relu_()
        else:
            a = m1.activate(x_in)
        u = F.conv3d(a, weight, bias, c.stride, c.padding, c.dilation, c.groups).relu_()
        if hasattr(self, "conv_w1"):
            a = self.conv_w1.activate(x)
            shortcut = _pointwise(a, self.conv_w1.conv.weight, stride=self.conv_w1.conv.stride) if gemm \
                else self.conv_w1.conv(a)
        else:
            shortcut = x
        if gemm and m2.conv.kernel_size == (1, 1, 1):
            return _pointwise(u, m2.conv.weight, residual=shortcut)
        return _add_into(m2.conv(u), shortcut)


def _stage(num_in: int, width: int, depth: int, groups: int, stride: tuple[int, int, int]) -> nn.Sequential:
    units = OrderedDict(
        (
            f"B{i:02d}",
            MF_UNIT(
                num_in if i == 1 else width,
                width,
                width,
                groups=groups,
                stride=stride if i == 1 else (1, 1, 1),
                first_block=i == 1,
            ),
        )
        for i in range(1, depth + 1)
    )
    return nn.Sequential(units)


class MFNet(ClipClassifier):
    """MFNet-3D. ``forward_features`` gives the ``tail`` map, ``forward_head`` pools and classifies.

    Built in ``channels_last_3d`` (:mod:`kpsem.models.memory_format`): the input clip is converted to the
    model's ``memory_format`` at the top of the forward pass, so a plain contiguous clip runs the fast path.
    """

    stage_names: tuple[str, ...] = ("conv2", "conv3", "conv4", "conv5")
    arch: ClassVar[str] = "mfnet"
    display_name: ClassVar[str] = "MFNet"
    cam_layers: ClassVar[tuple[str, ...]] = ("tail", "conv5", "conv4", "conv3", "conv2")
    source_format: ClassVar[str] = "mfnet-published"  # what a published {'state_dict': ...} file is called

    def __init__(self, config: MFNetConfig) -> None:
        super().__init__()
        self.config = config
        c1 = config.conv1_channels
        self.conv1 = nn.Sequential(
            OrderedDict(
                [
                    ("conv", nn.Conv3d(3, c1, (3, 5, 5), padding=(1, 2, 2), stride=(1, 2, 2), bias=False)),
                    ("bn", nn.BatchNorm3d(c1)),
                    ("relu", nn.ReLU(inplace=True)),
                ]
            )
        )
        self.maxpool = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        strides = ((2, 1, 1), (1, 2, 2), (1, 2, 2), (1, 2, 2))  # conv2 holds the only temporal stride
        num_in = c1
        for name, width, depth, stride in zip(self.stage_names, config.widths, config.depths, strides):
            setattr(self, name, _stage(num_in, width, depth, config.groups, stride))
            num_in = width
        self.tail = nn.Sequential(OrderedDict([("bn", nn.BatchNorm3d(num_in)), ("relu", nn.ReLU(inplace=True))]))
        self.globalpool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(num_in, config.num_classes)
        self.num_features = num_in
        self.memory_format: str = DEFAULT_MEMORY_FORMAT  # layout of weights and activations; not in the config
        init_conv_bn(self)
        set_memory_format(self, self.memory_format)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """conv1 and max pooling; on the eval fast path conv1's BatchNorm is folded into its convolution
        (the BatchNorm's pass over the largest map in the network is saved), as in :class:`MF_UNIT`."""
        if may_fuse(self, self.conv1, itself=True):
            conv = self.conv1.conv
            weight, bias = _fold_next_bn(conv, self.conv1.bn)
            return self.pool_stem(F.conv3d(x, weight, bias, conv.stride, conv.padding, conv.dilation,
                                           conv.groups).relu_())
        return super().forward_stem(x)

    @staticmethod
    def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Published keys -> this model's keys: :func:`checkpoint_filter_fn`."""
        return checkpoint_filter_fn(state_dict)

    @staticmethod
    def published_config(state_dict: Mapping[str, torch.Tensor]) -> tuple[int, dict[str, Any]] | None:
        """``(num_classes, config)`` of a published MFNet state dict: :func:`published_config`."""
        return published_config(state_dict)


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Published MFNet keys are this model's keys (module names kept): nothing to remap.

    The DataParallel ``module.`` prefix and absent ``num_batches_tracked`` are handled by the loader for
    every architecture (:func:`kpsem.checkpoint.clean_state_dict`)."""
    return dict(state_dict)


def published_config(state_dict: Mapping[str, torch.Tensor]) -> tuple[int, dict[str, Any]] | None:
    """``(num_classes, config)`` read off a published MFNet state dict's shapes; None when it is not one.

    Raises ``IndexError`` when a key is there but holds a scalar (a damaged file)."""
    keys = ("classifier.weight", "conv1.conv.weight", *(f"conv{i}.B01.conv_m2.conv.weight" for i in range(2, 6)))
    if not all(k in state_dict for k in keys):
        return None
    num_classes = int(state_dict["classifier.weight"].shape[0])
    conv1_channels = int(state_dict["conv1.conv.weight"].shape[0])
    widths = tuple(int(state_dict[f"conv{i}.B01.conv_m2.conv.weight"].shape[0]) for i in range(2, 6))
    depths = tuple(len({k.split(".")[1] for k in state_dict if k.startswith(f"conv{i}.B")}) for i in range(2, 6))
    config: dict[str, Any] = {"conv1_channels": conv1_channels}
    if widths != (96, 192, 384, 768) or depths != (3, 4, 6, 3):
        config.update(widths=widths, depths=depths)
    return num_classes, config


@register_model
def mfnet(*, num_classes: int = 400, **config: object) -> MFNet:
    """MFNet-3D; 400 classes give the paper's 8.0M parameters (7,996,368)."""
    return MFNet(MFNetConfig(num_classes=num_classes, **config))  # type: ignore[arg-type]
