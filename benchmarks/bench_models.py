"""Forward latency and train-step time of MFNet vs MF-KPSEM, interleaved in one run.

    python benchmarks/bench_models.py                 # CPU (and CUDA when present), 1x3x16x224x224
    python benchmarks/bench_models.py --rounds 20 --train-clip 16x224x224 --train-batch 2

Models are timed alternately (A, B, A, B, ...) so that machine noise hits both alike; the printed
ratio is median(MF-KPSEM) / median(MFNet) from the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

import kpsem


def _parse_clip(text: str) -> tuple[int, int, int]:
    frames, height, width = (int(v) for v in text.split("x"))
    return frames, height, width


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def interleaved(fns: dict[str, Callable[[], object]], rounds: int, warmup: int,
                device: torch.device) -> dict[str, list[float]]:
    """Time each function once per round, alternating their order every round."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for step in range(warmup + rounds):
        order = names if step % 2 == 0 else names[::-1]
        for name in order:
            elapsed = _timed(fns[name], device)
            if step >= warmup:
                times[name].append(elapsed)
    return times


def bench_device(device: torch.device, args: argparse.Namespace) -> None:
    models = {
        "mfnet": kpsem.create_model("mfnet", num_classes=args.num_classes).to(device),
        "mf_kpsem": kpsem.create_model("mf_kpsem", num_classes=args.num_classes, num_frames=args.clip[0]).to(device),
    }
    clip = torch.randn(1, 3, *args.clip, device=device)

    def forward(model: torch.nn.Module) -> Callable[[], object]:
        def run() -> object:
            with torch.inference_mode():
                return model(clip)

        return run

    for model in models.values():
        model.eval()
    times = interleaved({n: forward(m) for n, m in models.items()}, args.rounds, args.warmup, device)
    _report(f"forward 1x3x{'x'.join(map(str, args.clip))} ({device.type}, eval, inference_mode)", times)

    train_clip = torch.randn(args.train_batch, 3, *args.train_clip, device=device)
    labels = torch.randint(0, args.num_classes, (args.train_batch,), device=device)
    train_models = {
        "mfnet": kpsem.create_model("mfnet", num_classes=args.num_classes).to(device).train(),
        "mf_kpsem": kpsem.create_model("mf_kpsem", num_classes=args.num_classes,
                                       num_frames=args.train_clip[0]).to(device).train(),
    }

    def train_step(model: torch.nn.Module) -> Callable[[], object]:
        optimiser = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

        def run() -> object:
            optimiser.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(train_clip), labels)
            loss.backward()
            optimiser.step()
            return loss

        return run

    times = interleaved({n: train_step(m) for n, m in train_models.items()}, args.train_rounds, 1, device)
    _report(
        f"train step {args.train_batch}x3x{'x'.join(map(str, args.train_clip))} "
        f"({device.type}, SGD, straight-through KPSEM)",
        times,
    )


def _report(title: str, times: dict[str, list[float]]) -> None:
    base, ours = statistics.median(times["mfnet"]), statistics.median(times["mf_kpsem"])
    print(f"{title}: MFNet {base * 1000:.1f} ms, MF-KPSEM {ours * 1000:.1f} ms (median of {len(times['mfnet'])}), "
          f"ratio MF-KPSEM/MFNet = {ours / base:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", type=_parse_clip, default=(16, 224, 224), help="forward clip T x H x W")
    parser.add_argument("--rounds", type=int, default=10, help="timed forward rounds per model")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--train-clip", type=_parse_clip, default=(16, 112, 112), help="train-step clip T x H x W")
    parser.add_argument("--train-batch", type=int, default=4)
    parser.add_argument("--train-rounds", type=int, default=5)
    parser.add_argument("--num-classes", type=int, default=101)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--cpu-only", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    bench_device(torch.device("cpu"), args)
    if torch.cuda.is_available() and not args.cpu_only:
        print(f"CUDA: {torch.cuda.get_device_name()}")
        bench_device(torch.device("cuda"), args)


if __name__ == "__main__":
    main()
