"""Evaluation: video scores as mean softmax, the predictions table, and reading it back."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_BACKBONE, ToyClips

from kpsem.checkpoint import save_checkpoint
from kpsem.evaluate import (
    COLUMNS,
    CentreStats,
    PredictionsError,
    evaluate_checkpoint,
    predictions_table,
    read_predictions,
    write_predictions,
)
from kpsem.models import create_model, has_kpsem

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = ["class0", "class1", "class2"]


def _checkpoint(tmp_path, arch: str = "mfnet", classes: list[str] = CLASSES):
    torch.manual_seed(0)
    extra = {"backbone": TINY_BACKBONE, "num_frames": 8} if has_kpsem(arch) else TINY_BACKBONE
    model = create_model(arch, num_classes=len(classes), **extra)
    return save_checkpoint(tmp_path / f"{arch}_toy.pt", model.eval(), class_names=classes, clip_frames=8, clip_size=32)


def test_video_score_is_the_mean_softmax_over_its_clips():
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]], dtype=np.float32)
    # video "b" has clips 1 and 0 (out of order); video "a" one clip
    table = predictions_table(probs, [1, 1, 2], ["b", "b", "a"], [1, 0, 0], class_names=CLASSES, model_id="m:mfnet")
    assert list(table.columns) == list(COLUMNS)
    clips, videos = table[table.level == "clip"], table[table.level == "video"]
    assert list(zip(clips.video_id, clips.clip_index)) == [("a", 0), ("b", 0), ("b", 1)]
    b = videos.set_index("video_id").loc["b"]
    np.testing.assert_allclose(b.probs, [0.4, 0.5, 0.1], rtol=1e-6)
    assert (b.clip_index, b.num_clips, b.true_class, b.correct_top1) == (-1, 2, "class1", True)
    assert list(b.topk_classes) == ["class1", "class0", "class2"] and list(b.topk_labels) == [1, 0, 2]
    # clip 1 of "b" (listed first) predicted class0 for a class1 video: wrong at top-1, right at top-5
    wrong = clips[(clips.video_id == "b") & (clips.clip_index == 1)].iloc[0]
    assert (wrong.correct_top1, wrong.correct_top5) == (False, True)
    assert set(table.model_id) == {"m:mfnet"}


@pytest.mark.parametrize("arch", ["mfnet", "mf_kpsem"])
def test_evaluate_checkpoint_writes_a_table_that_reads_back(tmp_path, arch):
    ckpt = _checkpoint(tmp_path, arch)
    out = tmp_path / "preds.parquet"
    result = evaluate_checkpoint(ckpt, dataset=ToyClips(5, train=False, clips_per_video=3), class_names=CLASSES,
                                 clips=3, batch_size=4, workers=0, out=out)
    assert (result.num_videos, result.num_clips, result.model_id) == (5, 15, f"{arch}_toy:{arch}")
    table = read_predictions(out)
    assert len(table) == 15 + 5 and set(table.level) == {"clip", "video"}
    videos = table[table.level == "video"]
    assert result.video_top1 == pytest.approx(videos.correct_top1.mean())
    assert result.video_top5 == 1.0  # 3 classes: the true one is always among the top 5
    assert all(len(p) == 3 and abs(sum(p) - 1) < 1e-5 for p in table.probs)
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["clip_top1"] == pytest.approx(result.clip_top1) and summary["info"]["arch"] == arch
    assert table.attrs["kpsem"]["num_clips"] == 15 and table.attrs["format"] == "kpsem-predictions/1"
    assert ("centre_std_clips" in summary["info"]) == has_kpsem(arch)  # the centres' movement, KPSEM only

    # the same model run clip by clip gives the same probabilities
    from kpsem.checkpoint import load_checkpoint

    model = load_checkpoint(ckpt).model
    item = ToyClips(5, train=False, clips_per_video=3)[4]  # video001, clip 1
    with torch.no_grad():
        expected = torch.softmax(model(item["clip"][None]), dim=1)[0].numpy()
    row = table[(table.level == "clip") & (table.video_id == "video001") & (table.clip_index == 1)].iloc[0]
    np.testing.assert_allclose(row.probs, expected, rtol=1e-4, atol=1e-6)


def test_read_predictions_explains_bad_files(tmp_path):
    with pytest.raises(PredictionsError, match=r"missing\.parquet does not exist; make one with `python -m kpsem"):
        read_predictions(tmp_path / "missing.parquet")
    (tmp_path / "empty.parquet").write_bytes(b"")
    with pytest.raises(PredictionsError, match="is empty"):
        read_predictions(tmp_path / "empty.parquet")
    (tmp_path / "notes.parquet").write_text("video_id,label\n")
    with pytest.raises(PredictionsError, match="is not a Parquet predictions table"):
        read_predictions(tmp_path / "notes.parquet")
    pd.DataFrame({"video_id": ["a"], "score": [0.5]}).to_parquet(tmp_path / "other.parquet")
    with pytest.raises(PredictionsError, match="lacks columns true_label, true_class, model_id"):
        read_predictions(tmp_path / "other.parquet")
    table = predictions_table(np.eye(3, dtype=np.float32), [0, 1, 2], ["a", "b", "c"], [0, 0, 0],
                              class_names=CLASSES, model_id="m")
    table.loc[0, "level"] = "frame"
    write_predictions(table, tmp_path / "levels.parquet")
    with pytest.raises(PredictionsError, match=r"column 'level' holds \['frame'\]"):
        read_predictions(tmp_path / "levels.parquet")


def test_evaluate_refuses_a_data_set_with_other_classes(tmp_path):
    ckpt = _checkpoint(tmp_path, "mfnet", classes=["run", "jump", "walk"])
    with pytest.raises(ValueError, match=r"name their classes differently .*0: 'run' vs 'class0'"):
        evaluate_checkpoint(ckpt, dataset=ToyClips(3, train=False), class_names=CLASSES, workers=0)
    with pytest.raises(ValueError, match="predicts 3 classes but the data set has 4"):
        evaluate_checkpoint(ckpt, dataset=ToyClips(3, train=False), class_names=[*CLASSES, "x"], workers=0)


class _OneUndecodable(ToyClips):
    """Video 1 cannot be decoded: ClipDataset would return video 2's clips with ``replaced`` set."""

    def __getitem__(self, index: int) -> dict:
        video, clip_index = divmod(index, self.clips_per_video)
        if video != 1:
            return {**super().__getitem__(index), "replaced": ""}
        stand_in = super().__getitem__(2 * self.clips_per_video + clip_index)
        return {**stand_in, "replaced": "/data/class1/video001.avi"}


