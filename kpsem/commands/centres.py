"""``python -m kpsem centres``: how far a KPSEM checkpoint's separation centres move across clips and frames."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

HELP = "separation centres: how far they move across clips and frames, per set, in feature cells and input pixels"


def starting(words: Sequence[str]) -> str:
    """The first line, printed before PyTorch is imported (see :func:`kpsem.cli.main`)."""
    return "kpsem centres: importing PyTorch, then reading the checkpoint and the clips ..."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from kpsem.commands._precision import add_precision_argument

    parser.add_argument("--checkpoint", required=True, help="a KPSEM checkpoint (K = 4, 9 or 16)")
    parser.add_argument("--data", required=True, help="data set root")
    parser.add_argument("--split", default="test", help="split to read (default test)")
    parser.add_argument("--clips", type=int, default=None,
                        help="at most this many videos, one centre clip each, spread over the split (default all)")
    parser.add_argument("--layout", default=None, help="data set layout (default: detect)")
    parser.add_argument("--split-id", type=int, default=1, help="official split number (HMDB51/UCF101)")
    parser.add_argument("--annotations", default=None, help="annotation file or folder, if not in the standard place")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=0, help="data loader processes (default 0: in this process)")
    add_precision_argument(parser)
    parser.add_argument("--device", default="auto", help="auto (GPU when available), cpu, cuda, cuda:1")
    parser.add_argument("--json", action="store_true", help="print JSON for machines")


def run(args: argparse.Namespace) -> int:
    """Read the centres, print one row per set (or JSON)."""
    from kpsem.centres import centre_report, format_report
    from kpsem.commands._precision import precision_from_args

    report = centre_report(args.checkpoint, args.data, split=args.split, clips=args.clips,
                           batch_size=args.batch_size, workers=args.workers, device=args.device,
                           precision=precision_from_args(args), layout=args.layout, split_id=args.split_id,
                           annotations=args.annotations)
    print(json.dumps(report.as_dict(), indent=2) if args.json else format_report(report))
    return 0
