"""``python -m kpsem study``: a plan's variants x seeds through train and evaluate; Table 2 and Fig. 5."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kpsem.study import StudyConfig

HELP = "design study: train and evaluate a plan's variants x seeds (resumable), then Table 2 and Fig. 5"


def _plan_names() -> str:
    """Shipped plans, from the package's files alone (no torch import for --help)."""
    from importlib import resources

    folder = resources.files("kpsem") / "plans"
    return ", ".join(sorted(str(e.name).rsplit(".", 1)[0] for e in folder.iterdir()
                            if str(e.name).endswith((".toml", ".json"))))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", required=True,
                        help=f"a shipped plan ({_plan_names()}) or the path of a .toml / .json plan file")
    parser.add_argument("--data", required=True, help="data set root (HMDB51, UCF101, synthetic, class folders)")
    parser.add_argument("--out", required=True, help="study folder (runs, results table, Table 2, Fig. 5)")
    parser.add_argument("--split-id", type=int, default=1, help="official split number (HMDB51/UCF101; default 1)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED",
                        help="seeds to run (default: the plan's)")
    parser.add_argument("--only", nargs="+", default=None, metavar="VARIANT",
                        help="run these variants only (the reports still cover every finished run)")
    parser.add_argument("--init", default=None, metavar="CKPT",
                        help="checkpoint every variant starts from, e.g. the Kinetics-pretrained MFNet (paper recipe)")
    parser.add_argument("--layout", default=None, help="data set layout (default: detect)")
    parser.add_argument("--annotations", default=None, help="annotation file or folder, if not in the standard place")
    parser.add_argument("--device", default=None, help="auto (GPU when available), cpu, cuda (default: the plan's)")
    parser.add_argument("--workers", type=int, default=None, help="data loader processes (default: the plan's)")
    parser.add_argument("--eval-clips", type=int, default=None, help="clips per test video (default: the plan's)")
    parser.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples in Table 2 (default 10000)")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and what each needs; run nothing")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite results, Table 2 and Fig. 5 from the finished runs; train nothing")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def _dry_run(config: StudyConfig) -> int:
    from pathlib import Path

    from kpsem.study import load_plan, run_state, select_variants, skipped_variants

    plan = load_plan(config.plan)
    variants = select_variants(plan, config.only)
    skipped = skipped_variants(plan, variants)
    seeds = config.seeds if config.seeds is not None else plan.seeds
    print(f"plan {plan.name}: {plan.description} ({plan.source})")
    print(f"baseline {plan.baseline}; seeds {', '.join(map(str, seeds))}; "
          f"{plan.eval_split} split, {config.eval_clips or plan.eval_clips} clip(s) per video")
    for variant in variants:
        if variant.name in skipped:
            print(f"  {variant.name:<20} {skipped[variant.name]}")
            continue
        states = [run_state(Path(config.out) / "runs" / variant.name / f"seed_{s}") for s in seeds]
        overrides = ", ".join(f"{k}={v}" for k, v in variant.overrides.items())
        print(f"  {variant.name:<20} {overrides}; runs: " + ", ".join(f"seed {s} {st}" for s, st in zip(seeds, states)))
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the study; under torchrun every process runs this, and rank 0 writes and prints."""
    from kpsem.study import StudyConfig

    config = StudyConfig(
        plan=args.plan, data=args.data, out=args.out, split_id=args.split_id,
        seeds=tuple(args.seeds) if args.seeds else None, only=tuple(args.only) if args.only else None,
        init=args.init, layout=args.layout, annotations=args.annotations, device=args.device, workers=args.workers,
        eval_clips=args.eval_clips, resamples=args.resamples, progress=args.progress,
    )
    if args.dry_run:
        return _dry_run(config)
    if args.report_only:
        from kpsem.study import write_reports

        for path in write_reports(args.out, resamples=args.resamples):
            print(path)
        return 0
    from kpsem.distributed import process_group
    from kpsem.study import run_study

    with process_group(device=args.device) as dist_info:
        result = run_study(config, dist_info=dist_info, command=[sys.executable, "-m", "kpsem", *sys.argv[1:]])
    if dist_info.is_main:
        print(f"{len(result.ran)} run(s) trained or evaluated, {len(result.reused)} kept from before, "
              f"{len(result.skipped)} variant(s) skipped")
        for path in result.written:
            print(path)
    return 0
