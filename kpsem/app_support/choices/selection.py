"""The sidebar's choices, resolved: the two checkpoints (loaded, or why not), the data split (opened, or why
not), the device and precision, and what the pair and the classes allow. Every page works on one
:class:`Selection`; :func:`kpsem.app_support.widgets.ui.sidebar` makes it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kpsem.app_support.choices.config import DemoPaths, ServerSettings
from kpsem.app_support.choices.sources import ClassMatch, ModelKey
from kpsem.pairing import PairCheck

__all__ = ["ROLES", "SOURCES", "ModelSlot", "DataChoice", "Selection", "clip_truth", "chosen_target"]

ROLES = {"baseline": "Baseline checkpoint (MFNet)", "kpsem": "KPSEM checkpoint (MF-KPSEM)"}
SOURCES = ("bundled demo", "path", "upload")


@dataclass
class ModelSlot:
    """One checkpoint the user chose, loaded (or the reason it could not be)."""

    role: str  # "baseline" or "kpsem"
    source: str  # one of SOURCES
    key: ModelKey | None = None  # cache key of the file (and loaded class names); None when none is chosen or it failed
    loaded: object | None = None  # kpsem.checkpoint.LoadedCheckpoint
    error: str | None = None  # why it is unusable
    names_file: str | None = None  # the class names file applied to it, as the user named it

    @property
    def info(self):  # noqa: ANN201 - CheckpointInfo
        return self.loaded.info if self.loaded is not None else None  # type: ignore[attr-defined]

    @property
    def model(self):  # noqa: ANN201 - nn.Module
        return self.loaded.model if self.loaded is not None else None  # type: ignore[attr-defined]

    @property
    def name(self) -> str:
        return Path(self.key[0]).name if self.key else "(none)"

    @property
    def model_id(self) -> str:
        """The id ``kpsem evaluate`` and ``kpsem probe`` give this checkpoint's rows ('mfnet:mfnet')."""
        from kpsem.evaluate import default_model_id

        return default_model_id(self.name, self.info.arch)


@dataclass
class DataChoice:
    """The data split the user chose (or the reason it could not be opened)."""

    source: str  # "bundled demo" or "path"
    root: Path | None = None
    layout: str | None = None  # detected or chosen
    detected: bool = True  # whether the layout was detected
    split: str = "test"
    split_id: int = 1
    index: object | None = None  # kpsem.data.DatasetIndex (with the names of names_file when one is applied)
    error: str | None = None
    names_file: str | None = None  # the class names file applied to it, as the user named it

    @property
    def key(self) -> tuple:
        return (str(self.root), self.layout, self.split, self.split_id)

    @property
    def described(self) -> str:
        """The opened split in words, without its folder (which a page shows apart, as code)."""
        return self.index.summary().split(" from ")[0]  # type: ignore[attr-defined]


@dataclass
class Selection:
    """What every page works on."""

    baseline: ModelSlot
    kpsem: ModelSlot
    data: DataChoice
    device: str  # resolved torch device string
    demo: DemoPaths
    settings: ServerSettings
    precision: str = "auto"  # numeric precision of the analyses: auto, fp32, bf16 or fp16 (kpsem.precision)
    pair: PairCheck = field(default_factory=PairCheck)
    classes: ClassMatch | None = None  # data set classes vs models; None until both sides are loaded

    @property
    def using_demo(self) -> bool:
        return self.baseline.source == self.kpsem.source == self.data.source == "bundled demo"


def clip_truth(chosen: Selection, data_label: int) -> tuple[int | None, str | None]:
    """(the models' index of a data set clip's class, the class when the models do not know it).

    With the data set's labels scorable the label is the models' index; with other classes, a class the models
    know by name is still scored; any other class is no verdict on the models (a page says so)."""
    data_names = chosen.data.index.class_names  # type: ignore[attr-defined]
    model_names = list(chosen.kpsem.info.class_names)
    if chosen.classes is None or chosen.classes.scorable:
        return data_label, None
    if data_names[data_label] in model_names:
        return model_names.index(data_names[data_label]), None
    return None, data_names[data_label]


def chosen_target(pick: str, true_label: int | None, class_names: list[str]) -> int | None:
    """The class the Grad-CAMs explain: None for each model's prediction, else the true class or a named one."""
    if pick == "true class":
        return true_label
    return class_names.index(pick) if pick in class_names else None
