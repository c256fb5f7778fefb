"""What every page shares on screen: the sidebar (checkpoints, data set, device), the checks a page makes before
it computes, and :func:`guard`, which turns any failure inside a page section into one ``st.error`` line."""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import streamlit as st

from kpsem.app_support.caching import services
from kpsem.app_support.caching.uploads import startup_sweep, stored_upload
from kpsem.app_support.choices.config import (
    DemoPaths,
    PathNotAllowed,
    ServerSettings,
    apply_upload_limit,
    load_settings,
)
from kpsem.app_support.choices.selection import ROLES, SOURCES, DataChoice, ModelSlot, Selection
from kpsem.app_support.choices.sources import (
    CHECKPOINT_UPLOAD_TYPES,
    MAX_NAMES_FILE_MB,
    NAMES_UPLOAD_TYPES,
    ClassNamesError,
    UploadError,
    check_upload,
    device_label,
    device_options,
    file_key,
    match_classes,
    names_for_data,
    names_for_model,
    read_class_names,
    resolve_device,
    user_path,
)
from kpsem.app_support.drawing.text import class_names_source, escape_markdown
from kpsem.constants import are_placeholder_names
from kpsem.pairing import check_pair

__all__ = ["guard", "friendly", "sidebar", "require_models", "require_scorable", "settings"]

log = logging.getLogger("kpsem.app")


def friendly(error: BaseException) -> str:
    """The one-line message a user sees for an error (our errors already say what to do)."""
    from kpsem.checkpoint import CheckpointError
    from kpsem.data import AnnotationError, VideoError

    known = (CheckpointError, VideoError, AnnotationError, PathNotAllowed, UploadError, FileNotFoundError, ValueError)
    text = _as_uploaded(str(error).strip() or type(error).__name__)
    if isinstance(error, known):
        return text
    return f"{type(error).__name__}: {text.splitlines()[0]}"


def _as_uploaded(text: str) -> str:
    """A message about an upload names the file the user uploaded, not its stored copy (a temporary
    folder and a content hash say nothing to the user and reveal the server's layout)."""
    try:
        names = dict(st.session_state.get("_upload_names", {}))
    except Exception:  # noqa: BLE001 - outside a Streamlit session there are no uploads to rename
        return text
    for stored, name in sorted(names.items(), key=lambda item: -len(item[0])):  # longest first: no partial hits
        text = text.replace(stored, name)
    return text


@contextmanager
def guard(what: str) -> Iterator[None]:
    """Show a failure in this section as ``st.error`` (details go to the server log) and carry on.

    Streamlit's own control flow (``st.stop``, ``st.rerun``, ``st.switch_page``) derives from
    BaseException, not Exception, so it passes through untouched."""
    try:
        yield
    except Exception as error:  # noqa: BLE001 - the whole point: no page ever shows a traceback
        log.warning("%s failed: %s\n%s", what, error, traceback.format_exc())
        st.error(f"{what}: {escape_markdown(friendly(error))}", icon=":material/error:")


def settings() -> ServerSettings:
    """Server settings (environment, then .streamlit/secrets.toml), read on every run: cheap, and a
    changed setting takes effect without restarting the server (Streamlit's upload cap included)."""
    config = load_settings()
    apply_upload_limit(config)
    startup_sweep()
    return config


def _checkpoint_slot(role: str, demo: DemoPaths, config: ServerSettings, device: str) -> ModelSlot:
    box = st.sidebar.container(border=True)
    source = box.radio(ROLES[role], SOURCES, key=f"{role}_source", horizontal=True)
    slot = ModelSlot(role=role, source=source)
    try:
        if source == "bundled demo":
            path = demo.require().baseline if role == "baseline" else demo.require().kpsem
        elif source == "path":
            text = box.text_input("Checkpoint path", key=f"{role}_path", placeholder="/data/runs/final.pt")
            if not text.strip():
                slot.error = "type the path of a checkpoint (.pt)"
                box.info(slot.error)
                return slot
            path = user_path(text, config, what="checkpoint")
        else:
            upload = box.file_uploader("Checkpoint file", type=list(CHECKPOINT_UPLOAD_TYPES), key=f"{role}_upload",
                                       max_upload_size=config.max_upload_mb)
            if upload is None:
                slot.error = "upload a checkpoint (.pt)"
                box.info(slot.error)
                return slot
            path = stored_upload(upload, "checkpoints", config.max_upload_mb)
        slot.key = file_key(path)
        slot.loaded = services.load_model(slot.key, device)
        caption = box.empty()  # filled once a class names file is (or is not) applied
        if source != "bundled demo":  # the bundled demo names its classes
            _apply_model_names(slot, box, config, device)
        info = slot.info
        names = class_names_source(slot.names_file, info.class_names)
        caption.caption(f"**{escape_markdown(info.arch)}** · {info.num_classes} classes ({names}) · clip "
                        f"{info.clip_frames}×{info.clip_size}×{info.clip_size} · "
                        f"{escape_markdown(slot.name, code=True)}")
    except Exception as error:  # noqa: BLE001 - shown in the sidebar; pages then say what is missing
        slot.key, slot.loaded, slot.error = None, None, friendly(error)
        box.error(escape_markdown(slot.error), icon=":material/error:")
    return slot


