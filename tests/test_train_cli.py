"""The train and evaluate commands end to end on a tiny on-disk data set, in one process and under torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kpsem.checkpoint import load_checkpoint, read_checkpoint
from kpsem.cli import main
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
