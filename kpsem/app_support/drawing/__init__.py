"""Results turned into what a page shows, without Streamlit: frames and colour bars as images, charts as
plotly figures, tables as data frames, text from files escaped so it never becomes markup.

Nothing here imports Streamlit, :mod:`..caching` or :mod:`..widgets`; any of them may import this.
"""

__all__: list[str] = []
