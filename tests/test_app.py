"""Every page of the Streamlit app, driven by AppTest on the bundled demo (real checkpoints, no mocks)."""

from __future__ import annotations

import io
import re
import shutil
import zipfile

import pytest
from streamlit.testing.v1 import AppTest

from kpsem.app_support.drawing.text import escape_markdown


def _clean(at: AppTest) -> None:
    """No traceback and no error box anywhere on the page."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _as_read(markdown: str) -> str:
    """Text as the user reads it: the app escapes Markdown in text from files (``mf\\_kpsem``)."""
    return re.sub(r"\\(.)", r"\1", markdown)


def _captions(at: AppTest) -> list[str]:
    return [_as_read(c.value) for c in at.caption]


def _footer(at: AppTest) -> str:
    return next(c for c in _captions(at) if c.startswith("Device "))


def test_the_router_opens_the_explorer_links_every_page_and_keeps_the_sidebar_across_pages(app, app_demo, tmp_path):
    at = app.run()
    _clean(at)
    assert [s.value for s in at.subheader][:2] == ["MFNet", "MF-KPSEM"]  # the default page
    links = [link.proto.label for link in at.get("page_link")]
    assert links == ["Explorer", "Class comparison", "Motion probes", "Figure studio", "Models", "Design studies",
                     "Glossary"]
    at.run()  # AppTest's later runs take Streamlit's pages-folder mode: the page runs alone, sidebar and all
    _clean(at)
    assert [s.value for s in at.subheader][:2] == ["MFNet", "MF-KPSEM"]
    copy = tmp_path / "copy_mfnet.pt"
    shutil.copy(app_demo.baseline, copy)
    at.radio(key="baseline_source").set_value("path").run()
    at.text_input(key="baseline_path").input(str(copy)).run()
    at.switch_page("pages/models.py").run()  # each page draws the sidebar: the choices stay as they were
    _clean(at)
    assert at.radio(key="baseline_source").value == "path"
    assert at.text_input(key="baseline_path").value == str(copy)
    assert f"`{copy}`" in " ".join(m.value for m in at.markdown)  # the models page shows the chosen file


def test_explorer_shows_both_models_then_redraws_without_recomputing(page, app_demo):
    at = page("explorer").run()
    _clean(at)
    assert [s.value for s in at.subheader][:2] == ["MFNet", "MF-KPSEM"]
    charts = [c.key for c in at.get("plotly_chart")]  # the clip's time line, top-k of each model, centres
    assert charts == ["ex_timeline", "topk_baseline", "topk_kpsem", "centre_chart"]
    images = at.get("image")
    assert len(images) >= 4  # two frames, the key point density, the colour bar
    assert any("MFNet has no key points" in i.value for i in at.info)
    arrows = next(c for c in _captions(at) if "shift arrows" in c)
    assert "key points" in arrows and "cross a region border" in arrows
    assert any("kpsem-legend" in m.value for m in at.markdown)
    assert "analysis" in _footer(at) and "Device **cpu**" in _footer(at)
    facts = " ".join(m.value for m in at.markdown)
    assert "sampled frames" in facts and "true label" in facts

    first = [i.value for i in at.get("image")]
    at.slider(key="frame").set_value(9).run()
    _clean(at)
    assert "(cached)" in _footer(at)  # the frame slider never recomputes the models
    assert [i.value for i in at.get("image")] != first
    assert "frame 9" in " ".join(i.captions[0] for i in at.get("image") if i.captions)

    at.radio(key="overlay").set_value("Difference").run()
    _clean(at)
    captions = " ".join(c for i in at.get("image") for c in i.captions)
    assert "baseline minus KPSEM" in captions and "(cached)" in _footer(at)

    at.radio(key="overlay").set_value("Key points and shifts").run()
    _clean(at)
    assert any("MFNet has no key points" in i.value for i in at.info)
    at.checkbox(key="kp_split").uncheck()
    at.slider(key="kp_arrow").set_value(3.0)
    at.radio(key="scale").set_value("separate").run()
    _clean(at)
    assert "(cached)" in _footer(at)  # drawing settings never recompute either

    assert at.selectbox(key="cam_layer").options == ["tail", "conv5", "conv4", "conv3", "conv2"]  # the models' own
    at.selectbox(key="cam_layer").set_value("conv4").run()  # a new layer is a new analysis
    _clean(at)
    assert "(fresh)" in _footer(at)


def test_explorer_class_filter_and_one_frame_control(page):
    at = page("explorer").run()
    classes = at.selectbox(key="ex_class").options
    target = classes[2]  # a class, not "All classes"
    at.selectbox(key="ex_class").set_value(target).run()
    _clean(at)
    clips = at.selectbox(key="ex_clip").options
    assert clips and all(c.startswith(target + "/") for c in clips)
    at.selectbox(key="ex_clip").set_value(clips[-1]).run()
    _clean(at)
    assert f"**true label**: {escape_markdown(target)}" in " ".join(m.value for m in at.markdown)
    assert at.slider(key="frame").value == 1
    # One way to move between frames: the slider; no filmstrip image, no row of frame pills.
    assert [s.key for s in at.slider if s.key == "frame"] == ["frame"]
    assert not at.get("button_group") and "frame_jump" not in at.session_state
    assert not any("sampled frames" in c for i in at.get("image") for c in i.captions)
    at.slider(key="frame").set_value(12).run()
    _clean(at)
    assert any(c.startswith("Frame 12 of the") for c in _captions(at))


def test_explorer_target_and_weighting(page):
    at = page("explorer").run()
    names = at.selectbox(key="target").options
    at.selectbox(key="target").set_value(names[-1]).run()
    _clean(at)
    assert all(f"CAM for {names[-1]}" in c for c in _captions(at) if "CAM for" in c)
    at.selectbox(key="cam_layer").set_value("conv4").run()  # at tail the weighting is disabled: same maps
    _clean(at)
    at.radio(key="weighting").set_value("slice").run()
    _clean(at)
    assert "(fresh)" in _footer(at)


def test_compare_reads_bundled_tables_and_opens_a_clip_in_the_explorer(app):
    at = app.run()
    at.switch_page("pages/compare.py").run()
    _clean(at)
    metrics = {m.label: m.value for m in at.metric}
    assert len(metrics) == 6 and metrics["split"] == "test"
    assert any(k.startswith("top-1") for k in metrics) and any(k.startswith("top-5") for k in metrics)
    assert len(at.get("plotly_chart")) >= 3  # three confusion matrices (+ per-class bars when KPSEM wins)
    at.radio(key="cmp_view").set_value("loses").run()
    at.slider(key="cmp_margin").set_value(10).run()
    _clean(at)
    opens = [b for b in at.button if b.key and b.key.startswith("open_")]
    assert opens, "the demo's two models disagree on at least one clip"
    row = next(m.value for m in at.markdown if m.value.startswith("`"))  # the first row names the first clip
    video_id = row.split("`")[1]
    opens[0].click().run()
    _clean(at)
    assert at.session_state["ex_clip"] == video_id
    assert [s.value for s in at.subheader][:2] == ["MFNet", "MF-KPSEM"]


def test_compare_states_the_significance_of_the_demo_and_of_several_runs(page, app_demo):
    at = page("compare").run()
    _clean(at)
    # The demo: MF-KPSEM fixes 5 of the 64 test videos and breaks none; p = 2 / 2^5 = 0.0625.
    text = " ".join(m.value for m in at.markdown)
    assert "not significant at 5%: McNemar exact p = 0.0625 (5 fixed, 0 broken), 64 videos" in text
    captions = " ".join(_captions(at))
    assert "KPSEM minus baseline: +7.8 points top-1, 95% bootstrap CI" in captions
    assert "all 5 disagreements go one way" in captions
    per_class = at.dataframe[0].value
    assert {"baseline_wilson_low", "kpsem_wilson_high"} <= set(per_class.columns)
    assert '"error_y"' not in at.get("plotly_chart")[0].proto.spec
    at.checkbox(key="cmp_whiskers").check().run()
    _clean(at)
    assert '"error_y"' in at.get("plotly_chart")[0].proto.spec  # Fig. 7 now carries the Wilson whiskers

    # Two runs (here the demo pair twice): mean and standard deviation across them, then each run's figures.
    at.radio(key="cmp_source").set_value("Parquet files").run()
    at.text_input(key="cmp_path_baseline").input(f"{app_demo.predictions_baseline};{app_demo.predictions_baseline}")
    at.text_input(key="cmp_path_kpsem").input(str(app_demo.predictions_kpsem)).run()
    assert any("2 baseline tables and 1 KPSEM tables" in w.value for w in at.warning)
    at.text_input(key="cmp_path_kpsem").input(f"{app_demo.predictions_kpsem};{app_demo.predictions_kpsem}").run()
    _clean(at)
    assert "Across 2 runs" in [s.value for s in at.subheader]
    text = " ".join(m.value for m in at.markdown)
    assert "difference +7.8 ± 0.0 points" in text and "in 0 of 2 runs" in text
    runs = at.dataframe[0].value
    assert runs["run"].tolist() == [1, 2] and runs["fixed"].tolist() == [5, 5]
    assert runs["mcnemar_p"].tolist() == [0.0625, 0.0625]
    assert len(at.metric) == 6  # the headline of the run shown below


def test_compare_computes_missing_tables_with_progress_and_caches_them(page, app_demo, tmp_path):
    copies = []
    for name in ("mfnet.pt", "mf_kpsem.pt"):
        copies.append(tmp_path / f"copy_{name}")
        shutil.copy(app_demo.root / name, copies[-1])
    at = page("compare").run()
    for role, path in zip(("baseline", "kpsem"), copies):
        at.radio(key=f"{role}_source").set_value("path").run()
        at.text_input(key=f"{role}_path").input(str(path)).run()
    _clean(at)
    assert any("No predictions table yet" in i.value for i in at.info)
    at.button(key="cmp_compute").click().run(timeout=600)  # both models over the demo test split: minutes on a busy CPU
    _clean(at)
    assert len(at.metric) == 6
    cached = list((tmp_path / "cache" / "predictions").glob("*.parquet"))
    assert len(cached) == 2
    assert "computed, cached on disk" in " ".join(_captions(at))


def test_compare_from_parquet_paths(page, app_demo):
    at = page("compare").run()
    at.radio(key="cmp_source").set_value("Parquet files").run()
    at.text_input(key="cmp_path_baseline").input(str(app_demo.predictions_baseline)).run()
    at.text_input(key="cmp_path_kpsem").input(str(app_demo.predictions_kpsem)).run()
    _clean(at)
    assert len(at.metric) == 6
    at.radio(key="cmp_level").set_value("clip").run()
    _clean(at)
    assert at.metric[5].label == "clips compared"


@pytest.mark.parametrize("kind", ["fig7", "fig8", "fig9", "fig10", "table1", "confusion"])
def test_figure_studio_draws_every_figure(page, kind):
    at = page("figures").run()
    at.selectbox(key="fig_kind").set_value(kind).run()
    _clean(at)
    assert len(at.get("image")) == 1  # the preview
    assert len(at.get("download_button")) == 4  # PNG, PDF, SVG, zip
    at.radio(key="fig_column").set_value("single")
    at.slider(key="fig_font").set_value(10).run()
    _clean(at)
    assert at.get("json")  # the settings


def test_figure_export_zip_holds_every_format_and_the_settings(app_demo):
    from kpsem.app_support.caching.figures import export_figure
    from kpsem.app_support.choices.sources import file_key
    from kpsem.checkpoint import describe_checkpoint

    info = describe_checkpoint(app_demo.kpsem)
    clip = next((app_demo.clips / "rise").iterdir())
    spec = {"kind": "fig9", "style": {"column": "single", "font_size": 7.0, "dpi": 150, "cmap": "viridis"},
            "baseline": list(file_key(app_demo.baseline)), "kpsem": list(file_key(app_demo.kpsem)), "device": "cpu",
            "names": ["MFNet", "MF-KPSEM"], "cam_layer": "tail", "weighting": "clip",
            "clip": {"frames": info.clip_frames, "size": info.clip_size, "mean": list(info.mean),
                     "std": list(info.std)},
            "clips": [list(file_key(clip))], "true_labels": ["rise"],
            "options": {"frames": [0, 7, 15], "shared": True, "difference": True}}
    files = export_figure(spec)
    assert files["png"].startswith(b"\x89PNG") and files["pdf"].startswith(b"%PDF") and b"<svg" in files["svg"][:500]
    with zipfile.ZipFile(io.BytesIO(files["zip"])) as archive:
        names = set(archive.namelist())
        expected = {"fig9_gradcam.png", "fig9_gradcam.pdf", "fig9_gradcam.svg", "fig9_gradcam.json", "settings.json"}
        assert expected <= names
        assert b'"viridis"' in archive.read("settings.json")


def test_models_page_lists_metadata_classes_and_table1(page):
    at = page("models").run()
    _clean(at)
    text = _as_read(" ".join(m.value for m in at.markdown))
    assert "**architecture**: mfnet" in text and "**architecture**: mf_kpsem" in text
    table = at.dataframe[-1].value
    assert set(table["model"]) == {"mfnet", "mf_kpsem"}
    assert "kpsem" in set(table["part"]) and (table["parameters"] > 0).all()
    assert any("multiply-adds" in c for c in _captions(at))
