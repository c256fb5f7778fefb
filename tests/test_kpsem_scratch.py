"""KPSEM's kept working buffers (kpsem_module._scratch): no result aliases them, and they follow shape,
dtype and inference mode from call to call."""

from __future__ import annotations

import threading

import torch

from kpsem.models.kpsem_module import KPSEM, KPSEMConfig


def _module(num_regions: int = 4) -> KPSEM:
    torch.manual_seed(0)
    module = KPSEM(KPSEMConfig(in_channels=16, num_frames=4, num_regions=num_regions)).eval()
    if module.has_centre_mlp:
        with torch.no_grad():
            module.centre_out.weight.normal_(std=0.5)
    return module


def _internals(module: KPSEM, features: torch.Tensor) -> list[torch.Tensor]:
    temporal, internals = module(features, return_internals=True)
    return [temporal.clone(), internals.key_points.clone(), internals.values.clone(), internals.rkps.clone()]


def test_results_survive_later_calls_of_other_shapes_dtypes_and_modes() -> None:
    """A result read after further calls (which rewrite the kept buffers) is what a lone call gives."""
    for num_regions in (4, 9):
        module = _module(num_regions)
        first = torch.randn(2, 16, 4, 6, 7)
        with torch.no_grad():
            expected = _internals(module, first)
            kept, _ = module(first, return_internals=True)
        others = [torch.randn(1, 16, 4, 5, 5), torch.randn(2, 16, 4, 6, 7).to(torch.bfloat16)]
        for other in others:
            with torch.inference_mode():
                module(other)
            with torch.no_grad():
                module(other)
        torch.testing.assert_close(kept, expected[0], rtol=0, atol=0)
        with torch.no_grad():
            again = _internals(module, first)
        for a, b in zip(again, expected):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_threads_keep_their_own_buffers() -> None:
    """Concurrent callers on two threads get what each gets alone."""
    module = _module()
    inputs = [torch.randn(1, 16, 4, 8, 8), torch.randn(1, 16, 4, 8, 8)]
    with torch.no_grad():
        expected = [module(x) for x in inputs]
    results: dict[int, list[torch.Tensor]] = {0: [], 1: []}

    def work(i: int) -> None:
        with torch.no_grad():
            for _ in range(20):
                results[i].append(module(inputs[i]))

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i in (0, 1):
        for result in results[i]:
            torch.testing.assert_close(result, expected[i], rtol=0, atol=0)
