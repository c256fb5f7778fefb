"""The train and evaluate commands end to end on a tiny on-disk data set, in one process and under torchrun."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kpsem.checkpoint import load_checkpoint, read_checkpoint
from kpsem.cli import build_parser, main
from kpsem.evaluate import evaluate_checkpoint, read_predictions

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
TINY = ["--widths", "16,32,32,64", "--depths", "1,1,1,1", "--frames", "8", "--size", "32"]


def _train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--out", str(out), "--epochs", "1", "--batch-size", "4", "--workers", "0",
            "--val-clips", "2", "--log-every", "1", "--no-progress", "--device", "cpu", *TINY, *extra]


def test_train_then_evaluate_commands(frame_folders, tmp_path, capsys):
    out = tmp_path / "run"
    options = ("--arch", "mf_kpsem", "--num-sets", "2", "--centre-lr-mult", "0.1")
    assert main(_train_args(frame_folders, out, *options)) == 0
    printed = capsys.readouterr().out
    assert "trained 1 epochs (2 steps)" in printed and "last validation: top-1" in printed
    info = load_checkpoint(out / "final.pt").info
    assert info.config["num_sets"] == 2 and info.class_names == ["class0", "class1", "class2"]
    assert info.provenance["dataset"]["layout"] == "folders" and info.provenance["dataset"]["train"]["videos"] == 9
    assert json.loads((out / "config.json").read_text())["config"]["centre_lr_mult"] == 0.1

    # continue for a second epoch from the run folder
    assert _resume_two_epochs(frame_folders, out) == 0

    preds = tmp_path / "preds.parquet"
    assert main(["evaluate", "--checkpoint", str(out / "final.pt"), "--data", str(frame_folders), "--split", "test",
                 "--clips", "2", "--out", str(preds), "--workers", "0", "--device", "cpu", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "final:mf_kpsem on test: 9 videos, 18 clips" in printed
    table = read_predictions(preds)
    assert sorted(table.groupby("level").size().items()) == [("clip", 18), ("video", 9)]


def _resume_two_epochs(data: Path, out: Path) -> int:
    args = _train_args(data, out, "--arch", "mf_kpsem", "--num-sets", "2", "--centre-lr-mult", "0.1", "--resume")
    args[args.index("--epochs") + 1] = "2"
    code = main(args)
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["epochs"], summary["steps"]) == (2, 4) and summary["resumed_from"].endswith("epoch_001.pt")
    return code


def test_bad_command_lines_end_with_a_message(frame_folders, tmp_path, capsys):
    assert main(_train_args(frame_folders, tmp_path / "r", "--arch", "mfnet", "--num-sets", "2")) == 2
    assert "--num-sets applies to --arch mf_kpsem only, not mfnet" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(tmp_path / "nope.pt"), "--data", str(frame_folders)]) == 2
    assert "nope.pt does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(_train_args(frame_folders, tmp_path / "r", "--widths", "16,32"))
    assert "expected 4 comma-separated integers" in capsys.readouterr().err


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "kpsem", *args]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_torchrun_two_processes_train_and_evaluate_with_gloo(frame_folders, tmp_path):
    out = tmp_path / "ddp"
    _torchrun(*_train_args(frame_folders, out, "--arch", "mfnet"))
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 2
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epoch = next(r for r in records if r["event"] == "epoch")
    # 9 videos over 2 ranks -> 5 per rank (one padded) -> 1 step of 4 clips each; validation sees every clip once
    assert epoch["step"] == 1 and "val_top1" in epoch
    state = read_checkpoint(out / "checkpoints" / "epoch_001.pt")["training_state"]
    assert len(state["rng"]) == 2  # both ranks' RNG states travel in the checkpoint

    preds = tmp_path / "ddp_preds.parquet"
    done = _torchrun("evaluate", "--checkpoint", str(out / "final.pt"), "--data", str(frame_folders), "--clips", "3",
                     "--out", str(preds), "--workers", "0", "--device", "cpu", "--no-progress",
                     "--precision", "fp32")  # compared with the library's fp32 evaluation below
    assert done.stdout.count("final:mfnet on test: 9 videos, 27 clips") == 1  # rank 0 alone prints
    sharded = read_predictions(preds)
    single = evaluate_checkpoint(out / "final.pt", data=frame_folders, clips=3, workers=0, batch_size=5).predictions
    assert list(sharded.video_id) == list(single.video_id) and list(sharded.level) == list(single.level)
    np.testing.assert_allclose(np.stack(sharded.probs), np.stack(single.probs), rtol=1e-4, atol=1e-6)
    assert torch.equal(torch.tensor(sharded.correct_top1.to_numpy()), torch.tensor(single.correct_top1.to_numpy()))


def test_every_train_config_field_is_a_train_option_with_its_help():
    from dataclasses import fields

    from kpsem.commands.train import add_arguments
    from kpsem.data import FLIP_MODES
    from kpsem.models import list_models
    from kpsem.models.memory_format import MEMORY_FORMATS
    from kpsem.train_config import ARCHS, FLIP_CHOICES, MEMORY_FORMAT_CHOICES, TrainConfig

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    by_dest = {a.dest: a for a in parser._actions}
    for spec in fields(TrainConfig):
        assert spec.metadata["help"] and spec.metadata["group"], spec.name
        if spec.name in ("model_options", "precision"):  # the MF-KPSEM group and the shared --precision
            continue
        action = by_dest[spec.name]
        expected = f"--no-{spec.name}" if spec.default is True else f"--{spec.name}"
        assert action.option_strings == [expected.replace("_", "-")]
        assert spec.metadata["help"] in action.help
    # the spellings kept free of torch agree with the modules that own them
    assert FLIP_CHOICES == FLIP_MODES and tuple(MEMORY_FORMATS) == MEMORY_FORMAT_CHOICES
    assert set(ARCHS) <= set(list_models())
    from kpsem.models import has_kpsem, model_class
    from kpsem.train_config import KPSEM_OF

    kpsem_of = {model_class(name).baseline_arch: name for name in list_models() if has_kpsem(name)}
    assert kpsem_of == KPSEM_OF


def test_the_mf_kpsem_flags_spell_the_model_configs_fields_defaults_and_choices():
    """KPSEMFlags describes MFKPSEMConfig's options without torch (for --help); here the two must agree."""
    import typing
    from dataclasses import fields

    from kpsem.commands.train import add_arguments
    from kpsem.models.kpsem_module import SUPPORTED_REGIONS
    from kpsem.models.mf_kpsem import MFKPSEMConfig
    from kpsem.models.mfnet import MFNet
    from kpsem.models.r3d import R3D, R3DKPSEMConfig
    from kpsem.train_config import GRADIENT_CHOICES, REGION_CHOICES, STAGE_CHOICES, KPSEMFlags

    model = {spec.name: spec for spec in fields(MFKPSEMConfig)}
    model_types = typing.get_type_hints(MFKPSEMConfig)
    flag_types = typing.get_type_hints(KPSEMFlags)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    by_dest = {a.dest: a for a in parser._actions}
    for spec in fields(KPSEMFlags):
        assert spec.name in model and spec.default == model[spec.name].default, spec.name
        kind = model_types[spec.name]
        literal = typing.get_args(kind) if typing.get_origin(kind) is typing.Literal else ()
        if literal:  # a Literal's values are all offered (insert_after adds R3D-50's stages)
            assert flag_types[spec.name] is str and set(literal) <= set(spec.metadata["choices"]), spec.name
        else:
            assert flag_types[spec.name] is kind, spec.name
        action = by_dest[spec.name]  # a flag of its own, unset unless given
        assert action.option_strings == ["--" + spec.name.replace("_", "-")] and action.help == spec.metadata["help"]
        assert action.choices == spec.metadata.get("choices")
    assert (*MFNet.stage_names, *R3D.stage_names) == STAGE_CHOICES
    assert SUPPORTED_REGIONS == REGION_CHOICES
    assert typing.get_args(model_types["gradient"]) == GRADIENT_CHOICES
    r3d_stage = next(spec.default for spec in fields(R3DKPSEMConfig) if spec.name == "insert_after")
    assert f"(R3D-50, {r3d_stage})" in KPSEMFlags.__dataclass_fields__["insert_after"].metadata["help"]


