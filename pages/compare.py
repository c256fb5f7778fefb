"""Class comparison: where does KPSEM help, and where does it hurt?"""

import streamlit as st

from kpsem.app_support.caching.predictions import common_levels, compare_runs, compute_missing_tables
from kpsem.app_support.caching.services import MODEL_LOCK, read_table
from kpsem.app_support.caching.uploads import stored_upload
from kpsem.app_support.caching.video import thumbnail
from kpsem.app_support.choices.selection import ROLES
from kpsem.app_support.choices.sources import file_key, user_path
from kpsem.app_support.choices.stored_results import table_source
from kpsem.app_support.drawing.gallery import FILTERS, THUMB_WIDTH, filter_counts, gallery_rows
from kpsem.app_support.drawing.render import confusion_heatmap, per_class_chart
from kpsem.app_support.drawing.tables import (
    RUN_COLUMNS,
    classes_where,
    confusion_cell,
    confusion_matrices,
    headline,
    runs_table,
)
from kpsem.app_support.drawing.text import escape_markdown
from kpsem.app_support.widgets import ui
from kpsem.app_support.widgets.page_start import page_start

chosen = page_start("Class comparison")

source = st.radio("Predictions from", ("the sidebar's checkpoints and data set", "Parquet files"), key="cmp_source",
                  horizontal=True, help="Parquet files are the tables `python -m kpsem evaluate --out` writes")
runs = None  # one (baseline table, KPSEM table, label) per run; runs are paired by order
with ui.guard("Predictions"):
    if source == "Parquet files":
        cols = st.columns(2)
        found = []
        for col, role in zip(cols, ("baseline", "kpsem")):
            given = []  # (table, file name shown)
            title = ROLES[role].split(" (")[0]
            with col, ui.guard(f"{title} tables"):
                text = st.text_input(f"{title} table (.parquet)", key=f"cmp_path_{role}",
                                     help="several runs (seeds, or the splits of HMDB51 / UCF101): separate the "
                                          "paths with ';'; the n-th baseline table is paired with the n-th KPSEM table")
                uploads = st.file_uploader("or upload them (one per run)", type=["parquet"], key=f"cmp_upload_{role}",
                                           accept_multiple_files=True, max_upload_size=chosen.settings.max_upload_mb)
                if uploads:
                    # A browser sends several files in no order the user sees: pair them by file name instead.
                    paths = [(stored_upload(u, "tables", chosen.settings.max_upload_mb), u.name)
                             for u in sorted(uploads, key=lambda u: u.name)]
                else:
                    paths = [(path, path.name) for path in (user_path(t, chosen.settings, what="predictions table")
                                                            for t in text.split(";") if t.strip())]
                given = [(read_table(file_key(path)), name) for path, name in paths]
            found.append(given)
        if not all(found):
            st.info("Give both models' tables (paths or uploads); for several runs, as many of each.")
        elif len(found[0]) != len(found[1]):
            st.warning(f"{len(found[0])} baseline tables and {len(found[1])} KPSEM tables: runs are paired by "
                       "order, so give as many of each.", icon=":material/rule:")
        else:
            runs = [(a, b, f"{name_a} vs {name_b}") for (a, name_a), (b, name_b) in zip(*found)]
    elif ui.require_models(chosen):
        if chosen.data.index is None:
            st.info(f"Choose a data set in the sidebar ({escape_markdown(chosen.data.error or 'none chosen')}).")
        elif not ui.require_scorable(chosen):  # said before computing: no table, no 0% headline
            pass
        else:
            clips = int(st.number_input("Clips per video (when computing)", 1, 10, 1, key="cmp_clips"))
            sources = [table_source(chosen, role, clips) for role in ("baseline", "kpsem")]
            missing = [s for s in sources if not s.exists]
            ui.stopped_notice("cmp")
            if missing:
                names = ", ".join(chosen.baseline.name if s.role == "baseline" else chosen.kpsem.name for s in missing)
                st.info(f"No predictions table yet for {escape_markdown(names)} on "
                        f"{escape_markdown(chosen.data.described)}. Compute them here (kept on disk for next time), "
                        "or give Parquet files.")
                ui.compute_button("Compute predictions", "cmp", lambda tick: compute_missing_tables(
                    chosen, missing, clips=clips, progress=tick, lock=MODEL_LOCK))
            else:
                runs = [(*(read_table(file_key(s.path)) for s in sources), " vs ".join(s.path.name for s in sources))]
                st.caption(" · ".join(escape_markdown(s.path.name, code=True)
                                      + (" (bundled)" if s.bundled else " (computed, cached on disk)")
                                      for s in sources))

if runs is None:
    st.stop()

