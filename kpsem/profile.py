"""Table 1: parameters and multiply-adds per part (backbone, KPSEM, classifier), counted here.

Multiply-adds come from PyTorch's ``FlopCounterMode`` (which counts 2 FLOPs per multiply-add of
convolutions and matrix products) grouped by module: the paper's "FLOPs" are multiply-adds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from kpsem.models import has_kpsem

__all__ = ["ModelCost", "PartCost", "model_cost", "format_cost_table"]

PARTS = ("backbone", "kpsem", "classifier")


@dataclass
class PartCost:
    parameters: int  # learnable parameters
    macs: int  # multiply-adds for one clip


@dataclass
class ModelCost:
    model: str  # registered name
    num_classes: int  # classifier outputs
    clip: tuple[int, int, int]  # frames, height, width
    parts: dict[str, PartCost]  # backbone, kpsem (absent for MFNet), classifier
    total: PartCost

    def as_dict(self) -> dict:
        return asdict(self)


def _part_of(name: str) -> str:
    head = name.split(".", 1)[0]
    return head if head in ("kpsem", "classifier") else "backbone"


def model_cost(model: nn.Module, *, name: str, clip: tuple[int, int, int] = (16, 224, 224)) -> ModelCost:
    """Count parameters and multiply-adds of ``model`` for one ``(T, H, W)`` clip."""
    params = dict.fromkeys(PARTS, 0)
    for key, parameter in model.named_parameters():
        params[_part_of(key)] += parameter.numel()
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    counter = FlopCounterMode(display=False, depth=None)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, *clip, device=device))
    model.train(was_training)
    root = type(model).__name__
    macs = dict.fromkeys(PARTS, 0)
    for module_name, counts in counter.get_flop_counts().items():
        if module_name in ("Global", root) or not module_name.startswith(root + "."):
            continue
        child = module_name[len(root) + 1 :]
        if "." in child:  # count each leaf once, at the model's direct children
            continue
        macs[_part_of(child)] += sum(counts.values()) // 2
    with_kpsem = has_kpsem(model)
    parts = {p: PartCost(params[p], macs[p]) for p in PARTS if p != "kpsem" or with_kpsem}
    total = PartCost(sum(c.parameters for c in parts.values()), sum(c.macs for c in parts.values()))
    num_classes = model.classifier.out_features  # type: ignore[union-attr]
    return ModelCost(model=name, num_classes=num_classes, clip=clip, parts=parts, total=total)


def format_cost_table(costs: list[ModelCost]) -> str:
    """A plain-text Table 1: one row per model and part, parameters in M and multiply-adds in G."""
    width = max([10, *(len(cost.model) for cost in costs)])  # the model column fits the longest name
    lines = [f"{'model':<{width}} {'part':<11} {'params':>12} {'(M)':>7} {'mult-adds':>15} {'(G)':>7}"]
    for cost in costs:
        for part, value in [*cost.parts.items(), ("total", cost.total)]:
            lines.append(
                f"{cost.model:<{width}} {part:<11} {value.parameters:>12,} {value.parameters / 1e6:>7.3f} "
                f"{value.macs:>15,} {value.macs / 1e9:>7.3f}"
            )
    return "\n".join(lines)
