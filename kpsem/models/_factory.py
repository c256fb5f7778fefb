"""``create_model``: build a registered model, optionally with weights from a checkpoint file.

Kept apart from the registry so that the registry imports no loader and the loader
(:mod:`kpsem.checkpoint`) can ask the registry without importing itself back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from kpsem.models._registry import model_entrypoint
from kpsem.models.memory_format import set_memory_format, torch_memory_format

__all__ = ["create_model"]


def create_model(
    name: str,
    *,
    num_classes: int = 400,
    checkpoint: str | Path | None = None,
    reinit_classifier: bool = False,
    memory_format: str = "channels_last_3d",
    **config: Any,
) -> nn.Module:
    """Build a registered model; optionally load weights from ``checkpoint``.

    ``checkpoint`` may be one of the project's own checkpoints or a published file the architecture maps
    (an MFNet ``{'epoch', 'state_dict'}`` with ``module.`` prefixes, a torchvision ResNet-50 for R3D-50).
    ``reinit_classifier=True`` allows a checkpoint with another class count: its classifier is dropped and
    a fresh one is kept. ``memory_format`` ("channels_last_3d", the faster default, or "contiguous") lays
    out the weights and the activations (:mod:`kpsem.models.memory_format`); it changes no value and no
    saved file.
    """
    torch_memory_format(memory_format)  # a bad name fails before the model is built
    model = model_entrypoint(name)(num_classes=num_classes, **config)
    if checkpoint is not None:
        from kpsem.checkpoint import load_weights_into  # the loader asks the registry: imported on use

        load_weights_into(model, checkpoint, reinit_classifier=reinit_classifier)
    return set_memory_format(model, memory_format)
