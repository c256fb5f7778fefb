"""Cost of a full two-model clip analysis (Grad-CAM at ``tail``) against one plain forward per model.

Run: ``python benchmarks/bench_explain.py [--repeats 5] [--device cpu|cuda] [--size 224]``.
Full-size MFNet and MF-KPSEM (101 classes) on a 1x3x16x224x224 clip; the two measurements are
interleaved in one run, so drift in machine load hits both alike. Target: ratio <= 1.3x.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from _timing import sync  # benchmarks/, beside this script

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kpsem import create_model
from kpsem.explain.analysis import analyse_pair


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (after one warm-up round)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=224, help="clip side")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--classes", type=int, default=101)
    parser.add_argument("--cam-layer", default="tail")
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    baseline = create_model("mfnet", num_classes=args.classes).to(device).eval()
    kpsem_model = create_model("mf_kpsem", num_classes=args.classes, num_frames=args.frames).to(device).eval()
    clip = torch.randn(1, 3, args.frames, args.size, args.size, device=device)

    def timed(fn: object) -> tuple[float, float]:
        """(wall seconds, this process's CPU seconds) of one call."""
        sync(device)
        wall, cpu = time.perf_counter(), time.process_time()
        fn()  # type: ignore[operator]
        sync(device)
        return time.perf_counter() - wall, time.process_time() - cpu

    def plain() -> None:
        with torch.no_grad():
            baseline(clip)
            kpsem_model(clip)

    def analysis() -> None:
        analyse_pair(baseline, kpsem_model, clip, cam_layer=args.cam_layer)

    timed(plain), timed(analysis)  # warm-up
    plain_times, analysis_times = [], []
    for _ in range(args.repeats):
        plain_times.append(timed(plain))
        analysis_times.append(timed(analysis))
    # On a shared machine, load from other processes only ever adds time: the minimum of each is the
    # least disturbed measurement, and the median of per-round ratios is a second, paired view. On the
    # CPU, process time (CPU seconds used by this process) is less sensitive to other processes.
    p, a = min(t[0] for t in plain_times), min(t[0] for t in analysis_times)
    paired = statistics.median(t_a[0] / t_p[0] for t_a, t_p in zip(analysis_times, plain_times))
    p_cpu, a_cpu = min(t[1] for t in plain_times), min(t[1] for t in analysis_times)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; clip 1x3x{args.frames}x{args.size}x{args.size}; "
          f"{args.classes} classes; {args.repeats} interleaved rounds, minima")
    print(f"plain forward, MFNet + MF-KPSEM:            {p * 1e3:9.1f} ms")
    print(f"full two-model analysis (CAM at {args.cam_layer}):  {a * 1e3:9.1f} ms")
    print(f"ratio analysis / plain forward: {a / p:.3f}x (median of per-round ratios {paired:.3f}x; target <= 1.3x)")
    if device.type == "cpu":
        print(f"process CPU time: plain {p_cpu:.2f} s, analysis {a_cpu:.2f} s, ratio {a_cpu / p_cpu:.3f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
