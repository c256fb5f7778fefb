"""Bad and hostile input: no non-result shown as a result, bounded memory for every file, no traceback.

Each case is a row of the README's "Bad and hostile input" table. Memory is measured in a child process:
its peak RSS (VmHWM, which ru_maxrss reports) is reset to the RSS before the one call and read after it,
and its address space is capped, so that a regression fails instead of taking the shared machine's memory.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import TINY_BACKBONE

import kpsem
from kpsem import limits
from kpsem.checkpoint import (
    FORMAT,
    CheckpointError,
    NonFiniteOutputError,
    describe_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from kpsem.cli import main
from kpsem.data import AnnotationError, VideoError, open_dataset, probe_video, read_frames
from kpsem.evaluate import COLUMNS, PredictionsError, _schema, evaluate_checkpoint, read_predictions
from kpsem.explain.analysis import analyse_clip

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["class0", "class1", "class2"]
GIB = 2**30

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_mfnet(num_classes: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return kpsem.create_model("mfnet", num_classes=num_classes, **TINY_BACKBONE).eval()


def own_checkpoint(path: Path, model: torch.nn.Module | None = None, **kwargs: object) -> Path:
    """A tiny MFNet in our format: 3 classes, 8-frame 32-pixel clips (the frame_folders data set's)."""
    options = {"class_names": CLASSES, "clip_frames": 8, "clip_size": 32, **kwargs}
    return save_checkpoint(path, model if model is not None else tiny_mfnet(), **options)


def resave(path: Path, edit: Callable[[dict], None]) -> Path:
    """Load ``path``, let ``edit`` change the dict, and save it again with plain torch.save (no checksum update)."""
    obj = torch.load(path, weights_only=True)
    edit(obj)
    torch.save(obj, path)
    return path


_MEASURE = """
import resource
def status(field):  # kB
    return int(open("/proc/self/status").read().split(field + ":")[1].split()[0])
resource.setrlimit(resource.RLIMIT_AS, (status("VmSize") * 1024 + 2 * 2**30, resource.RLIM_INFINITY))
open("/proc/self/clear_refs", "w").write("5")  # peak RSS (VmHWM, what ru_maxrss reports) := RSS now
before = status("VmRSS")
try:
    ACTION
except Exception as error:
    print(f"{type(error).__name__}: {error}")
print("GROWTH", (status("VmHWM") - before) / 1024, flush=True)
# Leave without the interpreter's teardown: under the address-space cap, a library's background threads
# (Arrow's pools) can fail to start or stop there and abort the process after the measurement is made.
import os
os._exit(0)
"""


def peak_growth_mb(setup: str, action: str) -> tuple[float, str]:
    """Run ``action`` (one line) after ``setup`` in a fresh Python; return how far its peak RSS rose above
    the RSS before ``action`` (MB; the peak is reset first, so the imports' own peak does not hide it) and
    what it printed. The child may take at most 2 GiB more address space than after ``setup``, so that a
    regression fails with a MemoryError rather than take the shared machine's memory."""
    script = setup + _MEASURE.replace("ACTION", action)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    return float(lines[-1].split()[1]), "\n".join(lines[:-1])


# ------------------------------------------------------------------------- 1. never a non-result as a result


def test_checkpoint_with_nan_or_inf_weights_is_refused_naming_the_tensors(tmp_path: Path) -> None:
    model = tiny_mfnet()
    names = [k for k, v in model.state_dict().items() if v.is_floating_point()][:10]
    with torch.no_grad():
        for i, name in enumerate(names):
            tensor = model.state_dict()[name]  # channels-last weights: index, since a view may not exist
            tensor[(0,) * tensor.dim()] = float("nan") if i % 2 else float("inf")
    path = own_checkpoint(tmp_path / "nan.pt", model)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    shown = ", ".join(names[:8])
    assert str(caught.value) == (
        f"checkpoint {path} has non-finite values (NaN or inf) in 10 tensors: {shown} ... and 2 more; a model "
        "with them gives no meaningful scores: use an earlier checkpoint of the run, or download the file again"
    )
    with pytest.raises(CheckpointError, match=r"in 10 tensors: "):  # also through create_model(checkpoint=...)
        kpsem.create_model("mfnet", num_classes=3, checkpoint=path, **TINY_BACKBONE)


def test_a_nan_buffer_is_refused_too(tmp_path: Path) -> None:
    model = tiny_mfnet()
    model.state_dict()["conv1.bn.running_var"].fill_(float("nan"))
    path = own_checkpoint(tmp_path / "nan_buffer.pt", model)
    with pytest.raises(CheckpointError, match=r"non-finite values \(NaN or inf\) in 1 tensor: conv1\.bn\.running_var;"):
        load_checkpoint(path)


@pytest.mark.parametrize("std", [(0.0, 0.0, 0.0), (0.2, -0.1, 0.2), (0.2, float("nan"), 0.2), (float("inf"),) * 3,
                                 (0.2, 0.2)], ids=["zero", "negative", "nan", "inf", "two-values"])
def test_checkpoint_whose_std_cannot_normalise_is_refused(tmp_path: Path, std: tuple[float, ...]) -> None:
    path = own_checkpoint(tmp_path / "std.pt", std=std)
    with pytest.raises(CheckpointError) as caught:
        describe_checkpoint(path)
    assert str(caught.value) == (
        f"checkpoint {path} has normalisation std {list(std)!r}; expected three finite numbers above 0 (a clip "
        "divided by 0 or NaN is all inf or NaN): save it again with the std it was trained with (MFNet's is 0.2348)"
    )


def _overflowing(path: Path) -> Path:
    """Finite weights whose scores overflow float32: a classifier of 3e38."""
    model = tiny_mfnet()
    model.classifier.weight.data.fill_(3e38)
    return own_checkpoint(path, model)


def test_non_finite_scores_raise_in_analysis_instead_of_a_prediction(tmp_path: Path) -> None:
    loaded = load_checkpoint(_overflowing(tmp_path / "overflow.pt"))
    clip = torch.rand(1, 3, 8, 32, 32)
    with pytest.raises(NonFiniteOutputError) as caught:
        analyse_clip(loaded.model, clip, class_names=CLASSES)
    assert str(caught.value) == (
        "MFNet gave non-finite scores (NaN or inf), so there is no prediction to show. Weights with NaN or inf are "
        "refused on load, so the clip holds such values or the scores overflowed: check the clip, run in full "
        "precision (--precision fp32), or use another checkpoint"
    )


def test_evaluate_stops_with_the_message_instead_of_counting_nan_predictions(tmp_path: Path, toy_clips: type,
                                                                             frame_folders: Path,
                                                                             capsys: pytest.CaptureFixture) -> None:
    path = _overflowing(tmp_path / "overflow.pt")
    with pytest.raises(NonFiniteOutputError, match=r"^MFNet gave non-finite scores \(NaN or inf\) for 2 of 2 clips "
                                                   r"\(video000 clip 0, video001 clip 0\), so there is no prediction"):
        evaluate_checkpoint(path, dataset=toy_clips(2, train=False), class_names=CLASSES, clips=1, batch_size=2,
                            workers=0, out=tmp_path / "p.parquet")
    assert not (tmp_path / "p.parquet").exists()
    code = main(["evaluate", "--checkpoint", str(path), "--data", str(frame_folders), "--layout", "folders",
                 "--clips", "1", "--batch-size", "9", "--workers", "0", "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: MFNet gave non-finite scores (NaN or inf) for 9 of 9 clips (")
    assert "Traceback" not in err
    from kpsem.app_support.caching.predictions import compute_predictions  # the app's Compare page computes its own

    loaded = load_checkpoint(path)
    index = open_dataset(frame_folders, split="test", layout="folders")
    with pytest.raises(NonFiniteOutputError, match=r"^overflow:mfnet gave non-finite scores \(NaN or inf\) for 1 of 1 "
                                                   r"clips \(class0/video0_0 clip 0\), so"):
        compute_predictions(loaded.model, loaded.info, index, model_id="overflow:mfnet", out=tmp_path / "app.parquet")
    assert not (tmp_path / "app.parquet").exists()


def test_explain_exits_with_the_message_on_non_finite_scores(tmp_path: Path, frame_folders: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    good = own_checkpoint(tmp_path / "good.pt")
    overflowing = _overflowing(tmp_path / "overflow.pt")
    code = main(["explain", "--baseline", str(overflowing), "--kpsem", str(good), "--clip",
                 str(frame_folders / "class0" / "video0_0"), "--out", str(tmp_path / "figures")])
    err = capsys.readouterr().err
    assert code == 2
    # a note may come first (the pair holds two MFNets): the error is the last line
    assert err.splitlines()[-1].startswith("error: MFNet gave non-finite scores (NaN or inf), so there is no "
                                           "prediction to show.")
    assert not (tmp_path / "figures").exists()


# ------------------------------------------------------------------------------------------- checksums


def test_overwritten_tensor_bytes_are_refused_as_corrupt(tmp_path: Path) -> None:
    path = own_checkpoint(tmp_path / "model.pt")
    assert load_checkpoint(path).report.summary().endswith("tensors verified against the SHA-256 checksum saved "
                                                          "with them")
    with zipfile.ZipFile(path) as archive:  # the first tensor record, stored uncompressed as torch writes them
        entry = next(e for e in archive.infolist() if "/data/" in e.filename and e.file_size >= 8)
    data = bytearray(path.read_bytes())
    local = entry.header_offset  # local header: 30 bytes, then the name and an extra field of their own lengths
    start = local + 30 + int.from_bytes(data[local + 26:local + 28], "little") + int.from_bytes(
        data[local + 28:local + 30], "little")
    data[start:start + 4] = np.float32(0.125).tobytes()  # a finite value: only the checksum can tell
    path.write_bytes(bytes(data))
    torch.load(path, weights_only=True)  # torch does not notice: zip CRCs are not checked on read
    message = (f"checkpoint {path} is corrupt: its tensors do not match the SHA-256 checksum saved with them, so "
               "bytes changed after it was written (a disk or copy error, or an edit); re-download it or save it "
               "again from where it came from")
    for read in (load_checkpoint, describe_checkpoint):
        with pytest.raises(CheckpointError) as caught:
            read(path)
        assert str(caught.value) == message


def test_files_without_a_checksum_load_with_a_note(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    demo = REPO / "assets" / "demo" / "mfnet.pt"  # ours, saved before checksums existed: left as it is
    loaded = load_checkpoint(demo)
    note = "tensors could not be verified: saved without a checksum (by kpsem before it stored them)"
    assert loaded.info.integrity == note and loaded.report.notes[-1] == note
    assert main(["info", "--checkpoint", str(demo)]) == 0
    assert note in capsys.readouterr().out
    published = tmp_path / "published.pth"
    state_dict = {f"module.{k}": v for k, v in tiny_mfnet().state_dict().items()}
    torch.save({"epoch": 1, "state_dict": state_dict}, published, _use_new_zipfile_serialization=False)
    assert describe_checkpoint(published).integrity == ("tensors could not be verified: the published MFNet format "
                                                        "carries no checksum")


# ------------------------------------------------------------------------------ 3. bounded memory for input


def deflated_checkpoint(path: Path, numel: int) -> Path:
    """A real torch zip whose one float32 tensor of ``numel`` zeros is deflated: MBs on disk, GBs loaded."""
    buffer = io.BytesIO()
    torch.save({"state_dict": {"w": torch.zeros(100_000)}}, buffer)
    source = zipfile.ZipFile(buffer)
    marker = b"J" + (100_000).to_bytes(4, "little")  # the element count, twice in the pickle (storage, shape)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as out:
        for entry in source.infolist():
            if entry.filename.endswith("data.pkl"):
                pickled = source.read(entry)
                assert pickled.count(marker) == 2
                out.writestr(entry.filename, pickled.replace(marker, b"J" + numel.to_bytes(4, "little")))
            elif entry.filename.endswith("/data/0"):
                zeros, left = bytes(64 * 2**20), numel * 4
                with out.open(entry.filename, "w", force_zip64=True) as record:
                    while left:
                        record.write(zeros[:min(left, len(zeros))])
                        left -= min(left, len(zeros))
            else:
                out.writestr(entry.filename, source.read(entry))
    return path


def test_deflated_checkpoint_that_unpacks_to_3_gib_is_refused_unread(tmp_path: Path) -> None:
    path = deflated_checkpoint(tmp_path / "bomb.pt", 3 * GIB // 4)
    assert path.stat().st_size < 20 * 2**20
    growth, printed = peak_growth_mb("from kpsem.checkpoint import load_checkpoint\n",
                                     f"load_checkpoint({str(path)!r})")
    size = f"{path.stat().st_size / 2**20:.1f} MiB"
    assert printed == (
        f"CheckpointError: checkpoint {path} would unpack to 3.0 GiB ({size} on disk); at most 2.0 GiB is loaded, "
        "far more than an MFNet or MF-KPSEM checkpoint holds (about 30 MB): it is not a checkpoint this project "
        "can load"
    )
    assert growth < 100, f"peak memory rose by {growth:.0f} MB; loading it would take 3072 MB"


def _hostile_own_format(path: Path, **fields: object) -> Path:
    """Our format's dict with a tiny state dict and ``fields`` replaced, saved with plain torch.save."""
    obj = {"format": FORMAT, "format_version": 1, "arch": "mfnet", "config": {}, "class_names": CLASSES,
           "clip": {"frames": 16, "size": 224, "mean": [0.5] * 3, "std": [0.2] * 3}, "provenance": {},
           "state_dict": {"classifier.weight": torch.zeros(3, 768), "classifier.bias": torch.zeros(3)}}
    obj.update(fields)
    torch.save(obj, path)
    return path


def test_a_million_class_names_are_refused_before_any_model_is_built(tmp_path: Path) -> None:
    # config {} is a full-width MFNet: with a million classes its classifier alone is 3 GB
    path = _hostile_own_format(tmp_path / "million.pt", class_names=[f"c{i}" for i in range(1_000_000)])
    growth, printed = peak_growth_mb("from kpsem.checkpoint import load_checkpoint\n",
                                     f"load_checkpoint({str(path)!r})")
    pickled = zipfile.ZipFile(path).getinfo("million/data.pkl").file_size
    assert printed == (
        f"CheckpointError: checkpoint {path} holds {pickled / 2**20:.1f} MiB of pickled metadata (names, config, "
        "class list) beside its tensors; at most 8.0 MiB is read (a kpsem checkpoint has well under 1 MB): it is "
        "not a checkpoint this project can load"
    )
    assert growth < 100, f"peak memory rose by {growth:.0f} MB; building its model would take 3000 MB"


def test_class_count_past_the_limit_or_unlike_the_classifier_is_refused(tmp_path: Path) -> None:
    many = _hostile_own_format(tmp_path / "many.pt", class_names=[f"c{i}" for i in range(200_000)])
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(many)
    assert str(caught.value) == (f"checkpoint {many} declares 200,000 class names; at least 1 and at most 100,000 "
                                 "are accepted: it is not a checkpoint this project can load")
    other = _hostile_own_format(tmp_path / "seven.pt", class_names=[f"c{i}" for i in range(7)])
    with pytest.raises(CheckpointError) as caught:
        describe_checkpoint(other)
    assert str(caught.value) == (f"checkpoint {other} names 7 classes but its classifier has 3 outputs; the file "
                                 "is inconsistent: save it again with kpsem")


def test_a_config_that_would_build_gigabytes_is_refused_on_the_meta_device(tmp_path: Path) -> None:
    wide = _hostile_own_format(tmp_path / "wide.pt", config={"widths": [96, 192, 384, 16384]})
    growth, printed = peak_growth_mb("from kpsem.checkpoint import load_checkpoint\n",
                                     f"load_checkpoint({str(wide)!r})")
    with torch.device("meta"):
        naive = sum(p.numel() * 4 for p in kpsem.create_model("mfnet", num_classes=3,
                                                              widths=(96, 192, 384, 16384)).state_dict().values())
    assert printed == (f"CheckpointError: checkpoint {wide}: the mfnet its config describes would take "
                       f"{naive / GIB:.1f} GiB; at most 2.0 GiB is built: it is not a checkpoint this project can load")
    assert growth < 100, f"peak memory rose by {growth:.0f} MB; building the model would take {naive >> 20} MB"
    deep = _hostile_own_format(tmp_path / "deep.pt", config={"depths": [3, 4, 6, 100_000]})
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(deep)
    assert str(caught.value) == (f"checkpoint {deep}: its config {{'depths': [3, 4, 6, 100000]}} builds more than "
                                 "10,000 modules (a full MF-KPSEM has 315): it is not a checkpoint this project can "
                                 "load")


def test_a_clip_size_past_the_limit_is_refused(tmp_path: Path) -> None:
    path = _hostile_own_format(tmp_path / "clip.pt", clip={"frames": 16, "size": 100_000, "mean": [0.5] * 3,
                                                            "std": [0.2] * 3})
    with pytest.raises(CheckpointError) as caught:
        describe_checkpoint(path)
    assert str(caught.value) == (f"checkpoint {path} asks for clips of 16 frames of 100000 pixels square; "
                                 "accepted are 1 to 128 frames of 1 to 512 pixels: save it again with the clip it "
                                 "was trained on")


def _predictions(rows: int, width: int, video_id: pa.Array | None = None) -> pa.Table:
    """A predictions table of ``rows`` rows with ``width`` probabilities each (all columns, zeros)."""
    lists = pa.ListArray.from_arrays(pa.array(np.arange(0, rows * width + 1, width, dtype=np.int32)),
                                     pa.array(np.zeros(rows * width, np.float32)))
    top = pa.array([[0]] * rows, pa.list_(pa.int64()))
    columns = {
        "video_id": video_id if video_id is not None else pa.array(["v"] * rows), "true_label": pa.array([0] * rows),
        "true_class": pa.array(["c"] * rows), "model_id": pa.array(["m"] * rows), "level": pa.array(["clip"] * rows),
        "clip_index": pa.array([0] * rows), "num_clips": pa.array([1] * rows),
        "topk_classes": pa.array([["c"]] * rows), "topk_labels": top,
        "topk_probs": pa.array([[0.0]] * rows, pa.list_(pa.float32())), "probs": lists,
        "correct_top1": pa.array([True] * rows), "correct_top5": pa.array([True] * rows),
    }
    return pa.table([columns[c] for c in COLUMNS], names=list(COLUMNS))


def test_a_table_of_300_million_probabilities_is_refused_from_its_metadata(tmp_path: Path) -> None:
    path = tmp_path / "huge.parquet"
    batch = _predictions(100, 100_000).cast(_schema())  # 10M zeros; 30 row groups of them
    with pq.ParquetWriter(path, _schema()) as writer:
        for _ in range(30):
            writer.write_table(batch)
    assert path.stat().st_size < 2**20
    growth, printed = peak_growth_mb("from kpsem.evaluate import read_predictions\n",
                                     f"read_predictions({str(path)!r})")
    assert printed == (f"PredictionsError: {path} holds 300,036,000 values (1.1 GiB or more once read); at most "
                       "150,000,000 are read: split the evaluation into several tables")
    assert growth < 100, f"peak memory rose by {growth:.0f} MB; reading it would take over 1200 MB"


def test_probability_vectors_longer_than_the_class_limit_and_too_many_rows(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    wide = tmp_path / "wide.parquet"
    pq.write_table(_predictions(2, 200_000).cast(_schema()), wide)
    with pytest.raises(PredictionsError) as caught:
        read_predictions(wide)
    assert str(caught.value) == (f"{wide} holds probability vectors of 200,000 values on average; at most 100,000 "
                                 "classes are read: it is not a predictions table of a classifier")
    monkeypatch.setattr(limits, "MAX_PREDICTION_ROWS", 3)  # the row limit, without writing 5 million rows
    long = tmp_path / "long.parquet"
    pq.write_table(_predictions(4, 3).cast(_schema()), long)
    with pytest.raises(PredictionsError) as caught:
        read_predictions(long)
    assert str(caught.value) == (f"{long} has 4 rows; at most 3 are read (a 10-clip evaluation of Kinetics-400 "
                                 "has 220,000): split the evaluation into several tables")


def test_one_long_string_repeated_by_its_dictionary_is_refused_unexpanded(tmp_path: Path) -> None:
    path = tmp_path / "text.parquet"
    one_mb = pa.DictionaryArray.from_arrays(pa.array(np.zeros(1000, np.int32)), pa.array(["x" * 2**20]))
    pq.write_table(_predictions(1000, 3, video_id=one_mb), path, store_schema=False)  # read back as plain strings
    assert path.stat().st_size < 2**20
    growth, printed = peak_growth_mb("from kpsem.evaluate import read_predictions\n",
                                     f"read_predictions({str(path)!r})")
    assert printed == (f"PredictionsError: {path} holds 1000.0 MiB of text once its strings are expanded; at most "
                       "256.0 MiB is read: it is not a kpsem predictions table")
    assert growth < 100, f"peak memory rose by {growth:.0f} MB; reading it would take 1000 MB"


def test_unequal_probability_vectors_are_refused(tmp_path: Path) -> None:
    table = _predictions(2, 3).cast(_schema())
    table = table.set_column(list(COLUMNS).index("probs"), "probs",
                             pa.array([[0.5, 0.5, 0.0], [1.0]], pa.list_(pa.float32())))
    pq.write_table(table, tmp_path / "ragged.parquet")
    with pytest.raises(PredictionsError) as caught:
        read_predictions(tmp_path / "ragged.parquet")
    assert str(caught.value) == (f"{tmp_path / 'ragged.parquet'}: its rows hold probability vectors of 1 to 3 "
                                 "values; every row of a predictions table has one per class")


def big_jpeg(side: int = 16384) -> bytes:
    """A valid grey ``side`` x ``side`` baseline JPEG of a few MB, made without holding the image: one row
    of 8x8 blocks encoded with a restart marker per row, repeated, with the frame height patched."""
    import cv2

    _, encoded = cv2.imencode(".jpg", np.full((8, side), 128, np.uint8), [cv2.IMWRITE_JPEG_RST_INTERVAL, side // 8])
    data = bytes(encoded)
    sos = data.index(b"\xff\xda")
    start = sos + 2 + int.from_bytes(data[sos + 2:sos + 4], "big")
    row, sof = data[start:-2], data.index(b"\xff\xc0")
    header = bytearray(data[:start])
    header[sof + 5:sof + 7] = side.to_bytes(2, "big")  # SOF0: length (2), precision (1), then the height
    body = bytearray(header)
    for r in range(side // 8):
        body += (bytes([0xFF, 0xD0 + (r - 1) % 8]) if r else b"") + row  # RST0..RST7 between rows
    return bytes(body) + b"\xff\xd9"


def test_a_16k_jpeg_frame_is_decoded_reduced(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "00001.jpg").write_bytes(big_jpeg())
    info = probe_video(folder)
    assert (info.height, info.width) == (16384, 16384)
    growth, printed = peak_growth_mb(
        "from kpsem.data import read_frames\nimport cv2\n",
        f"print(read_frames({str(folder)!r}, [0]).shape)",
    )
    assert printed == "(1, 320, 320, 3)"
    assert growth < 100, f"peak memory rose by {growth:.0f} MB for one 16k x 16k frame"
    naive, printed = peak_growth_mb("import cv2\n", f"print(cv2.imread({str(folder / '00001.jpg')!r}).shape)")
    assert printed == "(16384, 16384, 3)" and naive > 700  # what decoding it whole takes: the measure works
    with pytest.raises(VideoError) as caught:
        read_frames(folder, [0], short_side_cap=None)
    assert str(caught.value) == (f"frame {folder / '00001.jpg'} would be read at 16384x16384 pixels; at most "
                                 "40,000,000 pixels are decoded per frame: read it with a short side cap")


def test_images_that_declare_too_many_pixels_are_refused_unread(tmp_path: Path) -> None:
    import cv2

    folder = tmp_path / "bomb"
    folder.mkdir()
    data = bytearray(cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = b"\xff\xff\xff\xff"  # 65535 x 65535, in a few hundred bytes
    (folder / "00001.jpg").write_bytes(bytes(data))
    with pytest.raises(VideoError) as caught:
        probe_video(folder)
    assert str(caught.value) == (f"frame {folder / '00001.jpg'} declares 65535x65535 pixels; at most 1,073,741,824 "
                                 "pixels are accepted (a decompression bomb, or no video frame): remove it or "
                                 "re-extract the frames")
    png = tmp_path / "png"
    png.mkdir()
    data = bytearray(cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    data[16:24] = (8000).to_bytes(4, "big") * 2  # IHDR width and height: a PNG decodes whole
    (png / "00001.png").write_bytes(bytes(data))
    with pytest.raises(VideoError) as caught:
        read_frames(png, [0])
    assert str(caught.value) == (f"frame {png / '00001.png'} is 8000x8000 pixels, too large to decode (at most "
                                 "40,000,000 pixels; a JPEG is decoded at up to 1/8 scale, a PNG or BMP whole): "
                                 "re-extract the frames smaller")


# ------------------------------------------------------------------------------------ 7. no traceback


def test_empty_or_blank_ucf101_class_index(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    lists = tmp_path / "ucf" / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "testlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n")
    for text in ("", "\n  \n\t\n"):
        (lists / "classInd.txt").write_text(text)
        with pytest.raises(AnnotationError) as caught:
            open_dataset(tmp_path / "ucf", split="test", layout="ucf101")
        assert str(caught.value) == (f"{lists / 'classInd.txt'} lists no classes (it is empty or blank); expected "
                                     "lines '<index> <class>' from 1 to 101: restore it from UCF101's ucfTrainTestlist")
    code = main(["evaluate", "--checkpoint", str(own_checkpoint(tmp_path / "m.pt")), "--data", str(tmp_path / "ucf"),
                 "--workers", "0", "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err == f"error: {caught.value}\n"


@pytest.mark.parametrize("state_dict", [[1, 2, 3], "weights", None], ids=["list", "str", "none"])
def test_own_checkpoint_whose_state_dict_is_not_a_mapping(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                          state_dict: object) -> None:
    path = resave(own_checkpoint(tmp_path / "m.pt"), lambda obj: obj.update(state_dict=state_dict))
    message = (f"checkpoint {path} is damaged: its 'state_dict' is a {type(state_dict).__name__}, not a mapping of "
               "names to tensors; save the model's state_dict() again with kpsem")
    for read in (load_checkpoint, describe_checkpoint):
        with pytest.raises(CheckpointError) as caught:
            read(path)
        assert str(caught.value) == message
    assert main(["info", "--checkpoint", str(path)]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"


def test_own_checkpoint_with_entries_that_are_not_tensors_or_no_state_dict(tmp_path: Path) -> None:
    path = resave(own_checkpoint(tmp_path / "m.pt"), lambda obj: obj["state_dict"].update(extra=[1.0], more=3))
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    assert str(caught.value) == (f"checkpoint {path} is damaged: 2 entries of its 'state_dict' are not tensors "
                                 "named by strings: extra, more; save the model's state_dict() again with kpsem")
    path = resave(path, lambda obj: obj.pop("state_dict"))
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    assert str(caught.value) == (f"checkpoint {path} has no 'state_dict': its weights are missing; save it again "
                                 "with kpsem")


def test_explain_out_naming_an_existing_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    existing = tmp_path / "figures.png"
    existing.write_bytes(b"an earlier figure")
    for out, what in ((existing, "is an existing file"), (existing / "sub", f"lies inside {existing}, an existing "
                                                                             "file")):
        # the checkpoints do not exist: --out is checked before anything is loaded
        code = main(["explain", "--baseline", "missing.pt", "--kpsem", "missing.pt", "--clip", "missing.mp4",
                     "--out", str(out)])
        assert code == 2
        assert capsys.readouterr().err == (f"error: --out {out} {what}; --out names a folder for the figures: "
                                           "choose a new or existing folder\n")
    assert existing.read_bytes() == b"an earlier figure"


# ------------------------------------------------------------------------------------------------ the app


def test_app_shows_non_finite_weights_and_scores_as_messages(app, app_demo, tmp_path: Path) -> None:
    demo = load_checkpoint(app_demo.baseline)
    info, model = demo.info, demo.model
    options = {"class_names": info.class_names, "clip_frames": info.clip_frames, "clip_size": info.clip_size,
               "mean": info.mean, "std": info.std}
    with torch.no_grad():
        model.classifier.bias[0] = float("nan")
    nan_path = save_checkpoint(tmp_path / "nan.pt", model, **options)
    with torch.no_grad():
        model.classifier.bias.zero_()
        model.classifier.weight.fill_(3e38)
    overflow_path = save_checkpoint(tmp_path / "overflow.pt", model, **options)
    at = app.run()
    at.radio(key="baseline_source").set_value("path").run()
    at.text_input(key="baseline_path").input(str(nan_path)).run()
    assert not at.exception
    errors = " | ".join(e.value for e in at.error).replace("\\", "")  # the app escapes Markdown in messages
    assert f"checkpoint {nan_path} has non-finite values (NaN or inf) in 1 tensor: classifier.bias;" in errors
    at.text_input(key="baseline_path").input(str(overflow_path)).run()
    assert not at.exception
    errors = " | ".join(e.value for e in at.error).replace("\\", "")
    assert "gave non-finite scores (NaN or inf), so there is no prediction to show" in errors
    assert [s.value for s in at.subheader] == []  # neither model's results are drawn
