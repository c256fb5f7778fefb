"""``python -m kpsem compare``: Fig. 7, confusion matrices, the clips KPSEM fixes or breaks, and whether
the difference is significant, for one pair of predictions tables or several runs per model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

HELP = ("compare two models' predictions tables (one run or several): significance, Fig. 7, confusion "
        "matrices, clips fixed and broken by KPSEM")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from kpsem.explain.cli_options import add_style_arguments

    parser.add_argument("--predictions", nargs="+", default=None,
                        help="baseline then KPSEM predictions (.parquet from `evaluate`); or one table holding both")
    parser.add_argument("--baseline", nargs="+", default=None, metavar="PARQUET",
                        help="the baseline's tables, one per run (seeds or splits); paired by order with --kpsem")
    parser.add_argument("--kpsem", nargs="+", default=None, metavar="PARQUET",
                        help="the KPSEM model's tables, one per run, in the order of --baseline")
    parser.add_argument("--baseline-id", default=None, help="model_id of the baseline (needed for a shared table)")
    parser.add_argument("--kpsem-id", default=None, help="model_id of the KPSEM model (needed for a shared table)")
    parser.add_argument("--level", choices=("video", "clip"), default=None, help="default: video when present")
    parser.add_argument("--margin", type=float, default=0.0, help="Fig. 7 shows classes won or lost "
                        "by at least this (0-1)")
    parser.add_argument("--intervals", action="store_true", help="draw each bar of Fig. 7 with its Wilson 95%% "
                        "interval as a whisker")
    parser.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples of the videos "
                        "(default 10000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the bootstrap (default 0)")
    parser.add_argument("--out", required=True, help="output folder")
    add_style_arguments(parser)


def _runs(args: argparse.Namespace) -> list[tuple[list[str], Any, Any, str | None, str | None]]:
    """(input paths, baseline table, KPSEM table, baseline id, KPSEM id) per run, from either form."""
    from kpsem.explain.compare import load_predictions

    if args.predictions is not None and (args.baseline is not None or args.kpsem is not None):
        raise ValueError("give either --predictions BASELINE KPSEM or --baseline ... --kpsem ..., not both")
    if args.predictions is not None:
        if len(args.predictions) > 2:
            raise ValueError(f"--predictions takes one or two tables (baseline, then KPSEM); got "
                             f"{len(args.predictions)}; for several runs use --baseline A1 A2 ... --kpsem B1 B2 ...")
        tables = [load_predictions(p) for p in args.predictions]
        if len(tables) == 2:
            return [(list(args.predictions), tables[0], tables[1], args.baseline_id, args.kpsem_id)]
        ids = list(dict.fromkeys(tables[0]["model_id"]))
        if (args.baseline_id is None or args.kpsem_id is None) and len(ids) != 2:
            raise ValueError(f"{args.predictions[0]} holds models {ids}; pass --baseline-id and --kpsem-id")
        return [(list(args.predictions), tables[0], tables[0], args.baseline_id or ids[0], args.kpsem_id or ids[1])]
    if args.baseline is None or args.kpsem is None:
        raise ValueError("give the tables: --predictions BASELINE KPSEM, or --baseline A1 [A2 ...] --kpsem B1 [B2 ...]")
    if len(args.baseline) != len(args.kpsem):
        raise ValueError(f"--baseline has {len(args.baseline)} tables and --kpsem {len(args.kpsem)}; runs are "
                         "paired by order, so give as many of each")
    return [([a, b], load_predictions(a), load_predictions(b), args.baseline_id, args.kpsem_id)
            for a, b in zip(args.baseline, args.kpsem)]


def _write_run(compared: Any, out: Path, args: argparse.Namespace, extra: dict[str, Any]) -> list[Path]:
    """Fig. 7 (wins and losses), confusion matrices, per-class accuracy, fixed/broken lists, summary.json."""
    from kpsem.explain.cli_options import formats_from_args, names_from_args, style_from_args
    from kpsem.explain.compare import fixed_and_broken, per_class_accuracy
    from kpsem.explain.figures import figure_confusion, figure_per_class_accuracy
    from kpsem.io import atomic_path, atomic_write_text

    style, formats = style_from_args(args), formats_from_args(args)
    out.mkdir(parents=True, exist_ok=True)
    names = (compared.baseline_id, compared.kpsem_id)
    labels = names_from_args(args, ids=names)  # what the figures show: never an id such as 'final:mfnet'
    table = per_class_accuracy(compared)
    written = []
    for mode in ("wins", "losses"):
        figure = figure_per_class_accuracy(table, margin=args.margin, mode=mode, names=labels, style=style,
                                           intervals=args.intervals)
        written += figure.save(out, formats=formats, extra=extra)
    written += figure_confusion(compared, names=labels, style=style).save(out, formats=formats, extra=extra)
    with atomic_path(out / "per_class_accuracy.csv") as partial:
        table.to_csv(partial, index=False)
    written.append(out / "per_class_accuracy.csv")
    fixed, broken = fixed_and_broken(compared)
    for name, frame in (("fixed", fixed), ("broken", broken)):
        with atomic_path(out / f"{name}_by_kpsem.csv") as partial:
            frame.to_csv(partial, index=False)
        atomic_write_text(out / f"{name}_by_kpsem.json", frame.to_json(orient="records", indent=2) + "\n")
        written += [out / f"{name}_by_kpsem.csv", out / f"{name}_by_kpsem.json"]
    items = compared.items
    acc_b = float((items["baseline_pred"] == items["true_label"]).mean())
    acc_k = float((items["kpsem_pred"] == items["true_label"]).mean())
    summary = {**extra["inputs"], "items": len(items), "top1_baseline": acc_b, "top1_kpsem": acc_k,
               "fixed": len(fixed), "broken": len(broken)}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    written.append(out / "summary.json")
    print(f"{compared.level} level, {len(items)} items: top-1 {names[0]} {acc_b:.1%}, {names[1]} {acc_k:.1%} "
          f"({acc_k - acc_b:+.1%}); KPSEM fixes {len(fixed)} and breaks {len(broken)}")
    return written


def run(args: argparse.Namespace) -> int:
    """Per run: the comparison files and its significance; then significance.json over all runs."""
    from kpsem.explain.compare import compare_predictions, paired_significance
    from kpsem.explain.significance import ALPHA, summarise_runs
    from kpsem.io import atomic_write_text

    if args.resamples < 1:
        raise ValueError(f"--resamples must be a positive integer; got {args.resamples}")
    runs = _runs(args)
    out = Path(args.out)
    written, records, results = [], [], []
    for number, (paths, baseline, kpsem, baseline_id, kpsem_id) in enumerate(runs, start=1):
        try:
            compared = compare_predictions(baseline, kpsem, level=args.level, baseline_id=baseline_id,
                                           kpsem_id=kpsem_id)
        except ValueError as error:
            if len(runs) == 1:
                raise
            raise ValueError(f"run {number} ({' vs '.join(paths)}): {error}") from None
        folder = out if len(runs) == 1 else out / f"run_{number}"
        extra = {"inputs": {"predictions": paths, "baseline_id": compared.baseline_id,
                            "kpsem_id": compared.kpsem_id, "level": compared.level}}
        if len(runs) > 1:
            print(f"run {number}: {' vs '.join(paths)}")
        written += _write_run(compared, folder, args, extra)
        result = paired_significance(compared, resamples=args.resamples, seed=args.seed)
        print(f"  {result.sentence}\n  {result.interval_text}")
        for note in result.caveats:
            print(f"  note: {note}")
        print(f"  mean class accuracy: {compared.baseline_id} {result.mean_class_baseline:.1%}, "
              f"{compared.kpsem_id} {result.mean_class_kpsem:.1%} ({result.mean_class_difference * 100:+.1f} points)")
        results.append(result)
        records.append({"run": number, "baseline": paths[0], "kpsem": paths[-1],
                        "folder": str(folder.relative_to(out)), **result.to_dict()})
    across = summarise_runs(results)
    if len(runs) > 1:
        print(f"across {across.runs} runs (mean ± standard deviation):")
        print(f"  top-1: baseline {across.describe('top1_baseline')}, KPSEM {across.describe('top1_kpsem')}, "
              f"difference {across.describe('difference')}")
        print(f"  mean class accuracy: baseline {across.describe('mean_class_baseline')}, KPSEM "
              f"{across.describe('mean_class_kpsem')}, difference {across.describe('mean_class_difference')}")
        print(f"  significant at {ALPHA:.0%} (McNemar exact) in {across.significant_runs} of {across.runs} runs")
    document = {
        "test": "McNemar exact, two-sided, on the items the models disagree on",
        "interval": "percentile bootstrap of the paired top-1 difference, items resampled with replacement",
        "per_class_interval": "Wilson score 95% (per_class_accuracy.csv)",
        "alpha": ALPHA, "confidence": 0.95, "resamples": args.resamples, "seed": args.seed,
        "runs": records, "across_runs": across.to_dict(),
    }
    atomic_write_text(out / "significance.json", json.dumps(document, indent=2) + "\n")
    written.append(out / "significance.json")
    print(f"wrote {len(written)} files to {out}")
    return 0
