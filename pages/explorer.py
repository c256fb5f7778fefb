"""Explorer: one clip, two models. What does each predict, where does each look, how do key points move?"""

import time

import streamlit as st

from kpsem.app_support.caching import services
from kpsem.app_support.caching.uploads import stored_upload
from kpsem.app_support.choices import keypoint_settings
from kpsem.app_support.choices.selection import chosen_target, clip_truth
from kpsem.app_support.choices.sources import (
    VIDEO_UPLOAD_TYPES,
    file_key,
    outside_classes_note,
    upscaled_note,
    weighting_note,
)
from kpsem.app_support.choices.url_state import overlay_param
from kpsem.app_support.drawing.render import (
    MODEL_COLOURS,
    centre_chart,
    colour_bar,
    density_shares,
    difference_caption,
    difference_limit,
    draw_frame,
    movement_table,
    region_legend_html,
    topk_chart,
)
from kpsem.app_support.drawing.text import escape_markdown
from kpsem.app_support.widgets import faithfulness, probes, ui, video
from kpsem.app_support.widgets.page_start import page_start, remember
from kpsem.explain.analysis import centre_movement, common_target, movement_summary
from kpsem.explain.draw import KeyPointOptions, region_names, select_channels
from kpsem.models import model_class
from kpsem.names import CAM_CMAPS

chosen = page_start("Explorer", explorer=True, needs="models")

base, ours = chosen.baseline, chosen.kpsem
info = ours.info
class_names = list(info.class_names)


def _open_request() -> None:
    """A clip sent here from the class comparison page: select it in the pickers before they draw."""
    request = st.session_state.pop("explorer_request", None)
    if request is None:
        return
    if chosen.data.index is None or request not in {r.video_id for r in chosen.data.index.videos}:
        st.warning(f"Clip {escape_markdown(repr(request))} is not in the sidebar's data set; choose the data set the "
                   "predictions were made on.")
        return
    st.session_state["ex_source"] = "data set"
    st.session_state["ex_class"] = "All classes"
    st.session_state["ex_clip"] = request


_open_request()
pick_col, facts_col = st.columns([1, 1.2], gap="large")
path, true_label = None, None
outside = None  # the clip's class when the models do not know it; "" for an upload of unknown class
with pick_col, ui.guard("Clip"):
    source = st.radio("Clip from", ("data set", "upload"), key="ex_source", horizontal=True)
    if source == "data set":
        index = chosen.data.index
        if index is None:
            why = escape_markdown(chosen.data.error or "none chosen")
            st.info(f"Choose a data set in the sidebar ({why}), or upload a video.")
        elif not index.videos:
            st.info("The chosen split has no usable videos; choose another split or data set in the sidebar.")
        else:
            names = index.class_names
            cls = st.selectbox("Class", ["All classes", *names], key="ex_class")
            records = [r for r in index.videos if cls == "All classes" or names[r.label] == cls]
            ids = [r.video_id for r in records]
            if st.session_state.get("ex_clip") not in ids:
                st.session_state["ex_clip"] = ids[0]
            where = "the split" if cls == "All classes" else escape_markdown(cls)  # a label is Markdown
            video_id = st.selectbox(f"Clip ({len(ids)} in {where})", ids, key="ex_clip")
            record = records[ids.index(video_id)]
            path = record.path
            true_label, outside = clip_truth(chosen, record.label)
    else:
        upload = st.file_uploader("Video file", type=list(VIDEO_UPLOAD_TYPES), key="ex_upload",
                                  max_upload_size=chosen.settings.max_upload_mb)
        if upload is None:
            st.info("Upload a video (mp4, avi, mkv, webm, mov); it stays in this session's temporary folder.")
        else:
            path = stored_upload(upload, "videos", chosen.settings.max_upload_mb)
            truth = st.selectbox("True class (optional)", ["unknown", *class_names], key="ex_upload_truth")
            true_label = None if truth == "unknown" else class_names.index(truth)
            outside = "" if truth == "unknown" else None

in_link = st.session_state.get("ex_source") == "data set" and path is not None  # an upload has no place in a link
remember({"clip": st.session_state.get("ex_clip") if in_link else None})
if path is None:
    st.stop()

