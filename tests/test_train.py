"""Training: recipe, parameter groups, init, bit-exact resume, checkpoint metadata, errors."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY_BACKBONE, ToyClips

from kpsem.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from kpsem.models import create_model
from kpsem.precision import resolve_precision
from kpsem.train import (
    ResumeError,
    TrainConfig,
    TrainData,
    build_model,
    grad_scaler,
    parameter_groups,
    train,
    train_step,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(tmp_path, name: str, **overrides) -> TrainConfig:
    base = dict(arch="mf_kpsem", out=str(tmp_path / name), epochs=2, batch_size=4, frames=8, size=32,
                lr_steps=(1,), workers=0, log_every=1, progress=False, val_split=None, dropout=0.5, **TINY_BACKBONE)
    return TrainConfig(**{**base, **overrides})


def _data(val: bool = False) -> TrainData:
    return TrainData(ToyClips(12), ToyClips(6, train=False, clips_per_video=2) if val else None,
                     ToyClips(1).class_names, {"name": "toy"})


class _CrashError(RuntimeError):
    pass


def _crash_at(step: int):
    def hook(current: int) -> None:
        if current == step:
            raise _CrashError(f"simulated crash after step {step}")
    return hook


def _weights(path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["state_dict"]


@pytest.mark.parametrize(
    ("save_every", "crash_step", "workers"), [(0, 4, 0), (2, 5, 0), (2, 5, 2)],
    ids=["from-epoch-end", "mid-epoch", "mid-epoch-2-workers"],
)
def test_resumed_run_matches_uninterrupted_run_bit_for_bit(tmp_path, save_every, crash_step, workers):
    straight = train(_config(tmp_path, "straight", workers=workers), data=_data())
    assert straight.steps == 6 and straight.epochs == 2

    crashed = _config(tmp_path, "crashed", save_every=save_every, workers=workers)
    with pytest.raises(_CrashError):
        train(crashed, data=_data(), on_step=_crash_at(crash_step))
    torch.manual_seed(12345)  # the crash left the RNGs somewhere else; the resume must not care
    resumed = train(_config(tmp_path, "crashed", save_every=save_every, workers=workers, resume="auto"), data=_data())

    expected_start = "last.pt" if save_every else "epoch_001.pt"
    assert resumed.resumed_from is not None and resumed.resumed_from.name == expected_start
    a, b = _weights(straight.final_checkpoint), _weights(resumed.final_checkpoint)
    assert a.keys() == b.keys()
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert differing == []
    losses = lambda r: [(m["step"], m["loss"]) for m in r.metrics if m["event"] == "train"]  # noqa: E731
    assert losses(resumed) == losses(straight)
    logged = [json.loads(line) for line in (tmp_path / "crashed" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in logged if m["event"] == "train"] == [1, 2, 3, 4, 5, 6]


def test_run_folder_checkpoints_carry_full_metadata(tmp_path):
    config = _config(tmp_path, "run", epochs=1, val_split="val", val_clips=2)
    result = train(config, data=_data(val=True), command=["python", "-m", "kpsem", "train", "--data", "toy"])
    run = tmp_path / "run"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch_001.pt", "latest.json"]
    saved = json.loads((run / "config.json").read_text())
    assert TrainConfig.from_dict(saved["config"]) == config
    assert saved["classes"] == ["class0", "class1", "class2"]

    loaded = load_checkpoint(run / "checkpoints" / "epoch_001.pt")
    info = loaded.info
    assert (info.arch, info.class_names, info.clip_frames, info.clip_size) == (
        "mf_kpsem", ["class0", "class1", "class2"], 8, 32)
    assert tuple(info.config["backbone"]["widths"]) == (16, 32, 32, 64)
    prov = info.provenance
    assert prov["command"][-2:] == ["--data", "toy"]
    assert prov["config"]["lr"] == 0.005 and prov["dataset"] == {"name": "toy"}
    assert prov["epoch"] == 1
    assert prov["metrics"]["val_video_top1"] == pytest.approx(result.metrics[-1]["val_video_top1"])
    state = read_checkpoint(run / "checkpoints" / "epoch_001.pt")["training_state"]
    assert {"optimizer", "scheduler", "rng", "metrics", "epoch", "step"} <= set(state)
    assert "training_state" not in read_checkpoint(run / "final.pt")
    epoch_record = next(m for m in result.metrics if m["event"] == "epoch")
    assert {"train_loss", "train_top1", "val_top1", "val_top5", "val_video_top1"} <= set(epoch_record)
    assert 0 <= epoch_record["centre_near_bound"] <= 1 and epoch_record["centre_std_clips"] >= 0  # centre watch


def test_parameter_groups_follow_the_reference_recipe(tmp_path):
    mfnet_path = save_checkpoint(tmp_path / "mfnet.pt", create_model("mfnet", num_classes=3, **TINY_BACKBONE),
                                 class_names=["a", "b", "c"], clip_frames=8, clip_size=32)
    config = _config(tmp_path, "groups", init=str(mfnet_path), centre_lr_mult=0.1, widths=None, depths=None)
    model, init_info = build_model(config, num_classes=3)
    groups = {g["name"]: g for g in parameter_groups(model, config)}
    assert {name: g["lr"] for name, g in groups.items()} == pytest.approx(
        {"backbone": 0.001, "kpsem": 0.005, "kpsem.centre": 0.0005, "classifier": 0.005})
    assert {id(p) for p in groups["kpsem.centre"]["params"]} == {
        id(p) for n, p in model.named_parameters() if n.startswith("kpsem.centre_")}
    assert sum(len(g["params"]) for g in groups.values()) == len(list(model.parameters()))
    assert "KPSEM starts fresh" in init_info["load"]

    scratch = _config(tmp_path, "scratch", arch="mfnet")
    scratch_groups = {g["name"]: g["lr"] for g in parameter_groups(build_model(scratch, 3)[0], scratch)}
    assert scratch_groups == {"backbone": 0.005, "classifier": 0.005}


def test_init_from_a_published_mfnet_file_fills_the_backbone(tmp_path):
    mfnet = create_model("mfnet", num_classes=5, **TINY_BACKBONE)
    published = {"epoch": 7, "state_dict": {f"module.{k}": v for k, v in mfnet.state_dict().items()
                                            if not k.endswith("num_batches_tracked")}}
    torch.save(published, tmp_path / "MFNet3D_published.pth")
    config = _config(tmp_path, "ft", init=str(tmp_path / "MFNet3D_published.pth"), widths=None, depths=None)
    model, _ = build_model(config, num_classes=3)  # widths and depths come from the file
    key = "conv4.B01.conv_m1.conv.weight"
    assert torch.equal(model.state_dict()[key], mfnet.state_dict()[key])
    assert model.classifier.out_features == 3

    with pytest.raises(ValueError, match=r"classifier has shape \(5, 64\).*--reinit-classifier"):
        build_model(_config(tmp_path, "ft2", arch="mfnet", init=str(tmp_path / "MFNet3D_published.pth")), 3)
    model, info = build_model(_config(tmp_path, "ft3", arch="mfnet", init=str(tmp_path / "MFNet3D_published.pth"),
                                      reinit_classifier=True), 3)
    assert info["reinitialised"] == ["classifier.weight", "classifier.bias"]


def test_resume_refuses_changed_settings(tmp_path):
    with pytest.raises(_CrashError):
        train(_config(tmp_path, "run"), data=_data(), on_step=_crash_at(4))  # epoch 1 was saved
    with pytest.raises(ResumeError, match=r"settings differ .*lr: 0\.005 -> 0\.01"):
        train(_config(tmp_path, "run", lr=0.01, resume="auto"), data=_data())
    final = train(_config(tmp_path, "final", epochs=1), data=_data()).final_checkpoint
    with pytest.raises(ResumeError, match="has no training state .* pass it as --init"):
        train(_config(tmp_path, "other", resume=str(final)), data=_data())


def test_config_and_data_errors_name_the_bad_value(tmp_path):
    with pytest.raises(ValueError, match="size must be a multiple of 16 and at least 32.*got 40"):
        TrainConfig(size=40)
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, fp16; got 'fp8'"):
        TrainConfig(precision="fp8")
    with pytest.raises(ValueError, match=r"interval must be positive frame counts; got \[0, 2\]"):
        TrainConfig(interval=[0, 2])
    assert TrainConfig(interval=[1, 2, 2, 3]).to_dict()["interval"] == [1, 2, 2, 3]  # Kinetics' draw
    with pytest.raises(ValueError, match=r"lr_steps must be increasing epochs; got \[20, 10\]"):
        TrainConfig(lr_steps=(20, 10))
    small = TrainData(ToyClips(3), None, ToyClips(1).class_names)
    with pytest.raises(ValueError, match="training set has 3 clips: fewer than batch_size=4"):
        train(_config(tmp_path, "small"), data=small)


def test_train_step_is_one_nesterov_sgd_step_worked_by_hand():
    model = torch.nn.Linear(2, 2, bias=False)
    torch.nn.init.zeros_(model.weight)  # logits 0: softmax (0.5, 0.5), loss ln 2
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    precision = resolve_precision(torch.device("cpu"), "fp32")
    scaler = grad_scaler(torch.device("cpu"), precision)
    assert not scaler.is_enabled()  # only fp16 trains scaled
    loss, logits = train_step(model, torch.tensor([[1.0, 2.0]]), torch.tensor([0]), optimizer=optimizer,
                              scaler=scaler, precision=precision)
    assert loss.item() == pytest.approx(0.693147, abs=1e-6) and logits.tolist() == [[0.0, 0.0]]
    # gradient (softmax - onehot) x^T = [[-0.5, -1], [0.5, 1]]; Nesterov's first step moves by lr (1 + m) g
    expected = -0.1 * 1.9 * torch.tensor([[-0.5, -1.0], [0.5, 1.0]])
    torch.testing.assert_close(model.weight.detach(), expected)
