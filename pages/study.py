"""Design studies: the results table, Table 2 and Fig. 5 of a folder written by ``python -m kpsem study``."""

import pandas as pd
import streamlit as st

from kpsem.app_support.caching.studies import read_study_folder
from kpsem.app_support.choices.sources import user_path
from kpsem.app_support.drawing.text import escape_markdown
from kpsem.app_support.widgets import ui
from kpsem.app_support.widgets.page_start import page_start

chosen = page_start("Design studies")

st.caption("A study trains and evaluates each variant of a plan (e.g. the paper's Table 2 or Fig. 5) on several "
           "seeds with `python -m kpsem study`. Accuracies are per video on the test split; ± is the standard "
           "deviation over seeds; Δ is the paired difference to the variant's baseline on the same test videos.")


def _percent(table: pd.DataFrame, columns: list[str]) -> dict[str, object]:
    return {c: st.column_config.NumberColumn(format="percent") for c in columns if c in table.columns}


text = st.text_input("Study folder (what `python -m kpsem study --out` names)", key="st_folder")
if not text.strip():
    st.info("Give the path of a study folder: it holds plan.json, runs/, results.csv and, once the study ends, "
            "table2.csv and fig5_design.png.")
    st.stop()

study = None
with ui.guard("Study folder"):
    folder = user_path(text, chosen.settings, what="study folder", must_be="dir")
    study = read_study_folder(folder)
if study is None:
    st.stop()

plan, results = study.plan, study.results
finished = len(results)
st.subheader(f"Plan {escape_markdown(plan.name)}", anchor=False)
if plan.description:
    st.markdown(escape_markdown(plan.description))
total = max(study.runs_total, finished, 1)
st.progress(min(finished / total, 1.0), text=f"{finished} of {study.runs_total} runs finished "
                                              f"(plan seeds: {', '.join(map(str, plan.seeds))})")

with ui.guard("Results"):
    st.subheader("Results: one row per run", anchor=False)
    if results.empty:
        st.info("No run has finished yet.")
    else:
        st.dataframe(results, hide_index=True, width="stretch", column_config={
            **_percent(results, ["top1", "top5", "mean_class_accuracy", "clip_top1"]),
            "parameters": st.column_config.NumberColumn(format="localized"),
            "macs": st.column_config.NumberColumn("multiply-adds", format="localized")})

with ui.guard("Table 2"):
    st.subheader("Table 2: variants against their baseline", anchor=False)
    if study.table2 is None:
        st.info("Table 2 and Fig. 5 are written when the study ends; `python -m kpsem study --report-only --plan "
                "PLAN --data ROOT --out FOLDER` writes them from the runs finished so far.")
    else:
        table2 = study.table2
        shown = [c for c in ("label", "seeds", "top1_mean", "top1_std", "top5_mean", "mean_class_mean",
                             "baseline", "paired_seeds", "difference_mean", "difference_std", "ci_low", "ci_high",
                             "mcnemar_p", "significant_seeds", "note") if c in table2.columns]
        st.dataframe(table2[shown], hide_index=True, width="stretch", column_config=_percent(
            table2, ["top1_mean", "top1_std", "top5_mean", "mean_class_mean", "difference_mean", "difference_std",
                     "ci_low", "ci_high"]))
        if study.table2_markdown:
            with st.expander("Table 2 as Markdown (table2.md), with how the statistics were made"):
                st.code(study.table2_markdown, language="markdown")

with ui.guard("Fig. 5"):
    st.subheader("Fig. 5: accuracy against KPSEM's settings", anchor=False)
    if study.figure is None:
        st.info("Fig. 5 is written with Table 2 when the study ends.")
    else:
        st.image(str(study.figure), caption="mean top-1 over seeds, error bars one standard deviation; dashed: the "
                                            "baseline (band: its standard deviation). PDF and SVG lie beside the PNG.")
