"""Key point views worked out by hand on a tiny, hand-made analysis (an 8 x 8 frame over a 2 x 2 feature map):
arrows cut at the frame's border with their heads, a shape per region, the strongest shifts, key point
density, centres over time and how far each set's centre moves."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from kpsem.app_support.drawing.render import centre_chart, draw_frame, movement_table, region_legend_html
from kpsem.explain.analysis import (
    ClipAnalysis,
    TopK,
    centre_movement,
    internals_to_pixels,
    keypoint_density,
    movement_summary,
)
from kpsem.explain.draw import (
    REGION_MARKERS,
    KeyPointOptions,
    cells_to_frame,
    clip_segment,
    crossing_shifts,
    density_overlay,
    draw_centre_paths,
    draw_keypoints,
    draw_tracks,
    region_names,
    strongest_shifts,
)
from kpsem.explain.figures import figure_centres
from kpsem.models.kpsem_module import KPSEMInternals

SIZE = 8  # frame side, pixels; the feature map is 2 x 2, so a cell is 4 x 4 pixels (cell centres at 1.5, 5.5)


def _analysis(num_regions: int = 4, channels: int = 2, sets: int = 2) -> ClipAnalysis:
    """G sets, K regions, C channels, 2 feature frames (clip frames 0-1 -> 0, 2-3 -> 1); every key point at
    the top-left cell centre (normalised -0.5) except where a test moves it; set 0's centre moves."""
    frames = 2
    key_points = torch.full((1, sets, num_regions, channels, frames, 2), -0.5)
    key_points[0, 0, 3, :, :, :] = 0.5  # set 0, region 3: the bottom-right cell
    shifts = torch.zeros(1, sets, num_regions, channels, frames - 1, 2)
    shifts[0, 0, 0, 0, 0] = torch.tensor([2.0, 0.5])  # normalised: (8, 2) pixels, far out of the frame
    shifts[0, 0, 1, 0, 0] = torch.tensor([0.25, 0.0])  # (1, 0) pixels: stays inside
    weights = torch.full((1, sets, num_regions, channels, frames - 1), 0.1)
    weights[0, 0, 0, 0, 0], weights[0, 0, 1, 0, 0], weights[0, 0, 2, 1, 0] = 0.9, 0.5, 0.7
    centres = torch.zeros(1, sets, frames, 2)
    centres[0, 0, 1] = torch.tensor([0.25, 0.5])  # set 0 moves (1, 2) pixels; set 1 stays at the middle
    internals = KPSEMInternals(
        centres=centres, key_points=key_points, values=torch.ones(1, sets, num_regions, channels, frames),
        shift_weights=torch.zeros(1, sets, num_regions, num_regions, channels, frames - 1), shifts=shifts,
        regional_weights=weights, rkps=torch.zeros(1, sets, channels, frames - 1, 2), feature_size=(2, 2))
    cam = np.zeros((4, SIZE, SIZE))
    analysis = ClipAnalysis(
        model_name="MF-KPSEM", class_names=["a"], logits=np.zeros(1), probs=np.ones(1), topk=[TopK(0, "a", 1.0)],
        target=0, cam_layer="tail", weighting="clip", cam_feature=np.zeros((2, 2, 2)), cam_raw=cam, cam=cam,
        frame_to_feature=np.array([0, 0, 1, 1]), has_kpsem=True, internals=internals)
    analysis.centres_px, analysis.key_points_px, analysis.shifts_px = internals_to_pixels(internals, SIZE)
    return analysis


def test_clip_segment_by_hand():
    low, high = -0.5, SIZE - 0.5
    # (4, 4) -> (12, 6) leaves through x = 7.5 at t = 3.5 / 8: y = 4 + 2 * 0.4375 = 4.875
    assert clip_segment((4, 4), (12, 6), low, high).tolist() == [7.5, 4.875]
    assert clip_segment((1, 1), (-3, 1), low, high).tolist() == [-0.5, 1.0]  # leftwards, through x = -0.5
    assert clip_segment((1, 6), (3, 10), low, high).tolist() == [1.75, 7.5]  # down, through y = 7.5 at t = 0.375
    assert clip_segment((2, 3), (5, 1), low, high).tolist() == [5.0, 1.0]  # inside: unchanged
    assert clip_segment((9, 3), (5, 1), low, high) is None  # starts outside the frame: nothing to draw


