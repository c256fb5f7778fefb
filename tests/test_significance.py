"""Significance of a comparison: McNemar's exact test, Wilson and bootstrap intervals, several runs, the
refusal of tables that were not made alike, and what `kpsem compare` writes. Numbers are worked out by
hand in the comments."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import BarContainer

from kpsem.cli import main
from kpsem.evaluate import predictions_table
from kpsem.explain.compare import compare_predictions, paired_significance, per_class_accuracy
from kpsem.explain.figures import figure_per_class_accuracy
from kpsem.explain.significance import (
    PairedSignificance,
    bootstrap_difference,
    format_p,
    mcnemar_exact,
    summarise_runs,
    wilson_interval,
)

CLASSES = ["run", "jump", "wave"]
Z2 = 1.959963984540054**2  # 3.841459


def _table(model_id: str, rows: list[tuple[str, int, int]], *, classes: list[str] = CLASSES,
           clips: int = 1) -> pd.DataFrame:
    """An `evaluate` table: every clip of video (id, true label, predicted label) puts 0.7 on the prediction."""
    probs, labels, videos, indices = [], [], [], []
    for video, label, pred in rows:
        for clip in range(clips):
            p = np.full(len(classes), 0.3 / (len(classes) - 1))
            p[pred] = 0.7
            probs.append(p)
            labels.append(label)
            videos.append(video)
            indices.append(clip)
    return predictions_table(np.stack(probs), labels, videos, indices, class_names=classes, model_id=model_id)


def _pair(outcomes: list[tuple[int, bool, bool]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(true label, baseline right, KPSEM right) per video -> the two tables (a wrong answer is the next class)."""
    rows_b, rows_k = [], []
    for i, (label, right_b, right_k) in enumerate(outcomes):
        wrong = (label + 1) % len(CLASSES)
        rows_b.append((f"v{i:02d}", label, label if right_b else wrong))
        rows_k.append((f"v{i:02d}", label, label if right_k else wrong))
    return _table("mfnet", rows_b), _table("mf_kpsem", rows_k)


# --- McNemar --------------------------------------------------------------------------------------


def test_mcnemar_exact_by_hand():
    # 5 fixed, 0 broken: n = 5, P(X <= 0) = 1/32, p = 2/32 = 0.0625 exactly (and either way round).
    assert mcnemar_exact(5, 0) == 0.0625 and mcnemar_exact(0, 5) == 0.0625
    # 1 and 1: n = 2, P(X <= 1) = (1 + 2)/4 = 3/4, 2 * 3/4 = 1.5, capped at 1.
    assert mcnemar_exact(1, 1) == 1.0
    # 10 fixed, 2 broken: n = 12, P(X <= 2) = (C(12,0) + C(12,1) + C(12,2))/2^12 = (1 + 12 + 66)/4096 = 79/4096,
    # p = 158/4096 = 0.03857421875.
    assert mcnemar_exact(10, 2) == 158 / 4096 == 0.03857421875
    # 7 and 1: P(X <= 1) = (1 + 8)/256, p = 18/256 = 0.0703125.
    assert mcnemar_exact(7, 1) == 0.0703125
    assert mcnemar_exact(0, 0) == 1.0  # the models never disagree: no evidence either way
    # Many discordant pairs still come out exact and finite: 1200 vs 1000 has n = 2200 (2^2200 overflows a float).
    assert 0 < mcnemar_exact(1200, 1000) < 1e-4


def test_mcnemar_rejects_non_counts():
    with pytest.raises(ValueError, match=r"^fixed must be a count \(an integer >= 0\); got -1$"):
        mcnemar_exact(-1, 2)
    with pytest.raises(ValueError, match=r"^broken must be a count \(an integer >= 0\); got 1.5$"):
        mcnemar_exact(2, 1.5)


