"""The one compatibility shim: make torchvision's Python parts importable on a CPU-only torch.

The torchvision 0.28.0 wheel that accepts ``torch==2.13.0`` is a CUDA build; on the CPU torch its
compiled ops do not load, and ``import torchvision`` then fails inside ``_meta_registrations`` with
``operator torchvision::nms does not exist`` (it registers fake kernels for ops whose schemas the
compiled library would have defined). pytorch-grad-cam imports torchvision only for transforms, so
defining the two schemas it trips over is enough; the ops themselves stay unavailable.
"""

from __future__ import annotations

import sys

import torch

__all__ = ["import_torchvision", "torchvision_ops_available"]

_schemas: torch.library.Library | None = None
_OPS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)


def _forget_partial_import() -> None:
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]


def import_torchvision() -> object:
    """Import torchvision, defining the missing op schemas first if its compiled ops do not load."""
    global _schemas
    try:
        import torchvision

        return torchvision
    except RuntimeError as error:
        if "torchvision::" not in str(error):
            raise
    _forget_partial_import()
    if _schemas is None:
        _schemas = torch.library.Library("torchvision", "FRAGMENT")  # kept alive: dropping it undefines
        for schema in _OPS:
            _schemas.define(schema)
    import torchvision

    return torchvision


def torchvision_ops_available() -> bool:
    """Whether torchvision's compiled ops (nms, roi_align, ...) actually run here."""
    import_torchvision()
    from torchvision.extension import _has_ops

    return bool(_has_ops())
