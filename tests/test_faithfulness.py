"""Faithfulness of explanations: deletion/insertion curves on a planted model with known answers, areas by
hand, batching, the fill, the common target rule, and the `faithfulness` command on a tiny data set."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_BACKBONE
from torch import nn

from kpsem.explain.analysis import analyse_pair, common_target
from kpsem.explain.faithfulness import (
    METRICS,
    cell_order,
    curve_auc,
    faithfulness_curves,
    make_fill,
    pair_faithfulness,
    paired_bootstrap,
    summarise_faithfulness,
)

# An 8 x 32 x 32 clip on a 4 x 4 x 4 grid: cells of 2 frames x 8 x 8 pixels. The box is frames 2..5,
# rows 8..15, columns 16..23: exactly the two cells (t', i, j) = (1, 1, 2) and (2, 1, 2).
GRID = (4, 4, 4)
BOX = (slice(2, 6), slice(8, 16), slice(16, 24))
BOX_CELLS = [(1, 1, 2), (2, 1, 2)]
SCALE, BIAS = 0.02, -12.0  # logit = 0.02 * sum over the box - 12


class BoxModel(nn.Module):
    """Two classes: logit 1 = SCALE * (sum of the input over BOX) + BIAS, logit 0 = 0. Counts its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the model a device
        self.calls: list[int] = []  # batch size of every forward call
        self.modes: list[bool] = []  # self.training during every forward call

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        self.modes.append(self.training)
        score = x[:, :, BOX[0], BOX[1], BOX[2]].sum(dim=(1, 2, 3, 4)) * SCALE + BIAS
        return torch.stack([torch.zeros_like(score), score], dim=1)


def _box_clip() -> torch.Tensor:
    """Dim noise everywhere, bright inside the box: (1, 3, 8, 32, 32)."""
    clip = torch.rand(1, 3, 8, 32, 32, generator=torch.Generator().manual_seed(3)) * 0.2
    clip[:, :, BOX[0], BOX[1], BOX[2]] += 1.0
    return clip


def _box_saliency() -> np.ndarray:
    saliency = np.zeros(GRID, np.float32)
    for cell in BOX_CELLS:
        saliency[cell] = 1.0
    return saliency


def _p(clip: torch.Tensor) -> float:
    """The planted model's target probability, by hand: sigmoid of its logit."""
    score = float(clip[:, :, BOX[0], BOX[1], BOX[2]].sum()) * SCALE + BIAS
    return 1 / (1 + math.exp(-score))


def test_deletion_and_insertion_on_a_planted_model_have_known_values():
    clip, model = _box_clip(), BoxModel()
    curves = faithfulness_curves(model, clip, _box_saliency(), target=1, steps=32, seed=0, keep=0.2)
    p_full = _p(clip)
    p_fill = _p(make_fill(clip, "blur", GRID))
    assert p_full > 0.99 and p_fill < 0.01  # the blur removes the box
    # 64 cells, 32 steps: 2 cells a step, and the CAM's first two cells are the box.
    np.testing.assert_allclose(curves.fractions, np.arange(33) / 32)
    assert curves.deletion[0] == pytest.approx(p_full) and curves.p_full == pytest.approx(p_full)
    np.testing.assert_allclose(curves.deletion[1:], p_fill, rtol=1e-6)
    assert curves.insertion[0] == pytest.approx(p_fill)
    np.testing.assert_allclose(curves.insertion[1:], p_full, rtol=1e-6)
    # Areas by hand: one trapezoid of width 1/32 between the two levels, then a flat 31/32.
    assert curves.auc_deletion == pytest.approx((p_full + p_fill) / 2 / 32 + p_fill * 31 / 32, rel=1e-6)
    assert curves.auc_insertion == pytest.approx((p_full + p_fill) / 2 / 32 + p_full * 31 / 32, rel=1e-6)
    # The CAM order beats a random one both ways, whatever the seed.
    for seed in range(5):
        c = faithfulness_curves(model, clip, _box_saliency(), target=1, steps=32, seed=seed)
        assert c.auc_deletion < c.auc_deletion_random - 0.1
        assert c.auc_insertion > c.auc_insertion_random + 0.1
    # Average drop: keeping the top 13 of 64 cells keeps the box, so nothing drops; seed 0's random 13 miss it.
    assert curves.kept_cells == 13 and curves.average_drop == 0.0
    assert curves.average_drop_random == pytest.approx((p_full - p_fill) / p_full, rel=1e-6)


