"""Models: what each loaded checkpoint is, and Table 1 for the pair."""

import streamlit as st

from kpsem.app_support.caching import services
from kpsem.app_support.choices.selection import ROLES
from kpsem.app_support.drawing.metadata import command_line, config_table, provenance_tables
from kpsem.app_support.drawing.text import class_names_source, escape_markdown
from kpsem.app_support.widgets import ui
from kpsem.app_support.widgets.page_start import page_start
from kpsem.explain.figures import cost_table

chosen = page_start("Models")

slots = (chosen.baseline, chosen.kpsem)
columns = st.columns(2, gap="large")
for column, slot in zip(columns, slots):
    with column, ui.guard(ROLES[slot.role]):
        st.subheader(ROLES[slot.role], anchor=False)
        if slot.loaded is None:
            st.warning(escape_markdown(slot.error or "no checkpoint chosen"), icon=":material/arrow_back:")
            continue
        info, report = slot.info, slot.loaded.report
        names = class_names_source(slot.names_file, info.class_names)
        st.markdown(
            f"- **file**: {escape_markdown(slot.key[0], code=True)} ({slot.key[1] / 2**20:.2f} MB)\n"
            f"- **architecture**: {escape_markdown(info.arch)} (format {escape_markdown(info.source_format)})\n"
            f"- **classes**: {info.num_classes}, {names}\n"
            f"- **clip**: {info.clip_frames} frames × {info.clip_size}×{info.clip_size} px\n"
            f"- **normalisation**: mean {tuple(round(v, 4) for v in info.mean)}, "
            f"std {tuple(round(v, 4) for v in info.std)}\n"
            f"- **loading**: {escape_markdown(report.summary())}")
        st.markdown("**Model config** (what the model is built from)")
        st.dataframe(config_table(info.config), hide_index=True, width="stretch")
        st.markdown("**How it was made**")
        command = command_line(info.provenance or {})
        if command:
            st.caption("Training command")
            st.code(command, language="bash", wrap_lines=True)
        tables = provenance_tables(info.provenance or {})
        if not tables and not command:
            st.caption("The file says nothing about how it was trained (a published checkpoint records only "
                       "its weights).")
        for title, table in tables:
            with st.expander(f"{escape_markdown(title)} ({len(table)})", expanded=title == "Run"):  # a key of the file
                st.dataframe(table, hide_index=True, width="stretch")
        with st.expander(f"Class list ({info.num_classes})"):
            st.dataframe({"index": list(range(info.num_classes)), "class": info.class_names}, hide_index=True)

with ui.guard("Table 1"):
    st.subheader("Table 1: parameters and multiply-adds", anchor=False)
    loaded = [s for s in slots if s.loaded is not None]
    if loaded:
        ref = loaded[-1].info
        clip = (ref.clip_frames, ref.clip_size, ref.clip_size)
        costs = [services.model_cost_cached(s.key[:3], chosen.device, s.info.arch, clip) for s in loaded]
        table = cost_table(costs)
        st.caption(f"one {clip[0]}×{clip[1]}×{clip[2]} clip; multiply-adds counted by PyTorch's FlopCounterMode")
        st.dataframe(table[["model", "part", "parameters", "params_M", "gmacs"]], hide_index=True, column_config={
            "params_M": st.column_config.NumberColumn("params (M)", format="%.3f"),
            "gmacs": st.column_config.NumberColumn("mult-adds (G)", format="%.4f"),
            "parameters": st.column_config.NumberColumn("parameters", format="localized")})
        if len(costs) == 2 and costs[0].total.macs:
            extra = costs[1].total.macs / costs[0].total.macs - 1
            params = costs[1].total.parameters / costs[0].total.parameters - 1
            st.caption(f"{escape_markdown(slots[1].name)} vs {escape_markdown(slots[0].name)}: "
                       f"parameters {params:+.2%}, multiply-adds {extra:+.2%}")
    else:
        st.info("Choose a checkpoint in the sidebar (bundled demo, a path or an upload) to count its parameters "
                "and multiply-adds.")
