"""Design studies: plans, the study loop (resume after a kill), the results table, Table 2 by hand, the page."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_BACKBONE, write_frame_folders

import kpsem.study as study_module
from kpsem.checkpoint import load_checkpoint
from kpsem.evaluate import predictions_table, read_predictions
from kpsem.explain.significance import bootstrap_difference
from kpsem.study import (
    MODEL_OPTIONS,
    RESULT_COLUMNS,
    PlanError,
    StudyConfig,
    design_panels,
    design_table,
    load_plan,
    parse_plan,
    run_state,
    run_study,
    select_variants,
    shipped_plans,
    skipped_variants,
)

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]


def _tiny_plan(**base) -> dict:
    """Two variants on a tiny backbone, 8x32x32 clips, one epoch of 2 steps (9 videos, batch 4)."""
    return {"name": "tiny", "baseline": "mfnet", "seeds": [0, 1], "eval_clips": 1,
            "base": {**{k: list(v) for k, v in TINY_BACKBONE.items()}, "frames": 8, "size": 32, "epochs": 1,
                     "batch_size": 4, "workers": 0, "log_every": 1, "lr_steps": [1], **base},
            "variants": [{"name": "mfnet", "label": "MFNet", "overrides": {"arch": "mfnet"}},
                         {"name": "mf_kpsem", "label": "MF-KPSEM", "overrides": {"arch": "mf_kpsem"}}]}


def _write_plan(folder: Path, plan: dict) -> Path:
    path = folder / f"{plan['name']}.json"
    path.write_text(json.dumps(plan))
    return path


def _config(plan: Path, data: Path, out: Path, **options) -> StudyConfig:
    return StudyConfig(plan=str(plan), data=str(data), out=str(out), progress=False, resamples=200, **options)


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory) -> Path:
    """A finished tiny study: 2 variants x 2 seeds on the frame-folder data set."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("study")
    write_frame_folders(folder / "frames")
    plan = _write_plan(folder, _tiny_plan())
    run_study(_config(plan, folder / "frames", folder / "out"))
    torch.set_num_threads(before)
    return folder / "out"


# --- plans ---------------------------------------------------------------------------------------------------


def test_shipped_plans_are_package_data_and_mark_what_this_build_cannot_run():
    assert set(shipped_plans()) == {"table2", "fig5", "synthetic", "centres"}
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "plans/*.toml" in package_data["kpsem"]  # shipped with the wheel, not only in a checkout

    table2 = load_plan("table2")
    assert [v.name for v in table2.variants] == ["mfnet", "mf_kpsem", "single_key_point", "fixed_regions",
                                                 "one_set", "r3d", "r3d_kpsem"]
    assert table2.base["batch_size"] == 16 and table2.base["lr"] == 0.005 and table2.seeds == (0, 1, 2)
    assert table2.baseline_of(table2.variant("r3d_kpsem")) == "r3d"  # R3D-KPSEM is compared with R3D
    assert table2.baseline_of(table2.variant("one_set")) == "mfnet"
    assert table2.baseline_of(table2.variant("mfnet")) is None
    assert skipped_variants(table2) == {}  # R3D-50 and R3D-50-KPSEM are registered (kpsem/models/r3d.py)
    assert study_module.run_config(table2, table2.variant("r3d_kpsem"), seed=0, data="d", out="o").arch == "r3d50_kpsem"

    fig5 = load_plan("fig5")
    assert skipped_variants(fig5) == {}  # K = 9 and 16 build (the 3x3 and 4x4 grids)
    assert study_module.run_config(fig5, fig5.variant("k16"), seed=0, data="d", out="o").model_options == {
        "num_regions": 16}

    synthetic = load_plan("synthetic")
    assert len(synthetic.variants) == 5 and synthetic.seeds == (0, 1, 2)
    config = study_module.run_config(synthetic, synthetic.variant("one_set"), seed=2, data="d", out="o")
    assert (config.frames, config.size, config.widths, config.model_options) == (8, 64, (48, 96, 192, 384),
                                                                                  {"num_sets": 1})
    assert config.val_split is None and config.resume == "auto" and config.seed == 2
    mfnet = study_module.run_config(synthetic, synthetic.variant("mfnet"), seed=0, data="d", out="o")
    assert mfnet.model_options == {}  # the base's MF-KPSEM options never reach an MFNet


