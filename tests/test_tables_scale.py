"""Predictions tables at data-set scale: fixed-size list columns, old tables still read, limits still hold,
and the class comparison's vectorised numbers against plain-Python references."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kpsem import limits
from kpsem.app_support.drawing.tables import headline
from kpsem.evaluate import (
    COLUMNS,
    PredictionsError,
    _schema,
    _topk,
    predictions_table,
    read_predictions,
    write_predictions,
)
from kpsem.explain.compare import _class_names, compare_predictions, confusion_matrix, per_class_accuracy


def _probs(rows: int, classes: int, *, seed: int, steps: int | None = None) -> np.ndarray:
    """Softmax-like rows; ``steps`` rounds them to a grid so that many values tie."""
    rng = np.random.default_rng(seed)
    p = rng.random((rows, classes)).astype(np.float32)
    if steps is not None:
        p = np.round(p * steps) / steps + 1e-3
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


def _table(videos: int, classes: int, clips: int = 1, *, seed: int = 0, names: list[str] | None = None,
           model_id: str = "m:mfnet", steps: int | None = None) -> pd.DataFrame:
    labels = np.repeat(np.arange(videos) % classes, clips)
    return predictions_table(_probs(videos * clips, classes, seed=seed, steps=steps), labels,
                             [f"video{i // clips:05d}" for i in range(videos * clips)],
                             [i % clips for i in range(videos * clips)],
                             class_names=names or [f"action {i}" for i in range(classes)], model_id=model_id)


def _write_old_way(table: pd.DataFrame, path: Path) -> Path:
    """A table as the writer made it before fixed-size lists: Python lists through pandas, plain list types."""
    old = table.copy()
    for column in ("topk_classes", "topk_labels", "topk_probs", "probs"):
        old[column] = [np.asarray(cell).tolist() for cell in old[column]]
    arrow = pa.Table.from_pandas(old[list(COLUMNS)], schema=_schema(), preserve_index=False)
    pq.write_table(arrow.replace_schema_metadata({b"kpsem_format": b"kpsem-predictions/1"}), path)
    return path


def test_a_kinetics_sized_table_round_trips_as_fixed_size_float32_lists(tmp_path: Path) -> None:
    table = _table(10_000, 400, clips=2)  # 20,000 clip rows and 10,000 video rows, 400 classes
    path = write_predictions(table, tmp_path / "big.parquet", summary={"split": "val"})
    stored = pq.ParquetFile(path).schema_arrow
    for column, kind, size in (("probs", pa.float32(), 400), ("topk_probs", pa.float32(), 5),
                               ("topk_labels", pa.int64(), 5), ("topk_classes", pa.string(), 5)):
        field = stored.field(column)
        assert pa.types.is_fixed_size_list(field.type) and field.type.list_size == size, field
        assert field.type.value_type == kind and not field.nullable and not field.type.value_field.nullable
    back = read_predictions(path)
    assert len(back) == 30_000 and list(back.columns) == list(COLUMNS)
    probs = np.stack(back["probs"].to_numpy())
    assert probs.dtype == np.float32 and probs.shape == (30_000, 400)
    np.testing.assert_array_equal(probs, np.stack(table["probs"].to_numpy()))  # bit for bit
    assert np.stack(back["topk_labels"].to_numpy()).dtype == np.int64
    assert back["true_label"].dtype == np.int64 and back["correct_top1"].dtype == bool
    for column in ("topk_labels", "topk_classes", "video_id", "level", "num_clips", "correct_top5"):
        assert [np.asarray(v).tolist() for v in back[column]] == [np.asarray(v).tolist() for v in table[column]]
    assert back.attrs["kpsem"] == {"split": "val"} and back.attrs["format"] == "kpsem-predictions/1"


def test_tables_written_the_old_way_read_as_before_and_compare_the_same(tmp_path: Path) -> None:
    base, ours = _table(300, 12, clips=2, seed=1, model_id="b:mfnet"), _table(300, 12, clips=2, seed=2,
                                                                                model_id="k:mf_kpsem")
    old_b, old_k = (read_predictions(_write_old_way(t, tmp_path / f"old_{i}.parquet"))
                    for i, t in enumerate((base, ours)))
    new_b, new_k = (read_predictions(write_predictions(t, tmp_path / f"new_{i}.parquet"))
                    for i, t in enumerate((base, ours)))
    assert pq.ParquetFile(tmp_path / "old_0.parquet").schema_arrow.field("probs").type == pa.list_(pa.float32())
    for old, new in ((old_b, new_b), (old_k, new_k)):
        assert list(old.columns) == list(new.columns)
        for column in COLUMNS:
            assert [np.asarray(v).tolist() for v in old[column]] == [np.asarray(v).tolist() for v in new[column]]
        assert all(cell.dtype == np.float32 for cell in old["probs"])
    for level in ("video", "clip"):
        a, b = compare_predictions(old_b, old_k, level=level), compare_predictions(new_b, new_k, level=level)
        pd.testing.assert_frame_equal(a.items, b.items)
        np.testing.assert_array_equal(a.baseline_probs, b.baseline_probs)


def test_hand_built_tables_of_python_lists_write_and_ragged_ones_are_refused(tmp_path: Path) -> None:
    table = _table(4, 3)
    as_lists = table.copy()
    for column in ("topk_classes", "topk_labels", "topk_probs", "probs"):
        as_lists[column] = [np.asarray(cell).tolist() for cell in as_lists[column]]
    back = read_predictions(write_predictions(as_lists, tmp_path / "lists.parquet"))
    np.testing.assert_array_equal(np.stack(back["probs"].to_numpy()), np.stack(table["probs"].to_numpy()))
    as_lists.at[2, "probs"] = [1.0, 0.0]
    with pytest.raises(ValueError, match=r"column 'probs' holds lists of 2 to 3 items"):
        write_predictions(as_lists, tmp_path / "ragged.parquet")
    assert not (tmp_path / "ragged.parquet").exists()


def test_an_empty_table_round_trips_and_empty_lists_are_refused(tmp_path: Path) -> None:
    empty = predictions_table(np.zeros((0, 3), np.float32), [], [], [], class_names=["a", "b", "c"], model_id="m")
    back = read_predictions(write_predictions(empty, tmp_path / "empty.parquet"))
    assert len(back) == 0 and list(back.columns) == list(COLUMNS)
    table = _table(3, 3)
    table["probs"] = [np.zeros(0, np.float32)] * len(table)  # pyarrow's size-0 fixed lists crash the process
    with pytest.raises(ValueError, match="column 'probs' holds empty lists"):
        write_predictions(table, tmp_path / "no_classes.parquet")


def test_top_k_with_ties_is_the_stable_sort_order() -> None:
    for classes, steps in ((400, 3), (400, None), (7, 2), (5, 1), (3, None)):
        probs = _probs(500, classes, seed=classes, steps=steps)
        k = min(5, classes)
        expected = [sorted(range(classes), key=lambda j, row=row: (-row[j], j))[:k] for row in probs.tolist()]
        assert _topk(probs, k).tolist() == expected


def test_video_rows_average_unequal_numbers_of_clips() -> None:
    probs = _probs(7, 4, seed=3)
    videos = ["b", "a", "b", "c", "b", "a", "c"]  # b: 3 clips, a: 2, c: 2, interleaved
    table = predictions_table(probs, [1, 0, 1, 2, 1, 0, 2], videos, [0, 0, 1, 0, 2, 1, 1],
                              class_names=["w", "x", "y", "z"], model_id="m")
    rows = table[table["level"] == "video"].set_index("video_id")
    for video in "abc":
        expected = np.mean([probs[i].astype(np.float64) for i, v in enumerate(videos) if v == video], axis=0)
        np.testing.assert_allclose(rows.loc[video, "probs"], expected, rtol=1e-6)
        assert rows.loc[video, "num_clips"] == videos.count(video)


def _fixed_size_table(rows: int, width: int, topk_classes: pa.Array | None = None) -> pa.Table:
    """Zeros in the written format: fixed-size lists of ``width`` probabilities."""
    def fixed(values: np.ndarray, size: int, kind: pa.DataType) -> pa.Array:
        return pa.FixedSizeListArray.from_arrays(pa.array(values, type=kind), size)

    columns = {
        "video_id": pa.array(["v"] * rows), "true_label": pa.array([0] * rows), "true_class": pa.array(["c"] * rows),
        "model_id": pa.array(["m"] * rows), "level": pa.array(["clip"] * rows), "clip_index": pa.array([0] * rows),
        "num_clips": pa.array([1] * rows),
        "topk_classes": topk_classes if topk_classes is not None else fixed(np.array(["c"] * rows), 1, pa.string()),
        "topk_labels": fixed(np.zeros(rows, np.int64), 1, pa.int64()),
        "topk_probs": fixed(np.zeros(rows, np.float32), 1, pa.float32()),
        "probs": fixed(np.zeros(rows * width, np.float32), width, pa.float32()),
        "correct_top1": pa.array([True] * rows), "correct_top5": pa.array([True] * rows),
    }
    return pa.table([columns[c] for c in COLUMNS], names=list(COLUMNS))


def test_the_reader_limits_hold_for_fixed_size_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wide = tmp_path / "wide.parquet"
    pq.write_table(_fixed_size_table(2, 200_000), wide)
    with pytest.raises(PredictionsError, match=r"probability vectors of 200,000 values on average; at most 100,000"):
        read_predictions(wide)

    monkeypatch.setattr(limits, "MAX_PREDICTION_VALUES", 1000)
    many = tmp_path / "many.parquet"
    pq.write_table(_fixed_size_table(10, 100), many)  # 1,000 probabilities and 120 other values
    with pytest.raises(PredictionsError, match=r"holds 1,120 values .*at most 1,000 are read"):
        read_predictions(many)
    monkeypatch.undo()

    # A long string repeated through its dictionary inside the fixed-size top-k list is measured too.
    monkeypatch.setattr(limits, "MAX_PREDICTION_TEXT_BYTES", 50_000)
    words = pa.DictionaryArray.from_arrays(pa.array(np.zeros(100, np.int32)), pa.array(["x" * 1000]))
    text = tmp_path / "text.parquet"
    pq.write_table(_fixed_size_table(100, 3, topk_classes=pa.FixedSizeListArray.from_arrays(words, 1)), text)
    assert pa.types.is_fixed_size_list(pq.ParquetFile(text).schema_arrow.field("topk_classes").type)
    with pytest.raises(PredictionsError, match=r"holds 98\.3 KiB of text once its strings are expanded"):
        read_predictions(text)  # 100 x 1000 bytes, and 700 in the other columns
    # ... and inside a list of lists, which the file's own schema may declare.
    nested = pa.ListArray.from_arrays(pa.array(np.arange(101, dtype=np.int32)),
                                      pa.ListArray.from_arrays(pa.array(np.arange(101, dtype=np.int32)), words))
    deep = tmp_path / "deep.parquet"
    table = _fixed_size_table(100, 3)
    pq.write_table(table.set_column(list(COLUMNS).index("topk_classes"), "topk_classes", nested), deep,
                   store_schema=False)
    with pytest.raises(PredictionsError, match=r"holds 98\.3 KiB of text"):
        read_predictions(deep)


def test_a_schema_that_declares_fixed_sizes_its_data_lacks_is_refused(tmp_path: Path) -> None:
    ragged = pa.array([[0.5, 0.5, 0.0], [1.0]], pa.list_(pa.float32()))
    table = _fixed_size_table(2, 3).cast(_schema(3, 1)).cast(_schema())
    table = table.set_column(list(COLUMNS).index("probs"), "probs", ragged)
    claimed = base64.b64encode(_schema(3, 1).serialize().to_pybytes())  # what pyarrow stores, now a lie
    path = tmp_path / "lie.parquet"
    pq.write_table(table.replace_schema_metadata({b"ARROW:schema": claimed}), path)
    assert pq.ParquetFile(path).schema_arrow.field("probs").type == pa.list_(pa.float32(), 3)
    with pytest.raises(PredictionsError, match=r"lie\.parquet is not a Parquet predictions table \(Expected all "
                                               r"lists to be of size=3"):
        read_predictions(path)


def _class_names_by_loop(df: pd.DataFrame, num_classes: int) -> list[str]:
    """The row-by-row rule the vectorised version replaced."""
    names = [f"class_{i}" for i in range(num_classes)]
    for label, name in zip(df["true_label"], df["true_class"]):
        names[int(label)] = str(name)
    for labels, classes in zip(df["topk_labels"], df["topk_classes"]):
        for label, name in zip(labels, classes):
            if names[int(label)] == f"class_{int(label)}":
                names[int(label)] = str(name)
    return names


def test_the_comparison_matches_plain_python_on_a_table_with_unnamed_classes() -> None:
    classes = 30
    names = [f"action {i}" for i in range(classes)]
    # true labels use only the first 20 classes: the other names come from the top-k lists, or nowhere
    base = predictions_table(_probs(400, classes, seed=4, steps=4), np.arange(400) % 20,
                             [f"v{i:03d}" for i in range(400)], [0] * 400, class_names=names, model_id="b")
    ours = predictions_table(_probs(400, classes, seed=5, steps=4), np.arange(400) % 20,
                             [f"v{i:03d}" for i in range(400)], [0] * 400, class_names=names, model_id="k")
    both = pd.concat([base, ours])
    assert _class_names(both, classes) == _class_names_by_loop(both, classes)
    assert _class_names(both.iloc[:0], 3) == ["class_0", "class_1", "class_2"]

    compared = compare_predictions(base, ours, level="video")
    truth = compared.items["true_label"].to_numpy()
    preds = {m: compared.items[f"{m}_pred"].to_numpy() for m in ("baseline", "kpsem")}
    per_class = per_class_accuracy(compared).set_index("class_index")
    for label in range(20):
        rows = truth == label
        for model in ("baseline", "kpsem"):
            assert per_class.loc[label, model] == pytest.approx(np.mean(preds[model][rows] == label))
    for model, pred in preds.items():
        expected = np.zeros((classes, classes), np.int64)
        for t, p in zip(truth.tolist(), pred.tolist()):
            expected[t, p] += 1
        np.testing.assert_array_equal(confusion_matrix(truth, pred, classes), expected, err_msg=model)

    numbers = headline(compared)  # ties everywhere (probabilities on a grid): the stable sort's order
    for i, probs in enumerate((compared.baseline_probs, compared.kpsem_probs)):
        order = np.argsort(-probs, axis=1, kind="stable")
        assert numbers.top1[i] == pytest.approx(np.mean(order[:, 0] == truth))
        assert numbers.top5[i] == pytest.approx(np.mean((order[:, :5] == truth[:, None]).any(axis=1)))


def test_confusion_matrix_refuses_labels_outside_the_classes() -> None:
    with pytest.raises(ValueError, match="prediction 3 is outside the 3 classes"):
        confusion_matrix([0, 1], [2, 3], 3)
    with pytest.raises(ValueError, match="true label -1 is outside the 3 classes"):
        confusion_matrix([-1, 1], [0, 0], 3)
    assert confusion_matrix([], [], 2).tolist() == [[0, 0], [0, 0]]
