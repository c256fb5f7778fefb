"""Motion probes in the app: where a split's probe table comes from, how it is shown, and the Explorer's
one-clip probe section. The probes themselves are :mod:`kpsem.probes`; nothing here runs a model except
through it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st

from kpsem.app_support import services
from kpsem.app_support.render import MODEL_COLOURS
from kpsem.app_support.sources import FileKey
from kpsem.app_support.text import escape_markdown, escape_plotly
from kpsem.probes import INPUT_PROBES, KNOCKOUTS, PROBES, REFERENCE, ProbeResult

__all__ = [
    "BUNDLED_CLIPS",
    "PROBE_TEXT",
    "ProbeSource",
    "accuracy_chart",
    "compute_probes",
    "explorer_section",
    "probe_source",
    "read_probe_table",
    "summary_display",
]

PROBE_TEXT = {REFERENCE: "the clip as it is", **INPUT_PROBES, **KNOCKOUTS}  # what each probe does, for tables
BUNDLED_CLIPS = 2  # clips per video of the demo's bundled probes table (assets/demo/make_demo.sh)


@dataclass
class ProbeSource:
    """Where the probe table of the sidebar's two models on its data split is (or would be written)."""

    path: Path  # the Parquet file
    bundled: bool  # the demo's own table
    clips: int  # clips per video it was (or will be) computed with

    @property
    def exists(self) -> bool:
        return self.path.is_file()


def probe_source(chosen, clips: int) -> ProbeSource:  # noqa: ANN001 - ui.Selection
    """The demo's bundled table when the sidebar shows the demo, else a file in the disk cache named after the
    checkpoints, the data split and the settings (so a second visit reads it back)."""
    demo = chosen.demo
    bundled = demo.root / "probes.parquet"
    if (chosen.using_demo and chosen.data.split == demo.split and bundled.is_file()
            and Path(chosen.baseline.key[0]) == demo.baseline and Path(chosen.kpsem.key[0]) == demo.kpsem):
        return ProbeSource(bundled, True, BUNDLED_CLIPS)
    text = json.dumps([list(chosen.baseline.key), list(chosen.kpsem.key), [str(v) for v in chosen.data.key], clips,
                       list(PROBES), chosen.precision])
    digest = hashlib.sha256(text.encode()).hexdigest()[:20]
    return ProbeSource(chosen.settings.cache_dir / "probes" / f"probes-{digest}.parquet", False, clips)


@st.cache_data(max_entries=16, show_spinner=False)
def read_probe_table(key: FileKey) -> ProbeResult:
    """A table written by ``python -m kpsem probe`` or by :func:`compute_probes` (raises ProbeError)."""
    from kpsem.probes import read_probes

    return read_probes(Path(key[0]))


def compute_probes(chosen, source: ProbeSource, progress: Callable[[str, int, int], None]) -> ProbeResult:  # noqa: ANN001
    """Every probe on the sidebar's two models and data split, written to ``source.path`` when done."""
    from kpsem.probes import probe_index, write_probes

    models = [(slot.model, slot.info, slot.model_id) for slot in (chosen.baseline, chosen.kpsem)]
    result = probe_index(models, chosen.data.index, probes=PROBES, clips=source.clips, progress=progress,
                         lock=services.MODEL_LOCK, precision=chosen.precision)
    for slot in (chosen.baseline, chosen.kpsem):
        result.models[slot.model_id]["checkpoint"] = str(slot.key[0])
    write_probes(result, source.path)
    return result


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


@st.cache_data(max_entries=64, show_spinner=False)
def _clip_rows(model: FileKey, device: str, clip: FileKey, frames: int, size: int, mean: tuple[float, ...],
               std: tuple[float, ...], true_label: int | None, name: str, precision: str) -> pd.DataFrame:
    """One model's predictions on one clip under every probe (cached per model, clip, label and precision)."""
    from kpsem.probes import probe_clip

    loaded = services.load_model(model, device)
    sample = services.clip_sample(clip, frames, size, mean, std)
    with services.MODEL_LOCK:
        return probe_clip(loaded.model, sample.clips[:1], class_names=loaded.info.class_names, true_label=true_label,
                          model_id=name, arch=loaded.info.arch, precision=precision)


def _cell(row: pd.Series, scored: bool) -> str:
    if not row["applicable"]:
        return "not applicable"
    text = f"{row['pred_class']} ({row['pred_prob']:.0%})"
    if row["probe"] != REFERENCE and row["changed"]:
        text += " · changed"
    if scored:
        text += " · right" if row["correct"] else " · wrong"
    return text


def explorer_section(chosen, clip: FileKey, true_label: int | None) -> None:  # noqa: ANN001 - ui.Selection
    """The Explorer's probe section for one clip: both models' predictions under every probe, side by side,
    in an expander of its own. Runs the models only when switched on, so the Explorer stays as fast."""
    from kpsem.app_support import ui

    with st.expander("Motion probes on this clip", icon=":material/science:"), ui.guard("Motion probes"):
        st.caption("The clip with its frames reversed, shuffled, frozen on the middle frame, at half the frame rate, "
                   "or mirrored (scored against the mirror-image label), and MF-KPSEM with parts of its module "
                   "switched off. The whole split: the Motion probes page.")
        if not st.toggle("Run the probes on this clip", key="ex_probes_on"):
            return
        tables = []
        for slot in (chosen.baseline, chosen.kpsem):
            info = slot.info
            tables.append(_clip_rows(slot.key, chosen.device, clip, info.clip_frames, info.clip_size, tuple(info.mean),
                                     tuple(info.std), true_label, slot.model_id, chosen.precision))
        scored = true_label is not None
        shown = pd.DataFrame({"probe": [REFERENCE, *PROBES]})
        shown["what it does"] = shown["probe"].map(PROBE_TEXT)
        for slot, table in zip((chosen.baseline, chosen.kpsem), tables):
            cells = {row["probe"]: _cell(row, scored) for _, row in table.iterrows()}
            shown[slot.model_id] = shown["probe"].map(cells)
        if scored:
            names = list(chosen.kpsem.info.class_names)
            mirror = tables[0].loc[tables[0]["probe"] == "mirror", "target_class"]
            if len(mirror) and mirror.iloc[0] != names[true_label]:
                st.caption(f"Mirrored, this clip should read **{escape_markdown(mirror.iloc[0])}** (the mirror image "
                           f"of {escape_markdown(names[true_label])}).")
        st.dataframe(shown, hide_index=True, width="stretch")
