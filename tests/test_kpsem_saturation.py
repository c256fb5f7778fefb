"""KPSEM's split at the tanh bound: every region keeps a cell at every map size and in every precision.

In float32 tanh rounds to exactly +-1 for |z| > ~9 (bfloat16: ~3.5), which puts a separation centre on
the outermost cell centre. These tests drive the centre MLPs far past that point and check the split,
the regions, the forward values and the gradients.
"""

from __future__ import annotations

import contextlib
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
    hard_region_masks,
    split_indices,
)

# One row per set: the centre MLP's sign and magnitude on (x, y); every sign pair, both magnitudes.
SATURATING = torch.tensor([[50.0, 1e4], [-1e4, -50.0], [1e4, -1e4], [-50.0, 50.0]])
SQUARE = [(s, s) for s in range(3, 15)]
OBLONG = [(2, 2), (3, 14), (14, 3), (5, 8), (8, 5), (7, 12), (13, 6), (11, 4)]
PRECISIONS = ["float32", "bfloat16-autocast", "float16-autocast", "float16"]
TOO_SMALL = (
    "a 1x5 feature map cannot be split into 4 regions of at least one cell each; KPSEM with num_regions=4 "
    "needs a feature map of at least 2x2: feed larger frames, insert KPSEM after an earlier stage "
    "(insert_after), or use num_regions=1"
)
EXACTLY_TOO_SMALL = f"^{re.escape(TOO_SMALL)}$"


def saturate(module: KPSEM) -> None:
    """Weights and bias of the centre MLP's last layer at SATURATING: the hidden layer is a ReLU (>= 0),
    so each output is sign * magnitude * (1 + sum of hidden), at least 50 away from zero."""
    with torch.no_grad():
        module.centre_out.bias.copy_(SATURATING)
        module.centre_out.weight.copy_(SATURATING[:, :, None].expand_as(module.centre_out.weight))


def autocast(precision: str) -> contextlib.AbstractContextManager:
    if precision.endswith("-autocast"):
        return torch.autocast("cpu", dtype=getattr(torch, precision.removesuffix("-autocast")))
    return contextlib.nullcontext()


