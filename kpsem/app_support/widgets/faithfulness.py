"""The Explorer's faithfulness section: deletion and insertion curves for one clip and both models, on request."""

from __future__ import annotations

import streamlit as st

from kpsem.app_support.caching.faithfulness import pair_curves
from kpsem.app_support.choices.selection import Selection
from kpsem.app_support.choices.sources import FileKey
from kpsem.app_support.drawing.faithfulness import auc_lines, curves_chart
from kpsem.app_support.drawing.text import escape_markdown
from kpsem.app_support.widgets import ui
from kpsem.explain.analysis import CommonTarget

__all__ = ["STEP_CHOICES", "explorer_section"]

STEP_CHOICES = (16, 24, 32)  # points per curve offered on screen


def explorer_section(chosen: Selection, clip_key: FileKey, common: CommonTarget, *, cam_layer: str,
                     weighting: str) -> None:
    """The Explorer's faithfulness expander: computed on request (a few batched forwards per model)."""
    info = chosen.kpsem.info
    with st.expander("Faithfulness of the explanations: deletion and insertion curves", icon=":material/query_stats:"):
        st.caption(
            "Each model's Grad-CAM cells (the CAM layer's own space-time grid) are removed from the clip, most "
            "salient first, and replaced by a blurred copy (deletion), or shown on that blurred copy (insertion); "
            "the curve is the probability of one class for both models. A faithful map falls faster than a "
            "random order of the same cells (dotted) when deleting and rises faster when inserting.")
        left, right = st.columns([2, 1])
        on = left.toggle("Compute the curves for this clip", key="faith_on")
        steps = right.select_slider("Steps per curve", STEP_CHOICES, value=STEP_CHOICES[0], key="faith_steps")
        if not on:
            return
        with ui.guard("Faithfulness failed"):
            with st.spinner("Running the masked clips through both models ..."):
                run = pair_curves(chosen.baseline.key, chosen.kpsem.key, chosen.device, clip_key, info.clip_frames,
                                  info.clip_size, tuple(info.mean), tuple(info.std), cam_layer, weighting,
                                  common.index, common.reason, int(steps), chosen.precision)
            if common.predictions_differ:  # the message names classes: text from the checkpoint
                st.info(escape_markdown(common.message("curves")), icon=":material/info:")
            else:
                st.caption(escape_markdown(common.message("curves")))
            st.plotly_chart(curves_chart(run.result), key="faith_chart", config={"displayModeBar": False})
            st.markdown("  \n".join(auc_lines(run.result)))
            st.caption(f"{run.result.baseline.forwards + run.result.kpsem.forwards} batched forward calls on "
                       f"{run.device} ({escape_markdown(run.precision)}), {run.seconds:.1f} s; one clip says little: "
                       "`kpsem faithfulness` gives the split's averages with intervals")
