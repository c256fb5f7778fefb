"""Motion probes as a page shows them: the summary as text, accuracy per probe as a chart, one clip's probes
as a table of both models side by side."""

from __future__ import annotations

import pandas as pd

from kpsem.app_support.drawing.render import MODEL_COLOURS
from kpsem.app_support.drawing.text import escape_plotly
from kpsem.probes import INPUT_PROBES, KNOCKOUTS, PROBES, REFERENCE

__all__ = ["PROBE_TEXT", "summary_display", "accuracy_chart", "clip_table", "mirrored_class"]

PROBE_TEXT = {REFERENCE: "the clip as it is", **INPUT_PROBES, **KNOCKOUTS}  # what each probe does, for tables


def summary_display(summary: pd.DataFrame) -> pd.DataFrame:
    """:func:`kpsem.probes.summarise_probes` as text for a table: "not applicable" where a probe does not
    apply, never a number."""
    rows = []
    for row in summary.itertuples():
        base = {"model": row.model_id, "probe": row.probe, "what it does": PROBE_TEXT.get(row.probe, "")}
        if not row.applicable:
            rows.append({**base, "accuracy": "not applicable", "95% CI": "", "changed": "", "vs unprobed": "",
                         "McNemar p": ""})
            continue
        probed = row.probe != REFERENCE
        rows.append({**base, "accuracy": f"{row.accuracy:.1%} ({row.correct}/{row.videos})",
                     "95% CI": f"{row.ci_low:.1%} - {row.ci_high:.1%}",
                     "changed": f"{row.changed_share:.1%} ({row.changed})" if probed else "",
                     "vs unprobed": f"{(row.accuracy - row.reference_accuracy) * 100:+.1f} pts" if probed else "",
                     "McNemar p": f"{row.p_value:.3g}" if probed else ""})
    return pd.DataFrame(rows)


def accuracy_chart(summary: pd.DataFrame) -> dict:
    """Grouped bars of accuracy per probe with Wilson 95% error bars, one colour per model (a plotly dict).
    Probes that do not apply to a model have no bar for it and say so on hover of the others."""
    data = []
    for number, (model, rows) in enumerate(summary.groupby("model_id", sort=False)):
        shown = rows[rows["applicable"]]
        data.append(dict(  # model ids and probe names come from the table: plotly reads tags in them
            type="bar", name=escape_plotly(model), x=[escape_plotly(p) for p in shown["probe"]],
            y=shown["accuracy"].tolist(),
            marker=dict(color=MODEL_COLOURS[min(number, len(MODEL_COLOURS) - 1)]),
            error_y=dict(type="data", symmetric=False, array=(shown["ci_high"] - shown["accuracy"]).tolist(),
                         arrayminus=(shown["accuracy"] - shown["ci_low"]).tolist()),
            text=[f"{v:.0%}" for v in shown["accuracy"]], textposition="inside",
            hovertemplate="%{x}: %{y:.1%}<extra>%{fullData.name}</extra>"))
    layout = dict(barmode="group", height=340, margin=dict(l=4, r=4, t=24, b=4), legend=dict(orientation="h", y=1.12),
                  xaxis=dict(categoryorder="array", categoryarray=[REFERENCE, *PROBES]),
                  yaxis=dict(range=[0, 1], tickformat=".0%", title="video top-1 accuracy"))
    return dict(data=data, layout=layout)


def _cell(row: pd.Series, scored: bool) -> str:
    if not row["applicable"]:
        return "not applicable"
    text = f"{row['pred_class']} ({row['pred_prob']:.0%})"
    if row["probe"] != REFERENCE and row["changed"]:
        text += " · changed"
    if scored:
        text += " · right" if row["correct"] else " · wrong"
    return text


def clip_table(tables: dict[str, pd.DataFrame], *, scored: bool) -> pd.DataFrame:
    """One row per probe, one column per model (``tables``: model id to :func:`kpsem.probes.probe_clip`'s rows):
    each model's prediction, whether the probe changed it and, when ``scored``, whether it is right."""
    shown = pd.DataFrame({"probe": [REFERENCE, *PROBES]})
    shown["what it does"] = shown["probe"].map(PROBE_TEXT)
    for model_id, table in tables.items():
        cells = {row["probe"]: _cell(row, scored) for _, row in table.iterrows()}
        shown[model_id] = shown["probe"].map(cells)
    return shown


def mirrored_class(table: pd.DataFrame, true_class: str) -> str | None:
    """The class a mirrored clip should read as, when it is not the clip's own class (hop_cw <-> hop_ccw)."""
    mirror = table.loc[table["probe"] == "mirror", "target_class"]
    return mirror.iloc[0] if len(mirror) and mirror.iloc[0] != true_class else None