def test_format_p_never_rounds_across_the_level():
    assert format_p(0.0625) == "0.0625" and format_p(1.0) == "1" and format_p(0.03857421875) == "0.03857"
    assert format_p(0.0499996) == "0.0499996"  # 4 digits would read 0.05 beside "significant"
    assert format_p(0.05) == "0.05"  # exactly at the level: not below it, so not significant


# --- Wilson ---------------------------------------------------------------------------------------


def test_wilson_interval_by_hand():
    # 8/8: p = 1, so the centre and half-width add up to exactly 1 and the low end is n/(n + z^2)
    # = 8/(8 + 3.841459) = 8/11.841459 = 0.675592.
    low, high = wilson_interval(8, 8)
    assert low == pytest.approx(0.675592, abs=1e-4) and high == 1.0
    # 4/8: centre (0.5 + z^2/16)/(1 + z^2/8) = 0.5; half = z/(1 + z^2/8) * sqrt(0.25/8 + z^2/256)
    # = 1.959964/1.480182 * sqrt(0.03125 + 0.0150057) = 1.324137 * 0.215072 = 0.284785.
    low, high = wilson_interval(4, 8)
    assert low == pytest.approx(0.5 - 0.284785, abs=1e-4) and high == pytest.approx(0.5 + 0.284785, abs=1e-4)
    assert wilson_interval(0, 8) == pytest.approx((0.0, 1 - 8 / (8 + Z2)))  # the mirror image of 8/8
    with pytest.raises(ValueError, match=r"^a Wilson interval needs at least one trial; got n = 0$"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match=r"^successes must be an integer from 0 to n = 8; got 9$"):
        wilson_interval(9, 8)


# --- bootstrap ------------------------------------------------------------------------------------


def test_bootstrap_when_the_difference_cannot_move():
    agree = np.array([True, False, True, True, False])
    assert bootstrap_difference(agree, agree) == (0.0, 0.0)  # both models agree on every video
    # Every video fixed: every resample has difference 1, whatever it draws.
    assert bootstrap_difference(np.zeros(6, bool), np.ones(6, bool), resamples=500) == (1.0, 1.0)


def test_bootstrap_is_seeded_and_matches_binomial_quantiles():
    # 16 videos, 2 fixed, 0 broken: a resample's difference is (fixed drawn)/16 with fixed drawn ~ Bin(16, 1/8).
    # P(0) = (7/8)^16 = 0.1181 > 0.025, so the low end is 0; P(<= 4) = 0.9593 < 0.975 < P(<= 5) = 0.9900,
    # so the high end is 5/16 = 0.3125 (both ends are 10 standard errors of 10000 resamples from a switch).
    right_b = np.array([False, False] + [True] * 10 + [False] * 4)
    right_k = np.array([True, True] + [True] * 10 + [False] * 4)
    assert bootstrap_difference(right_b, right_k, seed=3) == (0.0, 0.3125)
    # Same seed, same interval; another seed draws other resamples (here a different 99% interval).
    mixed_b = np.array([True, False] * 20)
    mixed_k = np.array([True, True, False, True] * 10)
    first = bootstrap_difference(mixed_b, mixed_k, resamples=2000, seed=7, confidence=0.99)
    assert bootstrap_difference(mixed_b, mixed_k, resamples=2000, seed=7, confidence=0.99) == first
    assert bootstrap_difference(mixed_b, mixed_k, resamples=2000, seed=8, confidence=0.99) != first


def test_bootstrap_equals_resampling_videos_one_by_one():
    # The reference resamples video indices literally; the counts-only draw must give the same interval.
    rng = np.random.default_rng(123)
    right_b, right_k = rng.random(40) < 0.6, rng.random(40) < 0.75
    draws = np.random.default_rng(0).integers(0, 40, size=(20000, 40))  # (R, videos)
    literal = right_k[draws].mean(axis=1) - right_b[draws].mean(axis=1)
    reference = np.quantile(literal, [0.025, 0.975])
    assert np.allclose(bootstrap_difference(right_b, right_k, resamples=20000, seed=1), reference, atol=1 / 40)


