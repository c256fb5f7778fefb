"""Predictions tables at data-set scale: writing and reading them the old way and the new, and the class
comparison's computations on two 20k-video tables, in one run.

    python benchmarks/bench_tables.py                     # 20,000 rows x 400 classes, 5 rounds
    python benchmarks/bench_tables.py --rounds 9 --no-app

* **Old**: the list columns as Python lists (what ``predictions_table`` built before), written through
  ``pa.Table.from_pandas`` as plain Arrow lists; read back with ``read_predictions`` (which reads both).
* **New**: ``predictions_table`` + ``write_predictions`` (fixed-size lists of float32 built from one flat
  array per column), read back with ``read_predictions``.

The table has ``--rows`` rows (half clip rows, half video rows: one clip per video). Old and new are
timed alternately in every round, so machine noise hits both alike; each figure is the median over rounds
and each ratio the median of the per-round ratios. Then the class comparison on two tables of ``--videos``
videos (one clip each) from this run: the library's computations, and (unless ``--no-app``) the Class
comparison page driven by Streamlit's AppTest (a filter, Fig. 7's view, a confusion-matrix cell).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from kpsem.evaluate import COLUMNS, _schema, predictions_table, read_predictions, write_predictions  # noqa: E402

LIST_COLUMNS = ("topk_classes", "topk_labels", "topk_probs", "probs")


def synthetic(videos: int, classes: int, *, seed: int, skill: float) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(probs (videos, classes) float32, labels, video ids): softmax of noise with the true class lifted."""
    rng = np.random.default_rng(seed)
    labels = np.arange(videos) % classes
    logits = rng.normal(size=(videos, classes)).astype(np.float32)
    logits[np.arange(videos), labels] += skill
    probs = np.exp(logits)
    return (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32), labels, [f"video{i:06d}" for i in
                                                                                    range(videos)]


def class_names(classes: int) -> list[str]:
    return [f"action {i:03d}" for i in range(classes)]


def old_build(probs: np.ndarray, labels: np.ndarray, video_ids: list[str], class_names: list[str]) -> pd.DataFrame:
    """The table as ``predictions_table`` built it before (one clip per video here): a stable sort of every
    row for the top 5, ``np.add.at`` for the video means, Python lists in the list columns."""
    order = np.argsort(np.asarray(video_ids, dtype=object), kind="stable")
    probs, labels = probs[order], labels[order]
    ids = [video_ids[i] for i in order]
    video_probs = np.zeros(probs.shape, dtype=np.float64)
    np.add.at(video_probs, np.arange(len(ids)), probs)
    video_probs = video_probs.astype(np.float32)
    names = np.asarray(class_names, dtype=object)

    def rows(level: str, p: np.ndarray, clip_index: int) -> pd.DataFrame:
        top = np.argsort(-p, axis=1, kind="stable")[:, :5]
        return pd.DataFrame({
            "video_id": ids, "true_label": labels.astype(np.int64), "true_class": names[labels].tolist(),
            "model_id": "m:mfnet", "level": level, "clip_index": np.full(len(ids), clip_index, np.int64),
            "num_clips": np.ones(len(ids), np.int64), "topk_classes": [names[t].tolist() for t in top],
            "topk_labels": [t.tolist() for t in top], "topk_probs": [p[i, t].tolist() for i, t in enumerate(top)],
            "probs": [row.tolist() for row in p], "correct_top1": top[:, 0] == labels,
            "correct_top5": (top == labels[:, None]).any(axis=1),
        })

    return pd.concat([rows("clip", probs, 0), rows("video", video_probs, -1)], ignore_index=True)[list(COLUMNS)]