def test_stand_ins_for_undecodable_videos_are_left_out_and_listed(tmp_path):
    result = evaluate_checkpoint(_checkpoint(tmp_path), dataset=_OneUndecodable(4, train=False, clips_per_video=2),
                                 class_names=CLASSES, clips=2, batch_size=3, workers=0)
    assert (result.num_videos, result.num_clips) == (3, 6)
    assert result.predictions.groupby("video_id").size().to_dict() == {"video000": 3, "video002": 3, "video003": 3}
    assert result.info["undecodable_videos"] == ["/data/class1/video001.avi"]


class _FakeKPSEM(torch.nn.Module):
    """Returns fixed centres, as MF-KPSEM's module returns (features, internals)."""

    has_centre_mlp = True

    def __init__(self, centres: torch.Tensor) -> None:
        super().__init__()
        self.centres = centres

    def forward(self, x: torch.Tensor):
        from types import SimpleNamespace

        return x, SimpleNamespace(centres=self.centres, feature_size=(4, 4))


def test_centre_stats_by_hand():
    # (N=2 clips, G=1, T=2, xy); on a 4x4 map the bound is 0.75 (the outermost cell centre)
    centres = torch.tensor([[[[0.0, 0.0], [0.2, 0.0]]], [[[0.4, 0.75], [0.2, 0.75]]]])
    model = torch.nn.Module()
    model.kpsem = _FakeKPSEM(centres)
    stats = CentreStats(model, training=False)
    model.kpsem.train()
    model.kpsem(torch.zeros(1))  # a training-mode pass: not this recorder's
    assert stats.take() == {}
    model.kpsem.eval()
    model.kpsem(torch.zeros(1))
    taken = stats.take()
    # across clips, unbiased std of 2 values = |a - b| / sqrt(2): x0 0.4, y0 0.75, x1 0, y1 0.75
    assert taken["centre_std_clips"] == pytest.approx((0.4 + 0.75 + 0.75) / 2 ** 0.5 / 4)
    # across frames: clip 0 x 0.2, y 0; clip 1 x 0.2, y 0
    assert taken["centre_std_frames"] == pytest.approx((0.2 + 0.2) / 2 ** 0.5 / 4)
    assert taken["centre_near_bound"] == pytest.approx(2 / 8)  # the two y = 0.75
    stats.close()
    model.kpsem(torch.zeros(1))
    assert stats.take() == {} and not model.kpsem._forward_hooks
