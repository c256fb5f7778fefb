"""R3D-50 and R3D-50-KPSEM (paper Table 2d): shapes, the parameter count from the definition, the torchvision
state-dict round trip, KPSEM after res3, and the library paths the app and the commands take."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_BACKBONE

import kpsem
from kpsem.checkpoint import CheckpointError, describe_checkpoint, load_checkpoint, save_checkpoint
from kpsem.models import has_kpsem
from kpsem.models.r3d import checkpoint_filter_fn

TINY = {**TINY_BACKBONE, "conv1_channels": 8}


def resnet50_parameters(num_classes: int) -> int:
    """ResNet-50's parameter count worked out from its definition (stem, bottlenecks, fc)."""
    count = 3 * 64 * 7 * 7 + 2 * 64  # stem conv and its BatchNorm (weight, bias)
    num_in = 64
    for width, depth in zip((256, 512, 1024, 2048), (3, 4, 6, 3)):
        mid = width // 4
        for block in range(depth):
            count += num_in * mid + 2 * mid + mid * mid * 9 + 2 * mid + mid * width + 2 * width
            if block == 0:  # projection shortcut: 1x1 conv and BatchNorm
                count += num_in * width + 2 * width
            num_in = width
    return count + 2048 * num_classes + num_classes


def torchvision_resnet50_state_dict() -> dict[str, torch.Tensor]:
    """A randomly initialised torchvision ResNet-50's state dict, BatchNorm statistics made non-trivial."""
    from kpsem._compat import import_torchvision

    import_torchvision()
    from torchvision.models import resnet50

    torch.manual_seed(0)
    net = resnet50(weights=None)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(std=0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(std=0.1)
    return net.eval(), net.state_dict()


def test_parameter_count_is_resnet50s_worked_out_from_its_definition() -> None:
    assert resnet50_parameters(1000) == 25_557_032  # torchvision's ResNet-50
    for classes in (1000, 51):
        model = kpsem.create_model("r3d50", num_classes=classes)
        assert sum(p.numel() for p in model.parameters()) == resnet50_parameters(classes)  # 1 x k x k adds none


def test_shapes_keep_every_frame_and_tile_the_frame() -> None:
    model = kpsem.create_model("r3d50", num_classes=5, **TINY).eval()
    with torch.no_grad():
        features = model.forward_features(torch.randn(2, 3, 8, 64, 64))
        assert features.shape == (2, 64, 8, 2, 2)  # no temporal stride; 64 / 32 = 2
        assert model.forward_head(features).shape == (2, 5)
        assert model.forward_head(features, pre_logits=True).shape == (2, 64)
    with pytest.raises(ValueError, match=r"expected a clip batch of shape \(N, 3, T, H, W\)"):
        model(torch.randn(3, 8, 64, 64))


def test_kpsem_after_res3_sees_every_frame_and_every_parameter_learns() -> None:
    torch.manual_seed(0)
    model = kpsem.create_model("r3d50_kpsem", num_classes=5, backbone=TINY, num_frames=8).train()
    assert has_kpsem(model) and has_kpsem("r3d50_kpsem") and not has_kpsem("r3d50")
    assert model.kpsem.config.in_channels == 32 and model.kpsem.config.num_frames == 8  # res3's width, all frames
    logits, internals = model.forward_with_internals(torch.randn(2, 3, 8, 64, 64))
    assert logits.shape == (2, 5) and model.num_temporal_features == 32 // 4 * 7
    assert internals.centres.shape == (2, 8, 8, 2) and tuple(internals.feature_size) == (8, 8)  # res3: 64 / 8
    logits.logsumexp(dim=1).sum().backward()
    for key, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), key
        if not key.startswith("kpsem.centre_hidden"):  # behind the zero-initialised last centre layer
            assert parameter.grad.abs().sum() > 0, key
    groups = {name: model.parameter_group(name) for name, _ in model.named_parameters()}
    assert groups["classifier.weight"] == "classifier" and groups["res3.0.conv2.weight"] == "backbone"
    assert groups["kpsem.centre_out.weight"] == "kpsem.centre"
    with pytest.raises(ValueError, match="this R3D-50-KPSEM was built for 8-frame clips"):
        model(torch.randn(1, 3, 16, 64, 64))
    stages = r"\('res2', 'res3', 'res4', 'res5'\)"
    with pytest.raises(ValueError, match=rf"insert_after must be one of {stages}; got 'conv4'"):
        kpsem.create_model("r3d50_kpsem", backbone=TINY, insert_after="conv4")


def test_torchvision_state_dict_round_trip(tmp_path) -> None:
    """Every torchvision weight lands, unsqueezed, and a 1-frame clip gives the 2-D network's logits."""
    net, state_dict = torchvision_resnet50_state_dict()
    mapped = checkpoint_filter_fn(state_dict)
    assert len(mapped) == len(state_dict) == 320
    assert torch.equal(mapped["conv1.conv.weight"], state_dict["conv1.weight"].unsqueeze(2))
    assert torch.equal(mapped["res3.0.downsample.0.weight"][:, :, 0], state_dict["layer2.0.downsample.0.weight"])
    assert torch.equal(mapped["classifier.bias"], state_dict["fc.bias"])
    path = tmp_path / "resnet50.pth"
    torch.save(state_dict, path)
    model = kpsem.create_model("r3d50", num_classes=1000, checkpoint=path).eval()
    ours = model.state_dict()
    assert set(ours) == set(mapped) and all(torch.equal(ours[k], mapped[k]) for k in mapped)
    frame = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        # 3-D and 2-D convolutions sum in different orders over 50 layers: equal to float rounding (~3e-4)
        torch.testing.assert_close(model(frame.unsqueeze(2)), net(frame), rtol=1e-3, atol=1e-3)
    info = describe_checkpoint(path)
    assert (info.arch, info.num_classes, info.config, info.source_format) == ("r3d50", 1000, {}, "state-dict")


