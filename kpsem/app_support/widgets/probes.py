"""The Explorer's motion probe section: one clip under every probe, both models side by side."""

from __future__ import annotations

import streamlit as st

from kpsem.app_support.caching.probes import clip_rows
from kpsem.app_support.choices.selection import Selection
from kpsem.app_support.choices.sources import FileKey
from kpsem.app_support.drawing.probes import clip_table, mirrored_class
from kpsem.app_support.drawing.text import escape_markdown
from kpsem.app_support.widgets import ui

__all__ = ["explorer_section"]


def explorer_section(chosen: Selection, clip: FileKey, true_label: int | None) -> None:
    """The Explorer's probe section for one clip: both models' predictions under every probe, side by side,
    in an expander of its own. Runs the models only when switched on, so the Explorer stays as fast."""
    with st.expander("Motion probes on this clip", icon=":material/science:"), ui.guard("Motion probes"):
        st.caption("The clip with its frames reversed, shuffled, frozen on the middle frame, at half the frame rate, "
                   "or mirrored (scored against the mirror-image label), and MF-KPSEM with parts of its module "
                   "switched off. The whole split: the Motion probes page.")
        if not st.toggle("Run the probes on this clip", key="ex_probes_on"):
            return
        tables = {}
        for slot in (chosen.baseline, chosen.kpsem):
            info = slot.info
            tables[slot.model_id] = clip_rows(slot.key, chosen.device, clip, info.clip_frames, info.clip_size,
                                              tuple(info.mean), tuple(info.std), true_label, slot.model_id,
                                              chosen.precision)
        if true_label is not None:
            true_class = chosen.kpsem.info.class_names[true_label]
            mirrored = mirrored_class(tables[chosen.baseline.model_id], true_class)
            if mirrored is not None:
                st.caption(f"Mirrored, this clip should read **{escape_markdown(mirrored)}** (the mirror image "
                           f"of {escape_markdown(true_class)}).")
        st.dataframe(clip_table(tables, scored=true_label is not None), hide_index=True, width="stretch")
