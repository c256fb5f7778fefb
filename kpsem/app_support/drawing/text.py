"""Text read from files, shown as text: class names, model ids, paths and messages never become markup.

Streamlit renders Markdown (with its own directives such as ``:red[...]`` and ``$...$`` for LaTeX) in
``st.markdown``, captions, alerts, headers, image captions, metric labels and values, widget labels,
radio and pill options, progress texts and help; a class name ``![x](http://host/x.png)`` would make
every browser showing it fetch that address. Plotly interprets ``<b>``, ``<a href>`` and friends in
titles, tick labels, legends and hover text. Every string that comes from a checkpoint, a table, an
annotation file, a path or an error message about them passes through one of these two functions at
the point where it meets such an element; selectbox and multiselect options and ``st.dataframe``
cells are shown as plain text by Streamlit and need neither.
"""

from __future__ import annotations

import html
import re

from kpsem.constants import are_placeholder_names

__all__ = ["escape_markdown", "escape_plotly"]

_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")  # every ASCII punctuation character: all may be escaped
_BACKTICKS = re.compile(r"`+")


def escape_markdown(text: object, *, code: bool = False) -> str:
    """``text`` as Markdown that shows exactly those characters (line breaks become spaces).

    Every ASCII punctuation character gets a backslash, which CommonMark defines as "this character,
    literally": no emphasis, link, image, HTML, entity, heading, list, directive or formula can start.
    ``code=True`` returns a complete inline code span instead (for paths), fenced with more backticks
    than the text holds, inside which nothing is interpreted.
    """
    plain = " ".join(str(text).splitlines())
    if not code:
        return _PUNCTUATION.sub(r"\\\1", plain)
    fence = "`" * (max((len(run) for run in _BACKTICKS.findall(plain)), default=0) + 1)
    pad = " " if plain.startswith("`") or plain.endswith("`") else ""
    return f"{fence}{pad}{plain}{pad}{fence}"


def escape_plotly(text: object) -> str:
    """``text`` for a plotly title, label, legend or hover: ``&``, ``<`` and ``>`` as the entities plotly
    turns back into those characters, so no tag is interpreted. Never put the result inside a hover
    template (``%{...}`` would still be filled in there); refer to the data instead (``%{x}``,
    ``%{fullData.name}``)."""
    return html.escape(str(text), quote=False)


def class_names_source(names_file: str | None, class_names: list[str]) -> str:
    """Where a model's class names come from, as Markdown: the sidebar and the Models page say it alike."""
    if names_file:
        return f"names from {escape_markdown(names_file, code=True)}"
    if are_placeholder_names(class_names):
        return escape_markdown("no class names in the file (class_0 …): load a class names file in the sidebar")
    return "names from the checkpoint"
