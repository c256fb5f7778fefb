"""``python -m kpsem probe``: motion probes and knock-outs on a data split, a table per model, probe and video."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "motion probes: predictions with frames reversed, shuffled, frozen, subsampled or mirrored, and KPSEM knock-outs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from kpsem.commands._precision import add_precision_argument
    from kpsem.names import PROBE_NAMES

    parser.add_argument("--checkpoint", action="append", required=True,
                        help="checkpoint to probe; repeat for several models (e.g. MFNet and MF-KPSEM)")
    parser.add_argument("--data", required=True, help="data set root")
    parser.add_argument("--split", default="test", help="split to probe (default test)")
    parser.add_argument("--probes", default="all",
                        help=f"comma-separated, from {', '.join(PROBE_NAMES)}; default all (knock-outs apply to "
                             "MF-KPSEM only; other models get 'not applicable')")
    parser.add_argument("--clips", type=int, default=1,
                        help="clips per video; video score = mean softmax, as in evaluate (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffle probe's frame order (default 0)")
    parser.add_argument("--out", default="probes.parquet", help="probe table (.parquet); default probes.parquet")
    parser.add_argument("--summary", default=None,
                        help="summary JSON: per probe, per class and the sentences (default: --out with .json)")
    parser.add_argument("--model-id", action="append", default=None,
                        help="label of each checkpoint, in order (default: <stem>:<arch>)")
    parser.add_argument("--layout", default=None, help="data set layout (default: detect)")
    parser.add_argument("--split-id", type=int, default=1, help="official split number (HMDB51/UCF101)")
    parser.add_argument("--annotations", default=None, help="annotation file or folder, if not in the standard place")
    parser.add_argument("--batch-size", type=int, default=4,
                        help="clips per forward; each clip brings its input probes into the same batch (default 4)")
    parser.add_argument("--workers", type=int, default=2, help="data loader processes (default 2)")
    add_precision_argument(parser, amp_alias=True)
    parser.add_argument("--device", default="auto", help="auto (GPU when available), cpu, cuda, cuda:1")
    parser.add_argument("--no-progress", dest="progress", action="store_false")


def _format_summary(summary) -> str:  # noqa: ANN001 - pandas.DataFrame from summarise_probes
    """The per-probe summary as an aligned text table (not applicable rows say so)."""
    lines = [f"{'model':<24} {'probe':<18} {'accuracy':>9} {'95% CI':>13} {'changed':>8} {'McNemar p':>10}"]
    for row in summary.itertuples():
        if not row.applicable:
            lines.append(f"{row.model_id:<24} {row.probe:<18} {'not applicable (no KPSEM module)':>43}")
            continue
        p = "" if row.probe == "none" else f"{row.p_value:.3g}"
        lines.append(f"{row.model_id:<24} {row.probe:<18} {row.accuracy:>9.1%} "
                     f"{f'{row.ci_low:.0%}-{row.ci_high:.0%}':>13} {row.changed_share:>8.1%} {p:>10}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Probe every checkpoint, write the table and the summary, print the summary and the sentences."""
    from kpsem.commands._precision import announce, precision_from_args
    from kpsem.distributed import pick_device
    from kpsem.io import atomic_write_text
    from kpsem.probes import parse_probes, probe_checkpoints, probe_report, summarise_probes, write_probes

    probes = parse_probes(args.probes)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1; got {args.batch_size}")
    precision = announce(pick_device(0, args.device), precision_from_args(args), what="probing in ")
    result = probe_checkpoints(
        args.checkpoint, data=args.data, split=args.split, probes=probes, clips=args.clips, seed=args.seed,
        batch_size=args.batch_size, workers=args.workers, precision=precision.name, device=args.device,
        model_ids=args.model_id, layout=args.layout, split_id=args.split_id, annotations=args.annotations,
        progress=args.progress,
    )
    out = write_probes(result, args.out)
    report = probe_report(result)
    summary_path = Path(args.summary) if args.summary else out.with_suffix(".json")
    atomic_write_text(summary_path, json.dumps(report, indent=2) + "\n")
    videos = result.table["video_id"].nunique()
    print(f"{len(result.models)} model(s) on {videos} {args.split} videos, {args.clips} clip(s) each")
    print(_format_summary(summarise_probes(result)))
    print()
    for sentence in report["sentences"]:
        print(f"- {sentence}")
    print(f"probe table: {out}; summary: {summary_path}")
    return 0