sample = None
with facts_col, ui.guard("Could not read the clip"):
    clip_key = video.window_control(file_key(path), info.clip_frames)  # a window of a long video
    sample = services.clip_sample(clip_key, info.clip_frames, info.clip_size, tuple(info.mean), tuple(info.std))
    frames_used = sample.indices[0]
    height, width = sample.original_size
    times = sample.times[0] if sample.times else [i / sample.fps for i in frames_used]
    rate = f"{sample.fps:.1f} fps" + ("" if sample.constant_rate else " on average (variable frame rate)")
    facts = {
        "true label": escape_markdown(class_names[true_label]) if true_label is not None else "unknown",
        "video": f"{sample.num_frames} frames at {rate} ({sample.num_frames / max(sample.fps, 1e-6):.1f} s), "
                 f"{width}×{height} px",
        "model input": f"{info.clip_frames} frames, centre crop {info.clip_size}×{info.clip_size} px",
        "sampled frames": ", ".join(str(i) for i in frames_used) + f" (at {times[0]:.2f} … {times[-1]:.2f} s)",
    }
    st.markdown("\n".join(f"- **{k}**: {v}" for k, v in facts.items()))
    if sample.repeated:  # MFNet's rule for short videos; the user must know the clip is not all distinct frames
        st.warning(f"The video has only {sample.num_frames} frames, fewer than the {info.clip_frames} the models "
                   f"read: {sample.repeated} of the clip's frames repeat the frame before them.",
                   icon=":material/content_copy:")
    enlarged = upscaled_note(sample.original_size, info.clip_size, sample.resize_scale)
    if enlarged:
        st.info(enlarged, icon=":material/zoom_in:")
    st.caption(escape_markdown(path, code=True))
    video.clip_context(clip_key, sample)  # the window on a time line, the crop on the full frame
if sample is None:
    st.stop()

controls = st.expander("Explanation and drawing settings", icon=":material/tune:")
with controls:
    c1, c2, c3, c4 = st.columns(4)
    layers = [name for name in model_class(chosen.baseline.info.arch).cam_layers  # both models have them
              if name in model_class(chosen.kpsem.info.arch).cam_layers]
    cam_layer = c1.selectbox("CAM layer", layers, key="cam_layer",
                             help="tail: the last stage's output; then the stages, top first (KPSEM reads MFNet's "
                                  "conv4 and R3D-50's res3)")
    target_options = ["each model's prediction", *(["true class"] if true_label is not None else []), *class_names]
    target_pick = c2.selectbox("Target class", target_options, key="target")
    same_maps = weighting_note(cam_layer)  # at tail the two weightings cannot differ: say so, offer nothing
    weighting = c3.radio("Weighting", ("clip", "slice"), key="weighting", horizontal=True, disabled=bool(same_maps),
                         format_func=lambda w: "per clip" if w == "clip" else "per time slice", help=same_maps)
    if same_maps:
        c3.caption(same_maps)
    scale = c4.radio("Colour scale", ("shared", "separate"), key="scale", horizontal=True)
    c5, c6, _, _ = st.columns(4)
    cmap = c5.selectbox("Colour map", CAM_CMAPS, key="cmap",  # perceptually uniform first; jet stays on offer
                        help="Grad-CAM and key point density; viridis, cividis, inferno and magma are perceptually "
                             "uniform (equal steps look equal, also in greyscale)")
    alpha = c6.slider("Heat-map opacity", 0.0, 1.0, 0.5, 0.05, key="alpha")
target = chosen_target(target_pick, true_label, class_names)

run, fresh = None, False
status = st.empty()  # a note while the models run; removed as soon as they are done (or cached)
with ui.guard("Analysis failed"):
    status.caption(":material/hourglass_top: Analysing the clip with both models (forward pass and Grad-CAM) ...")
    try:
        run, fresh = services.analyse(base.key, ours.key, chosen.device, clip_key, frames=info.clip_frames,
                                      size=info.clip_size, mean=tuple(info.mean), std=tuple(info.std),
                                      cam_layer=cam_layer, target=target, weighting=weighting,
                                      precision=chosen.precision)
    finally:
        status.empty()
if run is None:
    st.stop()
pair = run.pair
kp = pair.kpsem
# A difference of two CAMs (and a comparison of their faithfulness) only means something for one class: the
# true class when known, else the class picked above, else the class the two models together find most probable.
common = common_target(pair.baseline.probs, kp.probs, class_names, true_label=true_label, chosen=target,
                       model_names=(pair.baseline.model_name, kp.model_name))


def common_pair():  # noqa: ANN201 - PairAnalysis
    """The pair for the common target: the one above when both CAMs already explain it, else a cached second one."""
    if common.explains(pair):
        return pair
    second, _ = services.analyse(base.key, ours.key, chosen.device, clip_key, frames=info.clip_frames,
                                 size=info.clip_size, mean=tuple(info.mean), std=tuple(info.std), cam_layer=cam_layer,
                                 target=common.index, weighting=weighting, precision=chosen.precision)
    return second.pair

