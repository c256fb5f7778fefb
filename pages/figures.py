"""Figure studio: the paper's figures from the current selection, styled, previewed and downloaded."""

import json

import streamlit as st

from kpsem.app_support.caching.figures import FIGURES, exported
from kpsem.app_support.choices import keypoint_settings
from kpsem.app_support.choices.sources import file_key
from kpsem.app_support.choices.stored_results import table_source
from kpsem.app_support.widgets import ui
from kpsem.app_support.widgets.page_start import page_start
from kpsem.explain.figures import display_names
from kpsem.models import has_kpsem
from kpsem.names import CAM_CMAPS, DIFFERENCE_CMAPS

chosen = page_start("Figure studio", needs="models")


base, ours = chosen.baseline, chosen.kpsem
info = ours.info
explorer = keypoint_settings.recall(st.session_state)  # what the Explorer last drew: the figures start from it
kind = st.selectbox("Figure", list(FIGURES), format_func=FIGURES.get, key="fig_kind")
s1, s2, s3, s4, s5 = st.columns(5)
style = {
    "column": s1.radio("Width", ("single", "double"), index=1, key="fig_column", horizontal=True,
                       format_func=lambda c: f"{c} column"),
    "font_size": float(s2.slider("Font size (pt)", 5, 14, 8, key="fig_font")),
    "dpi": int(s3.selectbox("PNG resolution (DPI)", (150, 300, 600), index=1, key="fig_dpi")),
    "cmap": s4.selectbox("Colour map (Grad-CAM)", CAM_CMAPS, key="fig_cmap",
                         index=CAM_CMAPS.index(explorer.cmap) if explorer.cmap in CAM_CMAPS else 0),
    "difference_cmap": s5.selectbox("Colour map (differences)", DIFFERENCE_CMAPS, key="fig_diff_cmap"),
}
# The models' names on every figure: the checkpoints' display names unless the user types others.
defaults = display_names(infos=(base.info, ours.info))
n1, n2 = st.columns(2)
labels = (n1.text_input("Baseline's name on figures", defaults[0], key="fig_name_baseline"),
          n2.text_input("KPSEM model's name on figures", defaults[1], key="fig_name_kpsem"))
spec = {"kind": kind, "style": style, "baseline": list(base.key), "kpsem": list(ours.key), "device": chosen.device,
        "names": list(display_names(labels=labels, infos=(base.info, ours.info))),
        "clip": {"frames": info.clip_frames, "size": info.clip_size, "mean": list(info.mean), "std": list(info.std)},
        "cam_layer": st.session_state.get("cam_layer", "tail"), "weighting": st.session_state.get("weighting", "clip"),
        "clips": [], "true_labels": [], "options": {}}
