"""Paper figures, class comparison and the explain / compare commands."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from kpsem.cli import main
from kpsem.explain.analysis import analyse_clip, analyse_pair, clip_to_display
from kpsem.explain.compare import compare_predictions, confusion_matrix, fixed_and_broken, per_class_accuracy
from kpsem.explain.figures import (
    FigureStyle,
    figure_confusion,
    figure_cost_table,
    figure_gradcam,
    figure_keypoints,
    figure_per_class_accuracy,
    figure_top_predictions,
    sample_frames,
)
from kpsem.profile import model_cost

CLASSES = ["run", "jump", "wave"]


def _predictions(model_id: str, rows: list[tuple[str, int, int]]) -> pd.DataFrame:
    """Video-level rows (video_id, true label, predicted label) in the `evaluate` table's columns."""
    records = []
    for video, label, pred in rows:
        probs = [0.1] * len(CLASSES)
        probs[pred] = 0.8
        order = list(np.argsort(-np.array(probs), kind="stable"))
        records.append({
            "video_id": video, "true_label": label, "true_class": CLASSES[label], "model_id": model_id,
            "level": "video", "clip_index": -1, "num_clips": 1, "topk_classes": [CLASSES[i] for i in order],
            "topk_labels": order, "topk_probs": [probs[i] for i in order], "probs": probs,
            "correct_top1": pred == label, "correct_top5": True,
        })
    return pd.DataFrame(records)


# Truth / baseline / KPSEM: run 2 of 2 vs 1 of 2, jump 0 of 2 vs 2 of 2, wave 2 of 2 vs 1 of 2.
ITEMS = [("v1", 0, 0, 0), ("v2", 0, 0, 2), ("v3", 1, 0, 1), ("v4", 1, 2, 1), ("v5", 2, 2, 2), ("v6", 2, 2, 0)]
BASELINE = _predictions("mfnet", [(v, y, b) for v, y, b, _ in ITEMS])
KPSEM_TABLE = _predictions("mf_kpsem", [(v, y, k) for v, y, _, k in ITEMS])


def test_per_class_accuracy_fixed_broken_and_confusion():
    compared = compare_predictions(BASELINE, KPSEM_TABLE)
    assert compared.level == "video" and compared.class_names == CLASSES
    table = per_class_accuracy(compared)
    assert table["class_name"].tolist() == ["jump", "run", "wave"]  # sorted by KPSEM's gain
    assert table["baseline"].tolist() == [0.0, 1.0, 1.0]
    assert table["kpsem"].tolist() == [1.0, 0.5, 0.5]
    assert table["difference"].tolist() == [1.0, -0.5, -0.5]
    fixed, broken = fixed_and_broken(compared)
    assert fixed["video_id"].tolist() == ["v3", "v4"] and broken["video_id"].tolist() == ["v2", "v6"]
    matrix = confusion_matrix([0, 0, 1, 2], [0, 2, 0, 2], 3)
    assert matrix.tolist() == [[1, 0, 1], [1, 0, 0], [0, 0, 1]]


def test_compare_errors():
    with pytest.raises(ValueError, match=r"the baseline table has no 'clip' rows \(levels present: \['video'\]\)"):
        compare_predictions(BASELINE, KPSEM_TABLE, level="clip")
    both = pd.concat([BASELINE, KPSEM_TABLE])
    with pytest.raises(ValueError, match=r"the baseline table holds 2 models \(\['mf_kpsem', 'mfnet'\]\)"):
        compare_predictions(both, KPSEM_TABLE)
    assert compare_predictions(both, both, baseline_id="mfnet", kpsem_id="mf_kpsem").kpsem_id == "mf_kpsem"


def test_fig7_wins_losses_and_margin(tmp_path):
    table = per_class_accuracy(compare_predictions(BASELINE, KPSEM_TABLE))
    wins = figure_per_class_accuracy(table, margin=0.5, mode="wins")
    assert wins.settings["classes"] == ["jump"]
    losses = figure_per_class_accuracy(table, margin=0.5, mode="losses")
    assert losses.settings["classes"] == ["run", "wave"]
    assert len(losses.figure.axes) == 1 and len(losses.figure.axes[0].patches) == 4  # 2 classes x 2 models
    none = figure_per_class_accuracy(table, margin=0.6, mode="losses")
    assert none.settings["classes"] == [] and "no class where" in none.figure.axes[0].texts[0].get_text()