def test_bootstrap_errors():
    with pytest.raises(ValueError, match=r"^need one right/wrong flag per video for each model, at least one "
                                         r"video; got shapes \(3,\) and \(2,\)$"):
        bootstrap_difference([True] * 3, [True] * 2)
    with pytest.raises(ValueError, match=r"^resamples must be a positive integer; got 0$"):
        bootstrap_difference([True], [False], resamples=0)


# --- two tables -----------------------------------------------------------------------------------


def test_sentence_for_five_fixed_none_broken():
    # 8 videos: both right on 2, both wrong on 1, KPSEM alone right on 5.
    baseline, kpsem = _pair([(0, True, True), (1, True, True), (2, False, False)] + [(i % 3, False, True)
                                                                                     for i in range(5)])
    result = paired_significance(compare_predictions(baseline, kpsem), resamples=1000)
    assert (result.fixed, result.broken, result.items) == (5, 0, 8)
    assert result.sentence == "not significant at 5%: McNemar exact p = 0.0625 (5 fixed, 0 broken), 8 videos"
    assert result.difference == 5 / 8 and not result.significant
    assert result.caveats == ["all 5 disagreements go one way, so no resample can reverse the difference and the "
                              "bootstrap interval cannot reach below zero: the verdict is the exact test's"]
    # One more fixed video: n = 6, p = 2/64 = 0.03125.
    baseline, kpsem = _pair([(0, True, True)] + [(i % 3, False, True) for i in range(6)])
    assert paired_significance(compare_predictions(baseline, kpsem), resamples=1000).sentence == (
        "significant at 5%: McNemar exact p = 0.03125 (6 fixed, 0 broken), 7 videos")


def test_mean_class_accuracy_on_an_unbalanced_table():
    # run: 3 videos, jump: 1. Baseline: run 3/3, jump 0/1 -> top-1 3/4 = 0.75, mean class (1 + 0)/2 = 0.5.
    # KPSEM: run 2/3, jump 1/1 -> top-1 3/4 = 0.75, mean class (2/3 + 1)/2 = 5/6. One fixed, one broken: p = 1.
    baseline, kpsem = _pair([(0, True, True), (0, True, True), (0, True, False), (1, False, True)])
    result = paired_significance(compare_predictions(baseline, kpsem), resamples=200)
    assert (result.top1_baseline, result.top1_kpsem) == (0.75, 0.75)
    assert result.mean_class_baseline == 0.5 and result.mean_class_kpsem == pytest.approx(5 / 6)
    assert (result.fixed, result.broken, result.p_value) == (1, 1, 1.0)


def test_per_class_table_has_wilson_columns():
    # run: 4 videos, baseline 4/4 and KPSEM 2/4; wave: 8 videos, baseline 4/8 and KPSEM 8/8.
    baseline, kpsem = _pair([(0, True, True)] * 2 + [(0, True, False)] * 2 + [(2, False, True)] * 4
                            + [(2, True, True)] * 4)
    table = per_class_accuracy(compare_predictions(baseline, kpsem))
    assert table.columns.tolist() == ["class_index", "class_name", "count", "baseline", "kpsem", "difference",
                                      "baseline_wilson_low", "baseline_wilson_high", "kpsem_wilson_low",
                                      "kpsem_wilson_high"]
    wave = table.iloc[0]  # the largest gain first
    assert wave["class_name"] == "wave" and (wave["baseline"], wave["kpsem"]) == (0.5, 1.0)
    assert wave["baseline_wilson_low"] == pytest.approx(0.215215, abs=1e-4)  # 4/8, as above
    assert wave["kpsem_wilson_low"] == pytest.approx(8 / (8 + Z2)) and wave["kpsem_wilson_high"] == 1.0
    run = table.iloc[1]
    assert run["baseline_wilson_low"] == pytest.approx(4 / (4 + Z2))  # 4/4 -> n/(n + z^2) = 0.510

    figure = figure_per_class_accuracy(table, intervals=True)
    bars = [c for c in figure.figure.axes[0].containers if isinstance(c, BarContainer)]  # baseline, KPSEM
    segments = bars[0].errorbar.lines[2][0].get_segments()  # one class (wave) wins: one whisker per model
    assert np.allclose(segments[0][:, 1], [21.5215, 78.4785], atol=1e-2)  # whisker from low to high, in %
    assert figure.settings["intervals"] == "Wilson 95%"
    assert "whiskers: Wilson 95%" in figure.figure.axes[0].get_title(loc="left")
    with pytest.raises(ValueError, match=r"^interval whiskers need the columns baseline_wilson_low, "
                                         r"baseline_wilson_high, kpsem_wilson_low, kpsem_wilson_high"):
        figure_per_class_accuracy(table[["class_index", "class_name", "count", "baseline", "kpsem", "difference"]],
                                  intervals=True)