def test_a_map_that_marks_the_wrong_place_is_no_better_than_random():
    clip, model = _box_clip(), BoxModel()
    wrong = np.zeros(GRID, np.float32)
    wrong[0, 3, 0] = wrong[3, 3, 0] = 1.0  # two cells far from the box
    curves = faithfulness_curves(model, clip, wrong, target=1, steps=16, seed=1)
    assert curves.deletion[1] == pytest.approx(curves.p_full)  # removing its top cells changes nothing
    assert curves.auc_deletion > 0.5 and curves.average_drop == pytest.approx(1.0, abs=0.02)


def test_curves_are_batched_forward_calls():
    clip, model = _box_clip(), BoxModel()
    # Distinct clips: the clip, the fill, 31 inner steps x 2 curves x 2 orders, two average-drop clips = 128.
    curves = faithfulness_curves(model, clip, _box_saliency(), target=1, steps=32, batch_size=32, keep=0.2)
    assert model.calls == [32, 32, 32, 32] and curves.forwards == 4
    model.calls.clear()
    faithfulness_curves(model, clip, _box_saliency(), target=1, steps=16, batch_size=50, keep=0.2)
    assert model.calls == [50, 14]  # 2 + 15 * 4 + 2 = 64 distinct clips
    model.calls.clear()
    # Keeping half the cells (32 of 64) is step 16 of the insertion curves: those clips are not run twice.
    faithfulness_curves(model, clip, _box_saliency(), target=1, steps=32, batch_size=32, keep=0.5)
    assert model.calls == [32, 32, 32, 30]
    assert not any(model.modes) and model.training  # run in eval mode, the caller's mode restored


def test_area_of_hand_built_curves():
    assert curve_auc([0, 0.5, 1], [1, 0.5, 0]) == pytest.approx(0.5)
    assert curve_auc([0, 0.25, 1], [1, 0, 0]) == pytest.approx(0.125)
    assert curve_auc([0, 0.25, 0.25, 1], [0, 0, 1, 1]) == pytest.approx(0.75)  # a jump at 1/4
    with pytest.raises(ValueError, match=r"fractions must increase from 0 to 1; got \[0.0, 0.5\]"):
        curve_auc([0, 0.5], [1, 0])
    with pytest.raises(ValueError, match=r"a curve needs matching 1-D fractions and values with at least 2 points"):
        curve_auc([0, 1], [1, 0, 0])


def test_fill_stays_in_the_clip_range_and_adds_no_edges():
    clip = torch.randn(1, 3, 8, 32, 32, generator=torch.Generator().manual_seed(0)) * 3 + 1

    def total_variation(x: torch.Tensor) -> float:
        return sum(float(x.diff(dim=d).abs().sum()) for d in (2, 3, 4))

    for fill in ("blur", "mean"):
        filled = make_fill(clip, fill, GRID)
        assert filled.shape == clip.shape and filled.dtype == clip.dtype
        low, high = clip.amin(dim=(2, 3, 4), keepdim=True), clip.amax(dim=(2, 3, 4), keepdim=True)
        assert bool((filled >= low).all()) and bool((filled <= high).all())
        assert total_variation(filled) <= total_variation(clip)
    np.testing.assert_allclose(make_fill(clip, "mean", GRID)[0, :, 0, 0, 0], clip.mean(dim=(2, 3, 4))[0], rtol=1e-6)
    # A pattern at the scale of one cell (period 8 columns) is damped below 1% (module doc: exp(-pi^2/2)).
    stripes = torch.sin(torch.arange(32) * 2 * math.pi / 8).expand(1, 3, 8, 32, 32).contiguous()
    assert float(make_fill(stripes, "blur", GRID)[..., 12:20].abs().max()) < 0.01
    with pytest.raises(ValueError, match=r"fill must be one of \('blur', 'mean'\); got 'zeros'"):
        make_fill(clip, "zeros", GRID)


def test_ties_break_at_random_and_errors():
    order = cell_order(np.array([[[0.0, 2.0, 0.0, 1.0]]]), np.random.default_rng(0))
    assert order[:2].tolist() == [1, 3] and sorted(order[2:].tolist()) == [0, 2]
    firsts = {int(cell_order(np.zeros((1, 1, 8)), np.random.default_rng(s))[0]) for s in range(20)}
    assert len(firsts) > 3  # zeros do not always start at the first cell
    clip, model = _box_clip(), BoxModel()
    with pytest.raises(ValueError, match=r"steps must be at least 2; got 1"):
        faithfulness_curves(model, clip, _box_saliency(), 1, steps=1)
    with pytest.raises(ValueError, match=r"keep is a fraction of the cells in \(0, 1\]; got 0"):
        faithfulness_curves(model, clip, _box_saliency(), 1, keep=0)
    with pytest.raises(ValueError, match=r"saliency has 16 cells along T but the clip has 8 there"):
        faithfulness_curves(model, clip, np.zeros((16, 4, 4)), 1)
    with pytest.raises(ValueError, match=r"target class 2 is out of range for a model with 2 classes \(0..1\)"):
        faithfulness_curves(model, clip, _box_saliency(), 2)


