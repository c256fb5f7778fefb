"""The fast path is the default: models run in channels_last_3d, and nothing else about them changes.

Checked here: every weight and the input clip take that layout, outputs equal the plain (contiguous)
path's, state dicts and saved checkpoints are the same, published weights load the same, ``.to()`` keeps
the layout, KPSEM reads channels_last maps exactly (its quadrant search against a naive masked argmax,
ties included, in float32 and bfloat16), Grad-CAM hooks see the same maps, and a training step takes the
same step; MFNet's fused eval-mode units equal the module-by-module path (values, gradients) and step aside
for hooks. Speed is measured by benchmarks/bench_models.py, never here.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import TINY_BACKBONE

import kpsem
from kpsem.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from kpsem.models import memory_format_of, set_memory_format
from kpsem.models.kpsem_module import (
    KPSEM,
    KPSEMConfig,
    _masked_key_points,
    cell_centres,
    centre_bounds,
    hard_key_points,
    hard_region_masks,
)
from kpsem.models.mfnet import MF_UNIT

pytestmark = pytest.mark.usefixtures("one_thread")

CL = torch.channels_last_3d


def build(arch: str, memory_format: str = "channels_last_3d", **options: object) -> torch.nn.Module:
    torch.manual_seed(0)
    if kpsem.models.has_kpsem(arch):
        model = kpsem.create_model(arch, num_classes=5, backbone=TINY_BACKBONE, num_frames=8,
                                   memory_format=memory_format, **options)
        with torch.no_grad():  # centres away from the geometric centre: every split position gets used
            model.kpsem.centre_out.weight.normal_(std=0.5)
            model.kpsem.centre_out.bias.normal_(std=0.5)
        return model.eval()
    return kpsem.create_model(arch, num_classes=5, memory_format=memory_format, **TINY_BACKBONE).eval()


def conv_weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.dim() == 5]


def clip(n: int = 2, size: int = 64) -> torch.Tensor:
    return torch.randn(n, 3, 8, size, size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("arch", kpsem.list_models())
def test_models_are_built_channels_last_and_convert_a_plain_clip(arch):
    model = build(arch)
    assert memory_format_of(model) == "channels_last_3d"
    assert conv_weights(model) and all(w.is_contiguous(memory_format=CL) for w in conv_weights(model))
    seen: list[torch.Tensor] = []
    model.conv1.conv.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0]))
    x = clip()
    assert x.is_contiguous() and not x.is_contiguous(memory_format=CL)
    with torch.no_grad():
        model(x)
    assert seen[0].is_contiguous(memory_format=CL)  # converted at the top of forward
    assert x.is_contiguous()  # the caller's tensor is left alone


@pytest.mark.parametrize("arch", kpsem.list_models())
def test_fast_path_outputs_equal_the_plain_path(arch):
    fast, plain = build(arch), build(arch, memory_format="contiguous")
    assert all(w.is_contiguous() for w in conv_weights(plain)) and memory_format_of(plain) == "contiguous"
    x = clip()
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), rtol=0, atol=1e-5)
        if kpsem.models.has_kpsem(arch):
            (_, a), (_, b) = fast.forward_with_internals(x), plain.forward_with_internals(x)
            torch.testing.assert_close(a.centres, b.centres, rtol=0, atol=1e-5)
            torch.testing.assert_close(a.values, b.values, rtol=0, atol=1e-5)
            torch.testing.assert_close(a.rkps, b.rkps, rtol=0, atol=1e-5)


def test_paper_sized_mfnet_fast_path_equals_the_plain_path():
    """The full model at the paper's widths and a 16-frame clip, as the speed figures are measured."""
    torch.manual_seed(0)
    fast = kpsem.create_model("mfnet", num_classes=101).eval()
    plain = set_memory_format(copy.deepcopy(fast), "contiguous")
    x = torch.randn(1, 3, 16, 112, 112, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), rtol=0, atol=1e-5)