def old_write(table: pd.DataFrame, path: Path) -> None:
    """The old writer: pandas to Arrow through Python lists, plain list types."""
    arrow = pa.Table.from_pandas(table[list(COLUMNS)], schema=_schema(), preserve_index=False)
    pq.write_table(arrow.replace_schema_metadata({b"kpsem_format": b"kpsem-predictions/1"}), path)


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def tables_old_vs_new(rows: int, classes: int, rounds: int, folder: Path) -> None:
    videos = rows // 2
    probs, labels, ids = synthetic(videos, classes, seed=0, skill=3.5)
    names = class_names(classes)

    def make() -> pd.DataFrame:
        return predictions_table(probs, labels, ids, [0] * videos, class_names=names, model_id="m:mfnet")

    table, old_table = make(), old_build(probs, labels, ids, names)
    old_path, new_path = folder / "old.parquet", folder / "new.parquet"
    actions = {
        "build": {"old": lambda: old_build(probs, labels, ids, names), "new": make},
        "write": {"old": lambda: old_write(old_table, old_path), "new": lambda: write_predictions(table, new_path)},
        "read": {"old": lambda: read_predictions(old_path), "new": lambda: read_predictions(new_path)},
    }
    times: dict[str, list[float]] = {f"{step}_{kind}": [] for step in actions for kind in ("old", "new")}
    for round_ in range(rounds + 1):  # round 0 warms caches and imports, not counted
        for step, pair in actions.items():
            for kind in ("old", "new") if round_ % 2 else ("new", "old"):
                seconds = timed(pair[kind])
                if round_:
                    times[f"{step}_{kind}"].append(seconds)
    back_old, back_new = read_predictions(old_path), read_predictions(new_path)
    same = np.array_equal(np.stack(back_old["probs"].to_numpy()), np.stack(back_new["probs"].to_numpy()))
    med = statistics.median
    print(f"predictions table, {len(table):,} rows x {classes} classes ({videos:,} videos, 1 clip each); medians "
          f"of {rounds} alternating rounds; files {old_path.stat().st_size / 2**20:.1f} MB (old) and "
          f"{new_path.stat().st_size / 2**20:.1f} MB (new); same probabilities read back: {same}")
    for step, what in (("build", "build (predictions_table)"), ("write", "write (Parquet, atomic)"),
                       ("read", "read (read_predictions)")):
        old, new = times[f"{step}_old"], times[f"{step}_new"]
        ratios = [o / n for o, n in zip(old, new)]
        print(f"  {what:28s} old {med(old) * 1e3:8.1f} ms   new {med(new) * 1e3:8.1f} ms   old/new {med(ratios):6.1f}x")
    total_old = [sum(times[f"{s}_old"][i] for s in ("build", "write")) for i in range(rounds)]
    total_new = [sum(times[f"{s}_new"][i] for s in ("build", "write")) for i in range(rounds)]
    print(f"  {'build + write':28s} old {med(total_old) * 1e3:8.1f} ms   new {med(total_new) * 1e3:8.1f} ms   "
          f"old/new {med([o / n for o, n in zip(total_old, total_new)]):6.1f}x")


def write_pair(videos: int, classes: int, folder: Path) -> tuple[Path, Path]:
    """Two tables of ``videos`` videos: a baseline and a slightly better model, with the summary evaluate writes."""
    paths = []
    for role, seed, skill in (("baseline", 1, 3.5), ("kpsem", 2, 3.8)):
        probs, labels, ids = synthetic(videos, classes, seed=seed, skill=skill)
        table = predictions_table(probs, labels, ids, [0] * videos, class_names=class_names(classes),
                                  model_id=f"{role}:x")
        paths.append(write_predictions(table, folder / f"{role}.parquet",
                                       summary={"class_names": class_names(classes), "split": "val"}))
    return paths[0], paths[1]


def map_all(function: Callable, labels: np.ndarray, predicted: list[np.ndarray], n: int) -> list[np.ndarray]:
    return [function(labels, p, n) for p in predicted]


