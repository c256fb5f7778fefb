"""K = 9 and 16: the g x g grid of ordered split positions (kpsem_module's doc), against hand-worked values.

The same steps as tests/test_kpsem_equations.py for K = 4: split positions from given MLP outputs, region
membership of cells, the key point and mean of each region, shifts across regions, no empty region at any
map size (saturated MLP outputs included) and the geometry in float32 under bfloat16 autocast.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from conftest import TINY_BACKBONE

import kpsem
from kpsem.models.kpsem_module import (
    KPSEM,
    KPSEMConfig,
    KPSEMInternals,
    cell_centres,
    centre_bounds,
    grid_key_points,
    grid_region_means,
    grid_split_indices,
    grid_split_positions,
    hard_grid_masks,
    hard_key_points,
    hard_region_masks,
    hard_region_means,
    key_point_shifts,
    region_means,
    shift_weights,
    soft_grid_masks,
    soft_region_masks,
)

LN2 = math.log(2.0)


def splits_of(x: list[float], y: list[float]) -> torch.Tensor:
    """One clip, set and frame: (N=1, G=1, T=1, 2, g-1)."""
    return torch.tensor([x, y])[None, None, None]


def peaks(size: int = 6, frames: int = 1) -> torch.Tensor:
    """One channel, values 6r + c (row-major 0..35 for 6x6): every region's maximum is its bottom-right cell."""
    return torch.arange(size * size, dtype=torch.float32).reshape(1, 1, 1, size, size).expand(1, 1, frames, size, size)


def test_split_positions_are_running_sums_of_the_band_shares() -> None:
    # x: shares softmax(0, ln 2, 0) = (1/4, 1/2, 1/4) -> splits -1 + 2 * (1/4, 3/4) = (-0.5, 0.5)
    # y: shares (1/2, 1/4, 1/4) -> (0, 0.5); all-zero logits: equal bands, -1 + 2j/g
    logits = torch.tensor([[0.0, LN2, 0.0], [LN2, 0.0, 0.0]])
    assert grid_split_positions(logits).flatten().tolist() == pytest.approx([-0.5, 0.5, 0.0, 0.5])
    assert grid_split_positions(torch.zeros(2, 3)).flatten().tolist() == pytest.approx([-1 / 3, 1 / 3] * 2)
    assert grid_split_positions(torch.zeros(2, 4)).flatten().tolist() == pytest.approx([-0.5, 0.0, 0.5] * 2)
    saturated = grid_split_positions(torch.tensor([[1e4, 0.0, 0.0], [0.0, 0.0, 1e4]]))
    assert saturated.tolist() == [[1.0, 1.0], [-1.0, -1.0]]  # shares (1, 0, 0) and (0, 0, 1): ordered, tied


def test_a_zero_last_layer_starts_every_set_on_equally_spaced_splits() -> None:
    module = KPSEM(KPSEMConfig(in_channels=8, num_frames=3, num_sets=2, num_regions=16))
    features = torch.randn(2, 8, 3, 8, 8)
    splits = module.separation_splits(features)
    assert splits.shape == (2, 2, 3, 2, 3)
    assert torch.allclose(splits, torch.tensor([-0.5, 0.0, 0.5]).expand_as(splits))
    assert module.separation_centres(features).abs().max() < 1e-7  # the grid's centre is the geometric one


def test_split_indices_count_cell_centres_and_keep_every_band_a_cell() -> None:
    # W = 6: cell centres -5/6, -1/2, -1/6, 1/6, 1/2, 5/6. A cell at a split's position is past it (x >= s).
    cases = [  # (x splits, expected first columns of bands 1 and 2)
        ([-0.5, 0.5], [1, 4]),  # plain counts: 1 centre left of -0.5, 4 left of 0.5
        ([-1.0, -1.0], [1, 2]),  # shares (0, 0, 1): lifted to leave bands 0 and 1 a column each
        ([1.0, 1.0], [4, 5]),  # shares (1, 0, 0): pushed back from the right edge
        ([0.0, 0.1], [3, 4]),  # two splits between the same cell centres: the second lifted by one
        ([math.nan, math.nan], [1, 2]),
    ]
    for x, expected in cases:
        cols, rows = grid_split_indices(splits_of(x, [-1 / 3, 1 / 3]), height=6, width=6)
        assert cols.flatten().tolist() == expected, x
        assert rows.flatten().tolist() == [2, 4]
    cols, _ = grid_split_indices(splits_of([0.9, -0.9, 0.0], [0.0, 0.0, 0.0]), height=4, width=4)
    assert cols.flatten().tolist() == [1, 2, 3]  # the smallest map for K = 16: one column per band, always


