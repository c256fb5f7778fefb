"""Memory format of the 3-D models: how their weights and activations are laid out in memory.

The models are built in ``channels_last_3d`` (NDHWC) by default: on the CPUs measured here (oneDNN) the
MFNet forward pass is faster than in the plain ``contiguous`` (NCDHW) layout, with outputs equal to
~1e-7, and so is a training step (README, "Speed"). In eval mode the layout also switches on MFNet's
fused units (:meth:`kpsem.models.mfnet.MF_UNIT._forward_fused`: BatchNorms folded into the convolution
before them, float32 1x1x1 convolutions as matrix products on the NDHWC map); a hook on any of a unit's
submodules turns that unit's fusion off (:func:`may_fuse`), so hooks see what they always saw.
The layout is an implementation detail: parameter names, shapes and values, ``state_dict()`` and
saved checkpoints are the same in either format (checkpoints are written contiguous), and a model
converts whatever clip it is given at the top of its forward pass, so ``model(x)`` on an ordinary
contiguous ``(N, 3, T, H, W)`` tensor takes the fast path. ``module.to(device)`` keeps the format
(it preserves strides).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn.modules import module as _module

__all__ = ["MemoryFormat", "MEMORY_FORMATS", "DEFAULT_MEMORY_FORMAT", "set_memory_format", "memory_format_of",
           "fast_inference", "torch_memory_format", "may_fuse"]

MemoryFormat = Literal["channels_last_3d", "contiguous"]
MEMORY_FORMATS: dict[str, torch.memory_format] = {
    "channels_last_3d": torch.channels_last_3d,  # NDHWC: the default, the fast one measured on CPU
    "contiguous": torch.contiguous_format,  # NCDHW: PyTorch's plain layout (the published code's)
}
DEFAULT_MEMORY_FORMAT: MemoryFormat = "channels_last_3d"


def torch_memory_format(name: str) -> torch.memory_format:
    """The ``torch.memory_format`` a name stands for; a clear error lists the names."""
    try:
        return MEMORY_FORMATS[name]
    except (KeyError, TypeError):
        raise ValueError(f"memory_format must be one of {', '.join(MEMORY_FORMATS)}; got {name!r}") from None


def set_memory_format(model: nn.Module, memory_format: str = DEFAULT_MEMORY_FORMAT) -> nn.Module:
    """Lay out every 5-D parameter and buffer of ``model`` in ``memory_format``, in place; returns ``model``.

    Every submodule with a ``memory_format`` attribute (MFNet and MF-KPSEM) records the choice and
    converts its input clip to it. Parameters stay the same objects (an optimiser built before keeps
    working) and keep their values exactly; 2-D weights (KPSEM's reduction) are left as they are.
    """
    layout = torch_memory_format(memory_format)
    with torch.no_grad():
        for module in model.modules():
            for tensors in (module._parameters, module._buffers):
                for tensor in tensors.values():
                    if tensor is not None and tensor.dim() == 5:
                        tensor.data = tensor.data.contiguous(memory_format=layout)
            if hasattr(module, "memory_format"):
                module.memory_format = memory_format
    return model


def memory_format_of(model: nn.Module) -> str:
    """The memory format ``model`` runs in (``"contiguous"`` for a model that does not choose one)."""
    return str(getattr(model, "memory_format", "contiguous"))


def fast_inference(model: nn.Module) -> nn.Module:
    """``model`` in eval mode and in the faster layout (``channels_last_3d``); returns ``model``.

    Models from :func:`kpsem.create_model` and :func:`kpsem.checkpoint.load_checkpoint` already are;
    this is for one built or converted elsewhere (e.g. ``set_memory_format(model, "contiguous")``).
    """
    return set_memory_format(model, "channels_last_3d").eval()


def _has_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or getattr(module, "_backward_pre_hooks", None))


def may_fuse(owner: nn.Module, block: nn.Module | None = None, *, itself: bool = False) -> bool:
    """Whether ``owner`` may take its fused inference path: built in ``channels_last_3d``, in eval mode, and
    no hook watches any submodule of ``block`` (default ``owner``; nor any module at all, globally), nor
    ``block`` itself when ``itself`` (for a caller that skips calling ``block`` too).

    Why the hooks: a fused path computes a block's submodules together without calling them, which would
    silently skip a hook registered on one (Grad-CAM on ``conv5.B02.conv_m1``, a probe on a BatchNorm);
    with a hook there, the block runs module by module instead. Hooks on a ``block`` that is still called
    (an MF unit's own forward) fire either way.
    """
    if owner.memory_format != "channels_last_3d" or owner.training:
        return False
    if (_module._global_forward_hooks or _module._global_forward_pre_hooks
            or _module._global_backward_hooks or getattr(_module, "_global_backward_pre_hooks", None)):
        return False
    block = owner if block is None else block
    return not any(_has_hooks(sub) for sub in block.modules() if itself or sub is not block)