def expected_splits(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(G,) split column and row: a centre at +bound leaves the right (bottom) half its last column
    (row) only, one at -bound the left (top) half its first only."""
    col = torch.where(SATURATING[:, 0] > 0, width - 1, 1)
    row = torch.where(SATURATING[:, 1] > 0, height - 1, 1)
    return col, row


def check_regions(internals: KPSEMInternals, features: torch.Tensor) -> None:
    """Centres on the bound, the expected split, no empty region, and each key point and value the
    maximum of its own region (a masked max over the whole map, written independently of the module)."""
    h, w = internals.feature_size
    centres = internals.centres.detach()  # (N, G, T, 2)
    assert centres.dtype == torch.float32
    bound = centre_bounds(h, w) * SATURATING.sign()  # (G, 2)
    assert torch.equal(centres, bound[None, :, None].expand_as(centres))
    col, row = split_indices(centres, h, w)  # (N, G, T)
    expected_col, expected_row = expected_splits(h, w)
    assert torch.equal(col, expected_col[None, :, None].expand_as(col))
    assert torch.equal(row, expected_row[None, :, None].expand_as(row))
    mask_x, mask_y = hard_region_masks(centres, h, w)  # (N, G, T, 2, W), (N, G, T, 2, H)
    regions = mask_y[..., :, None, :, None] * mask_x[..., None, :, None, :]  # (N, G, T, 2, 2, H, W)
    assert regions.sum(dim=(-2, -1)).min() >= 1  # cell count of every region, clip, set and frame
    regions = regions.flatten(3, 4).bool()  # (N, G, T, K, H, W), k = 2 * bottom + right
    by_frame = features.detach().transpose(1, 2)[:, None, :, None]  # (N, 1, T, 1, C, H, W)
    masked = by_frame.masked_fill(~regions[:, :, :, :, None], -math.inf)  # (N, G, T, K, C, H, W)
    maxima = masked.flatten(-2).amax(dim=-1).permute(0, 1, 3, 4, 2)  # (N, G, K, C, T)
    assert torch.equal(internals.values.detach(), maxima)
    points = internals.key_points.detach().float()  # (N, G, K, C, T, 2)
    columns = ((points[..., 0] + 1) * w / 2 - 0.5).round().long()  # back to cell indices
    rows = ((points[..., 1] + 1) * h / 2 - 0.5).round().long()
    right = torch.tensor([0, 1, 0, 1])[None, None, :, None, None]
    bottom = torch.tensor([0, 0, 1, 1])[None, None, :, None, None]
    assert torch.equal(columns >= col[:, :, None, None], right.bool().expand_as(columns))
    assert torch.equal(rows >= row[:, :, None, None], bottom.bool().expand_as(rows))


def test_split_keeps_a_cell_on_each_side_at_and_beyond_the_bound() -> None:
    # W = 4: cell centres -0.75, -0.25, 0.25, 0.75; H = 3: -2/3, 0, 2/3. A centre on the first cell
    # (-0.75, the bound) ties with it, so "x >= cx" alone would put every column on the right; the
    # split clamps to column 1. Beyond +bound every cell is left of cx; the split clamps to W - 1.
    centres = torch.tensor([[[[-0.75, -2 / 3]], [[0.1, 0.0]], [[0.75, 0.5]], [[0.9, 1.0]], [[math.nan, math.nan]]]])
    col, row = split_indices(centres, height=3, width=4)  # centres (N=1, G=5, T=1, 2)
    assert col.flatten().tolist() == [1, 2, 3, 3, 1]
    assert row.flatten().tolist() == [1, 1, 2, 2, 1]
    assert (cell_centres(4) >= -0.75).all()  # the tie the clamp resolves
    mask_x, mask_y = hard_region_masks(centres, height=3, width=4)
    assert mask_x[0, 0, 0].tolist() == [[1, 0, 0, 0], [0, 1, 1, 1]]
    assert mask_x[0, 3, 0].tolist() == [[1, 1, 1, 0], [0, 0, 0, 1]]
    assert mask_y[0, 3, 0].tolist() == [[1, 1, 0], [0, 0, 1]]


def test_a_map_with_a_side_of_one_cannot_be_split_into_four_regions() -> None:
    with pytest.raises(ValueError, match=EXACTLY_TOO_SMALL):
        split_indices(torch.zeros(1, 1, 1, 2), height=1, width=5)
    module = KPSEM(KPSEMConfig(in_channels=8, num_frames=3, num_sets=2))
    with pytest.raises(ValueError, match=EXACTLY_TOO_SMALL):
        module(torch.randn(1, 8, 3, 1, 5))
    model = kpsem.create_model("mf_kpsem", num_classes=3, backbone=dict(TINY_BACKBONE),
                               num_frames=8, insert_after="conv5").eval()
    with pytest.raises(ValueError, match=EXACTLY_TOO_SMALL):
        model(torch.randn(1, 3, 8, 32, 160))  # conv5 map of 1x5 (stride 32); the smallest clip MFNet takes


def test_a_single_region_reads_a_map_with_a_side_of_one() -> None:
    module = KPSEM(KPSEMConfig(in_channels=4, num_frames=2, num_sets=1, num_regions=1)).eval()
    features = torch.zeros(1, 4, 2, 1, 5)
    features[..., 0, 3] = 1.0  # every channel and frame peaks in column 3, at x = 7/5 - 1 = 0.4
    output, internals = module(features, return_internals=True)
    assert torch.isfinite(output).all()
    assert internals.key_points[0, 0, 0, :, :, 0].flatten().tolist() == pytest.approx([0.4] * 8)
    assert internals.key_points[0, 0, 0, :, :, 1].abs().max() == 0  # the single row's centre


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("size", SQUARE + OBLONG, ids=lambda s: f"{s[0]}x{s[1]}")
def test_saturated_kpsem_keeps_every_region_and_stays_finite(
    size: tuple[int, int], precision: str, train: bool
) -> None:
    torch.manual_seed(0)
    module = KPSEM(KPSEMConfig(in_channels=8, num_frames=3, num_sets=4, centre_hidden=4)).train(train)
    saturate(module)
    leaf = (torch.randn(2, 8, 3, *size) * 3).requires_grad_(train)
    if precision == "float16":
        module.half()
    with autocast(precision):
        # Under autocast a convolution hands KPSEM its output in the reduced dtype.
        features = leaf.to(torch.float32 if precision == "float32" else getattr(torch, precision.split("-")[0]))
        output, internals = module(features, return_internals=True)
    assert torch.isfinite(output).all()
    check_regions(internals, features)
    if train:
        output.float().sum().backward()
        assert torch.isfinite(leaf.grad).all() and leaf.grad.abs().sum() > 0
        for key, parameter in module.named_parameters():
            assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), key


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("precision", ["float32", "bfloat16-autocast"])
# End to end at the smallest map, the two sizes that failed before (NaN at 4x4, IndexError at odd sizes),
# an oblong one and the paper's 14x14; the module test above covers every size from 2 to 14.
@pytest.mark.parametrize("size", [(2, 2), (3, 5), (4, 4), (5, 5), (14, 14)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_saturated_mf_kpsem_gives_finite_logits_and_gradients(
    size: tuple[int, int], precision: str, train: bool
) -> None:
    torch.manual_seed(0)
    model = kpsem.create_model("mf_kpsem", num_classes=5, backbone=dict(TINY_BACKBONE),
                               num_frames=8, num_sets=4, centre_hidden=4).train(train)
    saturate(model.kpsem)
    captured: list[torch.Tensor] = []
    model.kpsem.register_forward_pre_hook(lambda _, inputs: captured.append(inputs[0]))
    with autocast(precision):
        logits, internals = model.forward_with_internals(torch.randn(2, 3, 8, 16 * size[0], 16 * size[1]))
    assert internals.feature_size == size
    assert torch.isfinite(logits).all()
    check_regions(internals, captured[0])
    if train:
        logits.float().logsumexp(dim=1).sum().backward()
        for key, parameter in model.named_parameters():
            assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), key