def test_a_map_smaller_than_the_grid_is_refused() -> None:
    message = ("a 3x5 feature map cannot be split into 16 regions of at least one cell each; KPSEM with "
               "num_regions=16 needs a feature map of at least 4x4: feed larger frames, insert KPSEM after an "
               "earlier stage (insert_after), or use num_regions=1")
    module = KPSEM(KPSEMConfig(in_channels=8, num_frames=3, num_sets=2, num_regions=16))
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        module(torch.randn(1, 8, 3, 3, 5))
    with pytest.raises(ValueError, match="num_regions must be one of \\(1, 4, 9, 16\\); got 6"):
        KPSEMConfig(num_regions=6)


def test_region_membership_of_cells() -> None:
    # x splits (-0.5, 0.5) -> column bands [0], [1, 2, 3], [4, 5]; y splits (0, 0.5) -> rows [0..2], [3], [4, 5]
    mask_x, mask_y = hard_grid_masks(splits_of([-0.5, 0.5], [0.0, 0.5]), height=6, width=6)
    assert mask_x[0, 0, 0].tolist() == [[1, 0, 0, 0, 0, 0], [0, 1, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1]]
    assert mask_y[0, 0, 0].tolist() == [[1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 0, 0], [0, 0, 0, 0, 1, 1]]
    soft_x, _ = soft_grid_masks(splits_of([-0.5, 0.5], [0.0, 0.5]), 6, 6, sharpness=1e-3)
    assert torch.allclose(soft_x[0, 0, 0], mask_x[0, 0, 0].float().where(soft_x[0, 0, 0] != 0.5, 0.5))
    assert torch.allclose(soft_x.sum(dim=3), torch.ones(6))  # the bands share every cell


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["keys", "masked"])
def test_key_point_and_mean_of_each_region(dtype: torch.dtype) -> None:
    features = peaks().to(dtype)
    splits = splits_of([-0.5, 0.5], [0.0, 0.5])
    key_points, values = grid_key_points(features, splits)  # (1, 1, 9, 1, 1, 2), (1, 1, 9, 1, 1)
    # Each region's maximum is its bottom-right cell: last rows (2, 3, 5) x last columns (0, 3, 5), 6r + c.
    assert values[0, 0, :, 0, 0].tolist() == [12, 15, 17, 18, 21, 23, 30, 33, 35]
    xs, ys = cell_centres(6, dtype=dtype).tolist(), cell_centres(6, dtype=dtype).tolist()
    expected = [(xs[c], ys[r]) for r in (2, 3, 5) for c in (0, 3, 5)]
    assert [tuple(p) for p in key_points[0, 0, :, 0, 0].tolist()] == expected
    # Means: 6 * (mean row) + (mean column), mean rows (1, 3, 4.5), mean columns (0, 2, 4.5).
    means = grid_region_means(features, splits)[0, 0, :, 0, 0].tolist()
    assert means == pytest.approx([6 * r + c for r in (1, 3, 4.5) for c in (0, 2, 4.5)])
    assert grid_region_means(features, splits).dtype == dtype


