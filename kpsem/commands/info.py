"""``python -m kpsem info``: Table 1, parameters and multiply-adds per part."""

from __future__ import annotations

import argparse
import json

from kpsem.cli import parse_clip

HELP = "Table 1: parameters and multiply-adds of backbone, KPSEM and classifier"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from kpsem.names import MODEL_NAMES

    parser.add_argument("--model", nargs="+", default=["mfnet", "mf_kpsem"], choices=MODEL_NAMES)
    parser.add_argument("--num-classes", type=int, default=101, help="classifier outputs (default 101, UCF101)")
    parser.add_argument("--clip", type=parse_clip, default=None, help="frames x height x width, e.g. 16x224x224")
    parser.add_argument("--checkpoint", nargs="+", default=None, help="report these checkpoints instead")
    parser.add_argument("--json", action="store_true", help="print JSON for machines")


def run(args: argparse.Namespace) -> int:
    """Table 1 for registered models or for checkpoints."""
    from kpsem.checkpoint import load_checkpoint
    from kpsem.models import create_model, has_kpsem, list_models, model_class
    from kpsem.profile import format_cost_table, model_cost

    costs, described = [], []
    if args.checkpoint:
        for path in args.checkpoint:
            loaded = load_checkpoint(path)
            info = loaded.info
            clip = args.clip or (info.clip_frames, info.clip_size, info.clip_size)
            costs.append(model_cost(loaded.model, name=info.arch, clip=clip))
            described.append(
                {"path": str(path), "arch": info.arch, "classes": info.num_classes, "clip": list(clip),
                 "format": info.source_format, "load": loaded.report.summary(), "provenance": info.provenance}
            )
    else:
        clip = args.clip or (16, 224, 224)
        for name in args.model:
            clip_options = {"num_frames": clip[0]} if has_kpsem(name) else {}
            model = create_model(name, num_classes=args.num_classes, **clip_options)
            costs.append(model_cost(model, name=name, clip=clip))
    if args.json:
        print(json.dumps({"models": [c.as_dict() for c in costs], "checkpoints": described}, indent=2))
        return 0
    for item in described:
        print(f"{item['path']}: {item['arch']}, {item['classes']} classes, {item['format']} ({item['load']})")
    first = costs[0]
    print(f"Parameters and multiply-adds for one {'x'.join(map(str, first.clip))} clip "
          f"({first.num_classes} classes):")
    print(format_cost_table(costs))
    by_name = {c.model: c for c in costs}
    for name, ours in by_name.items():  # each KPSEM model against its baseline, when both are listed
        baseline = getattr(model_class(name), "baseline_arch", None) if name in list_models() else None
        if baseline in by_name and "kpsem" in ours.parts:
            base = by_name[baseline].total
            print(f"KPSEM adds {ours.parts['kpsem'].macs / base.macs:.2%} multiply-adds and "
                  f"{ours.total.parameters / base.parameters - 1:.2%} parameters over "
                  f"{model_class(baseline).display_name}")
    return 0
