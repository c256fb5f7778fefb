"""Checkpoints: our format, the published MFNet format, and every way a file can be wrong."""

from __future__ import annotations

import os
import pickle
import shlex
from pathlib import Path

import pytest
import torch
from conftest import TINY_BACKBONE

import kpsem
from kpsem.checkpoint import (
    CheckpointError,
    clean_state_dict,
    describe_checkpoint,
    load_checkpoint,
    load_weights_into,
    read_checkpoint,
    save_checkpoint,
)

CLIP = torch.randn(1, 3, 8, 64, 64, generator=torch.Generator().manual_seed(0))


def tiny_mfnet(num_classes: int = 6) -> torch.nn.Module:
    torch.manual_seed(0)
    return kpsem.create_model("mfnet", num_classes=num_classes, **TINY_BACKBONE).eval()


def tiny_kpsem(num_classes: int = 6) -> torch.nn.Module:
    torch.manual_seed(1)
    return kpsem.create_model("mf_kpsem", num_classes=num_classes, backbone=TINY_BACKBONE, num_frames=8).eval()


def published_file(tmp_path: Path, model: torch.nn.Module) -> Path:
    """What the MFNet authors released: DataParallel keys, no BatchNorm counters, old serialisation."""
    state_dict = {f"module.{k}": v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "MFNet3D_Kinetics-400_72.8.pth"
    torch.save({"epoch": 12, "state_dict": state_dict}, path, _use_new_zipfile_serialization=False)
    return path


def test_clean_state_dict_strips_only_the_dataparallel_prefix() -> None:
    cleaned = clean_state_dict({"module.conv1.conv.weight": torch.ones(1), "tail.bn.bias": torch.zeros(1)})
    assert list(cleaned) == ["conv1.conv.weight", "tail.bn.bias"]


def test_published_format_round_trip_gives_equal_outputs(tmp_path: Path) -> None:
    original = tiny_mfnet()
    path = published_file(tmp_path, original)
    loaded = kpsem.create_model("mfnet", num_classes=6, checkpoint=path, **TINY_BACKBONE).eval()
    with torch.no_grad():
        assert torch.equal(original(CLIP), loaded(CLIP))
    report = load_weights_into(tiny_mfnet(), path)
    assert report.missing_num_batches_tracked == sum(1 for k in original.state_dict() if "num_batches" in k)


def test_full_size_published_mfnet_loads_through_create_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    original = kpsem.create_model("mfnet", num_classes=400)
    path = published_file(tmp_path, original)
    loaded = kpsem.create_model("mfnet", num_classes=400, checkpoint=path)
    key = "conv5.B03.conv_m2.conv.weight"
    assert torch.equal(loaded.state_dict()[key], original.state_dict()[key])
    info = describe_checkpoint(path)
    assert (info.arch, info.num_classes, info.source_format) == ("mfnet", 400, "mfnet-published")


def test_published_mfnet_initialises_the_mf_kpsem_backbone(tmp_path: Path) -> None:
    path = published_file(tmp_path, tiny_mfnet(num_classes=400))
    model = tiny_kpsem(num_classes=6)
    fresh_kpsem = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("kpsem.")}
    report = load_weights_into(model, path)
    source = tiny_mfnet(num_classes=400).state_dict()
    assert torch.equal(model.state_dict()["conv3.B01.conv_m1.conv.weight"], source["conv3.B01.conv_m1.conv.weight"])
    assert all(torch.equal(model.state_dict()[k], v) for k, v in fresh_kpsem.items())
    assert "classifier.weight" in report.reinitialised
    assert "MF-KPSEM backbone" in report.summary()


def test_a_different_class_count_needs_reinit_classifier(tmp_path: Path) -> None:
    path = published_file(tmp_path, tiny_mfnet(num_classes=400))
    with pytest.raises(CheckpointError,
                       match=r"classifier has shape \(400, 64\).*model's is \(51, 64\); .*reinit_classifier=True"):
        kpsem.create_model("mfnet", num_classes=51, checkpoint=path, **TINY_BACKBONE)
    model = kpsem.create_model("mfnet", num_classes=51, checkpoint=path, reinit_classifier=True, **TINY_BACKBONE)
    assert model.classifier.out_features == 51


