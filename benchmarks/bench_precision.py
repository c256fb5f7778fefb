"""fp32 against bf16 (and fp16) on the bundled demo: time ratio and agreement, both models, every demo clip.

    python benchmarks/bench_precision.py                       # assets/demo/*.pt on its 64 test clips
    python benchmarks/bench_precision.py --rounds 5 --precisions bf16,fp16 --batch-size 16

The clips are decoded once (by default one test clip per video, as ``kpsem evaluate --clips 1``), so only
the models are timed. Modes: the plain path (``contiguous`` layout, fp32), the default fast path
(``channels_last_3d``, fp32) and the fast path in each lower precision. Every batch runs in every mode, in
an order that rotates from batch to batch; a round is the whole clip set of every model, after one warm-up
pass of all of them, and each ratio printed is the median over rounds of that round's ratio, from this one
run, for wall-clock time and (in brackets) for this process's CPU time, which other jobs on a shared
machine disturb far less. Agreement is against fp32 on the fast path: the share of clips whose top-1 class
is the same (and how many changed), and the largest difference of any class probability.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kpsem.checkpoint import load_checkpoint
from kpsem.models import set_memory_format
from kpsem.precision import cpu_bf16_support, resolve_precision

DEMO = Path(__file__).resolve().parents[1] / "assets" / "demo"


def load_clips(root: Path, info: Any, clips_per_video: int,
               limit: int | None) -> tuple[torch.Tensor, np.ndarray]:
    """Every test video's clips as the checkpoint wants them: (N, 3, T, S, S) and the true labels."""
    from kpsem.data import ClipDataset, open_dataset

    index = open_dataset(root, split="test")
    dataset = ClipDataset(index, train=False, frames=info.clip_frames, size=info.clip_size,
                          clips_per_video=clips_per_video, mean=info.mean, std=info.std)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    items = [dataset[i] for i in range(count)]
    return torch.stack([item["clip"] for item in items]), np.array([int(item["label"]) for item in items])


Mode = tuple[str, str]  # (layout, precision)


@dataclass
class Prepared:
    """One checkpoint ready to time: its two layouts, its clips in batches, and what was measured."""

    path: Path
    info: Any  # kpsem.checkpoint.CheckpointInfo
    models: dict[str, torch.nn.Module]  # layout -> model (shared weights)
    batches: list[torch.Tensor]
    labels: np.ndarray
    probs: dict[Mode, list[np.ndarray]] = field(default_factory=dict)  # from the warm-up pass
    times: dict[Mode, list[tuple[float, float]]] = field(default_factory=dict)  # per round: (wall, CPU) seconds


def prepare(path: Path, args: argparse.Namespace, device: torch.device) -> Prepared:
    loaded = load_checkpoint(path, map_location=device)
    fast = loaded.model.eval()
    plain = set_memory_format(copy.deepcopy(fast), "contiguous")
    clips, labels = load_clips(args.data, loaded.info, args.clips_per_video, args.limit)
    return Prepared(path, loaded.info, {"contiguous": plain, "channels_last_3d": fast},
                    list(torch.split(clips, args.batch_size)), labels)


def run_pass(item: Prepared, modes: list[Mode], contexts: dict[str, Any], device: torch.device, shift: int,
             keep: bool) -> dict[Mode, tuple[float, float]]:
    """Every batch in every mode, the order rotating from batch to batch: (wall, CPU) seconds per mode."""
    spent = {mode: [0.0, 0.0] for mode in modes}
    for b, batch in enumerate(item.batches):
        start = (shift + b) % len(modes)
        for mode in modes[start:] + modes[:start]:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            wall, cpu = time.perf_counter(), time.process_time()
            with torch.inference_mode(), contexts[mode[1]].autocast():
                logits = item.models[mode[0]](batch.to(device)).float()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            spent[mode][0] += time.perf_counter() - wall
            spent[mode][1] += time.process_time() - cpu
            if keep:
                item.probs.setdefault(mode, []).append(torch.softmax(logits, dim=1).cpu().numpy())
    return {mode: (w, c) for mode, (w, c) in spent.items()}


def report(item: Prepared, modes: list[Mode], rounds: int, batch_size: int) -> None:
    def ratio(a: Mode, b: Mode, which: int) -> float:
        return statistics.median(x[which] / y[which] for x, y in zip(item.times[a], item.times[b]))

    p = {mode: np.concatenate(chunks) for mode, chunks in item.probs.items()}
    reference = ("channels_last_3d", "fp32")
    count = len(item.labels)
    print(f"\n{item.path.name} ({item.info.arch}, {count} clips {item.info.clip_frames}x{item.info.clip_size}x"
          f"{item.info.clip_size}, batches of {batch_size}, median of {rounds} rounds; ratios: wall-clock [CPU time])")
    print(f"  {'layout':17s} {'precision':9s} {'ms/clip':>8s} {'vs plain':>16s} {'vs fp32':>16s} "
          f"{'top-1 agree (clips changed)':>28s} {'max |dp|':>9s} {'accuracy':>9s}")
    for mode in modes:
        agree = float(np.mean(p[mode].argmax(1) == p[reference].argmax(1)))
        changed = int(np.sum(p[mode].argmax(1) != p[reference].argmax(1)))
        ms = statistics.median(t[0] for t in item.times[mode]) / count * 1e3
        plain = f"{ratio(mode, modes[0], 0):.3f} [{ratio(mode, modes[0], 1):.3f}]"
        fp32 = f"{ratio(mode, reference, 0):.3f} [{ratio(mode, reference, 1):.3f}]"
        agreement = f"{agree:.1%} ({changed})"
        print(f"  {mode[0]:17s} {mode[1]:9s} {ms:8.2f} {plain:>16s} {fp32:>16s} {agreement:>28s} "
              f"{np.abs(p[mode] - p[reference]).max():9.1e} {np.mean(p[mode].argmax(1) == item.labels):9.1%}")
    print("  (vs plain / vs fp32: time ratios to contiguous fp32 and to channels_last_3d fp32; agreement and max |dp|:"
          " against channels_last_3d fp32)")


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
    modes: list[Mode] = [("contiguous", "fp32"), ("channels_last_3d", "fp32")]
    modes += [("channels_last_3d", p) for p in args.precisions]
    contexts = {precision: resolve_precision(device, precision) for _, precision in modes}
    items = [prepare(path, args, device) for path in args.checkpoints]
    # A warm-up pass of every model first (allocator, oneDNN kernels; it also gives the outputs compared),
    # then the timed rounds, models and modes taking turns, so that no model is measured on a cold machine.
    for item in items:
        run_pass(item, modes, contexts, device, shift=0, keep=True)
    for round_ in range(args.rounds):
        for i in range(len(items)):
            item = items[(round_ + i) % len(items)]
            for mode, spent in run_pass(item, modes, contexts, device, shift=round_, keep=False).items():
                item.times.setdefault(mode, []).append(spent)
    for item in items:
        report(item, modes, args.rounds, args.batch_size)
    if hasattr(os, "getloadavg"):
        print(f"\nload average after: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
