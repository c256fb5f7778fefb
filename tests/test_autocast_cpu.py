"""Mixed precision on the CPU: the autocast paths of training and evaluation, run without a GPU.

An explicit ``precision="bf16"`` (or ``"fp16"``) turns ``torch.autocast("cpu")`` on, so the code that a GPU
runs under autocast (casts, the GradScaler, float32 islands such as KPSEM's centre MLPs) is exercised by
the CPU suite; ``"auto"`` depends on the CPU (tests/test_precision.py). tests/test_cuda.py covers the GPU.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_BACKBONE, ToyClips

from kpsem.checkpoint import load_checkpoint, read_checkpoint
from kpsem.evaluate import autocast_context, evaluate_model, resolve_amp_dtype
from kpsem.precision import precision_context, resolve_precision
from kpsem.train import TrainConfig, TrainData, TrainResult, build_model, train

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")


def _config(tmp_path, name: str, **overrides) -> TrainConfig:
    base = dict(arch="mf_kpsem", out=str(tmp_path / name), epochs=2, batch_size=4, frames=8, size=32,
                lr_steps=(1,), workers=0, log_every=1, progress=False, val_split=None, device="cpu", **TINY_BACKBONE)
    return TrainConfig(**{**base, **overrides})


def _data() -> TrainData:
    return TrainData(ToyClips(12), None, ToyClips(1).class_names, {"name": "toy"})


def _losses(result: TrainResult) -> list[float]:
    return [m["loss"] for m in result.metrics if m["event"] == "train"]


@pytest.mark.parametrize(
    ("precision", "expected"),
    [("fp32", None), ("bf16", torch.bfloat16), ("fp16", torch.float16)],
    ids=["fp32", "bf16", "fp16"],
)
def test_cpu_autocast_only_when_asked_for(precision, expected):
    assert resolve_precision(CPU, precision).dtype is expected
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with precision_context(CPU, precision):
        active = torch.is_autocast_enabled("cpu")
        product = a @ b
        conv = F.conv3d(torch.randn(1, 3, 4, 8, 8), torch.randn(2, 3, 3, 3, 3))
    assert active == (expected is not None)
    assert product.dtype == conv.dtype == (expected or torch.float32)
    assert not torch.is_autocast_enabled("cpu")  # the context is closed again
    assert (a @ b).dtype == torch.float32


def test_precision_names_are_checked_and_cuda_requests_are_kept():
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, fp16; got 'fp8'"):
        resolve_precision(CPU, "fp8")
    cuda = torch.device("cuda")  # a device object needs no GPU; "auto" would ask the GPU, so it is not here
    assert [resolve_precision(cuda, p).dtype for p in ("bf16", "fp16", "fp32")] == [torch.bfloat16, torch.float16, None]
    assert resolve_precision(torch.device("meta"), "bf16").dtype is None  # no autocast set up for other devices


def test_the_deprecated_amp_names_keep_their_meaning():
    """``autocast_context`` / ``resolve_amp_dtype`` (kpsem.probes still calls them): off is fp32, and their
    auto stays full precision on the CPU whatever the CPU, as it always did."""
    assert [resolve_amp_dtype(CPU, a) for a in ("off", "fp32", "auto", "bf16", "fp16")] == [
        None, None, None, torch.bfloat16, torch.float16]
    with autocast_context(CPU, "bf16"):
        assert torch.is_autocast_enabled("cpu")
    with autocast_context(CPU, "auto"):
        assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(ValueError, match="got 'fp8'"):
        resolve_amp_dtype(CPU, "fp8")


@pytest.mark.parametrize("arch", ["mfnet", "mf_kpsem"])
def test_bf16_training_on_cpu_runs_under_autocast(tmp_path, arch):
    reference = train(_config(tmp_path, "fp32", arch=arch, precision="fp32"), data=_data())
    result = train(_config(tmp_path, "bf16", arch=arch, precision="bf16"), data=_data())

    recorded = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert recorded["precision"] == {"precision": "bf16", "requested": "bf16", "device": "cpu", "reason": "as asked"}
    assert recorded["config"]["precision"] == "bf16"
    losses, fp32_losses = _losses(result), _losses(reference)
    assert len(losses) == 6 and all(np.isfinite(losses))
    # The first step starts from the same weights and batch, so its loss differs only by bf16 rounding:
    # a little, and not at all would mean the autocast context did nothing. Later steps follow
    # trajectories that drift apart, so they are only required to stay finite.
    assert losses[0] != fp32_losses[0] and abs(losses[0] - fp32_losses[0]) < 0.02

    torch.manual_seed(0)  # the run's seed: the model it started from
    start = build_model(_config(tmp_path, "x", arch=arch), num_classes=3)[0].state_dict()
    final = read_checkpoint(result.final_checkpoint)["state_dict"]
    unchanged = [k for k, v in start.items() if v.is_floating_point() and torch.equal(v, final[k])]
    assert unchanged == []
    assert {v.dtype for v in final.values() if v.is_floating_point()} == {torch.float32}  # master weights
    state = read_checkpoint(tmp_path / "bf16" / "checkpoints" / "epoch_002.pt")["training_state"]
    assert state["scaler"] is None  # bf16 has float32's range: no loss scaling


def test_fp16_training_on_cpu_scales_the_loss_and_resumes_exactly(tmp_path):
    straight = train(_config(tmp_path, "straight", precision="fp16"), data=_data())
    losses = _losses(straight)
    assert len(losses) == 6 and all(np.isfinite(losses))
    scaler = read_checkpoint(tmp_path / "straight" / "checkpoints" / "epoch_001.pt")["training_state"]["scaler"]
    assert scaler is not None and 0 < scaler["scale"] <= 2.0 ** 16  # GradScaler's state travels with the run

    class SimulatedCrashError(RuntimeError):
        pass

    def crash_after_epoch_one(step: int) -> None:
        if step == 4:
            raise SimulatedCrashError

    with pytest.raises(SimulatedCrashError):
        train(_config(tmp_path, "resumed", precision="fp16"), data=_data(), on_step=crash_after_epoch_one)
    resumed = train(_config(tmp_path, "resumed", precision="fp16", resume="auto"), data=_data())
    assert resumed.resumed_from is not None and resumed.resumed_from.name == "epoch_001.pt"
    a, b = (read_checkpoint(r.final_checkpoint)["state_dict"] for r in (straight, resumed))
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert _losses(resumed) == losses


@pytest.mark.parametrize("arch", ["mfnet", "mf_kpsem"])
def test_bf16_evaluation_on_cpu_agrees_with_fp32(tmp_path, arch):
    run = _config(tmp_path, "run", arch=arch, epochs=6, lr=0.02, lr_steps=(100,))
    trained = train(run, data=TrainData(ToyClips(24), None, ToyClips(1).class_names, {})).final_checkpoint
    model = load_checkpoint(trained).model
    stem_dtypes: list[torch.dtype] = []
    logit_dtypes: list[torch.dtype] = []
    model.conv1.register_forward_hook(lambda module, inputs, output: stem_dtypes.append(output.dtype))
    model.classifier.register_forward_hook(lambda module, inputs, output: logit_dtypes.append(output.dtype))
    toy = ToyClips(18, train=False, clips_per_video=2)
    results = {}
    for precision in ("fp32", "bf16"):
        stem_dtypes.clear()
        logit_dtypes.clear()
        results[precision] = evaluate_model(model, toy, class_names=toy.class_names, model_id=precision, batch_size=6,
                                            precision=precision)
        assert set(stem_dtypes) == {torch.float32 if precision == "fp32" else torch.bfloat16}  # autocast on or off
        assert set(logit_dtypes) == {torch.float32}  # the classifier runs in fp32 under any autocast
        assert results[precision].precision["precision"] == precision  # recorded with the result

    fp32, bf16 = (results[a].predictions for a in ("fp32", "bf16"))
    fp32, bf16 = fp32[fp32.level == "clip"], bf16[bf16.level == "clip"]
    assert list(fp32.video_id) == list(bf16.video_id) and len(fp32) == 36
    p32, p16 = np.stack(fp32.probs), np.stack(bf16.probs)
    np.testing.assert_allclose(p16, p32, atol=0.02)
    assert results["fp32"].clip_top1 > 0.9  # a trained model: agreement is about real predictions, not noise
    agreement = np.mean(p16.argmax(1) == p32.argmax(1))
    assert agreement == 1.0, f"bf16 and fp32 agree on top-1 for only {agreement:.0%} of the clips"
