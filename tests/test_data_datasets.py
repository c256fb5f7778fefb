"""Data set layouts: a tiny fixture tree in each real layout, parsed records, and line-numbered errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from kpsem.data import AnnotationError, ClipDataset, detect_layout, open_dataset
from kpsem.data.synth import write_video


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real 6-frame 32x32 video, copied wherever a layout needs a video."""
    frames = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", frames, fps=10)


def put(clip: Path, *paths: Path) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(clip, path)


def ids(index) -> list[tuple[str, int]]:
    return [(r.video_id, r.label) for r in index.videos]


# ---------------------------------------------------------------------------------------------- HMDB51


def make_hmdb(root: Path, clip: Path) -> Path:
    put(clip, root / "videos/brush_hair/a.avi", root / "videos/brush_hair/b.avi", root / "videos/cartwheel/c.avi")
    (root / "videos/cartwheel/d").mkdir(parents=True)  # extracted frames of d.avi
    write_video(root / "videos/cartwheel/d", np.zeros((2, 8, 8, 3), np.uint8))
    splits = root / "videos/testTrainMulti_7030_splits"
    splits.mkdir()
    (splits / "brush_hair_test_split1.txt").write_text("a.avi 1 \nb.avi 2 \ngone.avi 1 \n")
    (splits / "cartwheel_test_split1.txt").write_text("c.avi 2\nd.avi 1\ne.avi 0\n")
    return root / "videos"


def test_hmdb51_splits_found_under_the_root(tmp_path: Path, clip_file: Path) -> None:
    root = make_hmdb(tmp_path, clip_file)
    assert detect_layout(root) == "hmdb51"
    train = open_dataset(root, split="train")
    assert train.class_names == ["brush_hair", "cartwheel"] and train.layout == "hmdb51"
    assert ids(train) == [("brush_hair/a", 0), ("cartwheel/d", 1)]
    assert train.videos[1].path == root / "cartwheel/d"  # a frame folder stands in for d.avi
    assert train.skipped == [(str(root / "brush_hair/gone.avi"), "listed in brush_hair_test_split1.txt line 3, "
                                                                  "not on disk")]
    test = open_dataset(root, split="test")
    assert ids(test) == [("brush_hair/b", 0), ("cartwheel/c", 1)]
    val = open_dataset(root, split="val")
    assert ids(val) == ids(test) and val.notes == ["hmdb51 has no validation split; val uses the test list"]


def test_hmdb51_annotations_elsewhere_and_malformed_lines(tmp_path: Path, clip_file: Path) -> None:
    root = make_hmdb(tmp_path, clip_file)
    elsewhere = tmp_path / "splits"
    shutil.move(root / "testTrainMulti_7030_splits", elsewhere)
    with pytest.raises(AnnotationError, match=r"no HMDB51 split files .* pass annotations="):
        open_dataset(root, layout="hmdb51")
    assert len(open_dataset(root, layout="hmdb51", annotations=elsewhere, split="test")) == 2
    (elsewhere / "cartwheel_test_split1.txt").write_text("c.avi 2\nd.avi 7\n")
    with pytest.raises(AnnotationError, match=r"cartwheel_test_split1\.txt, line 2: expected '<video> <id>' "
                                              r"with id 0 \(unused\), 1 \(train\) or 2 \(test\); got 'd\.avi 7'"):
        open_dataset(root, layout="hmdb51", annotations=elsewhere)
    with pytest.raises(ValueError, match="hmdb51 has splits 1, 2 and 3; got split_id=4"):
        open_dataset(root, layout="hmdb51", split_id=4)


# ---------------------------------------------------------------------------------------------- UCF101


def make_ucf(root: Path, clip: Path) -> Path:
    put(clip, *(root / "UCF-101" / p for p in ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi",
                                                "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi",
                                                "Archery/v_Archery_g08_c02.avi", "Archery/v_Archery_g01_c01.avi")))
    lists = root / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n")
    (lists / "trainlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\nArchery/v_Archery_g08_c02.avi 2\n")
    (lists / "testlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\r\nArchery/v_Archery_g01_c01.avi\r\n"
        "Archery/v_Archery_g02_c01.avi\r\n")
    return root


