"""State in the URL: every query parameter checked (kpsem.app_support.choices.url_state), and the app's round trip:
a link opens the view it names, a reload of the URL the app writes opens the same view again, and a bad link
gets a note, never an exception."""

from __future__ import annotations

import shutil

import pytest
from conftest import APP_FILE
from streamlit.testing.v1 import AppTest

from kpsem.app_support.choices.config import ServerSettings
from kpsem.app_support.choices.url_state import (
    DEMO,
    MAX_VALUE_CHARS,
    LinkState,
    apply,
    apply_frame,
    overlay_param,
    parse,
)

OPEN = ServerSettings(browse_roots=None)


def test_parse_reads_demo_paths_and_view_values(tmp_path):
    checkpoint = tmp_path / "run" / "final.pt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"x")
    state = parse({"baseline": DEMO, "kpsem": str(tmp_path / "run" / ".." / "run" / "final.pt"), "data": str(tmp_path),
                   "split": "val", "clip": "rise/rise_test_001", "frame": "7", "overlay": "keypoints"}, OPEN)
    assert state == LinkState(baseline=DEMO, kpsem=str(checkpoint.resolve()), data=str(tmp_path.resolve()),
                              split="val", clip="rise/rise_test_001", frame=7, overlay="Key points and shifts")
    assert parse({"frame": ["3", "4"]}, OPEN).frame == 4  # a repeated parameter counts by its last value


@pytest.mark.parametrize(("params", "note"), [
    ({"frame": "0"}, "the link's frame '0' is not a frame number"),
    ({"frame": "-2"}, "the link's frame '-2' is not a frame number"),
    ({"frame": "1e3"}, "the link's frame '1e3' is not a frame number"),
    ({"frame": "٣"}, "the link's frame '٣' is not a frame number"),  # a digit to Python, not to a URL
    ({"overlay": "heat"}, "the link's overlay 'heat' is not one of gradcam, keypoints, difference"),
    ({"split": "all"}, "the link's split 'all' is not one of train, val, test"),
    ({"clip": "a\x00b"}, "the link's clip contains control characters"),
    ({"clip": "c" * (MAX_VALUE_CHARS + 1)}, f"the link's clip is {MAX_VALUE_CHARS + 1} characters long"),
    ({"zoom": "2"}, "the link's parameters 'zoom' mean nothing here"),
    ({"baseline": "/nonexistent/model.pt"}, "the link's baseline checkpoint was not opened (baseline checkpoint "
                                            "/nonexistent/model.pt does not exist or is not a file"),
    ({"data": "/etc/hostname"}, "the link's data set folder was not opened (data set folder /etc/hostname does "
                                "not exist or is not a folder"),
    ({"kpsem": "/tmp/\x00.pt"}, "the link's kpsem contains control characters"),
])
def test_parse_refuses_bad_values_with_a_note(params, note):
    state = parse(params, OPEN)
    assert len(state.notes) == 1 and state.notes[0].startswith(note), state.notes
    assert all(getattr(state, name) is None for name in ("baseline", "kpsem", "data", "split", "clip", "frame",
                                                         "overlay"))


def test_a_path_in_a_link_stays_inside_the_browse_roots(tmp_path):
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    for folder in (allowed, outside):
        folder.mkdir()
        (folder / "m.pt").write_bytes(b"x")
    (allowed / "link.pt").symlink_to(outside / "m.pt")
    roots = ServerSettings(browse_roots=(allowed.resolve(),))
    assert parse({"baseline": str(allowed / "m.pt")}, roots).baseline == str((allowed / "m.pt").resolve())
    for sneaky in (str(allowed / ".." / "outside" / "m.pt"), str(allowed / "link.pt"), str(outside / "m.pt")):
        state = parse({"baseline": sneaky}, roots)
        assert state.baseline is None
        assert "is outside the folders this server lets you open" in state.notes[0]
    none = parse({"data": str(allowed)}, ServerSettings(browse_roots=()))
    assert none.data is None and "this server opens no typed paths" in none.notes[0]


