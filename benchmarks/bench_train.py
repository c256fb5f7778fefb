"""Training throughput: MFNet vs MF-KPSEM clips per second, and the data loader against the model.

    python benchmarks/bench_train.py                       # ~1-2 min on a 2-core CPU (half width, 112 px)
    python benchmarks/bench_train.py --size 224 --full     # the paper's model and clip (GPU)
    python benchmarks/bench_train.py --data ROOT           # loader on a real data set instead of synth videos
    python benchmarks/bench_train.py --threads 1           # steadiest model ratio on a shared CPU

Model steps are :func:`kpsem.train.train_step`, the very step training takes (forward under the
precision's autocast, backward through the scaler, SGD with the recipe's parameter groups), on random
clips; the two models alternate round by round so that load from other processes hits both alike, and
the reported figure is the median over rounds. The loader is :class:`kpsem.data.ClipDataset`
with training augmentation through a DataLoader, on synthetic videos written to a temporary folder
unless ``--data`` is given. Target: MF-KPSEM >= 0.9x MFNet; loader faster than the model.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from _timing import sync  # benchmarks/, beside this script
from torch.utils.data import DataLoader

from kpsem.distributed import pick_device
from kpsem.precision import resolve_precision
from kpsem.train import TrainConfig, build_model, build_optimizer, grad_scaler, train_step
from kpsem.train_config import parse_ints


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=16, help="frames per clip (default 16)")
    parser.add_argument("--size", type=int, default=112, help="clip side, multiple of 16 (default 112; paper 224)")
    parser.add_argument("--batch-size", type=int, default=2, help="clips per step (default 2)")
    parser.add_argument("--widths", type=parse_ints, default=(48, 96, 192, 384),
                        help="conv2..conv5 widths (default half)")
    parser.add_argument("--depths", type=parse_ints, default=(3, 4, 6, 3), help="conv2..conv5 units (default MFNet's)")
    parser.add_argument("--full", action="store_true", help="the paper's MFNet widths (96,192,384,768)")
    parser.add_argument("--classes", type=int, default=10, help="classifier outputs")
    parser.add_argument("--rounds", type=int, default=8, help="timed rounds per model (default 8)")
    parser.add_argument("--steps", type=int, default=3, help="optimiser steps per round (default 3)")
    parser.add_argument("--precision", default="fp32", choices=["auto", "fp32", "bf16", "fp16"],
                        help="fp32 (default: the README's figures), bf16 or fp16 autocast, or auto (bf16 on "
                             "CUDA and on CPUs with native bf16)")
    parser.add_argument("--amp", default=None, choices=["auto", "bf16", "fp16", "off"],
                        help="deprecated: --precision (off is fp32)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default; 1 gives steadier figures on a shared CPU)")
    parser.add_argument("--data", default=None, help="data set root for the loader test (default: synthetic videos)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader processes for the loader test")
    parser.add_argument("--loader-clips", type=int, default=48, help="clips the loader test reads")
    parser.add_argument("--skip-loader", action="store_true")
    args = parser.parse_args(argv)
    if args.amp is not None:  # the old option: its off is fp32
        args.precision = "fp32" if args.amp == "off" else args.amp
    if args.full:
        args.widths = (96, 192, 384, 768)
    return args




def bench_models(args: argparse.Namespace, device: torch.device) -> dict[str, dict[str, float]]:
    """Per model: best and median wall-clock training clips/s over alternating rounds, and clips per
    CPU-second of this process (on a shared CPU the latter is much less disturbed by other jobs)."""
    steps = {}
    for arch in ("mfnet", "mf_kpsem"):
        config = TrainConfig(arch=arch, frames=args.frames, size=args.size, widths=args.widths, depths=args.depths,
                             precision=args.precision)
        torch.manual_seed(0)
        model, _ = build_model(config, args.classes)
        model.to(device).train()
        optimizer, _ = build_optimizer(model, config)  # the recipe's SGD and parameter groups, as train builds them
        precision = resolve_precision(device, config.precision)
        clips = torch.randn(args.batch_size, 3, args.frames, args.size, args.size, device=device)  # (N, 3, T, S, S)
        labels = torch.randint(0, args.classes, (args.batch_size,), device=device)
        steps[arch] = functools.partial(train_step, model, clips, labels, optimizer=optimizer,
                                        scaler=grad_scaler(device, precision), precision=precision)
    for step in steps.values():  # warm-up: allocator, oneDNN/cuDNN kernel choice
        step()
        step()
    wall: dict[str, list[float]] = {arch: [] for arch in steps}
    cpu: dict[str, float] = dict.fromkeys(steps, 0.0)
    order = list(steps)
    for round_ in range(args.rounds):
        for arch in order if round_ % 2 == 0 else order[::-1]:  # ABBA: neither model always goes first
            sync(device)
            started, cpu_started = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                steps[arch]()
            sync(device)
            wall[arch].append(args.steps * args.batch_size / (time.perf_counter() - started))
            cpu[arch] += time.process_time() - cpu_started
    clips = args.rounds * args.steps * args.batch_size
    return {
        arch: {"best": max(wall[arch]), "median": statistics.median(wall[arch]), "per_cpu_s": clips / cpu[arch]}
        for arch in steps
    }


def bench_loader(args: argparse.Namespace) -> tuple[float, str]:
    """Training clips/s that ClipDataset + DataLoader deliver, and a description of the data."""
    from kpsem.data import ClipDataset, open_dataset

    with tempfile.TemporaryDirectory(prefix="kpsem-bench-") as tmp:
        root = args.data
        if root is None:
            from kpsem.data.synth import SynthConfig, generate

            side = max(128, (args.size * 9 // 7 + 1) // 2 * 2)  # room for the [S, 9S/7] random scale; even
            summary = generate(Path(tmp) / "synth", SynthConfig(videos_per_class=5, split=(0.6, 0.2, 0.2),
                                                                frames=max(32, 2 * args.frames), size=side))
            root = summary.out_dir
            what = f"{sum(summary.counts.values())} synthetic {summary.format} videos, {side}x{side}"
        index = open_dataset(root, split="train")
        what = what if args.data is None else f"{index.layout} {len(index.videos)} videos at {root}"
        dataset = ClipDataset(index, train=True, frames=args.frames, size=args.size)
        loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                            drop_last=True, persistent_workers=False)
        done, started = 0, None
        while done < args.loader_clips:
            for batch in loader:
                if started is None:  # exclude worker start-up and the first decode
                    started = time.perf_counter()
                    continue
                done += len(batch["clip"])
                if done >= args.loader_clips:
                    break
        return done / (time.perf_counter() - started), what


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(0, args.device)
    clip = f"{args.frames}x{args.size}x{args.size}"
    precision = resolve_precision(device, args.precision).describe()
    print(f"device {device} ({torch.get_num_threads()} threads), {precision}, "
          f"clip {clip}, batch {args.batch_size}, widths {args.widths}, depths {args.depths}")
    rates = bench_models(args, device)
    for arch, label in (("mfnet", "MFNet   "), ("mf_kpsem", "MF-KPSEM")):
        r = rates[arch]
        print(f"train  {label}  best {r['best']:7.2f} clips/s, median {r['median']:7.2f} clips/s, "
              f"{r['per_cpu_s']:7.2f} clips per CPU-second")
    wall_ratio = rates["mf_kpsem"]["best"] / rates["mfnet"]["best"]
    cpu_ratio = rates["mf_kpsem"]["per_cpu_s"] / rates["mfnet"]["per_cpu_s"]
    print(f"MF-KPSEM / MFNet training throughput: {wall_ratio:.2f}x wall-clock (best rounds), {cpu_ratio:.2f}x per "
          f"CPU-second (target >= 0.90x) [{args.rounds} interleaved rounds x {args.steps} steps]")
    if not args.skip_loader:
        loaded, what = bench_loader(args)
        fastest = max(r["best"] for r in rates.values())
        verdict = "not the bottleneck" if loaded >= fastest else "THE BOTTLENECK: add --workers"
        print(f"loader {loaded:8.2f} clips/s ({args.workers} workers, train augmentation, {what})")
        print(f"loader / fastest model step: {loaded / fastest:.1f}x -> loader is {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
