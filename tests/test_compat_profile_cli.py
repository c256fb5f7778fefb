"""The torchvision shim, the Table-1 counter and the ``info`` command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import TINY_BACKBONE

import kpsem
from kpsem.cli import main
from kpsem.profile import format_cost_table, model_cost


def test_shim_makes_grad_cam_importable_in_a_fresh_interpreter() -> None:
    code = (
        "from kpsem._compat import import_torchvision, torchvision_ops_available\n"
        "tv = import_torchvision()\n"
        "import pytorch_grad_cam\n"
        "from torchvision.transforms import Normalize\n"
        "import torch\n"
        "assert hasattr(torch.ops.torchvision, 'nms')\n"
        "print(tv.__version__, torchvision_ops_available())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    version, ops = result.stdout.split()
    assert version.startswith("0.28") and ops in ("True", "False")


def test_shim_is_idempotent() -> None:
    from kpsem._compat import import_torchvision

    assert import_torchvision() is import_torchvision()


def test_mfnet_multiply_adds_match_the_reference_figure() -> None:
    cost = model_cost(kpsem.create_model("mfnet", num_classes=400), name="mfnet")
    assert cost.total.parameters == 7_996_368
    assert cost.parts["backbone"].macs == pytest.approx(11.05e9, rel=0.002)
    assert cost.parts["classifier"].macs == 768 * 400
    assert "kpsem" not in cost.parts


def test_kpsem_costs_at_most_one_and_a_half_percent_of_mfnet() -> None:
    base = model_cost(kpsem.create_model("mfnet", num_classes=101), name="mfnet")
    ours = model_cost(kpsem.create_model("mf_kpsem", num_classes=101), name="mf_kpsem")
    assert ours.parts["backbone"] == base.parts["backbone"]
    assert ours.parts["kpsem"].macs / base.total.macs <= 0.015
    assert ours.parts["classifier"].parameters == (768 + 672) * 101 + 101
    table = format_cost_table([base, ours])
    assert "mf_kpsem   kpsem" in table and "8,136,725" in table


def test_info_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--model", "mfnet", "--num-classes", "400", "--clip", "16x112x112", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    model = report["models"][0]
    assert model["total"]["parameters"] == 7_996_368 and model["clip"] == [16, 112, 112]


def test_info_reports_checkpoints(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from kpsem.checkpoint import save_checkpoint

    model = kpsem.create_model("mf_kpsem", num_classes=3, num_frames=8,
                               backbone=dict(TINY_BACKBONE))
    path = save_checkpoint(tmp_path / "k.pt", model, class_names=["a", "b", "c"], clip_frames=8, clip_size=64)
    assert main(["info", "--checkpoint", str(path)]) == 0
    out = capsys.readouterr().out
    assert "mf_kpsem, 3 classes, kpsem-studio" in out and "8x64x64 clip" in out


def test_info_bad_input_exits_2_with_a_message(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--clip", "16x100x100"]) == 2
    assert "height and width must be multiples of 16" in capsys.readouterr().err
    assert main(["info", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["info", "--clip", "sixteen"])
    assert "clip must look like 16x224x224" in capsys.readouterr().err


def test_module_entry_point_runs() -> None:
    result = subprocess.run([sys.executable, "-m", "kpsem", "--version"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("kpsem ")


def test_help_lists_every_command_without_importing_torch() -> None:
    """`kpsem --help` builds no command's options, so nothing heavy is imported (it took 5 s before)."""
    script = ("import sys\nfrom kpsem.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
              "heavy = ('torch', 'matplotlib', 'pytorch_grad_cam', 'cv2', 'av')\n"
              "heavy = sorted(m for m in heavy if m in sys.modules)\n"
              "print('HEAVY', heavy)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert "usage: kpsem " in result.stdout
    for command in ("info", "synth", "train", "evaluate", "explain", "compare"):
        assert f"    {command}" in result.stdout
    assert "HEAVY []" in result.stdout


def test_a_command_gets_its_own_options_only() -> None:
    from kpsem.cli import build_parser

    args = build_parser("info").parse_args(["info", "--json"])
    assert args.json is True and args.run.__module__ == "kpsem.commands.info"
    with pytest.raises(SystemExit):  # synth's options were not built for an `info` line
        build_parser("info").parse_args(["synth", "--out", "x"])