def test_common_target_rule_and_message():
    names = ["hop_cw", "hop_ccw", "rise"]
    base, ours = np.array([0.2, 0.7, 0.1]), np.array([0.6, 0.3, 0.1])
    known = common_target(base, ours, names, true_label=0, chosen=2)
    assert (known.index, known.reason) == (0, "true class") and known.predictions_differ
    assert known.message() == "difference for the true class 'hop_cw'; MFNet predicts hop_ccw, MF-KPSEM hop_cw"
    picked = common_target(base, ours, names, chosen=2)
    assert (picked.index, picked.reason) == (2, "chosen")
    assert picked.message("curves") == "curves for the chosen class 'rise'; MFNet predicts hop_ccw, MF-KPSEM hop_cw"
    default = common_target(base, ours, names)  # mean probabilities 0.4, 0.5, 0.1
    assert (default.index, default.reason) == (1, "most probable")
    assert default.message().startswith("difference for 'hop_ccw', the class the two models together find most "
                                        "probable (no true class given; choose a class to change it)")
    agree = common_target(ours, ours, names, true_label=2)
    assert agree.message() == "difference for the true class 'rise'; both models predict hop_cw"
    assert agree.as_dict()["predictions_differ"] is False
    with pytest.raises(ValueError, match=r"true_label 3 is out of range for 3 classes \(0..2\)"):
        common_target(base, ours, names, true_label=3)


def test_pair_faithfulness_needs_one_target(tiny_pair, tiny_clip):
    pair = analyse_pair(*tiny_pair, tiny_clip, target=1)
    common = common_target(pair.baseline.probs, pair.kpsem.probs, [f"class_{i}" for i in range(5)], true_label=1)
    result = pair_faithfulness(*tiny_pair, tiny_clip, pair, common, steps=16)
    for curves, analysis in ((result.baseline, pair.baseline), (result.kpsem, pair.kpsem)):
        assert curves.target == 1 and curves.grid == analysis.cam_feature.shape
        assert curves.p_full == pytest.approx(analysis.probs[1], rel=1e-4)  # the clip itself, through the batch
        assert 0 <= curves.auc_deletion <= 1 and 0 <= curves.auc_insertion <= 1
    assert result.baseline.model_name == "MFNet" and result.kpsem.model_name == "MF-KPSEM"
    other = common_target(pair.baseline.probs, pair.kpsem.probs, [f"class_{i}" for i in range(5)], true_label=3)
    with pytest.raises(ValueError, match=r"faithfulness compares both models on one class \('class_3'\), but the "
                       r"CAMs explain 'class_1' and 'class_1'; analyse the pair with target=3"):
        pair_faithfulness(*tiny_pair, tiny_clip, pair, other)


def test_paired_bootstrap_by_hand():
    a, b = np.array([0.2, 0.4, 0.6]), np.array([0.3, 0.5, 0.7])
    result = paired_bootstrap(a, b, resamples=500, seed=1)
    assert result["baseline"]["mean"] == pytest.approx(0.4) and result["kpsem"]["mean"] == pytest.approx(0.5)
    # Every video gains exactly 0.1, so every resample of the paired difference is 0.1: a zero-width interval.
    assert result["difference"] == pytest.approx({"mean": 0.1, "low": 0.1, "high": 0.1})
    assert result["baseline"]["low"] < 0.4 < result["baseline"]["high"]
    with pytest.raises(ValueError, match=r"paired_bootstrap needs two 1-D arrays of equal, non-zero length"):
        paired_bootstrap(a, b[:2])


def test_summary_averages_clips_per_video_first():
    rows = []
    for video, values in (("v1", (0.1, 0.3)), ("v2", (0.5, 0.5))):  # v1: two clips averaging 0.2
        for clip_index, value in enumerate(values):
            for role, shift in (("baseline", 0.0), ("kpsem", -0.1)):
                rows.append({"video_id": video, "clip_index": clip_index, "role": role, "predictions_differ": False,
                             **dict.fromkeys(METRICS, value + shift)})
    summary = summarise_faithfulness(pd.DataFrame(rows), resamples=200)
    assert summary["videos"] == 2 and summary["clips"] == 4
    assert summary["models"]["baseline"]["auc_deletion"]["mean"] == pytest.approx(0.35)  # (0.2 + 0.5) / 2
    assert summary["difference"]["auc_deletion"]["mean"] == pytest.approx(-0.1)
    assert summary["models"]["kpsem"]["average_drop"]["mean"] == pytest.approx(25.0)  # percent
    assert summary["over_random"]["deletion"]["baseline"]["mean"] == pytest.approx(0.0)