def _names_upload(where, key: str, config: ServerSettings) -> tuple[list[str], str] | None:  # noqa: ANN001 - container
    """(class names, file name) of a class names file uploaded at ``key``; None when none is; raises
    ClassNamesError or UploadError (each names the file)."""
    cap = min(config.max_upload_mb, MAX_NAMES_FILE_MB)
    upload = where.file_uploader("Class names file (.txt: one name per line; .csv: id,name)",
                                 type=list(NAMES_UPLOAD_TYPES), key=key, max_upload_size=cap,
                                 help="name i labels output i (or label i of the data set): the order matters")
    if upload is None:
        return None
    check_upload(upload.name, upload.size, max_mb=cap, types=NAMES_UPLOAD_TYPES)
    return read_class_names(upload.getvalue(), upload.name), upload.name


def _apply_model_names(slot: ModelSlot, box, config: ServerSettings, device: str) -> None:  # noqa: ANN001 - container
    """Offer a class names file for a checkpoint (a published MFNet has none) and apply one that fits.

    A refused file leaves the checkpoint's own names in place, with the reason beside the box."""
    info = slot.info
    label = "Class names file" + (" (the checkpoint has none)" if are_placeholder_names(info.class_names) else "")
    with box.expander(label, icon=":material/label:"):
        try:
            given = _names_upload(st, f"{slot.role}_names", config)
            if given is None:
                return
            names, filename = given
            names = names_for_model(names, info.num_classes, filename=filename, role="checkpoint")
        except (ClassNamesError, UploadError) as error:
            box.error(f"Class names file refused: {escape_markdown(error)}. The checkpoint's own names are shown.",
                      icon=":material/error:")
            return
    slot.key = (*slot.key[:3], tuple(names))
    slot.loaded = services.load_model(slot.key, device)
    slot.names_file = filename


def _data_choice(demo: DemoPaths, config: ServerSettings) -> DataChoice:
    from kpsem.data import LAYOUTS, SPLITS

    box = st.sidebar.container(border=True)
    source = box.radio("Data set", ("bundled demo", "path"), key="data_source", horizontal=True)
    choice = DataChoice(source=source)
    try:
        if source == "bundled demo":
            choice.root = demo.require().clips
        else:
            text = box.text_input("Data set folder", key="data_path", placeholder="/data/UCF101")
            if not text.strip():
                choice.error = "type the folder of a data set (HMDB51, UCF101, Kinetics, SSv1 or class folders)"
                box.info(choice.error)
                return choice
            choice.root = user_path(text, config, what="data set folder", must_be="dir")
        layout_pick = box.selectbox("Layout", ("detect", *LAYOUTS), key="data_layout")
        cols = box.columns(2)
        choice.split = cols[0].selectbox("Split", SPLITS, index=SPLITS.index("test"), key="data_split")
        stamp = int(os.stat(choice.root).st_mtime_ns)
        # what a typed data set points at stays inside the browse roots too; the bundled demo is trusted
        roots = (tuple(str(r) for r in config.browse_roots)
                 if source == "path" and config.browse_roots is not None else None)
        choice.layout = (services.detect_data_layout(str(choice.root), stamp, roots) if layout_pick == "detect"
                         else layout_pick)
        choice.detected = layout_pick == "detect"
        if choice.layout in ("hmdb51", "ucf101"):
            choice.split_id = int(cols[1].selectbox("Official split", (1, 2, 3), key="data_split_id"))
        choice.index = services.open_data(str(choice.root), choice.layout, choice.split, choice.split_id, stamp,
                                          roots)
        caption = box.empty()  # filled once a class names file is (or is not) applied
        note = _apply_data_names(choice, box, config) if source == "path" else None
        index = choice.index
        how = "detected" if choice.detected else "chosen"
        names = f" (names from {escape_markdown(choice.names_file, code=True)})" if choice.names_file else ""
        caption.caption(f"**{index.layout}** layout ({how}) · {index.split} split · **{len(index.videos)}** clips "
                        f"found, {len(index.skipped)} skipped · {index.num_classes} classes{names}")
        if note:
            box.caption(escape_markdown(note))
        if index.skipped or index.notes:
            with box.expander(f"Skipped ({len(index.skipped)}) and notes"):
                for note in index.notes:
                    st.caption(escape_markdown(note))
                for path, reason in index.skipped[:50]:
                    st.caption(f"{escape_markdown(path, code=True)}: {escape_markdown(reason)}")
        if not index.videos:
            box.warning("this split has no usable videos")
    except Exception as error:  # noqa: BLE001
        choice.index, choice.error = None, friendly(error)
        box.error(escape_markdown(choice.error), icon=":material/error:")
    return choice


