"""``python -m kpsem compare``: Fig. 7, confusion matrices and the clips KPSEM fixes or breaks."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "compare two models' predictions tables: Fig. 7, confusion matrices, clips fixed and broken by KPSEM"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from kpsem.explain.cli_options import add_style_arguments

    parser.add_argument("--predictions", nargs="+", required=True,
                        help="baseline then KPSEM predictions (.parquet from `evaluate`); or one table holding both")
    parser.add_argument("--baseline-id", default=None, help="model_id of the baseline (needed for a shared table)")
    parser.add_argument("--kpsem-id", default=None, help="model_id of the KPSEM model (needed for a shared table)")
    parser.add_argument("--level", choices=("video", "clip"), default=None, help="default: video when present")
    parser.add_argument("--margin", type=float, default=0.0, help="Fig. 7 shows classes won or lost "
                        "by at least this (0-1)")
    parser.add_argument("--out", required=True, help="output folder")
    add_style_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Write Fig. 7 (wins and losses), confusion matrices, per-class accuracy and fixed/broken lists."""
    from kpsem.explain.cli_options import formats_from_args, style_from_args
    from kpsem.explain.compare import compare_predictions, fixed_and_broken, load_predictions, per_class_accuracy
    from kpsem.explain.figures import figure_confusion, figure_per_class_accuracy

    if len(args.predictions) > 2:
        raise ValueError(f"--predictions takes one or two tables (baseline, then KPSEM); got {len(args.predictions)}")
    style, formats = style_from_args(args), formats_from_args(args)
    tables = [load_predictions(p) for p in args.predictions]
    if len(tables) == 1:
        ids = list(dict.fromkeys(tables[0]["model_id"]))
        if (args.baseline_id is None or args.kpsem_id is None) and len(ids) != 2:
            raise ValueError(f"{args.predictions[0]} holds models {ids}; pass --baseline-id and --kpsem-id")
        baseline_id = args.baseline_id or ids[0]
        kpsem_id = args.kpsem_id or ids[1]
        tables = [tables[0], tables[0]]
    else:
        baseline_id, kpsem_id = args.baseline_id, args.kpsem_id
    compared = compare_predictions(tables[0], tables[1], level=args.level, baseline_id=baseline_id, kpsem_id=kpsem_id)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = (compared.baseline_id, compared.kpsem_id)
    extra = {"inputs": {"predictions": [str(p) for p in args.predictions], "baseline_id": compared.baseline_id,
                        "kpsem_id": compared.kpsem_id, "level": compared.level}}
    table = per_class_accuracy(compared)
    written = []
    for mode in ("wins", "losses"):
        figure = figure_per_class_accuracy(table, margin=args.margin, mode=mode, names=names, style=style)
        written += figure.save(out, formats=formats, extra=extra)
    written += figure_confusion(compared, style=style).save(out, formats=formats, extra=extra)
    table.to_csv(out / "per_class_accuracy.csv", index=False)
    written.append(out / "per_class_accuracy.csv")
    fixed, broken = fixed_and_broken(compared)
    for name, frame in (("fixed", fixed), ("broken", broken)):
        frame.to_csv(out / f"{name}_by_kpsem.csv", index=False)
        (out / f"{name}_by_kpsem.json").write_text(frame.to_json(orient="records", indent=2) + "\n")
        written += [out / f"{name}_by_kpsem.csv", out / f"{name}_by_kpsem.json"]
    items = compared.items
    acc_b = float((items["baseline_pred"] == items["true_label"]).mean())
    acc_k = float((items["kpsem_pred"] == items["true_label"]).mean())
    summary = {**extra["inputs"], "items": len(items), "top1_baseline": acc_b, "top1_kpsem": acc_k,
               "fixed": len(fixed), "broken": len(broken)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    written.append(out / "summary.json")
    print(f"{compared.level} level, {len(items)} items: top-1 {names[0]} {acc_b:.1%}, {names[1]} {acc_k:.1%} "
          f"({acc_k - acc_b:+.1%}); KPSEM fixes {len(fixed)} and breaks {len(broken)}")
    print(f"wrote {len(written)} files to {out}")
    return 0
