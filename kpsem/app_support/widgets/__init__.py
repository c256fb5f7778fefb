"""What draws with Streamlit and is shared by the pages: :func:`.page_start.page_start` (the shared sidebar and
the link's state, first on every page), the sidebar and error guards (:mod:`.ui`), and the Explorer's
sections (:mod:`.video`, :mod:`.faithfulness`, :mod:`.probes`).

Imports Streamlit at module level; may import every other package of the app; only ``pages/`` and ``app.py``
import it.
"""

__all__: list[str] = []
