"""Per-clip analyses: one pass per model, KPSEM internals in pixels, baselines without key points."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kpsem.explain.analysis import (
    analyse_clip,
    analyse_pair,
    clip_to_display,
    crop_to_original,
    feature_frame_of,
    internals_to_pixels,
)
from kpsem.explain.draw import (
    KeyPointOptions,
    blend_layer,
    cam_overlay,
    channel_scores,
    crossing_shifts,
    draw_keypoints,
    region_of,
    render_frame,
    render_keypoint_frame,
    select_channels,
    upscale,
)
from kpsem.models.kpsem_module import KPSEM, KPSEMConfig


def test_kpsem_analysis_has_everything(tiny_pair, tiny_clip):
    model = tiny_pair[1]
    analysis = analyse_clip(model, tiny_clip, topk=3, class_names=list("abcde"))
    assert analysis.model_name == "MF-KPSEM" and analysis.has_kpsem
    assert analysis.probs.sum() == pytest.approx(1.0)
    assert [t.index for t in analysis.topk] == list(np.argsort(-analysis.probs)[:3])
    assert analysis.topk[0].name == "abcde"[analysis.prediction] and analysis.target == analysis.prediction
    assert analysis.cam_raw.shape == analysis.cam.shape == (8, 64, 64)
    assert analysis.cam.max() == pytest.approx(1.0)
    with torch.no_grad():
        logits, internals = model.forward_with_internals(tiny_clip)
    np.testing.assert_allclose(analysis.logits, logits[0].double().numpy(), rtol=1e-5)
    assert torch.equal(analysis.internals.key_points, internals.key_points)
    assert not analysis.internals.key_points.requires_grad and analysis.internals.key_points.device.type == "cpu"
    g, k, c, t = 8, 4, 32, 4
    assert analysis.centres_px.shape == (g, t, 2)
    assert analysis.key_points_px.shape == (g, k, c, t, 2)
    assert analysis.shifts_px.shape == (g, k, c, t - 1, 2)
    assert analysis.frame_to_feature.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    # Untrained centre MLPs start at zero: the geometric centre, between pixels 31 and 32.
    np.testing.assert_allclose(analysis.centres_px, 31.5)


def test_baseline_has_no_key_points_and_never_fails(tiny_pair, tiny_clip):
    analysis = analyse_clip(tiny_pair[0], tiny_clip, target=4)
    assert analysis.model_name == "MFNet" and not analysis.has_kpsem
    assert analysis.internals is None and analysis.key_points_px is None and analysis.shifts_px is None
    assert analysis.target == 4
    assert analysis.summary()["has_kpsem"] is False
    with pytest.raises(ValueError, match="MFNet has no KPSEM module, so it has no key points or shifts to draw"):
        select_channels(analysis)


def test_pair_shares_one_colour_scale(tiny_pair, tiny_clip):
    pair = analyse_pair(*tiny_pair, tiny_clip, weighting="slice")
    scale = max(pair.baseline.cam_raw.max(), pair.kpsem.cam_raw.max())
    assert pair.shared_scale == pytest.approx(scale)
    np.testing.assert_allclose(pair.baseline_shared, pair.baseline.cam_raw / scale, rtol=1e-6)
    np.testing.assert_allclose(pair.difference, pair.baseline_shared - pair.kpsem_shared)
    np.testing.assert_allclose(pair.difference_normalised, pair.baseline.cam - pair.kpsem.cam)
    assert max(pair.baseline_shared.max(), pair.kpsem_shared.max()) == pytest.approx(1.0)


def test_pair_with_a_checkpoint_without_kpsem(tiny_pair, tiny_clip):
    pair = analyse_pair(tiny_pair[0], tiny_pair[0], tiny_clip)
    assert not pair.kpsem.has_kpsem
    assert (pair.baseline.model_name, pair.kpsem.model_name) == ("MFNet (baseline)", "MFNet (compared)")
    np.testing.assert_allclose(pair.difference, 0.0)


def test_clip_too_short_for_kpsem(tiny_pair):
    with pytest.raises(ValueError, match=r"^clip has 4 frames but this MF-KPSEM needs exactly 8 \(its temporal"):
        analyse_clip(tiny_pair[1], torch.zeros(1, 3, 4, 64, 64))
    with pytest.raises(ValueError, match=r"analyse_clip takes one clip of shape \(1, 3, T, S, "
                       r"S\).*got \(2, 3, 8, 64, 64\)"):
        analyse_clip(tiny_pair[0], torch.zeros(2, 3, 8, 64, 64))
    with pytest.raises(ValueError, match="analyse_clip takes square clips"):
        analyse_clip(tiny_pair[0], torch.zeros(1, 3, 8, 64, 96))


def test_known_maximum_lands_on_known_pixel():
    """A spike in cell (row 3, col 10) of a 14x14 conv4 map of a 224 crop is pixels 160..175 x 48..63:
    its key point is the centre of that block, (167.5, 55.5); through a 256-short-side resize of a
    240-high video and a crop at (top 16, left 43) it is at ((167.5 + 0.5 + 43) * 240/256 - 0.5, ...)."""
    features = torch.zeros(1, 4, 2, 14, 14)
    features[0, 1, :, 3, 10] = 5.0  # channel 1, both frames
    module = KPSEM(KPSEMConfig(in_channels=4, num_frames=2, num_sets=1)).eval()
    with torch.no_grad():
        internals = module.extract(features)
    centres, key_points, shifts = internals_to_pixels(internals, 224)
    np.testing.assert_allclose(centres, 111.5)  # geometric centre of 0..223
    assert key_points[0, 1, 1, 0].tolist() == [167.5, 55.5]  # region 1 = top-right holds the spike
    # The spike does not move; eq. 9 still gives the other regions weight e^0.196 / e^10 each.
    assert np.abs(shifts[0, 1, 1, 0]).max() < 0.05
    original = crop_to_original(key_points[0, 1, 1, 0], crop_box=(16, 43, 224, 224), resize_scale=256 / 240)
    np.testing.assert_allclose(original, [(167.5 + 0.5 + 43) * 240 / 256 - 0.5, (55.5 + 0.5 + 16) * 240 / 256 - 0.5])
    assert original.tolist() == [197.3125, 67.0]


def test_feature_frames_and_display():
    assert feature_frame_of(16, 8).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7]
    assert feature_frame_of(3, 2).tolist() == [0, 0, 1]
    clip = torch.full((1, 3, 2, 4, 4), 0.5)
    display = clip_to_display(clip, mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2))
    assert display.shape == (2, 4, 4, 3) and display.dtype == np.uint8
    assert int(display[0, 0, 0, 0]) == 153  # (0.5 * 0.2 + 0.5) * 255 = 153


def test_overlay_arithmetic():
    frame = np.full((2, 2, 3), 100, dtype=np.uint8)
    out = cam_overlay(frame, np.zeros((2, 2)), cmap="gray", alpha=0.5)
    assert out[0, 0].tolist() == [50, 50, 50]  # half the frame, half black
    out = cam_overlay(frame, np.full((2, 2), 4.0), cmap="gray", alpha=0.25, vmax=4.0)
    assert out[0, 0].tolist() == [139, 139, 139]  # 0.75 * 100 + 0.25 * 255 = 138.75
    with pytest.raises(ValueError, match=r"map of shape \(3, 3\) does not match the frame's \(2, 2\)"):
        cam_overlay(frame, np.zeros((3, 3)))


def test_channel_choice_and_crossing_shifts(tiny_pair, tiny_clip):
    analysis = analyse_clip(tiny_pair[1], tiny_clip)
    weights = analysis.internals.regional_weights[0, 2].numpy()  # (K, C, T'-1)
    lengths = np.linalg.norm(analysis.shifts_px[2], axis=-1)
    expected = (weights * lengths).sum(0).mean(-1)
    np.testing.assert_allclose(channel_scores(analysis, 2), expected, rtol=1e-6)
    assert select_channels(analysis, 2, top=3) == list(np.argsort(-expected, kind="stable")[:3])
    # Crossing by hand: key point + shift lands in which quadrant of the frame's split.
    start = analysis.key_points_px[0, :, :, 1]
    end = start + analysis.shifts_px[0, :, :, 1]
    expected_cross = region_of(end, analysis.centres_px[0, 1]) != np.arange(4)[:, None]
    assert np.array_equal(crossing_shifts(analysis, 0, 1), expected_cross)
    assert not crossing_shifts(analysis, 0, 3).any()  # last feature frame: no shift
    assert region_of(np.array([[10.0, 40.0], [31.5, 31.5], [31.4, 31.6]]), np.array([31.5, 31.5])).tolist() == [2, 3, 2]


def test_draw_keypoints_artists(tiny_pair, tiny_clip):
    from matplotlib.figure import Figure

    analysis = analyse_clip(tiny_pair[1], tiny_clip)
    ax = Figure().add_subplot()
    options = KeyPointOptions(sets=(0,), channels=(1, 2), regions=(0, 3), arrow_scale=2.0)
    artists = draw_keypoints(ax, analysis, frame=2, options=options)  # clip frame 2 = feature frame 1
    arrows = [a for a in artists if a.get_gid() in ("shift", "crossing")]
    assert len(arrows) == 2 * 2  # 2 regions x 2 channels
    crossing = crossing_shifts(analysis, 0, 1)
    assert sum(a.get_gid() == "crossing" for a in arrows) == int(crossing[[0, 3]][:, [1, 2]].sum())
    # last frame: split lines and centre (3), key points of 2 regions (2), the centre's path (1), no arrows
    assert len(draw_keypoints(Figure().add_subplot(), analysis, frame=7, options=options)) == 3 + 2 + 1
    with pytest.raises(ValueError, match=r"channels \[99\] do not exist; KPSEM reads 32 channels \(0..31\)"):
        draw_keypoints(ax, analysis, 0, KeyPointOptions(channels=(99,)))
    with pytest.raises(ValueError, match=r"frame 8 is outside the clip's 8 frames \(0..7\)"):
        draw_keypoints(ax, analysis, 8)
    image = render_frame(np.zeros((64, 64, 3), np.uint8), analysis, 0, keypoints=KeyPointOptions(), scale=2)
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8 and image.any()


def test_key_point_frames_drawn_from_many_threads_match_one_by_one(tiny_pair, tiny_clip):
    from concurrent.futures import ThreadPoolExecutor

    analysis = analyse_clip(tiny_pair[1], tiny_clip)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(6)]
    options = KeyPointOptions(top_channels=2)
    alone = [render_keypoint_frame(f, analysis, t, options, scale=2) for t, f in enumerate(frames)]
    with ThreadPoolExecutor(4) as pool:  # one thread draws on the shared figure, the others on their own
        together = list(pool.map(lambda tf: render_keypoint_frame(tf[1], analysis, tf[0], options, scale=2),
                                 enumerate(frames)))
    for (image_a, artists_a), (image_b, artists_b) in zip(alone, together):
        assert image_a.shape == (128, 128, 3)
        np.testing.assert_array_equal(image_a, image_b)
        assert len(artists_a) == len(artists_b) > 0
    with pytest.raises(ValueError, match=r"set 99 does not exist"):  # fails after set 0 was drawn
        render_keypoint_frame(frames[0], analysis, 0, KeyPointOptions(sets=(0, 99), top_channels=2), scale=2)
    again, _ = render_keypoint_frame(frames[0], analysis, 0, options, scale=2)  # nothing left over from before
    np.testing.assert_array_equal(again, alone[0][0])


def test_blend_layer_by_hand():
    base = np.array([[[100, 100, 100], [0, 0, 0], [200, 40, 10]]], np.uint8)  # (1, 3, 3)
    layer = np.array([[[255, 0, 0, 0], [255, 0, 0, 255], [0, 0, 255, 51]]], np.uint8)  # straight alpha
    out = blend_layer(base, layer)
    # untouched where alpha is 0; replaced where 255; 200 * 0.8 + 0 * 0.2 = 160, 40 * 0.8 = 32, 10 * 0.8 + 51 = 59
    assert out.tolist() == [[[100, 100, 100], [255, 0, 0], [160, 32, 59]]]
    assert base.tolist()[0][1] == [0, 0, 0]  # the input is not modified
    with pytest.raises(ValueError, match=r"layer of \(1, 2\) pixels cannot cover an image of \(1, 3\)"):
        blend_layer(base, layer[:, :2])
    assert upscale(base, 2).shape == (2, 6, 3) and upscale(base, 2)[1, 5].tolist() == [200, 40, 10]


def test_key_point_frame_matches_the_figure_drawing_path(tiny_pair, tiny_clip):
    """The app composites the vector layer over the frame itself; the result is what imshow plus the
    same artists on one figure (the paper figures' path) gives, up to rounding."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    analysis = analyse_clip(tiny_pair[1], tiny_clip)
    frame_rgb = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    options = KeyPointOptions(top_channels=3, arrow_scale=3.0)
    image, _ = render_keypoint_frame(frame_rgb, analysis, 2, options, scale=3)
    fig = Figure(figsize=(64 * 3 / 100, 64 * 3 / 100), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(frame_rgb, interpolation="nearest")
    ax.set_axis_off()
    draw_keypoints(ax, analysis, 2, options)
    canvas.draw()
    reference = np.asarray(canvas.buffer_rgba())[..., :3]
    assert image.shape == reference.shape == (192, 192, 3)
    difference = np.abs(image.astype(int) - reference.astype(int))
    assert difference.max() <= 3 and (image != upscale(frame_rgb, 3)).any()  # something was drawn


@pytest.mark.parametrize(("size", "scale"), [(464, 1), (304, 3), (23, 5)])
def test_key_point_frame_has_exactly_scale_pixels_per_frame_pixel(tiny_pair, tiny_clip, size, scale):
    """Sizes where figsize * dpi falls just short of a whole number (464 / 100 * 100 = 463.99...): the layer
    must still cover the frame exactly, or the blend refuses it."""
    analysis = analyse_clip(tiny_pair[1], tiny_clip)
    image, _ = render_keypoint_frame(np.zeros((size, size, 3), np.uint8), analysis, 0, KeyPointOptions(), scale=scale)
    assert image.shape == (size * scale, size * scale, 3)


def _disagreeing_pair(tiny_pair: tuple[torch.nn.Module, torch.nn.Module]) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The tiny MFNet and a copy whose classifier favours class 0: on tiny_clip one predicts 4, the other 0."""
    import copy

    other = copy.deepcopy(tiny_pair[0])
    with torch.no_grad():
        other.classifier.bias[0] += 10.0
    return tiny_pair[0], other


def test_difference_only_for_one_target(tiny_pair, tiny_clip):
    from kpsem.explain.analysis import common_target

    models = _disagreeing_pair(tiny_pair)
    pair = analyse_pair(*models, tiny_clip)  # each model's own prediction
    assert (pair.baseline.target, pair.kpsem.target) == (4, 0)
    assert not pair.same_target and pair.difference is None and pair.difference_normalised is None
    names = [f"class_{i}" for i in range(5)]
    common = common_target(pair.baseline.probs, pair.kpsem.probs, names, true_label=2,
                           model_names=(pair.baseline.model_name, pair.kpsem.model_name))
    assert not common.explains(pair)
    assert common.message() == ("difference for the true class 'class_2'; MFNet (baseline) predicts class_4, "
                                "MFNet (compared) class_0")
    again = analyse_pair(*models, tiny_clip, target=common.index)
    assert common.explains(again) and again.same_target
    np.testing.assert_allclose(again.difference, again.baseline_shared - again.kpsem_shared)
    np.testing.assert_allclose(again.baseline.probs, pair.baseline.probs)  # the class explained changes no probability
