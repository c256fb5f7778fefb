"""Evaluation protocols (centre, mfnet, 3crop): which frames and crops each takes, worked out by hand on a
tiny synthetic video; how views average into a video's score; the protocol in every table's metadata."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import TINY_BACKBONE, ToyClips
from PIL import Image

from kpsem.checkpoint import load_checkpoint, save_checkpoint
from kpsem.cli import main
from kpsem.data import ClipDataset, denormalise, eval_protocol, open_dataset
from kpsem.data.clips import check_protocol
from kpsem.data.transforms import view_geometry
from kpsem.evaluate import evaluate_checkpoint, predictions_protocol, read_predictions, write_predictions
from kpsem.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = ["class0", "class1"]
FRAMES, HEIGHT, WIDTH = 20, 32, 56  # the synthetic video: 20 frames of 32 x 56 pixels


def _pixels(t: int) -> np.ndarray:
    """Frame t: red 10 t + 5 everywhere, green 4 x, blue 4 y + 2, so a pixel tells its frame, column and row."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    return np.stack([np.full_like(x, 10 * t + 5), 4 * x, 4 * y + 2], axis=-1).astype(np.uint8)  # (H, W, 3)


@pytest.fixture
def video_root(tmp_path: Path) -> Path:
    """Two classes of one lossless (PNG) 20-frame video each, in the "folders" layout."""
    root = tmp_path / "data"
    for c in CLASSES:
        folder = root / c / f"{c}_video"
        folder.mkdir(parents=True)
        for t in range(FRAMES):
            Image.fromarray(_pixels(t)).save(folder / f"{t + 1:05d}.png")
    return root


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = create_model("mfnet", num_classes=2, **TINY_BACKBONE).eval()
    return save_checkpoint(tmp_path / "toy.pt", model, class_names=CLASSES, clip_frames=8, clip_size=32)


def _dataset(root: Path, protocol: str, clips: int = 2, seed: int = 0) -> ClipDataset:
    index = open_dataset(root, split="test", layout="folders")
    return ClipDataset(index, train=False, frames=8, interval=2, size=32, clips_per_video=clips, protocol=protocol,
                       seed=seed)


def _frames_of(item: dict) -> list[int]:
    """Frame numbers of an item, read back from its red channel (constant per frame, so any resize keeps it)."""
    display = denormalise(item["clip"])  # (T, H, W, 3)
    return [(int(v) - 5) // 10 for v in display[:, 0, 0, 0]]


def test_view_geometry_by_hand() -> None:
    # 240 x 320 to a 224 short side: 224 x round(298.67) = 299; three crops at the start, centre, end of the width
    for position, left in enumerate((0, 37, 75)):
        assert view_geometry(240, 320, size=224, resize=224, crop="three", position=position) == ((224, 299), (0, left))
    # portrait: the crops move down the height instead
    assert [view_geometry(320, 240, size=224, resize=224, crop="three", position=p)[1] for p in range(3)] == [
        (0, 0), (37, 0), (75, 0)]
    # centre protocol at 224: short side 256, 240 x 320 -> 256 x round(341.33) = 341; (256 - 224) / 2, (341 - 224) // 2
    assert view_geometry(240, 320, size=224, resize=256) == ((256, 341), (16, 58))
    # the MFNet reference's square: 256 x 256 whatever the aspect; the corner from the generator, top first
    geometry = view_geometry(240, 320, size=224, resize=256, crop="random", square=True, rng=np.random.default_rng(7))
    draws = np.random.default_rng(7)
    assert geometry == ((256, 256), (int(draws.integers(33)), int(draws.integers(33))))
    with pytest.raises(ValueError, match="crop must be one of centre, three, random; got 'five'"):
        view_geometry(240, 320, size=224, resize=256, crop="five")
    with pytest.raises(ValueError, match=r"position must be 0, 1 or 2 \(three crops\); got 3"):
        view_geometry(240, 320, size=224, resize=224, crop="three", position=3)
    with pytest.raises(ValueError, match="a random crop needs rng="):
        view_geometry(240, 320, size=224, resize=256, crop="random")


def test_each_protocol_describes_its_views() -> None:
    assert eval_protocol("centre", clips=10, size=224).as_dict() == {
        "name": "centre", "clips": 10, "crops": 1, "views": 10, "size": 224, "resize": 256, "resize_to": "short side",
        "crop": "centre", "random_start": False, "seed": None}
    assert eval_protocol("mfnet", clips=30, size=224, seed=3).as_dict() == {
        "name": "mfnet", "clips": 30, "crops": 1, "views": 30, "size": 224, "resize": 256, "resize_to": "square",
        "crop": "random", "random_start": True, "seed": 3}
    assert eval_protocol("3crop", clips=10, size=224).as_dict() == {
        "name": "3crop", "clips": 10, "crops": 3, "views": 30, "size": 224, "resize": 224, "resize_to": "short side",
        "crop": "three", "random_start": False, "seed": None}
    assert eval_protocol("centre", clips=1, size=112).resize == 128  # round(112 * 256 / 224)


def test_bad_protocol_or_clips_get_the_exact_message(tmp_path: Path, video_root: Path, checkpoint: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ValueError, match=r"^protocol must be one of centre, mfnet, 3crop; got '5crop'$"):
        check_protocol("5crop", 1)
    with pytest.raises(ValueError, match=r"^clips must be a whole number of at least 1 \(clips per video\); got 0$"):
        eval_protocol("3crop", clips=0)
    with pytest.raises(ValueError, match=r"^clips must be a whole number of at least 1 \(clips per video\); got 2\.5$"):
        check_protocol("centre", 2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"protocol='3crop' chooses test views; training clips use the training"):
        ClipDataset(open_dataset(video_root, split="test", layout="folders"), train=True, protocol="3crop")
    with pytest.raises(ValueError, match=r"^protocol must be one of centre, mfnet, 3crop; got 'five'$"):
        evaluate_checkpoint(checkpoint, data=video_root, layout="folders", protocol="five", workers=0)
    code = main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(video_root), "--layout", "folders",
                 "--protocol", "5crop", "--workers", "0", "--device", "cpu", "--no-progress"])
    assert code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last == "error: --protocol must be one of centre, mfnet, 3crop; got '5crop'"
    code = main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(video_root), "--layout", "folders",
                 "--clips", "0", "--workers", "0", "--device", "cpu", "--no-progress"])
    assert code == 2
    assert capsys.readouterr().err.splitlines()[-1] == "error: --clips must be at least 1; got 0"


