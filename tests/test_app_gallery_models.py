"""The class comparison's clip gallery (filters worked out by hand and on the demo's tables), the Models page's
metadata tables and the Glossary page."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from kpsem.app_support.caching.video import thumbnail
from kpsem.app_support.choices.sources import file_key
from kpsem.app_support.drawing.gallery import filter_counts, gallery_rows, verdicts
from kpsem.app_support.drawing.metadata import cell, command_line, config_table, flatten, provenance_tables


def _items() -> pd.DataFrame:
    """Five videos: both right, fixed, broken, both wrong, broken (worked out from the three label columns)."""
    return pd.DataFrame({"video_id": ["e", "d", "c", "b", "a"], "clip_index": [0, 0, 0, 0, 0],
                         "true_label": [0, 1, 2, 0, 1], "baseline_pred": [0, 0, 2, 1, 1],
                         "kpsem_pred": [0, 1, 0, 1, 2]})


def test_each_item_falls_in_exactly_one_filter():
    items = _items()
    assert verdicts(items).tolist() == ["both right", "fixed", "broken", "both wrong", "broken"]
    assert filter_counts(items) == {"fixed": 1, "broken": 2, "both right": 1, "both wrong": 1}
    assert gallery_rows(items, "broken")["video_id"].tolist() == ["a", "c"]  # ordered by video id
    assert gallery_rows(items, "fixed")["video_id"].tolist() == ["d"]
    assert gallery_rows(items.iloc[:0], "fixed").empty
    with pytest.raises(ValueError, match="unknown gallery filter 'right'; choose one of fixed, broken, both right"):
        gallery_rows(items, "right")


def test_the_demo_gallery_matches_its_tables(app_demo):
    from kpsem.evaluate import read_predictions
    from kpsem.explain.compare import compare_predictions

    tables = [read_predictions(p) for p in (app_demo.predictions_baseline, app_demo.predictions_kpsem)]
    compared = compare_predictions(*tables, level="video")
    counts = filter_counts(compared.items)
    # independently of the gallery: join the two tables' video rows on the id and count the verdict pairs
    b, k = (t[t["level"] == "video"].set_index("video_id")["correct_top1"] for t in tables)
    joined = pd.concat({"b": b, "k": k}, axis=1)
    expected = {"fixed": int((~joined.b & joined.k).sum()), "broken": int((joined.b & ~joined.k).sum()),
                "both right": int((joined.b & joined.k).sum()), "both wrong": int((~joined.b & ~joined.k).sum())}
    assert counts == expected and sum(counts.values()) == 64
    assert (counts["fixed"], counts["broken"]) == (5, 0)  # the demo's McNemar line: 5 fixed, 0 broken


def test_a_thumbnail_is_the_middle_frame_small(app_demo):
    import io

    from PIL import Image

    from kpsem.data.video import probe_video, read_frames

    video = sorted(app_demo.clips.glob("*/*.mp4"))[0]
    picture = Image.open(io.BytesIO(thumbnail(file_key(video), width=48)))
    assert picture.format == "JPEG" and picture.width == 48
    info = probe_video(video)
    middle = read_frames(video, [info.num_frames // 2])[0]
    assert picture.height == round(middle.shape[0] * 48 / middle.shape[1])
    small = Image.fromarray(middle).resize(picture.size, Image.BILINEAR)
    diff = np.abs(np.asarray(small.convert("L"), float) - np.asarray(picture.convert("L"), float))
    assert diff.mean() < 12  # the same picture, up to JPEG and the decoder's scaling


def test_metadata_reads_as_rows():
    provenance = {"saved": "2026-01-01", "command": ["python", "-m", "kpsem", "train", "--out", "my runs/a"],
                  "epoch": 3, "config": {"lr": 0.01, "lr_steps": [14, 18], "init": None},
                  "metrics": {"val_top1": 0.78125, "nested": {"x": True}}, "dataset": {},
                  "pairs": [["a", "b"]]}
    assert command_line(provenance) == "python -m kpsem train --out 'my runs/a'"  # one line, as a shell reads it
    assert command_line({}) is None and command_line({"command": "a\nb"}) == "a b"
    tables = dict(provenance_tables(provenance))
    assert list(tables) == ["Run", "Training settings", "Metrics at the last epoch"]
    assert tables["Run"].values.tolist() == [["saved", "2026-01-01"], ["epoch", "3"], ["dataset", "{}"],
                                             ["pairs", '["a", "b"]']]
    assert tables["Training settings"].values.tolist() == [["lr", "0.01"], ["lr_steps", "14, 18"], ["init", "—"]]
    assert tables["Metrics at the last epoch"].values.tolist() == [["val_top1", "0.78125"], ["nested.x", "yes"]]
    assert flatten({"a": {"b": {"c": 1}}}) == [("a.b.c", "1")]
    assert config_table({"widths": (48, 96)}).values.tolist() == [["widths", "48, 96"]]
    assert cell("x" * 3000).endswith("… (3000 characters)") and cell([]) == "(none)"


def _as_read(markdown: str) -> str:
    return re.sub(r"\\(.)", r"\1", markdown)


def test_the_gallery_filters_and_opens_a_clip(app, app_demo):
    at = app.run()
    at.switch_page("pages/compare.py").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    gallery = at.radio(key="cmp_gallery")
    assert gallery.options == ["fixed (5)", "broken (0)", "both right (49)", "both wrong (10)"]
    assert sum(1 for b in at.button if b.key.startswith("open_fixed_")) == 5
    assert len(at.get("image")) == 5  # a thumbnail per clip
    gallery.set_value("both wrong").run()
    assert sum(1 for b in at.button if b.key.startswith("open_both wrong_")) == 10
    at.number_input(key="cmp_limit").set_value(4).run()
    assert sum(1 for b in at.button if b.key.startswith("open_")) == 4
    assert any("6 more" in c.value for c in at.caption)
    at.radio(key="cmp_gallery").set_value("broken").run()
    assert not [b for b in at.button if b.key.startswith("open_")]
    at.radio(key="cmp_gallery").set_value("both right").run()
    rows = [m.value for m in at.markdown if m.value.startswith("`")]
    video_id = rows[1].split("`")[1]
    true, said_b, said_k = re.search(r"true \*\*(.+?)\*\* · .+?: (.+?) · .+?: (.+)$", _as_read(rows[1])).groups()
    assert true == said_b == said_k  # both right: the row names one class three times
    at.button(key="open_both right_1").click().run()
    assert not at.exception and not at.error
    assert at.session_state["ex_clip"] == video_id and at.query_params["clip"] == video_id  # opened, and in the URL
    assert [s.value for s in at.subheader][:2] == ["MFNet", "MF-KPSEM"]


def test_the_models_page_shows_metadata_as_tables(page, app_demo):
    at = page("models").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert not at.get("json")  # no raw JSON any more
    commands = [c.value for c in at.code]
    assert len(commands) == 2 and all("\n" not in c and " -m kpsem train --arch " in c for c in commands)
    assert "--arch mfnet " in commands[0] and "--arch mf_kpsem " in commands[1]
    tables = [d.value for d in at.dataframe if list(d.value.columns) == ["setting", "value"]]
    first_config = dict(tables[0].values.tolist())
    assert first_config["num_classes"] == "8" and first_config["widths"] == "48, 96, 192, 384"
    kpsem_config = dict(next(t for t in tables if "backbone.widths" in set(t["setting"])).values.tolist())
    assert kpsem_config["num_regions"] == "4" and kpsem_config["num_sets"] == "8"
    labels = [e.label for e in at.expander]
    for title in ("Run", "Training settings", "Data set", "Metrics at the last epoch", "Initialisation"):
        assert sum(label.startswith(f"{title} (") for label in labels) == 2, labels
    metrics = [dict(t.values.tolist()) for t in tables if "val_top1" in set(t["setting"])]
    assert [m["val_top1"] for m in metrics] == ["0.78125", "0.875"]


def test_the_glossary_names_each_element_and_its_equation(page):
    at = page("glossary").run()
    assert not at.exception and not at.error
    text = {m.value.split("**")[1]: m.value for m in at.markdown if m.value.startswith("**")}
    equations = {"Separation centre": "Eq. (4)-(5)", "Region": "Section 3.3", "Key point": "Eq. (6)-(7)",
                 "Shift": "Eq. (8)-(10)", "Regional weight": "Eq. (11)", "RKPS": "Eq. (12)"}
    for term, where in equations.items():
        assert where in text[term], (term, text.get(term))
