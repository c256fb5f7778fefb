"""KPSEM: the Key Point Shifts Embedding Module (paper section 3), vectorised over sets, regions,
channels and frames.

Coordinate convention (used by every coordinate this module returns): normalised ``(x, y)`` with
``x`` along the width, in ``[-1, 1]`` where -1 and +1 are the outer *edges* of the feature map (the
``align_corners=False`` convention of ``torch.nn.functional.grid_sample``). Feature cell ``j`` of ``W``
has its centre at ``(2j + 1) / W - 1``. Because MFNet's strides divide the frame exactly, the same
number is the same place in the input frame: pixel ``p = (x + 1) * W_in / 2 - 0.5`` (pixel-centre
index), see :func:`normalised_to_pixels`.

Regions for K = 4 are the quadrants around a set's separation centre ``(cx, cy)``: a cell is "right"
when its centre ``x >= cx`` and "bottom" when ``y >= cy``; region index ``k = 2 * bottom + right``
(0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right). K = 1 is the whole frame.

K = 9 and 16 (the paper is silent on how a 3x3 or 4x4 split adapts) are a g x g grid (g = 3, 4) whose
g - 1 split positions per axis the centre MLP predicts: it outputs g logits per axis, their softmax is
the bands' share of the axis and its running sum places the splits, ``s_j = -1 + 2 * (p_1 + ... + p_j)``,
ordered by construction and equally spaced while the MLP's last layer is zero. A cell belongs to the band
of splits whose positions are ``<=`` its centre (the K = 4 rule per split), region ``k = g * row + column``
in row-major order. :func:`grid_split_indices` clamps the integer splits so that every band keeps a cell
at any map of at least g x g (a softmax share can round to 0). K = 4 keeps its own centre and code.

No quadrant is ever empty, at any map size of at least 2x2 and in any precision: the centre MLP, tanh
and bounds run in (at least) float32 with autocast off, and :func:`split_indices`, the one place that
turns a centre into a split column and row for every hard quantity, clamps them so that each side
keeps a cell (why that is enough, and why it changes nothing away from the bound: its docstring).

Gradients (the paper is silent; SPEC section 2): the forward values are the paper's hard argmax and
max. In training, a straight-through estimator adds ``soft - soft.detach()`` to every hard quantity
(key point coordinates, key point values, regional means), where the soft quantities use sigmoid
region masks around the centre and a soft-argmax inside each region; the hard values themselves carry
no gradient, so the backward pass is purely the soft one. In eval mode, or with
``gradient="hard"``, only the hard path runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "KPSEMConfig",
    "KPSEMInternals",
    "KPSEM",
    "SetwiseLinear",
    "cell_centres",
    "centre_bounds",
    "check_splittable",
    "split_indices",
    "hard_region_masks",
    "soft_region_masks",
    "hard_key_points",
    "region_means",
    "hard_region_means",
    "shift_weights",
    "key_point_shifts",
    "regional_weights",
    "regional_key_point_shifts",
    "normalised_to_pixels",
    "grid_side",
    "grid_split_positions",
    "grid_split_indices",
    "hard_grid_masks",
    "soft_grid_masks",
    "grid_key_points",
    "grid_region_means",
]

SUPPORTED_REGIONS = (1, 4, 9, 16)


def grid_side(num_regions: int) -> int:
    """g of a g x g split: 1, 2, 3, 4 for K = 1, 4, 9, 16."""
    side = round(num_regions**0.5)
    if side * side != num_regions or num_regions not in SUPPORTED_REGIONS:
        raise ValueError(f"num_regions must be one of {SUPPORTED_REGIONS}; got {num_regions}")
    return side


@dataclass
class KPSEMConfig:
    in_channels: int = 384  # C of the feature map F that KPSEM reads (MFNet conv4)
    num_frames: int = 8  # T of F (a 16-frame clip after MFNet's one temporal stride)
    num_regions: int = 4  # K: regions per frame, 1 (whole frame), 4 (quadrants), 9 or 16 (3x3, 4x4 grid)
    num_sets: int = 8  # G: AReSE sets, each with its own separation centres and embedding
    embed_dim: int = 24  # d_e: width of each set's Linear(2 -> d_e) embedding
    centre_hidden: int = 8  # hidden width of each set's centre MLP (C -> hidden -> 2)
    fixed_regions: bool = False  # ablation: random centres drawn once and frozen, no MLP
    fixed_seed: int = 0  # seed of those random centres
    gradient: Literal["straight_through", "hard"] = "straight_through"  # training-time backward rule
    soft_temperature: float = 1.0  # temperature of the soft-argmax inside a region
    mask_sharpness: float = 1.0  # soft region border width, in feature cells

    def __post_init__(self) -> None:
        if self.num_regions not in SUPPORTED_REGIONS:
            raise ValueError(f"num_regions must be one of {SUPPORTED_REGIONS}; got {self.num_regions}")
        if self.num_frames < 2:
            raise ValueError(f"KPSEM needs at least 2 feature frames to form shifts; got {self.num_frames}")
        if self.gradient not in ("straight_through", "hard"):
            raise ValueError(f"gradient must be 'straight_through' or 'hard'; got {self.gradient!r}")
        for name in ("in_channels", "num_sets", "embed_dim", "centre_hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1; got {getattr(self, name)}")
        if self.in_channels % 4:
            raise ValueError(f"in_channels must be a multiple of 4 (reduced to C/4); got {self.in_channels}")

    @property
    def out_features(self) -> int:
        """Length of the temporal feature: C/4 reduced channels x (T - 1) frame pairs."""
        return self.in_channels // 4 * (self.num_frames - 1)


@dataclass
class KPSEMInternals:
    """Everything KPSEM extracted, for every clip N and set G; coordinates normalised (module doc)."""

    centres: torch.Tensor  # (N, G, T, 2) separation centres O_a (x, y)
    key_points: torch.Tensor  # (N, G, K, C, T, 2) key point coordinates I (x, y)
    values: torch.Tensor  # (N, G, K, C, T) key point values V
    shift_weights: torch.Tensor  # (N, G, K_r, K_n, C, T-1) W of eq. 9
    shifts: torch.Tensor  # (N, G, K, C, T-1, 2) S of eq. 10
    regional_weights: torch.Tensor  # (N, G, K, C, T-1) W_R of eq. 11
    rkps: torch.Tensor  # (N, G, C, T-1, 2) RKPS of eq. 12, summed over regions
    feature_size: tuple[int, int]  # (H, W) of the feature map the coordinates refer to
    # (N, G, T, 2, g-1) split positions per axis, [x splits, y splits], each ordered: K = 4 the centre, K = 1 none
    splits: torch.Tensor | None = None

    def detach(self) -> KPSEMInternals:
        """A copy on the CPU with no autograd history, safe to cache and draw."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return KPSEMInternals(
            **{k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in values.items()}
        )

    def location_differences(self) -> torch.Tensor:
        """Delta of eq. 8, (N, G, K_r, K_n, C, T-1, 2): I[t+1, b] - I[t, a]. Built on request only."""
        current = self.key_points[:, :, :, None, :, :-1]  # (N, G, K, 1, C, T-1, 2)
        following = self.key_points[:, :, None, :, :, 1:]  # (N, G, 1, K, C, T-1, 2)
        return following - current


