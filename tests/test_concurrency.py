"""Concurrent writers and readers: outputs are replaced whole (never a corrupt file or a failed write), and an
explanation never changes a model's train/eval mode or its BatchNorm statistics, in one thread or two."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from kpsem.checkpoint import load_checkpoint
from kpsem.evaluate import read_predictions
from kpsem.explain.gradcam import VideoGradCAM
from kpsem.io import atomic_path, atomic_write_text

WRITES = 60  # per writer process

# A writer: waits for the go file (so both run at once), then writes its own version of the output again and
# again. "predictions" is the app's predictions cache (Parquet), "checkpoint" a training checkpoint.
WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import numpy as np
    kind, name, target, go = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
    if kind == "predictions":
        from kpsem.evaluate import predictions_table, write_predictions
        probs = np.full((40, 3), 1 / 3, np.float32)
        table = predictions_table(probs, [0] * 40, [f"v{i // 2}" for i in range(40)], [i % 2 for i in range(40)],
                                  class_names=["a", "b", "c"], model_id=name)
        write = lambda: write_predictions(table, target, summary={"writer": name})
    else:
        import torch, kpsem
        from kpsem.checkpoint import save_checkpoint
        torch.manual_seed(0)
        model = kpsem.create_model("mfnet", num_classes=3, widths=(16, 32, 32, 64), depths=(1, 1, 1, 1))
        write = lambda: save_checkpoint(target, model, class_names=["a", "b", "c"], clip_frames=8, clip_size=32,
                                        provenance={"writer": name})
    while not go.exists():
        time.sleep(0.005)
    for _ in range(int(sys.argv[5])):
        write()
""")


def _read(kind: str, path: Path) -> str:
    """The writer's name recorded in a complete file (raises on a partial or corrupt one)."""
    if kind == "predictions":
        table = read_predictions(path)
        assert len(table) == 60  # 40 clip rows + 20 video rows: the whole table, not part of it
        return table.attrs["kpsem"]["writer"]
    return load_checkpoint(path).info.provenance["writer"]


@pytest.mark.parametrize("kind", ["predictions", "checkpoint"])
def test_two_processes_write_one_output_while_a_reader_reads(tmp_path: Path, kind: str) -> None:
    target = tmp_path / ("cache.parquet" if kind == "predictions" else "latest.pt")
    go = tmp_path / "go"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, kind, name, str(target), str(go), str(WRITES)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for name in ("first", "second")]
    time.sleep(3)  # both import torch / pyarrow, then wait for the go file
    go.touch()
    seen, reads = set(), 0
    while any(w.poll() is None for w in writers):
        if target.exists():  # the first write may not have landed yet
            seen.add(_read(kind, target))  # every read: a complete file from one writer
            reads += 1
    for writer in writers:
        _, err = writer.communicate()
        assert writer.returncode == 0, err[-2000:]  # no failed write
    assert reads > 0 and seen <= {"first", "second"}
    assert _read(kind, target) in {"first", "second"}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["go", target.name])  # no temporary file left


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path: Path) -> None:
    target = atomic_write_text(tmp_path / "summary.json", '{"old": true}\n')

    def fail_half_way() -> None:
        with atomic_path(target) as partial:
            partial.write_text('{"new": ')
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        fail_half_way()
    assert target.read_text() == '{"old": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_an_atomic_file_gets_ordinary_permissions(tmp_path: Path) -> None:
    import os

    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    written = atomic_write_text(tmp_path / "atomic.txt", "x")
    assert os.stat(written).st_mode == os.stat(plain).st_mode  # not mkstemp's private 0600


# ------------------------------------------------------------------------------------------ explanations


def _state(model: torch.nn.Module) -> tuple[list[bool], dict[str, torch.Tensor]]:
    """Every module's mode and a copy of every buffer (BatchNorm running mean / var, batches tracked)."""
    return [m.training for m in model.modules()], {k: v.clone() for k, v in model.named_buffers()}


def _assert_unchanged(model: torch.nn.Module, before: tuple[list[bool], dict[str, torch.Tensor]]) -> None:
    modes, buffers = _state(model)
    assert modes == before[0]
    assert buffers.keys() == before[1].keys()
    for name, value in buffers.items():
        assert torch.equal(value, before[1][name]), name


def _training_with_frozen_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """A copy in training mode whose first BatchNorm layers are frozen (eval), as when fine-tuning."""
    model = copy.deepcopy(model).train()
    frozen = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)][:2]
    for layer in frozen:
        layer.eval()
    return model


def _reference(model: torch.nn.Module, clip: torch.Tensor) -> np.ndarray:
    """The CAM of an eval-mode copy: what explaining a model means whatever mode it is in."""
    with VideoGradCAM(copy.deepcopy(model).eval(), layer="conv4") as cam:
        return cam.explain(clip).cam_feature


@pytest.mark.parametrize("which", [0, 1], ids=["mfnet", "mf_kpsem"])
def test_explaining_a_training_model_changes_neither_its_modes_nor_its_statistics(tiny_pair, tiny_clip,
                                                                                  which) -> None:
    model = _training_with_frozen_batchnorm(tiny_pair[which])
    before = _state(model)
    expected = _reference(model, tiny_clip)
    with VideoGradCAM(model, layer="conv4") as cam:
        _assert_unchanged(model, before)  # opening an explainer changes nothing either
        result = cam.explain(tiny_clip)
    _assert_unchanged(model, before)  # the frozen layers are still frozen, the rest still training
    np.testing.assert_allclose(result.cam_feature, expected, rtol=1e-5, atol=1e-7)


def test_explainers_that_overlap_in_time_leave_the_mode_as_it_was(tiny_pair, tiny_clip) -> None:
    model = copy.deepcopy(tiny_pair[0]).train()
    before = _state(model)
    first = VideoGradCAM(model, layer="tail")
    second = VideoGradCAM(model, layer="tail")  # opened while the first is open (two sessions)
    first.explain(tiny_clip)
    second.explain(tiny_clip)
    first.release()  # closed in the order they were opened, not nested
    second.release()
    _assert_unchanged(model, before)
    assert model.training


def test_two_threads_explaining_one_training_model(tiny_pair, tiny_clip, one_thread) -> None:
    model = _training_with_frozen_batchnorm(tiny_pair[1])
    before = _state(model)
    expected = _reference(model, tiny_clip)
    results: list[np.ndarray] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def explain_repeatedly() -> None:
        try:
            start.wait()
            for _ in range(8):
                with VideoGradCAM(model, layer="conv4") as cam:
                    results.append(cam.explain(tiny_clip).cam_feature)
        except BaseException as error:  # noqa: BLE001 - reported by the test below
            errors.append(error)

    threads = [threading.Thread(target=explain_repeatedly) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert len(results) == 16
    for cam in results:  # every explanation as in eval mode: none ran while another had switched the mode back
        np.testing.assert_allclose(cam, expected, rtol=1e-5, atol=1e-7)
    _assert_unchanged(model, before)
