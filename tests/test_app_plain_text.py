"""Text from files is text: class names, model ids and paths that look like Markdown or HTML are shown
literally on every page (escaped for Markdown, and for plotly), and never make the browser fetch anything."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
from streamlit.testing.v1 import AppTest

from kpsem.app_support.drawing.render import confusion_heatmap, per_class_chart, topk_chart
from kpsem.app_support.drawing.text import escape_markdown, escape_plotly

# Each name holds a kind of Markdown (an image is a fetch, then emphasis, a Streamlit colour directive and a
# formula, a link) and an HTML image (a fetch, and a tag plotly would read). Eight, one per class of the demo.
_MARKDOWN = ("![c{i}](http://example.invalid/{i}.png)", "**bold{i}**", ":red[red{i}] $x^{i}$",
             "[link{i}](http://example.invalid/{i})")
HOSTILE = [f"{_MARKDOWN[i % 4].format(i=i)} <img src=http://example.invalid/{i}.png>" for i in range(8)]
RAW_MARKS = ("![c", "<img", "**bold", ":red[", "$x", "[link")  # none of these may reach a Markdown element


def _markdown_texts(at: AppTest) -> list[str]:
    """Every string on the page that Streamlit renders as Markdown."""
    texts = [e.value for kind in ("markdown", "caption", "info", "warning", "error", "success", "subheader")
             for e in getattr(at, kind)]
    texts += [c for image in at.get("image") for c in (image.captions or [])]
    widgets = ("selectbox", "radio", "slider", "text_input", "multiselect")
    texts += [w.label for kind in widgets for w in getattr(at, kind)]
    texts += [str(o) for radio in at.radio for o in radio.options]
    texts += [m.label for m in at.get("metric")] + [str(m.proto.body) for m in at.get("metric")]
    return texts


def _assert_literal(at: AppTest, shown: list[str]) -> None:
    """No raw markup anywhere, no traceback, and each name in ``shown`` appears escaped."""
    assert not at.exception, [e.value for e in at.exception]
    texts = _markdown_texts(at)
    for text in texts:
        live = re.sub(r"\\[!-/:-@\[-`{-~]", "_", text)  # a backslash-escaped character is only that character
        live = re.sub(r"(`+).+?\1", "", live)  # and inside a code span nothing is interpreted
        assert not any(mark in live for mark in RAW_MARKS), text
    joined = "\n".join(texts)
    for name in shown:
        assert escape_markdown(name) in joined, name
    for spec in _chart_specs(at):
        assert "<img" not in spec, spec[:300]


def _chart_specs(at: AppTest, *keys: str) -> list[str]:
    """Every plotly chart's figure (or those with these keys) as JSON text (Streamlit sends "<" as \\u003c;
    read back here)."""
    return [json.dumps(json.loads(chart.proto.spec)) for chart in at.get("plotly_chart")
            if not keys or chart.key in keys]


def _hostile_checkpoint(source: Path, target: Path) -> Path:
    payload = torch.load(source, weights_only=True, map_location="cpu")
    payload["class_names"] = list(HOSTILE)
    torch.save(payload, target)
    return target


def test_markdown_escape_shows_every_character_literally() -> None:
    assert escape_markdown("![x](http://example.invalid/x.png)") == r"\!\[x\]\(http\:\/\/example\.invalid\/x\.png\)"
    assert escape_markdown("<img src=x>") == r"\<img src\=x\>"
    assert escape_markdown("**bold**\nnext") == r"\*\*bold\*\* next"  # a line break cannot start a block
    assert escape_markdown("hop_cw") == r"hop\_cw"
    assert escape_markdown("a`b", code=True) == "``a`b``"  # a code span longer than any run of backticks
    assert escape_markdown("`edge`", code=True) == "`` `edge` ``"
    assert escape_plotly("<b>x</b> & y") == "&lt;b&gt;x&lt;/b&gt; &amp; y"


def test_charts_escape_names_and_never_put_them_in_hover_templates(app_demo) -> None:
    import numpy as np
    import pandas as pd

    table = pd.DataFrame({"class_name": HOSTILE[:2], "baseline": [0.5, 0.6], "kpsem": [0.7, 0.8],
                          "difference": [0.2, 0.2], "count": [8, 8]})
    figure = per_class_chart(table, names=("<b>base</b>", "%{y} <img src=x>"))
    spec = figure.to_json()
    assert "<img" not in spec and "<b>base" not in spec and "&lt;img src=x&gt;" in spec
    for trace in figure.data:
        assert "<img" not in trace.hovertemplate and "%{y} " not in trace.hovertemplate
    heatmap = confusion_heatmap(np.eye(2), HOSTILE[:2], title="<a href='http://example.invalid'>t</a>")
    assert list(heatmap.data[0].x) == [escape_plotly(n) for n in HOSTILE[:2]]
    assert heatmap.layout.title.text.startswith("&lt;a href=")

    from kpsem.explain.analysis import TopK

    class Top:  # the one field topk_chart reads from a ClipAnalysis
        def __init__(self) -> None:
            self.topk = [TopK(i, name, 0.5) for i, name in enumerate(HOSTILE[:2])]

    bars = topk_chart(Top(), true_label=None, colour="#000")  # type: ignore[arg-type]
    assert bars["data"][0]["y"] == [escape_plotly(HOSTILE[1]), escape_plotly(HOSTILE[0])]


def test_hostile_class_names_from_a_checkpoint_render_literally(app, app_demo, tmp_path) -> None:
    baseline = _hostile_checkpoint(app_demo.baseline, tmp_path / "![b](b.png)_base.pt")
    kpsem = _hostile_checkpoint(app_demo.kpsem, tmp_path / "kpsem_<img src=x>.pt")
    at = app.run()
    for role, path in (("baseline", baseline), ("kpsem", kpsem)):
        at.radio(key=f"{role}_source").set_value("path").run()
        at.text_input(key=f"{role}_path").input(str(path)).run()
    assert [s.value for s in at.subheader][:2] == ["MFNet", "MF-KPSEM"], [e.value for e in at.error]
    # true label, predictions and the names the sidebar says differ from the data set's are all class names
    shown = [n for n in HOSTILE if escape_markdown(n) in "\n".join(_markdown_texts(at))]
    assert len(shown) >= 2
    _assert_literal(at, shown)
    top5 = _chart_specs(at, "topk_baseline", "topk_kpsem")
    assert len(top5) == 2 and all(escape_plotly(HOSTILE[0]) in spec for spec in top5)  # the bars name every class
    texts = "\n".join(_markdown_texts(at))
    assert "`kpsem_<img src=x>.pt`" in texts and "`![b](b.png)_base.pt`" in texts  # file names: code spans
    at.radio(key="overlay").set_value("Difference").run()
    _assert_literal(at, [])
    at.toggle(key="faith_on").set_value(True).run()  # the faithfulness curves: a plotly axis names the class
    assert len(_chart_specs(at, "faith_chart")) == 1, [e.value for e in at.error]
    _assert_literal(at, [])
    axis = re.search(r'"text": "p\((.*?)\)"', _chart_specs(at, "faith_chart")[0])  # p(the class both curves are for)
    assert axis is not None and axis.group(1) in {escape_plotly(name) for name in HOSTILE}
    at.switch_page("pages/models.py").run()
    _assert_literal(at, [])


def test_hostile_class_folders_and_video_names_render_literally(page, app_demo, tmp_path) -> None:
    root = tmp_path / "data"
    names = ["**bold**", "<img src=x.png>"]
    for name, source in zip(names, sorted(app_demo.clips.glob("*/*.mp4"))[:2]):
        (root / name).mkdir(parents=True)
        shutil.copy(source, root / name / "![v](x.png).mp4")
    at = page("explorer").run()
    at.radio(key="data_source").set_value("path").run()
    at.text_input(key="data_path").input(str(root)).run()
    at.selectbox(key="ex_class").set_value("<img src=x.png>").run()
    _assert_literal(at, ["<img src=x.png>"])  # the clip picker's label names the class
    assert "Clip (1 in \\<img src\\=x\\.png\\>)" in [s.label for s in at.selectbox]


def test_hostile_names_in_predictions_tables_render_literally(page, app_demo, tmp_path) -> None:
    from kpsem.evaluate import read_predictions, write_predictions

    mapping = dict(zip(read_predictions(app_demo.predictions_kpsem).attrs["kpsem"]["class_names"], HOSTILE))
    paths = []
    for role, source, model_id in (("b", app_demo.predictions_baseline, "**base** <img src=x>"),
                                   ("k", app_demo.predictions_kpsem, "![k](http://example.invalid/k.png)")):
        table = read_predictions(source)
        table["true_class"] = table["true_class"].map(mapping)
        table["topk_classes"] = [[mapping[c] for c in row] for row in table["topk_classes"]]
        table["model_id"] = model_id
        summary = {**table.attrs["kpsem"], "class_names": HOSTILE, "split": "**split**"}
        paths.append(write_predictions(table, tmp_path / f"{role}.parquet", summary=summary))
    at = page("compare").run()
    at.radio(key="cmp_source").set_value("Parquet files").run()
    at.text_input(key="cmp_path_baseline").input(str(paths[0])).run()
    at.text_input(key="cmp_path_kpsem").input(str(paths[1])).run()
    assert not at.error, [e.value for e in at.error]
    _assert_literal(at, ["**base** <img src=x>", "![k](http://example.invalid/k.png)", "**split**"])
    fixed = [m.value for m in at.markdown if "· true **" in m.value]
    assert fixed and all(escape_markdown(m) in "".join(fixed) for m in ("**base** <img src=x>",))
