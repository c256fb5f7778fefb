"""Motion probes: each probe on hand-numbered clips, the mirror labels, the knock-outs against hand-built
internals, the whole loop on models whose answers are known, the command's table, and the app."""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_BACKBONE
from torch import nn
from torch.utils.data import Dataset

from kpsem.checkpoint import save_checkpoint
from kpsem.models import create_model, has_kpsem
from kpsem.probes import (
    COLUMNS,
    PROBES,
    ProbeError,
    apply_input_probe,
    frame_order,
    parse_probes,
    per_class_probes,
    probe_clip,
    probe_logits,
    probe_model,
    probe_sentences,
    read_probes,
    summarise_probes,
    target_labels,
    write_probes,
)

pytestmark = pytest.mark.usefixtures("one_thread")

DEMO_CLASSES = ["rise", "approach", "separate", "jump_within", "jump_adjacent", "hop_cw", "hop_ccw", "hop_diagonal"]


def numbered_clip(frames: int = 8, width: int = 4) -> torch.Tensor:
    """(1, 3, T, 2, W): every pixel of frame t holds t + column / 10, so a probe's frame order and a mirror
    can be read off the values."""
    t = torch.arange(frames, dtype=torch.float32)[:, None, None]
    column = torch.arange(width, dtype=torch.float32)[None, None, :] / 10
    return (t + column).expand(frames, 2, width)[None, None].expand(1, 3, frames, 2, width).clone()


def frames_of(clip: torch.Tensor) -> list[int]:
    return clip[0, 0, :, 0, 0].round().int().tolist()


# ---- the input probes on a tiny clip -------------------------------------------------------------------------


def test_temporal_probes_reorder_numbered_frames():
    clip = numbered_clip()
    assert frames_of(apply_input_probe(clip, "reverse")) == [7, 6, 5, 4, 3, 2, 1, 0]
    assert frames_of(apply_input_probe(clip, "freeze")) == [3] * 8  # the middle frame, (T - 1) // 2
    assert frames_of(apply_input_probe(clip, "subsample")) == [0, 0, 2, 2, 4, 4, 6, 6]
    shuffled = frames_of(apply_input_probe(clip, "shuffle", seed=0))
    assert sorted(shuffled) == list(range(8)) and shuffled != list(range(8))  # a permutation, not the identity
    assert frames_of(apply_input_probe(clip, "shuffle", seed=0)) == shuffled  # seeded: the same order again
    assert any(frames_of(apply_input_probe(clip, "shuffle", seed=s)) != shuffled for s in range(1, 5))
    for probe in ("reverse", "shuffle", "freeze", "subsample"):  # appearance kept: columns untouched
        out = apply_input_probe(clip, probe)
        assert out.shape == clip.shape
        torch.testing.assert_close(out[0, 0, :, 0] - out[0, 0, :, 0, :1], clip[0, 0, :, 0] - clip[0, 0, :, 0, :1])


def test_odd_lengths_and_the_smallest_shuffle():
    assert frame_order("subsample", 5) == [0, 0, 2, 2, 4]
    assert frame_order("freeze", 5) == [2] * 5
    assert frame_order("shuffle", 2, seed=0) == [1, 0]  # the only order that is not the identity
    with pytest.raises(ValueError, match="shuffle needs a clip of at least 2 frames"):
        frame_order("shuffle", 1)


def test_mirror_flips_width_only():
    clip = numbered_clip()
    out = apply_input_probe(clip, "mirror")
    assert frames_of(out) == list(range(8))  # time untouched
    torch.testing.assert_close(out[0, 0, 0, 0], torch.tensor([0.3, 0.2, 0.1, 0.0]))


def test_bad_probe_names_and_shapes_have_clear_messages():
    with pytest.raises(ValueError, match=r"unknown probe 'jitter'; choose from reverse, shuffle, freeze, subsample, "
                                         r"mirror, zero_temporal, geometric_centres, zero_spatial \(or 'all'\)"):
        parse_probes("reverse,jitter")
    with pytest.raises(ValueError, match="expected clips of shape"):
        apply_input_probe(torch.zeros(3, 8, 4, 4), "reverse")
    with pytest.raises(ValueError, match="'zero_spatial' is not an input probe"):
        apply_input_probe(torch.zeros(1, 3, 8, 4, 4), "zero_spatial")
    assert parse_probes("mirror, reverse,reverse,none") == ["reverse", "mirror"]  # table order, no repeats
    assert parse_probes("all") == list(PROBES)