def test_missing_unexpected_and_misshapen_keys_are_named(tmp_path: Path) -> None:
    state_dict = tiny_mfnet().state_dict()
    broken = dict(state_dict)
    del broken["conv2.B01.conv_i1.conv.weight"]
    broken["conv9.B01.conv_i1.conv.weight"] = torch.zeros(1)
    broken["tail.bn.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as caught:
        load_weights_into(tiny_mfnet(), broken)
    message = str(caught.value)
    assert "1 missing keys: conv2.B01.conv_i1.conv.weight" in message
    assert "1 unexpected keys: conv9.B01.conv_i1.conv.weight" in message
    assert "1 keys of the wrong shape: tail.bn.weight (3,) vs model (64,)" in message


def test_wrong_architecture_is_an_error_not_a_partial_load(tmp_path: Path) -> None:
    path = tmp_path / "kpsem.pt"
    save_checkpoint(path, tiny_kpsem(), class_names=list("abcdef"), clip_frames=8, clip_size=64)
    with pytest.raises(CheckpointError, match=r"does not fit MFNet: \d+ unexpected keys: kpsem\."):
        load_weights_into(tiny_mfnet(), path)


def test_own_format_round_trip_keeps_weights_and_metadata(tmp_path: Path) -> None:
    model = tiny_kpsem()
    path = save_checkpoint(
        tmp_path / "run" / "epoch_003.pt",
        model,
        class_names=["up", "down", "left", "right", "cw", "ccw"],
        clip_frames=8,
        clip_size=64,
        provenance={"command": "python -m kpsem train ...", "epoch": 3},
    )
    assert sorted(p.name for p in path.parent.iterdir()) == ["epoch_003.pt"]  # no temporary file left behind
    loaded = load_checkpoint(path)
    assert not loaded.model.training
    with torch.no_grad():
        assert torch.equal(model(CLIP), loaded.model(CLIP))
    info = loaded.info
    assert (info.arch, info.num_classes, info.clip_frames, info.clip_size) == ("mf_kpsem", 6, 8, 64)
    assert info.class_names[4] == "cw"
    assert info.config["backbone"]["widths"] == (16, 32, 32, 64)
    assert info.std == pytest.approx((0.2348,) * 3, abs=1e-4)
    assert info.provenance["epoch"] == 3 and "saved" in info.provenance


def test_save_refuses_a_wrong_number_of_class_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"2 class names for a model with 6 classes"):
        save_checkpoint(tmp_path / "x.pt", tiny_mfnet(), class_names=["a", "b"])


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"nope\.pt does not exist"):
        read_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pt is empty \(0 bytes\)"):
        read_checkpoint(tmp_path / "empty.pt")


def test_truncated_file_is_reported_as_truncated(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    save_checkpoint(path, tiny_mfnet(), class_names=list("abcdef"))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.pt is truncated or not a PyTorch file") as caught:
        load_checkpoint(path)
    assert "refused" not in str(caught.value)


class _RunsCode:
    """A pickle payload that would create a file if it were ever unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


class _RunsShell:
    """A payload that would run a shell command; torch words its refusal of os differently."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


# torch 2.13: Path.touch is "Unsupported global: GLOBAL pathlib.Path.touch was not an allowed global",
# os.system is "Trying to load unsupported GLOBAL posix.system whose module posix is blocked".
@pytest.mark.parametrize("payload", [_RunsCode, _RunsShell], ids=["not-allowlisted", "blocked-module"])
def test_a_pickle_that_tries_to_run_code_is_refused_and_never_runs(tmp_path: Path, payload: type) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": payload(marker)}, path)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    assert str(caught.value) == (
        f"refused to load {path}: it contains Python objects other than tensors and plain containers, "
        "which could run code when loaded. Checkpoints are untrusted input and are only read with "
        "weights_only=True; if you trust the file, re-save its state_dict with torch.save"
    )
    assert not marker.exists()
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(_RunsCode(marker)))
    with pytest.raises(CheckpointError, match=r"raw\.pkl is truncated or not a PyTorch file"):
        read_checkpoint(raw)  # a bare pickle is not a torch.save file; it is rejected unread
    assert not marker.exists()


def test_files_that_are_not_checkpoints(tmp_path: Path) -> None:
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(CheckpointError, match=r"holds a Tensor, not a state dict"):
        read_checkpoint(tmp_path / "tensor.pt")
    torch.save({"epoch": 3, "notes": "hello"}, tmp_path / "dict.pt")
    with pytest.raises(CheckpointError, match=r"is not a model checkpoint: it has no 'state_dict'.*epoch, notes"):
        load_weights_into(tiny_mfnet(), tmp_path / "dict.pt")
    (tmp_path / "noise.pt").write_bytes(bytes(range(256)) * 7)
    with pytest.raises(CheckpointError, match=r"noise\.pt is truncated or not a PyTorch file"):
        read_checkpoint(tmp_path / "noise.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"text\.pt is truncated or not a PyTorch file"):
        read_checkpoint(tmp_path / "text.pt")


def test_saved_checkpoints_carry_a_checksum_of_names_dtypes_shapes_and_bytes(tmp_path: Path) -> None:
    from kpsem.checkpoint import CHECKSUM_KEY, state_dict_checksum

    model = tiny_mfnet()
    path = save_checkpoint(tmp_path / "model.pt", model, class_names=list("abcdef"))
    saved = torch.load(path, weights_only=True)
    assert saved[CHECKSUM_KEY] == state_dict_checksum(model.state_dict())
    assert describe_checkpoint(path).integrity == "tensors verified against the SHA-256 checksum saved with them"
    base = {"w": torch.zeros(2, 3)}
    variants = [{"v": torch.zeros(2, 3)}, {"w": torch.zeros(3, 2)}, {"w": torch.zeros(2, 3, dtype=torch.float64)},
                {"w": torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 1e-30]])}, {**base, "extra": torch.zeros(0)}]
    checksums = {state_dict_checksum(base)} | {state_dict_checksum(v) for v in variants}
    assert len(checksums) == 1 + len(variants)  # a name, a shape, a dtype, one value or one more tensor changes it
    assert state_dict_checksum({"w": torch.zeros(3, 2).t()}) == state_dict_checksum(base)  # layout does not


def test_placeholder_class_names_are_one_rule():
    from kpsem.constants import are_placeholder_names, placeholder_class_names

    assert placeholder_class_names(3) == ["class_0", "class_1", "class_2"]
    assert are_placeholder_names(("class_0", "class_1"))
    assert not are_placeholder_names(["class_1", "class_0"])  # the stand-ins, but not in label order
    assert not are_placeholder_names(["class_0", "walk"])