def test_centre_protocol_is_todays_test_sampling(video_root: Path) -> None:
    data = _dataset(video_root, "centre")
    assert len(data) == 2 * 2 and data.views == 2
    # 8 frames every 2nd: a span of 15 of 20 frames, starts 0..5; clip k of 2 starts at floor((k + 0.5) * 6 / 2)
    assert _frames_of(data[0]) == [1, 3, 5, 7, 9, 11, 13, 15]
    assert _frames_of(data[1]) == [4, 6, 8, 10, 12, 14, 16, 18]
    default = ClipDataset(data.index, train=False, frames=8, interval=2, size=32, clips_per_video=2)  # no protocol=
    assert default.protocol == data.protocol and torch.equal(default[1]["clip"], data[1]["clip"])
    # 32 x 56 to a short side of round(32 * 256 / 224) = 37: 37 x round(64.75) = 65, centre crop at (2, 16)
    assert view_geometry(HEIGHT, WIDTH, size=32, resize=37) == ((37, 65), (2, 16))


def test_three_crops_of_every_clip_along_the_long_side(video_root: Path) -> None:
    data = _dataset(video_root, "3crop")
    assert len(data) == 2 * 6 and data.views == 6  # 2 clips x 3 crops per video
    # the short side is already the crop size (32): no resize; crops at left 0, (56 - 32) // 2 = 12, 24
    for view, (frames, left) in enumerate([(range(1, 16, 2), 0), (range(1, 16, 2), 12), (range(1, 16, 2), 24),
                                           (range(4, 19, 2), 0), (range(4, 19, 2), 12), (range(4, 19, 2), 24)]):
        item = data[view]
        assert (item["video_id"], item["clip_index"]) == ("class0/class0_video", view)
        display = denormalise(item["clip"])  # (8, 32, 32, 3)
        assert _frames_of(item) == list(frames)
        np.testing.assert_array_equal(display[0], _pixels(frames[0])[:, left:left + 32])  # green 4 x from x = left
    assert data[6]["video_id"] == "class1/class1_video" and data[6]["clip_index"] == 0


