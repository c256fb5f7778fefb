"""Each step of AReSE (paper eq. 4-12) against values worked out by hand on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from kpsem.models.kpsem_module import (
    KPSEM,
    KPSEMConfig,
    _soft_key_points,
    cell_centres,
    centre_bounds,
    hard_key_points,
    hard_region_masks,
    hard_region_means,
    key_point_shifts,
    normalised_to_pixels,
    region_means,
    regional_key_point_shifts,
    regional_weights,
    shift_weights,
    soft_region_masks,
)


def test_cell_centres_follow_the_align_corners_false_convention() -> None:
    assert cell_centres(4).tolist() == [-0.75, -0.25, 0.25, 0.75]
    assert centre_bounds(height=4, width=8).tolist() == [0.875, 0.75]


def test_eq4_5_centre_is_geometric_centre_plus_bounded_mlp_bias() -> None:
    module = KPSEM(KPSEMConfig(in_channels=4, num_frames=2, num_sets=1, centre_hidden=1))
    features = torch.zeros(1, 4, 2, 4, 4)
    features[0, 0, 0] = 2.0  # frame 0: channel 0 averages 2; frame 1: all zero
    with torch.no_grad():
        module.centre_hidden.weight.copy_(torch.tensor([[[1.0, 0.0, 0.0, 0.0]]]))
        module.centre_hidden.bias.zero_()
        module.centre_out.weight.copy_(torch.tensor([[[0.5], [-0.25]]]))
        module.centre_out.bias.copy_(torch.tensor([[0.0, 0.1]]))
    centres = module.separation_centres(features)  # (1, 1, 2, 2)
    bound = 0.75  # 1 - 1/4 for a 4x4 map
    # frame 0: hidden = relu(2) = 2 -> (tanh(1.0), tanh(-0.5 + 0.1)) * bound
    assert centres[0, 0, 0].tolist() == pytest.approx([math.tanh(1.0) * bound, math.tanh(-0.4) * bound])
    # frame 1: hidden = 0 -> (tanh(0), tanh(0.1)) * bound
    assert centres[0, 0, 1].tolist() == pytest.approx([0.0, math.tanh(0.1) * bound])


def test_zero_initialised_centre_mlp_starts_every_set_at_the_geometric_centre() -> None:
    module = KPSEM(KPSEMConfig(in_channels=8, num_frames=3, num_sets=5))
    centres = module.separation_centres(torch.randn(2, 8, 3, 6, 6))
    assert torch.equal(centres, torch.zeros(2, 5, 3, 2))


def test_hard_region_masks_split_cells_at_the_centre() -> None:
    centres = torch.tensor([[[[0.1, -0.3]]]])  # (N=1, G=1, T=1, 2)
    mask_x, mask_y = hard_region_masks(centres, height=4, width=4)
    assert mask_x[0, 0, 0].tolist() == [[1, 1, 0, 0], [0, 0, 1, 1]]  # x >= 0.1: cells at 0.25, 0.75
    assert mask_y[0, 0, 0].tolist() == [[1, 0, 0, 0], [0, 1, 1, 1]]  # y >= -0.3: cells at -0.25 ...


def _peaks(height: int = 4, width: int = 4) -> torch.Tensor:
    """One channel, one frame, distinct values 0..15 row by row, so every quadrant has one maximum."""
    return torch.arange(height * width, dtype=torch.float32).reshape(1, 1, 1, height, width)


def test_eq6_7_key_points_and_values_per_quadrant() -> None:
    features = _peaks()
    centres = torch.zeros(1, 1, 1, 2)
    key_points, values = hard_key_points(features, centres, num_regions=4)
    # Quadrant maxima of [[0..3],[4..7],[8..11],[12..15]] around the middle: 5, 7, 13, 15.
    assert values[0, 0, :, 0, 0].tolist() == [5.0, 7.0, 13.0, 15.0]
    xs, ys = cell_centres(4).tolist(), cell_centres(4).tolist()
    expected = [(xs[1], ys[1]), (xs[3], ys[1]), (xs[1], ys[3]), (xs[3], ys[3])]
    assert [tuple(p) for p in key_points[0, 0, :, 0, 0].tolist()] == expected


def test_eq6_7_moving_the_centre_moves_a_maximum_into_another_region() -> None:
    features = _peaks()
    # Centre between columns 2 and 3 and between rows 0 and 1: the left regions now own column 2.
    centres = torch.tensor([[[[0.5, -0.5]]]])
    key_points, values = hard_key_points(features, centres, num_regions=4)
    assert values[0, 0, :, 0, 0].tolist() == [2.0, 3.0, 14.0, 15.0]
    assert key_points[0, 0, 0, 0, 0].tolist() == [0.25, -0.75]  # value 2 sits at column 2, row 0


def test_single_region_takes_the_global_maximum() -> None:
    key_points, values = hard_key_points(_peaks(), torch.zeros(1, 3, 1, 2), num_regions=1)
    assert key_points.shape == (1, 3, 1, 1, 1, 2) and values.shape == (1, 3, 1, 1, 1)
    assert values[0, 2, 0, 0, 0].item() == 15.0
    assert key_points[0, 2, 0, 0, 0].tolist() == [0.75, 0.75]


def test_eq9_shift_weights_are_a_softmax_of_reciprocal_value_gaps() -> None:
    values = torch.tensor([[1.0, 1.1], [3.0, 2.0]])[:, None, :]  # (K=2, C=1, T=2): V[k, c, t]
    weights = shift_weights(values)  # (K_r=2, K_n=2, C=1, T-1=1)
    # a=0 (V=1): gaps to next frame (1.1, 2.0) -> scores 1/0.2 = 5, 1/1.1
    s = [5.0, 1 / 1.1]
    assert weights[0, :, 0, 0].tolist() == pytest.approx([math.exp(x) / sum(map(math.exp, s)) for x in s])
    # a=1 (V=3): gaps (1.9, 1.0) -> scores 1/2.0, 1/1.1
    s = [1 / 2.0, 1 / 1.1]
    assert weights[1, :, 0, 0].tolist() == pytest.approx([math.exp(x) / sum(map(math.exp, s)) for x in s])
    assert weights.sum(dim=1).flatten().tolist() == pytest.approx([1.0, 1.0])


def test_eq8_10_shift_is_the_weighted_location_difference() -> None:
    key_points = torch.tensor(
        [  # (K=2, C=1, T=2, 2)
            [[[0.0, 0.0], [0.5, 0.0]]],
            [[[-0.5, 0.5], [-0.5, -0.5]]],
        ]
    )
    weights = torch.tensor([[0.75, 0.25], [0.5, 0.5]])[:, :, None, None]  # (K_r, K_n, C, T-1)
    shifts = key_point_shifts(key_points, weights)
    # a=0 at (0, 0): 0.75 * ((0.5, 0) - (0, 0)) + 0.25 * ((-0.5, -0.5) - (0, 0)) = (0.25, -0.125)
    assert shifts[0, 0, 0].tolist() == pytest.approx([0.25, -0.125])
    # a=1 at (-0.5, 0.5): 0.5 * ((1.0, -0.5)) + 0.5 * ((0, -1.0)) = (0.5, -0.75)
    assert shifts[1, 0, 0].tolist() == pytest.approx([0.5, -0.75])


def test_eq11_regional_weights_softmax_the_temporally_pooled_means() -> None:
    means = torch.tensor([[1.0, 3.0], [2.0, 4.0]])[:, None, :]  # (K=2, C=1, T=2)
    weights = regional_weights(means)  # pooled: region 0 -> 2, region 1 -> 3
    assert weights[:, 0, 0].tolist() == pytest.approx([1 / (1 + math.e), math.e / (1 + math.e)])


def test_eq11_region_means_average_each_quadrant() -> None:
    features = _peaks()
    means = region_means(features, *hard_region_masks(torch.zeros(1, 1, 1, 2), 4, 4))
    # top-left quadrant holds 0, 1, 4, 5 -> 2.5; top-right 2, 3, 6, 7 -> 4.5; bottom 10.5 and 12.5
    assert means[0, 0, :, 0, 0].tolist() == [2.5, 4.5, 10.5, 12.5]


def test_integral_image_means_equal_the_masked_means() -> None:
    torch.manual_seed(2)
    features = torch.randn(2, 3, 4, 5, 7)
    centres = (torch.rand(2, 3, 4, 2) * 2 - 1) * centre_bounds(5, 7)
    expected = region_means(features, *hard_region_masks(centres, 5, 7))
    assert torch.allclose(hard_region_means(features, centres), expected, atol=1e-5)
    assert hard_region_means(_peaks(), torch.zeros(1, 1, 1, 2))[0, 0, :, 0, 0].tolist() == [2.5, 4.5, 10.5, 12.5]


def test_eq12_rkps_is_the_region_weighted_sum_of_shifts() -> None:
    weights = torch.tensor([0.25, 0.75])[:, None, None]  # (K, C, T-1)
    shifts = torch.tensor([[1.0, 2.0], [-1.0, 0.0]])[:, None, None, :]  # (K, C, T-1, 2)
    assert regional_key_point_shifts(weights, shifts)[0, 0].tolist() == [-0.5, 0.5]


def test_cross_region_key_point_is_followed_into_its_new_region() -> None:
    """A peak in the top-left quadrant jumps to the top-right one: the top-left shift points there."""
    features = torch.full((1, 1, 2, 4, 4), 0.0)
    features[0, 0, :] = torch.arange(16, dtype=torch.float32).reshape(4, 4) / 100  # faint distinct ramp
    features[0, 0, 0, 0, 0] = 10.0  # frame 0: strong key point at the top-left corner
    features[0, 0, 1, 0, 3] = 10.0  # frame 1: it has moved to the top-right corner
    centres = torch.zeros(1, 1, 2, 2)
    key_points, values = hard_key_points(features, centres, num_regions=4)
    weights = shift_weights(values)
    shifts = key_point_shifts(key_points, weights)
    top_left, top_right = 0, 1
    assert key_points[0, 0, top_left, 0, 0].tolist() == [-0.75, -0.75]
    assert key_points[0, 0, top_right, 0, 1].tolist() == [0.75, -0.75]
    # Weight of the pair (TL at t, TR at t+1): score 1/(0 + 0.1) = 10 against scores near 1/(10 + 0.1).
    following_values = values[0, 0, :, 0, 1].tolist()
    scores = [1 / (abs(10.0 - v) + 0.1) for v in following_values]
    expected = [math.exp(s) / sum(math.exp(x) for x in scores) for s in scores]
    assert weights[0, 0, top_left, :, 0, 0].tolist() == pytest.approx(expected)
    following_points = key_points[0, 0, :, 0, 1]
    expected_shift = (torch.tensor(expected)[:, None] * following_points).sum(0) - key_points[0, 0, top_left, 0, 0]
    assert shifts[0, 0, top_left, 0, 0].tolist() == pytest.approx(expected_shift.tolist())
    assert shifts[0, 0, top_left, 0, 0, 0].item() == pytest.approx(1.5, abs=1e-3)  # across the border


def test_soft_key_points_approach_the_hard_ones_at_low_temperature() -> None:
    torch.manual_seed(0)
    # Distinct values one apart, float64 so exp(-range / temperature) does not underflow.
    features = torch.stack([torch.randperm(16).double().reshape(4, 4) for _ in range(6)]).reshape(1, 3, 2, 4, 4)
    centres = torch.tensor([[0.1, -0.3], [0.0, 0.0], [-0.4, 0.4]], dtype=torch.float64)[None, :, None, :]
    centres = centres.expand(1, 3, 2, 2)
    hard_points, hard_values = hard_key_points(features, centres, 4)
    mask_x, mask_y = soft_region_masks(centres, 4, 4, sharpness=1e-3)
    soft_points, soft_values = _soft_key_points(features, mask_x, mask_y, temperature=0.05)
    assert torch.allclose(soft_points, hard_points, atol=1e-6)
    assert torch.allclose(soft_values, hard_values, atol=1e-6)


def test_hard_key_points_match_a_naive_masked_argmax() -> None:
    torch.manual_seed(1)
    n, c, t, h, w, g = 2, 3, 2, 5, 7, 3
    features = torch.randn(n, c, t, h, w)
    centres = (torch.rand(n, g, t, 2) * 2 - 1) * centre_bounds(h, w)
    key_points, values = hard_key_points(features, centres, 4)
    mask_x, mask_y = hard_region_masks(centres, h, w)
    xs, ys = cell_centres(w), cell_centres(h)
    for index in torch.cartesian_prod(*(torch.arange(s) for s in (n, g, 4, c, t))).tolist():
        ni, gi, k, ci, ti = index
        inside = mask_y[ni, gi, ti, k // 2][:, None] * mask_x[ni, gi, ti, k % 2][None, :]
        flat = features[ni, ci, ti].masked_fill(inside == 0, float("-inf")).flatten()
        best = int(flat.argmax())
        assert values[ni, gi, k, ci, ti].item() == flat[best].item()
        assert key_points[ni, gi, k, ci, ti].tolist() == [xs[best % w].item(), ys[best // w].item()]


def test_normalised_coordinates_map_to_input_pixel_centres() -> None:
    # conv4 of a 224 clip is 14x14 with stride 16: cell j covers pixels 16j .. 16j+15, centre 16j + 7.5.
    coords = torch.stack([cell_centres(14), cell_centres(14)], dim=-1)
    pixels = normalised_to_pixels(coords, 224, 224)
    assert pixels[:, 0].tolist() == pytest.approx([16 * j + 7.5 for j in range(14)])
    assert normalised_to_pixels(torch.tensor([-1.0, 1.0]), 10, 20).tolist() == [-0.5, 9.5]
