"""KPSEM Studio: ``streamlit run app.py``. A router over the pages in ``pages/`` with a shared sidebar.

The pages draw; :mod:`kpsem.app_support` resolves choices and caches the library's computations.
"""

import streamlit as st

from kpsem.app_support import ui

st.set_page_config(page_title="KPSEM Studio", page_icon=":material/motion_photos_on:", layout="wide")

navigation = st.navigation([
    st.Page("pages/explorer.py", title="Explorer", icon=":material/movie:", default=True),
    st.Page("pages/compare.py", title="Class comparison", icon=":material/bar_chart:"),
    st.Page("pages/probes.py", title="Motion probes", icon=":material/science:"),
    st.Page("pages/figures.py", title="Figure studio", icon=":material/image:"),
    st.Page("pages/models.py", title="Models", icon=":material/memory:"),
    st.Page("pages/study.py", title="Design studies", icon=":material/query_stats:"),
])
with ui.guard("Sidebar"):
    ui.sidebar()
navigation.run()
