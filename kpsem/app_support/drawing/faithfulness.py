"""Faithfulness curves as a page shows them: deletion and insertion side by side, and each model's areas."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from kpsem.app_support.drawing.render import MODEL_COLOURS
from kpsem.app_support.drawing.text import escape_plotly
from kpsem.explain.faithfulness import PairFaithfulness

__all__ = ["curves_chart", "auc_lines"]


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
