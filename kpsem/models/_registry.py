"""A plain dict-backed model registry: ``@register_model``, ``list_models``, and what a name stands for.

The registry is the one place code outside an architecture module asks about a model: its class
(:func:`model_class`), whether it has KPSEM (:func:`has_kpsem`, the one way to ask), and which
architecture a published state dict is (:func:`recognise_published`). Each answer comes from the model
class itself (its class attributes), so a new architecture is one new module. Building a model with
weights is :func:`kpsem.models.create_model` (``_factory``): this module imports no model and no loader.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["register_model", "list_models", "model_entrypoint", "model_class", "paper_name", "has_kpsem",
           "recognise_published"]

_model_entrypoints: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``fn`` under its own name; the name is what ``create_model`` takes.

    ``fn`` must annotate its return type with the model class (``-> MFNet``): that class answers
    :func:`model_class`, :func:`has_kpsem` and :func:`recognise_published` for the name."""
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


def model_class(name: str) -> type[nn.Module]:
    """The class the builder registered as ``name`` returns (read from its return annotation)."""
    return typing.get_type_hints(model_entrypoint(name))["return"]


def paper_name(arch: str) -> str:
    """The paper's name for a registered architecture, as its class says ('mf_kpsem' -> 'MF-KPSEM');
    any other name unchanged."""
    return model_class(arch).display_name if arch in _model_entrypoints else arch


def has_kpsem(model: nn.Module | str) -> bool:
    """Whether a model, or the model a registered name builds, has a KPSEM module (internals to draw,
    knock-outs, a temporal feature sized for its clip length). The one way the project asks."""
    if isinstance(model, str):
        return model in _model_entrypoints and bool(getattr(model_class(model), "has_kpsem", False))
    model = getattr(model, "module", model)  # a DistributedDataParallel wrapper asks its model
    return bool(getattr(model, "has_kpsem", False))


def recognise_published(state_dict: Mapping[str, torch.Tensor]) -> tuple[str, int, dict[str, Any]] | None:
    """``(arch, num_classes, config)`` of a published state dict (keys cleaned of ``module.``), asking each
    registered class's ``published_config``; None when no architecture recognises it."""
    for name in list_models():
        reader = getattr(model_class(name), "published_config", None)
        found = reader(state_dict) if reader is not None else None
        if found is not None:
            return (name, *found)
    return None