def test_faithfulness_command_on_a_tiny_data_set(frame_folders, tmp_path, capsys):
    import kpsem
    from kpsem.checkpoint import save_checkpoint
    from kpsem.cli import main

    torch.manual_seed(0)
    names = [f"class{c}" for c in range(3)]
    models = (kpsem.create_model("mfnet", num_classes=3, **TINY_BACKBONE),
              kpsem.create_model("mf_kpsem", num_classes=3, backbone=dict(TINY_BACKBONE), num_frames=8))
    for model, stem in zip(models, ("base", "ours")):
        save_checkpoint(tmp_path / f"{stem}.pt", model.eval(), class_names=names, clip_frames=8, clip_size=32)
    out = tmp_path / "faith" / "faithfulness.parquet"
    args = ["faithfulness", "--baseline", str(tmp_path / "base.pt"), "--kpsem", str(tmp_path / "ours.pt"),
            "--data", str(frame_folders), "--split", "test", "--steps", "16", "--out", str(out), "--workers", "0",
            "--no-progress", "--cam-layer", "conv4", "--resamples", "200"]
    assert main(args) == 0
    table = pd.read_parquet(out)
    assert len(table) == 9 * 2 and set(table["role"]) == {"baseline", "kpsem"}
    assert (table["target"] == table["true_label"]).all()  # the common target: each video's true class
    assert all(len(c) == 17 for c in table["deletion"]) and (table["cells"] == 4 * 2 * 2).all()
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["videos"] == 9 and summary["settings"]["cam_layer"] == "conv4"
    for role in ("baseline", "kpsem"):
        for metric in METRICS:
            value = summary["models"][role][metric]
            assert value["low"] <= value["mean"] <= value["high"]
    printed = capsys.readouterr().out
    assert "deletion AUC" in printed and "KPSEM minus baseline" in printed and str(out) in printed

    assert main([*args[:-2], "--resamples", "0"]) == 2
    assert "--resamples must be at least 100; got 0" in capsys.readouterr().err


def test_explorer_difference_and_curves_for_the_true_class(app):
    """hop_cw_test_000 of the demo: MFNet predicts hop_ccw, MF-KPSEM hop_cw (the truth). The difference view and
    the curves both explain the true class and say that the predictions differ."""
    at = app.run()
    at.selectbox(key="ex_class").set_value("hop_cw").run()
    at.selectbox(key="ex_clip").set_value("hop_cw/hop_cw_test_000").run()
    at.radio(key="overlay").set_value("Difference").run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    from kpsem.app_support.drawing.text import escape_markdown  # class names reach the page as escaped Markdown

    infos = [i.value for i in at.info]
    assert escape_markdown("difference for the true class 'hop_cw'; MFNet predicts hop_ccw, MF-KPSEM hop_cw") in infos
    captions = " ".join(c for i in at.get("image") for c in i.captions)
    cls = escape_markdown("hop_cw")
    assert f"MFNet Grad-CAM for {cls}" in captions and f"MF-KPSEM Grad-CAM for {cls}" in captions
    charts = len(at.get("plotly_chart"))
    at.toggle(key="faith_on").set_value(True).run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    curves = escape_markdown("curves for the true class 'hop_cw'; MFNet predicts hop_ccw, MF-KPSEM hop_cw")
    assert curves in [i.value for i in at.info]
    assert len(at.get("plotly_chart")) == charts + 1
    text = " ".join(m.value for m in at.markdown)
    assert "**MFNet**: deletion AUC" in text and "**MF-KPSEM**: deletion AUC" in text
    assert any("batched forward calls on cpu" in c.value for c in at.caption)


def test_non_finite_scores_stop_the_curves() -> None:
    from kpsem.checkpoint import NonFiniteOutputError

    class NaNScores(torch.nn.Module):
        def forward(self, clips: torch.Tensor) -> torch.Tensor:
            return torch.full((len(clips), 3), float("nan"))

    with pytest.raises(NonFiniteOutputError, match="broken gave non-finite scores"):
        faithfulness_curves(NaNScores(), torch.rand(1, 3, 4, 8, 8), np.ones((2, 2, 2)), 0, steps=4, name="broken")
