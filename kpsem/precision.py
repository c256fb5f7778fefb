"""Numeric precision of inference and training: fp32, bf16 or fp16 autocast, or ``auto``.

``auto`` means bf16 autocast on CUDA (fp16 on a GPU without bf16) and on CPUs that support bf16 natively
(the ``avx512_bf16`` or ``amx_bf16`` flag), fp32 everywhere else. :func:`resolve_precision` says which
precision a request becomes on a device and why; every command prints that sentence, and predictions
tables and figure sidecars store it. Whatever the precision, the weights stay float32 (autocast casts
per operation) and KPSEM's argmax and split geometry run in float32 (:mod:`kpsem.models.kpsem_module`).

Why only native bf16 on the CPU: without those instructions (AVX2, or AVX-512 without ``avx512_bf16``)
oneDNN's bf16 kernels emulate the arithmetic and are generally no faster than fp32 while losing precision
(not measured here: the machine the README's figures come from has ``avx512_bf16``).
"""

from __future__ import annotations

import functools
import platform
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["PRECISIONS", "Precision", "cpu_bf16_support", "normalise_precision", "precision_context",
           "resolve_precision"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # what a user may ask for
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # what runs -> autocast dtype
_LEGACY = {"off": "fp32"}  # the deprecated --amp spelling of full precision
_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of bf16 instructions


@dataclass(frozen=True)
class Precision:
    """What a precision request became on one device, and why."""

    requested: str  # what was asked for: auto, fp32, bf16 or fp16
    name: str  # what runs: fp32, bf16 or fp16
    device: str  # the device type it was resolved for: cpu, cuda, ...
    reason: str  # why this one, as a sentence fragment

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype; ``None`` for fp32 (no autocast)."""
        return _DTYPES[self.name]

    def autocast(self) -> AbstractContextManager:
        """``torch.autocast`` for this precision, or a no-op for fp32."""
        return nullcontext() if self.dtype is None else torch.autocast(self.device, dtype=self.dtype)

    def describe(self) -> str:
        """One line for a command's output or the app's footer, e.g.
        "precision bf16 (auto: the CPU supports bf16 natively: avx512_bf16)"."""
        mode = "full precision" if self.name == "fp32" else f"{self.name} autocast"
        return f"precision {self.name} ({mode}; {self.requested}: {self.reason})"

    def as_dict(self) -> dict[str, str]:
        """Plain data for tables' metadata and figure sidecars."""
        return {"precision": self.name, "requested": self.requested, "device": self.device, "reason": self.reason}


def normalise_precision(precision: str) -> str:
    """A requested precision, with the deprecated ``--amp`` spelling ``off`` mapped to ``fp32``;
    raises ``ValueError`` naming the allowed values."""
    precision = _LEGACY.get(precision, precision)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    return precision


def _cpu_flags() -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (Linux), or ``None`` where there is no such file."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):  # x86 / ARM spellings
            return set(line.split(":", 1)[1].split())
    return set()


@functools.lru_cache(maxsize=1)
def cpu_bf16_support() -> tuple[bool, str]:
    """Whether this CPU runs bf16 natively, and the evidence: (supported, reason).

    Detected from the CPU's flags (``avx512_bf16`` or ``amx_bf16``), never assumed; torch's own view of
    the CPU (``torch.backends.cpu.get_cpu_capability()``) is quoted alongside. Without readable flags
    (no /proc/cpuinfo: macOS, Windows) the answer is no, and the reason says so.
    """
    capability = torch.backends.cpu.get_cpu_capability()
    flags = _cpu_flags()
    if flags is None:
        return False, (f"bf16 support unknown on this system ({platform.system()}: no /proc/cpuinfo; torch sees "
                       f"{capability}), so fp32")
    found = [flag for flag in _NATIVE_BF16_FLAGS if flag in flags]
    if found:
        return True, f"the CPU supports bf16 natively ({', '.join(found)}; torch sees {capability})"
    return False, (f"the CPU has no native bf16 (no {' or '.join(_NATIVE_BF16_FLAGS)} flag; torch sees {capability}), "
                   "so fp32")


def resolve_precision(device: torch.device | str, precision: str = "auto") -> Precision:
    """The precision ``precision`` means on ``device``, and why (see the module doc for ``auto``).

    An explicit fp32, bf16 or fp16 is kept as asked on CUDA and the CPU (fp16 training needs a
    GradScaler, which :func:`kpsem.train.train` adds); other device types run fp32, as autocast is not
    set up for them here.
    """
    requested = normalise_precision(precision)
    device_type = torch.device(device).type
    if device_type not in ("cuda", "cpu"):
        return Precision(requested, "fp32", device_type, f"autocast is not set up for {device_type} devices")
    if requested != "auto":
        return Precision(requested, requested, device_type, "as asked")
    if device_type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision(requested, "bf16", device_type, "the GPU supports bf16")
        return Precision(requested, "fp16", device_type, "the GPU has no bf16, so fp16")
    supported, reason = cpu_bf16_support()
    return Precision(requested, "bf16" if supported else "fp32", device_type, reason)


def precision_context(device: torch.device | str, precision: str = "auto") -> AbstractContextManager:
    """``torch.autocast`` for what ``precision`` means on ``device`` (:func:`resolve_precision`), or a no-op."""
    return resolve_precision(device, precision).autocast()