options = None
with controls:
    if kp.has_kpsem:
        st.markdown("**Key points and shifts (MF-KPSEM)**")
        num_sets, num_regions, channels = kp.key_points_px.shape[:3]
        keys = keypoint_settings.WIDGET_KEYS
        k1, k2, k3, k4 = st.columns(4)
        sets = k1.multiselect("Sets", list(range(num_sets)), default=[0], key=keys["sets"],
                              format_func=lambda g: f"set {g}",
                              help="each AReSE set has its own split; sets are told apart by marker fill and line "
                                   "style") or [0]
        channel_mode = k2.radio("Channels", ("top by regional weight", "chosen"), key="kp_channel_mode")
        if channel_mode == "chosen":
            picked = k2.multiselect("Channel numbers", list(range(channels)), default=select_channels(kp, sets[0], 3),
                                    key="kp_channels")
            channel_choice = tuple(picked) or tuple(select_channels(kp, sets[0], 1))
            top = len(channel_choice)
        else:
            top = int(k2.number_input("How many", 1, channels, min(3, channels), key=keys["top_channels"]))
            channel_choice = None
        names = region_names(num_regions)
        regions = k3.multiselect("Regions", list(range(num_regions)), default=list(range(num_regions)),
                                 key="kp_regions", format_func=lambda k: names[k])
        arrows = int(k3.number_input("Arrows per set", 0, num_regions * channels, min(4, num_regions * channels),
                                     key=keys["max_arrows"],
                                     help="the shifts of the drawn key points whose regional weight W_R (eq. 11) "
                                          "is largest on the frame; the other key points are drawn without arrows"))
        arrow_scale = k4.slider("Arrow scale", 0.5, 5.0, 1.0, 0.5, key=keys["arrow_scale"],
                                help="arrows longer than the frame end at its border, with their heads")
        k5, k6, k7, k8 = st.columns(4)
        split_lines = k5.checkbox("Split lines", True, key=keys["split_lines"])
        crossing = k6.checkbox("Mark cross-region shifts", True, key=keys["highlight_crossing"])
        on_cam = k7.checkbox("Key points on the Grad-CAM view", True, key="kp_on_cam")
        centre_paths = k8.checkbox("Centre paths", True, key=keys["centre_paths"],
                                   help="each drawn set's separation centre over all frames")
        tracks = k8.checkbox("Key point tracks", False, key=keys["tracks"],
                             help="each drawn key point's position over all frames")
        options = KeyPointOptions(sets=tuple(sets), channels=channel_choice, top_channels=top,
                                  regions=tuple(regions) or tuple(range(num_regions)), arrow_scale=arrow_scale,
                                  split_lines=split_lines, highlight_crossing=crossing, line_width=1.2,
                                  max_arrows=arrows, centre_paths=centre_paths, tracks=tracks)
        keypoint_settings.remember(st.session_state, keypoint_settings.SharedKeyPointSettings(
            sets=tuple(sets), top_channels=top, max_arrows=arrows, arrow_scale=arrow_scale, split_lines=split_lines,
            highlight_crossing=crossing, tracks=tracks, centre_paths=centre_paths, cmap=cmap))
    else:
        on_cam = False
        st.info(f"{kp.model_name} has no KPSEM module, so there are no key point settings.")

# ---- a clip from outside the models' classes: their scores are no verdict on it -------------------------
if outside is not None:
    demo_models = base.source == ours.source == "bundled demo"
    said = [(a.model_name, a.topk[0].name, a.topk[0].probability) for a in (pair.baseline, kp)]
    st.info(escape_markdown(outside_classes_note(class_names, said, clip_class=outside or None,
                                                 synthetic=demo_models)), icon=":material/help:")

# ---- top-k, side by side ----------------------------------------------------------------------------
left, right = st.columns(2, gap="large")
columns = ((left, pair.baseline, base, MODEL_COLOURS[0]), (right, kp, ours, MODEL_COLOURS[1]))
for column, analysis, slot, colour in columns:
    with column:
        top1 = analysis.topk[0]
        verdict = ""
        if true_label is not None:
            verdict = " · :green[**right**]" if top1.index == true_label else " · :red[**wrong**]"
        st.subheader(analysis.model_name, anchor=False)
        explained = escape_markdown(analysis.class_names[analysis.target])
        st.caption(f"{escape_markdown(slot.name, code=True)} · predicts **{escape_markdown(top1.name)}** "
                   f"({top1.probability:.1%}){verdict} · CAM for {explained}")
        st.plotly_chart(topk_chart(analysis, true_label=true_label, colour=colour), key=f"topk_{slot.role}",
                        config={"displayModeBar": False})

