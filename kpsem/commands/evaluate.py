"""``python -m kpsem evaluate``: top-1/top-5 per clip and per video, and a predictions table (Parquet)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

HELP = "evaluate a checkpoint: top-1/top-5 over several clips per video, predictions table as Parquet"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from kpsem.commands._precision import add_precision_argument

    parser.add_argument("--checkpoint", required=True, help="checkpoint to evaluate (ours or published MFNet)")
    parser.add_argument("--data", required=True, help="data set root")
    parser.add_argument("--split", default="test", help="split to evaluate (default test)")
    parser.add_argument("--clips", type=int, default=10,
                        help="clips per video; video score = mean softmax over its views (default 10)")
    parser.add_argument("--protocol", default="centre", metavar="{centre,mfnet,3crop}",
                        help="test views: centre (default: evenly spaced clips, short side 256/224 of the crop, "
                             "centre crop), mfnet (the MFNet reference: seeded random clips and crops from a "
                             "256/224 square resize), 3crop (evenly spaced clips x three crops along the long side "
                             "after a short-side resize to the crop size); the table's metadata records it")
    parser.add_argument("--seed", type=int, default=0, help="seed of the mfnet protocol's random clips and crops")
    parser.add_argument("--out", default=None,
                        help="predictions table (.parquet); default: <checkpoint stem>_<split>_preds.parquet beside it")
    parser.add_argument("--summary", default=None, help="summary JSON (default: --out with .json)")
    parser.add_argument("--model-id", default=None, help="label in tables and plots (default: <stem>:<arch>)")
    parser.add_argument("--layout", default=None, help="data set layout (default: detect)")
    parser.add_argument("--split-id", type=int, default=1, help="official split number (HMDB51/UCF101)")
    parser.add_argument("--annotations", default=None, help="annotation file or folder, if not in the standard place")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="data loader processes per evaluating process")
    add_precision_argument(parser, amp_alias=True, extra_help="; the table's metadata records it")
    parser.add_argument("--device", default="auto", help="auto (GPU when available), cpu, cuda, cuda:1")
    parser.add_argument("--no-progress", dest="progress", action="store_false")


def describe_protocol(protocol: dict[str, Any]) -> str:
    """One line for a recorded protocol, e.g. '3crop: 10 clips x 3 crops (three) of 224 px, short side
    resized to 224'."""
    if "crops" not in protocol:
        return str(protocol.get("name", "unstated"))
    size, resize = protocol["size"], protocol["resize"]
    resized = f"frames resized to {resize}x{resize}" if protocol["resize_to"] == "square" else (
        f"short side resized to {resize}")
    seed = f", seed {protocol['seed']}" if protocol.get("seed") is not None else ""
    return (f"{protocol['name']}: {protocol['clips']} clips x {protocol['crops']} crops ({protocol['crop']}) "
            f"of {size} px, {resized}{seed}")


def run(args: argparse.Namespace) -> int:
    """Evaluate (each torchrun rank its shard); rank 0 writes the table and the summary and prints them."""
    from kpsem.commands._precision import announce, precision_from_args
    from kpsem.data.clips import check_protocol
    from kpsem.distributed import process_group
    from kpsem.evaluate import evaluate_checkpoint

    if args.clips < 1:
        raise ValueError(f"--clips must be at least 1; got {args.clips}")
    try:
        check_protocol(args.protocol, args.clips)
    except ValueError as error:
        raise ValueError(f"--{error}") from None  # the option's name, as the user typed it
    checkpoint = Path(args.checkpoint)
    out = Path(args.out) if args.out else checkpoint.with_name(f"{checkpoint.stem}_{args.split}_preds.parquet")
    precision = precision_from_args(args)
    with process_group(device=args.device) as dist_info:
        if dist_info.is_main:
            announce(dist_info.device, precision, what="evaluating in ")
        result = evaluate_checkpoint(
            checkpoint, data=args.data, split=args.split, clips=args.clips, protocol=args.protocol, seed=args.seed,
            batch_size=args.batch_size,
            workers=args.workers, precision=precision, out=out, summary_path=args.summary, model_id=args.model_id,
            layout=args.layout, split_id=args.split_id, annotations=args.annotations, dist_info=dist_info,
            progress=args.progress,
        )
    if result is not None:
        print(f"{result.model_id} on {result.split}: {result.num_videos} videos, {result.num_clips} clips")
        print(f"  protocol {describe_protocol(result.protocol)}")
        print(f"  clip  top-1 {result.clip_top1:.2%}  top-5 {result.clip_top5:.2%}")
        print(f"  video top-1 {result.video_top1:.2%}  top-5 {result.video_top5:.2%}  (mean softmax over clips)")
        if "centre_std_clips" in result.info:
            print(f"  separation centres: std {result.info['centre_std_clips']:.4f} across clips, "
                  f"{result.info['centre_std_frames']:.4f} across frames, "
                  f"{result.info['centre_near_bound']:.1%} of coordinates at the bound (normalised units)")
        print(f"predictions: {result.info['predictions']}; summary: {result.info['summary']}")
    return 0
