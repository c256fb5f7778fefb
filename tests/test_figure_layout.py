"""Paper figures drop into a paper unchanged: at one and two columns and at every font size tried, each
text, legend and axes (colour bars, their ticks and labels included) that the renderer draws while the
figure is saved, as the commands save it, lies inside the saved canvas. Then colour maps, colour bars,
model names and Fig. 10's region markers."""

from __future__ import annotations

import argparse
import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_BACKBONE
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.text import Text
from PIL import Image

import kpsem
from kpsem.cli import main
from kpsem.explain.analysis import analyse_pair, clip_to_display, common_target
from kpsem.explain.cli_options import add_style_arguments, names_from_args, style_from_args
from kpsem.explain.compare import compare_predictions, per_class_accuracy
from kpsem.explain.draw import REGION_COLOURS, REGION_MARKERS, KeyPointOptions, cam_overlay
from kpsem.explain.figures import (
    COLUMN_WIDTHS,
    FigureStyle,
    PaperFigure,
    display_name,
    display_names,
    figure_centres,
    figure_confusion,
    figure_cost_table,
    figure_density,
    figure_gradcam,
    figure_keypoints,
    figure_per_class_accuracy,
    figure_top_predictions,
)
from kpsem.profile import model_cost

CLASSES = ["brush_hair", "ApplyEyeMakeup", "pullup", "ride_horse", "YoYo"]  # short and long, as in UCF101 / HMDB51
TOLERANCE = 1.0  # pixels: anti-aliasing may reach one pixel past a glyph's box
DPI = 150


def _predictions(model_id: str, labels: np.ndarray, preds: np.ndarray) -> pd.DataFrame:
    rows = []
    for i, (label, pred) in enumerate(zip(labels, preds)):
        probs = [0.05] * len(CLASSES)
        probs[pred] = 0.8
        order = [int(j) for j in np.argsort(-np.array(probs), kind="stable")]
        rows.append({"video_id": f"v{i:02d}", "true_label": int(label), "true_class": CLASSES[label],
                     "model_id": model_id, "level": "video", "clip_index": -1, "num_clips": 1,
                     "topk_classes": [CLASSES[j] for j in order], "topk_labels": order,
                     "topk_probs": [probs[j] for j in order], "probs": probs, "correct_top1": bool(pred == label),
                     "correct_top5": True})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def inputs() -> dict:
    """A tiny MFNet / MF-KPSEM pair on one clip (their predictions made to differ, so Fig. 9's difference
    carries its message as a title), and video-level predictions of 60 videos with ids as evaluate writes them."""
    torch.manual_seed(0)
    base = kpsem.create_model("mfnet", num_classes=5, **TINY_BACKBONE).eval()
    ours = kpsem.create_model("mf_kpsem", num_classes=5, backbone=dict(TINY_BACKBONE),
                              num_frames=8).eval()
    clip = torch.randn(1, 3, 8, 64, 64, generator=torch.Generator().manual_seed(1))
    pair = analyse_pair(base, ours, clip, class_names=CLASSES)
    other = copy.deepcopy(ours)
    with torch.no_grad():
        other.classifier.bias[(pair.baseline.prediction + 1) % 5] += 10.0
    first = analyse_pair(base, other, clip, class_names=CLASSES)
    common = common_target(first.baseline.probs, first.kpsem.probs, CLASSES, true_label=1)
    assert common.predictions_differ
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 60)
    compared = compare_predictions(
        _predictions("final:mfnet", labels, np.where(rng.random(60) < 0.5, labels, rng.integers(0, 5, 60))),
        _predictions("final:mf_kpsem", labels, np.where(rng.random(60) < 0.7, labels, rng.integers(0, 5, 60))))
    return {"pair": pair, "display": clip_to_display(clip, (0.5,) * 3, (0.25,) * 3), "compared": compared,
            "difference_pair": analyse_pair(base, other, clip, class_names=CLASSES, target=common.index),
            "common": common, "costs": [model_cost(base, name="mfnet", clip=(8, 64, 64)),
                                        model_cost(ours, name="mf_kpsem", clip=(8, 64, 64))]}


