"""Motion probes: does each model use motion, and which? The whole split under appearance-keeping probes."""

import streamlit as st

from kpsem.app_support.caching.probes import compute_probes, read_probe_table
from kpsem.app_support.caching.uploads import stored_upload
from kpsem.app_support.choices.sources import file_key, user_path
from kpsem.app_support.choices.stored_results import probe_source
from kpsem.app_support.drawing.probes import PROBE_TEXT, accuracy_chart, summary_display
from kpsem.app_support.drawing.text import escape_markdown
from kpsem.app_support.widgets import ui
from kpsem.app_support.widgets.page_start import page_start

chosen = page_start("Motion probes")

st.caption("Each probe keeps what every frame looks like and changes only the motion: reversed, shuffled (one seeded "
           "order), frozen on the middle frame, every 2nd frame twice, or mirrored (scored against the mirror-image "
           "label, e.g. hop_cw <-> hop_ccw). The knock-outs switch parts of MF-KPSEM off at test time; MFNet has no "
           "KPSEM module, so they do not apply to it. Accuracies are per video with Wilson 95% intervals; McNemar's "
           "exact p compares each probe with the unprobed clip on the same videos.")

source = st.radio("Probe table from", ("the sidebar's checkpoints and data set", "a Parquet file"), key="pr_source",
                  horizontal=True, help="a Parquet file: the table `python -m kpsem probe --out` writes")
result = None
with ui.guard("Probe table"):
    if source == "a Parquet file":
        text = st.text_input("Probe table (.parquet)", key="pr_path")
        upload = st.file_uploader("or upload it", type=["parquet"], key="pr_upload",
                                  max_upload_size=chosen.settings.max_upload_mb)
        path = None
        if upload is not None:
            path = stored_upload(upload, "tables", chosen.settings.max_upload_mb)
        elif text.strip():
            path = user_path(text, chosen.settings, what="probe table")
        if path is None:
            st.info("Give the path of a table written by `python -m kpsem probe`, or upload it.")
        else:
            result = read_probe_table(file_key(path))
    elif ui.require_models(chosen):
        if chosen.data.index is None:
            st.info(f"Choose a data set in the sidebar ({escape_markdown(chosen.data.error or 'none chosen')}).")
        elif not ui.require_scorable(chosen):  # said before computing: nothing is probed that cannot be scored
            pass
        else:
            clips = int(st.number_input("Clips per video (when computing)", 1, 10, 1, key="pr_clips"))
            found = probe_source(chosen, clips)
            ui.stopped_notice("pr")
            if found.exists:
                result = read_probe_table(file_key(found.path))
                made = (f"bundled, {found.clips} clips per video" if found.bundled
                        else f"computed here, {found.clips} clip(s) per video")
                st.caption(f"{escape_markdown(found.path.name, code=True)} · {made}")
            else:
                st.info(f"No probe table yet for these checkpoints on {escape_markdown(chosen.data.described)}. "
                        "Compute it here (kept on disk for next time), or give a Parquet file.")
                ui.compute_button("Compute probes", "pr", lambda tick: compute_probes(chosen, found, tick))

if result is None:
    st.stop()

from kpsem.probes import per_class_probes, probe_sentences, summarise_probes  # noqa: E402

with ui.guard("Summary"):
    summary = summarise_probes(result)
    videos = result.table["video_id"].nunique()
    st.subheader("What the probes show", anchor=False)
    st.markdown("\n".join(f"- {escape_markdown(s)}" for s in probe_sentences(result)))  # they name classes
    stored = result.info  # read from the file: shown as text
    recorded = stored.get("precision")  # untrusted metadata: only a mapping's name is shown
    precision = recorded.get("precision", "?") if isinstance(recorded, dict) else "not recorded (an older table: fp32)"
    st.caption(escape_markdown(f"{videos} videos, {stored.get('clips_per_video', '?')} clip(s) each; shuffle order "
                               f"{stored.get('shuffle_order', 'not run')} (seed {stored.get('seed', '?')}); "
                               f"precision {precision}."))
    st.plotly_chart(accuracy_chart(summary), key="pr_chart", config={"displayModeBar": False})
    st.dataframe(summary_display(summary), hide_index=True, width="stretch")

probe = "none"
with ui.guard("Per class"):
    st.subheader("Per class", anchor=False)
    per_class = per_class_probes(result)
    probe = st.selectbox("Probe", list(dict.fromkeys(per_class["probe"])), key="pr_class_probe",
                         format_func=lambda p: f"{p}: {PROBE_TEXT.get(p, '')}")
    rows = per_class[per_class["probe"] == probe]
    st.dataframe(
        rows[["model_id", "true_class", "videos", "correct", "accuracy", "ci_low", "ci_high", "changed",
              "top_new_class", "top_new_count"]],
        hide_index=True, width="stretch",
        column_config={
            "accuracy": st.column_config.ProgressColumn("accuracy", format="percent", min_value=0, max_value=1),
            "ci_low": st.column_config.NumberColumn("95% CI low", format="percent"),
            "ci_high": st.column_config.NumberColumn("95% CI high", format="percent"),
            "top_new_class": st.column_config.TextColumn("changed predictions went mostly to"),
            "top_new_count": st.column_config.NumberColumn("that many"),
        })

with ui.guard("Per video"), st.expander("Every video under this probe"):
    table = result.table[result.table["probe"] == probe]
    st.dataframe(table.drop(columns=["probs"]), hide_index=True, width="stretch")