def test_figure_files_sizes_and_sidecar(tiny_pair, tiny_clip, tmp_path):
    pair = analyse_pair(*tiny_pair, tiny_clip)
    display = clip_to_display(tiny_clip, (0.5,) * 3, (0.25,) * 3)
    style = FigureStyle(column="single", font_size=7, cmap="viridis", dpi=100)
    fig9 = figure_gradcam(pair, display, style=style)
    assert fig9.settings["frames"] == sample_frames(8, 4) == [0, 2, 5, 7]
    assert len(fig9.figure.axes) == 2 * 4 + 1  # two rows of four frames and one shared colour bar
    paths = fig9.save(tmp_path, dpi=100)
    assert [p.name for p in paths] == ["fig9_gradcam.png", "fig9_gradcam.pdf", "fig9_gradcam.svg", "fig9_gradcam.json"]
    width, height = fig9.figure.get_size_inches()
    assert width == 3.5
    assert Image.open(paths[0]).size == (350, int(height * 100))  # matplotlib truncates to whole pixels
    assert paths[1].read_bytes().startswith(b"%PDF") and b"<svg" in paths[2].read_bytes()[:500]
    sidecar = json.loads(paths[3].read_text())
    assert sidecar["figure"] == "fig9_gradcam"
    assert sidecar["style"] == {"column": "single", "font_size": 7, "cmap": "viridis", "dpi": 100,
                                "difference_cmap": "coolwarm"}
    assert sidecar["settings"]["frames"] == [0, 2, 5, 7] and sidecar["settings"]["shared_scale"] is True
    png_200 = fig9.save(tmp_path, stem="hi", formats=("png",), dpi=200)[0]
    assert Image.open(png_200).size == (700, int(height * 200))

    assert len(figure_gradcam(pair, display, frames=[1, 6], difference_row=True).figure.axes) == 3 * 2 + 2
    fig10 = figure_keypoints(pair.kpsem, display, frames=[0, 3, 6])
    assert len(fig10.figure.axes) == 3
    fig8 = figure_top_predictions([pair, pair], [display[0], display[4]], true_labels=["class_1", None])
    assert len(fig8.figure.axes) == 2 * 3  # per clip: frame, baseline top-3, KPSEM top-3
    assert len(fig8.figure.axes[1].patches) == 3
    costs = [model_cost(m, name=n, clip=(8, 64, 64)) for m, n in zip(tiny_pair, ("mfnet", "mf_kpsem"))]
    assert len(figure_cost_table(costs).figure.axes) == 1
    confusion = figure_confusion(compare_predictions(BASELINE, KPSEM_TABLE))
    assert len(confusion.figure.axes) == 3 + 3  # three matrices, three colour bars