# ---- frames ------------------------------------------------------------------------------------------
# A fragment: the frame slider, the filmstrip and the overlay switch rerun this part alone, so the browser
# updates a dozen elements, not the whole page (the models are never rerun here either way).
st.session_state["_explorer_fresh"] = fresh  # read once by the fragment: a fragment rerun computed nothing


def _difference_views(display, frame: int, *, scale: str, cmap: str, alpha: float) -> None:  # noqa: ANN001
    """Both Grad-CAMs for the common target and their difference, on one frame."""
    same = common_pair()  # both CAMs for one class: the views above may explain each model's prediction
    if common.predictions_differ:
        st.info(escape_markdown(common.message()), icon=":material/info:")
    else:
        st.caption(escape_markdown(common.message()))
    base_map, kpsem_map = ((same.baseline_shared, same.kpsem_shared) if scale == "shared"
                           else (same.baseline.cam, same.kpsem.cam))
    d1, d2, d3 = st.columns(3)
    d1.image(draw_frame(display[frame], cam=base_map[frame], cmap=cmap, alpha=alpha).jpeg, output_format="JPEG",
             caption=f"{same.baseline.model_name} Grad-CAM for {escape_markdown(common.name)}",
             width="stretch")
    diff = same.difference if scale == "shared" else same.difference_normalised
    limit = difference_limit(diff)  # symmetric, fitted to the clip's differences (never a fixed ±1)
    d2.image(draw_frame(display[frame], difference=diff[frame], limit=limit).jpeg, output_format="JPEG",
             width="stretch", caption="baseline minus KPSEM: red where the baseline looks more, blue where "
                                      "KPSEM does")
    d2.image(colour_bar(cmap, diverging=True), caption=difference_caption(limit, shared=scale == "shared"),
             width="stretch")
    d3.image(draw_frame(display[frame], cam=kpsem_map[frame], cmap=cmap, alpha=alpha).jpeg,
             output_format="JPEG",
             caption=f"{same.kpsem.model_name} Grad-CAM for {escape_markdown(common.name)}",
             width="stretch")


def _model_views(display, frame: int, pair, options: KeyPointOptions | None, *, overlay: str, on_cam: bool,  # noqa: ANN001
                 scale: str, cmap: str, alpha: float) -> None:
    """Each model's frame with its Grad-CAM or key points, and where MF-KPSEM's key points gather."""
    kp = pair.kpsem
    frame_number = frame + 1
    shared = scale == "shared"
    base_map, kpsem_map = (pair.baseline_shared, pair.kpsem_shared) if shared else (pair.baseline.cam, kp.cam)
    no_kp_note = f"{pair.baseline.model_name} has no key points: it has no KPSEM module, so there is nothing to shift."
    show_cam = overlay == "Grad-CAM"
    v1, v2, *v3 = st.columns(3 if kp.has_kpsem else 2, gap="medium" if kp.has_kpsem else "large")
    with v1:
        drawn = draw_frame(display[frame], cam=base_map[frame] if show_cam else None, cmap=cmap, alpha=alpha)
        st.image(drawn.jpeg, output_format="JPEG", width="stretch",
                 caption=f"{pair.baseline.model_name}, frame {frame_number}")
        if overlay == "Key points and shifts" or on_cam:
            st.info(no_kp_note, icon=":material/info:")
    with v2:
        draw_kp = kp.has_kpsem and options is not None and (overlay == "Key points and shifts" or on_cam)
        drawn = draw_frame(display[frame], cam=kpsem_map[frame] if show_cam else None, cmap=cmap, alpha=alpha,
                           analysis=kp if draw_kp else None, frame=frame,
                           keypoints=options if draw_kp else None)
        st.image(drawn.jpeg, output_format="JPEG", width="stretch", caption=f"{kp.model_name}, frame "
                 f"{frame_number} (feature frame {int(kp.frame_to_feature[frame]) + 1})")
        if draw_kp:
            st.markdown(region_legend_html(kp.key_points_px.shape[1], crossing=options.highlight_crossing,
                                           sets=options.sets),
                        unsafe_allow_html=True)
            last = int(kp.frame_to_feature[frame]) >= kp.shifts_px.shape[3]
            st.caption(f"{drawn.key_points} key points, {drawn.arrows} shift arrows "
                       f"({drawn.crossing} cross a region border)"
                       + (" · last feature frame: no shift to draw" if last else ""))
        elif overlay == "Key points and shifts":
            st.info(f"{kp.model_name} has no KPSEM module, so it has no key points either.")
    if v3:  # where the module's key points gather, next to where the CAM looks
        with v3[0]:
            drawn_sets = options.sets if options is not None else (0,)
            counts, shares = density_shares(kp, tuple(drawn_sets))  # (T', H', W') each
            paths = KeyPointOptions(sets=drawn_sets, channels=(), max_arrows=0, split_lines=False,
                                    centre_paths=True, line_width=1.2)
            t = int(kp.frame_to_feature[frame])
            drawn = draw_frame(display[frame], density=shares[t], density_max=float(shares.max()), cmap=cmap,
                               alpha=alpha, analysis=kp, frame=frame, keypoints=paths)
            which = ", ".join(str(g) for g in drawn_sets)
            st.image(drawn.jpeg, output_format="JPEG", width="stretch",
                     caption=f"key point density, set{'s' if len(drawn_sets) > 1 else ''} {which}: the "
                             f"share of the {int(counts[t].sum())} key points (all {kp.key_points_px.shape[2]} "
                             f"channels, all regions) in each feature cell, 0 … {shares.max():.1%} "
                             "(the clip's largest), with each set's centre path")
    if show_cam:
        label = (f"one shared scale for both models (max {pair.shared_scale:.3g})" if scale == "shared"
                 else "each model scaled to its own maximum")
        st.image(colour_bar(cmap, width=512), caption=f"Grad-CAM, 0 … 1: {label}", width="stretch")


