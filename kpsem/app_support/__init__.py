"""Support code for the Streamlit app (``app.py`` and ``pages/``), cut by purpose into four packages.

* :mod:`.choices` resolves what the user chose and what the server allows: server settings and the bundled
  demo, checkpoint and data set paths, uploads checked, class names files, devices, the link's query
  parameters, the key point settings pages share, where a selection's stored results live.
* :mod:`.caching` runs the library's work behind Streamlit's caches and the model lock: models, data set
  indexes, clips, analyses, predictions and probe tables, faithfulness curves, figures, uploads.
* :mod:`.drawing` turns results into what a page shows: images, charts, tables and escaped text.
* :mod:`.widgets` draws with Streamlit: the shared sidebar and the start of every page, error guards, and
  the Explorer's sections.

Imports go one way: ``choices`` and ``drawing`` import only themselves and the library, ``caching`` may
import those two, and ``widgets`` may import everything; only ``pages/`` import ``widgets``. Only ``caching``
and ``widgets`` import Streamlit at module level, so ``choices`` and ``drawing`` are tested and benchmarked
without it (tests/test_app_render.py checks this). The library (everything in :mod:`kpsem` outside this
package) never imports it.
"""

__all__: list[str] = []
