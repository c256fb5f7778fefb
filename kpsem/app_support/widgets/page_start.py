"""The first call of every page: the shared sidebar and the link's state, the same whichever way the page runs.

A page runs under ``app.py``'s router, alone in Streamlit's pages-folder mode (a new server's first run), or
alone under ``AppTest.from_file("pages/<page>.py")``; each draws its own sidebar through :func:`page_start`,
so none depends on a script that ran before it.

Why the sidebar is drawn under the main script's identity: Streamlit gives each widget an id that includes
the page it is drawn on, and forgets a widget's value once a run does not draw that id. Drawn by each page
under its own identity, the sidebar's checkpoints, data set and uploads would reset on every change of page.
The router used to draw it before ``navigation.run()`` for that reason; :func:`_shared_across_pages` gives the
same ids from inside a page (tests/test_app.py switches pages with a path and an upload chosen).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping

import streamlit as st

from kpsem.app_support.choices import url_state
from kpsem.app_support.choices.config import ServerSettings
from kpsem.app_support.choices.selection import Selection
from kpsem.app_support.drawing.text import escape_markdown
from kpsem.app_support.widgets import ui

__all__ = ["page_start", "first_run", "remember", "show_notes"]

log = logging.getLogger("kpsem.app")


def page_start(title: str, *, explorer: bool = False, needs: str = "selection") -> Selection | None:
    """Draw the shared sidebar and the page's header, apply a link on the session's first run and keep the
    URL in step; return the sidebar's selection.

    ``needs``: what the page cannot draw without, else it stops after the header: ``"selection"`` (the
    sidebar worked; its error is shown), ``"models"`` (both checkpoints loaded; what is missing is said), or
    ``"nothing"`` (the page draws anyway and may get None). ``explorer``: this page is the Explorer, whose
    clip, frame and overlay a link may name; other pages drop those parameters from the URL."""
    chosen = _sidebar(explorer)
    st.header(title, anchor=False)
    if needs != "nothing" and (chosen is None or (needs == "models" and not ui.require_models(chosen))):
        st.stop()
    return chosen


def _sidebar(explorer: bool) -> Selection | None:
    """The sidebar's selection, or None when the sidebar itself failed (the error is shown)."""
    with ui.guard("Link"):
        first_run(ui.settings(), explorer=explorer)  # a reload or a shared link: the view it names
    chosen = None
    with ui.guard("Sidebar"), _shared_across_pages():
        chosen = ui.sidebar()
        with ui.guard("Link"):
            info = chosen.kpsem.info if chosen.kpsem.loaded is not None else None
            url_state.apply_frame(st.session_state, info.clip_frames if info is not None else None)
            show_notes()
            remember(url_state.sidebar_params(chosen, st.session_state))
            if not explorer:  # the clip, frame and overlay belong to the Explorer's view
                remember(dict.fromkeys(url_state.VIEW_PARAMS))
    return chosen


@contextlib.contextmanager
def _shared_across_pages() -> Iterator[None]:
    """Widgets drawn inside get the ids they would get in the main script, the same on every page (see the
    module's docstring)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    scoped = getattr(ctx, "run_with_active_hash", None)
    if ctx is None or scoped is None:  # bare Python, or a Streamlit without it: the sidebar is the page's own
        if ctx is not None:
            log.warning("ScriptRunContext has no run_with_active_hash: sidebar choices reset between pages")
        yield
        return
    with scoped(ctx.pages_manager.main_script_hash):
        yield


def first_run(settings: ServerSettings, *, explorer: bool) -> None:
    """On a session's first run, read the link and preset the widgets it chooses (no-op afterwards)."""
    if st.session_state.get(url_state.APPLIED):
        return
    st.session_state[url_state.APPLIED] = True
    state = url_state.parse(st.query_params.to_dict(), settings)
    for name in [name for name in st.query_params if name not in url_state.PARAMS]:  # said in a note
        del st.query_params[name]
    session: dict = {}
    url_state.apply(state, session, explorer=explorer)
    for key, value in session.items():
        st.session_state[key] = value


def remember(values: Mapping[str, str | None]) -> None:
    """Write ``values`` into the URL's query parameters (None removes one); only what changed is sent."""
    for name, value in values.items():
        if value is None:
            if name in st.query_params:
                del st.query_params[name]
        elif st.query_params.get(name) != value:
            st.query_params[name] = value


def show_notes() -> None:
    """Say what a link asked for that was not opened (until the user dismisses it)."""
    notes = st.session_state.get(url_state.NOTES)
    if not notes:
        return
    box = st.container()
    lines = "\n".join(f"- {escape_markdown(note)}" for note in notes)
    box.warning(f"This link asked for something that could not be opened:\n{lines}", icon=":material/link_off:")
    if box.button("Dismiss", key="url_notes_dismiss"):
        st.session_state.pop(url_state.NOTES, None)
        st.rerun()
