"""Models own their knowledge: the registry's answers come from the model classes, the loader imports no
architecture, and one question (``has_kpsem``) tells every caller whether a model has KPSEM."""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import TINY_BACKBONE

import kpsem
from kpsem.checkpoint import CheckpointError, clean_state_dict, describe_checkpoint, load_checkpoint, save_checkpoint
from kpsem.models import has_kpsem, list_models, model_class
from kpsem.models._registry import recognise_published

ROOT = Path(__file__).resolve().parents[1]


def kpsem_imports(path: Path) -> set[str]:
    """Every ``kpsem...`` module a file imports, at the top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kpsem"):
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("kpsem"))
    return names


def test_the_loader_imports_no_architecture_and_the_registry_no_loader() -> None:
    loader = {m for m in kpsem_imports(ROOT / "kpsem/checkpoint.py") if m.startswith("kpsem.models")}
    assert loader == {"kpsem.models._registry", "kpsem.models.memory_format"}
    assert kpsem_imports(ROOT / "kpsem/models/_registry.py") == set()  # so no circle through the loader


@pytest.mark.parametrize("name", list_models())
def test_every_registered_class_names_itself_and_says_what_it_has(name: str) -> None:
    cls = model_class(name)
    assert cls.arch == name and cls.display_name and "tail" in cls.cam_layers
    assert has_kpsem(name) == (name in {"mf_kpsem", "r3d50_kpsem"})
    if has_kpsem(name):
        assert not has_kpsem(cls.baseline_arch) and cls.published_config is None


def test_has_kpsem_is_one_question_for_names_models_and_wrappers() -> None:
    ours = kpsem.create_model("mf_kpsem", num_classes=3, backbone=TINY_BACKBONE, num_frames=8)
    assert has_kpsem(ours) and has_kpsem(SimpleNamespace(module=ours))  # a DDP wrapper asks its model
    assert not has_kpsem(kpsem.create_model("mfnet", num_classes=3, **TINY_BACKBONE))
    assert not has_kpsem("mfnet3d") and not has_kpsem(torch.nn.Linear(2, 2))


def test_reset_classifier_and_parameter_groups_come_from_the_model(tmp_path) -> None:
    model = kpsem.create_model("mf_kpsem", num_classes=3, backbone=TINY_BACKBONE, num_frames=8)
    model.reset_classifier(7)
    assert model.classifier.out_features == 7
    assert model.classifier.in_features == 64 + 32 // 4 * 3  # tail + conv4's channels / 4 x (T' - 1)
    path = save_checkpoint(tmp_path / "m.pt", model, class_names=list("abcdefg"), clip_frames=8, clip_size=64)
    assert load_checkpoint(path).model.classifier.out_features == 7  # the saved config follows
    groups = {model.parameter_group(n) for n, _ in model.named_parameters()}
    assert groups == {"backbone", "kpsem", "kpsem.centre", "classifier"}
    assert model.parameter_group("conv4.B01.conv_m1.conv.weight") == "backbone"


def test_published_files_are_recognised_by_the_architecture_they_fit(tmp_path) -> None:
    mfnet = kpsem.create_model("mfnet", num_classes=5, **TINY_BACKBONE)
    published = {f"module.{k}": v for k, v in mfnet.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert recognise_published(clean_state_dict(published)) == ("mfnet", 5, {"conv1_channels": 16, **TINY_BACKBONE})
    r3d = kpsem.create_model("r3d50", num_classes=4, **TINY_BACKBONE).state_dict()
    torchvision_keys = {k.replace("conv1.conv.", "conv1.").replace("conv1.bn.", "bn1.").replace("classifier.", "fc.")
                        .replace("res2.", "layer1.").replace("res3.", "layer2.").replace("res4.", "layer3.")
                        .replace("res5.", "layer4."): v for k, v in r3d.items()}
    assert recognise_published(torchvision_keys) == ("r3d50", 4, TINY_BACKBONE)  # only what differs from ResNet-50
    assert recognise_published({"weight": torch.zeros(2)}) is None
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"does not look like a checkpoint of a known architecture \(MFNet, "
                                              r"R3D-50\): it has none of the keys they expect \(first keys: weight\)"):
        describe_checkpoint(tmp_path / "other.pt")


def test_save_checkpoint_refuses_a_model_that_is_not_registered(tmp_path) -> None:
    with pytest.raises(TypeError, match=r"save_checkpoint takes a registered model \(mf_kpsem, mfnet, r3d50, "
                                        r"r3d50_kpsem\); got Linear"):
        save_checkpoint(tmp_path / "x.pt", torch.nn.Linear(2, 2), class_names=["a", "b"])
