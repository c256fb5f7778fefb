"""Commands that answer at once and an app that loads only what its first page needs: the first line of a
long command before any heavy import, ``explain``'s progress, its figures drawn in processes as they are
drawn one by one, one analysis per model, and the Explorer without other pages' modules. Speed itself is
measured by benchmarks/bench_startup.py, never here."""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kpsem.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
# Prints a marker the moment anything starts importing torch, so a test can see what came first.
_WATCH_TORCH = """
import sys
class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            print("IMPORTING torch", flush=True)
            sys.meta_path.remove(self)
        return None
sys.meta_path.insert(0, Watch())
"""


def _python(code: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_kpsem_help_imports_no_torch() -> None:
    done = _python(_WATCH_TORCH + "from kpsem.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n"
                   "    pass\nprint('torch loaded:', 'torch' in sys.modules)")
    assert done.returncode == 0, done.stderr
    assert "IMPORTING torch" not in done.stdout and "torch loaded: False" in done.stdout


def test_every_commands_help_imports_no_torch_matplotlib_or_pandas() -> None:
    import kpsem.commands

    commands = sorted(m.name for m in pkgutil.iter_modules(kpsem.commands.__path__) if not m.name.startswith("_"))
    assert {"explain", "faithfulness", "info", "probe", "synth", "train"} <= set(commands)
    code = ("import sys\nfrom kpsem.cli import main\nheavy = ('torch', 'matplotlib', 'pandas')\n"
            "for command in sys.argv[1:]:\n    try:\n        main([command, '--help'])\n    except SystemExit:\n"
            "        pass\n    print('LOADED', command, [m for m in heavy if m in sys.modules])\n")
    done = _python(code, *commands)
    assert done.returncode == 0, done.stderr
    loaded = [line for line in done.stdout.splitlines() if line.startswith("LOADED")]
    assert loaded == [f"LOADED {command} []" for command in commands]


def test_loading_a_checkpoint_imports_no_torch_dynamo(app_demo) -> None:
    # The size check builds the model on the meta device; drawing He-normal weights there went through
    # torch._refs, which imports torch._dynamo: about 1 s for every command and the app's first load.
    code = ("import sys\nfrom kpsem.checkpoint import load_checkpoint\nfor path in sys.argv[1:]:\n"
            "    load_checkpoint(path)\nprint('dynamo loaded:', 'torch._dynamo' in sys.modules)")
    done = _python(code, str(app_demo.baseline), str(app_demo.kpsem))
    assert done.returncode == 0, done.stderr
    assert "dynamo loaded: False" in done.stdout


def test_the_names_help_lists_are_their_owners() -> None:
    """kpsem.names spells out what the owners compute with torch; they must agree."""
    from kpsem import names
    from kpsem.explain import faithfulness, figures, gradcam
    from kpsem.explain.draw import DEFAULT_CMAP, DEFAULT_DIFFERENCE_CMAP
    from kpsem.models import list_models
    from kpsem.probes import PROBES

    assert names.CAM_LAYERS == gradcam.CAM_LAYERS
    assert tuple(sorted(names.MODEL_NAMES)) == tuple(sorted(list_models()))
    assert names.PROBE_NAMES == PROBES
    assert (figures.COLUMN_WIDTHS, figures.FORMATS, faithfulness.FILLS) == \
        (names.COLUMN_WIDTHS, names.FIGURE_FORMATS, names.FAITHFULNESS_FILLS)
    assert (DEFAULT_CMAP, DEFAULT_DIFFERENCE_CMAP) == ("viridis", "coolwarm")


def test_a_long_command_says_what_it_does_before_importing_torch(tmp_path: Path) -> None:
    out = tmp_path / "figures"
    done = _python(_WATCH_TORCH + "import sys\nfrom kpsem.cli import main\nsys.exit(main(sys.argv[1:]))",
                   "explain", "--baseline", "base.pt", "--kpsem", "ours.pt", "--clip", "clip.mp4", "--out", str(out))
    lines = done.stdout.splitlines()
    assert lines[0] == (f"kpsem explain: base.pt and ours.pt on clip.mp4, figures to {out}; importing PyTorch, "
                        "Grad-CAM and matplotlib ...")
    assert lines.index("IMPORTING torch") > 0
    assert done.returncode == 2 and "base.pt does not exist" in done.stderr  # then it fails as before

    # Help, --json output and a torchrun rank other than 0 print no such line.
    assert not _python("from kpsem.cli import main; main(['info', '--json'])").stdout.startswith("kpsem info:")
    done = subprocess.run([sys.executable, "-m", "kpsem", "synth", "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.stdout.startswith("usage: kpsem synth")


def test_every_command_defaults_to_the_automatic_device() -> None:
    common = ["--baseline", "a.pt", "--kpsem", "b.pt", "--clip", "c.mp4", "--out", "o"]
    assert build_parser("explain").parse_args(["explain", *common]).device == "auto"
    assert build_parser("evaluate").parse_args(["evaluate", "--checkpoint", "a.pt", "--data", "d"]).device == "auto"


@pytest.fixture
def explain_inputs(tiny_pair, tmp_path: Path) -> list[str]:
    from kpsem.checkpoint import save_checkpoint

    names = [f"c{i}" for i in range(5)]
    for model, stem in zip(tiny_pair, ("base", "ours")):
        save_checkpoint(tmp_path / f"{stem}.pt", model, class_names=names, clip_frames=8, clip_size=64)
    np.save(tmp_path / "clip.npy", np.random.default_rng(0).integers(0, 256, (8, 64, 64, 3), dtype=np.uint8))
    return ["explain", "--baseline", str(tmp_path / "base.pt"), "--kpsem", str(tmp_path / "ours.pt"),
            "--clip", str(tmp_path / "clip.npy"), "--formats", "png", "svg", "--dpi", "40", "--device", "cpu"]


def test_figures_drawn_in_processes_are_those_drawn_one_by_one(explain_inputs: list[str], tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    assert main([*explain_inputs, "--out", str(serial), "--jobs", "1"]) == 0
    printed = capsys.readouterr().out
    assert main([*explain_inputs, "--out", str(parallel), "--jobs", "2"]) == 0
    files = sorted(p.name for p in serial.iterdir())
    assert files == sorted(p.name for p in parallel.iterdir()) and len(files) == 16  # 5 figures x 3 files, analysis
    for name in files:
        if name.endswith(".json"):
            a, b = (json.loads((folder / name).read_text()) for folder in (serial, parallel))
            a.get("inputs", {}).pop("argv", None)
            b.get("inputs", {}).pop("argv", None)
            assert a == b, name
        else:
            assert (serial / name).read_bytes() == (parallel / name).read_bytes(), name
    # progress: one line per step, each with the seconds since the start
    steps = [line for line in printed.splitlines() if line.startswith("[")]
    assert [s.split("] ", 1)[1].split(" ")[0] for s in steps] == ["loading", "decoding", "analysing", *(
        ["analysing"] * (len(steps) - 6)), "counting", "drawing", "wrote"]
    with pytest.raises(SystemExit):
        main([*explain_inputs, "--out", str(tmp_path / "x"), "--jobs", "zero"])
    assert main([*explain_inputs, "--out", str(tmp_path / "x"), "--jobs", "0"]) == 2
    assert "--jobs must be at least 1; got 0" in capsys.readouterr().err


def test_the_difference_runs_only_the_model_whose_cam_explains_another_class(
        explain_inputs: list[str], tiny_pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from kpsem.checkpoint import save_checkpoint
    from kpsem.explain import analysis

    with torch.no_grad():  # the tiny baseline now predicts class 0 whatever it sees; the KPSEM model does not
        tiny_pair[0].classifier.bias[0] += 100
    save_checkpoint(explain_inputs[2], tiny_pair[0], class_names=[f"c{i}" for i in range(5)], clip_frames=8,
                    clip_size=64)
    calls = []
    original = analysis.analyse_clip
    monkeypatch.setattr(analysis, "analyse_clip", lambda *a, **k: calls.append(k.get("target")) or original(*a, **k))
    out = tmp_path / "out"
    # The true class is the KPSEM model's prediction (c4 here): its CAM already explains it; the baseline's not.
    assert main([*explain_inputs, "--out", str(out), "--true-class", "c4", "--jobs", "1"]) == 0
    summary = json.loads((out / "analysis.json").read_text())
    assert (summary["baseline"]["target"], summary["kpsem"]["target"]) == (0, 4)
    assert calls == [None, None, 4]  # each model once for its prediction, then only the baseline for c4
    settings = json.loads((out / "fig9_gradcam_difference.json").read_text())["settings"]
    assert settings["difference_target"]["index"] == 4 and settings["targets"] == [4, 4]


def test_a_pair_combined_from_two_analyses_is_the_pair_analysed_together(tiny_pair, tiny_clip) -> None:
    from kpsem.explain.analysis import analyse_clip, analyse_pair, combine_pair

    together = analyse_pair(*tiny_pair, tiny_clip, target=3)
    apart = combine_pair(*(analyse_clip(m, tiny_clip, target=3) for m in tiny_pair))
    assert apart.shared_scale == together.shared_scale
    for field in ("baseline_shared", "kpsem_shared", "difference", "difference_normalised"):
        np.testing.assert_array_equal(getattr(apart, field), getattr(together, field), err_msg=field)
    other = combine_pair(analyse_clip(tiny_pair[0], tiny_clip, target=1),
                         analyse_clip(tiny_pair[1], tiny_clip, target=3))
    assert other.difference is None and other.difference_normalised is None  # two classes: no difference


def test_the_program_exits_at_once_with_every_file_written(explain_inputs: list[str], tmp_path: Path) -> None:
    out = tmp_path / "figures"
    done = subprocess.run([sys.executable, "-m", "kpsem", *explain_inputs, "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].endswith(f"wrote 16 files to {out}")  # the last line was not lost
    assert len(list(out.iterdir())) == 16
    assert json.loads((out / "analysis.json").read_text())["difference_target"]
    failed = subprocess.run([sys.executable, "-m", "kpsem", *explain_inputs, "--out", str(out / "analysis.json")],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert failed.returncode == 2
    assert failed.stderr.startswith("error: --out ") and "is an existing file" in failed.stderr


def test_the_explorer_loads_no_module_only_other_pages_need(app_demo, tmp_path: Path) -> None:
    script = f"""
import sys
sys.path.insert(0, {str(REPO / "tests")!r})
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({str(REPO / "app.py")!r}, default_timeout=300)
at.run()
assert not at.exception and [s.value for s in at.subheader][:2] == ["MFNet", "MF-KPSEM"]
print(sorted(m for m in sys.modules if m in {{
    "kpsem.explain.figures", "kpsem.explain.compare", "kpsem.evaluate", "kpsem.app_support.drawing.tables",
    "kpsem.app_support.caching.predictions", "kpsem.app_support.caching.figures", "pyarrow.parquet"}}))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "KPSEM_CACHE_DIR": str(tmp_path), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