def test_tables_made_differently_are_refused():
    rows = [("v1", 0, 0), ("v2", 1, 1), ("v3", 2, 2), ("v4", 0, 1)]
    baseline = _table("mfnet", rows)
    with pytest.raises(ValueError, match=r"^the baseline table has 4 videos, the KPSEM table 3: "
                                         r"missing from KPSEM: \['v4'\]$"):
        compare_predictions(baseline, _table("mf_kpsem", rows[:3]))
    others = [(f"x{i}", 0, 0) for i in range(7)]
    with pytest.raises(ValueError, match=r"^the baseline table has 4 videos, the KPSEM table 11: missing from "
                                         r"the baseline: \['x0', 'x1', 'x2', 'x3', 'x4', \.\.\.\] \(7 in all\)$"):
        compare_predictions(baseline, _table("mf_kpsem", rows + others))
    with pytest.raises(ValueError, match=r"^the baseline table has 4 videos, the KPSEM table 4: missing from KPSEM: "
                                         r"\['v4'\]; missing from the baseline: \['x0'\]$"):
        compare_predictions(baseline, _table("mf_kpsem", rows[:3] + others[:1]))
    renamed = ["run", "fall", "wave"]
    with pytest.raises(ValueError, match=r"^class lists differ at index 1: 'jump' vs 'fall'$"):
        compare_predictions(baseline, _table("mf_kpsem", rows, classes=renamed))
    with pytest.raises(ValueError, match=r"^class lists differ in length: the baseline table has 3 classes, "
                                         r"the KPSEM table 4$"):
        compare_predictions(baseline, _table("mf_kpsem", rows, classes=[*CLASSES, "clap"]))
    with pytest.raises(ValueError, match=r"^clips per video differ: 1 vs 2$"):
        compare_predictions(baseline, _table("mf_kpsem", rows, clips=2))
    video_only = _table("mf_kpsem", rows).query("level == 'video'")
    with pytest.raises(ValueError, match=r"^levels differ: the baseline table has \['clip', 'video'\], "
                                         r"the KPSEM table \['video'\]$"):
        compare_predictions(baseline, video_only)
    stated = _table("mf_kpsem", rows)
    stated.attrs["kpsem"] = {"class_names": ["run", "jump", "clap"]}  # what `evaluate` records in the file
    with pytest.raises(ValueError, match=r"^class lists differ at index 2: 'wave' vs 'clap'$"):
        compare_predictions(baseline, stated)


# --- several runs ---------------------------------------------------------------------------------


def _run(top1_b: float, top1_k: float, mean_b: float, mean_k: float, p: float) -> PairedSignificance:
    return PairedSignificance(level="video", baseline_id="b", kpsem_id="k", items=10, top1_baseline=top1_b,
                              top1_kpsem=top1_k, mean_class_baseline=mean_b, mean_class_kpsem=mean_k, fixed=1,
                              broken=0, p_value=p, ci_low=0.0, ci_high=0.1, resamples=100, seed=0)


