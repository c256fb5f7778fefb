"""Evaluation throughput: clips per second of ``evaluate`` against the bare model on the same batch.

    python benchmarks/bench_evaluate.py                        # ~2 min on a 2-core CPU (half width, 112 px)
    python benchmarks/bench_evaluate.py --full --size 224 --videos-per-class 20 --batch-size 16 --workers 8  # GPU
    python benchmarks/bench_evaluate.py --precision auto --rounds 5

``evaluate`` is the real function (:func:`kpsem.evaluate.evaluate_checkpoint`: the checkpoint loaded, the
data set indexed, the videos decoded in ``--workers`` DataLoader processes ahead of the model, the table
built), timed end to end on a synthetic data set that this script writes to a temporary folder with the
project's generator (:func:`kpsem.data.synth.generate`; H.264 where PyAV has libx264). The bare model is
the same checkpoint's model run on one random batch of the same shape, as many batches as ``evaluate``
scored clips, in the same precision, under ``torch.no_grad`` like ``evaluate``. The two alternate round by
round so that load from other processes hits both alike; each figure is the median over rounds, and the
ratio the median of each round's ratio. Target: ``evaluate`` >= 0.8x the bare model (the loader is not the
bottleneck).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from _timing import sync  # benchmarks/, beside this script

from kpsem.checkpoint import load_checkpoint, save_checkpoint
from kpsem.data.synth import SynthConfig, generate
from kpsem.distributed import current, pick_device
from kpsem.evaluate import evaluate_checkpoint
from kpsem.models import create_model
from kpsem.precision import cpu_bf16_support, resolve_precision
from kpsem.train_config import parse_ints


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=16, help="frames per clip (default 16)")
    parser.add_argument("--size", type=int, default=112, help="clip side, multiple of 16 (default 112; paper 224)")
    parser.add_argument("--widths", type=parse_ints, default=(48, 96, 192, 384),
                        help="conv2..conv5 widths (default half)")
    parser.add_argument("--full", action="store_true", help="the paper's MFNet widths (96,192,384,768)")
    parser.add_argument("--arch", default="mfnet", help="mfnet or mf_kpsem (default mfnet)")
    parser.add_argument("--videos-per-class", type=int, default=20,
                        help="synthetic videos per class over all splits; the test split holds 20%% (default 20)")
    parser.add_argument("--classes", type=int, default=8, help="synthetic classes (default 8)")
    parser.add_argument("--video-size", type=int, default=0,
                        help="side of the synthetic videos (default: the clip size x 8/7, the test resize)")
    parser.add_argument("--clips", type=int, default=2, help="clips per video (default 2)")
    parser.add_argument("--protocol", default="centre", help="evaluation protocol (default centre)")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per batch (default 8)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader processes (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of each (default 3)")
    parser.add_argument("--precision", default="fp32", choices=["auto", "fp32", "bf16", "fp16"],
                        help="fp32 (default) or a lower precision, for both")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--data", default=None, help="a data set root to evaluate instead of synthetic videos")
    args = parser.parse_args(argv)
    if args.full:
        args.widths = (96, 192, 384, 768)
    return args




def cpu_line() -> str:
    """The CPU as other benchmarks print it: model name, logical CPUs, the flags that matter, torch's view."""
    model, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown CPU":
                model = value.strip()
            if key.strip() in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return (f"{model}, {os.cpu_count()} logical CPUs, flags {' '.join(shown) or 'unknown'}; torch {torch.__version__} "
            f"sees {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads")


def make_data(root: Path, args: argparse.Namespace) -> Path:
    from kpsem.data.synth import SYNTH_CLASSES

    side = args.video_size or 2 * round(args.size * 8 / 7 / 2)  # even; the centre protocol's test short side
    config = SynthConfig(classes=tuple(SYNTH_CLASSES)[:args.classes], videos_per_class=args.videos_per_class,
                         frames=max(32, 2 * args.frames), size=side, difficulty="easy", seed=0)
    summary = generate(root, config)
    print(f"data: {summary.counts['test']} test videos ({summary.format}, {config.frames} frames of {side}x{side} px) "
          f"written to a temporary folder in {summary.seconds:.1f} s")
    return root


