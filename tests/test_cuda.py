"""The paths that only run on a GPU: mixed-precision training, NCCL + DDP + SyncBatchNorm, the explorer's
analysis, evaluation and checkpoint loading on CUDA, each checked against the CPU where both can run.

Every test is marked ``cuda``: tests/conftest.py skips them (saying why) where torch sees no GPU, and
benchmarks/gpu_check.sh runs them (``pytest -m cuda``) on a GPU machine. Comparisons with the CPU run
with TF32 off (:func:`ieee_fp32`): cuDNN convolutions default to TF32 on Ampere and later, whose 10-bit
mantissa alone would move the logits by more than the tolerances here.
"""

from __future__ import annotations

import copy
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from conftest import TINY_BACKBONE, ToyClips
from torch import nn

import kpsem
from kpsem.checkpoint import describe_checkpoint, load_checkpoint, read_checkpoint
from kpsem.distributed import init_distributed
from kpsem.evaluate import autocast_context, evaluate_checkpoint, resolve_amp_dtype
from kpsem.train import TrainConfig, TrainData, TrainResult, build_model, parameter_groups, train

pytestmark = pytest.mark.cuda  # all threads: a GPU machine is not shared, and the CPU references use them

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "assets" / "demo"
CUDA = torch.device("cuda", 0)


@pytest.fixture
def ieee_fp32() -> Iterator[None]:
    """Full float32 in cuDNN convolutions and matrix products for this test, restored afterwards.

    Only the new ``fp32_precision`` API is used: torch 2.13 refuses to read the legacy ``allow_tf32``
    flags once the two APIs have been mixed."""
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    saved = conv.fp32_precision, matmul.fp32_precision
    conv.fp32_precision, matmul.fp32_precision = "ieee", "ieee"
    yield
    conv.fp32_precision, matmul.fp32_precision = saved


def _config(tmp_path: Path, name: str, **overrides: object) -> TrainConfig:
    base = dict(arch="mf_kpsem", out=str(tmp_path / name), epochs=3, batch_size=4, frames=8, size=32,
                lr_steps=(2,), workers=0, log_every=1, progress=False, val_split="val", device="cuda",
                **TINY_BACKBONE)
    return TrainConfig(**{**base, **overrides})


def _data() -> TrainData:
    return TrainData(ToyClips(12), ToyClips(6, train=False, clips_per_video=2), ToyClips(1).class_names,
                     {"name": "toy"})


def _losses(result: TrainResult) -> list[float]:
    return [m["loss"] for m in result.metrics if m["event"] == "train"]


# --- autocast and mixed-precision training ------------------------------------------------------------


@pytest.mark.parametrize(("amp", "expected"), [("off", torch.float32), ("bf16", torch.bfloat16),
                                               ("fp16", torch.float16), ("auto", None)],
                         ids=["off", "bf16", "fp16", "auto"])
def test_autocast_context_on_cuda(amp, expected):
    if expected is None:  # "auto": bf16 where the GPU has it (every GPU since Ampere), else fp16
        expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert resolve_amp_dtype(CUDA, amp) == (None if amp == "off" else expected)
    a, b = torch.randn(8, 16, device=CUDA), torch.randn(16, 4, device=CUDA)
    with autocast_context(CUDA, amp):
        assert torch.is_autocast_enabled("cuda") == (amp != "off")
        assert (a @ b).dtype == expected
        assert F.conv3d(torch.randn(1, 3, 4, 8, 8, device=CUDA),
                        torch.randn(2, 3, 3, 3, 3, device=CUDA)).dtype == expected
    assert (a @ b).dtype == torch.float32


