"""The Figure studio's figures: a figure is a plain, JSON-able spec; building it calls the library's figure code
(:mod:`kpsem.explain.figures`) on cached analyses, and exporting writes PNG/PDF/SVG and a zip of all
with the JSON sidecar, so the same spec always remakes the same figure.

The spec's ``names`` are the models' names on every figure (the page fills them from the user's labels or
:func:`kpsem.explain.figures.display_names` of the checkpoints), never the tables' ids."""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import streamlit as st

from kpsem.app_support.caching import services

__all__ = ["FIGURES", "build_figure", "export_figure", "exported"]

FIGURES = {
    "fig7": "Fig. 7: per-class accuracy",
    "fig8": "Fig. 8: frames with top predictions",
    "fig9": "Fig. 9: Grad-CAM rows",
    "fig10": "Fig. 10: key points and shifts",
    "centres": "Separation centres over time",
    "density": "Grad-CAM and key point density",
    "table1": "Table 1: parameters and multiply-adds",
    "confusion": "Confusion matrices",
}


def _names(spec: dict[str, Any]) -> tuple[str, str]:
    """(baseline, KPSEM) names of a spec; an older spec without them gets the paper's."""
    from kpsem.explain.figures import display_names

    given = [*list(spec.get("names") or [])[:2], None, None]
    return display_names(labels=[name or paper for name, paper in zip(given, ("MFNet", "MF-KPSEM"))])


def _pair(spec: dict[str, Any], clip: list, target: int | None = None) -> tuple[Any, Any]:
    """(PairAnalysis, ClipSample) of one clip, through the app's caches (``target``: default each prediction)."""
    c = spec["clip"]
    run, _ = services.analyse(tuple(spec["baseline"]), tuple(spec["kpsem"]), spec["device"], tuple(clip),
                              frames=c["frames"], size=c["size"], mean=tuple(c["mean"]), std=tuple(c["std"]),
                              cam_layer=spec["cam_layer"], target=target, weighting=spec["weighting"])
    sample = services.clip_sample(tuple(clip), c["frames"], c["size"], tuple(c["mean"]), tuple(c["std"]))
    return run.pair, sample


def _compared(spec: dict[str, Any]) -> Any:
    from kpsem.explain.compare import compare_predictions

    tables = [services.read_table(tuple(key)) for key in spec["tables"]]
    return compare_predictions(tables[0], tables[1], level=spec.get("level"))


def build_figure(spec: dict[str, Any]) -> Any:
    """The :class:`kpsem.explain.figures.PaperFigure` a spec describes."""
    from kpsem.explain.draw import KeyPointOptions
    from kpsem.explain.figures import (
        FigureStyle,
        figure_centres,
        figure_confusion,
        figure_cost_table,
        figure_density,
        figure_gradcam,
        figure_keypoints,
        figure_per_class_accuracy,
        figure_top_predictions,
    )

    style = FigureStyle(**spec["style"])
    kind, options = spec["kind"], spec.get("options", {})
    names = _names(spec)
    if kind == "fig7":
        from kpsem.explain.compare import per_class_accuracy

        compared = _compared(spec)
        return figure_per_class_accuracy(per_class_accuracy(compared), margin=options["margin"], mode=options["mode"],
                                         names=names, style=style)
    if kind == "confusion":
        return figure_confusion(_compared(spec), normalise=options["normalise"], names=names, style=style)
    if kind == "table1":
        c = spec["clip"]
        shape = (c["frames"], c["size"], c["size"])
        costs = [services.model_cost_cached(tuple(spec[role]), spec["device"], name, shape)
                 for role, name in zip(("baseline", "kpsem"), names)]
        return figure_cost_table(costs, style=style)
    if not spec["clips"]:
        raise ValueError("choose at least one clip")
    if kind == "fig8":
        pairs, frames = [], []
        for clip in spec["clips"]:
            pair, sample = _pair(spec, clip)
            pairs.append(pair)
            frames.append(sample.display[0][options["frame"] if options["frame"] < len(sample.display[0]) else -1])
        return figure_top_predictions(pairs, frames, true_labels=spec["true_labels"], topk=options["topk"],
                                      names=names, style=style)
    pair, sample = _pair(spec, spec["clips"][0])
    frames = options.get("frames") or None
    if kind == "fig9":
        common = None
        if options["difference"]:  # a difference of two CAMs needs one class: the true class when known
            from kpsem.explain.analysis import common_target

            names = pair.baseline.class_names
            truth = (spec.get("true_labels") or [None])[0]
            common = common_target(pair.baseline.probs, pair.kpsem.probs, names,
                                   true_label=names.index(truth) if truth in names else None,
                                   model_names=names)
            if not common.explains(pair):
                pair, sample = _pair(spec, spec["clips"][0], target=common.index)
        return figure_gradcam(pair, sample.display[0], frames=frames, shared_scale=options["shared"],
                              difference_row=options["difference"], common=common, names=names, style=style)
    if kind == "fig10":
        kp = KeyPointOptions(sets=tuple(options["sets"]), top_channels=options["top_channels"],
                             arrow_scale=options["arrow_scale"], max_arrows=options.get("max_arrows", 4),
                             split_lines=options.get("split_lines", True),
                             highlight_crossing=options.get("highlight_crossing", True),
                             centre_paths=options.get("centre_paths", True), tracks=options.get("tracks", False))
        return figure_keypoints(pair.kpsem, sample.display[0], frames=frames, options=kp, name=names[1], style=style)
    if kind == "centres":
        return figure_centres(pair.kpsem, sets=options.get("sets") or None, name=names[1], style=style)
    if kind == "density":
        return figure_density(pair.kpsem, sample.display[0], frames=frames, sets=options.get("sets") or None,
                              name=names[1], style=style)
    raise ValueError(f"unknown figure {kind!r}; choose one of {', '.join(FIGURES)}")


def export_figure(spec: dict[str, Any], *, preview_dpi: int = 110) -> dict[str, bytes]:
    """Files of a figure: ``png`` (at the style's DPI), ``pdf``, ``svg``, ``json`` (sidecar with the
    spec), ``zip`` (all of them) and ``preview`` (a PNG at ``preview_dpi`` for the screen)."""
    figure = build_figure(spec)
    out: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="kpsem-figure-") as folder:
        paths = figure.save(folder, formats=("png", "pdf", "svg"), extra={"app_spec": spec})
        for path in paths:
            out[Path(path).suffix.lstrip(".")] = Path(path).read_bytes()
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in paths:
                archive.write(path, arcname=Path(path).name)
            archive.writestr("settings.json", json.dumps(spec, indent=2) + "\n")
        out["zip"] = buffer.getvalue()
        preview = io.BytesIO()
        figure.figure.savefig(preview, format="png", dpi=preview_dpi)
        out["preview"] = preview.getvalue()
    out["name"] = figure.name.encode()
    return out


@st.cache_data(max_entries=32, show_spinner="Drawing the figure ...")
def exported(spec_json: str) -> dict[str, bytes]:
    """:func:`export_figure` of a spec given as sorted JSON (a hashable key: the same spec is drawn once)."""
    return export_figure(json.loads(spec_json))
