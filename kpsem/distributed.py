"""One process or many: the small amount of ``torch.distributed`` that training and evaluation need.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; when
they are present :func:`init_distributed` joins the process group (NCCL on GPUs, gloo on CPUs) and
every other function here works across ranks. Without them everything degrades to a single process,
so library code never has to ask which case it is in.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = [
    "DistInfo",
    "init_distributed",
    "pick_device",
    "shutdown_distributed",
    "process_group",
    "current",
    "barrier",
    "gather_to_main",
    "all_reduce_sums",
    "ShardSampler",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits among the workers of one run."""

    rank: int = 0  # global rank, 0 .. world_size - 1
    world_size: int = 1  # number of processes
    local_rank: int = 0  # rank on this machine: picks the GPU
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # where this process computes
    owns_group: bool = False  # whether this process created the group (and must destroy it)

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files, prints and shows progress bars."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(local_rank: int, device: str | None) -> torch.device:
    """``device`` as a torch device; "auto"/None: this rank's GPU when CUDA is available, else the CPU."""
    if device not in (None, "auto"):
        chosen = torch.device(device)
        if chosen.type == "cuda" and chosen.index is None:
            chosen = torch.device("cuda", local_rank)
        return chosen
    return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")


def init_distributed(*, device: str | None = None, backend: str | None = None) -> DistInfo:
    """Join the ``torchrun`` process group when one is configured; pick this process's device.

    ``device``: ``None``/``"auto"`` uses the GPU numbered by ``LOCAL_RANK`` when CUDA is available, else
    the CPU. ``backend``: ``None`` picks NCCL for CUDA devices and gloo otherwise.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = pick_device(local_rank, device)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    if world_size <= 1:
        return DistInfo(device=chosen)
    if dist.is_initialized():  # e.g. a caller that set the group up itself
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, chosen, owns_group=False)
    backend = backend or ("nccl" if chosen.type == "cuda" else "gloo")
    dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistInfo(rank, world_size, local_rank, chosen, owns_group=True)


def shutdown_distributed(info: DistInfo, *, wait_for_peers: bool = True) -> None:
    """Leave the process group if :func:`init_distributed` created it.

    ``wait_for_peers``: meet the other ranks first. A rank that tears down its gloo connections while
    rank 0 is still writing files can abort at exit ("terminate called without an active exception");
    after an error the peers may never arrive, so the error path leaves at once.
    """
    if info.owns_group and dist.is_initialized():
        if wait_for_peers and info.distributed:
            dist.barrier()
        dist.destroy_process_group()


@contextmanager
def process_group(*, device: str | None = None) -> Iterator[DistInfo]:
    """``with process_group(device=...) as info:`` joins the torchrun group (if any) and always leaves it."""
    info = init_distributed(device=device)
    try:
        yield info
    except BaseException:
        shutdown_distributed(info, wait_for_peers=False)
        raise
    shutdown_distributed(info)


def current(device: torch.device | None = None) -> DistInfo:
    """The :class:`DistInfo` of an already-initialised run (or of a single process)."""
    device = device or torch.device("cpu")
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), device)
    return DistInfo(device=device)


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def gather_to_main(info: DistInfo, obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` as a list on rank 0 (in rank order); ``None`` on the other ranks."""
    if not info.distributed:
        return [obj]
    gathered: list[Any] | None = [None] * info.world_size if info.is_main else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def all_reduce_sums(info: DistInfo, values: list[float]) -> list[float]:
    """Element-wise sums of ``values`` over ranks (float64, so counts stay exact)."""
    if not info.distributed:
        return list(values)
    device = info.device if dist.get_backend() == "nccl" else torch.device("cpu")
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


class ShardSampler(Sampler[int]):
    """Rank ``r`` of ``w`` reads items ``r, r + w, r + 2w, ...``: no padding, no duplicates.

    ``DistributedSampler`` pads the last shard with repeats, which would count some test clips twice;
    evaluation needs every item exactly once.
    """

    def __init__(self, length: int, *, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}); got {rank}")
        self.length, self.rank, self.world_size = length, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))