@pytest.mark.parametrize("arch", ["mfnet", "mf_kpsem"])
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_training_on_cuda(tmp_path, arch, amp):
    result = train(_config(tmp_path, "gpu", arch=arch, precision=amp), data=_data())
    saved = json.loads((tmp_path / "gpu" / "config.json").read_text())
    assert saved["device"] == "cuda:0" and saved["precision"]["precision"] == amp

    losses = _losses(result)
    assert len(losses) == 9 and all(np.isfinite(losses))
    # The first step sees the same batch and the same initial weights as a float32 run on the CPU
    # (the model is built on the CPU from the seed, then moved), so only the precision differs.
    cpu = train(_config(tmp_path, "cpu", arch=arch, precision="fp32", device="cpu", epochs=1, val_split=None),
                data=_data())
    assert abs(losses[0] - _losses(cpu)[0]) < 0.03

    torch.manual_seed(0)
    start = build_model(_config(tmp_path, "x", arch=arch), num_classes=3)[0].state_dict()
    final = read_checkpoint(result.final_checkpoint)["state_dict"]
    assert [k for k, v in start.items() if v.is_floating_point() and torch.equal(v, final[k])] == []
    assert {v.dtype for v in final.values() if v.is_floating_point()} == {torch.float32}

    state = read_checkpoint(tmp_path / "gpu" / "checkpoints" / "epoch_003.pt")["training_state"]
    if amp == "fp16":  # GradScaler on: its scale travels in the checkpoint (halved on each overflow)
        assert state["scaler"] is not None and 0 < state["scaler"]["scale"] <= 2.0 ** 16
    else:
        assert state["scaler"] is None
    epoch = [m for m in result.metrics if m["event"] == "epoch"][-1]
    assert 0 <= epoch["val_top1"] <= 1 and np.isfinite(epoch["val_loss"])  # validation ran under autocast too


# --- NCCL, DDP and SyncBatchNorm in one process --------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def nccl_group(monkeypatch) -> Iterator[None]:
    """A one-process NCCL group, as torchrun's environment variables describe it; always destroyed, so
    later tests see a single process again (kpsem.distributed.current reads dist.is_initialized)."""
    for name, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "RANK": "0",
                        "WORLD_SIZE": "1", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    torch.cuda.set_device(CUDA)
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_one_process_nccl_ddp_step_matches_a_plain_step(tmp_path, nccl_group, ieee_fp32):
    """kpsem.train's DDP wiring (SyncBatchNorm conversion, DDP with device_ids, the recipe's optimiser)
    over a real NCCL group. With one process the all-reduce averages one gradient and SyncBatchNorm
    falls back to BatchNorm, so two steps must land where a plain model's steps land."""
    assert dist.get_backend() == "nccl"
    config = _config(tmp_path, "ddp", sync_bn=True)
    torch.manual_seed(0)
    model = build_model(config, num_classes=3)[0].to(CUDA)
    plain = copy.deepcopy(model)
    wrapped = nn.parallel.DistributedDataParallel(nn.SyncBatchNorm.convert_sync_batchnorm(model), device_ids=[0],
                                                  find_unused_parameters=False)
    assert any(isinstance(m, nn.SyncBatchNorm) for m in wrapped.modules())

    def optimiser(net: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(parameter_groups(net, config), lr=config.lr, momentum=config.momentum,
                               nesterov=config.nesterov, weight_decay=config.weight_decay)

    opt_ddp, opt_plain = optimiser(model), optimiser(plain)
    wrapped.train()
    plain.train()
    toy = ToyClips(8)
    for step in range(2):  # a second step fails under DDP if the first left a parameter without a gradient
        items = [toy[i] for i in range(4 * step, 4 * step + 4)]
        clips = torch.stack([it["clip"] for it in items]).to(CUDA)  # (4, 3, T, S, S)
        labels = torch.tensor([it["label"] for it in items], device=CUDA)
        losses = []
        for net, opt in ((wrapped, opt_ddp), (plain, opt_plain)):
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(net(clips).float(), labels)
            loss.backward()
            losses.append(float(loss.detach()))
        missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert missing == []
        plain_params = dict(plain.named_parameters())
        for name, param in model.named_parameters():
            torch.testing.assert_close(param.grad, plain_params[name].grad, rtol=1e-3, atol=1e-6,
                                       msg=lambda text, name=name: f"gradient of {name}: {text}")
        opt_ddp.step()
        opt_plain.step()
        assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    plain_state = plain.state_dict()
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, plain_state[name], rtol=1e-4, atol=1e-6,
                                   msg=lambda text, name=name: f"{name}: {text}")

    # the same group carries a collective of the kind all_reduce_sums makes (float64 on the device)
    sums = torch.tensor([1.5, 2.0], dtype=torch.float64, device=CUDA)
    dist.all_reduce(sums)
    assert sums.tolist() == [1.5, 2.0]


