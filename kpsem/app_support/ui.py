"""Pieces every page shares: the sidebar (checkpoints, data set, device), the current selection, and
:func:`guard`, which turns any failure inside a page section into one ``st.error`` line."""

from __future__ import annotations

import logging
import os
import shutil
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st

from kpsem.app_support import services
from kpsem.app_support.config import DemoPaths, PathNotAllowed, ServerSettings, apply_upload_limit, load_settings
from kpsem.app_support.sources import (
    CHECKPOINT_UPLOAD_TYPES,
    MAX_NAMES_FILE_MB,
    NAMES_UPLOAD_TYPES,
    UPLOAD_TYPES,
    ClassMatch,
    ClassNamesError,
    ModelKey,
    UploadError,
    check_upload,
    device_label,
    device_options,
    file_key,
    match_classes,
    names_for_data,
    names_for_model,
    placeholder_names,
    read_class_names,
    resolve_device,
    save_upload,
    session_uploads,
    sweep_uploads,
    user_path,
)
from kpsem.app_support.text import escape_markdown
from kpsem.pairing import PairCheck, check_pair

__all__ = ["ModelSlot", "DataChoice", "Selection", "ROLES", "guard", "friendly", "sidebar", "selection",
           "require_models", "require_scorable", "session_folder", "stored_upload", "settings"]

log = logging.getLogger("kpsem.app")

ROLES = {"baseline": "Baseline checkpoint (MFNet)", "kpsem": "KPSEM checkpoint (MF-KPSEM)"}
SOURCES = ("bundled demo", "path", "upload")


@dataclass
class ModelSlot:
    """One checkpoint the user chose, loaded (or the reason it could not be)."""

    role: str  # "baseline" or "kpsem"
    source: str  # one of SOURCES
    key: ModelKey | None = None  # cache key of the file (and loaded class names); None when none is chosen or it failed
    loaded: object | None = None  # kpsem.checkpoint.LoadedCheckpoint
    error: str | None = None  # why it is unusable
    names_file: str | None = None  # the class names file applied to it, as the user named it

    @property
    def info(self):  # noqa: ANN201 - CheckpointInfo
        return self.loaded.info if self.loaded is not None else None  # type: ignore[attr-defined]

    @property
    def model(self):  # noqa: ANN201 - nn.Module
        return self.loaded.model if self.loaded is not None else None  # type: ignore[attr-defined]

    @property
    def name(self) -> str:
        return Path(self.key[0]).name if self.key else "(none)"

    @property
    def model_id(self) -> str:
        """The id ``kpsem evaluate`` and ``kpsem probe`` give this checkpoint's rows ('mfnet:mfnet')."""
        from kpsem.evaluate import default_model_id

        return default_model_id(self.name, self.info.arch)


@dataclass
class DataChoice:
    """The data split the user chose (or the reason it could not be opened)."""

    source: str  # "bundled demo" or "path"
    root: Path | None = None
    layout: str | None = None  # detected or chosen
    detected: bool = True  # whether the layout was detected
    split: str = "test"
    split_id: int = 1
    index: object | None = None  # kpsem.data.DatasetIndex (with the names of names_file when one is applied)
    error: str | None = None
    names_file: str | None = None  # the class names file applied to it, as the user named it

    @property
    def key(self) -> tuple:
        return (str(self.root), self.layout, self.split, self.split_id)


@dataclass
class Selection:
    """What every page works on."""

    baseline: ModelSlot
    kpsem: ModelSlot
    data: DataChoice
    device: str  # resolved torch device string
    demo: DemoPaths
    settings: ServerSettings
    precision: str = "auto"  # numeric precision of the analyses: auto, fp32, bf16 or fp16 (kpsem.precision)
    pair: PairCheck = field(default_factory=PairCheck)
    classes: ClassMatch | None = None  # data set classes vs models; None until both sides are loaded

    @property
    def data_warning(self) -> str | None:
        """Why the data set's labels cannot score the models' predictions, or None."""
        return self.classes.message if self.classes is not None and not self.classes.scorable else None

    @property
    def models_ready(self) -> bool:
        return self.baseline.loaded is not None and self.kpsem.loaded is not None and self.pair.ok

    @property
    def using_demo(self) -> bool:
        return self.baseline.source == self.kpsem.source == self.data.source == "bundled demo"


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
    _startup_sweep()
    return config


