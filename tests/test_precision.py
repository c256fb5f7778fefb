"""Precision as a choice: what ``auto`` picks and why, the commands' option, and where the choice is recorded.

``auto`` follows the CPU's flags (detected, never assumed): the tests below substitute the flags, so they
hold on any machine. Agreement and speed of bf16 against fp32 on the demo are measured by
benchmarks/bench_precision.py, never here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_BACKBONE, ToyClips

import kpsem.precision as precision_module
from kpsem.checkpoint import save_checkpoint
from kpsem.cli import build_parser, main
from kpsem.commands import _precision
from kpsem.evaluate import (
    evaluate_checkpoint,
    predictions_precision,
    predictions_table,
    read_predictions,
    write_predictions,
)
from kpsem.models import create_model, has_kpsem
from kpsem.precision import PRECISIONS, cpu_bf16_support, resolve_precision
from kpsem.train import TrainConfig, _check_resumable

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = ["class0", "class1", "class2"]


@pytest.fixture
def cpu_flags(monkeypatch):
    """Pretend the CPU has the given /proc/cpuinfo flags (None: no such file), for one test."""

    def pretend(flags: set[str] | None) -> None:
        monkeypatch.setattr(precision_module, "_cpu_flags", lambda: flags)
        cpu_bf16_support.cache_clear()

    yield pretend
    cpu_bf16_support.cache_clear()


@pytest.mark.parametrize(("flags", "expected", "why"), [
    ({"avx2", "avx512f", "avx512_bf16"}, "bf16", r"the CPU supports bf16 natively \(avx512_bf16; torch sees "),
    ({"avx2", "amx_bf16", "amx_tile"}, "bf16", r"the CPU supports bf16 natively \(amx_bf16; torch sees "),
    ({"avx2", "avx512f"}, "fp32", r"the CPU has no native bf16 \(no avx512_bf16 or amx_bf16 flag; torch sees .*\), "
                                  r"so fp32"),
    (set(), "fp32", r"the CPU has no native bf16"),
    (None, "fp32", r"bf16 support unknown on this system \(.*no /proc/cpuinfo; torch sees .*\), so fp32"),
], ids=["avx512_bf16", "amx_bf16", "avx512-without-bf16", "no-flags", "no-cpuinfo"])
def test_auto_on_the_cpu_follows_its_flags(cpu_flags, flags, expected, why):
    cpu_flags(flags)
    chosen = resolve_precision("cpu", "auto")
    assert (chosen.requested, chosen.name, chosen.device) == ("auto", expected, "cpu")
    assert re.search(why, chosen.reason), chosen.reason
    assert chosen.dtype == (torch.bfloat16 if expected == "bf16" else None)
    assert chosen.describe().startswith(f"precision {expected} (")
    assert resolve_precision("cpu", "fp32").name == "fp32" and resolve_precision("cpu", "bf16").name == "bf16"


def test_the_flags_are_this_machines_own():
    cpu_bf16_support.cache_clear()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        pytest.skip("no /proc/cpuinfo on this system")
    flags = {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}
    supported, reason = cpu_bf16_support()
    assert supported == bool({"avx512_bf16", "amx_bf16"} & flags)
    assert torch.backends.cpu.get_cpu_capability() in reason


@pytest.mark.parametrize(("bf16", "expected", "reason"), [(True, "bf16", "the GPU supports bf16"),
                                                         (False, "fp16", "the GPU has no bf16, so fp16")])
def test_auto_on_cuda(monkeypatch, bf16, expected, reason):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)  # no GPU needed
    chosen = resolve_precision(torch.device("cuda", 0), "auto")
    assert (chosen.name, chosen.device, chosen.reason) == (expected, "cuda", reason)


def test_names_and_records():
    assert PRECISIONS == _precision.CHOICES  # the commands' choices (built without importing torch)
    assert resolve_precision("cpu", "off").name == "fp32"  # the deprecated --amp spelling
    with pytest.raises(ValueError, match=r"^precision must be one of auto, fp32, bf16, fp16; got 'fp8'$"):
        resolve_precision("cpu", "fp8")
    chosen = resolve_precision("cpu", "bf16")
    assert chosen.as_dict() == {"precision": "bf16", "requested": "bf16", "device": "cpu", "reason": "as asked"}
    assert chosen.describe() == "precision bf16 (bf16 autocast; bf16: as asked)"
    with chosen.autocast():
        assert torch.is_autocast_enabled("cpu")
    with resolve_precision("cpu", "fp32").autocast():
        assert not torch.is_autocast_enabled("cpu")


def test_commands_take_precision_and_the_deprecated_amp(capsys):
    args = build_parser("evaluate").parse_args(["evaluate", "--checkpoint", "c.pt", "--data", "d"])
    assert _precision.precision_from_args(args) == "auto"  # the commands' default
    args = build_parser("evaluate").parse_args(["evaluate", "--checkpoint", "c.pt", "--data", "d", "--amp", "off"])
    assert _precision.precision_from_args(args) == "fp32"
    assert "warning: --amp is deprecated; use --precision fp32" in capsys.readouterr().err
    args = build_parser("train").parse_args(["train", "--data", "d", "--amp", "bf16", "--precision", "fp16"])
    with pytest.raises(ValueError, match="--amp bf16 and --precision fp16 ask for different precisions"):
        _precision.precision_from_args(args)
    required = {"train": ["--data", "d"], "evaluate": ["--checkpoint", "c.pt", "--data", "d"],
                "explain": ["--baseline", "b.pt", "--kpsem", "k.pt", "--clip", "c.mp4", "--out", "o"],
                "probe": ["--checkpoint", "c.pt", "--data", "d"],
                "faithfulness": ["--baseline", "b.pt", "--kpsem", "k.pt", "--data", "d", "--out", "o.parquet"]}
    for command, words in required.items():
        args = build_parser(command).parse_args([command, *words, "--precision", "fp16"])
        assert _precision.precision_from_args(args) == "fp16", command
    with pytest.raises(SystemExit):
        build_parser("probe").parse_args(["probe", *required["probe"], "--precision", "fp8"])


def test_train_config_reads_old_amp_fields_and_checks_names(tmp_path):
    config = TrainConfig.from_dict({"arch": "mfnet", "amp": "off"})  # a config.json from before the rename
    assert config.precision == "fp32" and config.memory_format == "channels_last_3d"
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, fp16; got 'fp8'"):
        TrainConfig(precision="fp8")
    with pytest.raises(ValueError, match="memory_format must be one of channels_last_3d, contiguous; got 'nchw'"):
        TrainConfig(memory_format="nchw")
    old = {**TrainConfig(precision="bf16").to_dict(), "amp": "bf16"}
    del old["precision"], old["memory_format"]
    _check_resumable(old, TrainConfig(precision="bf16"), tmp_path / "old.pt")  # the same run: resumable


def _checkpoint(tmp_path: Path, arch: str) -> Path:
    torch.manual_seed(0)
    extra = {"backbone": TINY_BACKBONE, "num_frames": 8} if has_kpsem(arch) else TINY_BACKBONE
    model = create_model(arch, num_classes=3, **extra)
    return save_checkpoint(tmp_path / f"{arch}.pt", model.eval(), class_names=CLASSES, clip_frames=8, clip_size=32)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_predictions_tables_record_their_precision(tmp_path, precision):
    out = tmp_path / "preds.parquet"
    result = evaluate_checkpoint(_checkpoint(tmp_path, "mf_kpsem"), dataset=ToyClips(4, train=False),
                                 class_names=CLASSES, clips=1, batch_size=4, workers=0, precision=precision, out=out)
    assert result.precision["precision"] == precision and result.summary()["precision"]["requested"] == precision
    table = read_predictions(out)
    assert predictions_precision(table) == precision
    assert json.loads(out.with_suffix(".json").read_text())["precision"]["precision"] == precision
    # a table written before the precision was recorded reads as before, with no precision
    old = predictions_table(np.full((1, 3), 1 / 3, np.float32), [0], ["v"], [0], class_names=CLASSES, model_id="m")
    write_predictions(old, tmp_path / "old.parquet", summary={"model_id": "m"})
    assert predictions_precision(read_predictions(tmp_path / "old.parquet")) is None


def test_bf16_analysis_gives_float32_maps_and_internals(tiny_pair, tiny_clip):
    from kpsem.explain.analysis import analyse_pair

    with resolve_precision("cpu", "bf16").autocast():
        pair = analyse_pair(*tiny_pair, tiny_clip, cam_layer="conv4")
    reference = analyse_pair(*tiny_pair, tiny_clip, cam_layer="conv4")
    internals = pair.kpsem.internals
    assert internals.centres.dtype == internals.key_points.dtype == internals.values.dtype == torch.float32
    assert pair.kpsem.cam_raw.dtype == np.float32 and pair.kpsem.probs.dtype in (np.float32, np.float64)
    np.testing.assert_allclose(pair.kpsem.probs, reference.kpsem.probs, atol=0.05)  # bf16: close, not equal


def test_explain_records_its_precision_in_every_sidecar(tiny_pair, tmp_path, capsys):
    for model, stem in zip(tiny_pair, ("base", "ours")):
        save_checkpoint(tmp_path / f"{stem}.pt", model, class_names=[f"c{i}" for i in range(5)], clip_frames=8,
                        clip_size=64)
    np.save(tmp_path / "clip.npy", np.random.default_rng(0).integers(0, 256, (8, 64, 64, 3), dtype=np.uint8))
    out = tmp_path / "out"
    assert main(["explain", "--baseline", str(tmp_path / "base.pt"), "--kpsem", str(tmp_path / "ours.pt"),
                 "--clip", str(tmp_path / "clip.npy"), "--out", str(out), "--formats", "png", "--dpi", "30",
                 "--precision", "bf16"]) == 0
    assert "explaining in precision bf16 (bf16 autocast; bf16: as asked) on cpu" in capsys.readouterr().out
    sidecars = sorted(out.glob("*.json"))
    assert len(sidecars) >= 5  # every figure's, and analysis.json
    for path in sidecars:
        assert json.loads(path.read_text())["precision"]["precision"] == "bf16", path.name


def test_the_app_offers_the_choice_and_its_footer_says_what_ran(app):
    """The sidebar's Precision control (default auto) reaches the Explorer's analysis; the footer names it."""
    at = app.run()
    assert not at.exception and not at.error
    assert at.sidebar.selectbox(key="precision").value == "auto"

    def footer() -> str:
        return next(c.value for c in at.caption if c.value.startswith("Device "))

    from kpsem.app_support.drawing.text import escape_markdown  # the footer is Markdown: its text is escaped

    assert escape_markdown(resolve_precision("cpu", "auto").describe()) in footer()
    at.sidebar.selectbox(key="precision").set_value("fp32").run()
    assert not at.exception and not at.error
    assert escape_markdown("precision fp32 (full precision; fp32: as asked)") in footer() and "(fresh)" in footer()