class SetwiseLinear(nn.Module):
    """G independent Linear layers applied at once: (..., G, ..., in) -> (..., out), one per set."""

    def __init__(self, num_sets: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_sets, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(num_sets, out_features))
        bound = in_features**-0.5
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, G, L, in) -> (N, G, L, out), in x's precision.

        The weight follows x (a no-op when they already agree) so that a half-precision model can still
        run its centre MLP in float32 (:meth:`KPSEM.separation_centres`).
        """
        return torch.einsum("ngli,goi->nglo", x, self.weight.to(x.dtype)) + self.bias[None, :, None, :]

    def summed(self, x: torch.Tensor) -> torch.Tensor:
        """The sum over sets of ``forward(x)``: (N, G, L, in) -> (N, L, out), as one matrix product.

        Why: the G products of (L, in) x (in, out) with in = 2 are each too thin to be efficient; side by
        side they are one (L, G*in) x (G*in, out) product.
        """
        n, g, length, width = x.shape
        stacked = self.weight.transpose(1, 2).reshape(g * width, -1)  # (G*in, out): set g in rows g*in ...
        flat = x.permute(0, 2, 1, 3).reshape(n, length, g * width).to(stacked.dtype)  # (N, L, G*in)
        return flat @ stacked + self.bias.sum(dim=0)


# ---------------------------------------------------------------------------------------------------
# The steps of one AReSE set, as pure functions over batched tensors (tested against hand values).
# ---------------------------------------------------------------------------------------------------


def _geometry_dtype(dtype: torch.dtype) -> torch.dtype:
    """The precision the split geometry runs in: float32 for half precisions, float64 kept as it is."""
    return torch.promote_types(dtype, torch.float32)


def cell_centres(size: int, *, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Normalised centres of ``size`` cells: ``(2j + 1) / size - 1``."""
    return (2 * torch.arange(size, device=device, dtype=dtype) + 1) / size - 1


def centre_bounds(height: int, width: int, *, device: torch.device | None = None) -> torch.Tensor:
    """Largest |offset| (x, y) of a centre, float32: the outermost cell centres, so that a centre
    strictly inside leaves every quadrant a cell (:func:`split_indices` covers the bound itself)."""
    return torch.tensor([1 - 1 / width, 1 - 1 / height], device=device, dtype=torch.float32)


def check_splittable(height: int, width: int, num_regions: int = 4) -> None:
    """Refuse a map with a side under g (K = g x g): its regions cannot all hold a cell, whatever the split."""
    side = grid_side(num_regions)
    if height < side or width < side:
        raise ValueError(
            f"a {height}x{width} feature map cannot be split into {num_regions} regions of at least one cell each; "
            f"KPSEM with num_regions={num_regions} needs a feature map of at least {side}x{side}: feed larger "
            "frames, insert KPSEM after an earlier stage (insert_after), or use num_regions=1"
        )


