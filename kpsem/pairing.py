"""Can two checkpoints be compared? One check for the app's sidebar and the commands that take a pair
(``explain``, ``faithfulness``): what blocks a comparison, and what only deserves a note.

Reads :class:`kpsem.checkpoint.CheckpointInfo` only, so that the app's first page can call it without
importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kpsem.checkpoint import CheckpointInfo

__all__ = ["PairCheck", "check_pair", "require_pair"]


@dataclass
class PairCheck:
    """Whether a baseline and a KPSEM checkpoint can be compared; errors block, warnings inform."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def check_pair(baseline: CheckpointInfo, kpsem: CheckpointInfo) -> PairCheck:
    """Compare what two checkpoints say about themselves, before either model runs."""
    check = PairCheck()
    expected = kpsem.baseline_arch if kpsem.has_kpsem else "mfnet"  # the paper's baseline for that KPSEM model
    if baseline.arch != expected:
        name = kpsem.baseline_name if kpsem.has_kpsem else "MFNet"
        check.warnings.append(f"the baseline slot holds an {baseline.arch} checkpoint; the paper's baseline is {name}")
    if not kpsem.has_kpsem:
        check.warnings.append(f"the KPSEM slot holds an {kpsem.arch} checkpoint: "
                              "it has no key points or shifts to show")
    if (baseline.clip_frames, baseline.clip_size) != (kpsem.clip_frames, kpsem.clip_size):
        check.errors.append(
            f"the checkpoints read different clips: {baseline.clip_frames} frames of {baseline.clip_size} px "
            f"(baseline) and {kpsem.clip_frames} frames of {kpsem.clip_size} px (KPSEM); "
            "choose two that read the same clips")
    if baseline.num_classes != kpsem.num_classes:
        check.errors.append(f"the checkpoints predict {baseline.num_classes} and {kpsem.num_classes} classes; "
                            "choose two models of the same data set")
    elif baseline.class_names != kpsem.class_names:
        check.warnings.append("the checkpoints name their classes differently; the KPSEM checkpoint's names are shown")
    if tuple(baseline.mean) != tuple(kpsem.mean) or tuple(baseline.std) != tuple(kpsem.std):
        check.warnings.append("the checkpoints normalise clips differently; "
                              "the KPSEM checkpoint's normalisation is used")
    return check


def require_pair(baseline: CheckpointInfo, kpsem: CheckpointInfo, *, task: str) -> PairCheck:
    """:func:`check_pair` for a command: the first blocking problem raises (``task`` says what needs the
    pair); the notes come back to be printed."""
    check = check_pair(baseline, kpsem)
    if check.errors:
        raise ValueError(f"{check.errors[0]} ({task} compares two models of one data set on the same clips)")
    return check