from kpsem.explain.compare import paired_significance, per_class_accuracy  # noqa: E402
from kpsem.explain.significance import ALPHA, summarise_runs  # noqa: E402

compared_runs = None
with ui.guard("The tables cannot be compared"):
    levels = common_levels(runs)
    level = st.radio("Level", levels, key="cmp_level", horizontal=True,  # video first
                     help="video: mean softmax over a video's clips; clip: every clip on its own") if levels else None
    compared_runs = compare_runs(runs, level)
if compared_runs is None:
    st.stop()

with st.expander("Significance settings"):
    s1, s2 = st.columns(2)
    resamples = int(s1.number_input("Bootstrap resamples", 100, 200_000, 10_000, 1000, key="cmp_resamples",
                                    help="resamples of the videos (with replacement) behind the 95% interval"))
    seed = int(s2.number_input("Bootstrap seed", 0, 2**31 - 1, 0, key="cmp_seed"))
results = [paired_significance(c, resamples=resamples, seed=seed) for c in compared_runs]

shown_run = 0
if len(runs) > 1:
    across = summarise_runs(results)
    st.subheader(f"Across {across.runs} runs", anchor=False)
    st.markdown(f"Mean ± standard deviation over the runs. **top-1**: baseline {across.describe('top1_baseline')}, "
                f"KPSEM {across.describe('top1_kpsem')}, difference {across.describe('difference')}. "
                f"**Mean class accuracy**: baseline {across.describe('mean_class_baseline')}, KPSEM "
                f"{across.describe('mean_class_kpsem')}, difference {across.describe('mean_class_difference')}. "
                f"Significant at {ALPHA:.0%} (McNemar exact) in {across.significant_runs} of {across.runs} runs.")
    percent = st.column_config.NumberColumn(format="percent")
    st.dataframe(runs_table(results, [label for _, _, label in runs]), hide_index=True, column_config={
        **{c: percent for c in RUN_COLUMNS if c not in ("fixed", "broken", "mcnemar_p")},
        "ci_low": st.column_config.NumberColumn("95% CI low", format="percent"),
        "ci_high": st.column_config.NumberColumn("95% CI high", format="percent"),
        "mcnemar_p": st.column_config.NumberColumn("McNemar p", format="%.4g")})
    shown_run = st.selectbox("Run shown below", range(len(runs)), key="cmp_run",
                             format_func=lambda i: f"run {i + 1}: {runs[i][2]}")
compared, result = compared_runs[shown_run], results[shown_run]
tables = runs[shown_run][:2]
st.session_state["_compared"] = compared

names = (compared.baseline_id, compared.kpsem_id)  # model ids from the tables: plain data (escape where shown)
shown_names = tuple(escape_markdown(name) for name in names)
numbers = headline(compared)
split = tables[0].attrs.get("kpsem", {}).get("split") or chosen.data.split
st.subheader("Headline", anchor=False)
m = st.columns(6)
m[0].metric(f"top-1 {shown_names[0]}", f"{numbers.top1[0]:.1%}")
m[1].metric(f"top-1 {shown_names[1]}", f"{numbers.top1[1]:.1%}",
            f"{(numbers.top1[1] - numbers.top1[0]) * 100:+.1f} pts")
m[2].metric(f"top-5 {shown_names[0]}", f"{numbers.top5[0]:.1%}")
m[3].metric(f"top-5 {shown_names[1]}", f"{numbers.top5[1]:.1%}",
            f"{(numbers.top5[1] - numbers.top5[0]) * 100:+.1f} pts")
m[4].metric("split", escape_markdown(split))
m[5].metric(f"{compared.level}s compared", f"{numbers.items}")
st.markdown(f"**Is the difference real?** {result.sentence}.")
st.caption(f"{result.interval_text}. Mean class accuracy: {shown_names[0]} {result.mean_class_baseline:.1%}, "
           f"{shown_names[1]} {result.mean_class_kpsem:.1%} ({result.mean_class_difference * 100:+.1f} points). "
           f"McNemar's exact test reads only the {compared.level}s on which the two models disagree.")
for note in result.caveats:
    st.caption(f"Note: {note}.")

