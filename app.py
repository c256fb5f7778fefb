"""KPSEM Studio: ``streamlit run app.py``. A router over the pages in ``pages/``, and nothing else.

Each page starts with :func:`kpsem.app_support.widgets.page_start.page_start`, which draws the shared sidebar
and keeps the URL in step, so a page works the same run by this router, alone in Streamlit's pages-folder
mode, or alone under ``AppTest.from_file("pages/<page>.py")``.

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
pages = [
    st.Page("pages/explorer.py", title="Explorer", icon=":material/movie:", default=True),
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

navigation.run()
