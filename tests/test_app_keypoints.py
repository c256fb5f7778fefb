"""The Explorer's key point panel (legible defaults, density next to the CAM, which centres move) and its one
frame control, and the Figure studio starting from the Explorer's key point settings; AppTest on the demo."""

from __future__ import annotations

import json
import re

from streamlit.testing.v1 import AppTest

from kpsem.app_support.choices import keypoint_settings


def _clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _captions(at: AppTest) -> list[str]:
    return [re.sub(r"\\(.)", r"\1", c.value) for c in at.caption]


def _counts(at: AppTest) -> tuple[int, int]:
    """(key points, shift arrows) from the caption under MF-KPSEM's frame."""
    caption = next(c for c in _captions(at) if "shift arrows" in c)
    points, arrows = re.match(r"(\d+) key points, (\d+) shift arrows", caption).groups()
    return int(points), int(arrows)


def test_explorer_key_points_are_legible_at_their_defaults(page):
    at = page("explorer").run()
    _clean(at)
    points, arrows = _counts(at)
    assert points == 3 * 4  # three channels in each of the four regions, one set
    assert arrows <= 4  # the four strongest shifts by regional weight, not one per key point
    legend = next(m.value for m in at.markdown if "kpsem-legend" in m.value)
    for glyph, name in (("&#x25CB;", "top-left"), ("&#x25A1;", "top-right"), ("&#x25B3;", "bottom-left"),
                        ("&#x25C7;", "bottom-right")):  # a shape per region, not one cross for all
        assert f"{glyph} &#x2192;</span> {name}" in legend
    assert "set 0" in legend and "hollow" in legend
    density = [c for i in at.get("image") for c in i.captions if c.startswith("key point density")]
    assert len(density) == 1 and "in each feature cell" in density[0]
    moves = next(c for c in _captions(at) if "centre" in c and "1 feature cell =" in c)
    assert " px (" in moves and "cells)" in moves  # which sets move, in pixels and feature cells
    table = at.dataframe[0].value
    assert list(table["set"]) == list(range(8)) and {"span (px)", "span (cells)"} <= set(table.columns)
    assert at.selectbox(key="cmap").value == "viridis"  # perceptually uniform by default

    at.number_input(key="kp_arrows").set_value(1).run()
    _clean(at)
    assert _counts(at)[1] <= 1
    at.multiselect(key="kp_sets").set_value([0, 2]).run()
    _clean(at)
    points, arrows = _counts(at)
    assert points == 2 * 3 * 4 and arrows <= 2
    legend = next(m.value for m in at.markdown if "kpsem-legend" in m.value)
    assert "set 2" in legend and "filled" in legend  # the second set: filled markers, its own line style


def test_explorer_has_one_frame_control(page):
    at = page("explorer").run()
    _clean(at)
    assert [s.key for s in at.slider if s.key == "frame"] == ["frame"]
    assert not at.get("button_group")  # no row of frame pills
    assert not any("sampled frames;" in c for i in at.get("image") for c in i.captions)  # no filmstrip
    at.slider(key="frame").set_value(16).run()
    _clean(at)
    assert any(c.startswith("Frame 16 of the 16 sampled frames") for c in _captions(at))
    assert keypoint_settings.recall(at.session_state).frame == 15


def test_figure_studio_follows_the_explorers_key_point_settings(app):
    at = app.run()
    at.multiselect(key="kp_sets").set_value([0, 2])
    at.number_input(key="kp_top").set_value(2)
    at.number_input(key="kp_arrows").set_value(3)
    at.slider(key="kp_arrow").set_value(2.0)
    at.checkbox(key="kp_tracks").check()
    at.checkbox(key="kp_split").uncheck()
    at.selectbox(key="cmap").set_value("magma").run()
    at.slider(key="frame").set_value(8).run()
    _clean(at)

    at.switch_page("pages/figures.py").run()
    at.selectbox(key="fig_kind").set_value("fig10").run()
    _clean(at)
    assert at.multiselect(key="fig_sets").value == [0, 2]
    assert at.number_input(key="fig_channels").value == 2
    assert at.number_input(key="fig_arrows_n").value == 3
    assert at.slider(key="fig_arrows").value == 2.0
    assert at.checkbox(key="fig_tracks").value and not at.checkbox(key="fig_split").value
    assert at.selectbox(key="fig_cmap").value == "magma"
    assert 7 in at.multiselect(key="fig_frames_fig10").value  # the Explorer's frame 8 among the figure's
    spec = at.json[0].value
    options = spec if isinstance(spec, dict) else json.loads(spec)
    assert options["options"]["sets"] == [0, 2] and options["options"]["max_arrows"] == 3
    assert options["options"]["tracks"] is True and options["style"]["cmap"] == "magma"
    assert len(at.get("image")) == 1  # the preview was drawn with them

    for kind in ("centres", "density"):  # the two new figures
        at.selectbox(key="fig_kind").set_value(kind).run()
        _clean(at)
        assert len(at.get("image")) == 1 and len(at.get("download_button")) == 4
    assert at.multiselect(key="fig_sets_density").value == [0, 2]