def _centre_section(kp, frame: int) -> None:  # noqa: ANN001 - ClipAnalysis
    """Where each set's separation centre goes over the clip, as a chart and a table."""
    movements = centre_movement(kp.internals, kp.size)
    st.markdown("**Separation centres over the clip**")
    st.caption(escape_markdown(movement_summary(movements)) + f" · 1 feature cell = "
               f"{kp.size / kp.internals.feature_size[1]:g} input pixels")
    chart_col, table_col = st.columns([3, 2])
    chart_col.plotly_chart(centre_chart(kp, current=int(kp.frame_to_feature[frame])), key="centre_chart",
                           config={"displayModeBar": False})
    table_col.dataframe(movement_table(movements), hide_index=True, height=230)


@st.fragment
def frame_viewer(sample, pair, run, options: KeyPointOptions | None, *, on_cam: bool, scale: str, cmap: str,  # noqa: ANN001
                 alpha: float) -> None:
    started = time.perf_counter()
    kp = pair.kpsem
    overlay = st.radio("Overlay", ("Grad-CAM", "Key points and shifts", "Difference"), key="overlay", horizontal=True)
    views = st.container()
    num_frames = kp.num_frames
    frame_number = st.slider("Frame", 1, num_frames, 1, key="frame",
                             help="moves both columns; only the drawing is redone, never the models")
    frame = frame_number - 1
    remember({"frame": None if frame_number == 1 else str(frame_number),
              "overlay": overlay_param(overlay)})  # a reload or a shared link shows this view
    keypoint_settings.remember_frame(st.session_state, frame)  # the Figure studio starts from this frame
    when = sample.times[0][frame] if sample.times else sample.indices[0][frame] / sample.fps
    st.caption(f"Frame {frame_number} of the {num_frames} sampled frames is video frame {sample.indices[0][frame]} "
               f"(counted from 0), shown at {when:.2f} s")

    display = sample.display[0]
    with views, ui.guard("Drawing failed"):
        if overlay == "Difference":
            _difference_views(display, frame, scale=scale, cmap=cmap, alpha=alpha)
        else:
            _model_views(display, frame, pair, options, overlay=overlay, on_cam=on_cam, scale=scale, cmap=cmap,
                         alpha=alpha)
        if kp.has_kpsem and overlay != "Difference":  # which splits follow the action, and by how much
            _centre_section(kp, frame)
    fresh = st.session_state.pop("_explorer_fresh", False)
    st.caption(f"Device **{run.device}** · {escape_markdown(run.precision)} · analysis {run.seconds:.2f} s "
               f"({'fresh' if fresh else 'cached'}) · frames drawn in {(time.perf_counter() - started) * 1000:.0f} ms")


frame_viewer(sample, pair, run, options, on_cam=on_cam, scale=scale, cmap=cmap, alpha=alpha)
video.explorer_section(sample, pair, common_pair, options, cmap=cmap, alpha=alpha,
                            analysis_key=(base.key, ours.key, chosen.device, clip_key, cam_layer, target,
                                          weighting, chosen.precision))
faithfulness.explorer_section(chosen, clip_key, common, cam_layer=cam_layer, weighting=weighting)
probes.explorer_section(chosen, clip_key, true_label)  # below the views: one clip under the motion probes
