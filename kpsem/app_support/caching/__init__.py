"""The library's work for the app, behind Streamlit's caches and the model lock.

Models, data set indexes, clips, analyses and costs (:mod:`.services`), predictions tables computed on
request (:mod:`.predictions`), probe tables and one clip's probes (:mod:`.probes`), faithfulness curves
(:mod:`.faithfulness`), video pictures and the explanation MP4 (:mod:`.video`), the Figure studio's figures
(:mod:`.figures`), study folders (:mod:`.studies`) and each session's uploads (:mod:`.uploads`).

Imports Streamlit at module level (its cache decorators); may import :mod:`..choices` and :mod:`..drawing`,
never :mod:`..widgets`.
"""

__all__: list[str] = []