with ui.guard("Per-class accuracy"):
    st.subheader("Per-class accuracy (Fig. 7)", anchor=False)
    per_class = per_class_accuracy(compared)
    c1, c2, c3 = st.columns([1, 2, 1])
    view = c1.radio("Show classes where KPSEM", ("wins", "loses"), key="cmp_view", horizontal=True)
    margin = c2.slider("by at least (accuracy points)", 0, 100, 0, 5, key="cmp_margin", format="%d%%") / 100
    whiskers = c3.checkbox("Wilson 95% whiskers", key="cmp_whiskers",
                           help="each bar's Wilson score interval: with a few videos per class, how far its "
                                "accuracy could be from what this test set shows")
    shown = classes_where(per_class, view, margin)
    if shown.empty:
        st.info(f"No class where KPSEM {view} by at least {margin:.0%}.")
    else:
        chart = per_class_chart(shown, names=names, whiskers=whiskers)
        st.plotly_chart(chart, key="cmp_per_class")
    with st.expander(f"All {len(per_class)} classes, sorted by difference, with Wilson 95% intervals"):
        interval = {f"{model}_wilson_{end}": st.column_config.NumberColumn(f"{name} Wilson 95% {end}", format="percent")
                    for model, name in zip(("baseline", "kpsem"), names) for end in ("low", "high")}
        st.dataframe(per_class, hide_index=True, column_config={
            "baseline": st.column_config.ProgressColumn(names[0], format="percent", min_value=0, max_value=1),
            "kpsem": st.column_config.ProgressColumn(names[1], format="percent", min_value=0, max_value=1),
            "difference": st.column_config.NumberColumn("difference", format="percent"), **interval})

with ui.guard("Confusion matrices"):
    st.subheader("Confusion matrices", anchor=False)
    mats = confusion_matrices(compared)
    h = st.columns(3)
    h[0].plotly_chart(confusion_heatmap(mats[0], compared.class_names, title=names[0]), key="cm_base")
    h[1].plotly_chart(confusion_heatmap(mats[1], compared.class_names, title=names[1]), key="cm_kpsem")
    h[2].plotly_chart(confusion_heatmap(mats[1] - mats[0], compared.class_names, title="KPSEM minus baseline",
                                        diverging=True), key="cm_diff")
    p1, p2, p3 = st.columns(3)
    cell_model = p1.radio("Cell of", ("baseline", "kpsem"), key="cm_model", horizontal=True,  # options are Markdown
                          format_func=lambda r: shown_names[0] if r == "baseline" else shown_names[1])
    cell_true = p2.selectbox("true class", compared.class_names, key="cm_true")
    cell_pred = p3.selectbox("predicted class", compared.class_names, key="cm_pred")
    cell = confusion_cell(compared.items, cell_model, cell_true, cell_pred)
    st.caption(f"{len(cell)} items in this cell")
    if len(cell):
        st.dataframe(cell[["video_id", "clip_index", "true_class", "baseline_class", "kpsem_class"]], hide_index=True)

with ui.guard("Clip gallery"):
    st.subheader("Clip gallery", anchor=False)
    counts = filter_counts(compared.items)
    g1, g2 = st.columns([3, 1])
    which = g1.radio("Show the clips", list(FILTERS), key="cmp_gallery", horizontal=True,
                     format_func=lambda f: f"{f} ({counts[f]})",
                     help="fixed: KPSEM right, baseline wrong; broken: the reverse")
    limit = int(g2.number_input("Show at most", 4, 200, 12, 4, key="cmp_limit"))
    rows = gallery_rows(compared.items, which)
    st.caption(f"{len(rows)} {compared.level}s where {FILTERS[which]}; the middle frame of each. "
               "Open shows the clip in the Explorer.")
    index = chosen.data.index
    paths = {r.video_id: r.path for r in index.videos} if index is not None else {}
    if len(rows) and not any(v in paths for v in rows["video_id"].head(limit)):
        st.info("No thumbnails: these clips are not in the sidebar's data set. Choose the data set the "
                "predictions were made on to see them and open them in the Explorer.")
    per_row = 4
    for start in range(0, min(limit, len(rows)), per_row):
        for tile, row in zip(st.columns(per_row), rows.iloc[start:start + per_row].itertuples()):
            with tile:
                if row.video_id in paths:
                    with ui.guard("Thumbnail"):
                        st.image(thumbnail(file_key(paths[row.video_id])), width=THUMB_WIDTH)
                st.markdown(f"{escape_markdown(row.video_id, code=True)} · "
                            f"true **{escape_markdown(row.true_class)}** · "
                            f"{shown_names[0]}: {escape_markdown(row.baseline_class)} · "
                            f"{shown_names[1]}: {escape_markdown(row.kpsem_class)}")
                if st.button("Open", key=f"open_{which}_{row.Index}", icon=":material/open_in_new:",
                             help="open this clip in the Explorer", disabled=row.video_id not in paths):
                    st.session_state["explorer_request"] = row.video_id
                    st.switch_page("pages/explorer.py")
    if len(rows) > limit:
        st.caption(f"{len(rows) - limit} more: raise 'Show at most' to see them.")
