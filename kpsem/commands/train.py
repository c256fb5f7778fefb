"""``python -m kpsem train``: train MFNet or MF-KPSEM with the paper's recipe (one GPU, CPU, or torchrun)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from typing import Any

HELP = "train MFNet or MF-KPSEM (paper recipe; resumable; torchrun for several GPUs or nodes)"


# Option groups of kpsem train, by the ``group`` a TrainConfig field names, in the order --help shows them.
_GROUPS = {"data": "data", "model": "model", "kpsem": "MF-KPSEM options (paper defaults unless given)",
           "optimisation": "optimisation (defaults: the paper's recipe)", "run": "run"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from kpsem.commands._fields import add_field_arguments
    from kpsem.commands._precision import add_precision_argument
    from kpsem.train_config import KPSEMFlags, TrainConfig, command_defaults

    groups = {key: parser.add_argument_group(title) for key, title in _GROUPS.items()}
    add_field_arguments(groups, TrainConfig, defaults=command_defaults())
    # Unset unless given, so that the model's own default applies (insert_after's depends on the backbone).
    add_field_arguments(groups, KPSEMFlags, defaults=dict.fromkeys(f.name for f in fields(KPSEMFlags)))
    add_precision_argument(groups["optimisation"], amp_alias=True, extra_help="; fp16 trains with a GradScaler")
    groups["run"].add_argument(
        "--config", metavar="JSON", default=None,
        help="repeat a run: its RUN/config.json (or a JSON object of these settings, named as the options with _ "
             "for -); options given here override the file's")


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`kpsem.train_config.TrainConfig` the command line describes: the ``--config`` file's fields
    (else the command's defaults), overridden by the options given."""
    from kpsem.commands._fields import check_required, given_fields
    from kpsem.commands._precision import precision_from_args
    from kpsem.train_config import KPSEM_OF, KPSEMFlags, TrainConfig, command_defaults, read_config_file

    values = read_config_file(args.config) if args.config else command_defaults()
    values.update(given_fields(args, TrainConfig))
    if args.precision is not None or args.amp is not None:
        values["precision"] = precision_from_args(args)
    options = given_fields(args, KPSEMFlags)
    arch = values.get("arch", TrainConfig.arch)
    if options and arch not in KPSEM_OF.values():  # named: the KPSEM model of the chosen backbone
        ours = KPSEM_OF.get(arch, " or ".join(KPSEM_OF.values()))
        raise ValueError(f"--{next(iter(options)).replace('_', '-')} applies to --arch {ours} only, not {arch}")
    if options:
        values["model_options"] = {**values.get("model_options", {}), **options}
    check_required(values, TrainConfig)
    return TrainConfig(**values)


def run(args: argparse.Namespace) -> int:
    """Train; under torchrun every process runs this and rank 0 writes the run folder."""
    from kpsem.commands._precision import announce
    from kpsem.distributed import process_group
    from kpsem.train import train

    config = config_from_args(args)
    with process_group(device=config.device) as dist_info:
        if dist_info.is_main:
            announce(dist_info.device, config.precision, what="training in ")
        result = train(config, dist_info=dist_info, command=[sys.executable, "-m", "kpsem", *sys.argv[1:]])
    if dist_info.is_main:
        last = next((r for r in reversed(result.metrics) if r.get("event") == "epoch"), None)
        print(f"trained {result.epochs} epochs ({result.steps} steps); final checkpoint {result.final_checkpoint}")
        if last and "val_top1" in last:
            print(f"last validation: top-1 {last['val_top1']:.2%}, top-5 {last['val_top5']:.2%}")
    return 0
