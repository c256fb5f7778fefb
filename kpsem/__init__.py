"""KPSEM Studio: MFNet-3D and MF-KPSEM in PyTorch, with tools to train, explain and compare them."""

from kpsem.models import (
    KPSEM,
    MFKPSEM,
    KPSEMConfig,
    KPSEMInternals,
    MFKPSEMConfig,
    MFNet,
    MFNetConfig,
    create_model,
    list_models,
    normalised_to_pixels,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "create_model",
    "list_models",
    "KPSEM",
    "KPSEMConfig",
    "KPSEMInternals",
    "MFKPSEM",
    "MFKPSEMConfig",
    "MFNet",
    "MFNetConfig",
    "normalised_to_pixels",
]