def test_a_torchvision_key_that_does_not_fit_is_named(tmp_path) -> None:
    _, state_dict = torchvision_resnet50_state_dict()
    state_dict["layer5.0.conv1.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"does not fit R3D: 1 unexpected keys: layer5\.0\.conv1\.weight"):
        kpsem.create_model("r3d50", num_classes=1000, checkpoint=state_dict_file(tmp_path, state_dict))


def state_dict_file(tmp_path, state_dict: dict[str, torch.Tensor]):
    path = tmp_path / "weights.pth"
    torch.save(state_dict, path)
    return path


def test_imagenet_resnet50_initialises_r3d50_kpsem_backbone(tmp_path) -> None:
    _, state_dict = torchvision_resnet50_state_dict()
    model = kpsem.create_model("r3d50_kpsem", num_classes=7, num_frames=4)
    from kpsem.checkpoint import load_weights_into

    report = load_weights_into(model, state_dict_file(tmp_path, state_dict))
    assert "R3D-50 weights loaded into the R3D-50-KPSEM backbone; KPSEM starts fresh" in report.notes
    assert "classifier.weight" in report.reinitialised and report.loaded == 318  # all but fc
    assert torch.equal(model.state_dict()["res4.5.conv3.weight"][:, :, 0].contiguous(),
                       state_dict["layer3.5.conv3.weight"])


def test_a_checkpoint_works_through_the_apps_library_functions(tmp_path) -> None:
    """What the app does with a pair: describe, pair, load, analyse (Grad-CAM and key points), Table 1."""
    from kpsem.explain.analysis import analyse_clip
    from kpsem.pairing import check_pair
    from kpsem.profile import model_cost

    torch.manual_seed(0)
    base = kpsem.create_model("r3d50", num_classes=3, **TINY)
    ours = kpsem.create_model("r3d50_kpsem", num_classes=3, backbone=TINY, num_frames=8)
    paths = [save_checkpoint(tmp_path / f"{m.arch}.pt", m, class_names=["a", "b", "c"], clip_frames=8, clip_size=64)
             for m in (base, ours)]
    infos = [describe_checkpoint(p) for p in paths]
    assert [i.arch for i in infos] == ["r3d50", "r3d50_kpsem"] and infos[1].has_kpsem
    check = check_pair(*infos)
    assert check.ok and check.warnings == []
    loaded = load_checkpoint(paths[1])
    clip = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(clip), ours.eval()(clip), rtol=0, atol=1e-5)
    for layer in ("tail", "res3"):
        analysis = analyse_clip(loaded.model, clip, cam_layer=layer)
        assert analysis.has_kpsem and analysis.model_name == "R3D-50-KPSEM"
        assert analysis.key_points_px.shape == (8, 4, 32, 8, 2)  # G, K, C, T, (x, y)
    cost = model_cost(loaded.model, name="r3d50_kpsem", clip=(8, 64, 64))
    assert set(cost.parts) == {"backbone", "kpsem", "classifier"} and cost.parts["kpsem"].parameters > 0


def test_training_builds_it_from_the_config(tmp_path) -> None:
    from kpsem.train import TrainConfig, build_model, parameter_groups

    config = TrainConfig(arch="r3d50_kpsem", frames=8, size=64, widths=TINY["widths"], depths=TINY["depths"],
                         conv1_channels=TINY["conv1_channels"], model_options={"num_sets": 2})
    model, _ = build_model(config, 3)
    assert model.arch == "r3d50_kpsem" and model.kpsem.config.num_sets == 2
    groups = {g["name"]: len(g["params"]) for g in parameter_groups(model, config)}
    assert set(groups) == {"backbone", "kpsem", "kpsem.centre", "classifier"}
    optimiser = torch.optim.SGD(parameter_groups(model, config), lr=config.lr)
    loss = torch.nn.functional.cross_entropy(model(torch.randn(2, 3, 8, 64, 64)), torch.tensor([0, 2]))
    loss.backward()
    optimiser.step()
    assert torch.isfinite(loss)


def test_the_train_command_trains_r3d50_kpsem_and_names_where_kpsem_options_apply(frame_folders, tmp_path, capsys):
    from kpsem.cli import main

    tiny = ["--widths", "16,32,32,64", "--depths", "1,1,1,1", "--conv1-channels", "8", "--frames", "8", "--size", "32"]
    common = ["train", "--data", str(frame_folders), "--epochs", "1", "--batch-size", "4", "--workers", "0",
              "--val-split", "none", "--no-progress", "--device", "cpu", *tiny]
    out = tmp_path / "run"
    assert main([*common, "--out", str(out), "--arch", "r3d50_kpsem", "--num-sets", "2"]) == 0
    assert "trained 1 epochs (2 steps)" in capsys.readouterr().out
    loaded = load_checkpoint(out / "final.pt")
    assert loaded.info.arch == "r3d50_kpsem" and loaded.info.config["num_sets"] == 2
    assert loaded.info.config["backbone"]["conv1_channels"] == 8 and loaded.model.kpsem.config.num_frames == 8
    assert main([*common, "--out", str(tmp_path / "r2"), "--arch", "r3d50", "--num-sets", "2"]) == 2
    assert "--num-sets applies to --arch r3d50_kpsem only, not r3d50" in capsys.readouterr().err