def test_mean_and_std_across_runs_by_hand():
    # top-1 baseline 0.5, 0.7: mean 0.6, std sqrt((0.1^2 + 0.1^2)/(2 - 1)) = 0.141421.
    # top-1 KPSEM 0.6, 1.0: mean 0.8, std sqrt(2 * 0.2^2) = 0.282843. Difference 0.1, 0.3: mean 0.2, std 0.141421.
    # Mean class: baseline 0.4, 0.4 (std 0); KPSEM 0.5, 0.8 -> difference 0.1, 0.4: mean 0.25, std 0.212132.
    summary = summarise_runs([_run(0.5, 0.6, 0.4, 0.5, 0.01), _run(0.7, 1.0, 0.4, 0.8, 0.2)])
    assert summary.runs == 2 and summary.significant_runs == 1
    assert summary.mean["top1_baseline"] == pytest.approx(0.6)
    assert summary.std["top1_baseline"] == pytest.approx(0.141421, abs=1e-6)
    assert summary.mean["top1_kpsem"] == pytest.approx(0.8)
    assert summary.std["top1_kpsem"] == pytest.approx(0.282843, abs=1e-6)
    assert summary.mean["difference"] == pytest.approx(0.2)
    assert summary.std["difference"] == pytest.approx(0.141421, abs=1e-6)
    assert summary.std["mean_class_baseline"] == 0.0
    assert summary.mean["mean_class_difference"] == pytest.approx(0.25)
    assert summary.std["mean_class_difference"] == pytest.approx(0.212132, abs=1e-6)
    assert summary.describe("top1_kpsem") == "80.0% ± 28.3" and summary.describe("difference") == "+20.0 ± 14.1 points"
    one = summarise_runs([_run(0.5, 0.6, 0.4, 0.5, 0.01)])
    assert one.std["difference"] is None and one.describe("difference") == "+10.0 points"


# --- the command ----------------------------------------------------------------------------------

RUN_FIELDS = {"run", "baseline", "kpsem", "folder", "level", "baseline_id", "kpsem_id", "items", "top1_baseline",
              "top1_kpsem", "top1_difference", "mean_class_baseline", "mean_class_kpsem", "mean_class_difference",
              "fixed", "broken", "mcnemar_p", "significant", "ci_low", "ci_high", "resamples", "seed", "confidence",
              "alpha", "sentence", "interval", "caveats"}