def test_options_map_onto_train_config_and_defaults_are_the_dataclass_ones():
    from kpsem.commands.train import config_from_args
    from kpsem.train_config import TrainConfig

    def parsed(*words: str) -> TrainConfig:
        return config_from_args(build_parser("train").parse_args(["train", *words]))

    assert parsed("--data", "d") == TrainConfig(data="d", precision="auto")  # the command's precision: auto
    given = parsed("--data", "d", "--arch", "mf_kpsem", "--val-split", "none", "--interval", "1,2,2,3", "--lr-steps",
                   "5,8", "--widths", "16,32,32,64", "--no-nesterov", "--no-progress", "--reinit-classifier",
                   "--resume", "--num-sets", "2", "--fixed-regions", "--amp", "off", "--memory-format", "contiguous",
                   "--lr", "0.01", "--eval-batch-size", "3")
    assert given == TrainConfig(data="d", val_split=None, interval=(1, 2, 2, 3), lr_steps=(5, 8),
                                widths=(16, 32, 32, 64), nesterov=False, progress=False, reinit_classifier=True,
                                resume="auto", model_options={"num_sets": 2, "fixed_regions": True}, precision="fp32",
                                memory_format="contiguous", lr=0.01, eval_batch_size=3)
    assert parsed("--data", "d", "--resume", "run/checkpoints/epoch_002.pt").resume == "run/checkpoints/epoch_002.pt"


