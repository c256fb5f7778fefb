"""One check decides whether two checkpoints can be compared, for the app and the commands alike."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from kpsem.pairing import check_pair, require_pair


def _info(**changes: object) -> SimpleNamespace:
    info = dict(arch="mfnet", clip_frames=16, clip_size=96, num_classes=3, class_names=["a", "b", "c"],
                mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2))
    info.update(changes)
    # the registry's answers, as describe_checkpoint fills them
    info.update(has_kpsem=info["arch"] == "mf_kpsem", baseline_arch="mfnet", baseline_name="MFNet")
    return SimpleNamespace(**info)


def test_a_matching_pair_passes_with_no_notes() -> None:
    check = check_pair(_info(), _info(arch="mf_kpsem"))
    assert check.ok and check.errors == [] and check.warnings == []


def test_what_blocks_and_what_only_informs() -> None:
    check = check_pair(_info(), _info(arch="mf_kpsem", clip_frames=8, class_names=["a", "b", "z"]))
    assert check.errors == ["the checkpoints read different clips: 16 frames of 96 px (baseline) and 8 frames of "
                            "96 px (KPSEM); choose two that read the same clips"]
    assert check.warnings == ["the checkpoints name their classes differently; the KPSEM checkpoint's names are shown"]
    other = check_pair(_info(arch="mf_kpsem"), _info(num_classes=5, class_names=list("abcde")))
    assert other.errors == ["the checkpoints predict 3 and 5 classes; choose two models of the same data set"]
    assert other.warnings[0] == "the baseline slot holds an mf_kpsem checkpoint; the paper's baseline is MFNet"


def test_commands_raise_the_first_blocking_problem() -> None:
    expected = (r"^the checkpoints predict 3 and 5 classes; choose two models of the same data set "
                r"\(explain compares two models of one data set on the same clips\)$")
    with pytest.raises(ValueError, match=expected):
        require_pair(_info(), _info(arch="mf_kpsem", num_classes=5, class_names=list("abcde")), task="explain")
    assert require_pair(_info(), _info(arch="mf_kpsem", std=(0.3, 0.3, 0.3)), task="faithfulness").warnings == [
        "the checkpoints normalise clips differently; the KPSEM checkpoint's normalisation is used"]