def test_mirror_labels_pair_the_demo_classes():
    mirrored = target_labels("mirror", range(8), DEMO_CLASSES)
    assert [DEMO_CLASSES[i] for i in mirrored] == ["rise", "approach", "separate", "jump_within", "jump_adjacent",
                                                   "hop_ccw", "hop_cw", "hop_diagonal"]
    assert target_labels("reverse", [5, 6], DEMO_CLASSES).tolist() == [5, 6]  # only the mirror changes labels
    spelled = ["turn_clockwise", "turn_anticlockwise", "slide_left", "slide_right", "left_only"]
    assert target_labels("mirror", range(5), spelled).tolist() == [1, 0, 3, 2, 4]


# ---- the knock-outs against hand-built internals -------------------------------------------------------------


@pytest.fixture
def tiny_kpsem():
    torch.manual_seed(0)
    model = create_model("mf_kpsem", num_classes=5, backbone=dict(TINY_BACKBONE), num_frames=8).eval()
    with torch.no_grad():  # move the centres away from the middle, so that fixing them changes something
        model.kpsem.centre_out.weight.normal_(0, 2.0)
        model.kpsem.centre_out.bias.uniform_(-1.5, 1.5)
    return model


def test_head_knockouts_equal_the_classifier_on_one_half(tiny_kpsem, tiny_clip):
    model = tiny_kpsem
    clip = torch.cat([tiny_clip, tiny_clip.flip(2)])  # two clips
    with torch.no_grad():
        spatial_map, temporal = model.forward_features(clip)
        spatial = spatial_map.mean(dim=(2, 3, 4))  # (N, C5): the global average by hand
        weight, bias = model.classifier.weight, model.classifier.bias
        c5 = spatial.shape[1]
        torch.testing.assert_close(model(clip, knockout="zero_temporal"), spatial @ weight[:, :c5].T + bias)
        torch.testing.assert_close(model(clip, knockout="zero_spatial"), temporal @ weight[:, c5:].T + bias)
        assert not torch.allclose(model(clip, knockout="zero_temporal"), model(clip))  # the knock-out bites


def test_geometric_centres_equal_a_centre_mlp_that_outputs_zero(tiny_kpsem, tiny_clip):
    model = tiny_kpsem
    reference = copy.deepcopy(model)
    with torch.no_grad():
        reference.kpsem.centre_out.weight.zero_()  # tanh(0) = 0: every centre at the geometric centre
        reference.kpsem.centre_out.bias.zero_()
        expected = reference(tiny_clip)
        _, internals = model.forward_with_internals(tiny_clip)
        assert internals.centres.abs().max() > 0.3  # the learned centres are off the middle
        before = model(tiny_clip)
        torch.testing.assert_close(model(tiny_clip, knockout="geometric_centres"), expected)
        assert not torch.allclose(before, expected)
        with model.geometric_centres():
            _, inside = model.forward_with_internals(tiny_clip)
        assert inside.centres.abs().max() == 0
        torch.testing.assert_close(model(tiny_clip), before)  # released on exit
        with pytest.raises(RuntimeError, match="boom"), model.geometric_centres():
            raise RuntimeError("boom")
        torch.testing.assert_close(model(tiny_clip), before)  # released after an exception too


def test_knockout_names_are_checked(tiny_kpsem, tiny_pair, tiny_clip):
    with pytest.raises(ValueError, match="knockout must be one of zero_temporal, geometric_centres, zero_spatial; "
                                         "got 'zero_both'"):
        tiny_kpsem(tiny_clip, knockout="zero_both")
    features = tiny_kpsem.forward_features(tiny_clip)
    with pytest.raises(ValueError, match=r"acts inside KPSEM: use forward\(x, knockout=...\)"):
        tiny_kpsem.forward_head(features, knockout="geometric_centres")
    with pytest.raises(ValueError, match="knock-outs zero_temporal need an MF-KPSEM; MFNet has no KPSEM module"):
        probe_logits(tiny_pair[0], tiny_clip, ["zero_temporal"])


def test_one_batched_forward_equals_each_probe_alone(tiny_kpsem, tiny_clip):
    model = tiny_kpsem
    clips = torch.cat([tiny_clip, tiny_clip.flip(3)])
    out = probe_logits(model, clips, PROBES, seed=3)
    assert list(out) == ["none", "reverse", "shuffle", "freeze", "subsample", "mirror", *PROBES[5:]]
    with torch.no_grad():
        torch.testing.assert_close(out["none"], model(clips), rtol=1e-4, atol=1e-5)
        for probe in ("reverse", "shuffle", "freeze", "subsample", "mirror"):
            torch.testing.assert_close(out[probe], model(apply_input_probe(clips, probe, seed=3)), rtol=1e-4, atol=1e-5)
        for name in PROBES[5:]:
            torch.testing.assert_close(out[name], model(clips, knockout=name), rtol=1e-4, atol=1e-5)