def test_apply_presets_the_sidebar_always_and_the_view_only_on_the_explorer():
    state = LinkState(baseline="/m/a.pt", kpsem=DEMO, data="/d", split="val", clip="c/1", frame=3,
                      overlay="Difference", notes=["n"])
    session: dict = {}
    apply(state, session, explorer=False)
    assert session == {"baseline_source": "path", "baseline_path": "/m/a.pt", "kpsem_source": "bundled demo",
                       "data_source": "path", "data_path": "/d", "data_split": "val", "_url_notes": ["n"]}
    apply(state, session, explorer=True)
    assert session["explorer_request"] == "c/1" and session["overlay"] == "Difference" and session["_url_frame"] == 3
    apply_frame(session, 16)
    assert session["frame"] == 3 and "_url_frame" not in session
    session = {"_url_frame": 17}
    apply_frame(session, 16)
    assert "frame" not in session
    assert session["_url_notes"] == ["the link's frame 17 is not shown (the models read 16 frames); frame 1 is shown"]


def test_overlay_values_round_trip():
    assert [overlay_param(label) for label in ("Grad-CAM", "Key points and shifts", "Difference", "other")] == [
        None, "keypoints", "difference", None]
    for value in ("keypoints", "difference"):
        assert overlay_param(parse({"overlay": value}, OPEN).overlay) == value


# --- the app ---------------------------------------------------------------------------------------------


def _clip_ids(app_demo) -> list[str]:
    lines = (app_demo.clips / "test.txt").read_text().split("\n")
    return [line.split()[0].rsplit(".", 1)[0] for line in lines if line.strip()]


def _view(at: AppTest) -> tuple:
    return (at.radio(key="baseline_source").value, at.radio(key="data_source").value, at.session_state["ex_clip"],
            at.slider(key="frame").value, at.radio(key="overlay").value)


def test_a_link_opens_its_view_and_the_url_the_app_writes_opens_it_again(app, app_demo, tmp_path):
    baseline = tmp_path / "models" / "baseline copy.pt"  # a typed path (with a space) rather than the demo
    baseline.parent.mkdir()
    shutil.copy(app_demo.baseline, baseline)
    clip = _clip_ids(app_demo)[20]
    app.query_params = {"baseline": str(baseline), "clip": clip, "frame": "5", "overlay": "difference"}
    at = app.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert not at.warning, [w.value for w in at.warning]
    assert _view(at) == ("path", "bundled demo", clip, 5, "Difference")
    assert at.text_input(key="baseline_path").value == str(baseline.resolve())
    assert [s.value for s in at.subheader][:2] == ["MFNet", "MF-KPSEM"]
    written = dict(at.query_params)
    assert written == {"baseline": str(baseline.resolve()), "clip": clip, "frame": "5", "overlay": "difference"}

    at.slider(key="frame").set_value(9).run()  # the URL follows the view
    assert at.query_params["frame"] == "9"
    at.radio(key="overlay").set_value("Grad-CAM").run()
    assert "overlay" not in at.query_params  # the default: left out of the link

    again = AppTest.from_file(str(APP_FILE), default_timeout=120)  # a reload: a new session, the same URL
    again.query_params = dict(at.query_params)
    again.run()
    assert not again.exception and not again.error
    assert _view(again) == ("path", "bundled demo", clip, 9, "Grad-CAM")


def test_a_bad_link_gets_a_note_and_the_default_view(app, app_demo, tmp_path, monkeypatch):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    monkeypatch.setenv("KPSEM_BROWSE_ROOTS", str(allowed))
    app.query_params = {"baseline": str(app_demo.baseline), "data": "../../etc", "clip": "no/such_clip",
                        "frame": "99", "overlay": "<script>", "x": "1"}
    at = app.run()
    assert not at.exception, [e.value for e in at.exception]
    notes = " ".join(w.value for w in at.warning)
    for said in ("baseline checkpoint was not opened", "is outside the folders this server lets you open",
                 "data set folder was not opened", "frame 99 is not shown \\(the models read 16 frames\\)",
                 "overlay \\'\\<script\\>\\' is not one of", "parameters \\'x\\' mean nothing here",
                 "is not in the sidebar's data set"):
        assert said in notes, (said, notes)
    assert _view(at)[:2] == ("bundled demo", "bundled demo") and _view(at)[3:] == (1, "Grad-CAM")
    assert [s.value for s in at.subheader][:2] == ["MFNet", "MF-KPSEM"]  # the demo works on
    assert set(at.query_params) == {"clip"} and at.query_params["clip"] == _clip_ids(app_demo)[0]
    at.button(key="url_notes_dismiss").click().run()
    assert not any("This link asked" in w.value for w in at.warning)
