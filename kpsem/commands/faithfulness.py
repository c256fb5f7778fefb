"""``python -m kpsem faithfulness``: deletion/insertion curves of both models' Grad-CAMs over a split."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = ("faithfulness of both models' Grad-CAMs over a split: deletion/insertion AUCs, random floors, "
        "average drop, bootstrap intervals (Parquet + JSON)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from kpsem.commands._precision import add_precision_argument
    from kpsem.names import CAM_LAYERS, FAITHFULNESS_FILLS

    parser.add_argument("--baseline", required=True, help="baseline checkpoint (MFNet)")
    parser.add_argument("--kpsem", required=True, help="MF-KPSEM checkpoint")
    parser.add_argument("--data", required=True, help="data set root")
    parser.add_argument("--split", default="test", help="split (default test)")
    parser.add_argument("--out", required=True, help="per-clip table (.parquet); the summary goes beside it as .json")
    parser.add_argument("--summary", default=None, help="summary JSON (default: --out with .json)")
    parser.add_argument("--steps", type=int, default=16, help="points on each curve after the first (default 16)")
    parser.add_argument("--clips-per-video", type=int, default=1, help="test clips per video (default 1)")
    parser.add_argument("--cam-layer", default="tail", choices=CAM_LAYERS, help="Grad-CAM layer (default tail)")
    parser.add_argument("--weighting", choices=("clip", "slice"), default="clip",
                        help="one weight per channel (clip) or per channel and time slice (slice)")
    parser.add_argument("--fill", choices=FAITHFULNESS_FILLS, default="blur",
                        help="what a removed cell shows: a blurred copy of the clip (default) or its mean")
    parser.add_argument("--keep", type=float, default=0.5,
                        help="fraction of the most salient cells kept for average drop (default 0.5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random orders (default 0)")
    parser.add_argument("--resamples", type=int, default=10_000,
                        help="bootstrap resamples over videos (default 10000)")
    parser.add_argument("--batch-size", type=int, default=32, help="masked clips per forward call (default 32)")
    parser.add_argument("--layout", default=None, help="data set layout (default: detect)")
    parser.add_argument("--split-id", type=int, default=1, help="official split number (HMDB51/UCF101)")
    parser.add_argument("--annotations", default=None, help="annotation file or folder, if not in the standard place")
    parser.add_argument("--workers", type=int, default=2, help="data loader processes (default 2)")
    parser.add_argument("--device", default="auto", help="auto (GPU when available), cpu, cuda, cuda:1")
    add_precision_argument(parser, extra_help="; the summary's settings record it")
    parser.add_argument("--no-progress", dest="progress", action="store_false")


def _interval(value: dict) -> str:
    return f"{value['mean']:.3f} [{value['low']:.3f}, {value['high']:.3f}]"


def run(args: argparse.Namespace) -> int:
    """Compute the curves for every clip, write the table and the summary, print the summary."""
    from kpsem.commands._precision import announce, precision_from_args
    from kpsem.distributed import pick_device
    from kpsem.explain.faithfulness import evaluate_faithfulness, summarise_faithfulness, write_faithfulness

    if not 2 <= args.steps <= 256:
        raise ValueError(f"--steps must be between 2 and 256; got {args.steps}")
    if args.resamples < 100:
        raise ValueError(f"--resamples must be at least 100; got {args.resamples}")
    precision = announce(pick_device(0, args.device), precision_from_args(args), what="faithfulness in ")
    with precision.autocast():  # every forward and Grad-CAM pass runs in this thread; curves are float64
        table, settings = evaluate_faithfulness(
            args.baseline, args.kpsem, data=args.data, split=args.split, clips_per_video=args.clips_per_video,
            steps=args.steps, cam_layer=args.cam_layer, weighting=args.weighting, fill=args.fill, keep=args.keep,
            seed=args.seed, batch_size=args.batch_size, device=args.device, layout=args.layout,
            split_id=args.split_id, annotations=args.annotations, workers=args.workers, progress=args.progress,
        )
    summary = summarise_faithfulness(table, resamples=args.resamples, seed=args.seed)
    summary["settings"] = {**settings, "precision": precision.as_dict()}
    out, json_path = write_faithfulness(table, Path(args.out), summary, args.summary)
    level = f"{summary['confidence']:.0%}"
    print(f"faithfulness on {args.split}: {summary['videos']} videos, {summary['clips']} clips, {args.steps} steps, "
          f"CAM at {args.cam_layer}, {args.fill} fill; target: each video's true class "
          f"(the two models' predictions differ on {summary['predictions_differ_clips']} clips)")
    print(f"mean per video [{level} bootstrap interval over videos]")
    rows = (("deletion AUC (lower is better)", "auc_deletion"), ("  random floor", "auc_deletion_random"),
            ("insertion AUC (higher is better)", "auc_insertion"), ("  random floor", "auc_insertion_random"),
            (f"average drop % (top {args.keep:.0%} kept)", "average_drop"), ("  random floor", "average_drop_random"))
    names = settings["model_ids"]
    print(f"  {'':34s} {names[0]:>26s} {names[1]:>26s} {'KPSEM minus baseline':>26s}")
    for label, metric in rows:
        values = [summary["models"]["baseline"][metric], summary["models"]["kpsem"][metric],
                  summary["difference"][metric]]
        print(f"  {label:34s} " + " ".join(f"{_interval(v):>26s}" for v in values))
    for curve, text in (("deletion", "random minus CAM deletion AUC"), ("insertion", "CAM minus random insertion AUC")):
        gain = summary["over_random"][curve]
        print(f"  {text:34s} " + " ".join(f"{_interval(gain[r]):>26s}" for r in ("baseline", "kpsem", "difference")))
    print(f"table: {out}; summary: {json_path}")
    return 0
