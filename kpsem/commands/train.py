"""``python -m kpsem train``: train MFNet or MF-KPSEM with the paper's recipe (one GPU, CPU, or torchrun)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

HELP = "train MFNet or MF-KPSEM (paper recipe; resumable; torchrun for several GPUs or nodes)"


def _widths(text: str) -> tuple[int, int, int, int]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise argparse.ArgumentTypeError(
            f"expected 4 comma-separated integers for conv2..conv5, e.g. 48,96,192,384; got {text!r}")
    return values  # type: ignore[return-value]


def _steps(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, e.g. 20,27; got {text!r}") from None


def _interval(text: str) -> int | tuple[int, ...]:
    values = _steps(text)
    if not values:
        raise argparse.ArgumentTypeError(f"expected an interval like 2 or 1,2,2,3; got {text!r}")
    return values[0] if len(values) == 1 else values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from kpsem.commands._precision import add_precision_argument
    from kpsem.data import FLIP_MODES
    from kpsem.train import TrainConfig

    d = TrainConfig()
    data = parser.add_argument_group("data")
    data.add_argument("--data", required=True, help="data set root (HMDB51, UCF101, Kinetics, SSv1 or class folders)")
    data.add_argument("--layout", default=None, help="data set layout (default: detect)")
    data.add_argument("--split-id", type=int, default=d.split_id, help="official split number (HMDB51/UCF101)")
    data.add_argument("--annotations", default=None, help="annotation file or folder, if not in the standard place")
    data.add_argument("--train-split", default=d.train_split, help=f"split to train on (default {d.train_split})")
    data.add_argument("--val-split", default=d.val_split,
                      help=f"split evaluated after each epoch (default {d.val_split}; 'none' to skip)")
    data.add_argument("--val-clips", type=int, default=d.val_clips, help="clips per video in that validation")
    data.add_argument("--frames", type=int, default=d.frames, help=f"frames per clip (default {d.frames})")
    data.add_argument("--interval", type=_interval, default=d.interval,
                      help=f"frame interval (default {d.interval}); a list draws one per clip, e.g. 1,2,2,3 (Kinetics)")
    data.add_argument("--size", type=int, default=d.size, help=f"crop side, a multiple of 16 (default {d.size})")
    data.add_argument("--flip", choices=FLIP_MODES, default=d.flip,
                      help="training flips: 'mirror' (default) swaps the labels of mirror-image classes "
                           "(slide_left/slide_right, ... from left to right/right to left), 'plain' keeps "
                           "every label (MFNet's reference), 'off' never flips")
    data.add_argument("--workers", type=int, default=d.workers, help="data loader processes per training process")

    model = parser.add_argument_group("model")
    model.add_argument("--arch", default=d.arch, choices=["mfnet", "mf_kpsem"], help=f"model (default {d.arch})")
    model.add_argument("--init", default=None, metavar="CKPT",
                       help="start from this checkpoint (ours or a published MFNet file); MF-KPSEM takes an MFNet "
                            "checkpoint into its backbone; backbone widths/depths default to the checkpoint's")
    model.add_argument("--reinit-classifier", action="store_true", help="drop --init's classifier (other class count)")
    model.add_argument("--widths", type=_widths, default=None, help="conv2..conv5 widths, e.g. 48,96,192,384")
    model.add_argument("--depths", type=_widths, default=None, help="conv2..conv5 units, e.g. 1,2,3,1")
    model.add_argument("--conv1-channels", type=int, default=None, help="stem width (default 16)")
    model.add_argument("--dropout", type=float, default=None, help="dropout before the classifier (default 0)")
    kp = parser.add_argument_group("MF-KPSEM options (paper defaults unless given)")
    kp.add_argument("--insert-after", choices=["conv2", "conv3", "conv4", "conv5"], default=None)
    kp.add_argument("--num-regions", type=int, choices=[1, 4], default=None, help="K (1 = single key point)")
    kp.add_argument("--num-sets", type=int, default=None, help="G, AReSE sets")
    kp.add_argument("--embed-dim", type=int, default=None, help="d_e")
    kp.add_argument("--fixed-regions", action="store_true", default=None, help="ablation: random frozen centres")
    kp.add_argument("--gradient", choices=["straight_through", "hard"], default=None,
                    help="KPSEM's training backward rule (default straight_through)")

    opt = parser.add_argument_group("optimisation (defaults: the paper's recipe)")
    opt.add_argument("--epochs", type=int, default=d.epochs)
    opt.add_argument("--batch-size", type=int, default=d.batch_size, help="clips per step on each process")
    opt.add_argument("--lr", type=float, default=d.lr, help=f"base learning rate (default {d.lr})")
    opt.add_argument("--lr-steps", type=_steps, default=d.lr_steps,
                     help="epochs after which lr *= --lr-factor (default 20,27)")
    opt.add_argument("--lr-factor", type=float, default=d.lr_factor)
    opt.add_argument("--momentum", type=float, default=d.momentum)
    opt.add_argument("--no-nesterov", dest="nesterov", action="store_false", help="plain momentum instead of Nesterov")
    opt.add_argument("--weight-decay", type=float, default=d.weight_decay)
    opt.add_argument("--backbone-lr-mult", type=float, default=None,
                     help="backbone lr multiplier (default 0.2 with --init, 1.0 from scratch)")
    opt.add_argument("--kpsem-lr-mult", type=float, default=d.kpsem_lr_mult)
    opt.add_argument("--centre-lr-mult", type=float, default=d.centre_lr_mult,
                     help="extra multiplier for KPSEM's centre MLPs (kpsem.centre_*), e.g. 0.1")
    opt.add_argument("--classifier-lr-mult", type=float, default=d.classifier_lr_mult)
    add_precision_argument(opt, amp_alias=True, extra_help="; fp16 trains with a GradScaler")
    opt.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across GPUs under torchrun")
    opt.add_argument("--seed", type=int, default=d.seed)

    run = parser.add_argument_group("run")
    run.add_argument("--out", default=d.out, help=f"run folder (default {d.out})")
    run.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CKPT",
                     help="continue an interrupted run from CKPT, or (no value) from the run folder's latest")
    run.add_argument("--save-every", type=int, default=d.save_every, help="also checkpoint every N steps mid-epoch")
    run.add_argument("--keep-checkpoints", type=int, default=d.keep_checkpoints, help="epoch checkpoints kept (0: all)")
    run.add_argument("--log-every", type=int, default=d.log_every, help="steps between metrics.jsonl records")
    run.add_argument("--eval-batch-size", type=int, default=None)
    run.add_argument("--device", default=d.device, help="auto (GPU when available), cpu, cuda, cuda:1")
    run.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`kpsem.train.TrainConfig` the command line describes."""
    from kpsem.commands._precision import precision_from_args
    from kpsem.train import TrainConfig

    options = {
        name: getattr(args, name)
        for name in ("insert_after", "num_regions", "num_sets", "embed_dim", "fixed_regions", "gradient")
        if getattr(args, name) is not None
    }
    if options and args.arch != "mf_kpsem":
        raise ValueError(f"--{next(iter(options)).replace('_', '-')} applies to --arch mf_kpsem only, not {args.arch}")
    val_split = None if str(args.val_split).lower() in ("none", "") else args.val_split
    return TrainConfig(
        arch=args.arch, data=args.data, out=args.out, layout=args.layout, split_id=args.split_id,
        annotations=args.annotations, train_split=args.train_split, val_split=val_split, val_clips=args.val_clips,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, momentum=args.momentum, nesterov=args.nesterov,
        weight_decay=args.weight_decay, backbone_lr_mult=args.backbone_lr_mult, kpsem_lr_mult=args.kpsem_lr_mult,
        centre_lr_mult=args.centre_lr_mult, classifier_lr_mult=args.classifier_lr_mult, lr_steps=args.lr_steps,
        lr_factor=args.lr_factor, frames=args.frames, interval=args.interval, size=args.size, flip=args.flip,
        conv1_channels=args.conv1_channels, widths=args.widths, depths=args.depths, dropout=args.dropout,
        model_options=options, init=args.init, reinit_classifier=args.reinit_classifier,
        precision=precision_from_args(args),
        sync_bn=args.sync_bn, seed=args.seed, workers=args.workers, eval_batch_size=args.eval_batch_size,
        save_every=args.save_every, keep_checkpoints=args.keep_checkpoints, log_every=args.log_every,
        resume=args.resume, device=args.device, progress=args.progress,
    )


def run(args: argparse.Namespace) -> int:
    """Train; under torchrun every process runs this and rank 0 writes the run folder."""
    from kpsem.commands._precision import announce
    from kpsem.distributed import init_distributed, shutdown_distributed
    from kpsem.train import train

    config = config_from_args(args)
    dist_info = init_distributed(device=config.device)
    if dist_info.is_main:
        announce(dist_info.device, config.precision, what="training in ")
    try:
        result = train(config, dist_info=dist_info, command=[sys.executable, "-m", "kpsem", *sys.argv[1:]])
    finally:
        shutdown_distributed(dist_info)
    if dist_info.is_main:
        last = next((r for r in reversed(result.metrics) if r.get("event") == "epoch"), None)
        print(f"trained {result.epochs} epochs ({result.steps} steps); final checkpoint {result.final_checkpoint}")
        if last and "val_top1" in last:
            print(f"last validation: top-1 {last['val_top1']:.2%}, top-5 {last['val_top5']:.2%}")
    return 0