def bare_rate(model: torch.nn.Module, batch: torch.Tensor, clips: int, precision: object) -> float:
    """Clips per second of the model alone on ``batch``, for ``clips`` clips (whole batches)."""
    device = batch.device
    steps = max(1, -(-clips // len(batch)))
    sync(device)
    started = time.perf_counter()
    with torch.no_grad():
        for _ in range(steps):
            with precision.autocast():
                model(batch).float().softmax(dim=1).cpu()  # what evaluate does with the scores
    sync(device)
    return steps * len(batch) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = pick_device(0, args.device)
    print(cpu_line())
    if hasattr(os, "getloadavg"):
        print(f"load average before: {', '.join(f'{v:.1f}' for v in os.getloadavg())} ({os.cpu_count()} logical "
              "CPUs); a load above that count means the figures were measured under load")
    print(f"device {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
          + f"; {cpu_bf16_support()[1]}")
    with tempfile.TemporaryDirectory(prefix="kpsem_bench_eval_") as tmp:
        data = Path(args.data) if args.data else make_data(Path(tmp) / "data", args)
        classes = [line for line in (data / "classes.txt").read_text().splitlines() if line] if not args.data else None
        if classes is None:
            from kpsem.data import open_dataset

            classes = open_dataset(data, split="test").class_names
        torch.manual_seed(0)
        extra = {"backbone": {"widths": args.widths}, "num_frames": args.frames} if args.arch == "mf_kpsem" else {
            "widths": args.widths}
        model = create_model(args.arch, num_classes=len(classes), **extra).eval()
        checkpoint = save_checkpoint(Path(tmp) / "bench.pt", model, class_names=classes, clip_frames=args.frames,
                                     clip_size=args.size)
        dist_info = current(device)
        model = load_checkpoint(checkpoint, map_location=device).model.eval()  # as evaluate loads it
        precision = resolve_precision(device, args.precision)
        batch = torch.randn(args.batch_size, 3, args.frames, args.size, args.size, device=device)
        print(f"model {args.arch} widths {args.widths}, clips {args.frames}x{args.size}x{args.size}, batch "
              f"{args.batch_size}, {args.workers} workers, protocol {args.protocol} x {args.clips} clips, "
              f"{precision.describe()}")

        def run_evaluate() -> tuple[float, int]:
            started = time.perf_counter()
            result = evaluate_checkpoint(checkpoint, data=data, clips=args.clips, protocol=args.protocol,
                                         batch_size=args.batch_size, workers=args.workers, precision=args.precision,
                                         dist_info=dist_info)
            sync(device)
            return result.num_clips / (time.perf_counter() - started), result.num_clips

        _, clips = run_evaluate()  # warm-up: page cache, oneDNN kernels, cuDNN autotuning
        bare_rate(model, batch, args.batch_size * 2, precision)
        evaluated, bare, ratios = [], [], []
        for round_ in range(args.rounds):
            first, second = (run_evaluate, None) if round_ % 2 == 0 else (None, run_evaluate)
            if first is not None:
                evaluated.append(first()[0])
            bare.append(bare_rate(model, batch, clips, precision))
            if second is not None:
                evaluated.append(second()[0])
            ratios.append(evaluated[-1] / bare[-1])
            print(f"  round {round_ + 1}: evaluate {evaluated[-1]:7.2f} clips/s, bare model {bare[-1]:7.2f} clips/s, "
                  f"ratio {ratios[-1]:.3f}")
    ratio = statistics.median(ratios)
    print(f"evaluate   {statistics.median(evaluated):8.2f} clips/s (median of {args.rounds} rounds of {clips} clips; "
          "end to end: load, index, decode, model, table)")
    print(f"bare model {statistics.median(bare):8.2f} clips/s (the same model on one batch of {args.batch_size})")
    print(f"evaluate / bare model: {ratio:.3f}x (target >= 0.80x) -> "
          + ("the loader is not the bottleneck" if ratio >= 0.8 else "evaluation waits on something besides the model"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
