"""fp32 against bf16 (and fp16) on the bundled demo: time ratio and agreement, both models, every demo clip.

    python benchmarks/bench_precision.py                       # assets/demo/*.pt on its 64 test clips
    python benchmarks/bench_precision.py --rounds 5 --precisions bf16,fp16 --batch-size 16

The clips are decoded once (by default one test clip per video, as ``kpsem evaluate --clips 1``), so only
the models are timed. Modes: the plain path (``contiguous`` layout, fp32), the default fast path (``channels_last_3d``,
fp32) and the fast path in each lower precision. Every batch runs in every mode, in an order that rotates
from batch to batch; a round is the whole clip set, and each ratio printed is the median over rounds of
that round's ratio, from this one run. Agreement is against fp32 on the fast path: the share of clips
whose top-1 class is the same, and the largest difference of any class probability.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from kpsem.checkpoint import load_checkpoint
from kpsem.models import set_memory_format
from kpsem.precision import cpu_bf16_support, resolve_precision

DEMO = Path(__file__).resolve().parents[1] / "assets" / "demo"


def load_clips(root: Path, info: object, clips_per_video: int,
               limit: int | None) -> tuple[torch.Tensor, np.ndarray]:
    """Every test video's clips as the checkpoint wants them: (N, 3, T, S, S) and the true labels."""
    from kpsem.data import ClipDataset, open_dataset

    index = open_dataset(root, split="test")
    dataset = ClipDataset(index, train=False, frames=info.clip_frames, size=info.clip_size,
                          clips_per_video=clips_per_video, mean=info.mean, std=info.std)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    items = [dataset[i] for i in range(count)]
    return torch.stack([item["clip"] for item in items]), np.array([int(item["label"]) for item in items])


def bench_model(path: Path, args: argparse.Namespace, device: torch.device) -> None:
    loaded = load_checkpoint(path, map_location=device)
    fast = loaded.model.eval()
    plain = set_memory_format(copy.deepcopy(fast), "contiguous")
    clips, labels = load_clips(args.data, loaded.info, args.clips_per_video, args.limit)
    batches = list(torch.split(clips, args.batch_size))
    modes = [("contiguous", "fp32"), ("channels_last_3d", "fp32")] + [("channels_last_3d", p) for p in args.precisions]
    contexts = {precision: resolve_precision(device, precision) for _, precision in modes}
    models = {"contiguous": plain, "channels_last_3d": fast}

    def run(mode: tuple[str, str], batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), contexts[mode[1]].autocast():
            return models[mode[0]](batch.to(device)).float()

    times = {mode: [] for mode in modes}
    probs: dict[tuple[str, str], list[np.ndarray]] = {mode: [] for mode in modes}
    for round_ in range(args.rounds + 1):  # round 0 warms up (allocator, oneDNN kernels) and keeps the outputs
        spent = dict.fromkeys(modes, 0.0)
        for b, batch in enumerate(batches):
            shift = (round_ * len(batches) + b) % len(modes)
            for mode in modes[shift:] + modes[:shift]:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                started = time.perf_counter()
                logits = run(mode, batch)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                spent[mode] += time.perf_counter() - started
                if round_ == 0:
                    probs[mode].append(torch.softmax(logits, dim=1).cpu().numpy())
        for mode in modes:
            if round_:
                times[mode].append(spent[mode])

    def ratio(a: tuple[str, str], b: tuple[str, str]) -> float:
        return statistics.median(x / y for x, y in zip(times[a], times[b]))

    p = {mode: np.concatenate(chunks) for mode, chunks in probs.items()}
    reference = ("channels_last_3d", "fp32")
    print(f"\n{path.name} ({loaded.info.arch}, {len(clips)} clips {loaded.info.clip_frames}x{loaded.info.clip_size}x"
          f"{loaded.info.clip_size}, batches of {args.batch_size}, median of {args.rounds} rounds)")
    print(f"  {'layout':17s} {'precision':9s} {'ms/clip':>8s} {'vs plain':>9s} {'vs fp32':>8s} {'top-1 agree':>12s} "
          f"{'max |dp|':>9s} {'accuracy':>9s}")
    for mode in modes:
        agree = float(np.mean(p[mode].argmax(1) == p[reference].argmax(1)))
        changed = int(np.sum(p[mode].argmax(1) != p[reference].argmax(1)))
        print(f"  {mode[0]:17s} {mode[1]:9s} {statistics.median(times[mode]) / len(clips) * 1e3:8.2f} "
              f"{ratio(mode, modes[0]):9.3f} {ratio(mode, reference):8.3f} {agree:11.1%}{'*' if changed else ' '} "
              f"{np.abs(p[mode] - p[reference]).max():9.1e} {np.mean(p[mode].argmax(1) == labels):9.1%}")
    print("  (* top-1 differs from fp32 on some clips; vs plain / vs fp32: time ratios to contiguous fp32 and "
          "to channels_last_3d fp32)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", nargs="+", type=Path, default=[DEMO / "mfnet.pt", DEMO / "mf_kpsem.pt"])
    parser.add_argument("--data", type=Path, default=DEMO / "clips", help="data set root (default: the demo clips)")
    parser.add_argument("--precisions", default="bf16", help="lower precisions to compare, e.g. bf16,fp16")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the clip set per mode")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--clips-per-video", type=int, default=1,
                        help="test clips per video, spread as in evaluate (default 1: the 64 demo videos, one each)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many clips (default: all)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    args.precisions = [p.strip() for p in args.precisions.split(",") if p.strip() and p.strip() != "fp32"]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}; {cpu_bf16_support()[1]}")
    print(f"auto on {device.type}: {resolve_precision(device, 'auto').describe()}")
    if hasattr(os, "getloadavg"):
        print(f"load average before: {', '.join(f'{v:.1f}' for v in os.getloadavg())} ({os.cpu_count()} logical CPUs)")
    for path in args.checkpoints:
        bench_model(path, args, device)
    if hasattr(os, "getloadavg"):
        print(f"\nload average after: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