LONG_NAMES = ("MFNet (Kinetics init.)", "MF-KPSEM (ours, 4 sets)")  # user labels longer than the paper's

BUILDERS = {  # every figure function, in its most crowded form
    "fig7_wins": lambda d, s: figure_per_class_accuracy(per_class_accuracy(d["compared"]), margin=0.05,
                                                        intervals=True, names=LONG_NAMES, style=s),
    "fig7_losses": lambda d, s: figure_per_class_accuracy(per_class_accuracy(d["compared"]), mode="losses", style=s),
    "fig8": lambda d, s: figure_top_predictions([d["pair"]] * 3, [d["display"][0], d["display"][3], d["display"][7]],
                                                true_labels=["ApplyEyeMakeup", None, "YoYo"], style=s),
    "fig9": lambda d, s: figure_gradcam(d["pair"], d["display"], style=s),
    "fig9_difference": lambda d, s: figure_gradcam(d["difference_pair"], d["display"], difference_row=True,
                                                   common=d["common"], shared_scale=False, names=LONG_NAMES, style=s),
    "fig10": lambda d, s: figure_keypoints(d["pair"].kpsem, d["display"], style=s),
    "fig10_sets": lambda d, s: figure_keypoints(d["pair"].kpsem, d["display"], style=s, frames=[0, 2, 4, 6, 7],
                                                options=KeyPointOptions(sets=(0, 3, 5), tracks=True, arrow_scale=4)),
    "centres": lambda d, s: figure_centres(d["pair"].kpsem, name=LONG_NAMES[1], style=s),
    "density": lambda d, s: figure_density(d["pair"].kpsem, d["display"], sets=[0, 1, 2], name=LONG_NAMES[1],
                                           style=s),
    "table1": lambda d, s: figure_cost_table(d["costs"], style=s),
    "confusion": lambda d, s: figure_confusion(d["compared"], style=s),
}


def _drawn_on_save(figure: PaperFigure, folder, monkeypatch) -> tuple:
    """Save as the commands do (``PaperFigure.save``: the figure's own size, no tight bounding box) and
    record from the renderer that draws the PNG: every text drawn, every legend and every axes' tight
    box (colour bars are axes: their ticks and labels are in it). Returns (PNG path, records)."""
    records: list[tuple[str, object, tuple[int, int]]] = []
    text_draw, figure_draw = Text.draw, Figure.draw

    def draw_text(self: Text, renderer) -> None:
        text_draw(self, renderer)
        if self.get_visible() and self.get_text().strip():
            records.append((f"text {self.get_text()!r}", self.get_window_extent(renderer),
                            renderer.get_canvas_width_height()))

    def draw_figure(self: Figure, renderer) -> None:
        figure_draw(self, renderer)
        canvas = renderer.get_canvas_width_height()
        legends = [legend for legend in [*self.legends, *(ax.get_legend() for ax in self.axes)] if legend is not None]
        records.extend(("legend", legend.get_window_extent(renderer), canvas) for legend in legends)
        records.extend((f"axes {ax.get_label() or ax.get_title()!r}", ax.get_tightbbox(renderer), canvas)
                       for ax in self.axes)

    monkeypatch.setattr(Text, "draw", draw_text)
    monkeypatch.setattr(Figure, "draw", draw_figure)
    png = figure.save(folder, formats=("png",), dpi=DPI)[0]
    monkeypatch.undo()
    return png, records


def _cut(records: list) -> list[str]:
    return [f"{what}: ({box.x0:.1f}, {box.y0:.1f}) to ({box.x1:.1f}, {box.y1:.1f}) on a {w}x{h} canvas"
            for what, box, (w, h) in records
            if box.x0 < -TOLERANCE or box.y0 < -TOLERANCE or box.x1 > w + TOLERANCE or box.y1 > h + TOLERANCE]