def _apply_data_names(choice: DataChoice, box, config: ServerSettings) -> str | None:  # noqa: ANN001 - container
    """Offer a class names file for a data set whose folders or lists carry none; apply one that fits and
    return its note (numbered folders). The cached index is shared: a copy carries the names."""
    import dataclasses

    index = choice.index
    with box.expander("Class names file for the data set", icon=":material/label:"):
        try:
            given = _names_upload(st, "data_names", config)
            if given is None:
                return None
            names, filename = given
            names, note = names_for_data(list(index.class_names), names, filename=filename)
        except (ClassNamesError, UploadError) as error:
            box.error(f"Class names file refused: {escape_markdown(error)}. The data set's own names are shown.",
                      icon=":material/error:")
            return None
    choice.index = dataclasses.replace(index, class_names=names)
    choice.names_file = filename
    return note


def sidebar() -> Selection:
    """Draw the shared sidebar and remember the selection for the pages of this run."""
    config = settings()
    st.sidebar.markdown("### KPSEM Studio")
    demo = services.demo_paths()
    option = st.sidebar.selectbox("Device", device_options(), format_func=device_label, key="device")
    try:
        device = resolve_device(option)
    except ValueError as error:
        st.sidebar.error(escape_markdown(error))
        device = "cpu"
    precision = st.sidebar.selectbox(
        "Precision", ("auto", "fp32", "bf16", "fp16"), key="precision",
        help="auto: bf16 autocast on CUDA and on CPUs with native bf16, fp32 elsewhere; the Explorer's footer "
             "says which ran and why")
    baseline = _checkpoint_slot("baseline", demo, config, device)
    kpsem = _checkpoint_slot("kpsem", demo, config, device)
    data = _data_choice(demo, config)
    chosen = Selection(baseline=baseline, kpsem=kpsem, data=data, device=device, demo=demo, settings=config,
                       precision=precision)
    if baseline.loaded is not None and kpsem.loaded is not None:
        chosen.pair = check_pair(baseline.info, kpsem.info)
        for message in chosen.pair.errors:
            st.sidebar.error(escape_markdown(message), icon=":material/error:")
        for message in chosen.pair.warnings:
            st.sidebar.warning(escape_markdown(message), icon=":material/warning:")
        if data.index is not None and chosen.pair.ok:
            chosen.classes = match_classes(kpsem.info.class_names, data.index.class_names)
            if not chosen.classes.scorable:
                st.sidebar.warning(escape_markdown(chosen.classes.message), icon=":material/warning:")
            elif chosen.classes.message:
                st.sidebar.caption(escape_markdown(chosen.classes.message))
    if config.browse_roots == ():
        st.sidebar.caption("Typed paths are off on this server: the bundled demo and uploads only")
    elif config.restricted:
        roots = ", ".join(escape_markdown(root, code=True) for root in config.browse_roots)
        st.sidebar.caption(f"Paths are limited to: {roots}")
    st.session_state["_selection"] = chosen  # the latest run's, for a caller outside the page (a benchmark)
    return chosen


def require_scorable(chosen: Selection) -> bool:
    """Say plainly, before anything is computed, when the data set's labels cannot score the models'
    predictions (other classes, or the same ones named or ordered differently); True when they can."""
    match = chosen.classes
    if match is None or match.scorable:
        return True
    text = match.message[:1].upper() + match.message[1:]
    if match.model_classes != match.data_classes:
        text += ". A class names file cannot help here: it renames classes, it does not add or remove them"
    st.warning(escape_markdown(text) + ".", icon=":material/rule:")
    return False


def require_models(chosen: Selection) -> bool:
    """Say plainly what is missing when the two models cannot be used; True when they can."""
    missing = [f"{ROLES[s.role]}: {s.error}" for s in (chosen.baseline, chosen.kpsem) if s.loaded is None]
    for message in missing:
        st.warning(escape_markdown(message), icon=":material/arrow_back:")
    for message in chosen.pair.errors:
        st.error(escape_markdown(message), icon=":material/error:")
    return not missing and chosen.pair.ok


def stopped_notice(prefix: str) -> None:
    """Say once that the last computation started by :func:`compute_button` ``prefix`` was stopped.

    Any click (Cancel included) ends the script run that computes, so the flag the run left set is the sign.
    """
    if st.session_state.pop(f"_{prefix}_running", False):
        st.warning("The computation was stopped; nothing was saved.", icon=":material/stop_circle:")


def compute_button(label: str, prefix: str, run: Callable[[Callable[[str, int, int], None]], None]) -> None:
    """A button that runs ``run(progress)`` under a progress bar with a Cancel button, then shows the result.

    ``progress(name, done, total)`` reports clips done of one model. Widget keys: ``{prefix}_compute`` and
    ``{prefix}_cancel``; :func:`stopped_notice` with the same prefix tells of an interrupted run.
    """
    if not st.button(label, type="primary", key=f"{prefix}_compute", icon=":material/play_arrow:"):
        return
    st.button("Cancel", key=f"{prefix}_cancel", icon=":material/stop:")
    st.session_state[f"_{prefix}_running"] = True
    bar = st.progress(0.0, text="starting ...")

    def tick(name: str, done: int, total: int) -> None:
        bar.progress(done / total, text=f"{escape_markdown(name)}: {done} of {total} clips")

    run(tick)
    st.session_state.pop(f"_{prefix}_running", None)
    st.rerun()
