"""A long video's time line: where the analysed clip lies in it, and which frames it samples."""

from __future__ import annotations

from kpsem.app_support.drawing.render import MODEL_COLOURS

__all__ = ["timeline_chart"]


def timeline_chart(num_frames: int, fps: float, indices: list[int], times: list[float]) -> dict:
    """The whole video as a time line: the window shaded, each sampled frame a tick with its number.

    A plotly figure as a plain dict (see :func:`kpsem.app_support.drawing.render.topk_chart`)."""
    duration = num_frames / max(fps, 1e-6)
    colour = MODEL_COLOURS[1]
    ticks = dict(type="scatter", x=list(times), y=[0.5] * len(times), mode="markers",
                 marker=dict(symbol="line-ns", size=18, line=dict(width=2, color=colour)),
                 customdata=[[t + 1, i] for t, i in enumerate(indices)],
                 hovertemplate="clip frame %{customdata[0]}: video frame %{customdata[1]} at %{x:.2f} s<extra></extra>")
    window = dict(type="rect", x0=times[0], x1=times[-1], y0=0.1, y1=0.9, fillcolor=colour, opacity=0.18,
                  line=dict(width=0))
    video = dict(type="rect", x0=0, x1=duration, y0=0.3, y1=0.7, fillcolor="#d9d9d9", line=dict(width=0),
                 layer="below")
    layout = dict(height=90, margin=dict(l=4, r=4, t=4, b=30), showlegend=False, shapes=[video, window],
                  xaxis=dict(range=[0, duration], title=dict(text="seconds", standoff=2), fixedrange=True),
                  yaxis=dict(visible=False, range=[0, 1], fixedrange=True))
    return dict(data=[ticks], layout=layout)
