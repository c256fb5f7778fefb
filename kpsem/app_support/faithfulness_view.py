"""Faithfulness in the app: the Explorer's deletion/insertion section for one clip and both models.

The curves are :func:`kpsem.explain.faithfulness.pair_faithfulness` on the pair the Explorer already
analysed for the common target (:func:`kpsem.explain.analysis.common_target`); this module caches them
and draws them, and runs no model except through the library.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from kpsem.app_support import services
from kpsem.app_support.render import MODEL_COLOURS
from kpsem.app_support.sources import FileKey
from kpsem.app_support.text import escape_markdown, escape_plotly
from kpsem.explain.analysis import CommonTarget, PairAnalysis
from kpsem.explain.faithfulness import PairFaithfulness

__all__ = ["STEP_CHOICES", "FaithfulnessRun", "pair_curves", "curves_chart", "auc_lines", "explorer_section"]

STEP_CHOICES = (16, 24, 32)  # points per curve offered on screen


@dataclass
class FaithfulnessRun:
    """Both models' curves on one clip, and how long they took."""

    result: PairFaithfulness  # read-only: shared between sessions
    seconds: float  # wall time of the batched forwards
    device: str
    precision: str  # what ran and why (kpsem.precision.Precision.describe)


@st.cache_resource(max_entries=16, show_spinner=False)
def pair_curves(baseline: FileKey, kpsem: FileKey, device: str, clip: FileKey, frames: int, size: int,
                mean: tuple[float, ...], std: tuple[float, ...], cam_layer: str, weighting: str, target: int,
                reason: str, steps: int, precision: str = "fp32") -> FaithfulnessRun:
    """Curves of both models for ``target`` on the cached pair analysed for that target (one CAM each).

    The page chose the target by :func:`~kpsem.explain.analysis.common_target`; its index and reason
    come here as plain values (cache keys) and travel with the curves. ``precision`` is the sidebar's, as in
    the explorer's analysis the target came from."""
    from kpsem.explain.faithfulness import pair_faithfulness
    from kpsem.precision import resolve_precision

    run, _ = services.analyse(baseline, kpsem, device, clip, frames=frames, size=size, mean=mean, std=std,
                              cam_layer=cam_layer, target=target, weighting=weighting, precision=precision)
    pair: PairAnalysis = run.pair  # type: ignore[assignment]
    common = CommonTarget(index=target, reason=reason, class_names=tuple(pair.baseline.class_names),  # type: ignore[arg-type]
                          predictions=(pair.baseline.prediction, pair.kpsem.prediction),
                          model_names=(pair.baseline.model_name, pair.kpsem.model_name))
    base, ours = services.load_model(baseline, device), services.load_model(kpsem, device)
    sample = services.clip_sample(clip, frames, size, mean, std)
    resolved = resolve_precision(device, precision)
    with services.MODEL_LOCK, resolved.autocast():
        started = time.perf_counter()
        result = pair_faithfulness(base.model, ours.model, sample.clips[:1].to(device), pair, common, steps=steps)
        seconds = time.perf_counter() - started
    return FaithfulnessRun(result=result, seconds=seconds, device=device, precision=resolved.describe())


def curves_chart(result: PairFaithfulness) -> go.Figure:
    """Deletion (left) and insertion (right): each model's curve, solid, and its random floor, dotted."""
    figure = make_subplots(rows=1, cols=2, subplot_titles=("deletion: most salient cells removed first",
                                                           "insertion: most salient cells shown first"),
                           horizontal_spacing=0.08)
    for curves, colour in ((result.baseline, MODEL_COLOURS[0]), (result.kpsem, MODEL_COLOURS[1])):
        x = curves.fractions * 100
        for col, (cam, floor, auc, auc_floor) in enumerate(
                ((curves.deletion, curves.deletion_random, curves.auc_deletion, curves.auc_deletion_random),
                 (curves.insertion, curves.insertion_random, curves.auc_insertion, curves.auc_insertion_random)),
                start=1):
            figure.add_trace(go.Scatter(x=x, y=cam, mode="lines", line={"color": colour, "width": 2},
                                        name=f"{curves.model_name} (AUC {auc:.3f})", legendgroup=curves.model_name,
                                        showlegend=col == 1), row=1, col=col)
            figure.add_trace(go.Scatter(x=x, y=floor, mode="lines", line={"color": colour, "width": 1, "dash": "dot"},
                                        name=f"{curves.model_name}, random order (AUC {auc_floor:.3f})",
                                        legendgroup=curves.model_name, showlegend=col == 1), row=1, col=col)
    figure.update_xaxes(title_text="% of cells removed", range=[0, 100], row=1, col=1)
    figure.update_xaxes(title_text="% of cells shown", range=[0, 100], row=1, col=2)
    figure.update_yaxes(title_text=f"p({escape_plotly(result.common.name)})", range=[0, 1.02], row=1, col=1)
    figure.update_yaxes(range=[0, 1.02], row=1, col=2)
    figure.update_layout(height=320, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                         legend={"orientation": "h", "y": -0.3, "font": {"size": 11}})
    return figure


def auc_lines(result: PairFaithfulness) -> list[str]:
    """One markdown line per model: its areas beside their random floors, and its average drop."""
    return [f"**{c.model_name}**: deletion AUC {c.auc_deletion:.3f} (random {c.auc_deletion_random:.3f}, lower is "
            f"better) · insertion AUC {c.auc_insertion:.3f} (random {c.auc_insertion_random:.3f}, higher is better)"
            f" · average drop {c.average_drop:.0%} with the top {c.keep:.0%} of cells kept (random "
            f"{c.average_drop_random:.0%})" for c in (result.baseline, result.kpsem)]


def explorer_section(chosen, clip_key: FileKey, common: CommonTarget, *, cam_layer: str,  # noqa: ANN001 - ui.Selection
                     weighting: str) -> None:
    """The Explorer's faithfulness expander: computed on request (a few batched forwards per model)."""
    from kpsem.app_support import ui

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