def test_state_dict_and_saved_checkpoints_are_unaffected(tmp_path):
    fast, plain = build("mf_kpsem"), build("mf_kpsem", memory_format="contiguous")
    a, b = fast.state_dict(), plain.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) and a[k].shape == b[k].shape for k in a)
    path = save_checkpoint(tmp_path / "fast.pt", fast, class_names=list("abcde"), clip_frames=8, clip_size=64)
    saved = read_checkpoint(path)["state_dict"]
    assert all(v.is_contiguous() for v in saved.values())  # written in the plain layout, whatever the model's
    assert all(torch.equal(saved[k], b[k]) for k in b)
    loaded = load_checkpoint(path).model
    assert memory_format_of(loaded) == "channels_last_3d"
    assert all(w.is_contiguous(memory_format=CL) for w in conv_weights(loaded))
    with torch.no_grad():
        torch.testing.assert_close(loaded(clip()), plain(clip()), rtol=0, atol=1e-5)


def test_published_format_loads_into_the_fast_layout(tmp_path):
    """DataParallel keys, no BatchNorm counters, old serialisation: the authors' files."""
    plain = build("mfnet", memory_format="contiguous")
    state = {f"module.{k}": v for k, v in plain.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "MFNet3D_published.pth"
    torch.save({"epoch": 3, "state_dict": state}, path, _use_new_zipfile_serialization=False)
    loaded = load_checkpoint(path).model
    assert all(w.is_contiguous(memory_format=CL) for w in conv_weights(loaded))
    fresh = kpsem.create_model("mfnet", num_classes=5, checkpoint=path, **TINY_BACKBONE).eval()
    with torch.no_grad():
        expected = plain(clip())
        torch.testing.assert_close(loaded(clip()), expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(fresh(clip()), expected, rtol=0, atol=1e-5)


def test_to_copies_and_set_memory_format_keep_or_change_the_layout():
    model = build("mf_kpsem")
    params = list(model.parameters())
    for moved in (model.to("cpu"), copy.deepcopy(model), model.to(torch.float64)):
        assert all(w.is_contiguous(memory_format=CL) for w in conv_weights(moved))
        assert memory_format_of(moved) == "channels_last_3d"
    model.float()
    set_memory_format(model, "contiguous")
    assert list(model.parameters()) == params  # the same Parameter objects: an optimiser keeps working
    assert all(w.is_contiguous() for w in conv_weights(model)) and memory_format_of(model) == "contiguous"
    assert kpsem.models.fast_inference(model) is model and memory_format_of(model) == "channels_last_3d"
    with pytest.raises(ValueError, match="memory_format must be one of channels_last_3d, contiguous; got 'nhwc'"):
        set_memory_format(model, "nhwc")
    with pytest.raises(ValueError, match="memory_format must be one of channels_last_3d, contiguous; got 'nhwc'"):
        kpsem.create_model("mfnet", memory_format="nhwc")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_quadrant_search_matches_a_naive_masked_argmax_with_ties(dtype):
    """Integer-valued maps are full of ties: the key point must be the first maximum in row-major order."""
    generator = torch.Generator().manual_seed(3)
    n, c, t, h, w, g = 2, 5, 3, 6, 7, 4
    features = torch.randint(-3, 4, (n, c, t, h, w), generator=generator).to(dtype)
    features[0, 0, 0] = -0.0  # signed zeros tie with +0.0
    features[0, 0, 0, 2, 3] = 0.0
    centres = (torch.rand(n, g, t, 2, generator=generator) * 2 - 1) * centre_bounds(h, w)
    for layout in (torch.contiguous_format, CL):
        key_points, values = hard_key_points(features.contiguous(memory_format=layout), centres, 4)
        assert key_points.dtype == values.dtype == torch.float32  # half-precision maps: read exactly, in float32
        mask_x, mask_y = hard_region_masks(centres, h, w)
        xs, ys = cell_centres(w), cell_centres(h)
        for ni, gi, k, ci, ti in torch.cartesian_prod(*(torch.arange(s) for s in (n, g, 4, c, t))).tolist():
            inside = mask_y[ni, gi, ti, k // 2][:, None] * mask_x[ni, gi, ti, k % 2][None, :]
            flat = features[ni, ci, ti].float().masked_fill(inside == 0, float("-inf")).flatten()
            best = int(torch.nonzero(flat == flat.max())[0])  # the first maximum, by construction
            assert values[ni, gi, k, ci, ti].item() == flat[best].item()
            assert key_points[ni, gi, k, ci, ti].tolist() == [xs[best % w].item(), ys[best // w].item()]


def test_kpsem_reads_any_layout_and_precision_of_one_map_identically():
    torch.manual_seed(4)
    module = KPSEM(KPSEMConfig(in_channels=16, num_frames=4, num_sets=3)).eval()
    with torch.no_grad():
        module.centre_out.weight.normal_(std=0.5)
    features = torch.randn(2, 16, 4, 7, 9).bfloat16().float()  # exactly representable in bfloat16
    with torch.no_grad():
        plain = module.extract(features)
        fast = module.extract(features.contiguous(memory_format=CL))
        half = module.extract(features.bfloat16())
        wide = _masked_key_points(features.double(), plain.centres.double())
    for name in ("centres", "key_points", "values", "shift_weights", "shifts", "regional_weights", "rkps"):
        assert torch.equal(getattr(fast, name), getattr(plain, name)), name
    assert torch.equal(half.key_points, plain.key_points) and torch.equal(half.values, plain.values)
    # the float64 path (a masked search per set) finds the same cells; its cell centres round differently
    torch.testing.assert_close(wide[0].float(), plain.key_points, rtol=0, atol=1e-7)
    assert torch.equal(wide[1].float(), plain.values)


def module_by_module(model: torch.nn.Module) -> None:
    """The stem and every MF unit of ``model`` run their submodules one by one (the fused eval path off),
    in the same layout: a no-op hook on the stem, the units told they are contiguous."""
    model.conv1.register_forward_hook(lambda module, inputs, output: None)
    for unit in model.modules():
        if isinstance(unit, MF_UNIT):
            unit.memory_format = "contiguous"


@pytest.mark.parametrize("arch", ["mfnet", "mf_kpsem"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_fused_units_equal_the_module_by_module_path(arch, dtype, monkeypatch):
    """Eval mode fuses each MF unit (BatchNorms folded, 1x1x1 convolutions as matrix products): same numbers."""
    calls = []
    fused_forward = MF_UNIT._forward_fused
    monkeypatch.setattr(MF_UNIT, "_forward_fused", lambda self, x: calls.append(1) or fused_forward(self, x))
    fast, reference = build(arch).to(dtype), build(arch).to(dtype)
    module_by_module(reference)
    x = clip().to(dtype)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), reference(x), rtol=0, atol=1e-5 if dtype == torch.float32 else 1e-12)
    assert len(calls) == sum(isinstance(m, MF_UNIT) for m in fast.modules())  # only the fast model fused
    calls.clear()
    if dtype == torch.float32:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            torch.testing.assert_close(fast(x).float(), reference(x).float(), rtol=0, atol=0.05)
        assert len(calls) == 4  # the bf16 forward fused too
    calls.clear()
    fast.train()(x)
    assert not calls  # training runs module by module (batch statistics)


def test_a_hook_on_a_submodule_still_fires_and_sees_what_the_module_path_gives():
    """The fused path skips submodule calls, so a unit with a hooked submodule (or any global hook) runs module
    by module: the hook fires with the usual output and the logits are unchanged."""
    model = build("mf_kpsem")
    x = clip()
    with torch.no_grad():
        fused = model(x)
        seen = []
        handle = model.conv3.B01.conv_m2.bn.register_forward_hook(lambda module, inputs, output: seen.append(output))
        stem = []
        stem_handle = model.conv1.bn.register_forward_hook(lambda module, inputs, output: stem.append(output))
        hooked = model(x)
        handle.remove()
        stem_handle.remove()
        reference = build("mf_kpsem")
        module_by_module(reference)
        expected = []
        reference.conv3.B01.conv_m2.bn.register_forward_hook(lambda module, inputs, output: expected.append(output))
        reference(x)
        global_seen = []
        with torch.nn.modules.module.register_module_forward_hook(lambda *args: global_seen.append(1)):
            model(x)
    assert len(stem) == 1 and stem[0].shape[1] == model.conv1.bn.num_features  # the stem's folding stepped aside
    assert len(seen) == 1  # (units before it ran fused, so equal to rounding)
    torch.testing.assert_close(seen[0], expected[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(hooked, fused, rtol=0, atol=1e-5)
    assert len(global_seen) > 100  # every submodule ran


def test_input_gradients_in_eval_mode_equal_the_module_path():
    """Grad-CAM differentiates an eval-mode model: the fused units carry the same gradients."""
    fast, reference = build("mfnet"), build("mfnet")
    module_by_module(reference)
    grads = []
    for model in (fast, reference):
        x = clip().requires_grad_(True)
        model(x)[:, 2].sum().backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("layer", ["tail", "conv4"])
def test_gradcam_on_the_fast_layout_equals_the_plain_one(layer):
    from kpsem.explain.gradcam import VideoGradCAM

    results = []
    for memory_format in ("channels_last_3d", "contiguous"):
        model = build("mf_kpsem", memory_format=memory_format)
        with VideoGradCAM(model, layer=layer, weighting="slice") as cam:
            results.append(cam.explain(clip(1), targets=[2]))
        assert not any(m._forward_hooks for m in model.modules())
    fast, plain = results
    torch.testing.assert_close(fast.logits, plain.logits, rtol=0, atol=1e-5)
    np.testing.assert_allclose(fast.cam_feature, plain.cam_feature, rtol=1e-4, atol=1e-6)
    assert fast.internals is not None and torch.equal(fast.internals.key_points, plain.internals.key_points)


@pytest.mark.parametrize("arch", kpsem.list_models())
def test_a_training_step_in_the_fast_layout_takes_the_same_step(arch):
    """Gradients agree to float rounding, so one SGD step lands on the same weights. MF-KPSEM's straight-through
    gradients amplify rounding: scaling the clip by 1 + 1e-7 alone moves them by ~3e-5 in the plain layout."""
    grads, weights = [], []
    for memory_format in ("channels_last_3d", "contiguous"):
        model = build(arch, memory_format=memory_format).train()
        optimiser = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        torch.nn.functional.cross_entropy(model(clip()), torch.tensor([1, 3])).backward()
        optimiser.step()
        if memory_format == "channels_last_3d":
            assert all(p.grad.is_contiguous(memory_format=CL) for p in conv_weights(model))
        grads.append({k: p.grad.clone() for k, p in model.named_parameters()})
        weights.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    for key in grads[1]:
        torch.testing.assert_close(grads[0][key], grads[1][key], rtol=1e-3,
                                   atol=3e-4 if kpsem.models.has_kpsem(arch) else 1e-5,
                                   msg=key)
    for key in weights[1]:
        torch.testing.assert_close(weights[0][key], weights[1][key], rtol=1e-5, atol=1e-5, msg=key)


@pytest.mark.cuda
@pytest.mark.parametrize("arch", kpsem.list_models())
def test_fast_path_on_cuda_equals_the_plain_path(arch):
    """On a GPU (benchmarks/gpu_check.sh): the layout survives ``.to("cuda")`` and changes no output."""
    conv, matmul = torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision
    torch.backends.cudnn.conv.fp32_precision = torch.backends.cuda.matmul.fp32_precision = "ieee"  # no TF32
    try:
        fast, plain = build(arch).to("cuda"), build(arch, memory_format="contiguous").to("cuda")
        assert all(w.is_cuda and w.is_contiguous(memory_format=CL) for w in conv_weights(fast))
        x = clip().to("cuda")
        with torch.no_grad():
            torch.testing.assert_close(fast(x), plain(x), rtol=0, atol=1e-5)
            torch.testing.assert_close(fast(x).cpu(), build(arch)(clip()), rtol=0, atol=1e-5)
    finally:
        torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision = conv, matmul