def test_mfnet_protocol_takes_seeded_random_clips_and_crops_of_a_square_resize(video_root: Path) -> None:
    data = _dataset(video_root, "mfnet", clips=3)
    assert len(data) == 2 * 3
    later = _dataset(video_root, "mfnet", clips=3)
    backwards = [later[i]["clip"] for i in reversed(range(len(later)))][::-1]  # another order, another instance
    for i in range(len(data)):
        item = data[i]
        frames = _frames_of(item)
        assert frames == list(range(frames[0], frames[0] + 15, 2)) and 0 <= frames[0] <= 5  # a random start
        assert torch.equal(item["clip"], backwards[i])  # the same draws whatever the order
        # some corner of the 37 x 37 square resize (its 6 x 6 possible corners), the same for every frame
        display = denormalise(item["clip"])
        square = cv2.resize(_pixels(frames[0]), (37, 37), interpolation=cv2.INTER_AREA)
        corners = [(t, lf) for t in range(6) for lf in range(6)
                   if np.array_equal(square[t:t + 32, lf:lf + 32, 1:], display[0, :, :, 1:])]
        assert len(corners) == 1
    other_seed = _dataset(video_root, "mfnet", clips=3, seed=1)
    assert not all(torch.equal(data[i]["clip"], other_seed[i]["clip"]) for i in range(len(data)))


def test_views_average_into_the_video_score_and_the_protocol_is_recorded(tmp_path: Path, video_root: Path,
                                                                         checkpoint: Path) -> None:
    out = tmp_path / "preds.parquet"
    result = evaluate_checkpoint(checkpoint, data=video_root, layout="folders", protocol="3crop", clips=2, workers=0,
                                 batch_size=4, out=out)
    expected = eval_protocol("3crop", clips=2, size=32).as_dict()
    assert result.protocol == expected and (result.num_videos, result.num_clips) == (2, 12)
    table = read_predictions(out)
    assert table.attrs["kpsem"]["protocol"] == expected and predictions_protocol(table) == expected
    assert json.loads(out.with_suffix(".json").read_text())["protocol"] == expected
    for _, rows in table.groupby("video_id"):
        views = rows[rows.level == "clip"].sort_values("clip_index")
        video = rows[rows.level == "video"].iloc[0]
        assert views.clip_index.tolist() == [0, 1, 2, 3, 4, 5] and video.num_clips == 6
        np.testing.assert_allclose(video.probs, np.stack(views.probs).mean(axis=0), rtol=1e-6)
    # the seed is recorded where it matters, and a data set that does not say how it took its clips says so
    mfnet = evaluate_checkpoint(checkpoint, data=video_root, layout="folders", protocol="mfnet", clips=2, seed=5,
                                workers=0)
    assert mfnet.protocol["seed"] == 5 and mfnet.protocol["resize_to"] == "square"
    toy = evaluate_checkpoint(checkpoint, dataset=ToyClips(2, classes=2, train=False), class_names=CLASSES,
                              workers=0)
    assert toy.protocol == {"name": "unstated", "dataset": "ToyClips"}
    write_predictions(table, tmp_path / "older.parquet")  # no summary, as tables written before protocols
    assert predictions_protocol(read_predictions(tmp_path / "older.parquet")) is None


def test_evaluate_prints_the_protocol(tmp_path: Path, video_root: Path, checkpoint: Path,
                                      capsys: pytest.CaptureFixture) -> None:
    code = main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(video_root), "--layout", "folders",
                 "--protocol", "mfnet", "--clips", "2", "--seed", "4", "--workers", "0", "--device", "cpu",
                 "--precision", "fp32", "--no-progress", "--out", str(tmp_path / "p.parquet")])
    assert code == 0
    assert "  protocol mfnet: 2 clips x 1 crops (random) of 32 px, frames resized to 37x37, seed 4\n" in (
        capsys.readouterr().out)
    assert predictions_protocol(read_predictions(tmp_path / "p.parquet"))["seed"] == 4


def test_the_app_computes_its_table_with_evaluates_loop(tmp_path: Path, video_root: Path, checkpoint: Path) -> None:
    from kpsem.app_support.caching.predictions import compute_predictions

    loaded = load_checkpoint(checkpoint)
    index = open_dataset(video_root, split="test", layout="folders")
    out = tmp_path / "app.parquet"
    seen: list[tuple[int, int]] = []
    app = compute_predictions(loaded.model, loaded.info, index, model_id="toy:mfnet", clips=2, out=out,
                              progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    evaluated = evaluate_checkpoint(checkpoint, data=video_root, layout="folders", clips=2, workers=0, batch_size=3,
                                    model_id="toy:mfnet").predictions
    np.testing.assert_allclose(np.stack(app.probs), np.stack(evaluated.probs), rtol=1e-5, atol=1e-7)
    recorded = read_predictions(out).attrs["kpsem"]
    assert recorded["protocol"] == eval_protocol("centre", clips=2, size=32).as_dict()
    assert recorded["precision"]["precision"] == "fp32"