CASES = [(c, s) for c in COLUMN_WIDTHS for s in (6, 8, 10)] + [("single", 5), ("single", 14)]  # 5-14: the studio's


@pytest.mark.parametrize(("column", "font_size"), CASES)
@pytest.mark.parametrize("name", list(BUILDERS))
def test_nothing_is_cut_at_the_canvas_edges(inputs, tmp_path, monkeypatch, name, column, font_size):
    figure = BUILDERS[name](inputs, FigureStyle(column=column, font_size=font_size, dpi=DPI))
    png, records = _drawn_on_save(figure, tmp_path, monkeypatch)
    width, height = figure.figure.get_size_inches()
    assert width == COLUMN_WIDTHS[column]  # drops into the column as it is
    canvases = {canvas for _, _, canvas in records}
    assert canvases == {Image.open(png).size}  # what was measured is the file written
    assert sum(what.startswith("text") for what, _, _ in records) >= 4  # the check saw the figure's texts
    assert _cut(records) == []
    assert height <= 12  # fitted to what it holds, not grown without bound


def test_the_check_sees_what_is_cut(inputs, tmp_path, monkeypatch):
    """The measurement above can fail: a title pushed past the right edge and a legend under the bottom."""
    figure = BUILDERS["fig10"](inputs, FigureStyle(column="single"))
    figure.figure.text(0.98, 0.5, "runs off the right edge")
    figure.figure.legend(handles=[Line2D([], [], label="below the canvas")], loc="upper left",
                         bbox_to_anchor=(0.1, -0.05))
    _, records = _drawn_on_save(figure, tmp_path, monkeypatch)
    cut = " ".join(_cut(records))
    assert "'runs off the right edge'" in cut and "'below the canvas'" in cut and "legend" in cut


def test_before_the_fix_fig10_legend_and_fig9_bar_label_were_cut(inputs, tmp_path, monkeypatch):
    """The two known failures, drawn the old way (one legend row; a vertical bar beside the rows), are
    caught by the check: so passing it above means the new layout, not a blind check."""
    import matplotlib

    style = FigureStyle(column="single", font_size=8)
    with matplotlib.rc_context(style.rc()):
        fig = style.figure(3.5 / 4 + 0.45)
        axes = fig.subplots(1, 4)
        for ax in axes:
            ax.imshow(inputs["display"][0])
        handles = [Line2D([], [], marker="x", label=n) for n in ("top-left", "top-right", "bottom-left",
                                                                 "bottom-right", "crosses a border")]
        fig.legend(handles=handles, loc="outside lower center", ncols=5, frameon=False)
    _, records = _drawn_on_save(PaperFigure("old_fig10", fig, style=style), tmp_path, monkeypatch)
    assert "'top-left'" in " ".join(_cut(records)) and "'crosses a border'" in " ".join(_cut(records))
    with matplotlib.rc_context(style.rc()):
        fig = style.figure(3.5 / 4.3 * 2 + 0.3)
        axes = fig.subplots(2, 4)
        mappable = matplotlib.cm.ScalarMappable(cmap="viridis")
        fig.colorbar(mappable, ax=axes, fraction=0.03, pad=0.01, label="Grad-CAM, shared scale (max 0.0508)")
    _, records = _drawn_on_save(PaperFigure("old_fig9", fig, style=style), tmp_path, monkeypatch)
    assert "'Grad-CAM, shared scale (max 0.0508)'" in " ".join(_cut(records))


def _bars(figure: PaperFigure) -> list:
    return [ax for ax in figure.figure.axes if ax.get_label() == "<colorbar>"]


def _bar_cmap(bar_ax) -> str:
    """The colour map a colour bar paints (its QuadMesh of solids)."""
    return next(c.get_cmap().name for c in bar_ax.collections if type(c).__name__ == "QuadMesh")


