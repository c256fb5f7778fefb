"""Each session's uploads: the folder they are stored in (removed with the session) and the stored copy of
each uploaded file, made once per file; and the sweep that removes what servers killed earlier left behind."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import streamlit as st

from kpsem.app_support.choices.sources import (
    UPLOAD_TYPES,
    UploadError,
    check_upload,
    save_upload,
    session_uploads,
    sweep_uploads,
)

__all__ = ["startup_sweep", "session_folder", "stored_upload"]

log = logging.getLogger("kpsem.app")


@st.cache_resource(show_spinner=False)
def startup_sweep() -> None:
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

