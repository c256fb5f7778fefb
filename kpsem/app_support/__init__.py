"""Support code for the Streamlit app (``app.py`` and ``pages/``): everything that is not drawing.

The pages draw; this package resolves the user's choices (checkpoints, data sets, devices, uploads),
runs the library's computations behind caches and locks, and turns results into images and tables.
Nothing here imports Streamlit at module level except :mod:`.state`, :mod:`.services` and :mod:`.ui`,
so the rest can be tested and benchmarked without a running app.
"""

__all__: list[str] = []