def test_fig5_panels_group_variants_and_average_over_seeds():
    plan = load_plan("fig5")
    results = pd.DataFrame({"variant": ["mfnet", "mfnet", "g1", "g1", "mf_kpsem"], "seed": [0, 1, 0, 1, 0],
                            "top1": [0.70, 0.72, 0.60, 0.70, 0.75]})
    panels = {p.option: p for p in design_panels(plan, results, skipped=skipped_variants(plan))}
    assert panels["insert_after"].ticks == ["conv2", "conv3", "conv4", "conv5"]
    assert panels["num_regions"].ticks == ["1", "4", "9", "16"]
    assert panels["num_sets"].ticks == ["1", "2", "4", "8", "16"]
    assert panels["embed_dim"].ticks == ["6", "12", "24", "48"]
    sets = panels["num_sets"]
    g1 = sets.points.set_index("tick").loc["1"]
    assert (g1["mean"], g1["seeds"]) == (pytest.approx(0.65), 2)
    assert g1["std"] == pytest.approx(math.sqrt(0.05**2 * 2))  # (0.60, 0.70): n - 1 in the denominator
    assert math.isnan(sets.points.set_index("tick").loc["8", "std"])  # one seed: no spread
    assert sets.missing == {"2": "no run yet", "4": "no run yet", "16": "no run yet"}
    assert panels["num_regions"].missing == {"1": "no run yet", "9": "no run yet", "16": "no run yet"}
    assert panels["num_regions"].points["tick"].tolist() == ["4"]  # plain MF-KPSEM is on every panel
    assert sets.baseline[0] == "MFNet" and sets.baseline[1] == pytest.approx(0.71)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p["variants"][1]["overrides"].update(num_region=1),
         "plan 'tiny', variant 'mf_kpsem': unknown override key 'num_region' (did you mean 'num_regions'?); an "
         "override sets a TrainConfig field (kpsem.train.TrainConfig) or an MF-KPSEM option ("
         + ", ".join(MODEL_OPTIONS) + ")"),
        (lambda p: p["base"].update(seed=3),
         "plan 'tiny', base: 'seed' is set by the study command (--data, --out, --seeds, --split-id, --layout, "
         "--annotations), not by a plan"),
        (lambda p: p.update(baseline="resnet"),
         "plan 'tiny': baseline 'resnet' is not one of its variants (mfnet, mf_kpsem)"),
        (lambda p: p["variants"].append({"name": "mfnet"}),
         "plan 'tiny', variant 'mfnet': two variants have this name"),
        (lambda p: p["variants"][1]["overrides"].update(lr=-1.0), "plan 'tiny', variant 'mf_kpsem': lr must be "
                                                                  "positive; got -1.0"),
        (lambda p: p.update(epochs=3), "plan 'tiny': unknown key 'epochs'; a plan has name, description, baseline, "
                                       "seeds, eval_split, eval_clips, base, variants"),
    ],
    ids=["unknown-override-key", "reserved-key", "unknown-baseline", "duplicate-variant", "bad-value", "top-level"],
)
def test_plan_errors_name_the_plan_the_variant_and_the_key(change, message):
    plan = _tiny_plan()
    change(plan)
    with pytest.raises(PlanError) as error:
        parse_plan(plan)
    assert str(error.value) == message


