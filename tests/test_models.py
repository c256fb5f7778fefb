"""Model-level behaviour: every registered model, shapes of SPEC section 2, counts, gradients, errors."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_BACKBONE
from torch import nn

import kpsem
from kpsem.models.mf_kpsem import MFKPSEM


def tiny(name: str, **config: object) -> torch.nn.Module:
    """A registered model small enough for CPU tests (8-frame clips)."""
    if kpsem.models.has_kpsem(name):
        return kpsem.create_model(name, num_classes=5, backbone=TINY_BACKBONE, num_frames=8, **config)
    return kpsem.create_model(name, num_classes=5, **TINY_BACKBONE)


@pytest.mark.parametrize("name", kpsem.list_models())
def test_every_registered_model_trains_on_a_tiny_clip(name: str) -> None:
    torch.manual_seed(0)
    model = tiny(name).train()
    logits = model(torch.randn(2, 3, 8, 64, 64))
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    logits.logsumexp(dim=1).sum().backward()
    for key, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), key
        # The centre MLP's first layer sits behind a zero-initialised last layer, so it is the one
        # parameter whose first gradient is exactly zero (see the next test).
        if not key.startswith("kpsem.centre_hidden"):
            assert parameter.grad.abs().sum() > 0, key


def test_registry_lists_models_and_rejects_unknown_names() -> None:
    assert {"mfnet", "mf_kpsem"} <= set(kpsem.list_models())
    with pytest.raises(ValueError, match=r"unknown model 'mfnet3d'; known models: .*mf_kpsem.*mfnet"):
        kpsem.create_model("mfnet3d")


def test_mfnet_parameter_count_matches_the_paper() -> None:
    model = kpsem.create_model("mfnet", num_classes=400)
    assert sum(p.numel() for p in model.parameters()) == 7_996_368


def test_mf_kpsem_parameter_count_is_within_one_percent_of_table_1() -> None:
    model = kpsem.create_model("mf_kpsem", num_classes=101)
    count = sum(p.numel() for p in model.parameters())
    assert abs(count / 8.11e6 - 1) < 0.01, count


def test_published_state_dict_key_names() -> None:
    keys = set(kpsem.create_model("mfnet", num_classes=400).state_dict())
    for key in (
        "conv1.conv.weight",
        "conv1.bn.running_var",
        "conv2.B01.conv_i1.bn.weight",
        "conv2.B01.conv_i1.conv.weight",
        "conv2.B01.conv_w1.conv.weight",
        "conv3.B04.conv_m2.conv.weight",
        "conv4.B06.conv_i2.bn.bias",
        "conv5.B03.conv_m1.conv.weight",
        "tail.bn.running_mean",
        "classifier.weight",
        "classifier.bias",
    ):
        assert key in keys, key
    assert not any(k.startswith("conv2.B02.conv_w1") for k in keys)  # shortcut convs only in first units
    assert {k.split(".")[0] for k in keys} == {"conv1", "conv2", "conv3", "conv4", "conv5", "tail", "classifier"}


def test_mf_kpsem_shapes_at_16x224x224_follow_spec_section_2() -> None:
    model = kpsem.create_model("mf_kpsem", num_classes=7).eval()
    with torch.no_grad():
        clip = torch.randn(2, 3, 16, 224, 224)
        spatial_map, temporal, internals = model.forward_features(clip, return_internals=True)
        logits = model.forward_head((spatial_map, temporal))
    assert spatial_map.shape == (2, 768, 8, 7, 7)
    assert temporal.shape == (2, 672)
    assert model.classifier.in_features == 768 + 672
    assert logits.shape == (2, 7)
    n, g, k, c, t = 2, 8, 4, 384, 8
    assert internals.centres.shape == (n, g, t, 2)
    assert internals.key_points.shape == (n, g, k, c, t, 2)
    assert internals.values.shape == (n, g, k, c, t)
    assert internals.shift_weights.shape == (n, g, k, k, c, t - 1)
    assert internals.shifts.shape == (n, g, k, c, t - 1, 2)
    assert internals.regional_weights.shape == (n, g, k, c, t - 1)
    assert internals.rkps.shape == (n, g, c, t - 1, 2)
    assert internals.location_differences().shape == (n, g, k, k, c, t - 1, 2)
    assert internals.feature_size == (14, 14)


@pytest.mark.parametrize(("frames", "size", "temporal"), [(16, 112, 96 * 7), (8, 160, 96 * 3)])
def test_other_clip_sizes(frames: int, size: int, temporal: int) -> None:
    model = kpsem.create_model("mf_kpsem", num_classes=3, num_frames=frames).eval()
    with torch.no_grad():
        _, features = model.forward_features(torch.randn(1, 3, frames, size, size))
    assert features.shape == (1, temporal)
    assert model(torch.randn(1, 3, frames, size, size)).shape == (1, 3)


@pytest.mark.parametrize("stage", ["conv2", "conv3", "conv4", "conv5"])
def test_kpsem_can_follow_any_stage(stage: str) -> None:
    model = tiny("mf_kpsem", insert_after=stage).eval()
    channels = dict(zip(("conv2", "conv3", "conv4", "conv5"), TINY_BACKBONE["widths"]))[stage]
    with torch.no_grad():
        _, internals = model.forward_with_internals(torch.randn(1, 3, 8, 64, 64))
    assert internals.key_points.shape[3] == channels
    assert model.num_temporal_features == channels // 4 * 3


def test_ablation_single_key_point() -> None:
    model = tiny("mf_kpsem", num_regions=1).eval()
    assert not hasattr(model.kpsem, "centre_hidden")
    with torch.no_grad():
        _, internals = model.forward_with_internals(torch.randn(1, 3, 8, 64, 64))
    assert internals.key_points.shape[2] == 1
    assert torch.equal(internals.regional_weights, torch.ones_like(internals.regional_weights))


def test_ablation_fixed_regions_are_random_frozen_and_clip_independent() -> None:
    model = tiny("mf_kpsem", fixed_regions=True).eval()
    assert not any("centre" in key for key, _ in model.named_parameters())
    with torch.no_grad():
        _, first = model.forward_with_internals(torch.randn(1, 3, 8, 64, 64))
        _, second = model.forward_with_internals(torch.randn(1, 3, 8, 64, 64))
    assert torch.equal(first.centres, second.centres)
    assert first.centres[0, :, 0].unique(dim=0).shape[0] == 8  # every set has its own split
    assert "kpsem.fixed_centres" in model.state_dict()  # saved with the weights


def test_ablation_one_set() -> None:
    model = tiny("mf_kpsem", num_sets=1).eval()
    with torch.no_grad():
        _, internals = model.forward_with_internals(torch.randn(1, 3, 8, 64, 64))
    assert internals.centres.shape[1] == 1


def test_straight_through_keeps_hard_forward_values_and_trains_the_centres() -> None:
    torch.manual_seed(0)
    clip = torch.randn(2, 3, 8, 64, 64)
    soft = tiny("mf_kpsem").train()
    torch.nn.init.normal_(soft.kpsem.centre_out.weight, std=0.1)  # off the zero init, so every layer learns
    hard = tiny("mf_kpsem", gradient="hard").train()
    hard.load_state_dict(soft.state_dict())
    logits_soft, internals_soft = soft.forward_with_internals(clip)
    logits_hard, internals_hard = hard.forward_with_internals(clip)
    assert torch.allclose(logits_soft, logits_hard, atol=1e-5)
    assert torch.allclose(internals_soft.key_points, internals_hard.key_points)
    assert torch.allclose(internals_soft.values, internals_hard.values)
    logits_soft.sum().backward()
    logits_hard.sum().backward()
    for layer in ("centre_hidden", "centre_out"):
        assert getattr(soft.kpsem, layer).weight.grad.abs().sum() > 0, layer
        assert getattr(hard.kpsem, layer).weight.grad is None, layer  # pure-hard: no path to the centres
    assert soft.conv1.conv.weight.grad.abs().sum() > 0


def test_eval_mode_runs_only_the_hard_path() -> None:
    model = tiny("mf_kpsem").eval()
    clip = torch.randn(1, 3, 8, 64, 64)
    logits = model(clip)
    logits.sum().backward()
    assert model.kpsem.centre_out.weight.grad is None


def test_forward_is_deterministic() -> None:
    torch.manual_seed(3)
    first = tiny("mf_kpsem").eval()
    torch.manual_seed(3)
    second = tiny("mf_kpsem").eval()
    clip = torch.randn(2, 3, 8, 64, 64)
    with torch.no_grad():
        assert torch.equal(first(clip), second(clip))
        assert torch.equal(first(clip), first(clip))


def test_internals_detach_for_drawing() -> None:
    model = tiny("mf_kpsem").train()
    _, internals = model.forward_with_internals(torch.randn(1, 3, 8, 64, 64))
    detached = internals.detach()
    assert internals.key_points.requires_grad and not detached.key_points.requires_grad
    assert detached.feature_size == internals.feature_size


def test_wrong_frame_count_is_refused_with_the_built_length() -> None:
    model = kpsem.create_model("mf_kpsem", num_classes=3)
    with pytest.raises(ValueError, match=r"built for 16-frame clips \(its temporal feature has 672 values\); "
                                         r"got a clip of 8 frames"):
        model(torch.randn(1, 3, 8, 64, 64))


@pytest.mark.parametrize("name", ["mfnet", "mf_kpsem"])
def test_wrong_frame_size_is_refused(name: str) -> None:
    model = tiny(name)
    with pytest.raises(ValueError, match=r"clip frames are 100x100; height and width must be multiples of 16"):
        model(torch.randn(1, 3, 8, 100, 100))


def test_wrong_tensor_layout_is_refused() -> None:
    with pytest.raises(ValueError, match=r"expected a clip batch of shape \(N, 3, T, H, W\).*got \(1, 8, 3, 64, 64\)"):
        tiny("mfnet")(torch.randn(1, 8, 3, 64, 64))


def test_bad_configs_name_the_allowed_values() -> None:
    with pytest.raises(ValueError, match=r"num_regions must be one of \(1, 4, 9, 16\); got 3"):
        tiny("mf_kpsem", num_regions=3)
    with pytest.raises(ValueError, match=r"insert_after must be one of .*; got 'conv6'"):
        tiny("mf_kpsem", insert_after="conv6")
    with pytest.raises(ValueError, match=r"gradient must be 'straight_through' or 'hard'; got 'soft'"):
        tiny("mf_kpsem", gradient="soft")


def test_mf_kpsem_is_an_mfnet_with_the_same_backbone_names() -> None:
    model = tiny("mf_kpsem")
    assert isinstance(model, MFKPSEM)
    backbone_keys = {k for k in model.state_dict() if not k.startswith(("kpsem.", "classifier."))}
    assert backbone_keys == {k for k in tiny("mfnet").state_dict() if not k.startswith("classifier.")}


def test_init_conv_bn_draws_he_normal_weights_and_leaves_meta_tensors_alone():
    from kpsem.models.clip_classifier import init_conv_bn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(8, 64, 3), nn.BatchNorm3d(64))
    net[1].weight.data.fill_(3.0)
    init_conv_bn(net)
    fan_out = 64 * 27  # out channels x kernel volume
    assert abs(net[0].weight.std().item() / (2 / fan_out) ** 0.5 - 1) < 0.05  # 13,824 draws: within 5%
    assert torch.equal(net[1].weight, torch.ones(64)) and torch.equal(net[1].bias, torch.zeros(64))
    with torch.device("meta"):
        on_meta = nn.Sequential(nn.Conv3d(8, 64, 3), nn.BatchNorm3d(64))
    init_conv_bn(on_meta)
    assert all(p.is_meta for p in on_meta.parameters())