def test_an_arrow_leaving_the_frame_ends_on_its_border_with_its_head():
    analysis = _analysis()
    ax = Figure().add_subplot()
    options = KeyPointOptions(sets=(0,), channels=(0,), regions=(0, 1), max_arrows=None, split_lines=False,
                              centre_paths=False, highlight_crossing=False)
    artists = draw_keypoints(ax, analysis, 0, options)
    heads = [a for a in artists if a.get_gid() == "shift"]
    shafts = [a for a in artists if a.get_gid() == "shaft"]
    assert len(heads) == len(shafts) == 2
    # Region 0's key point (1.5, 1.5) shifted by (8, 2) ends at (9.5, 3.5), outside; cut at x = 7.5: t = 0.75, y = 3.
    far = heads[0].get_xy()
    tip = far[np.argmax(far[:, 0])]
    assert tip == pytest.approx([7.5, 3.0])
    assert far[:, 0].max() <= 7.5 + 1e-9 and far.min() >= -0.5  # the whole head inside the frame
    shaft_x, shaft_y = shafts[0].get_data()
    assert (shaft_x[0], shaft_y[0]) == (1.5, 1.5) and shaft_x[1] < 7.5  # the shaft stops where the head begins
    # Region 1's shift (1, 0) pixels stays inside: its tip is the unscaled end (2.5, 1.5).
    near = heads[1].get_xy()
    assert near[np.argmax(near[:, 0])] == pytest.approx([2.5, 1.5])


def test_markers_differ_per_region_and_sets_by_fill():
    for num_regions in (4, 9, 16):
        analysis = _analysis(num_regions=num_regions)
        ax = Figure().add_subplot()
        artists = draw_keypoints(ax, analysis, 0, KeyPointOptions(sets=(0, 1), channels=(0, 1)))
        points = [a for a in artists if a.get_gid() == "keypoints"]
        assert len(points) == 2 * num_regions  # one marker line per set and region
        shapes = [a.get_marker() for a in points[:num_regions]]
        assert shapes == list(REGION_MARKERS[:num_regions]) and len(set(shapes)) == num_regions
        assert {a.get_fillstyle() for a in points[:num_regions]} == {"none"}  # set 0 hollow
        assert {a.get_fillstyle() for a in points[num_regions:]} == {"full"}  # set 1 filled
        assert len(region_names(num_regions)) == num_regions
    assert region_names(9)[4] == "row 2, col 2" and region_names(4)[3] == "bottom-right"
    legend = region_legend_html(16, crossing=True, sets=(0, 1))
    assert legend.count("&#x2192;</span> row") == 16 and "set 1</b>: filled" in legend


def test_strongest_shifts_follow_the_regional_weight():
    analysis = _analysis()
    # W_R at feature frame 0: (0, 0) 0.9, (2, 1) 0.7, (1, 0) 0.5, all others 0.1
    assert strongest_shifts(analysis, 0, 0, range(4), (0, 1), 2) == {(0, 0), (2, 1)}
    assert strongest_shifts(analysis, 0, 0, (1, 3), (0, 1), 1) == {(1, 0)}
    assert len(strongest_shifts(analysis, 0, 0, range(4), (0, 1), None)) == 8
    assert strongest_shifts(analysis, 0, 1, range(4), (0, 1), 4) == set()  # last feature frame: no shift
    ax = Figure().add_subplot()
    drawn = draw_keypoints(ax, analysis, 0, KeyPointOptions(sets=(0,), channels=(0, 1), max_arrows=2))
    assert len([a for a in drawn if a.get_gid() in ("shift", "crossing")]) == 1  # (2, 1) has a zero shift: no arrow
    analysis.shifts_px[0, 2, 1, 0] = [1.0, 1.0]
    drawn = draw_keypoints(ax, analysis, 0, KeyPointOptions(sets=(0,), channels=(0, 1), max_arrows=2))
    assert len([a for a in drawn if a.get_gid() in ("shift", "crossing")]) == 2


