"""The synthetic data set (motions, determinism, files that decode back, the command) and ClipDataset on it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from kpsem.cli import main
from kpsem.data import ClipDataset, VideoError, open_dataset, read_frames
from kpsem.data.synth import SYNTH_CLASSES, SynthConfig, _trajectory, generate, render_video, write_video

TINY = dict(videos_per_class=5, frames=16, size=32, workers=1)  # per class: 3 train, 1 val, 1 test


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory: pytest.TempPathFactory):
    config = SynthConfig(classes=("rise", "fall", "hop_cw"), **TINY)
    return generate(tmp_path_factory.mktemp("synth") / "set", config)


def test_layout_lists_and_counts(tiny_set) -> None:
    # 5 videos: round(0.6 * 5) = 3 train, round(0.2 * 5) = 1 val, 1 test per class
    assert tiny_set.counts == {"train": 9, "val": 3, "test": 3} and tiny_set.format == "mp4"
    root = tiny_set.out_dir
    assert (root / "classes.txt").read_text() == "rise\nfall\nhop_cw\n"
    lines = (root / "train.txt").read_text().splitlines()
    assert lines[:2] == ["rise/rise_train_000.mp4 0", "rise/rise_train_001.mp4 0"]
    index = open_dataset(root, split="test")
    assert index.layout == "folders" and index.class_names == ["rise", "fall", "hop_cw"]
    assert [(r.video_id, r.label) for r in index.videos] == [
        ("rise/rise_test_000", 0), ("fall/fall_test_000", 1), ("hop_cw/hop_cw_test_000", 2)]
    frames = read_frames(index.videos[0].path, list(range(16)))
    assert frames.shape == (16, 32, 32, 3)


def _files(root: Path) -> dict[str, bytes]:
    return {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("*.mp4"))}


def test_same_seed_same_files_other_seed_other_files(tmp_path: Path, tiny_set) -> None:
    # `again` is written later in the same process, after other tests decoded and encoded other videos,
    # and by two worker processes instead of one: the bytes must not depend on either
    again = generate(tmp_path / "again", SynthConfig(classes=("rise", "fall", "hop_cw"), **{**TINY, "workers": 2}))
    other = generate(tmp_path / "other", SynthConfig(classes=("rise", "fall"), seed=1, videos_per_class=5, frames=16,
                                                     size=32, workers=1, train_per_class=1))
    first, second = _files(tiny_set.out_dir), _files(again.out_dir)
    assert len(first) == 15 and first == second
    assert (tiny_set.out_dir / "train.txt").read_text() == (again.out_dir / "train.txt").read_text()
    assert _files(other.out_dir)["rise/rise_val_000.mp4"] != first["rise/rise_val_000.mp4"]
    pixels = read_frames(tiny_set.out_dir / "rise/rise_val_000.mp4", range(16))
    np.testing.assert_array_equal(pixels, read_frames(again.out_dir / "rise/rise_val_000.mp4", range(16)))
    assert not np.array_equal(pixels, read_frames(other.out_dir / "rise/rise_val_000.mp4", range(16)))
    assert other.counts == {"train": 2, "val": 2, "test": 2}  # train_per_class caps training videos only


def test_encoding_does_not_depend_on_what_the_process_did_before(tmp_path: Path) -> None:
    # libx264's AVX-512 macroblock-tree code gave other bytes for the same frames after a decode in
    # the same process (about half the repeats on an AVX-512 EPYC); six rounds caught it in every run
    video = render_video("rise", np.random.default_rng(0), frames=16, size=32)
    first = write_video(tmp_path / "first.mp4", video).read_bytes()
    for i in range(6):
        other = render_video("hop_cw", np.random.default_rng(i + 1), frames=16, size=64, difficulty="hard")
        assert read_frames(write_video(tmp_path / f"other_{i}.mp4", other), range(16)).shape == (16, 64, 64, 3)
        assert write_video(tmp_path / f"again_{i}.mp4", video).read_bytes() == first, f"round {i}"


def test_render_video_depends_only_on_its_generator() -> None:
    a = render_video("fall", np.random.default_rng((0, 1, 2, 0)), frames=8, size=32, classes=("fall", "rise"))
    b = render_video("fall", np.random.default_rng((0, 1, 2, 0)), frames=8, size=32, classes=("fall", "rise"))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("fmt", ["avi", "jpg"])
def test_other_formats_decode_back(tmp_path: Path, fmt: str) -> None:
    summary = generate(tmp_path / fmt, SynthConfig(classes=("approach", "separate"), format=fmt, **TINY))
    index = summary.index("train")
    assert len(index) == 6 and not index.skipped
    assert read_frames(index.videos[0].path, [0, 15]).shape == (2, 32, 32, 3)


def test_motions_are_what_the_class_names_say() -> None:
    size, reach = 128, 20.0
    rng = np.random.default_rng(0)

    def parts(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return _trajectory(name, rng, 16, size, reach, 1.0)

    _, a, _ = parts("rise")
    assert a[-1, 0] - a[0, 0] == pytest.approx(-1.1 * reach) and a[-1, 1] == pytest.approx(a[0, 1])  # y goes up
    _, a, _ = parts("slide_right")
    assert a[-1, 1] - a[0, 1] == pytest.approx(1.1 * reach)
    _, a, b = parts("approach")
    gap = np.linalg.norm(a - b, axis=1)
    assert gap[0] == pytest.approx(3 * reach) and gap[-1] == pytest.approx(reach)  # 2 r (1 +- 0.5)
    _, a, _ = parts("turn_cw")
    angle = np.unwrap(np.arctan2(a[:, 0], a[:, 1]))  # y down: increasing angle is clockwise on screen
    assert angle[-1] - angle[0] == pytest.approx(1.5 * np.pi)

    def quadrants(name: str) -> list[int]:
        body, _, _ = parts(name)
        cells = [(int(y >= size / 2), int(x >= size / 2)) for y, x in body]
        order = [(0, 0), (0, 1), (1, 1), (1, 0)]  # clockwise
        visits = [order.index(c) for i, c in enumerate(cells) if i == 0 or c != cells[i - 1]]
        return [(v - visits[0]) % 4 for v in visits]  # relative to the first quadrant

    assert quadrants("hop_cw") == [0, 1, 2, 3]
    assert quadrants("hop_ccw") == [0, 3, 2, 1]
    assert quadrants("hop_diagonal") == [0, 2, 0, 2]
    assert quadrants("jump_within") == [0]
    assert quadrants("jump_adjacent") in ([0, 1, 0, 1], [0, 3, 0, 3])


def test_every_class_renders_at_every_difficulty() -> None:
    for difficulty in ("easy", "medium", "hard"):
        for name in SYNTH_CLASSES:
            video = render_video(name, np.random.default_rng(3), frames=8, size=32, difficulty=difficulty)
            assert video.shape == (8, 32, 32, 3) and video.dtype == np.uint8 and video.std() > 5


def test_config_errors_name_the_bad_value(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="difficulty must be one of easy, medium, hard; got 'extreme'"):
        SynthConfig(difficulty="extreme")
    with pytest.raises(ValueError, match=r"classes must be at least 2 distinct names from rise, .*; got \['rise'\]"):
        SynthConfig(classes=("rise",))
    with pytest.raises(ValueError, match="leaves a split empty"):
        SynthConfig(videos_per_class=2)
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(ValueError, match="is not empty and holds no synth.json"):
        generate(tmp_path, SynthConfig(classes=("rise", "fall"), **TINY))


def test_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli"
    assert main(["synth", "--out", str(out), "--classes", "turn_cw", "turn_ccw", "--videos-per-class", "5",
                 "--frames", "16", "--size", "32", "--difficulty", "hard", "--no-progress", "--workers", "1"]) == 0
    assert "wrote 10 mp4 videos (6 train, 2 val, 2 test) in 2 classes" in capsys.readouterr().out
    assert main(["synth", "--out", str(out), "--classes", "turn_cw", "spin"]) == 2
    assert "classes must be at least 2 distinct names" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- ClipDataset


def test_clip_dataset_items(tiny_set) -> None:
    test = ClipDataset(tiny_set.index("test"), train=False, frames=8, size=32, clips_per_video=2)
    assert len(test) == 6
    item = test[3]  # video 1, clip 1
    assert item["clip"].shape == (3, 8, 32, 32) and item["clip"].dtype == torch.float32
    assert (item["label"], item["video_id"], item["clip_index"], item["index"], item["replaced"]) == (
        1, "fall/fall_test_000", 1, 3, "")
    assert torch.equal(test[3]["clip"], item["clip"])  # test items are deterministic
    train = ClipDataset(tiny_set.index("train"), train=True, frames=8, size=32)
    torch.manual_seed(0)
    a = train[0]["clip"]
    torch.manual_seed(0)
    assert torch.equal(train[0]["clip"], a)  # train items repeat under torch.manual_seed
    loader = torch.utils.data.DataLoader(train, batch_size=4)
    batch = next(iter(loader))
    assert batch["clip"].shape == (4, 3, 8, 32, 32) and batch["label"].tolist() == [0, 0, 0, 1]


def test_flipped_training_clips_take_the_mirror_image_label(tmp_path: Path) -> None:
    summary = generate(tmp_path / "set", SynthConfig(classes=("slide_left", "slide_right", "rise"), **TINY))
    index = summary.index("train")
    mirror = ClipDataset(index, train=True, frames=8, size=32)
    assert mirror.mirrored == [1, 0, 2]
    torch.manual_seed(0)
    items = [mirror[i] for i in range(len(mirror))]
    assert {item["flipped"] for item in items} == {True, False}
    for record, item in zip(index.videos, items):
        assert item["label"] == ([1, 0, 2][record.label] if item["flipped"] else record.label)
    torch.manual_seed(0)
    plain = [ClipDataset(index, train=True, frames=8, size=32, flip="off")[i] for i in range(len(mirror))]
    assert [item["label"] for item in plain] == [r.label for r in index.videos] and not any(i["flipped"] for i in plain)
    first_flipped = next(i for i, item in enumerate(items) if item["flipped"])
    torch.testing.assert_close(plain[first_flipped]["clip"].flip(-1), items[first_flipped]["clip"])
    torch.manual_seed(0)
    kept = [ClipDataset(index, train=True, frames=8, size=32, flip="plain")[i] for i in range(len(mirror))]
    assert [item["flipped"] for item in kept] == [item["flipped"] for item in items]
    assert [item["label"] for item in kept] == [r.label for r in index.videos]
    with pytest.raises(ValueError, match="flip must be one of mirror, plain, off; got 'mirrored'"):
        ClipDataset(index, train=True, flip="mirrored")


def test_broken_video_is_replaced_by_its_neighbour(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    summary = generate(tmp_path / "set", SynthConfig(classes=("rise", "fall"), **TINY))
    index = summary.index("test")
    index.videos[0].path.write_bytes(b"\x00garbage" * 100)
    dataset = ClipDataset(index, train=False, frames=8, size=32)
    with caplog.at_level(logging.WARNING):
        item = dataset[0]
    assert (item["video_id"], item["label"], item["replaced"]) == ("fall/fall_test_000", 1, "rise/rise_test_000")
    assert list(dataset.failures) == [str(index.videos[0].path)]
    assert "skipping undecodable video" in caplog.text and "cannot be opened as a video" in caplog.text
    assert dataset.failure_summary().startswith("1 undecodable videos replaced by neighbours")
    index.videos[1].path.write_bytes(b"")
    with pytest.raises(VideoError, match="no video of folders test: 2 videos .* could be decoded"):
        dataset[1]