# --- the explorer's analysis ---------------------------------------------------------------------------


def _demo_clip(name: str) -> torch.Tensor:
    from kpsem.data import load_clip

    info = describe_checkpoint(DEMO / "mf_kpsem.pt")
    sample = load_clip(DEMO / "clips" / name, frames=info.clip_frames, size=info.clip_size, num_clips=1,
                       mean=info.mean, std=info.std)
    return sample.clips[:1]  # (1, 3, T, S, S)


@pytest.mark.parametrize(("clip_name", "weighting", "target"), [
    ("hop_cw/hop_cw_test_000.mp4", "clip", None),
    ("rise/rise_test_001.mp4", "slice", 2),
])
def test_explorer_analysis_on_cuda_matches_the_cpu(clip_name, weighting, target, ieee_fp32):
    from kpsem.explain.analysis import analyse_pair

    clip = _demo_clip(clip_name)
    names = describe_checkpoint(DEMO / "mfnet.pt").class_names
    results = {}
    for device in ("cpu", "cuda"):
        base = load_checkpoint(DEMO / "mfnet.pt", map_location=device)
        ours = load_checkpoint(DEMO / "mf_kpsem.pt", map_location=device)
        assert next(ours.model.parameters()).device.type == device
        results[device] = analyse_pair(base.model, ours.model, clip.to(device), weighting=weighting, target=target,
                                       class_names=names)
    cpu, gpu = results["cpu"], results["cuda"]

    for a, b in ((cpu.baseline, gpu.baseline), (cpu.kpsem, gpu.kpsem)):
        np.testing.assert_allclose(b.probs, a.probs, atol=1e-4)
        assert [t.index for t in b.topk] == [t.index for t in a.topk] and b.target == a.target
        scale = float(a.cam_raw.max())
        np.testing.assert_allclose(b.cam_raw, a.cam_raw, rtol=1e-3, atol=1e-3 * scale)
    assert gpu.shared_scale == pytest.approx(cpu.shared_scale, rel=1e-3)
    np.testing.assert_allclose(gpu.baseline_shared, cpu.baseline_shared, atol=2e-3)
    np.testing.assert_allclose(gpu.kpsem_shared, cpu.kpsem_shared, atol=2e-3)

    ci, gi = cpu.kpsem.internals, gpu.kpsem.internals
    assert gi.key_points.device.type == "cpu"  # internals come back detached on the CPU, ready to draw
    torch.testing.assert_close(gi.centres, ci.centres, rtol=0, atol=1e-5)
    torch.testing.assert_close(gi.values, ci.values, rtol=1e-4, atol=1e-4)  # a maximum is continuous
    # Key points are argmax positions: a near-tie (two cells within float32 rounding) may resolve
    # differently on the two devices, so a handful of the ~50,000 per clip may sit in another cell.
    same_cell = ((gi.key_points - ci.key_points).abs() < 1e-4).all(-1)
    assert same_cell.float().mean().item() >= 0.999
    np.testing.assert_allclose(gpu.kpsem.centres_px, cpu.kpsem.centres_px, atol=1e-3)


# --- evaluation ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_cpu_predictions() -> dict[str, object]:
    """Float32 CPU predictions of both demo checkpoints on the demo test split (2 clips per video)."""
    return {arch: evaluate_checkpoint(DEMO / f"{arch}.pt", data=DEMO / "clips", clips=2, batch_size=16, workers=4,
                                      precision="fp32").predictions
            for arch in ("mfnet", "mf_kpsem")}