def test_a_runs_config_json_repeats_it_and_options_override_it(frame_folders, tmp_path, capsys):
    from kpsem.commands.train import config_from_args
    from kpsem.train_config import TrainConfig

    def parsed(*words: str) -> TrainConfig:
        return config_from_args(build_parser("train").parse_args(["train", *words]))

    out = tmp_path / "run"
    words = _train_args(frame_folders, out, "--arch", "mfnet", "--lr-steps", "1", "--interval", "1,2",
                        "--val-split", "none", "--no-nesterov", "--precision", "fp32", "--dropout", "0.25")
    assert main(words) == 0
    capsys.readouterr()
    original = parsed(*words[1:])
    saved = out / "config.json"
    assert parsed("--config", str(saved)) == original == TrainConfig.from_dict(json.loads(saved.read_text())["config"])
    again = parsed("--config", str(saved), "--epochs", "3", "--out", str(tmp_path / "again"), "--precision", "bf16")
    assert again == TrainConfig(**{**original.to_dict(), "epochs": 3, "out": str(tmp_path / "again"),
                                   "precision": "bf16"})
    # a plain object of fields works too; MF-KPSEM options given on the command line join the file's
    (tmp_path / "plain.json").write_text(json.dumps({"data": "d", "model_options": {"num_sets": 2}}))
    assert parsed("--config", str(tmp_path / "plain.json"), "--embed-dim", "12").model_options == {
        "num_sets": 2, "embed_dim": 12}


def test_a_bad_config_file_or_a_missing_data_set_is_named(tmp_path, capsys):
    from kpsem.train_config import read_config_file

    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({"config": {"data": "d", "lrr": 0.1}, "classes": ["a"]}))
    assert main(["train", "--config", str(bad)]) == 2
    assert f"--config {bad}: unknown TrainConfig field 'lrr' (did you mean 'lr'?)" in capsys.readouterr().err
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="must hold a JSON object of TrainConfig fields; got list"):
        read_config_file(tmp_path / "list.json")
    (tmp_path / "broken.json").write_text("{'data': 1}")
    with pytest.raises(ValueError, match="broken.json is not JSON"):
        read_config_file(tmp_path / "broken.json")
    with pytest.raises(ValueError, match="nope.json does not exist"):
        read_config_file(tmp_path / "nope.json")
    assert main(["train", "--out", str(tmp_path / "r")]) == 2
    assert "--data is required: pass --data DATA, or --config with a file that sets data" in capsys.readouterr().err


def test_train_options_are_built_without_importing_torch():
    code = ("import sys\nfrom kpsem.cli import build_parser\nbuild_parser('train').parse_args(['train', '--data', 'd'])"
            "\nprint('torch loaded:', 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "torch loaded: False"


def test_process_group_outside_torchrun_is_one_process_and_passes_errors_through(monkeypatch):
    from kpsem.distributed import process_group

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    with process_group(device="cpu") as info:
        assert (info.rank, info.world_size, info.owns_group, info.device) == (0, 1, False, torch.device("cpu"))
    with pytest.raises(RuntimeError, match="a rank failed"), process_group(device="cpu"):
        raise RuntimeError("a rank failed")
    assert not torch.distributed.is_initialized()