ready = True
with ui.guard("Figure settings"):
    o1, o2, o3 = st.columns(3)
    if kind in ("fig7", "confusion"):
        clips = int(st.session_state.get("cmp_clips", 1))
        sources = [table_source(chosen, role, clips) for role in ("baseline", "kpsem")]
        if not all(s.exists for s in sources) or chosen.data.index is None:
            st.info("This figure needs both models' predictions on the sidebar's data set: compute them on the "
                    "Class comparison page first.")
            ready = False
        else:
            spec["tables"] = [list(file_key(s.path)) for s in sources]
            spec["level"] = st.session_state.get("cmp_level")
        if kind == "fig7":
            spec["options"] = {"margin": o1.slider("KPSEM wins (or loses) by at least", 0, 100, 0, 5, format="%d%%",
                                                   key="fig_margin") / 100,
                               "mode": o2.radio("Classes where KPSEM", ("wins", "losses"), key="fig_mode",
                                                horizontal=True)}
        else:
            spec["options"] = {"normalise": o1.checkbox("Normalise rows", True, key="fig_normalise")}
    elif kind != "table1":
        index = chosen.data.index
        if index is None or not index.videos:
            st.info("Choose a data set with videos in the sidebar.")
            ready = False
        else:
            ids = [r.video_id for r in index.videos]
            current = st.session_state.get("ex_clip")
            default = [current] if current in ids else [ids[0]]
            many = kind == "fig8"
            picked = o1.multiselect("Clips" if many else "Clip (the first is used)", ids, default=default,
                                    key=f"fig_clips_{kind}", max_selections=6 if many else 1)
            records = [index.videos[ids.index(v)] for v in picked]
            spec["clips"] = [list(file_key(r.path)) for r in records]
            spec["true_labels"] = [index.class_names[r.label] for r in records]
            frames = info.clip_frames
            if kind == "fig8":
                spec["options"] = {"topk": int(o2.number_input("Top classes", 1, 5, 3, key="fig_topk")),
                                   "frame": int(o3.slider("Frame shown", 1, frames, min(explorer.frame, frames - 1) + 1,
                                                          key="fig_frame")) - 1}
            else:
                from kpsem.explain.figures import sample_frames

                # Evenly spaced frames with the Explorer's own frame among them.
                default_frames = sorted({*sample_frames(frames, 3), min(explorer.frame, frames - 1)})
                chosen_frames = (o2.multiselect("Frames", list(range(frames)), default=default_frames,
                                                format_func=lambda t: str(t + 1), key=f"fig_frames_{kind}")
                                 if kind != "centres" else [])
                spec["options"] = {"frames": sorted(chosen_frames)}
                num_sets = ours.model.kpsem.config.num_sets if has_kpsem(ours.model) else 1
                sets_default = [g for g in explorer.sets if g < num_sets] or [0]
                if kind == "fig9":
                    spec["options"] |= {"shared": o3.checkbox("One colour scale for both", True, key="fig_shared"),
                                        "difference": o3.checkbox("Difference row", False, key="fig_diff")}
                elif kind in ("centres", "density"):
                    every = kind == "centres"  # the centres plot shows every set unless told otherwise
                    spec["options"] |= {"sets": o3.multiselect("Sets", list(range(num_sets)),
                                                               default=list(range(num_sets)) if every else sets_default,
                                                               key=f"fig_sets_{kind}")}
                else:
                    p1, p2 = o3.columns(2)
                    spec["options"] |= {
                        "sets": o3.multiselect("Sets", list(range(num_sets)), default=sets_default, key="fig_sets")
                        or [0],
                        "top_channels": int(p1.number_input("Channels per set", 1, 32, explorer.top_channels,
                                                            key="fig_channels")),
                        "max_arrows": int(p2.number_input("Arrows per set", 0, 64, explorer.max_arrows or 0,
                                                          key="fig_arrows_n")),
                        "arrow_scale": float(o3.slider("Arrow scale", 0.5, 5.0, explorer.arrow_scale, 0.5,
                                                       key="fig_arrows")),
                        "split_lines": p1.checkbox("Split lines", explorer.split_lines, key="fig_split"),
                        "highlight_crossing": p2.checkbox("Mark crossings", explorer.highlight_crossing,
                                                          key="fig_cross"),
                        "centre_paths": p1.checkbox("Centre paths", explorer.centre_paths, key="fig_paths"),
                        "tracks": p2.checkbox("Tracks", explorer.tracks, key="fig_tracks")}
                    o2.caption("Key point settings start from the Explorer's (sets, channels, arrows, overlays, "
                               "colour map, frame).")
            ready = bool(picked)

if ready:
    with ui.guard("Could not draw the figure"):
        files = exported(json.dumps(spec, sort_keys=True))
        name = files["name"].decode()
        st.image(files["preview"], caption=f"{FIGURES[kind]} · preview at screen resolution", width="content")
        d = st.columns(4)
        d[0].download_button(f"PNG ({style['dpi']} DPI)", files["png"], f"{name}.png", "image/png", key="dl_png",
                             icon=":material/download:")
        d[1].download_button("PDF", files["pdf"], f"{name}.pdf", "application/pdf", key="dl_pdf",
                             icon=":material/download:")
        d[2].download_button("SVG", files["svg"], f"{name}.svg", "image/svg+xml", key="dl_svg",
                             icon=":material/download:")
        d[3].download_button("All (zip + settings JSON)", files["zip"], f"{name}.zip", "application/zip", key="dl_zip",
                             icon=":material/folder_zip:")
        with st.expander("Settings (stored in the zip as settings.json)"):
            st.json(spec)
