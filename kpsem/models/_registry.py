"""A plain dict-backed model registry: ``@register_model``, ``create_model``, ``list_models``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["register_model", "create_model", "list_models", "model_entrypoint"]

_model_entrypoints: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``fn`` under its own name; the name is what ``create_model`` takes."""
    name = fn.__name__
    if name in _model_entrypoints:
        raise ValueError(f"model {name!r} is registered twice")
    _model_entrypoints[name] = fn
    return fn


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return sorted(_model_entrypoints)


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    """The builder registered as ``name``; a clear error lists the known names."""
    try:
        return _model_entrypoints[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}") from None


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

    ``checkpoint`` may be one of the project's own checkpoints or a published MFNet file
    (``{'epoch', 'state_dict'}`` with ``module.`` prefixes). ``reinit_classifier=True`` allows a
    checkpoint with another class count: its classifier is dropped and a fresh one is kept.
    ``memory_format`` ("channels_last_3d", the faster default, or "contiguous") lays out the weights
    and the activations (:mod:`kpsem.models.memory_format`); it changes no value and no saved file.
    """
    from kpsem.models.memory_format import set_memory_format, torch_memory_format

    torch_memory_format(memory_format)  # a bad name fails before the model is built
    model = model_entrypoint(name)(num_classes=num_classes, **config)
    if checkpoint is not None:
        from kpsem.checkpoint import load_weights_into

        load_weights_into(model, checkpoint, reinit_classifier=reinit_classifier)
    return set_memory_format(model, memory_format)