def test_ucf101(tmp_path: Path, clip_file: Path) -> None:
    root = make_ucf(tmp_path, clip_file)
    assert detect_layout(root) == "ucf101"
    train = open_dataset(root, split="train")
    assert train.class_names == ["ApplyEyeMakeup", "Archery"]
    assert ids(train) == [("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01", 0), ("Archery/v_Archery_g08_c02", 1)]
    assert train.videos[0].path == root / "UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi"
    test = open_dataset(root, split="test")
    assert [label for _, label in ids(test)] == [0, 1] and len(test.skipped) == 1
    with pytest.raises(AnnotationError, match=r"testlist02\.txt not found"):
        open_dataset(root, split="test", split_id=2)


def test_ucf101_label_that_contradicts_the_folder(tmp_path: Path, clip_file: Path) -> None:
    root = make_ucf(tmp_path, clip_file)
    (root / "ucfTrainTestlist/trainlist01.txt").write_text("Archery/v_Archery_g08_c02.avi 1\n")
    with pytest.raises(AnnotationError, match=r"trainlist01\.txt, line 1: expected label 2 for class Archery"):
        open_dataset(root, split="train")
    (root / "ucfTrainTestlist/trainlist01.txt").write_text("\nBowling/v_Bowling_g01_c01.avi 3\n")
    with pytest.raises(AnnotationError, match=r"trainlist01\.txt, line 2: expected '<Class>/<video>\.avi \[label\]'"):
        open_dataset(root, split="train")


# ---------------------------------------------------------------------------------------------- Kinetics


def test_kinetics_class_folders_per_split(tmp_path: Path, clip_file: Path) -> None:
    put(clip_file, tmp_path / "train/abseiling/x1_000010_000020.mp4", tmp_path / "train/zumba/x2_000000_000010.mp4",
        tmp_path / "val/zumba/x3_000005_000015.mp4", tmp_path / "val/archery/x4_000001_000011.mp4")
    assert detect_layout(tmp_path) == "kinetics"
    val = open_dataset(tmp_path, split="val")
    assert val.class_names == ["abseiling", "archery", "zumba"]  # all splits' classes: labels agree across splits
    assert ids(val) == [("archery/x4_000001_000011", 1), ("zumba/x3_000005_000015", 2)]


def test_kinetics_csv(tmp_path: Path, clip_file: Path) -> None:
    put(clip_file, tmp_path / "train/abseiling/-abc_000010_000020.mp4", tmp_path / "val/zumba/xyz_000005_000015.mp4")
    (tmp_path / "kinetics400_train.csv").write_text(
        "label,youtube_id,time_start,time_end,split\nabseiling,-abc,10,20,train\n\"zumba\",qqq,0,10,train\n")
    (tmp_path / "kinetics400_val.csv").write_text(
        "label,youtube_id,time_start,time_end,split\nzumba,xyz,5.0,15.0,val\n")
    assert detect_layout(tmp_path) == "kinetics"
    train = open_dataset(tmp_path, split="train")
    assert train.class_names == ["abseiling", "zumba"]
    assert ids(train) == [("abseiling/-abc_000010_000020", 0)]
    assert train.skipped == [(str(tmp_path / "train/qqq_000000_000010.mp4"),
                              "listed in kinetics400_train.csv line 3, not on disk")]
    assert ids(open_dataset(tmp_path, split="val")) == [("zumba/xyz_000005_000015", 1)]
    (tmp_path / "kinetics400_val.csv").write_text("label,youtube_id,time_start,time_end,split\nzumba,xyz,five,15,val\n")
    with pytest.raises(AnnotationError, match=r"kinetics400_val\.csv, line 2: expected label,youtube_id,time_start"):
        open_dataset(tmp_path, split="val")


# ---------------------------------------------------------------------------------------------- SSv1