def test_crossing_on_a_grid_uses_the_internals_splits():
    analysis = _analysis(num_regions=9, sets=1)
    # 3 x 3 grid split at normalised -0.25 and 0.5 on both axes: pixels 2.5 and 5.5
    analysis.internals.splits = torch.tensor([-0.25, 0.5]).expand(1, 1, 2, 2, 2).clone()
    # Every key point sits at (1.5, 1.5) (column 0, row 0). Region 0's shift ends at (9.5, 3.5): column 2, row 1,
    # region 5: it crosses. Region 1's ends at (2.5, 1.5): on the first split, so column 1, row 0: region 1, its
    # own. The others do not move, so they end in region 0, not their own (a made-up layout, but the rule's).
    crossing = crossing_shifts(analysis, 0, 0)
    assert crossing[:, 0].tolist() == [True, False, True, True, True, True, True, True, True]
    analysis.shifts_px[0, 0, 0, 0] = [0.5, 0.5]  # (2, 2): still in column 0, row 0 -> no crossing
    assert not crossing_shifts(analysis, 0, 0)[0, 0]
    ax = Figure().add_subplot()
    lines = draw_keypoints(ax, analysis, 0, KeyPointOptions(channels=(0,), centre_paths=False))
    borders = [a for a in lines if a.get_gid() is None and a.get_linestyle() == "--"]
    assert len(borders) == 4  # two vertical and two horizontal split lines


def test_keypoint_density_counts_every_channel_and_region():
    analysis = _analysis()
    counts = keypoint_density(analysis.internals)  # (T', 2, 2), both sets
    assert counts.shape == (2, 2, 2)
    assert counts.sum(axis=(1, 2)).tolist() == [2 * 4 * 2] * 2  # G * K * C on every feature frame
    # set 0 region 3 (2 channels) in the bottom-right cell, the other 14 key points in the top-left one
    assert counts[0].tolist() == [[14, 0], [0, 2]]
    assert keypoint_density(analysis.internals, sets=[1])[0].tolist() == [[8, 0], [0, 0]]
    with pytest.raises(ValueError, match=r"sets \[5\] do not exist; this model has sets 0..1"):
        keypoint_density(analysis.internals, sets=[5])
    image = cells_to_frame(counts[0], SIZE)
    assert image.shape == (SIZE, SIZE) and image.sum() == counts[0].sum() * 16  # each cell a 4 x 4 block
    assert image[:4, :4].tolist() == [[14] * 4] * 4 and image[4:, 4:].tolist() == [[2] * 4] * 4
    frame = np.zeros((SIZE, SIZE, 3), np.uint8)
    assert density_overlay(frame, counts[0] / counts[0].sum()).shape == (SIZE, SIZE, 3)
    drawn = draw_frame(frame, density=counts[0] / 16, density_max=1.0, analysis=analysis, frame=0,
                       keypoints=KeyPointOptions(sets=(0, 1), channels=(0, 1)))
    assert drawn.key_points == 2 * 4 * 2 and drawn.image.shape[2] == 3


def test_centres_over_time_equal_the_internals_and_their_movement():
    analysis = _analysis()
    expected = (analysis.internals.centres[0].numpy() + 1) * SIZE / 2 - 0.5  # (G, T', 2) pixels
    chart = centre_chart(analysis, current=1)
    xs = [t["y"] for t in chart["data"] if t["xaxis"] == "x"]
    ys = [t["y"] for t in chart["data"] if t["xaxis"] == "x2"]
    assert np.allclose(xs, expected[..., 0]) and np.allclose(ys, expected[..., 1])
    figure = figure_centres(analysis)
    lines = figure.figure.axes[0].get_lines()
    assert np.allclose([line.get_ydata() for line in lines], expected[..., 0])
    ax = Figure().add_subplot()
    path = draw_centre_paths(ax, analysis, (0,))[0]
    assert np.allclose(np.stack(path.get_data(), -1), expected[0])
    tracks = draw_tracks(ax, analysis, (0,), (3,), (1,))
    assert np.allclose(np.stack(tracks[0].get_data(), -1), analysis.key_points_px[0, 3, 1])  # over all frames

    # Set 0 moves normalised (0.25, 0.5): a cell is 1 normalised unit / (2 / 2) = 1, a pixel 1 / 4
    moved, still = centre_movement(analysis.internals, SIZE)
    assert moved.span_cells == pytest.approx(np.hypot(0.25, 0.5))
    assert moved.span_px == pytest.approx(np.hypot(1.0, 2.0)) and moved.path_px == pytest.approx(np.hypot(1, 2))
    assert moved.mean_px == pytest.approx((4.0, 4.5))
    assert still.span_px == 0 and not still.moves()
    assert movement_summary([moved, still]) == ("centres that move over the clip (farthest two positions): set 0 by "
                                                "2.2 px (0.56 cells); set 1 stays within 1 px")
    assert movement_summary([still]) == "no set's centre moves 1 px or more over the clip"
    assert list(movement_table([moved, still])["span (px)"]) == [2.24, 0.0]
    with pytest.raises(ValueError, match="size is the input crop's side in pixels; got 0"):
        centre_movement(analysis.internals, 0)
