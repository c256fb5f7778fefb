"""Model definitions; importing this package registers every model."""

from kpsem.models._factory import create_model
from kpsem.models._registry import has_kpsem, list_models, model_class, paper_name, register_model
from kpsem.models.kpsem_module import KPSEM, KPSEMConfig, KPSEMInternals, normalised_to_pixels
from kpsem.models.memory_format import (
    DEFAULT_MEMORY_FORMAT,
    MEMORY_FORMATS,
    fast_inference,
    memory_format_of,
    set_memory_format,
)
from kpsem.models.mf_kpsem import MFKPSEM, MFKPSEMConfig
from kpsem.models.mfnet import MFNet, MFNetConfig
from kpsem.models.r3d import R3D, R3DKPSEM, R3DConfig, R3DKPSEMConfig
from kpsem.models.with_kpsem import KNOCKOUTS, KPSEMOptions, WithKPSEM

__all__ = [
    "create_model",
    "list_models",
    "register_model",
    "has_kpsem",
    "model_class",
    "paper_name",
    "KNOCKOUTS",
    "KPSEMOptions",
    "WithKPSEM",
    "KPSEM",
    "KPSEMConfig",
    "KPSEMInternals",
    "MFKPSEM",
    "MFKPSEMConfig",
    "MFNet",
    "MFNetConfig",
    "R3D",
    "R3DConfig",
    "R3DKPSEM",
    "R3DKPSEMConfig",
    "normalised_to_pixels",
    "DEFAULT_MEMORY_FORMAT",
    "MEMORY_FORMATS",
    "fast_inference",
    "memory_format_of",
    "set_memory_format",
]