def test_only_unknown_variants_and_unknown_plans_are_refused_with_the_choices(tmp_path, capsys):
    plan = parse_plan(_tiny_plan())
    assert [v.name for v in select_variants(plan, ["mf_kpsem"])] == ["mf_kpsem"]
    with pytest.raises(PlanError) as error:
        select_variants(plan, ["mf_kpsem", "k9", "g 2"])
    assert str(error.value) == "--only: plan 'tiny' has no variant 'k9', 'g 2'; its variants: mfnet, mf_kpsem"

    from kpsem.cli import main

    assert main(["study", "--plan", "table3", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == ("error: no plan 'table3': give a shipped plan (centres, fig5, synthetic, "
                                       "table2) or the path of a .toml or .json plan file\n")
    assert main(["study", "--plan", "table2", "--data", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--only", "one_sets"]) == 2
    assert capsys.readouterr().err.startswith("error: --only: plan 'table2' has no variant 'one_sets'; its variants: "
                                              "mfnet, mf_kpsem, single_key_point, fixed_regions, one_set, r3d")


def test_a_refused_variant_without_requires_is_an_error_not_a_skip():
    plan = _tiny_plan()
    plan["variants"].append({"name": "k25", "overrides": {"arch": "mf_kpsem", "num_regions": 25}})
    with pytest.raises(PlanError, match=re.escape("plan 'tiny', variant 'k25': the model refuses its settings: "
                                                  "num_regions must be one of (1, 4, 9, 16); got 25")):
        skipped_variants(parse_plan(plan))
    plan["variants"][-1]["requires"] = "K = 25"
    assert skipped_variants(parse_plan(plan)) == {"k25": "skipped: needs K = 25 (the model refuses its settings: "
                                                         "num_regions must be one of (1, 4, 9, 16); got 25)"}


# --- the study loop ------------------------------------------------------------------------------------------


def test_results_table_has_one_row_per_run_with_the_measured_figures(finished_study):
    results = pd.read_csv(finished_study / "results.csv")
    assert list(results.columns) == list(RESULT_COLUMNS)
    assert list(pd.read_parquet(finished_study / "results.parquet").columns) == list(RESULT_COLUMNS)
    assert list(zip(results["variant"], results["seed"])) == [("mfnet", 0), ("mfnet", 1), ("mf_kpsem", 0),
                                                              ("mf_kpsem", 1)]
    assert set(results["split"]) == {1} and set(results["eval_split"]) == {"test"}
    assert set(results["videos"]) == {9} and set(results["clips_per_video"]) == {1} and set(results["epochs"]) == {1}
    for row in results.itertuples():
        run = finished_study / row.run
        assert run_state(run) == "done"
        videos = read_predictions(run / "predictions.parquet")
        videos = videos[videos["level"] == "video"]
        assert row.top1 == pytest.approx(videos["correct_top1"].mean())
        assert row.top5 == pytest.approx(videos["correct_top5"].mean())
        assert row.mean_class_accuracy == pytest.approx(videos.groupby("true_class")["correct_top1"].mean().mean())
        model = load_checkpoint(run / "final.pt").model
        assert row.parameters == sum(p.numel() for p in model.parameters())
        assert row.macs > 0 and row.wall_seconds == pytest.approx(row.train_seconds + row.eval_seconds)
    kpsem_params = results.loc[results["variant"] == "mf_kpsem", "parameters"]
    assert (kpsem_params > results.loc[results["variant"] == "mfnet", "parameters"].iloc[0]).all()
    for name in ("table2.csv", "table2.md", "table2.json", "fig5_design.png", "fig5_design.pdf", "fig5_design.svg",
                 "fig5_design.json", "plan.json"):
        assert (finished_study / name).is_file(), name
    table2 = pd.read_csv(finished_study / "table2.csv")
    assert list(table2["variant"]) == ["mfnet", "mf_kpsem"] and list(table2["paired_seeds"]) == [0, 2]
    sidecar = json.loads((finished_study / "fig5_design.json").read_text())
    assert sidecar["settings"]["plan"] == "tiny" and len(sidecar["settings"]["panels"]) == 4


class _KilledError(RuntimeError):
    pass


def test_a_killed_study_resumes_without_redoing_finished_runs(tmp_path, monkeypatch):
    write_frame_folders(tmp_path / "frames")
    plan = _write_plan(tmp_path, _tiny_plan(epochs=2, save_every=1))  # 4 steps a run, a checkpoint after each
    out = tmp_path / "out"
    trained, evaluated = [], []
    real_train, real_evaluate = study_module.train, study_module.evaluate_checkpoint

    def counting_train(config, **kwargs):
        trained.append(Path(config.out).relative_to(out).as_posix())
        result = real_train(config, **kwargs)
        trained[-1] += f" from {result.resumed_from.name}" if result.resumed_from else ""
        return result

    def counting_evaluate(checkpoint, **kwargs):
        evaluated.append(Path(checkpoint).parent.relative_to(out).as_posix())
        return real_evaluate(checkpoint, **kwargs)

    monkeypatch.setattr(study_module, "train", counting_train)
    monkeypatch.setattr(study_module, "evaluate_checkpoint", counting_evaluate)
    runs = ["runs/mfnet/seed_0", "runs/mf_kpsem/seed_0", "runs/mfnet/seed_1", "runs/mf_kpsem/seed_1"]

    def kill_third_run(step: int) -> None:
        if len(trained) == 3 and step == 3:
            raise _KilledError("killed in the middle of the third run's second epoch")

    with pytest.raises(_KilledError):
        run_study(_config(plan, tmp_path / "frames", out), on_step=kill_third_run)
    assert trained == runs[:3] and evaluated == runs[:2]
    assert [run_state(out / r) for r in runs] == ["done", "done", "partial", "new"]
    assert len(pd.read_csv(out / "results.csv")) == 2  # the table is rewritten after every finished run

    trained.clear()
    evaluated.clear()
    result = run_study(_config(plan, tmp_path / "frames", out))
    assert trained == ["runs/mfnet/seed_1 from last.pt", "runs/mf_kpsem/seed_1"]  # train's own --resume
    assert evaluated == runs[2:]
    assert result.reused == [("mfnet", 0), ("mf_kpsem", 0)] and len(result.ran) == 2
    resumed = [json.loads(line) for line in (out / runs[2] / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in resumed if m["event"] == "train"] == [1, 2, 3, 4]
    first = pd.read_csv(out / "results.csv")
    assert len(first) == 4

    # Killed after the evaluation but before the marker: evaluated again, never trained again.
    (out / runs[0] / "done.json").unlink()
    trained.clear()
    evaluated.clear()
    run_study(_config(plan, tmp_path / "frames", out))
    assert trained == [] and evaluated == [runs[0]]
    assert run_state(out / runs[0]) == "done"
    pd.testing.assert_frame_equal(pd.read_csv(out / "results.csv").drop(columns="eval_seconds").drop(
        columns="wall_seconds"), first.drop(columns=["eval_seconds", "wall_seconds"]))

    # Another evaluation protocol re-evaluates every run; other training settings are refused, not reused.
    evaluated.clear()
    run_study(_config(plan, tmp_path / "frames", out, eval_clips=2))
    assert trained == [] and evaluated == runs
    assert set(pd.read_csv(out / "results.csv")["clips_per_video"]) == {2}
    changed = _write_plan(tmp_path, _tiny_plan(epochs=3, save_every=1))
    with pytest.raises(PlanError, match=re.escape(f"{out / runs[0]} was trained with other settings than the plan "
                                                  "now asks for (epochs: 2 -> 3); delete that run folder to redo it")):
        run_study(_config(changed, tmp_path / "frames", out))
    assert trained == []


@pytest.mark.slow
def test_torchrun_two_processes_run_a_study_and_keep_what_one_process_finished(tmp_path):
    write_frame_folders(tmp_path / "frames")
    plan = _write_plan(tmp_path, _tiny_plan())
    out = tmp_path / "out"
    run_study(_config(plan, tmp_path / "frames", out, seeds=(0,), only=("mfnet",)))  # one process, one run
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "kpsem",
               "study", "--plan", str(plan), "--data", str(tmp_path / "frames"), "--out", str(out), "--seeds", "0",
               "--device", "cpu", "--resamples", "200", "--no-progress"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("1 run(s) trained or evaluated, 1 kept from before") == 1  # rank 0 alone prints
    assert done.stderr.count("[1/2] mfnet seed 0: finished before, kept") == 1
    assert json.loads((out / "runs/mf_kpsem/seed_0/config.json").read_text())["world_size"] == 2
    assert json.loads((out / "runs/mfnet/seed_0/config.json").read_text())["world_size"] == 1
    results = pd.read_csv(out / "results.csv")
    assert list(results["variant"]) == ["mfnet", "mf_kpsem"] and set(results["videos"]) == {9}  # every video once
    assert list(pd.read_csv(out / "table2.csv")["paired_seeds"]) == [0, 1]


# --- Table 2 by hand -------------------------------------------------------------------------------------------

VIDEOS = 10
CORRECT = {  # (variant, seed) -> which of the 10 test videos the model gets right
    ("a", 0): [1, 1, 1, 1, 1, 0, 0, 0, 0, 0],  # 5/10
    ("a", 1): [1, 1, 1, 1, 1, 1, 0, 0, 0, 0],  # 6/10
    ("b", 0): [1, 1, 1, 1, 1, 1, 1, 0, 0, 0],  # 7/10: fixes videos 5, 6; breaks none
    ("b", 1): [0, 1, 1, 1, 1, 1, 1, 1, 1, 1],  # 9/10: fixes 6, 7, 8, 9; breaks 0
    ("c", 0): [1, 1, 1, 1, 1, 1, 1, 1, 1, 1],  # 10/10, against b: fixes 7, 8, 9
}


def _hand_table(variant: str, seed: int) -> pd.DataFrame:
    """Video rows whose top class is the true one (label v % 3) exactly where CORRECT says so."""
    labels = [v % 3 for v in range(VIDEOS)]
    probs = np.full((VIDEOS, 3), 0.1, dtype=np.float32)
    for v, right in enumerate(CORRECT[(variant, seed)]):
        probs[v, labels[v] if right else (labels[v] + 1) % 3] = 0.8
    return predictions_table(probs, labels, [f"v{v:02d}" for v in range(VIDEOS)], [0] * VIDEOS,
                             class_names=["x", "y", "z"], model_id=f"{variant}_seed{seed}:mfnet")


def test_table2_statistics_match_values_worked_out_by_hand():
    plan = parse_plan({"name": "hand", "baseline": "a", "variants": [
        {"name": "a", "label": "A", "overrides": {"arch": "mfnet"}},
        {"name": "b", "label": "B", "overrides": {"arch": "mf_kpsem"}},
        {"name": "c", "label": "C", "baseline": "b", "overrides": {"arch": "mf_kpsem", "num_sets": 1}},
        {"name": "d", "label": "D", "overrides": {"arch": "r3d_50"}, "requires": "R3D"},
        {"name": "e", "label": "E", "overrides": {"arch": "mf_kpsem", "num_sets": 2}},
    ]})
    results = pd.DataFrame([
        {"variant": v, "seed": s, "top1": sum(c) / VIDEOS, "top5": 1.0, "mean_class_accuracy": mc,
         "parameters": 100 if v == "a" else 120, "macs": 1000}
        for ((v, s), c), mc in zip(CORRECT.items(), [0.5, 0.6, 0.75, 0.85, 1.0])
    ])
    table = design_table(plan, results, _hand_table, skipped={"d": "skipped: needs R3D"}, resamples=2000, seed=7)
    rows = table.table.set_index("variant")

    # A, the baseline: 0.5 and 0.6 -> mean 0.55, std sqrt(2 * 0.05^2 / 1) = 0.0707.
    assert rows.loc["a", "top1_mean"] == pytest.approx(0.55)
    assert rows.loc["a", "top1_std"] == pytest.approx(math.sqrt(0.005))
    assert rows.loc["a", "mean_class_mean"] == pytest.approx(0.55) and rows.loc["a", "note"] == "baseline"
    assert rows.loc["a", "paired_seeds"] == 0 and math.isnan(rows.loc["a", "difference_mean"])
    # B: 0.7 and 0.9 -> mean 0.8, std sqrt(2 * 0.1^2) = 0.1414; differences 0.2 and 0.3 -> 0.25 +- 0.0707.
    assert rows.loc["b", "top1_mean"] == pytest.approx(0.8) and rows.loc["b", "top1_std"] == pytest.approx(
        math.sqrt(0.02))
    assert rows.loc["b", "difference_mean"] == pytest.approx(0.25)
    assert rows.loc["b", "difference_std"] == pytest.approx(math.sqrt(0.005))
    # McNemar, seed 0: 2 fixed, 0 broken -> 2 * P(X <= 0), X ~ Bin(2, 1/2) = 2 / 4 = 0.5;
    # seed 1: 4 fixed, 1 broken -> 2 * (C(5,0) + C(5,1)) / 2^5 = 12 / 32 = 0.375.
    assert rows.loc["b", "mcnemar_p"] == "0.5 (seed 0); 0.375 (seed 1)"
    assert rows.loc["b", "significant_seeds"] == 0 and rows.loc["b", "paired_seeds"] == 2
    per_seed = {(r["variant"], r["run_seed"]): r for r in table.runs}
    assert (per_seed[("b", 0)]["fixed"], per_seed[("b", 0)]["broken"]) == (2, 0)
    assert (per_seed[("b", 1)]["fixed"], per_seed[("b", 1)]["broken"]) == (4, 1)
    assert per_seed[("b", 1)]["mcnemar_p"] == pytest.approx(0.375)
    # The interval: the 20 (video, seed) pairs of both seeds pooled, 6 fixed and 1 broken: difference 5/20.
    pooled_a = np.array(CORRECT[("a", 0)] + CORRECT[("a", 1)], dtype=bool)
    pooled_b = np.array(CORRECT[("b", 0)] + CORRECT[("b", 1)], dtype=bool)
    assert (pooled_b.mean() - pooled_a.mean()) == pytest.approx(0.25)
    low, high = bootstrap_difference(pooled_a, pooled_b, resamples=2000, seed=7)
    assert (rows.loc["b", "ci_low"], rows.loc["b", "ci_high"]) == (low, high)
    assert low < 0.25 < high
    # C against its own baseline B, one seed: 3 fixed, 0 broken -> p = 2 / 8 = 0.25; no spread over one seed.
    assert rows.loc["c", "baseline"] == "b" and rows.loc["c", "difference_mean"] == pytest.approx(0.3)
    assert rows.loc["c", "mcnemar_p"] == "0.25 (seed 0)" and math.isnan(rows.loc["c", "difference_std"])
    assert rows.loc["d", "note"] == "skipped: needs R3D" and rows.loc["d", "seeds"] == 0
    assert rows.loc["e", "note"] == "no finished run yet"

    markdown = table.to_markdown()
    assert "| B | 2 | 80.0 ± 14.1 | 100.0 ± 0.0 | 80.0 ± 7.1 | 0.000 | 0.000 | +25.0 ± 7.1 [" in markdown
    assert "pooled" in markdown and "treated as independent" in markdown


# --- the app page --------------------------------------------------------------------------------------------


def test_study_page_shows_results_table2_and_fig5(app, finished_study):
    at = app.run()
    at.switch_page("pages/study.py").run()
    assert not at.exception
    at.text_input(key="st_folder").input(str(finished_study)).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    frames = [d.value for d in at.dataframe]
    assert list(frames[0]["variant"]) == ["mfnet", "mfnet", "mf_kpsem", "mf_kpsem"]
    assert list(frames[1]["label"]) == ["MFNet", "MF-KPSEM"]
    assert "4 of 4 runs finished" in at.get("progress")[0].proto.text
    assert next(c for i in at.get("image") for c in i.captions).startswith("mean top-1 over seeds")

    at.text_input(key="st_folder").input(str(finished_study / "runs")).run()
    shown = re.sub(r"\\(.)", r"\1", at.error[0].value)  # Markdown escapes removed: the text as read
    assert shown == f"Study folder: {finished_study / 'runs'} is not a study folder (no plan.json): give the folder " \
                    "`kpsem study --out` wrote"
