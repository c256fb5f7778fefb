"""What the benchmarks share: waiting for a device before reading the clock."""

from __future__ import annotations

import torch

__all__ = ["sync"]


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work, so a timer stops when the work is done (the CPU runs synchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
