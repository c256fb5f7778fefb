"""Honest states: the app says what it cannot score, names classes from a file, marks clips the models do not
know, fits the difference colours to the data and says when a control changes nothing."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_BACKBONE
from streamlit.testing.v1 import AppTest


def _plain(text: str) -> str:
    """Text as the user reads it (the app escapes Markdown in text from files)."""
    return re.sub(r"\\(.)", r"\1", text)


def _shown(at: AppTest, kind: str) -> str:
    assert not at.exception, [e.value for e in at.exception]  # never a traceback
    return _plain(" | ".join(e.value for e in getattr(at, kind)))


def _use_paths(at: AppTest, baseline: Path, kpsem: Path) -> None:
    for role, path in (("baseline", baseline), ("kpsem", kpsem)):
        at.radio(key=f"{role}_source").set_value("path").run()
        at.text_input(key=f"{role}_path").input(str(path)).run()


def _demo_names(app_demo) -> list[str]:
    return (app_demo.clips / "classes.txt").read_text().split()


def test_compare_refuses_a_data_set_of_other_classes_before_computing(app, app_demo, tmp_path):
    import kpsem
    from kpsem.checkpoint import save_checkpoint

    torch.manual_seed(0)
    names = [f"gesture_{i}" for i in range(5)]  # 5 classes the demo's 8-class data set does not have
    baseline = kpsem.create_model("mfnet", num_classes=5, **TINY_BACKBONE)
    ours = kpsem.create_model("mf_kpsem", num_classes=5, backbone=dict(TINY_BACKBONE), num_frames=16)
    paths = [save_checkpoint(tmp_path / f"{name}.pt", model, class_names=names, clip_frames=16, clip_size=96)
             for name, model in (("five_mfnet", baseline), ("five_kpsem", ours))]
    at = app.run()
    _use_paths(at, *paths)
    at.switch_page("pages/compare.py").run()
    assert not [b for b in at.button if b.key == "cmp_compute"]  # nothing offered that cannot be scored
    warning = _shown(at, "warning")
    assert "the models predict 5 classes but the data set has 8" in warning.lower()
    assert "Choose a data set of the models' 5 classes" in warning
    assert not at.metric and not at.get("plotly_chart")  # no 0.0%, no +0.0 pts, no confusion matrices
    assert not (tmp_path / "cache" / "predictions").exists()  # and nothing computed behind the page
    at.switch_page("pages/probes.py").run()  # the probes page likewise probes nothing it cannot score
    assert not [b for b in at.button if b.key == "pr_compute"]
    assert "the models predict 5 classes but the data set has 8" in _shown(at, "warning").lower()

    # The explorer still shows what the models predict, and says plainly that the clip is not theirs.
    at.switch_page("pages/explorer.py").run()
    note = _shown(at, "info")
    clip_class = at.session_state["ex_clip"].split("/")[0]
    assert f"This clip is {clip_class!r} in the data set, a class these models do not know" in note
    assert "they know 5 classes: gesture_0, gesture_1" in note and "say nothing about it" in note
    assert "**true label**: unknown" in " ".join(m.value for m in at.markdown)


def test_a_class_names_file_names_a_checkpoint_without_names(app, app_demo, tmp_path):
    import kpsem

    torch.manual_seed(0)
    published = tmp_path / "MFNet3D_tiny.pth"  # the published format: weights only, so no class names
    model = kpsem.create_model("mfnet", num_classes=8, **TINY_BACKBONE)
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, published)
    names = _demo_names(app_demo)
    at = app.run()
    _use_paths(at, published, published)
    assert any("no class names in the file" in c for c in [_plain(c.value) for c in at.caption])
    assert any("matched to the models' outputs by position" in _plain(c.value) for c in at.caption)
    assert "class_0" in at.selectbox(key="target").options

    # Wrong count, a blank line, a repeated name: refused, saying why; the checkpoint's own names stay.
    for content, why in (("\n".join(names[:7]), "lists 7 class names but the checkpoint predicts 8 classes"),
                         ("\n".join([*names[:2], "", *names[2:]]), "labels.txt line 3 is blank"),
                         ("\n".join([*names[:7], names[0]]), f"names {names[0]!r} twice (lines 1 and 8)")):
        at.file_uploader(key="kpsem_names").upload("labels.txt", content.encode()).run()
        assert why in _shown(at, "error") and "The checkpoint's own names are shown" in _shown(at, "error")
        assert "class_0" in at.selectbox(key="target").options

    # The right list (as a CSV, numbered from 1, in any row order): applied to what the explorer shows.
    rows = "id,name\n" + "\n".join(f"{i + 1},{name}" for i, name in reversed(list(enumerate(names))))
    at.file_uploader(key="kpsem_names").upload("kinetics_labels.csv", rows.encode()).run()
    assert not at.error, _shown(at, "error")
    assert at.selectbox(key="target").options[-len(names):] == names
    assert any("names from" in c.value and "kinetics_labels.csv" in c.value for c in at.caption)
    columns = [_plain(c.value) for c in at.caption if "CAM for" in c.value]  # baseline, then KPSEM
    assert "predicts **class_" in columns[0] and any(f"predicts **{name}**" in columns[1] for name in names)
    assert not any("by position" in _plain(c.value) for c in at.caption)  # now matched to the data set by name
    at.switch_page("pages/models.py").run()
    lists = [d.value for d in at.dataframe if "class" in d.value.columns]
    assert list(lists[0]["class"])[:2] == ["class_0", "class_1"]  # the baseline slot: no file loaded for it
    assert list(lists[1]["class"]) == names
    assert "kinetics_labels.csv" in " ".join(m.value for m in at.markdown)
    at.switch_page("pages/figures.py").run()  # figures load the models by the same key: names and all
    at.selectbox(key="fig_kind").set_value("fig8").run()
    assert not at.exception and not at.error, _shown(at, "error")
    assert names[0] in str(at.get("json")[0].value)  # the spec that remakes the figure carries the names


def test_a_class_names_file_names_a_data_set_so_its_labels_can_score(page, app_demo, tmp_path):
    from conftest import write_frame_folders

    root = tmp_path / "numbered"
    write_frame_folders(root, classes=8, videos_per_class=1, frames=16)  # folders class0 .. class7: no real names
    at = page("compare").run()
    at.radio(key="data_source").set_value("path").run()
    at.text_input(key="data_path").input(str(root)).run()
    assert "names 8 of the 8 classes differently" in _shown(at, "warning")
    assert not [b for b in at.button if b.key == "cmp_compute"]
    at.file_uploader(key="data_names").upload("classes.txt", "\n".join(_demo_names(app_demo)).encode())
    at.run()
    assert not at.warning and not at.error, _shown(at, "warning") + _shown(at, "error")
    assert [b for b in at.button if b.key == "cmp_compute"]  # now the labels can score the predictions


def test_upload_of_unknown_class_says_the_models_know_other_classes_and_notes_an_enlarged_video(page, app_demo,
                                                                                               tmp_path):
    import cv2

    video = next((app_demo.clips / "rise").iterdir())
    at = page("explorer").run()
    at.radio(key="ex_source").set_value("upload").run()
    at.file_uploader(key="ex_upload").upload(video.name, video.read_bytes()).run()
    note = _shown(at, "info")
    assert "These models know 8 synthetic classes only: " + ", ".join(_demo_names(app_demo)) in note
    predicted = [m.split("predicts **")[1].split("**")[0] for m in (_plain(c.value) for c in at.caption)
                 if "predicts **" in m]
    assert f"MFNet's {predicted[0]!r} at" in note and f"MF-KPSEM's {predicted[1]!r} at" in note
    assert "say nothing about it" in note and "enlarged" not in note  # 112 px: larger than the 96 px clip
    at.selectbox(key="ex_upload_truth").set_value("rise").run()  # a class the models know: no note
    assert "These models know" not in _shown(at, "info")

    small = tmp_path / "small.mp4"  # the same video at 64x48 px, smaller than the models' 96 px clip
    capture, frames = cv2.VideoCapture(str(video)), []
    while (ok := capture.read())[0]:
        frames.append(cv2.resize(ok[1], (64, 48)))
    writer = cv2.VideoWriter(str(small), cv2.VideoWriter_fourcc(*"mp4v"), 12.0, (64, 48))
    for frame in frames:
        writer.write(frame)
    writer.release()
    at.file_uploader(key="ex_upload").upload("small.mp4", small.read_bytes()).run()
    note = _shown(at, "info")
    assert "The video is 64×48 px, smaller than the 96×96 px the models read: it was enlarged ×" in note


def test_difference_colours_span_a_range_fitted_to_the_data(page, monkeypatch):
    from kpsem.app_support.drawing import render

    fitted_to: list[np.ndarray] = []  # the difference maps the page fitted its colour range to
    real_limit = render.difference_limit
    monkeypatch.setattr(render, "difference_limit", lambda d: fitted_to.append(np.array(d)) or real_limit(d))
    at = page("explorer").run()
    at.radio(key="overlay").set_value("Difference").run()
    assert not at.exception and not at.error
    caption = _plain(next(c for i in at.get("image") for c in i.captions if "percentile" in c))
    difference = fitted_to[-1]  # (T, S, S): the whole clip, so the frame slider never changes what a colour means
    assert difference.shape[0] == at.slider(key="frame").max
    limit = float(np.percentile(np.abs(difference), 99))
    assert 0 < limit < np.abs(difference).max() and limit < 0.5  # the demo's maps differ by far less than ±1
    assert (f"baseline minus KPSEM, in units of the pair's shared maximum: \N{MINUS SIGN}{limit:.2g} (KPSEM looks "
            f"more) … 0 … +{limit:.2g} (baseline looks more); the range is the 99th percentile") in caption
    at.radio(key="scale").set_value("separate").run()
    caption = _plain(next(c for i in at.get("image") for c in i.captions if "percentile" in c))
    limit = float(np.percentile(np.abs(fitted_to[-1]), 99))
    assert f"each map divided by its own maximum: \N{MINUS SIGN}{limit:.2g} (KPSEM looks more)" in caption

    # The colours follow the range: a 0.05 difference at the range's end takes the end colour, not a pale wash.
    from kpsem.app_support.drawing.render import draw_frame

    frame = np.full((8, 8, 3), 128, np.uint8)
    small = np.full((8, 8), 0.05, np.float32)
    fitted = draw_frame(frame, difference=small, limit=real_limit(small)).image
    fixed = draw_frame(frame, difference=small, limit=1.0).image
    def colourfulness(image: np.ndarray) -> int:  # 0 for grey or white; large for a saturated red or blue
        pixel = image[0, 0].astype(int)
        return int(pixel.max() - pixel.min())

    assert fitted[0, 0, 0] == fitted[0, 0].max()  # positive: red, the baseline looks more
    assert colourfulness(fitted) > 4 * colourfulness(fixed)


def test_the_weighting_control_says_it_changes_nothing_at_the_tail_layer(page, app_demo):
    from kpsem.app_support.caching import services
    from kpsem.app_support.choices.sources import file_key
    from kpsem.checkpoint import describe_checkpoint

    at = page("explorer").run()
    assert at.selectbox(key="cam_layer").value == "tail"
    assert at.radio(key="weighting").disabled
    assert any("At tail both weightings give the same map" in c.value for c in at.caption)
    at.selectbox(key="cam_layer").set_value("conv4").run()
    assert not at.exception and not at.error
    assert not at.radio(key="weighting").disabled
    assert not any("both weightings give the same map" in c.value for c in at.caption)

    # What the note claims, on the demo's models: at tail the maps agree, at conv4 they do not.
    info = describe_checkpoint(app_demo.kpsem)
    keys = (file_key(app_demo.baseline), file_key(app_demo.kpsem), "cpu",
            file_key(next((app_demo.clips / "hop_cw").iterdir())))
    clip = dict(frames=info.clip_frames, size=info.clip_size, mean=tuple(info.mean), std=tuple(info.std), target=5)
    maps = {(layer, weighting): services.analyse(*keys, cam_layer=layer, weighting=weighting, **clip)[0].pair
            for layer in ("tail", "conv4") for weighting in ("clip", "slice")}
    for model in ("baseline", "kpsem"):
        tail = [getattr(maps["tail", w], model).cam_raw for w in ("clip", "slice")]
        conv4 = [getattr(maps["conv4", w], model).cam_raw for w in ("clip", "slice")]
        np.testing.assert_allclose(tail[0], tail[1], rtol=1e-4, atol=1e-6 * float(tail[0].max()))
        assert np.abs(conv4[0] - conv4[1]).max() > 1e-3 * float(conv4[0].max())


@pytest.mark.parametrize(("content", "filename", "expected"), [
    ("abseiling\nair drumming\n\n", "kinetics_400.txt", ["abseiling", "air drumming"]),  # trailing blanks: fine
    ("1 ApplyEyeMakeup\n2 ApplyLipstick\n", "classInd.txt", ["ApplyEyeMakeup", "ApplyLipstick"]),
    ('id,name\n1,"b, quoted"\n0,a\n', "labels.csv", ["a", "b, quoted"]),
    ("0,a\n1,b\n", "labels.csv", ["a", "b"]),
])
def test_class_names_files_are_read_in_the_order_of_their_ids(content, filename, expected):
    from kpsem.app_support.choices.sources import read_class_names

    assert read_class_names(content.encode(), filename) == expected


@pytest.mark.parametrize(("data", "filename", "why"), [
    (b"a\n\nb\n", "x.txt", "x.txt line 2 is blank"),
    (b"a\nb\na\n", "x.txt", "names 'a' twice (lines 1 and 3)"),
    (b"id,name\n0,a\n2,b\n", "x.csv", "id 1 is missing"),
    (b"id,name\n0,a\n0,b\n", "x.csv", "id 0 appears twice"),
    (b"\n\n", "x.txt", "holds no class names"),
    (b"\xff\xfe\x00a", "x.txt", "x.txt is not UTF-8 text"),
])
def test_class_names_files_that_would_shift_names_are_refused(data, filename, why):
    from kpsem.app_support.choices.sources import ClassNamesError, read_class_names

    with pytest.raises(ClassNamesError, match=re.escape(why)):
        read_class_names(data, filename)


def test_names_for_numbered_folders_follow_the_numbers():
    from kpsem.app_support.choices.sources import ClassNamesError, names_for_data

    numbered = sorted(str(i) for i in range(12))  # '0', '1', '10', '11', '2', ...: a data set's label order
    names, note = names_for_data(numbered, [f"n{i}" for i in range(12)], filename="x.txt")
    assert names[numbered.index("10")] == "n10" and names[numbered.index("2")] == "n2" and "folder k" in note
    with pytest.raises(ClassNamesError, match="lists 3 class names but the data set has 12 classes"):
        names_for_data(numbered, ["a", "b", "c"], filename="x.txt")
