"""Forward and train-step time of MFNet and MF-KPSEM in each memory format and precision, interleaved in one run.

    python benchmarks/bench_models.py                  # CPU (and CUDA when present), 1x3x16x224x224
    python benchmarks/bench_models.py --rounds 20 --train-rounds 4 --precisions fp32,bf16

Modes: the plain path (``contiguous`` layout, fp32), the default fast path (``channels_last_3d``, fp32) and
the fast path under each other precision asked for (default: bf16 where ``auto`` picks it, i.e. CUDA and
CPUs with native bf16). Every (model, mode) pair is timed once per round and the order rotates every round,
so machine noise hits all alike; every ratio printed is the median over rounds of that round's ratio,
measured in this one run, for wall-clock time and (in brackets) for this process's CPU time, which other
jobs on a shared machine disturb far less. The fast path's outputs are checked against the plain path's.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

import kpsem
from kpsem.models import set_memory_format
from kpsem.precision import cpu_bf16_support, resolve_precision

PLAIN = ("contiguous", "fp32")


def _parse_clip(text: str) -> tuple[int, int, int]:
    frames, height, width = (int(v) for v in text.split("x"))
    return frames, height, width


def _timed(fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """(wall-clock seconds, this process's CPU seconds) of one call."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, time.process_time() - cpu_start


def interleaved(fns: dict[tuple, Callable[[], object]], rounds: int, warmup: int,
                device: torch.device) -> dict[tuple, list[tuple[float, float]]]:
    """Time each function once per round; the order rotates by one place every round."""
    times: dict[tuple, list[tuple[float, float]]] = {name: [] for name in fns}
    names = list(fns)
    for step in range(warmup + rounds):
        shift = step % len(names)
        for name in names[shift:] + names[:shift]:
            elapsed = _timed(fns[name], device)
            if step >= warmup:
                times[name].append(elapsed)
    return times


def ratio(times: dict[tuple, list[tuple[float, float]]], a: tuple, b: tuple, which: int = 0) -> float:
    """Median over rounds of time(a) / time(b) in that round (which: 0 wall-clock, 1 CPU time)."""
    return statistics.median(x[which] / y[which] for x, y in zip(times[a], times[b]))


def both(times: dict[tuple, list[tuple[float, float]]], a: tuple, b: tuple) -> str:
    """The wall-clock ratio, and the CPU-time one in brackets."""
    return f"{ratio(times, a, b):.3f} [{ratio(times, a, b, 1):.3f}]"


def wall_ms(times: dict[tuple, list[tuple[float, float]]], key: tuple) -> float:
    return statistics.median(t[0] for t in times[key]) * 1e3


def _models(args: argparse.Namespace, frames: int) -> dict[tuple[str, str], torch.nn.Module]:
    """(arch, layout) -> model; both layouts of an architecture share its weights."""
    torch.manual_seed(0)
    out = {}
    for arch in ("mfnet", "mf_kpsem"):
        extra = {"num_frames": frames} if arch == "mf_kpsem" else {}
        fast = kpsem.create_model(arch, num_classes=args.num_classes, **extra)
        if arch == "mf_kpsem":
            with torch.no_grad():  # centres off the geometric centre, as after training: every split is used
                fast.kpsem.centre_out.weight.normal_(std=0.5)
        out[(arch, "channels_last_3d")] = fast
        out[(arch, "contiguous")] = set_memory_format(copy.deepcopy(fast), "contiguous")
    return out


def _report(title: str, times: dict[tuple, list[tuple[float, float]]], modes: list[tuple[str, str]]) -> None:
    rounds = len(next(iter(times.values())))
    print(f"\n{title} (median of {rounds} interleaved rounds; ratios: wall-clock [CPU time])")
    print(f"  {'layout':17s} {'precision':9s} {'MFNet ms':>9s} {'MF-KPSEM ms':>12s} {'KPSEM/MFNet':>16s} "
          f"{'MFNet vs plain':>16s} {'MF-KPSEM vs plain':>18s}")
    for layout, precision in modes:
        base, ours = ("mfnet", layout, precision), ("mf_kpsem", layout, precision)
        print(f"  {layout:17s} {precision:9s} {wall_ms(times, base):9.1f} {wall_ms(times, ours):12.1f} "
              f"{both(times, ours, base):>16s} {both(times, base, ('mfnet', *PLAIN)):>16s} "
              f"{both(times, ours, ('mf_kpsem', *PLAIN)):>18s}")


def bench_device(device: torch.device, args: argparse.Namespace) -> None:
    precisions = [p for p in args.precisions if p != "fp32"]
    modes = [PLAIN, ("channels_last_3d", "fp32")] + [("channels_last_3d", p) for p in precisions]
    if args.plain_low_precision:
        modes += [("contiguous", p) for p in precisions]
    for precision in precisions:
        print(f"{device.type}: {resolve_precision(device, precision).describe()}")

    models = {key: model.to(device).eval() for key, model in _models(args, args.clip[0]).items()}
    clip = torch.randn(1, 3, *args.clip, device=device)
    with torch.inference_mode():
        for arch in ("mfnet", "mf_kpsem"):
            fast, plain = models[(arch, "channels_last_3d")](clip), models[(arch, "contiguous")](clip)
            print(f"{arch}: channels_last_3d vs contiguous fp32 logits, max |difference| "
                  f"{(fast - plain).abs().max().item():.1e}")

    def forward(model: torch.nn.Module, precision: str) -> Callable[[], object]:
        context = resolve_precision(device, precision)

        def run() -> object:
            with torch.inference_mode(), context.autocast():
                return model(clip)

        return run

    if args.rounds > 0:
        fns = {(arch, layout, precision): forward(models[(arch, layout)], precision)
               for layout, precision in modes for arch in ("mfnet", "mf_kpsem")}
        times = interleaved(fns, args.rounds, args.warmup, device)
        _report(f"forward 1x3x{'x'.join(map(str, args.clip))} ({device.type}, eval, inference_mode)", times, modes)

    if args.train_rounds <= 0:
        return
    train_models = {key: model.to(device).train() for key, model in _models(args, args.train_clip[0]).items()}
    train_clip = torch.randn(args.train_batch, 3, *args.train_clip, device=device)
    labels = torch.randint(0, args.num_classes, (args.train_batch,), device=device)

    def train_step(model: torch.nn.Module, precision: str) -> Callable[[], object]:
        optimiser = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        context = resolve_precision(device, precision)
        scaler = torch.amp.GradScaler(device.type, enabled=context.name == "fp16")

        def run() -> object:
            optimiser.zero_grad(set_to_none=True)
            with context.autocast():
                loss = F.cross_entropy(model(train_clip).float(), labels)
            scaler.scale(loss).backward()
            scaler.step(optimiser)
            scaler.update()
            return loss

        return run

    fns = {(arch, layout, precision): train_step(train_models[(arch, layout)], precision)
           for layout, precision in modes for arch in ("mfnet", "mf_kpsem")}
    times = interleaved(fns, args.train_rounds, 1, device)
    _report(f"train step {args.train_batch}x3x{'x'.join(map(str, args.train_clip))} ({device.type}, SGD, "
            "straight-through KPSEM)", times, modes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", type=_parse_clip, default=(16, 224, 224), help="forward clip T x H x W")
    parser.add_argument("--rounds", type=int, default=10, help="timed forward rounds per model and mode (0: none)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--train-clip", type=_parse_clip, default=(16, 112, 112), help="train-step clip T x H x W")
    parser.add_argument("--train-batch", type=int, default=4)
    parser.add_argument("--train-rounds", type=int, default=3, help="timed train-step rounds (0: none)")
    parser.add_argument("--precisions", default=None,
                        help="comma-separated, from fp32, bf16, fp16 (default: fp32, plus bf16 where auto picks it)")
    parser.add_argument("--plain-low-precision", action="store_true",
                        help="also time the contiguous layout in the lower precisions")
    parser.add_argument("--num-classes", type=int, default=101)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--cpu-only", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}; {cpu_bf16_support()[1]}")
    if hasattr(os, "getloadavg"):
        print(f"load average before: {', '.join(f'{v:.1f}' for v in os.getloadavg())} "
              f"({os.cpu_count()} logical CPUs); a load above that count means the figures were measured under load")
    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and not args.cpu_only:
        devices.append(torch.device("cuda"))
        print(f"CUDA: {torch.cuda.get_device_name()}")
    for device in devices:
        device_args = copy.copy(args)
        if args.precisions is None:
            auto = resolve_precision(device, "auto").name
            device_args.precisions = ["fp32"] + ([auto] if auto != "fp32" else [])
        else:
            device_args.precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
        bench_device(device, device_args)
    if hasattr(os, "getloadavg"):
        print(f"\nload average after: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
