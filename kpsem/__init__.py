"""KPSEM Studio: MFNet-3D and MF-KPSEM in PyTorch, with tools to train, explain and compare them.

The model names below are imported on first use (PEP 562), so that ``kpsem --help`` and the app's first
page do not pay for importing torch before they need it.
"""

from __future__ import annotations

from typing import Any

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


def __getattr__(name: str) -> Any:
    if name in __all__ and name != "__version__":
        import kpsem.models

        return getattr(kpsem.models, name)
    raise AttributeError(f"module 'kpsem' has no attribute {name!r}")