def compare_library(paths: tuple[Path, Path], rounds: int) -> None:
    import logging

    logging.getLogger("streamlit").setLevel(logging.ERROR)  # its caches warn that no app is running: none is
    from kpsem.app_support.drawing.tables import headline
    from kpsem.explain.compare import (
        compare_predictions,
        confusion_matrix,
        fixed_and_broken,
        paired_significance,
        per_class_accuracy,
    )

    steps: dict[str, list[float]] = {}

    def step(name: str, action: Callable[[], object]) -> object:
        start = time.perf_counter()
        value = action()
        steps.setdefault(name, []).append(time.perf_counter() - start)
        return value

    for round_ in range(rounds + 1):
        tables = step("read both tables", lambda: [read_predictions(p) for p in paths])
        compared = step("align (compare_predictions)", partial(compare_predictions, *tables, level="video"))
        step("headline top-1/top-5", partial(headline, compared))
        step("significance (10k bootstrap)", partial(paired_significance, compared))
        per_class = step("per-class accuracy (Fig. 7)", partial(per_class_accuracy, compared))
        step("Fig. 7 filter (wins by >= 5%)", partial(per_class.__getitem__, per_class["difference"] >= 0.05))
        n, labels = len(compared.class_names), compared.items["true_label"].to_numpy()
        predicted = [compared.items[c].to_numpy() for c in ("baseline_pred", "kpsem_pred")]
        step("confusion matrices", partial(map_all, confusion_matrix, labels, predicted, n))
        step("fixed and broken", partial(fixed_and_broken, compared))
        if not round_:
            steps = {}
    med = statistics.median
    items = len(compared.items)
    print(f"class comparison (library), {items:,} videos x {len(compared.class_names)} classes; medians of {rounds}")
    for name, values in steps.items():
        print(f"  {name:32s} {med(values) * 1e3:8.1f} ms")
    totals = [sum(values[i] for name, values in steps.items() if name != "read both tables") for i in range(rounds)]
    print(f"  {'all but reading':32s} {med(totals) * 1e3:8.1f} ms")


def compare_page(paths: tuple[Path, Path], rounds: int) -> None:
    """The Class comparison page under AppTest: one script run per interaction, as a browser would cause."""
    import os

    os.environ.setdefault("KPSEM_CACHE_DIR", tempfile.mkdtemp(prefix="kpsem-bench-"))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_app import _server_script_cache
    from streamlit.testing.v1 import AppTest

    _server_script_cache()
    at = AppTest.from_file(str(ROOT / "pages" / "compare.py"), default_timeout=300)  # a page runs on its own
    at.run()
    at.radio(key="cmp_source").set_value("Parquet files").run()
    at.text_input(key="cmp_path_baseline").input(str(paths[0])).run()
    first = timed(lambda: at.text_input(key="cmp_path_kpsem").input(str(paths[1])).run())
    assert not at.exception, [e.value for e in at.exception]
    names = class_names(len(read_predictions(paths[0])["probs"].iloc[0]))
    times: dict[str, list[float]] = {}
    for round_ in range(rounds):
        actions = {
            "margin slider (Fig. 7 filter)": partial(at.slider(key="cmp_margin").set_value, 5 * (1 + round_ % 3)),
            "wins / loses (Fig. 7 view)": partial(at.radio(key="cmp_view").set_value,
                                                  "loses" if round_ % 2 == 0 else "wins"),
            "confusion-matrix cell": partial(at.selectbox(key="cm_true").set_value, names[round_ + 1]),
            "rerun, nothing changed": lambda: at,
        }
        for name, change in actions.items():
            times.setdefault(name, []).append(timed(lambda change=change: change().run()))
            assert not at.exception, [e.value for e in at.exception]
            assert not at.error, [e.value for e in at.error]
    med = statistics.median
    print(f"class comparison page (AppTest, Parquet files given); medians of {rounds}")
    print(f"  {'both tables given (read, align, draw)':40s} {first:8.3f} s")
    for name, values in times.items():
        print(f"  {name:40s} {med(values):8.3f} s   (target < 1 s)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="rows of the written table (default 20000)")
    parser.add_argument("--classes", type=int, default=400, help="classes (default 400: Kinetics)")
    parser.add_argument("--videos", type=int, default=20_000, help="videos of each compared table (default 20000)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (after one warm-up round)")
    parser.add_argument("--no-app", action="store_true", help="skip the page under AppTest")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kpsem-bench-tables-") as tmp:
        folder = Path(tmp)
        tables_old_vs_new(args.rows, args.classes, args.rounds, folder)
        paths = write_pair(args.videos, args.classes, folder)
        compare_library(paths, args.rounds)
        if not args.no_app:
            compare_page(paths, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