def test_figure_errors(tiny_pair, tiny_clip):
    baseline = analyse_clip(tiny_pair[0], tiny_clip)
    display = np.zeros((8, 64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="Fig. 10 needs an MF-KPSEM model; MFNet has no KPSEM module"):
        figure_keypoints(baseline, display)
    pair = analyse_pair(*tiny_pair, tiny_clip)
    with pytest.raises(ValueError, match=r"display frames have shape \(8, 32, 32, 3\); the analysed "
                       r"clip needs \(8, 64, 64, 3\)"):
        figure_gradcam(pair, np.zeros((8, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match=r"frames \[8\] are outside the clip's 8 frames \(0..7\)"):
        figure_gradcam(pair, display, frames=[0, 8])
    with pytest.raises(ValueError, match="unknown colour map 'nope'"):
        FigureStyle(cmap="nope")


def test_compare_command(tmp_path, capsys):
    BASELINE.to_parquet(tmp_path / "a.parquet")
    KPSEM_TABLE.to_parquet(tmp_path / "b.parquet")
    out = tmp_path / "out"
    code = main(["compare", "--predictions", str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet"),
                 "--out", str(out), "--formats", "png", "--dpi", "50"])
    assert code == 0
    assert "top-1 mfnet 66.7%, mf_kpsem 66.7% (+0.0%); KPSEM fixes 2 and breaks 2" in capsys.readouterr().out
    assert json.loads((out / "fixed_by_kpsem.json").read_text())[0]["video_id"] == "v3"
    assert pd.read_csv(out / "broken_by_kpsem.csv")["video_id"].tolist() == ["v2", "v6"]
    for name in ("fig7_per_class_wins", "fig7_per_class_losses", "confusion_matrices"):
        assert (out / f"{name}.png").is_file() and (out / f"{name}.json").is_file()


def test_explain_command(tiny_pair, tmp_path, capsys):
    from kpsem.checkpoint import save_checkpoint

    names = [f"c{i}" for i in range(5)]
    for model, stem, provenance in zip(tiny_pair, ("base", "ours"), (None, {"display_name": "MF-KPSEM (ours)"})):
        save_checkpoint(tmp_path / f"{stem}.pt", model, class_names=names, clip_frames=8, clip_size=64,
                        provenance=provenance)
    frames = np.random.default_rng(0).integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
    np.save(tmp_path / "clip.npy", frames)
    out = tmp_path / "out"
    args = ["explain", "--baseline", str(tmp_path / "base.pt"), "--kpsem", str(tmp_path / "ours.pt"),
            "--clip", str(tmp_path / "clip.npy"), "--out", str(out), "--formats", "png", "--dpi", "40",
            "--target", "c2", "--weighting", "slice"]
    assert main(args) == 0
    written = sorted(p.name for p in out.iterdir())
    for name in ("fig8_top_predictions", "fig9_gradcam", "fig9_gradcam_difference", "fig10_keypoints", "table1_cost"):
        assert f"{name}.png" in written and f"{name}.json" in written
    summary = json.loads((out / "analysis.json").read_text())
    assert summary["baseline"]["target"] == summary["kpsem"]["target"] == 2
    assert summary["kpsem"]["has_kpsem"] and not summary["baseline"]["has_kpsem"]
    sidecar = json.loads((out / "fig9_gradcam.json").read_text())
    assert sidecar["inputs"]["clip"].endswith("clip.npy") and sidecar["settings"]["weighting"] == "slice"
    # Model names: the checkpoint's own display name, else the paper's name for the architecture; never
    # the registry's 'mfnet' / 'mf_kpsem' (Table 1 showed them before).
    assert sidecar["settings"]["names"] == ["MFNet", "MF-KPSEM (ours)"]
    assert json.loads((out / "table1_cost.json").read_text())["settings"]["names"] == ["MFNet", "MF-KPSEM (ours)"]
    assert json.loads((out / "fig10_keypoints.json").read_text())["settings"]["model"] == "MF-KPSEM (ours)"

    # A checkpoint without KPSEM in the KPSEM slot: everything but Fig. 10, and a note that says why.
    out2 = tmp_path / "out2"
    args2 = [*args[:4], str(tmp_path / "base.pt"), *args[5:]]
    args2[args2.index(str(out))] = str(out2)
    capsys.readouterr()
    assert main(args2) == 0
    assert "is an MFNet checkpoint without KPSEM; Fig. 10 (key points) is not drawn" in capsys.readouterr().out
    assert not (out2 / "fig10_keypoints.png").exists() and (out2 / "fig9_gradcam.png").exists()

    assert main([*args[:-4], "--target", "dance"]) == 2
    assert "--target 'dance' is neither a class index nor one of the model's classes" in capsys.readouterr().err


def test_explain_command_on_a_short_video(tiny_pair, tmp_path, capsys):
    """A video shorter than the clip: the loader repeats frames (SPEC: short videos repeat frames) and
    the sidecar records which frames were used; a missing video is a one-line error, exit status 2."""
    from kpsem.checkpoint import save_checkpoint
    from kpsem.data.synth import write_video

    names = [f"c{i}" for i in range(5)]
    for model, stem in zip(tiny_pair, ("base", "ours")):
        save_checkpoint(tmp_path / f"{stem}.pt", model, class_names=names, clip_frames=8, clip_size=64)
    video = np.random.default_rng(0).integers(0, 256, (5, 72, 96, 3), dtype=np.uint8)  # 5 frames only
    write_video(tmp_path / "short", video)  # a frame folder
    out = tmp_path / "out"
    base = ["explain", "--baseline", str(tmp_path / "base.pt"), "--kpsem", str(tmp_path / "ours.pt"),
            "--out", str(out), "--formats", "png", "--dpi", "30"]
    assert main([*base, "--clip", str(tmp_path / "short")]) == 0
    facts = json.loads((out / "analysis.json").read_text())["inputs"]["clip_facts"]
    assert facts["num_frames"] == 5 and len(facts["frame_indices"]) == 8
    assert set(facts["frame_indices"]) <= set(range(5))
    assert facts["original_size"] == [72, 96]
    capsys.readouterr()
    assert main([*base, "--clip", str(tmp_path / "missing.avi")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_fig9_difference_row_needs_one_target(tiny_pair, tiny_clip, tmp_path):
    import copy

    from kpsem.explain.analysis import common_target

    other = copy.deepcopy(tiny_pair[0])
    with torch.no_grad():
        other.classifier.bias[0] += 10.0  # predicts class 0 where the baseline predicts 4
    display = clip_to_display(tiny_clip, (0.5,) * 3, (0.25,) * 3)
    pair = analyse_pair(tiny_pair[0], other, tiny_clip)
    with pytest.raises(ValueError, match=r"^the difference row compares two CAMs of one class, but these explain "
                       r"'class_4' \(MFNet \(baseline\)\) and 'class_0' \(MFNet \(compared\)\); analyse the pair"):
        figure_gradcam(pair, display, difference_row=True)
    assert len(figure_gradcam(pair, display).figure.axes) == 2 * 4 + 1  # the CAM rows alone are fine
    common = common_target(pair.baseline.probs, pair.kpsem.probs, pair.baseline.class_names, true_label=1,
                           model_names=(pair.baseline.model_name, pair.kpsem.model_name))
    with pytest.raises(ValueError, match=r"common target 'class_1' is not the class these CAMs explain"):
        figure_gradcam(analyse_pair(tiny_pair[0], other, tiny_clip, target=3), display, difference_row=True,
                       common=common)
    same = analyse_pair(tiny_pair[0], other, tiny_clip, target=common.index)
    fig = figure_gradcam(same, display, difference_row=True, common=common)
    message = "difference for the true class 'class_1'; MFNet (baseline) predicts class_4, MFNet (compared) class_0"
    assert fig.figure.get_suptitle() == message  # the predictions differ: said on the figure
    sidecar = json.loads(fig.save(tmp_path, formats=("png",), dpi=30)[-1].read_text())
    assert sidecar["settings"]["difference_target"]["message"] == message
    assert sidecar["settings"]["difference_target"]["reason"] == "true class"
    assert sidecar["settings"]["targets"] == [1, 1]


def test_explain_difference_figure_uses_the_common_target(tiny_pair, tmp_path, capsys):
    import copy

    from kpsem.checkpoint import save_checkpoint

    other = copy.deepcopy(tiny_pair[0])
    with torch.no_grad():
        other.classifier.bias[0] += 10.0
    names = [f"c{i}" for i in range(5)]
    for model, stem in zip((tiny_pair[0], other), ("base", "ours")):
        save_checkpoint(tmp_path / f"{stem}.pt", model, class_names=names, clip_frames=8, clip_size=64)
    np.save(tmp_path / "clip.npy", np.random.default_rng(0).integers(0, 256, (8, 64, 64, 3), dtype=np.uint8))
    base = ["explain", "--baseline", str(tmp_path / "base.pt"), "--kpsem", str(tmp_path / "ours.pt"),
            "--clip", str(tmp_path / "clip.npy"), "--formats", "png", "--dpi", "30"]
    out = tmp_path / "known"
    assert main([*base, "--out", str(out), "--target", "c2", "--true-class", "c3"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "analysis.json").read_text())
    assert summary["baseline"]["target"] == summary["kpsem"]["target"] == 2  # Fig. 8/9 rows: --target
    difference = json.loads((out / "fig9_gradcam_difference.json").read_text())["settings"]
    assert difference["targets"] == [3, 3] and difference["difference_target"]["reason"] == "true class"
    assert summary["difference_target"]["name"] == "c3"
    predictions = [summary["baseline"]["prediction_name"], summary["kpsem"]["prediction_name"]]
    assert predictions[0] != predictions[1]
    assert (f"Fig. 9 with a difference row: difference for the true class 'c3'; MFNet (baseline) predicts "
            f"{predictions[0]}, MFNet (compared) {predictions[1]}") in printed

    out2 = tmp_path / "unknown"  # no true class, no target: the class the two models together find most probable
    assert main([*base, "--out", str(out2)]) == 0
    target = json.loads((out2 / "analysis.json").read_text())["difference_target"]
    assert target["reason"] == "most probable" and target["predictions_differ"]
    assert "no true class given" in capsys.readouterr().out
    assert main([*base, "--out", str(out2), "--true-class", "dance"]) == 2
    assert "--true-class 'dance' is neither a class index nor one of the model's classes" in capsys.readouterr().err