@pytest.mark.parametrize("num_regions", [9, 16])
def test_grid_key_points_and_means_match_a_naive_masked_search(num_regions: int) -> None:
    torch.manual_seed(3)
    n, c, t, h, w, g = 2, 3, 2, 7, 9, 3
    side = round(num_regions**0.5)
    features = torch.randint(0, 4, (n, c, t, h, w)).float()  # many ties: the first cell in row-major order wins
    splits = grid_split_positions(torch.randn(n, g, t, 2, side) * 2)
    key_points, values = grid_key_points(features, splits)
    wide_points, wide_values = grid_key_points(features.double(), splits)  # the masked path
    assert torch.allclose(wide_points.float(), key_points) and torch.equal(wide_values.float(), values)
    mask_x, mask_y = hard_grid_masks(splits, h, w)
    xs, ys = cell_centres(w), cell_centres(h)
    for ni, gi, k, ci, ti in torch.cartesian_prod(*(torch.arange(s) for s in (n, g, num_regions, c, t))).tolist():
        inside = mask_y[ni, gi, ti, k // side][:, None] * mask_x[ni, gi, ti, k % side][None, :]
        flat = features[ni, ci, ti].masked_fill(inside == 0, float("-inf")).flatten()
        best = int(flat.argmax())
        assert values[ni, gi, k, ci, ti].item() == flat[best].item()
        assert key_points[ni, gi, k, ci, ti].tolist() == [xs[best % w].item(), ys[best // w].item()]
    expected = region_means(features, mask_x, mask_y)
    assert torch.allclose(grid_region_means(features, splits), expected, atol=1e-5)


def test_the_grid_at_g_2_is_the_quadrant_split() -> None:
    torch.manual_seed(4)
    features = torch.randn(2, 3, 2, 5, 7)
    centres = (torch.rand(2, 3, 2, 2) * 2 - 1) * centre_bounds(5, 7)
    splits = centres[..., None]  # (N, G, T, 2, 1)
    for grid, quadrant in ((hard_grid_masks(splits, 5, 7), hard_region_masks(centres, 5, 7)),
                           (soft_grid_masks(splits, 5, 7), soft_region_masks(centres, 5, 7))):
        assert torch.equal(grid[0], quadrant[0]) and torch.equal(grid[1], quadrant[1])
    assert torch.equal(grid_key_points(features, splits)[1], hard_key_points(features, centres, 4)[1])
    assert torch.allclose(grid_region_means(features, splits), hard_region_means(features, centres), atol=1e-6)


def test_cross_region_shift_follows_a_key_point_from_the_first_region_to_the_last() -> None:
    """Equal 3x3 bands of a 6x6 map (columns and rows [0, 1], [2, 3], [4, 5]); a peak jumps corner to corner."""
    features = (torch.arange(36, dtype=torch.float32).reshape(6, 6) / 100).repeat(1, 1, 2, 1, 1)  # faint ramp
    features[0, 0, 0, 0, 0] = 10.0  # frame 0: region 0, cell (0, 0)
    features[0, 0, 1, 5, 5] = 10.0  # frame 1: region 8, cell (5, 5)
    splits = grid_split_positions(torch.zeros(1, 1, 2, 2, 3))
    key_points, values = grid_key_points(features, splits)
    weights = shift_weights(values)  # (1, 1, 9, 9, 1, 1)
    shifts = key_point_shifts(key_points, weights)
    assert key_points[0, 0, 0, 0, 0].tolist() == pytest.approx([-5 / 6, -5 / 6])
    assert key_points[0, 0, 8, 0, 1].tolist() == pytest.approx([5 / 6, 5 / 6])
    following = values[0, 0, :, 0, 1].tolist()
    scores = [1 / (abs(10.0 - v) + 0.1) for v in following]
    expected = [math.exp(s) / sum(math.exp(x) for x in scores) for s in scores]
    assert weights[0, 0, 0, :, 0, 0].tolist() == pytest.approx(expected)
    expected_shift = (torch.tensor(expected)[:, None] * key_points[0, 0, :, 0, 1]).sum(0) - key_points[0, 0, 0, 0, 0]
    assert shifts[0, 0, 0, 0, 0].tolist() == pytest.approx(expected_shift.tolist())
    assert shifts[0, 0, 0, 0, 0].tolist() == pytest.approx([5 / 3, 5 / 3], abs=2e-3)  # across two borders


def saturate(module: KPSEM) -> torch.Tensor:
    """The last layer's weights and bias at +-50 or +-1e4 on one band per axis and set (the hidden layer is a
    ReLU, so each logit is that value times 1 + the hidden sum): every band's share rounds to 0 or 1."""
    side = module.grid
    pattern = torch.zeros(module.config.num_sets, 2 * side)
    for g in range(module.config.num_sets):
        pattern[g, g % side] = 1e4 if g % 2 else 50.0  # x: all of the axis to one band
        pattern[g, side + (side - 1 - g % side)] = -1e4 if g % 2 else 50.0  # y: one band large or one starved
    with torch.no_grad():
        module.centre_out.bias.copy_(pattern)
        module.centre_out.weight.copy_(pattern[:, :, None].expand_as(module.centre_out.weight))
    return pattern


def check_grid(internals: KPSEMInternals, features: torch.Tensor, num_regions: int) -> None:
    """No empty region, and each value the maximum of its own region (searched independently)."""
    h, w = internals.feature_size
    assert internals.splits is not None and internals.splits.dtype == torch.float32
    mask_x, mask_y = hard_grid_masks(internals.splits.detach(), h, w)  # (N, G, T, g, W), (N, G, T, g, H)
    regions = mask_y[..., :, None, :, None] * mask_x[..., None, :, None, :]  # (N, G, T, g, g, H, W)
    assert regions.sum(dim=(-2, -1)).min() >= 1
    regions = regions.flatten(3, 4).bool()  # (N, G, T, K, H, W)
    by_frame = features.detach().transpose(1, 2)[:, None, :, None]  # (N, 1, T, 1, C, H, W)
    maxima = by_frame.masked_fill(~regions[:, :, :, :, None], -math.inf).flatten(-2).amax(-1)  # (N, G, T, K, C)
    assert torch.equal(internals.values.detach(), maxima.permute(0, 1, 3, 4, 2).float())
    assert internals.key_points.shape[2] == num_regions == internals.shift_weights.shape[3]


@pytest.mark.parametrize("precision", ["float32", "bfloat16-autocast"])
@pytest.mark.parametrize("num_regions", [9, 16])
def test_saturated_grid_keeps_every_region_at_every_map_size(num_regions: int, precision: str) -> None:
    torch.manual_seed(0)
    module = KPSEM(KPSEMConfig(in_channels=8, num_frames=3, num_sets=4, centre_hidden=4,
                               num_regions=num_regions)).eval()
    saturate(module)
    side = module.grid
    for size in [(s, s) for s in range(side, 15)] + [(side, 14), (14, side), (5, 11)]:
        features = torch.randn(2, 8, 3, *size) * 3
        if precision == "float32":
            output, internals = module(features, return_internals=True)
        else:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                features = features.bfloat16()  # what a convolution hands KPSEM under autocast
                output, internals = module(features, return_internals=True)
        assert torch.isfinite(output).all(), size
        check_grid(internals, features, num_regions)


def test_grid_geometry_runs_in_float32_under_bfloat16_autocast() -> None:
    torch.manual_seed(1)
    module = KPSEM(KPSEMConfig(in_channels=8, num_frames=3, num_sets=2, centre_hidden=4, num_regions=9)).eval()
    with torch.no_grad():
        module.centre_out.weight.normal_(0, 0.5)
    features = torch.randn(2, 8, 3, 6, 6).bfloat16()
    expected = module.separation_splits(features.float())  # float32, autocast off
    with torch.autocast("cpu", dtype=torch.bfloat16):
        splits = module.separation_splits(features)
        _, internals = module(features, return_internals=True)
    assert splits.dtype == internals.centres.dtype == internals.key_points.dtype == torch.float32
    assert torch.equal(splits, expected)  # the pooled bfloat16 map is widened exactly; no bfloat16 step


@pytest.mark.parametrize("num_regions", [9, 16])
def test_grid_trains_through_the_straight_through_gradients(num_regions: int) -> None:
    torch.manual_seed(2)
    module = KPSEM(KPSEMConfig(in_channels=8, num_frames=3, num_sets=2, centre_hidden=4,
                               num_regions=num_regions)).train()
    with torch.no_grad():
        module.centre_out.weight.normal_(0, 0.5)
    leaf = torch.randn(2, 8, 3, 8, 8, requires_grad=True)
    output, internals = module(leaf, return_internals=True)
    assert output.shape == (2, 2 * 2)  # C/4 x (T - 1)
    assert internals.splits.shape == (2, 2, 3, 2, module.grid - 1)
    output.square().sum().backward()
    assert torch.isfinite(leaf.grad).all() and leaf.grad.abs().sum() > 0
    for key, parameter in module.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), key
    assert module.centre_out.weight.grad.abs().sum() > 0  # the splits learn


@pytest.mark.parametrize("num_regions", [9, 16])
def test_fixed_regions_draw_ordered_splits_once_and_freeze_them(num_regions: int) -> None:
    config = KPSEMConfig(in_channels=8, num_frames=3, num_sets=3, num_regions=num_regions, fixed_regions=True)
    module, again = KPSEM(config), KPSEM(config)
    assert not any(name.startswith("centre_") for name, _ in module.named_parameters())
    fixed = module.state_dict()["fixed_splits"]  # (G, 2, g-1), saved with the weights
    assert fixed.shape == (3, 2, module.grid - 1) and torch.equal(fixed, again.fixed_splits)
    assert (fixed.diff(dim=-1) > 0).all() and fixed.abs().max() < 1
    assert not torch.allclose(fixed, grid_split_positions(torch.zeros(3, 2, module.grid)))  # not the equal grid
    splits = module.separation_splits(torch.randn(2, 8, 3, 6, 6))
    assert torch.equal(splits, fixed[None, :, None].expand(2, 3, 3, 2, module.grid - 1))


def test_the_geometric_knockout_puts_the_grid_on_equal_bands() -> None:
    torch.manual_seed(5)
    model = kpsem.create_model("mf_kpsem", num_classes=3, backbone=dict(TINY_BACKBONE),
                               num_frames=8, num_sets=2, centre_hidden=4, num_regions=9).eval()
    clip = torch.randn(1, 3, 8, 96, 96)
    with torch.no_grad():
        model.kpsem.centre_out.weight.normal_(0, 2.0)
        moved = model.forward_with_internals(clip)[1]
        assert moved.splits.std() > 0.05
        knocked = model(clip, knockout="geometric_centres")
        with model.kpsem.geometric_splits():
            inside = model.forward_with_internals(clip)[1]
        model.kpsem.centre_out.weight.zero_()
        expected = model(clip)
    assert torch.allclose(inside.splits, grid_split_positions(torch.zeros(2, 3)).expand_as(inside.splits))
    torch.testing.assert_close(knocked, expected)
    assert not model.kpsem.geometric  # restored after the block