def test_colour_maps_default_to_perceptually_uniform_and_the_choice_is_kept(inputs):
    assert FigureStyle().cmap == "viridis" and FigureStyle().difference_cmap == "coolwarm"
    parser = argparse.ArgumentParser()
    add_style_arguments(parser)
    defaults = style_from_args(parser.parse_args([]))
    assert (defaults.cmap, defaults.difference_cmap) == ("viridis", "coolwarm")
    chosen = style_from_args(parser.parse_args(["--cmap", "jet", "--difference-cmap", "RdBu_r"]))
    assert (chosen.cmap, chosen.difference_cmap) == ("jet", "RdBu_r")

    pair, display = inputs["difference_pair"], inputs["display"]
    figure = figure_gradcam(pair, display, frames=[2], difference_row=True, style=FigureStyle(cmap="magma"))
    cam_ax = figure.figure.axes[0]
    expected = cam_overlay(display[2], pair.baseline_shared[2], cmap="magma", alpha=0.5)
    assert np.array_equal(np.asarray(cam_ax.get_images()[0].get_array()), expected)  # the user's map is drawn
    cam_bar, difference_bar = _bars(figure)
    assert _bar_cmap(cam_bar) == "magma" and _bar_cmap(difference_bar) == "coolwarm"
    with pytest.raises(ValueError, match="unknown colour map 'nope' for difference_cmap"):
        FigureStyle(difference_cmap="nope")


def test_colour_bars_have_ticks_units_and_a_symmetric_stated_difference(inputs):
    pair, display = inputs["difference_pair"], inputs["display"]
    shared = figure_gradcam(pair, display, difference_row=True)
    cam_bar, difference_bar = _bars(shared)
    assert cam_bar.get_xlim() == pytest.approx((0, pair.shared_scale))  # raw units: 0 to the pair's maximum
    assert "raw units" in cam_bar.get_xlabel()
    assert [t.get_text() for t in cam_bar.get_xticklabels()] == ["0", f"{pair.shared_scale / 2:.3g}",
                                                                 f"{pair.shared_scale:.3g}"]
    low, high = difference_bar.get_xlim()
    assert low == pytest.approx(-high) and high > 0  # symmetric about "no difference"
    order = "MFNet \N{MINUS SIGN} MF-KPSEM"  # baseline minus KPSEM, as the row is computed
    assert " ".join(difference_bar.get_xlabel().split()).startswith(order)
    assert [t.get_text() for t in difference_bar.get_xticklabels()][1] == "0"
    assert shared.settings["difference_bar"]["order"] == order

    own = figure_gradcam(pair, display, difference_row=True, shared_scale=False)
    cam_bar, difference_bar = _bars(own)
    assert cam_bar.get_xlim() == (0, 1) and "maximum" in cam_bar.get_xlabel()
    assert difference_bar.get_xlim() == (-1, 1)

    confusion = figure_confusion(inputs["compared"])
    matrix_bar, _, confusion_difference = _bars(confusion)
    assert matrix_bar.get_xlim() == (0, 1) and "fraction of the true class" in " ".join(matrix_bar.get_xlabel().split())
    low, high = confusion_difference.get_xlim()
    assert low == pytest.approx(-high)
    assert " ".join(confusion.figure.axes[2].get_title().split()) == "MF-KPSEM \N{MINUS SIGN} MFNet"  # over its bar
    assert confusion.settings["difference"] == "MF-KPSEM \N{MINUS SIGN} MFNet"