def split_indices(centres: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The quadrant split as integers: the first column of the right half, the first row of the bottom.

    centres (N, G, T, 2) -> split_col, split_row (N, G, T), always in [1, W-1] and [1, H-1], so the
    quadrant (bottom, right) holds ``(H - row if bottom else row) * (W - col if right else col) >= 1``
    cells. Why the guarantee holds: a cell is right of the centre when its centre x >= cx, so the
    comparison's count of cell centres left of cx is the first right column; the clamp then keeps one
    column (row) on each side by construction, whatever the centre (even NaN, which compares False).
    The comparison alone is not enough at the bound: tanh rounds to exactly +-1 (float32 for |z| > ~9,
    bfloat16 for |z| > ~3.5), which puts the centre on the outermost cell centre, where ``x >= cx``
    leaves the left (top) half empty or rounding tips the last cell out of the right (bottom) half.
    The clamp binds only in those cases, so wherever the comparison already left every side a cell,
    the split is exactly the comparison's. It runs in at least float32 whatever the centres' dtype
    (bfloat16 cell centres are off by up to 2^-9). Every hard quantity (masks, key points,
    integral-image means) reads this one function, so they all agree on the regions.
    """
    check_splittable(height, width)
    centres = centres.to(_geometry_dtype(centres.dtype))
    xs = cell_centres(width, device=centres.device, dtype=centres.dtype)
    ys = cell_centres(height, device=centres.device, dtype=centres.dtype)
    split_col = (xs < centres[..., 0:1]).sum(-1).clamp(1, width - 1)  # (N, G, T)
    split_row = (ys < centres[..., 1:2]).sum(-1).clamp(1, height - 1)  # (N, G, T)
    return split_col, split_row


def _split_halves(centres: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean "right" (N, G, T, W) and "bottom" (N, G, T, H) cells, read from :func:`split_indices`."""
    split_col, split_row = split_indices(centres, height, width)
    right = torch.arange(width, device=centres.device) >= split_col[..., None]
    bottom = torch.arange(height, device=centres.device) >= split_row[..., None]
    return right, bottom


def hard_region_masks(centres: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Quadrant membership per axis. centres (N, G, T, 2) ->
    mask_x (N, G, T, 2, W) [left, right] and mask_y (N, G, T, 2, H) [top, bottom], 0/1 floats."""
    right, bottom = _split_halves(centres, height, width)  # (N, G, T, W), (N, G, T, H)
    right, bottom = right.to(centres.dtype), bottom.to(centres.dtype)
    return torch.stack([1 - right, right], dim=3), torch.stack([1 - bottom, bottom], dim=3)


def soft_region_masks(
    centres: torch.Tensor, height: int, width: int, *, sharpness: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sigmoid version of :func:`hard_region_masks`; the border is ``sharpness`` cells wide."""
    xs = cell_centres(width, device=centres.device, dtype=centres.dtype)
    ys = cell_centres(height, device=centres.device, dtype=centres.dtype)
    right = torch.sigmoid((xs - centres[..., 0:1]) * (width / 2 / sharpness))  # (N, G, T, W)
    bottom = torch.sigmoid((ys - centres[..., 1:2]) * (height / 2 / sharpness))  # (N, G, T, H)
    return torch.stack([1 - right, right], dim=3), torch.stack([1 - bottom, bottom], dim=3)


def _cells(features: torch.Tensor) -> torch.Tensor:
    """(N, C, T, H, W) -> (N, T, H, W, C), contiguous, in the map's own dtype.

    Why this layout: every hard quantity reads one cell's C values together, and MFNet hands KPSEM
    channels_last_3d maps, for which this is a free view (no copy); a contiguous map costs one copy.
    A half-precision map is not widened here: each consumer widens as it reads (the pooled mean
    accumulates in float32, the integral image's first pass writes float32, key point values are
    decoded then widened), all exact, so no float32 copy of the whole map is made. Under autograd it
    is widened once here as before, so that the map's gradient still gathers in float32 and is
    rounded to the half dtype once, not once per consumer.
    """
    cells = features.permute(0, 2, 3, 4, 1)  # (N, T, H, W, C)
    if torch.is_grad_enabled() and features.requires_grad:
        cells = cells.to(_geometry_dtype(features.dtype))
    return cells.contiguous()


_SCRATCH = threading.local()  # per thread: (slot, shape, dtype, device, inference mode) -> buffer, oldest first
_SCRATCH_LIMIT = 64 << 20  # bytes: a larger buffer is allocated afresh, not kept
_SCRATCH_TOTAL = 256 << 20  # bytes kept per thread at most: the oldest buffers go first


def _scratch(slot: str, shape: torch.Size | tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised (N, T, H, W, C)-sized working buffer, kept per thread and ``slot`` between calls.

    Why: on CPU a fresh buffer of a feature map's size comes from the system page by page, and those
    page faults cost more than the pass that fills it (about 1 ms per map at 224 px under load, several
    per KPSEM call). Kept buffers only ever hold intermediate keys and sums that no result aliases;
    they are per thread (concurrent callers never share one), per slot (each call site has its own),
    and keyed by inference mode (an inference tensor cannot be written outside it). Each shape and
    dtype keeps its own buffer (up to a total), so models of several precisions or clip sizes called in
    turn do not reallocate every call. CUDA's caching allocator already recycles memory, so other
    devices just allocate.
    """
    size = torch.Size(shape)
    nbytes = size.numel() * dtype.itemsize
    if device.type != "cpu" or nbytes > _SCRATCH_LIMIT:
        return torch.empty(size, dtype=dtype, device=device)
    key = (slot, size, dtype, device, torch.is_inference_mode_enabled())
    buffers = getattr(_SCRATCH, "buffers", None)
    if buffers is None:
        buffers = _SCRATCH.buffers = {}
    kept = buffers.get(key)
    if kept is None:
        while buffers and sum(b.nbytes for b in buffers.values()) + nbytes > _SCRATCH_TOTAL:
            del buffers[next(iter(buffers))]  # the oldest first
        kept = buffers[key] = torch.empty(size, dtype=dtype, device=device)
    return kept


def _wide_mean(cells: torch.Tensor) -> torch.Tensor:
    """Mean over H and W of cells (N, T, H, W, C) -> (N, T, C), in the geometry dtype.

    Widening a temporary copy first is several times faster on CPU than ``mean(dtype=float32)`` of the
    half-precision cells, and sums in the same order as the float32 map, so the centres are unchanged.
    The copy goes to a kept buffer (:func:`_scratch`) unless autograd must follow it.
    """
    wide = _geometry_dtype(cells.dtype)
    if wide == cells.dtype or (torch.is_grad_enabled() and cells.requires_grad):
        return cells.to(wide).mean(dim=(2, 3))
    return _scratch("wide", cells.shape, wide, cells.device).copy_(cells).mean(dim=(2, 3))


_KEY_TYPES = {2: (torch.int16, torch.int32), 4: (torch.int32, torch.int64)}  # float bytes -> (its bits, key)


def _keyed(features: torch.Tensor) -> bool:
    """Whether :func:`_quadrant_key_points` takes this map: a 16- or 32-bit float whose cells a key's low
    half can rank (bfloat16 keys: up to 65536 cells per frame). Anything else takes the masked search."""
    cells = features.shape[-2] * features.shape[-1]
    return features.element_size() in _KEY_TYPES and cells <= 1 << (8 * features.element_size())


def _order_keys(bits: torch.Tensor) -> torch.Tensor:
    """The raw bits (N, T, H, W, C) of a 16- or 32-bit float map, viewed as int16 / int32 -> integer
    keys that sort like (value, then the earlier cell first): int32 keys for bfloat16/float16 maps,
    int64 for float32.

    The high half of a key is the value made monotonic (sign and magnitude become a signed integer, so
    -0.0 and +0.0 tie), the low half ranks the cell so that of equal values the first in row-major
    order has the largest key. A plain maximum of keys over any region then gives both the region's
    maximum and its first argmax (the tie rule of ``argmax`` over the flattened region), with no index
    bookkeeping; half-precision maps (what autocast hands KPSEM) get keys half as wide, so every pass
    moves half the bytes. The sign handling runs on the narrow bits; the widening is a plain conversion
    and the shift and rank run in place on the wide keys (a single promoting ``add`` of the narrow value
    and the wide rank did all three, but through a slow mixed-type loop and a hidden widened copy).
    """
    h, w = bits.shape[2:4]
    half = 8 * bits.element_size()  # bits of the value, and of the rank below it
    sign = torch.bitwise_right_shift(bits, half - 1, out=_scratch("sign", bits.shape, bits.dtype, bits.device))
    value = torch.bitwise_and(sign, (1 << (half - 1)) - 1, out=_scratch("value", bits.shape, bits.dtype, bits.device))
    value ^= bits  # negative: the magnitude with its bits flipped (-1 - magnitude); else the value itself
    value -= sign  # negative: -magnitude, so that -0.0 is 0 like +0.0; sign is -1 for negative values, else 0
    key_type = _KEY_TYPES[bits.element_size()][1]
    rank = _cell_rank(h, w, device=bits.device, dtype=key_type)[:, :, None]  # (H, W, 1)
    # value * 2^half + rank: |value| < 2^(half-1) and 0 <= rank < 2^half, so it fits the wide type
    keys = _scratch("keys", bits.shape, key_type, bits.device).copy_(value)
    keys <<= half
    keys += rank
    return keys


def _cell_rank(height: int, width: int, *, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(H, W): the first cell in row-major order ranks highest."""
    return (height * width - 1) - torch.arange(height * width, device=device, dtype=dtype).view(height, width)


def _running_max(source: torch.Tensor, dim: int, reverse: bool, out: torch.Tensor | None = None) -> torch.Tensor:
    """Running maximum of ``source`` along ``dim`` (from the end when ``reverse``) into ``out`` (may be
    ``source`` itself, or a buffer of its shape; a new one when None); returns ``out``.

    A loop of whole-slice maxima: ``torch.cummax`` is about fifty times slower on CPU for the short
    axes met here (14 cells), and it would also track indices that the keys already carry. Writing
    into another buffer slice by slice saves the full copy a clone-then-scan would make. The slices
    come from one ``unbind`` each (one call instead of three ``select`` per step: the steps are small
    enough that the Python-side cost of making views is a fair share of their time).
    """
    out = torch.empty_like(source) if out is None else out
    return _scan_into(torch.maximum, source, out, dim, reverse=reverse)


def _scan_into(step: Callable[..., torch.Tensor], source: torch.Tensor, out: torch.Tensor, dim: int, *,
               reverse: bool = False) -> torch.Tensor:
    """``out[i] = step(source[i], out[i - 1])`` along ``dim`` (``out[0] = source[0]``); ``out`` may be ``source``."""
    sources, outs = source.unbind(dim), out.unbind(dim)
    if reverse:
        sources, outs = sources[::-1], outs[::-1]
    if out is not source:
        outs[0].copy_(sources[0])
    for position in range(1, len(outs)):
        step(sources[position], outs[position - 1], out=outs[position])
    return out


def _lookup(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for a 1-D table: ``index_select`` of the flattened index is about four times
    faster on CPU than advanced indexing for the ~10^5 look-ups of a clip."""
    return table.index_select(0, index.flatten()).view(index.shape)


def _decode_keys(keys: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The values (in ``dtype``, the map's own) that :func:`_order_keys` packed into ``keys``, exactly
    (-0.0 reads +0.0, which compares equal): cheaper than gathering them back from the map."""
    half = 4 * keys.element_size()
    value = keys >> half  # the signed magnitude
    bits = value.abs() | ((value < 0).to(value.dtype) << (half - 1))
    return bits.to(_KEY_TYPES[keys.element_size() // 2][0]).view(dtype)


def _quadrant_key_points(
    features: torch.Tensor, cells: torch.Tensor, centres: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """K = 4 for a 16- or 32-bit float map: (I (N, G, 4, C, T, 2), V (N, G, 4, C, T)) in the geometry dtype.

    ``cells`` is :func:`_cells` of ``features``. Four 2-D running maxima of the keys (from each corner)
    hold every quadrant's answer for every possible split; each set then reads one cell per quadrant
    at its own split. The cost does not grow with the number of sets G, and no (G, C, T, H, W) tensor
    is ever built. Both results are views of (.., T, C)-ordered memory (C innermost, as in the map),
    which keeps the elementwise steps after them vectorised.
    """
    n, t, h, w, c = cells.shape
    split_col, split_row = split_indices(centres, h, w)  # (N, G, T): first right column, first bottom row
    frame = (torch.arange(n, device=cells.device)[:, None, None] * t
             + torch.arange(t, device=cells.device)[None, None, :])  # (N, 1, T): frame number in the batch
    wide = _geometry_dtype(cells.dtype)
    # (N, T, H, W, C), the map's own numbers: the cells are them, unless widened for autograd (then a
    # half-precision map's own view, free in channels_last_3d, keeps the keys narrow)
    own = cells.dtype == features.dtype
    bits = cells.detach() if own else features.detach().permute(0, 2, 3, 4, 1).contiguous()
    keys = _order_keys(bits.view(_KEY_TYPES[bits.element_size()][0]))
    # Two rows of branches (rows above / below, then columns left / right) from one map: three buffers,
    # the keys' own and two more, the scans writing into them (a fresh buffer of this size costs more in
    # page faults than a whole scan, so the third is refilled rather than reallocated).
    lower = _running_max(keys, 2, reverse=True, out=_scratch("lower", keys.shape, keys.dtype, keys.device))
    upper = _running_max(keys, 2, reverse=False, out=keys)  # rows <= h; lower: rows >= h, in column w
    spare = _scratch("spare", keys.shape, keys.dtype, keys.device)
    found = [torch.empty(0)] * 4
    for bottom, rows in ((False, upper), (True, lower)):
        row = split_row if bottom else split_row - 1  # the half's row next to the split
        for right, region in ((True, _running_max(rows, 3, reverse=True, out=spare)),
                              (False, _running_max(rows, 3, reverse=False, out=rows))):
            column = split_col if right else split_col - 1  # the half's column next to the split
            cell = ((frame * h + row) * w + column).flatten()  # (N*G*T,) index into the map's cells
            found[2 * bottom + right] = region.view(-1, c).index_select(0, cell).view(n, -1, t, c)  # (N, G, T, C)
    stacked = torch.stack(found, dim=2)  # (N, G, K, T, C) keys, k = 2 * bottom + right
    index = (h * w - 1) - (stacked & ((1 << (4 * stacked.element_size())) - 1))  # row * W + column
    if torch.is_grad_enabled() and features.requires_grad:
        # Read the maxima back from the map: the same numbers, and the gradient of a selected cell
        # (gradient="hard", or Grad-CAM below KPSEM) flows as it does through ``max``.
        channel = torch.arange(c, device=cells.device)
        values = cells.flatten().take((frame[:, :, None, :, None] * (h * w) + index) * c + channel).to(wide)
    else:
        values = _decode_keys(stacked, bits.dtype).to(wide)  # (N, G, K, T, C)
    xs = cell_centres(w, device=cells.device, dtype=wide).repeat(h)  # x of each cell, row-major
    ys = cell_centres(h, device=cells.device, dtype=wide).repeat_interleave(w)
    key_points = torch.stack([_lookup(xs, index), _lookup(ys, index)], dim=3)  # (N, G, K, 2, T, C)
    return key_points.permute(0, 1, 2, 5, 4, 3), values.transpose(3, 4)  # (N, G, K, C, T, 2), (N, G, K, C, T)


def _masked_key_points(features: torch.Tensor, centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """K = 4 by masked maxima per set, in the features' dtype: the path for float64 (whose keys would need
    96 bits) and for half-precision maps too large for 32-bit keys. Same results as
    :func:`_quadrant_key_points`, G times the work."""
    h, w = features.shape[-2:]
    xs = cell_centres(w, device=features.device, dtype=features.dtype)
    ys = cell_centres(h, device=features.device, dtype=features.dtype)
    right, bottom = _split_halves(centres, h, w)  # (N, G, T, W), (N, G, T, H)
    lowest = torch.finfo(features.dtype).min
    by_frame = features.transpose(1, 2)[:, None]  # (N, 1, T, C, H, W)
    key_points, values = [], []
    for below in (False, True):
        row_mask = (bottom if below else ~bottom)[:, :, :, None, :, None]  # (N, G, T, 1, H, 1)
        for on_right in (False, True):
            col_mask = (right if on_right else ~right)[:, :, :, None, None, :]  # (N, G, T, 1, 1, W)
            masked = by_frame.masked_fill(~(row_mask & col_mask), lowest).flatten(-2)  # (N, G, T, C, H*W)
            value, flat = masked.max(dim=-1)  # (N, G, T, C): first maximum in row-major order
            values.append(value)
            key_points.append(torch.stack([xs[flat % w], ys[flat // w]], dim=-1))
    stacked_points = torch.stack(key_points, dim=2).transpose(3, 4)  # (N, G, K, C, T, 2)
    return stacked_points, torch.stack(values, dim=2).transpose(3, 4)  # (N, G, K, C, T)


def hard_key_points(
    features: torch.Tensor, centres: torch.Tensor, num_regions: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 6-7: per region, channel and frame, the argmax position I and the max V.

    features (N, C, T, H, W), centres (N, G, T, 2) -> I (N, G, K, C, T, 2) as normalised (x, y),
    V (N, G, K, C, T), both in the geometry dtype (float32 for float32, bfloat16 and float16 maps: the
    maxima are the maps' own values, exactly; float64 stays float64). Ties go to the first cell in
    row-major order, as with ``argmax`` over the flattened region.
    """
    n, c, t, h, w = features.shape
    g = centres.shape[1]
    if num_regions == 1:
        flat_features = features.to(_geometry_dtype(features.dtype)).flatten(3)  # (N, C, T, H*W)
        values, flat = flat_features.max(dim=-1)  # (N, C, T)
        xs = cell_centres(w, device=features.device, dtype=values.dtype)
        ys = cell_centres(h, device=features.device, dtype=values.dtype)
        key_points = torch.stack([xs[flat % w], ys[flat // w]], dim=-1)  # (N, C, T, 2)
        return key_points[:, None, None].expand(n, g, 1, c, t, 2), values[:, None, None].expand(n, g, 1, c, t)
    if not _keyed(features):
        return _masked_key_points(features.to(_geometry_dtype(features.dtype)), centres)
    return _quadrant_key_points(features, _cells(features), centres)


def region_means(features: torch.Tensor, mask_x: torch.Tensor, mask_y: torch.Tensor) -> torch.Tensor:
    """P_R of eq. 11: (weighted) mean of each region. features (N, C, T, H, W), masks of b bands per axis
    from :func:`hard_region_masks`, :func:`soft_region_masks` or their grid versions -> (N, G, b*b, C, T)."""
    sums = torch.einsum("ncthw,ngtaw,ngtbh->ngbact", features, mask_x, mask_y)  # (N, G, b, b, C, T)
    areas = torch.einsum("ngtaw,ngtbh->ngbat", mask_x, mask_y)[:, :, :, :, None]  # (N, G, b, b, 1, T)
    means = sums / areas.clamp_min(1e-6)
    return means.flatten(2, 3)  # region k = b * row band + column band (K = 4: 2 * bottom + right)


def _running_sum(source: torch.Tensor, dim: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """Running sum of ``source`` along ``dim`` into ``out`` (``source`` itself, or a kept buffer when None);
    returns ``out``. Slice by slice, as :func:`_running_max`: ``torch.cumsum`` over these short axes is
    several times slower on CPU. Under autograd (gradient="hard" reads the hard means) it clones and sums
    in place, which autograd follows. Otherwise the source is copied into a kept buffer (:func:`_scratch`:
    no page faults) in the geometry dtype, a half-precision source widened on the way (exact, one
    conversion; mixed-dtype adds would convert every slice into a temporary), and summed in place there.
    The result is valid until the next call of this thread; callers only gather from it."""
    wide = _geometry_dtype(source.dtype)
    if torch.is_grad_enabled() and source.requires_grad:
        out = source.to(wide, copy=True) if out is None else out
        for position in range(1, out.shape[dim]):
            out.select(dim, position).add_(out.select(dim, position - 1))
        return out
    if out is None:  # a kept buffer (the source widened into it first, exactly), summed in place
        out = _scratch("sums", source.shape, wide, source.device).copy_(source)
        source = out
    return _scan_into(torch.add, source, out, dim)


def _cell_region_means(cells: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """:func:`hard_region_means` from cells (N, T, H, W, C) -> (N, G, 4, C, T), in the geometry dtype."""
    n, t, h, w, c = cells.shape
    col, row = split_indices(centres, h, w)  # (N, G, T): columns left of / rows above the split
    integral = _running_sum(cells, 2)  # (N, T, H, W, C): sums above, inclusive
    integral = _running_sum(integral, 3, out=integral)  # sums above-left, inclusive
    frame = (torch.arange(n, device=cells.device)[:, None, None] * t
             + torch.arange(t, device=cells.device)[None, None, :])  # (N, 1, T): frame number in the batch
    by_cell = integral.view(-1, c)  # (N*T*H*W, C); a split keeps a cell on every side: row, col >= 1

    def read(rows: torch.Tensor | int, cols: torch.Tensor | int) -> torch.Tensor:  # sums of rows < r, cols < s
        return by_cell.index_select(0, ((frame * h + rows - 1) * w + cols - 1).flatten()).view(n, -1, t, c)

    whole, top_left, top, left = read(h, w), read(row, col), read(row, w), read(h, col)  # (N, G or 1, T, C)
    sums = torch.stack([top_left, top - top_left, left - top_left, whole - top - left + top_left], dim=2)
    widths = torch.stack([col, w - col], dim=-1)  # (N, G, T, 2)
    heights = torch.stack([row, h - row], dim=-1)
    areas = (heights[..., :, None] * widths[..., None, :]).flatten(-2)  # (N, G, T, 4)
    means = sums / areas.transpose(2, 3)[..., None].to(integral.dtype)  # (N, G, 4, T, C)
    return means.transpose(3, 4)  # (N, G, 4, C, T)


def hard_region_means(features: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """P_R of eq. 11 for the hard quadrants, from an integral image (four look-ups per region).

    features (N, C, T, H, W), centres (N, G, T, 2) -> (N, G, 4, C, T) in the geometry dtype; equal to
    ``region_means(features, *hard_region_masks(centres, H, W))`` at a fraction of the cost.
    """
    return _cell_region_means(_cells(features), centres)


# ---------------------------------------------------------------------------------------------------
# K = 9 and 16: a g x g grid of ordered split positions per axis (module doc).
# ---------------------------------------------------------------------------------------------------


def grid_split_positions(logits: torch.Tensor) -> torch.Tensor:
    """The centre MLP's band logits (..., 2, g) -> ordered split positions (..., 2, g-1) in [-1, 1].

    The softmax over an axis's g logits is each band's share of the axis; the running sum of the shares
    places the splits, so they are ordered (a float running sum of non-negative numbers never decreases)
    and all-zero logits give equally spaced splits, ``-1 + 2j / g``. Runs in at least float32.
    """
    shares = torch.softmax(logits.to(_geometry_dtype(logits.dtype)), dim=-1)  # (..., 2, g)
    return shares.cumsum(dim=-1)[..., :-1] * 2 - 1


def grid_split_indices(splits: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The grid's splits as integers: the first column (row) of each band after the first.

    splits (N, G, T, 2, g-1) -> split_cols (N, G, T, g-1), split_rows (N, G, T, g-1), strictly increasing,
    the j-th (from 1) in [j, W - g + j], so every band holds at least one column (row). Each split starts
    as the count of cell centres left of (above) its position (the K = 4 comparison), ``c_j``; then
    ``j + clamp(cummax_i<=j(c_i - i), 0, W - g)`` lifts a split that ties with or falls behind the one
    before it (a zero softmax share, or two splits between the same two cell centres) and pushes the last
    ones back from the far edge. Where the counts already left every band a cell, they are unchanged; for
    g = 2 this is :func:`split_indices`'s clamp to [1, W - 1].
    """
    g = splits.shape[-1] + 1
    check_splittable(height, width, g * g)
    splits = splits.to(_geometry_dtype(splits.dtype))
    order = torch.arange(1, g, device=splits.device)  # j = 1 .. g-1

    def along(positions: torch.Tensor, size: int) -> torch.Tensor:  # (N, G, T, g-1) -> (N, G, T, g-1)
        cells = cell_centres(size, device=splits.device, dtype=splits.dtype)
        counts = (cells < positions[..., None]).sum(-1)  # cell centres left of each split
        return order + torch.cummax(counts - order, dim=-1).values.clamp(0, size - g)

    return along(splits[..., 0, :], width), along(splits[..., 1, :], height)


def _bands(split_indices_: torch.Tensor, size: int) -> torch.Tensor:
    """Band of each cell (N, G, T, size): the number of splits at or before it."""
    cells = torch.arange(size, device=split_indices_.device)
    return (cells >= split_indices_[..., None]).sum(-2)


def hard_grid_masks(splits: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Band membership per axis, 0/1 in the splits' geometry dtype. splits (N, G, T, 2, g-1) ->
    mask_x (N, G, T, g, W) [left .. right] and mask_y (N, G, T, g, H) [top .. bottom]."""
    g = splits.shape[-1] + 1
    cols, rows = grid_split_indices(splits, height, width)
    dtype = _geometry_dtype(splits.dtype)
    band = torch.arange(g, device=splits.device)[:, None]  # (g, 1)
    mask_x = (_bands(cols, width)[..., None, :] == band).to(dtype)  # (N, G, T, g, W)
    mask_y = (_bands(rows, height)[..., None, :] == band).to(dtype)  # (N, G, T, g, H)
    return mask_x, mask_y


def soft_grid_masks(
    splits: torch.Tensor, height: int, width: int, *, sharpness: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sigmoid version of :func:`hard_grid_masks`: band j is "past split j" minus "past split j+1"
    (1 before the first split, 0 after the last), each border ``sharpness`` cells wide."""

    def along(positions: torch.Tensor, size: int) -> torch.Tensor:  # (N, G, T, g-1) -> (N, G, T, g, size)
        cells = cell_centres(size, device=splits.device, dtype=splits.dtype)
        past = torch.sigmoid((cells - positions[..., None]) * (size / 2 / sharpness))  # (N, G, T, g-1, size)
        ones = torch.ones_like(past[..., :1, :])
        edges = torch.cat([ones, past, torch.zeros_like(ones)], dim=-2)  # (N, G, T, g+1, size)
        return edges[..., :-1, :] - edges[..., 1:, :]

    return along(splits[..., 0, :], width), along(splits[..., 1, :], height)


def _grid_region_ids(splits: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Region ``k = g * row band + column band`` of every cell, (N, G, T, H*W) in row-major cell order."""
    g = splits.shape[-1] + 1
    cols, rows = grid_split_indices(splits, height, width)
    ids = g * _bands(rows, height)[..., :, None] + _bands(cols, width)[..., None, :]  # (N, G, T, H, W)
    return ids.flatten(-2)


def grid_key_points(features: torch.Tensor, splits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 6-7 for a g x g grid: I (N, G, K, C, T, 2), V (N, G, K, C, T) in the geometry dtype, ties to the
    first cell in row-major order. features (N, C, T, H, W), splits (N, G, T, 2, g-1).

    A 16- or 32-bit float map takes one scatter-maximum of order keys (:func:`_order_keys`) into the K
    regions of every set (no (G, C, T, H, W) copy is built: the keys and region ids are broadcast views);
    others (float64) take one masked maximum per region.
    """
    n, c, t, h, w = features.shape
    g = splits.shape[-1] + 1
    k = g * g
    cells = _cells(features)  # (N, T, H, W, C)
    ids = _grid_region_ids(splits, h, w)  # (N, G, T, H*W)
    sets = ids.shape[1]
    wide = _geometry_dtype(cells.dtype)
    xs = cell_centres(w, device=cells.device, dtype=wide).repeat(h)  # x of each cell, row-major
    ys = cell_centres(h, device=cells.device, dtype=wide).repeat_interleave(w)
    if _keyed(features):
        bits = features.detach().permute(0, 2, 3, 4, 1).contiguous()  # (N, T, H, W, C), the map's own numbers
        keys = _order_keys(bits.view(_KEY_TYPES[bits.element_size()][0]))
        keys = keys.view(n, 1, t, h * w, c).expand(n, sets, t, h * w, c)
        best = torch.full((n, sets, t, k, c), torch.iinfo(keys.dtype).min, dtype=keys.dtype, device=keys.device)
        best.scatter_reduce_(3, ids[..., None].expand(n, sets, t, h * w, c), keys, reduce="amax")  # (N, G, T, K, C)
        index = (h * w - 1) - (best & ((1 << (4 * best.element_size())) - 1)).long()  # row * W + column
    else:
        flat = cells.flatten(2, 3)[:, None]  # (N, 1, T, H*W, C)
        lowest = torch.finfo(cells.dtype).min
        index = torch.stack([flat.masked_fill((ids != region)[..., None], lowest).argmax(dim=3)
                             for region in range(k)], dim=3)  # (N, G, T, K, C): first maximum
    frame = torch.arange(n * t, device=cells.device).view(n, 1, t, 1, 1)
    channel = torch.arange(c, device=cells.device)
    # Read the maxima back from the map (as the quadrant path does): the gradient of a selected cell flows.
    values = cells.flatten().take((frame * (h * w) + index) * c + channel).to(wide)  # (N, G, T, K, C)
    key_points = torch.stack([_lookup(xs, index), _lookup(ys, index)], dim=-1)  # (N, G, T, K, C, 2)
    return key_points.permute(0, 1, 3, 4, 2, 5), values.permute(0, 1, 3, 4, 2)


def grid_region_means(features: torch.Tensor, splits: torch.Tensor) -> torch.Tensor:
    """P_R of eq. 11 for the hard grid, from an integral image: (N, C, T, H, W), (N, G, T, 2, g-1) ->
    (N, G, K, C, T) in the geometry dtype; equal to ``region_means(features, *hard_grid_masks(...))``."""
    cells = _cells(features)  # (N, T, H, W, C)
    n, t, h, w, c = cells.shape
    cols, rows = grid_split_indices(splits, h, w)  # (N, G, T, g-1)
    g = cols.shape[-1] + 1
    integral = _running_sum(cells, 2)  # (N, T, H, W, C): sums above, inclusive
    integral = F.pad(_running_sum(integral, 3, out=integral), (0, 0, 1, 0, 1, 0))  # (N, T, H+1, W+1, C)
    zero, sets = torch.zeros_like(cols[..., :1]), cols.shape[1]
    col_edges = torch.cat([zero, cols, zero + w], dim=-1)  # (N, G, T, g+1): band j is [edge j, edge j+1)
    row_edges = torch.cat([zero, rows, zero + h], dim=-1)
    frame = torch.arange(n * t, device=cells.device).view(n, 1, t, 1, 1)
    corner = (frame * (h + 1) + row_edges[..., :, None]) * (w + 1) + col_edges[..., None, :]  # (N, G, T, g+1, g+1)
    sums = integral.view(-1, c).index_select(0, corner.flatten()).view(n, sets, t, g + 1, g + 1, c)
    # (N, G, T, g, g, C): inclusion-exclusion of the four corners of each box
    boxes = sums[..., 1:, 1:, :] - sums[..., :-1, 1:, :] - sums[..., 1:, :-1, :] + sums[..., :-1, :-1, :]
    areas = (row_edges.diff(dim=-1)[..., :, None] * col_edges.diff(dim=-1)[..., None, :])  # (N, G, T, g, g)
    means = boxes / areas[..., None].to(integral.dtype)  # (N, G, T, g, g, C)
    return means.flatten(3, 4).permute(0, 1, 3, 4, 2)  # (N, G, K, C, T)


def _soft_key_points(
    features: torch.Tensor, mask_x: torch.Tensor, mask_y: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft-argmax coordinates and soft-max values per region, as two batched contractions.

    Weights p(h, w) proportional to exp(F / temperature) * mask_x(w) * mask_y(h) inside each region.
    Masks of b bands per axis (b = 2: the quadrants; b = g: the grid) give K = b * b regions, row-major.
    Returns I (N, G, K, C, T, 2) and V (N, G, K, C, T). The exponent is stabilised by the frame's
    maximum, so a region whose maximum lies more than ~87 * temperature below it (float32) has
    underflowing mass: its soft values read 0 and its gradient vanishes (the forward pass is the hard
    one, so only that region's straight-through gradient is lost, never the forward value).

    Computed in at least float32 with autocast off, returned in the features' dtype: in float16 the
    mass of a one-column region (a centre at its bound) falls near the dtype's smallest normal number,
    and value / mass and its gradient overflow to inf, then NaN. Float32 inputs compute as before.
    """
    dtype = features.dtype
    with torch.autocast(features.device.type, enabled=False):
        features = features.to(_geometry_dtype(dtype))
        mask_x, mask_y = mask_x.to(features.dtype), mask_y.to(features.dtype)
        h, w = features.shape[-2:]
        xs = cell_centres(w, device=features.device, dtype=features.dtype)
        ys = cell_centres(h, device=features.device, dtype=features.dtype)
        scaled = features / temperature
        exp = torch.exp(scaled - scaled.amax(dim=(3, 4), keepdim=True))  # (N, C, T, H, W)
        stacked = torch.stack([exp, exp * features], dim=1)  # (N, 2, C, T, H, W): mass and value
        b = mask_x.shape[3]  # bands per axis
        along_x = torch.cat([mask_x, mask_x * xs], dim=3)  # (N, G, T, 2b, W): b = 2: [L, R, L*x, R*x]
        along_y = torch.cat([mask_y, mask_y * ys], dim=3)  # (N, G, T, 2b, H): b = 2: [T, B, T*y, B*y]
        partial = torch.einsum("nscthw,ngtaw->ngsacth", stacked, along_x)  # (N, G, 2, 2b, C, T, H)
        total = torch.einsum("ngsacth,ngtbh->ngsbact", partial, along_y)  # (N, G, 2, 2b, 2b, C, T)
        mass = total[:, :, 0, :b, :b].clamp_min(torch.finfo(total.dtype).tiny)  # (N, G, b[y], b[x], C, T)
        x = total[:, :, 0, :b, b:] / mass
        y = total[:, :, 0, b:, :b] / mass
        v = total[:, :, 1, :b, :b] / mass
        key_points = torch.stack([x, y], dim=-1).flatten(2, 3)  # (N, G, K, C, T, 2)
    return key_points.to(dtype), v.flatten(2, 3).to(dtype)


# The four steps below take and return the documented (..., C, T[, 2]) shapes, but compute on views
# ordered (..., [2,] T, C): KPSEM hands them maps whose memory has C innermost (the channels_last_3d
# order of MFNet's features), and keeping every operand in that order keeps each loop contiguous and
# vectorised (mixed orders made these steps several times slower). Any input order gives the same numbers.


def _tc(x: torch.Tensor) -> torch.Tensor:
    """(..., C, T) <-> (..., T, C), a view."""
    return x.transpose(-1, -2)


def _xy_tc(x: torch.Tensor) -> torch.Tensor:
    """(..., C, T, 2) -> (..., 2, T, C), a view."""
    return x.permute(*range(x.dim() - 3), -1, -2, -3)


def _xy_last(x: torch.Tensor) -> torch.Tensor:
    """(..., 2, T, C) -> (..., C, T, 2), a view."""
    return x.permute(*range(x.dim() - 3), -1, -2, -3)


def shift_weights(values: torch.Tensor) -> torch.Tensor:
    """Eq. 9: softmax over the next frame's regions of 1 / (|V[t, a] - V[t+1, b]| + 0.1).
    values (..., K, C, T) -> (..., K_r, K_n, C, T-1)."""
    by_time = _tc(values)  # (..., K, T, C)
    current = by_time[..., :, None, :-1, :]  # (..., K, 1, T-1, C)
    following = by_time[..., None, :, 1:, :]  # (..., 1, K, T-1, C)
    scores = (current - following).abs_().add_(0.1).reciprocal_()  # (..., K_r, K_n, T-1, C), one buffer
    return _tc(torch.softmax(scores, dim=-3))


def key_point_shifts(key_points: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Eq. 8 and 10: S[t, a] = sum_b W[t, a, b] (I[t+1, b] - I[t, a]).
    key_points (..., K, C, T, 2), weights (..., K_r, K_n, C, T-1) -> (..., K, C, T-1, 2).
    Uses sum_b W = 1, so the (K, K) differences are never materialised; the sum over b is K
    multiply-adds over whole tensors (as a matrix product it would be C * (T-1) products of 4x4
    matrices, many times slower on CPU)."""
    points = _xy_tc(key_points)  # (..., K, 2, T, C)
    following = points[..., 1:, :]  # (..., K_n, 2, T-1, C)
    by_time = _tc(weights)  # (..., K_r, K_n, T-1, C)
    expected = by_time.select(-3, 0).unsqueeze(-3) * following.select(-4, 0).unsqueeze(-4)  # (..., K_r, 2, T-1, C)
    for b in range(1, by_time.shape[-3]):
        expected = expected + by_time.select(-3, b).unsqueeze(-3) * following.select(-4, b).unsqueeze(-4)
    return _xy_last(expected - points[..., :-1, :])


def regional_weights(means: torch.Tensor) -> torch.Tensor:
    """Eq. 11: softmax over regions of the temporal average (kernel 2) of each region's mean.
    means (..., K, C, T) -> (..., K, C, T-1)."""
    by_time = _tc(means)  # (..., K, T, C)
    pooled = (by_time[..., :-1, :] + by_time[..., 1:, :]) / 2
    return _tc(torch.softmax(pooled, dim=-3))


def regional_key_point_shifts(weights: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Eq. 12, summed over regions: (..., K, C, T-1) x (..., K, C, T-1, 2) -> (..., C, T-1, 2)."""
    return _xy_last((_tc(weights).unsqueeze(-3) * _xy_tc(shifts)).sum(dim=-4))


def normalised_to_pixels(coords: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Map normalised (x, y) to pixel-centre coordinates of an image of ``height`` x ``width``."""
    scale = coords.new_tensor([width / 2, height / 2])
    return (coords + 1) * scale - 0.5


def _straight_through(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """Hard value forward, soft gradient backward; the hard value itself carries no gradient."""
    return hard.detach() + (soft - soft.detach())


class KPSEM(nn.Module):
    """G AReSE sets -> RKPS -> per-set embeddings summed -> reduction -> (N, C/4 * (T-1))."""

    def __init__(self, config: KPSEMConfig) -> None:
        super().__init__()
        self.config = config
        c, g = config.in_channels, config.num_sets
        self.grid = grid_side(config.num_regions)  # g of the g x g split
        self.geometric = False  # True inside geometric_splits(): every split at its geometric place
        self.has_centre_mlp = config.num_regions > 1 and not config.fixed_regions
        if self.has_centre_mlp:
            self.centre_hidden = SetwiseLinear(g, c, config.centre_hidden)
            # K = 4: the centre's (x, y); K = 9, 16: g band logits per axis, [x bands, y bands]
            self.centre_out = SetwiseLinear(g, config.centre_hidden, 2 if self.grid == 2 else 2 * self.grid)
            nn.init.zeros_(self.centre_out.weight)  # every set starts at the geometric centre (equal bands)
            nn.init.zeros_(self.centre_out.bias)
        if config.fixed_regions and self.grid == 2:
            generator = torch.Generator().manual_seed(config.fixed_seed)
            # Fractions of the allowed offset, turned into coordinates once H and W are known.
            self.register_buffer("fixed_centres", torch.rand(g, 2, generator=generator) * 1.8 - 0.9)
        elif config.fixed_regions and self.grid > 2:
            generator = torch.Generator().manual_seed(config.fixed_seed)
            # Band shares drawn in [0.5, 1.5) before normalising: no band under a third of another's width.
            shares = torch.rand(g, 2, self.grid, generator=generator) + 0.5
            self.register_buffer("fixed_splits", (shares / shares.sum(-1, keepdim=True)).cumsum(-1)[..., :-1] * 2 - 1)
        self.embed = SetwiseLinear(g, 2, config.embed_dim)
        reduced = [c, c // 2, c // 4]
        self.reduce = nn.Sequential(
            nn.Conv2d(reduced[0], reduced[1], (1, 3), stride=(1, 2), padding=(0, 1), bias=False),
            nn.BatchNorm2d(reduced[1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(reduced[1], reduced[2], (1, 3), stride=(1, 2), padding=(0, 1), bias=False),
            nn.BatchNorm2d(reduced[2]),
            nn.ReLU(inplace=True),
        )

    def separation_centres(self, features: torch.Tensor, *, cells: torch.Tensor | None = None) -> torch.Tensor:
        """Eq. 4-5: O_a = O + B with B = MLP(F_i), tanh-bounded. (N, C, T, H, W) -> (N, G, T, 2).

        ``cells``: the features as :func:`_cells` lays them out, when the caller has them (the pooling
        then reads that copy instead of converting the map a second time).

        The geometry runs in at least float32, autocast off, whatever the features' precision (and so
        do the centres it returns): in bfloat16 tanh already rounds to +-1 at |z| ~ 3.5 and the bounds
        round by up to 2^-9, pinning centres to (or past) the outermost cells. For float32 inputs
        outside autocast nothing changes.
        """
        n, _, t, h, w = features.shape
        g = self.config.num_sets
        if self.config.num_regions == 1 or self.geometric:
            return torch.zeros(n, g, t, 2, device=features.device, dtype=_geometry_dtype(features.dtype))
        if self.grid > 2:  # the grid's centre: the mean split position per axis
            return self.separation_splits(features, cells=cells).mean(dim=-1)
        bounds = centre_bounds(h, w, device=features.device)  # (2,) float32
        if self.config.fixed_regions:
            return (self.fixed_centres.to(_geometry_dtype(features.dtype)) * bounds).expand(n, t, g, 2).transpose(1, 2)
        with torch.autocast(features.device.type, enabled=False):
            if cells is None:
                cells = _cells(features)
            pooled = _wide_mean(cells)  # (N, T, C)
            hidden = F.relu(self.centre_hidden(pooled[:, None].expand(n, g, t, -1)))  # (N, G, T, hidden)
            return torch.tanh(self.centre_out(hidden)) * bounds  # O = (0, 0) in normalised coordinates

    def separation_splits(self, features: torch.Tensor, *, cells: torch.Tensor | None = None) -> torch.Tensor:
        """Split positions per axis, (N, C, T, H, W) -> (N, G, T, 2, g-1) in at least float32, ordered.

        K = 1: none (g - 1 = 0); K = 4: the separation centre (:meth:`separation_centres`); K = 9, 16:
        :func:`grid_split_positions` of the centre MLP's band logits (or the frozen random splits), equally
        spaced inside :meth:`geometric_splits`. Autocast is off here, as for the centres.
        """
        n, _, t = features.shape[:3]
        g, dtype = self.config.num_sets, _geometry_dtype(features.dtype)
        if self.grid < 3:
            return self.separation_centres(features, cells=cells)[..., None]
        if self.geometric:
            equal = torch.arange(1, self.grid, device=features.device, dtype=dtype) * (2 / self.grid) - 1
            return equal.expand(n, g, t, 2, self.grid - 1)
        if self.config.fixed_regions:
            return self.fixed_splits.to(dtype)[None, :, None].expand(n, g, t, 2, self.grid - 1)
        with torch.autocast(features.device.type, enabled=False):
            if cells is None:
                cells = _cells(features)
            pooled = _wide_mean(cells)  # (N, T, C)
            hidden = F.relu(self.centre_hidden(pooled[:, None].expand(n, g, t, -1)))  # (N, G, T, hidden)
            logits = self.centre_out(hidden).unflatten(-1, (2, self.grid))  # (N, G, T, 2, g)
            return grid_split_positions(logits)

    @contextmanager
    def geometric_splits(self) -> Iterator[None]:
        """Inside the block every split sits at its geometric place (K = 4: the centre (0, 0); K = 9, 16:
        equally spaced), bypassing the centre MLP or the frozen splits; no weight changes."""
        before, self.geometric = self.geometric, True
        try:
            yield
        finally:
            self.geometric = before

    def _uses_soft_path(self) -> bool:
        return self.training and torch.is_grad_enabled() and self.config.gradient == "straight_through"

    def extract(self, features: torch.Tensor) -> KPSEMInternals:
        """All G AReSE sets at once: (N, C, T, H, W) -> :class:`KPSEMInternals`."""
        n, c, t, h, w = features.shape
        if c != self.config.in_channels or t != self.config.num_frames:
            raise ValueError(
                f"KPSEM was built for {self.config.in_channels} channels x {self.config.num_frames} frames; "
                f"got features of {c} x {t}"
            )
        check_splittable(h, w, self.config.num_regions)  # before any work; K = 1 reads the whole frame at any size
        cells = _cells(features)  # (N, T, H, W, C): a view of a channels_last_3d map, read by every step
        if self.grid > 2:
            return self._extract_grid(features, cells)
        centres = self.separation_centres(features, cells=cells)  # (N, G, T, 2)
        hard_centres = centres.detach()
        # The hard quantities run in the geometry dtype (float32 for half-precision maps): the maxima are
        # the map's own values either way, and float32 sums and softmaxes are both more exact and faster.
        if self.config.num_regions == 1:
            key_points, values = hard_key_points(features, hard_centres, 1)
            means = _wide_mean(cells).transpose(1, 2)  # (N, C, T)
            means = means[:, None, None].expand(n, self.config.num_sets, 1, c, t)
        else:
            if not _keyed(features):
                key_points, values = _masked_key_points(features.to(_geometry_dtype(features.dtype)), hard_centres)
            else:
                key_points, values = _quadrant_key_points(features, cells, hard_centres)
            means = _cell_region_means(cells, hard_centres)  # (N, G, 4, C, T)
        if self._uses_soft_path() and self.config.num_regions > 1:
            soft_x, soft_y = soft_region_masks(centres, h, w, sharpness=self.config.mask_sharpness)  # >= float32
            key_points, values, means = self._soft_gradients(features, soft_x, soft_y, key_points, values, means)
        elif self._uses_soft_path():  # K = 1: a soft-argmax over the whole frame
            ones_x = features.new_ones(n, self.config.num_sets, t, 2, w) / 2
            ones_y = features.new_ones(n, self.config.num_sets, t, 2, h) / 2
            soft_points, soft_values = _soft_key_points(features, ones_x, ones_y, self.config.soft_temperature)
            key_points = _straight_through(key_points, soft_points[:, :, :1])
            values = _straight_through(values, soft_values[:, :, :1])
        splits = centres[..., None][..., : self.grid - 1]  # (N, G, T, 2, 1), or (.., 0) for K = 1
        return self._shifts(centres, splits, key_points, values, means, (h, w))

    def _extract_grid(self, features: torch.Tensor, cells: torch.Tensor) -> KPSEMInternals:
        """K = 9, 16: the g x g grid (module doc), straight-through as the quadrants are."""
        h, w = features.shape[-2:]
        splits = self.separation_splits(features, cells=cells)  # (N, G, T, 2, g-1)
        key_points, values = grid_key_points(features, splits.detach())  # (N, G, K, C, T, 2), (N, G, K, C, T)
        means = grid_region_means(features, splits.detach())  # (N, G, K, C, T)
        if self._uses_soft_path():
            soft_x, soft_y = soft_grid_masks(splits, h, w, sharpness=self.config.mask_sharpness)  # >= float32
            key_points, values, means = self._soft_gradients(features, soft_x, soft_y, key_points, values, means)
        return self._shifts(splits.mean(dim=-1), splits, key_points, values, means, (h, w))

    def _soft_gradients(
        self, features: torch.Tensor, soft_x: torch.Tensor, soft_y: torch.Tensor, key_points: torch.Tensor,
        values: torch.Tensor, means: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The hard key points, values and region means with the soft regions' gradients (straight-through):
        the forward keeps the hard results, the backward reaches the separation centres through the masks."""
        soft_points, soft_values = _soft_key_points(features, soft_x, soft_y, self.config.soft_temperature)
        soft_means = region_means(features, soft_x.to(features.dtype), soft_y.to(features.dtype))
        return (_straight_through(key_points, soft_points), _straight_through(values, soft_values),
                _straight_through(means, soft_means))

    @staticmethod
    def _shifts(centres: torch.Tensor, splits: torch.Tensor, key_points: torch.Tensor, values: torch.Tensor,
                means: torch.Tensor, size: tuple[int, int]) -> KPSEMInternals:
        """Eq. 8-12 from the regions' key points, values and means, for any K."""
        weights = shift_weights(values)  # (N, G, K, K, C, T-1)
        shifts = key_point_shifts(key_points, weights)  # (N, G, K, C, T-1, 2)
        region_weights = regional_weights(means)  # (N, G, K, C, T-1)
        rkps = regional_key_point_shifts(region_weights, shifts)  # (N, G, C, T-1, 2)
        return KPSEMInternals(
            centres=centres,
            key_points=key_points,
            values=values,
            shift_weights=weights,
            shifts=shifts,
            regional_weights=region_weights,
            rkps=rkps,
            feature_size=size,
            splits=splits,
        )

    def embed_and_reduce(self, rkps: torch.Tensor) -> torch.Tensor:
        """Eq. 3 and section 4.2: (N, G, C, T-1, 2) -> (N, C/4 * (T-1))."""
        n, g, c, pairs, _ = rkps.shape
        by_set = rkps.reshape(n, g, c * pairs, 2)  # (N, G, C*(T-1), 2)
        embedded = self.embed.summed(by_set)  # (N, C*(T-1), d_e): the G embeddings, summed
        embedded = embedded.reshape(n, c, pairs, self.config.embed_dim)  # (N, C, T-1, d_e)
        reduced = self.reduce(embedded)  # (N, C/4, T-1, d_e/4)
        return reduced.mean(dim=3).flatten(1)  # (N, C/4 * (T-1))

    def forward(
        self, features: torch.Tensor, *, return_internals: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, KPSEMInternals]:
        internals = self.extract(features)
        temporal = self.embed_and_reduce(internals.rkps)
        return (temporal, internals) if return_internals else temporal