def make_ssv1(root: Path) -> Path:
    for video in ("1", "7", "42"):
        write_video(root / "20bn-something-something-v1" / video, np.full((3, 16, 16, 3), 9, np.uint8))
    (root / "something-something-v1-labels.csv").write_text(
        "Holding something\nPushing something from left to right\nPutting something on a surface\n")
    (root / "something-something-v1-train.csv").write_text("1;Putting something on a surface\n7;Holding something\n")
    (root / "something-something-v1-validation.csv").write_text(
        "42;Pushing something from left to right\n99;Holding something\n")
    return root


def test_something_something_v1(tmp_path: Path) -> None:
    root = make_ssv1(tmp_path)
    assert detect_layout(root) == "ssv1"
    train = open_dataset(root, split="train")
    assert len(train.class_names) == 3 and ids(train) == [("1", 2), ("7", 0)]
    assert train.videos[0].path == root / "20bn-something-something-v1/1"
    test = open_dataset(root, split="test")
    assert ids(test) == [("42", 1)]
    assert test.skipped[0][1] == "listed in something-something-v1-validation.csv line 2, no frame folder"
    assert test.notes == ["something-something-v1 publishes no test labels; test uses the validation list"]
    clip = ClipDataset(train, train=False, frames=4, size=16)[0]
    assert clip["clip"].shape == (3, 4, 16, 16) and clip["label"] == 2


def test_something_something_unknown_label(tmp_path: Path) -> None:
    root = make_ssv1(tmp_path)
    (root / "something-something-v1-train.csv").write_text("1;Holding something\n7;Juggling\n")
    with pytest.raises(AnnotationError, match=r"something-something-v1-train\.csv, line 2: expected '<id>;<label>' "
                       r"with a label from something-something-v1-labels\.csv; got '7;Juggling'"):
        open_dataset(root, split="train")


# ---------------------------------------------------------------------------------------------- folders


def test_plain_class_folders_without_lists(tmp_path: Path, clip_file: Path) -> None:
    put(clip_file, tmp_path / "b_class/one.mp4", tmp_path / "a_class/two.avi")
    (tmp_path / "a_class/readme.md").write_text("not a video")
    assert detect_layout(tmp_path) == "folders"
    index = open_dataset(tmp_path, split="train")
    assert index.class_names == ["a_class", "b_class"] and ids(index) == [("a_class/two", 0), ("b_class/one", 1)]
    assert index.skipped == [(str(tmp_path / "a_class/readme.md"), "not a video file or frame folder")]
    assert "no train.txt list" in index.notes[0]


def test_class_folders_with_lists(tmp_path: Path, clip_file: Path) -> None:
    put(clip_file, tmp_path / "up/u1.mp4", tmp_path / "down/d1.mp4")
    (tmp_path / "classes.txt").write_text("up\ndown\n")
    (tmp_path / "test.txt").write_text("down/d1.mp4 1\nup/u1.mp4 0\n")
    index = open_dataset(tmp_path)  # split="test" by default
    assert index.class_names == ["up", "down"] and ids(index) == [("down/d1", 1), ("up/u1", 0)]
    (tmp_path / "test.txt").write_text("down/d1.mp4 1\nup/u1.mp4 1\n")
    with pytest.raises(AnnotationError, match=r"test\.txt, line 2: expected label 0 for folder up; got 'up/u1\.mp4 1'"):
        open_dataset(tmp_path)


def test_roots_and_arguments_that_do_not_fit(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="data set root .*nowhere does not exist"):
        open_dataset(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="split must be one of train, val, test; got 'dev'"):
        open_dataset(tmp_path, split="dev")
    with pytest.raises(ValueError, match="layout must be one of hmdb51, ucf101, kinetics, ssv1, folders"):
        open_dataset(tmp_path, layout="imagenet")
    with pytest.raises(AnnotationError, match="cannot tell the layout of .* pass layout="):
        detect_layout(tmp_path)


def test_verify_moves_broken_videos_to_skipped(tmp_path: Path, clip_file: Path) -> None:
    put(clip_file, tmp_path / "a/good.mp4")
    (tmp_path / "a/bad.mp4").write_bytes(b"")
    index = open_dataset(tmp_path, verify=True)
    assert ids(index) == [("a/good", 0)]
    assert index.skipped[0][0] == str(tmp_path / "a/bad.mp4") and "is empty (0 bytes)" in index.skipped[0][1]