def test_model_names_come_from_display_name_never_ids(inputs, tmp_path):
    from kpsem.checkpoint import CheckpointInfo

    info = CheckpointInfo(arch="mf_kpsem", num_classes=5, config={}, class_names=CLASSES, clip_frames=8, clip_size=64,
                          mean=(0.5,) * 3, std=(0.25,) * 3)
    assert display_name(info=info) == "MF-KPSEM"
    assert display_name("final:mfnet") == "MFNet" and display_name("mf_kpsem") == "MF-KPSEM"
    assert display_name("my run") == "my run"  # an id the user chose is theirs to show
    info.provenance = {"display_name": "  MF-KPSEM\n(ours) "}
    assert display_name(info=info) == "MF-KPSEM (ours)"
    assert display_name("final:mfnet", label="Baseline", info=info) == "Baseline"  # the user's label wins
    assert display_names(("a:mfnet", "b:mfnet")) == ("MFNet (baseline)", "MFNet (compared)")
    parser = argparse.ArgumentParser()
    add_style_arguments(parser)
    assert names_from_args(parser.parse_args(["--labels", "Base", "Ours"]), ids=("a:mfnet", "b:mf_kpsem")) == (
        "Base", "Ours")

    compared = inputs["compared"]
    assert (compared.baseline_id, compared.kpsem_id) == ("final:mfnet", "final:mf_kpsem")
    figures = [figure_confusion(compared), figure_cost_table(inputs["costs"])]
    for figure in figures:
        figure.figure.draw_without_rendering()
        cells = [cell.get_text() for ax in figure.figure.axes for table in ax.tables
                 for cell in table.get_celld().values()]
        texts = " ".join(t.get_text() for t in [*figure.figure.findobj(Text), *cells])
        assert "MFNet" in texts and "MF-KPSEM" in texts
        assert "final:" not in texts and "mfnet" not in texts and "mf_kpsem" not in texts

    # The compare command: predictions whose ids are 'final:mfnet' and 'final:mf_kpsem'.
    baseline = _predictions("final:mfnet", compared.items["true_label"].to_numpy(),
                            compared.items["baseline_pred"].to_numpy())
    ours = _predictions("final:mf_kpsem", compared.items["true_label"].to_numpy(),
                        compared.items["kpsem_pred"].to_numpy())
    baseline.to_parquet(tmp_path / "a.parquet")
    ours.to_parquet(tmp_path / "b.parquet")
    args = ["compare", "--predictions", str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet"), "--formats", "png",
            "--dpi", "30", "--resamples", "100"]
    assert main([*args, "--out", str(tmp_path / "ids")]) == 0
    for stem in ("fig7_per_class_wins", "fig7_per_class_losses", "confusion_matrices"):
        sidecar = json.loads((tmp_path / "ids" / f"{stem}.json").read_text())
        assert sidecar["settings"]["names"] == ["MFNet", "MF-KPSEM"]
    assert main([*args, "--out", str(tmp_path / "labels"), "--labels", "Baseline", "KPSEM (ours)"]) == 0
    sidecar = json.loads((tmp_path / "labels" / "confusion_matrices.json").read_text())
    assert sidecar["settings"]["names"] == ["Baseline", "KPSEM (ours)"]
    assert sidecar["settings"]["difference"] == "KPSEM (ours) \N{MINUS SIGN} Baseline"


def test_fig10_tells_regions_apart_by_shape_as_well_as_colour(inputs):
    analysis = inputs["pair"].kpsem
    figure = figure_keypoints(analysis, inputs["display"], frames=[2])
    assert len(set(REGION_MARKERS)) == len(REGION_MARKERS) == len(REGION_COLOURS) == 16  # K up to 16
    assert len(set(zip(REGION_COLOURS, REGION_MARKERS))) == 16  # colours repeat past 8, (colour, shape) never
    points = [a for a in figure.figure.axes[0].lines if a.get_gid() == "keypoints"]  # not split lines or paths
    drawn = [(a.get_color(), a.get_marker()) for a in points]
    assert drawn == list(zip(REGION_COLOURS[:4], REGION_MARKERS[:4]))  # each region: its colour and its own shape
    legend = figure.figure.legends[0]
    entries = {t.get_text(): (h.get_color(), h.get_marker()) for t, h in zip(legend.get_texts(), legend.legend_handles)
               if isinstance(h, Line2D)}  # the crossing entry is a patch
    assert entries["top-left"] == (REGION_COLOURS[0], REGION_MARKERS[0])
    assert entries["bottom-right"] == (REGION_COLOURS[3], REGION_MARKERS[3])
    assert figure.settings["markers"] == {"top-left": "o", "top-right": "s", "bottom-left": "^", "bottom-right": "D"}