def test_probe_clip_marks_knockouts_not_applicable_for_mfnet(tiny_pair, tiny_clip):
    rows = probe_clip(tiny_pair[0], tiny_clip, class_names=list("abcde"), true_label=2, arch="mfnet")
    assert rows["probe"].tolist() == ["none", *PROBES]
    na = rows[~rows["applicable"]]
    assert na["probe"].tolist() == ["zero_temporal", "geometric_centres", "zero_spatial"]
    assert na["pred_label"].isna().all() and na["correct"].isna().all()  # no made-up prediction
    unknown = probe_clip(tiny_pair[1], tiny_clip, class_names=list("abcde"), true_label=None, arch="mf_kpsem")
    assert unknown["applicable"].all() and unknown["correct"].isna().all()  # nothing scored without a label


# ---- the loop, the summaries and the sentences on models whose answers are known ---------------------------


class Direction(nn.Module):
    """Predicts turn_cw when the clip brightens over time, turn_ccw when it darkens, still when it does neither:
    a model that uses nothing but motion, so every probe's effect is known in advance."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(10.0))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 3, 4))  # (N, T) brightness per frame

    def forward_head(self, brightness: torch.Tensor) -> torch.Tensor:
        d = brightness[:, -1] - brightness[:, 0]
        return torch.stack([d, -d, 0.1 - d.abs()], dim=1) * self.gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class Constant(Direction):
    """Always turn_cw, whatever the clip: blind to motion and appearance."""

    def forward_head(self, brightness: torch.Tensor) -> torch.Tensor:
        return torch.tensor([1.0, 0.0, 0.0]).expand(len(brightness), 3) * self.gain


class Ramps(Dataset):
    """4 brightening turn_cw videos, 4 darkening turn_ccw, 2 still; item 10 stands in for an undecodable video."""

    class_names = ("turn_cw", "turn_ccw", "still")

    def __len__(self) -> int:
        return 11

    def __getitem__(self, item: int) -> dict:
        label = 0 if item < 4 else 1 if item < 8 else 2
        t = torch.arange(8, dtype=torch.float32) / 8
        level = t if label == 0 else t.flip(0) if label == 1 else torch.full((8,), 0.5)
        clip = level[None, :, None, None].expand(3, 8, 4, 4).clone()  # (3, T, 4, 4)
        return {"clip": clip, "label": label, "video_id": f"v{item:02d}", "clip_index": 0,
                "replaced": "v99" if item == 10 else ""}


@pytest.fixture
def known():
    names = list(Ramps.class_names)
    a = probe_model(Direction(), Ramps(), class_names=names, model_id="motion", arch="motion", probes=PROBES, seed=0)
    b = probe_model(Constant(), Ramps(), class_names=names, model_id="blind", arch="blind", probes=PROBES, seed=0)
    return a.merged(b)


def test_known_models_give_the_expected_table(known):
    table = known.table
    assert list(table.columns) == list(COLUMNS)
    assert len(table) == 2 * 6 * 10  # two models, 'none' + 5 input probes, 10 videos (the stand-in left out)
    assert "v10" not in set(table["video_id"]) and set(table["kind"]) == {"none", "input"}
    motion = table[table["model_id"] == "motion"].set_index(["probe", "video_id"])
    assert motion.loc[("reverse", "v00"), ["pred_class", "reference_class", "changed", "correct"]].tolist() == \
        ["turn_ccw", "turn_cw", True, False]
    assert motion.loc[("freeze", "v05"), "pred_class"] == "still"
    assert motion.loc[("mirror", "v00"), ["target_class", "pred_class", "correct", "changed"]].tolist() == \
        ["turn_ccw", "turn_cw", False, False]  # the mirror-image label; brightness does not mirror
    row = motion.loc[("none", "v00")]
    assert row["true_prob"] == pytest.approx(row["probs"][0]) and row["pred_prob"] == pytest.approx(max(row["probs"]))


def test_summary_accuracies_intervals_and_not_applicable(known):
    summary = summarise_probes(known).set_index(["model_id", "probe"])
    expected = {"none": (10, 0), "reverse": (2, 8), "freeze": (2, 8), "subsample": (10, 0), "mirror": (2, 0)}
    order = frame_order("shuffle", 8, seed=0)
    right = 10 if order[-1] > order[0] else 2  # the shuffled clip brightens iff its last frame is a later one
    expected["shuffle"] = (right, 0 if right == 10 else 8)
    for probe, (correct, changed) in expected.items():
        row = summary.loc[("motion", probe)]
        assert (row["correct"], row["changed"], row["videos"]) == (correct, changed, 10), probe
    # Wilson 95% intervals, worked out independently: 10/10 -> [0.7225, 1], 2/10 -> [0.0567, 0.5098]
    assert summary.loc[("motion", "none"), ["ci_low", "ci_high"]].tolist() == pytest.approx([0.72247, 1.0], abs=1e-4)
    assert summary.loc[("motion", "reverse"), ["ci_low", "ci_high"]].tolist() == pytest.approx([0.05668, 0.50984],
                                                                                                abs=1e-4)
    assert summary.loc[("motion", "reverse"), ["gained", "lost"]].tolist() == [0, 8]
    assert summary.loc[("motion", "reverse"), "p_value"] == pytest.approx(2 / 2**8)  # McNemar exact, 8 lost
    knocked = summary.loc[("motion", "zero_temporal")]
    assert not knocked["applicable"] and pd.isna(knocked["accuracy"]) and pd.isna(knocked["videos"])
    assert knocked["note"] == "not applicable: no KPSEM module"
    assert summary.loc[("blind", "reverse"), ["correct", "changed"]].tolist() == [4, 0]


def test_per_class_and_sentences(known):
    per_class = per_class_probes(known)
    cw = per_class[(per_class["model_id"] == "motion") & (per_class["probe"] == "reverse")
                   & (per_class["true_class"] == "turn_cw")].iloc[0]
    assert (cw["videos"], cw["correct"], cw["top_new_class"], cw["top_new_count"]) == (4, 0, "turn_ccw", 4)
    sentences = probe_sentences(known)
    assert ("motion's accuracy falls from 100% to 20% (95% CI 6%-51%) when the frames are reversed, blind's "
            "accuracy stays at 40% (95% CI 17%-69%).") in sentences
    assert "On turn_cw, reversing the clip turns 4 of 4 motion predictions into turn_ccw (blind: 0 of 4)." in sentences
    assert ("motion's accuracy stays at 100% (95% CI 72%-100%) when every 2nd frame is repeated twice, blind's "
            "accuracy stays at 40% (95% CI 17%-69%).") in sentences
    assert ("The temporal (KPSEM) half of the classifier input is zeroed: not applicable to motion, blind "
            "(no KPSEM module).") in sentences


# ---- the command on a tiny data set, and reading its table back -----------------------------------------------


def _checkpoints(tmp_path):
    classes = ["class0", "class1", "class2"]
    paths = []
    for arch in ("mfnet", "mf_kpsem"):
        torch.manual_seed(0)
        extra = {"backbone": TINY_BACKBONE, "num_frames": 8} if has_kpsem(arch) else TINY_BACKBONE
        model = create_model(arch, num_classes=3, **extra).eval()
        paths.append(save_checkpoint(tmp_path / f"{arch}.pt", model, class_names=classes, clip_frames=8, clip_size=32))
    return paths


def test_probe_command_writes_the_documented_table(frame_folders, tmp_path, capsys):
    from kpsem.cli import main
    from kpsem.evaluate import evaluate_checkpoint

    base, ours = _checkpoints(tmp_path)
    out = tmp_path / "probes.parquet"
    code = main(["probe", "--checkpoint", str(base), "--checkpoint", str(ours), "--data", str(frame_folders),
                 "--split", "test", "--probes", "reverse,shuffle,freeze,subsample,mirror,zero_temporal,"
                 "geometric_centres,zero_spatial", "--clips", "2", "--out", str(out), "--workers", "0",
                 "--no-progress", "--precision", "fp32"])  # compared with evaluate's fp32 below
    assert code == 0
    printed = capsys.readouterr().out
    assert "not applicable (no KPSEM module)" in printed and "when the frames are reversed" in printed
    result = read_probes(out)
    table = result.table
    assert list(table.columns) == list(COLUMNS)
    assert len(table) == 9 * 6 + 9 * 9  # MFNet: none + 5 input probes; MF-KPSEM: + 3 knock-outs; 9 videos
    assert (table["num_clips"] == 2).all()
    assert result.models["mfnet:mfnet"]["knockouts"] is False and result.models["mf_kpsem:mf_kpsem"]["knockouts"]
    assert len(result.info["shuffle_order"]) == 8
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["sentences"] and {r["probe"] for r in summary["per_probe"]} == {"none", *PROBES}

    # the unprobed rows are the evaluation's video scores (mean softmax over the same clips)
    evaluated = evaluate_checkpoint(ours, data=frame_folders, split="test", clips=2, workers=0)
    videos = evaluated.predictions[evaluated.predictions["level"] == "video"].set_index("video_id")
    mine = table[(table["model_id"] == "mf_kpsem:mf_kpsem") & (table["probe"] == "none")].set_index("video_id")
    np.testing.assert_allclose(np.stack(mine["probs"]), np.stack(videos.loc[mine.index, "probs"]), rtol=1e-4, atol=1e-6)


def test_probe_tables_that_cannot_be_read(tmp_path):
    from kpsem.evaluate import predictions_table, write_predictions

    with pytest.raises(ProbeError, match=r"probes file .*missing.parquet does not exist; make one with "
                                         r"`python -m kpsem probe"):
        read_probes(tmp_path / "missing.parquet")
    preds = predictions_table(np.full((1, 3), 1 / 3, np.float32), [0], ["v"], [0], class_names=["a", "b", "c"],
                              model_id="m:mfnet")
    write_predictions(preds, tmp_path / "preds.parquet")
    with pytest.raises(ProbeError, match=r"no probe metadata \(it is a predictions table from `kpsem evaluate`\)"):
        read_probes(tmp_path / "preds.parquet")


# ---- the app on the bundled demo ------------------------------------------------------------------------------


def _clean(at) -> None:  # at: an AppTest
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_probes_page_renders_on_the_demo(app):
    at = app.run()
    at.switch_page("pages/probes.py").run(timeout=180)
    _clean(at)
    if any(b.key == "pr_compute" for b in at.button):  # a stand-in demo has no bundled table: compute it
        at.button(key="pr_compute").click().run(timeout=600)
        _clean(at)
    text = re.sub(r"\\(.)", r"\1", " ".join(m.value for m in at.markdown))  # as read: Markdown escapes removed
    assert "when the frames are shuffled" in text and "MF-KPSEM's accuracy" in text
    frames = [d.value for d in at.dataframe]
    summary = next(f for f in frames if "what it does" in f.columns and "model" in f.columns)
    na = summary[summary["accuracy"] == "not applicable"]
    assert len(na) == 3 and set(na["probe"]) == {"zero_temporal", "geometric_centres", "zero_spatial"}
    at.selectbox(key="pr_class_probe").set_value("reverse").run()
    _clean(at)


def test_explorer_probe_section_on_one_clip(app):
    at = app.run()
    _clean(at)
    assert at.toggle(key="ex_probes_on").value is False  # off by default: the Explorer pays nothing for it
    at.toggle(key="ex_probes_on").set_value(True).run()
    _clean(at)
    table = next(d.value for d in at.dataframe if "what it does" in d.value.columns)
    assert table["probe"].tolist() == ["none", *PROBES]
    mfnet = next(c for c in table.columns if c.endswith(":mfnet"))
    assert (table.set_index("probe").loc[["zero_temporal", "geometric_centres", "zero_spatial"], mfnet]
            == "not applicable").all()



def test_non_finite_scores_under_a_probe_are_refused_not_tabled(tiny_pair, tiny_clip):
    from kpsem.checkpoint import NonFiniteOutputError

    model = copy.deepcopy(tiny_pair[0])
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        head.bias.fill_(float("nan"))  # what an overflow or a broken file gives
    with pytest.raises(NonFiniteOutputError, match=r"broken \(none\) gave non-finite scores"):
        probe_clip(model, tiny_clip, class_names=list("abcde"), true_label=2, model_id="broken")


def test_precision_is_recorded_and_survives_the_table(tmp_path):
    names = list(Ramps.class_names)
    exact = probe_model(Direction(), Ramps(), class_names=names, model_id="motion", arch="motion", probes=["reverse"])
    assert exact.info["precision"] == {"precision": "fp32", "requested": "fp32", "device": "cpu",
                                       "reason": "as asked"}
    bf16 = probe_model(Direction(), Ramps(), class_names=names, model_id="motion", arch="motion", probes=["reverse"],
                       precision="bf16")
    assert bf16.info["precision"]["precision"] == "bf16"
    assert read_probes(write_probes(bf16, tmp_path / "p.parquet")).info["precision"] == bf16.info["precision"]
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, fp16; got 'fp8'"):
        probe_model(Direction(), Ramps(), class_names=names, model_id="m", arch="m", probes=["reverse"],
                    precision="fp8")