@pytest.mark.parametrize("arch", ["mfnet", "mf_kpsem"])
def test_evaluate_on_cuda_gives_the_cpu_predictions(arch, demo_cpu_predictions, monkeypatch, ieee_fp32):
    monkeypatch.delenv("WORLD_SIZE", raising=False)  # one process, as `python -m kpsem evaluate` without torchrun
    dist_info = init_distributed(device="cuda")
    assert dist_info.device == CUDA and not dist_info.distributed
    cpu = demo_cpu_predictions[arch]
    full = evaluate_checkpoint(DEMO / f"{arch}.pt", data=DEMO / "clips", clips=2, batch_size=16, workers=4,
                               precision="fp32", dist_info=dist_info)
    assert full.info["device"] == "cuda:0"
    gpu = full.predictions
    assert list(gpu.video_id) == list(cpu.video_id) and list(gpu.level) == list(cpu.level) and len(gpu) == 192
    np.testing.assert_allclose(np.stack(gpu.probs), np.stack(cpu.probs), atol=1e-4)
    assert list(gpu.correct_top1) == list(cpu.correct_top1)
    assert [t[0] for t in gpu.topk_labels] == [t[0] for t in cpu.topk_labels]  # same top class, clip and video

    # The default on a GPU is autocast (bf16 on an H200): the same predictions up to low precision.
    # bf16 keeps 8 bits of mantissa, so a clip whose top two classes are within about a percent may swap.
    auto = evaluate_checkpoint(DEMO / f"{arch}.pt", data=DEMO / "clips", clips=2, batch_size=16, workers=4,
                               precision="auto", dist_info=dist_info).predictions
    clips_cpu, clips_auto = cpu[cpu.level == "clip"], auto[auto.level == "clip"]
    p_cpu, p_auto = np.stack(clips_cpu.probs), np.stack(clips_auto.probs)
    np.testing.assert_allclose(p_auto, p_cpu, atol=0.05)
    disagreements = int((p_auto.argmax(1) != p_cpu.argmax(1)).sum())
    assert disagreements <= 3, f"{disagreements} of {len(p_cpu)} clips change their top class under autocast"


# --- checkpoints -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("saved_from", ["cpu", "cuda"], ids=["written-on-cpu", "written-on-gpu"])
def test_published_checkpoint_loads_onto_cuda(tmp_path, saved_from, ieee_fp32):
    """A file in the published MFNet format (DataParallel keys, no BatchNorm counters, the old
    serialisation), written from CPU tensors or, as the authors' GPU runs wrote theirs, from CUDA ones."""
    torch.manual_seed(0)
    original = kpsem.create_model("mfnet", num_classes=6, **TINY_BACKBONE).eval()
    source = original if saved_from == "cpu" else copy.deepcopy(original).to(CUDA)
    state_dict = {f"module.{k}": v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "MFNet3D_Kinetics-400_72.8.pth"
    torch.save({"epoch": 12, "state_dict": state_dict}, path, _use_new_zipfile_serialization=False)

    loaded = load_checkpoint(path, map_location="cuda")
    assert (loaded.info.arch, loaded.info.num_classes, loaded.info.source_format) == ("mfnet", 6, "mfnet-published")
    assert {t.device.type for t in [*loaded.model.parameters(), *loaded.model.buffers()]} == {"cuda"}
    clip = torch.randn(2, 3, 8, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = original(clip)
        torch.testing.assert_close(loaded.model(clip.to(CUDA)).cpu(), expected, rtol=1e-4, atol=1e-5)
        # the default map_location reads the same file onto the CPU, whichever device wrote it
        on_cpu = load_checkpoint(path)
        assert {p.device.type for p in on_cpu.model.parameters()} == {"cpu"}
        assert torch.equal(on_cpu.model(clip), expected)

    ours = kpsem.create_model("mf_kpsem", num_classes=6, backbone=TINY_BACKBONE, num_frames=8, checkpoint=path)
    ours = ours.to(CUDA).eval()
    key = "conv4.B01.conv_m1.conv.weight"
    assert torch.equal(ours.state_dict()[key].cpu(), original.state_dict()[key])
    with torch.no_grad():
        assert torch.isfinite(ours(clip.to(CUDA))).all()