@st.cache_resource(show_spinner=False)
def _startup_sweep() -> None:
    """Once per server: remove the uploads that servers killed earlier left behind."""
    try:
        sweep_uploads()
    except (OSError, UploadError) as error:  # uploads say so when used; the rest of the app works on
        log.warning("could not sweep old uploads: %s", error)


def _active_session(session_id: str) -> bool:
    from streamlit.runtime import Runtime

    return not Runtime.exists() or Runtime.instance().is_active_session(session_id)


@st.cache_resource(scope="session", show_spinner=False,
                   on_release=lambda folder: shutil.rmtree(folder, ignore_errors=True))
def _session_uploads() -> Path:
    """This session's upload folder. Streamlit releases session-scoped resources when the session
    disconnects or shuts down, so the folder goes with the session, not only at a clean server exit.
    Making one also removes this server's folders of sessions that have ended, should a release be missed."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    sweep_uploads(_active_session)
    ctx = get_script_run_ctx()
    return session_uploads(ctx.session_id if ctx is not None else f"bare-{os.getpid()}")


def session_folder() -> Path:
    """This session's upload folder (``<temp>/kpsem-uploads-<uid>/<server>/<session>``), removed when
    the session ends, at a clean exit, or by the next server after a crash."""
    folder = _session_uploads()
    return folder if folder.is_dir() else session_uploads(folder.name)  # a temp cleaner may have removed it


def _type_checked_later(filename: str, allowed_types: Sequence[str]) -> None:
    """Stands in for Streamlit's server-side check of an uploaded file's extension: :func:`stored_upload`
    makes it instead (every upload here goes through it).

    Why: Streamlit checks while it reads the widget states, before the script runs, so its refusal of a
    file of the wrong type (from a client that skips the browser's check) would replace the whole page with
    "This app has encountered an error". stored_upload refuses it with a message in the section that asked
    for the file.
    """


def _check_types_in_stored_upload() -> None:
    from streamlit.elements.widgets import file_uploader

    if hasattr(file_uploader, "enforce_filename_restriction"):
        file_uploader.enforce_filename_restriction = _type_checked_later
    else:  # another Streamlit: its own check stays (tests/test_server_settings.py says what changed)
        log.warning("streamlit.elements.widgets.file_uploader has no enforce_filename_restriction any more")


_check_types_in_stored_upload()


def stored_upload(upload, kind: str, max_mb: int) -> Path:  # noqa: ANN001 - streamlit UploadedFile
    """The copy of an upload in this session's folder (``kind``: its sub-folder), written once per file.

    Why remembered by the uploader's file id: every rerun (each frame change) would otherwise copy the
    bytes and hash them again, a few hundred milliseconds for a large video or checkpoint."""
    stored = st.session_state.setdefault("_stored_uploads", {})
    key = (kind, upload.file_id)
    path = stored.get(key)
    if path is None or not path.is_file():
        check_upload(upload.name, upload.size, max_mb=max_mb, types=UPLOAD_TYPES.get(kind))  # before copying
        path = save_upload(upload.getvalue(), upload.name, session_folder() / kind, max_mb=max_mb)
        stored[key] = path
        names = st.session_state.setdefault("_upload_names", {})
        names[str(path)] = names[str(path.resolve())] = upload.name
    return path


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
        if slot.names_file:
            names = f"names from {escape_markdown(slot.names_file, code=True)}"
        elif placeholder_names(info.class_names):
            names = escape_markdown("no class names in the file (class_0 …): load a class names file")
        else:
            names = "names from the checkpoint"
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
    label = "Class names file" + (" (the checkpoint has none)" if placeholder_names(info.class_names) else "")
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
    st.session_state["_selection"] = chosen
    return chosen


def selection() -> Selection:
    """The selection the sidebar made in this run."""
    return st.session_state["_selection"]


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

