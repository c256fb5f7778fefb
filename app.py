"""KPSEM Studio: ``streamlit run app.py``. A router over the pages in ``pages/`` with a shared sidebar.

The pages draw; :mod:`kpsem.app_support` resolves choices and caches the library's computations.

Why the app draws its own list of pages: Streamlit's first run on a new server goes through its old
pages-folder mode (there is a ``pages/`` folder), which lists the raw file names (app, compare, explorer ...)
in the sidebar until this script calls ``st.navigation``. Measured in Chromium under load, that list showed
for 12 s while the library imported, and still for 0.6 s with ``st.navigation`` first. With
``client.showSidebarNavigation = false`` (.streamlit/config.toml) that mode lists nothing; Streamlit's own
navigation is then hidden too, so the pages are ``st.page_link`` rows at the top of the sidebar, drawn before
the library (and torch) is imported. tests/test_browser.py watches that no raw name ever shows.

The favicon is a file of the app, not a ``:material/...:`` name, which the browser would fetch from
fonts.gstatic.com (the icons inside the page use the Material Symbols font bundled with Streamlit).
"""

from pathlib import Path

import streamlit as st

HERE = Path(__file__).resolve().parent
st.set_page_config(page_title="KPSEM Studio", page_icon=str(HERE / "assets" / "favicon.png"), layout="wide")
explorer = st.Page("pages/explorer.py", title="Explorer", icon=":material/movie:", default=True)
pages = [
    explorer,
    st.Page("pages/compare.py", title="Class comparison", icon=":material/bar_chart:"),
    st.Page("pages/probes.py", title="Motion probes", icon=":material/science:"),
    st.Page("pages/figures.py", title="Figure studio", icon=":material/image:"),
    st.Page("pages/models.py", title="Models", icon=":material/memory:"),
    st.Page("pages/study.py", title="Design studies", icon=":material/query_stats:"),
    st.Page("pages/glossary.py", title="Glossary", icon=":material/menu_book:"),
]
navigation = st.navigation(pages, position="hidden")
for page in pages:  # the app's own list of pages (Streamlit's is off: see the module's docstring)
    st.sidebar.page_link(page)

from kpsem.app_support import ui, url_state  # noqa: E402 - after the navigation: see the module's docstring

on_explorer = navigation.title == explorer.title
with ui.guard("Link"):
    url_state.first_run(ui.settings(), explorer=on_explorer)  # a reload or a shared link: the view it names
with ui.guard("Sidebar"):
    chosen = ui.sidebar()
    with ui.guard("Link"):
        info = chosen.kpsem.info if chosen.kpsem.loaded is not None else None
        url_state.apply_frame(st.session_state, info.clip_frames if info is not None else None)
        url_state.show_notes()
        url_state.remember(url_state.sidebar_params(chosen, st.session_state))
        if not on_explorer:  # the clip, frame and overlay belong to the Explorer's view
            url_state.remember(dict.fromkeys(url_state.VIEW_PARAMS))
navigation.run()
