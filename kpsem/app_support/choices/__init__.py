"""What the user chose and what the server allows, resolved and checked without Streamlit.

Server settings and the bundled demo (:mod:`.config`), checkpoints, data sets, uploads, class names files and
devices (:mod:`.sources`), the sidebar's resolved selection (:mod:`.selection`), the link's query parameters
(:mod:`.url_state`), the key point settings the Explorer shares with the Figure studio
(:mod:`.keypoint_settings`), and where a selection's predictions and probe tables live (:mod:`.stored_results`).

Nothing here imports Streamlit at module level (:func:`.config.apply_upload_limit` imports its config
inside the call); any package of the app may import this one.
"""

__all__: list[str] = []