def test_compare_command_writes_significance(tmp_path, capsys):
    baseline, kpsem = _pair([(0, True, True), (1, True, True), (2, False, False)] + [(i % 3, False, True)
                                                                                     for i in range(5)])
    baseline.to_parquet(tmp_path / "a.parquet")
    kpsem.to_parquet(tmp_path / "b.parquet")
    out = tmp_path / "one"
    assert main(["compare", "--predictions", str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet"),
                 "--out", str(out), "--formats", "png", "--dpi", "40", "--resamples", "500", "--intervals"]) == 0
    printed = capsys.readouterr().out
    assert "not significant at 5%: McNemar exact p = 0.0625 (5 fixed, 0 broken), 8 videos" in printed
    document = json.loads((out / "significance.json").read_text())
    assert set(document) == {"test", "interval", "per_class_interval", "alpha", "confidence", "resamples", "seed",
                             "runs", "across_runs"}
    (record,) = document["runs"]
    assert set(record) == RUN_FIELDS
    assert (record["fixed"], record["broken"], record["mcnemar_p"], record["folder"]) == (5, 0, 0.0625, ".")
    assert record["top1_baseline"] == 2 / 8 and record["top1_kpsem"] == 7 / 8 and record["resamples"] == 500
    assert document["across_runs"]["top1_difference"] == {"mean": 5 / 8, "std": None}
    csv = pd.read_csv(out / "per_class_accuracy.csv")
    assert "kpsem_wilson_high" in csv.columns and (out / "fig7_per_class_wins.png").is_file()

    # Two runs, paired by order: run 2 (on other videos, as another split would be) has baseline 2/4, KPSEM 3/4.
    # Top-1 baseline 2/8 and 2/4: mean 0.375, std sqrt(2 * 0.125^2) = 0.176777; KPSEM 7/8 and 3/4: mean 0.8125,
    # std sqrt(2 * 0.0625^2) = 0.088388; difference 5/8 and 1/4: mean 0.4375, std sqrt(2 * 0.1875^2) = 0.265165.
    second_b, second_k = _pair([(0, True, True), (1, True, True), (2, False, True), (0, False, False)])
    second_b.to_parquet(tmp_path / "c.parquet")
    second_k.to_parquet(tmp_path / "d.parquet")
    out = tmp_path / "runs"
    assert main(["compare", "--baseline", str(tmp_path / "a.parquet"), str(tmp_path / "c.parquet"),
                 "--kpsem", str(tmp_path / "b.parquet"), str(tmp_path / "d.parquet"), "--out", str(out),
                 "--formats", "png", "--dpi", "40", "--resamples", "500"]) == 0
    printed = capsys.readouterr().out
    assert "across 2 runs (mean ± standard deviation):" in printed
    assert "top-1: baseline 37.5% ± 17.7, KPSEM 81.2% ± 8.8, difference +43.8 ± 26.5 points" in printed
    assert "significant at 5% (McNemar exact) in 0 of 2 runs" in printed
    document = json.loads((out / "significance.json").read_text())
    assert [r["folder"] for r in document["runs"]] == ["run_1", "run_2"]
    assert [r["kpsem"] for r in document["runs"]] == [str(tmp_path / "b.parquet"), str(tmp_path / "d.parquet")]
    assert document["runs"][1]["sentence"] == "not significant at 5%: McNemar exact p = 1 (1 fixed, 0 broken), 4 videos"
    across = document["across_runs"]
    assert across["runs"] == 2 and across["significant_runs"] == 0
    assert across["top1_baseline"] == {"mean": 0.375, "std": pytest.approx(0.176777, abs=1e-6)}
    assert across["top1_kpsem"]["std"] == pytest.approx(0.088388, abs=1e-6)
    assert across["top1_difference"] == {"mean": 0.4375, "std": pytest.approx(0.265165, abs=1e-6)}
    assert (out / "run_2" / "per_class_accuracy.csv").is_file() and (out / "run_1" / "summary.json").is_file()


@pytest.mark.parametrize(("argv", "message"), [
    (["--baseline", "a.parquet", "b.parquet", "--kpsem", "c.parquet"],
     "error: --baseline has 2 tables and --kpsem 1; runs are paired by order, so give as many of each"),
    (["--predictions", "a.parquet", "b.parquet", "--kpsem", "c.parquet"],
     "error: give either --predictions BASELINE KPSEM or --baseline ... --kpsem ..., not both"),
    (["--baseline", "a.parquet"],
     "error: give the tables: --predictions BASELINE KPSEM, or --baseline A1 [A2 ...] --kpsem B1 [B2 ...]"),
    (["--predictions", "a.parquet", "b.parquet", "--resamples", "0"],
     "error: --resamples must be a positive integer; got 0"),
])
def test_compare_command_errors(tmp_path, capsys, argv, message):
    assert main(["compare", *argv, "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == message


def test_compare_command_names_the_run_that_cannot_be_compared(tmp_path, capsys):
    rows = [("v1", 0, 0), ("v2", 1, 1)]
    _table("mfnet", rows).to_parquet(tmp_path / "a.parquet")
    _table("mf_kpsem", rows).to_parquet(tmp_path / "b.parquet")
    _table("mf_kpsem", rows, clips=2).to_parquet(tmp_path / "c.parquet")
    a, b, c = (str(tmp_path / f"{n}.parquet") for n in "abc")
    assert main(["compare", "--baseline", a, a, "--kpsem", b, c, "--out", str(tmp_path / "out"), "--formats", "png",
                 "--dpi", "40", "--resamples", "100"]) == 2
    assert capsys.readouterr().err.strip() == f"error: run 2 ({a} vs {c}): clips per video differ: 1 vs 2"
