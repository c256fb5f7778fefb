"""kpsem.centres: centre movement on hand-made centres, the two training levers, and the command on the demo."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import TINY_BACKBONE

from kpsem.centres import centre_movement, collect_centres, init_centre_mlp, spread_penalty
from kpsem.cli import main
from kpsem.models.kpsem_module import KPSEM, KPSEMConfig

DEMO = Path(__file__).resolve().parents[1] / "assets" / "demo"


def test_movement_across_clips_and_frames_in_cells_and_pixels() -> None:
    # 2 clips x 1 set x 2 frames on a 4x4 map of a 64x64 clip: 2 cells per normalised unit, 16 pixels per cell.
    centres = torch.tensor([[[[0.0, 0.0], [0.5, 0.0]]], [[[0.5, 0.5], [0.5, 0.5]]]])  # (C=2, G=1, T=2, 2)
    (s,) = centre_movement(centres, (4, 4), (64, 64))
    # clip means (0.25, 0) and (0.5, 0.5), their mean (0.375, 0.25): each off by (0.125, 0.25) = (0.25, 0.5) cells
    assert s.clips_median_cells == pytest.approx(math.sqrt(0.3125))
    assert s.clips_max_cells == pytest.approx(math.sqrt(0.3125))
    assert s.clips_spread_cells == pytest.approx(math.sqrt(4 * 0.015625 + 4 * 0.0625))
    # frames: clip 0 moves 0.25 either side of its mean (0.5 cell), clip 1 not at all
    assert (s.frames_median_cells, s.frames_max_cells, s.frames_spread_cells) == pytest.approx((0.25, 0.5, 0.25))
    # from the geometric centre: 0, 1 cell, sqrt(2) cells twice
    assert (s.offset_median_cells, s.offset_max_cells) == pytest.approx(((1 + math.sqrt(2)) / 2, math.sqrt(2)))
    assert s.near_bound == 0 and s.cell_pixels == (16.0, 16.0)
    assert s.pixels("clips_median") == pytest.approx(16 * math.sqrt(0.3125))
    at_bound = centre_movement(torch.full((1, 1, 1, 2), 0.75), (4, 4), (64, 64))[0]  # bound 1 - 1/4
    assert at_bound.near_bound == 1


def test_movement_refuses_a_tensor_of_the_wrong_shape() -> None:
    with pytest.raises(ValueError, match=r"centres must be \(clips, sets, frames, 2\) with at least one of each; "
                                         r"got \(2, 3, 2\)"):
        centre_movement(torch.zeros(2, 3, 2), (4, 4), (64, 64))


def test_spread_penalty_on_hand_made_centres_and_its_gradient() -> None:
    # u = centres / bounds; x of clips (0.2, 0.6): variance 0.04; y (-0.4, 0.4): 0.16 -> spread 0.1.
    # edge: only 0.6 passes the margin 0.5: ((0.1 / 0.5)^2) / 4 coordinates = 0.01. Value 0.01 - 0.1.
    bounds = torch.tensor([0.5, 0.8])
    u = torch.tensor([[0.2, -0.4], [0.6, 0.4]])
    centres = (u * bounds)[:, None, None].requires_grad_(True)  # (N=2, G=1, T=1, 2)
    value = spread_penalty(centres, bounds)
    assert value.item() == pytest.approx(-0.09)
    value.backward()
    grad_u = (centres.grad[:, 0, 0] * bounds).tolist()  # d/du
    # spread pushes each coordinate away from the batch mean (-(u - mean) / 2 per coordinate pair);
    # the edge pulls the 0.6 back: 0.2 * 2 * 0.1 / 0.25 / 4 = +0.2 against spread's -0.1
    assert grad_u[0] == pytest.approx([0.1, 0.2])  # descent moves 0.2 down (away from 0.4), -0.4 further down
    assert grad_u[1] == pytest.approx([0.1, -0.2])  # descent moves 0.6 down (off the edge), 0.4 further up
    assert spread_penalty(centres[1:], bounds).item() == pytest.approx(0.02)  # one clip: no spread; edge (0.2^2) / 2


def test_spread_penalty_is_lowest_at_two_thirds_of_the_bound_not_at_the_bound() -> None:
    bounds = torch.ones(2)
    values = {a: spread_penalty(torch.tensor([a, -a])[:, None, None, None].expand(2, 1, 1, 2), bounds).item()
              for a in (0.5, 2 / 3, 0.9, 1.0)}
    assert values[2 / 3] == pytest.approx(-1 / 3)  # 4 (a - 1/2)^2 - a^2
    assert values[2 / 3] < values[0.5] and values[2 / 3] < values[0.9] < values[1.0] == pytest.approx(0.0)


def test_init_centre_mlp_draws_the_last_layer_with_the_given_std() -> None:
    module = KPSEM(KPSEMConfig(in_channels=8, num_frames=3, num_sets=8, centre_hidden=256))
    init_centre_mlp(module, 0.05, generator=torch.Generator().manual_seed(0))
    weight = module.centre_out.weight  # (8, 2, 256): 4096 draws
    assert weight.std().item() == pytest.approx(0.05, rel=0.05)
    assert abs(weight.mean().item()) < 0.005 and module.centre_out.bias.abs().max() == 0
    centres = module.separation_centres(torch.randn(3, 8, 3, 6, 6))
    assert centres.std(dim=0).min() > 0  # the centres differ between clips from the start
    init_centre_mlp(module, 0.0)
    assert module.centre_out.weight.abs().max() == 0
    fixed = KPSEM(KPSEMConfig(in_channels=8, num_frames=3, num_sets=2, fixed_regions=True))
    with pytest.raises(ValueError, match="centre_init_std needs learned centres"):
        init_centre_mlp(fixed, 0.1)
    with pytest.raises(ValueError, match="centre_init_std must be at least 0; got -1"):
        init_centre_mlp(module, -1)


def test_collect_centres_refuses_a_model_without_kpsem() -> None:
    with pytest.raises(ValueError, match="Linear has no KPSEM module, so it has no separation centres"):
        collect_centres(torch.nn.Linear(2, 2), [], device=torch.device("cpu"))


def test_centres_command_on_the_demo(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["centres", "--checkpoint", str(DEMO / "mf_kpsem.pt"), "--data", str(DEMO / "clips"),
                   "--clips", "3", "--precision", "fp32", "--device", "cpu", "--json"])
    assert status == 0
    report = json.loads(capsys.readouterr().out)
    assert report["clips"] == 3 and report["frames"] == 8 and len(report["sets"]) == 8
    assert report["feature_size"] == [6, 6] and report["input_size"] == [96, 96]
    first = report["sets"][0]
    assert first["clips_median_pixels"] == pytest.approx(16 * first["clips_median_cells"])
    status = main(["centres", "--checkpoint", str(DEMO / "mfnet.pt"), "--data", str(DEMO / "clips"), "--clips", "1"])
    assert status == 2
    assert "holds a mfnet model; only models with KPSEM have separation centres" in capsys.readouterr().err


def test_centre_spread_adds_the_weighted_penalty_to_the_loss_gradient() -> None:
    from kpsem.centres import CentreSpread

    torch.manual_seed(0)
    model = torch.nn.Module()
    model.kpsem = KPSEM(KPSEMConfig(in_channels=8, num_frames=3, num_sets=2, centre_hidden=4)).train()
    init_centre_mlp(model.kpsem, 0.5, generator=torch.Generator().manual_seed(1))
    features = torch.randn(4, 8, 3, 6, 6)

    def gradient(weight: float, explicit: bool, scale: float = 1.0) -> torch.Tensor:
        model.kpsem.zero_grad()
        hook = CentreSpread(model, 0.0 if explicit else weight, loss_scale=lambda: scale)
        temporal, internals = model.kpsem(features, return_internals=True)
        loss = temporal.square().mean()
        if explicit:
            loss = loss + weight * spread_penalty(internals.centres, torch.tensor([5 / 6, 5 / 6]))
        (loss * scale).backward()
        hook.close()
        return model.kpsem.centre_out.weight.grad.clone() / scale

    plain = gradient(0.0, explicit=True)
    expected = gradient(2.0, explicit=True)
    assert not torch.allclose(plain, expected)  # the term matters
    torch.testing.assert_close(gradient(2.0, explicit=False), expected)
    torch.testing.assert_close(gradient(2.0, explicit=False, scale=1024.0), expected)  # a GradScaler's scale
    with pytest.raises(ValueError, match="centre_spread_weight must be at least 0; got -0.5"):
        CentreSpread(model, -0.5)


def test_train_config_carries_the_levers_to_the_model() -> None:
    from kpsem.train import build_model
    from kpsem.train_config import TrainConfig

    small = {**TINY_BACKBONE, "frames": 8, "size": 32, "seed": 3}
    model, _ = build_model(TrainConfig(arch="mf_kpsem", centre_init_std=0.2, **small), num_classes=3)
    weight = model.kpsem.centre_out.weight
    again, _ = build_model(TrainConfig(arch="mf_kpsem", centre_init_std=0.2, **small), num_classes=3)
    assert weight.abs().max() > 0 and torch.equal(weight, again.kpsem.centre_out.weight)  # drawn from the seed
    plain, _ = build_model(TrainConfig(arch="mf_kpsem", **small), num_classes=3)
    assert plain.kpsem.centre_out.weight.abs().max() == 0
    with pytest.raises(ValueError, match="centre_spread_weight must be at least 0; got -1"):
        TrainConfig(centre_spread_weight=-1)
    with pytest.raises(ValueError, match="centre_init_std needs learned centres"):
        build_model(TrainConfig(arch="mf_kpsem", centre_init_std=0.2, model_options={"fixed_regions": True}, **small),
                    num_classes=3)
