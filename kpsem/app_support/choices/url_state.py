"""A view as a link: the sidebar's checkpoints and data set, and the Explorer's clip, frame and overlay, kept in
the URL's query parameters, so that a reload or a shared link opens the same view.

The URL is untrusted input. :func:`parse` checks every value before anything uses it: a path must resolve
inside the server's browse roots and exist (the same check as a typed path, :func:`sources.user_path`), a
split, overlay or frame must be one the app offers, and text is bounded. A value that fails is dropped with a
note saying why (the page shows it) and the default takes its place; nothing in a link raises.

Parameters (all optional; absent means the default, so links stay short):

=========  =======================================================  ============
name       value                                                    default
=========  =======================================================  ============
baseline   ``demo`` or the path of a checkpoint                     ``demo``
kpsem      ``demo`` or the path of a checkpoint                     ``demo``
data       ``demo`` or the folder of a data set                     ``demo``
split      ``train``, ``val`` or ``test``                           ``test``
clip       a clip id of the data set (as the Explorer lists it)     the first
frame      1 .. the models' clip frames                             1
overlay    ``gradcam``, ``keypoints`` or ``difference``             ``gradcam``
=========  =======================================================  ============

Uploads have no place in a link (their files live in one session's folder): a view on an uploaded checkpoint
or video keeps the rest of its state in the URL and leaves that part out.

This module checks and translates; :mod:`kpsem.app_support.widgets.page_start` reads the link on a session's
first run and writes the URL as the view changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from kpsem.app_support.choices.config import ServerSettings

__all__ = ["PARAMS", "VIEW_PARAMS", "DEMO", "OVERLAYS", "SPLITS", "MAX_VALUE_CHARS", "APPLIED", "NOTES", "LinkState",
           "parse", "apply", "apply_frame", "sidebar_params", "overlay_param"]

PARAMS = ("baseline", "kpsem", "data", "split", "clip", "frame", "overlay")  # in the order a link lists them
VIEW_PARAMS = ("clip", "frame", "overlay")  # the Explorer's part
DEMO = "demo"  # the value that names the bundled demo
OVERLAYS = {"gradcam": "Grad-CAM", "keypoints": "Key points and shifts", "difference": "Difference"}  # value: label
SPLITS = ("train", "val", "test")
MAX_VALUE_CHARS = 4096  # a path or clip id longer than any real one (PATH_MAX is 4096 on Linux)
_WHAT = {"baseline": "baseline checkpoint", "kpsem": "KPSEM checkpoint", "data": "data set folder"}
APPLIED = "_url_applied"  # session flag: the link was read once (later runs follow the widgets)
NOTES = "_url_notes"  # session: what the link asked for that was not opened, and why


@dataclass
class LinkState:
    """What a link asks for, every value checked; None: not given (or refused, with a note)."""

    baseline: str | None = None  # DEMO or a resolved checkpoint path
    kpsem: str | None = None  # DEMO or a resolved checkpoint path
    data: str | None = None  # DEMO or a resolved data set folder
    split: str | None = None  # one of SPLITS
    clip: str | None = None  # a clip id, checked against the data set by the Explorer
    frame: int | None = None  # 1-based, checked against the models' clip frames by apply_frame
    overlay: str | None = None  # an OVERLAYS label
    notes: list[str] = field(default_factory=list)  # one sentence per refused value


def _one(value: object) -> str:
    """The value of a parameter given once; a repeated parameter counts by its last value (as st.query_params)."""
    if isinstance(value, list | tuple):
        value = value[-1] if value else ""
    return str(value)


def _text(name: str, raw: str, notes: list[str]) -> str | None:
    """``raw`` when it is plain text of a sane length; else a note and None."""
    if len(raw) > MAX_VALUE_CHARS:
        notes.append(f"the link's {name} is {len(raw)} characters long (at most {MAX_VALUE_CHARS}); it was ignored")
        return None
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in raw):
        notes.append(f"the link's {name} contains control characters; it was ignored")
        return None
    return raw.strip() or None


def _path(name: str, raw: str, settings: ServerSettings, notes: list[str]) -> str | None:
    """DEMO, or the resolved path ``raw`` names when the server lets users open it and it exists."""
    from kpsem.app_support.choices.sources import user_path

    text = _text(name, raw, notes)
    if text is None or text == DEMO:
        return text
    what = _WHAT[name]
    try:
        return str(user_path(text, settings, what=what, must_be="dir" if name == "data" else "file"))
    except (OSError, ValueError) as error:  # PathNotAllowed and FileNotFoundError included; a NUL byte too
        notes.append(f"the link's {what} was not opened ({error}); the bundled demo is shown instead")
        return None


def parse(params: Mapping[str, object], settings: ServerSettings) -> LinkState:
    """Check every query parameter of a link; unknown names are ignored with a note, bad values too."""
    state = LinkState()
    notes = state.notes
    unknown = sorted(str(name) for name in params if name not in PARAMS)
    if unknown:
        shown = ", ".join(repr(name[:40]) for name in unknown[:5]) + (" …" if len(unknown) > 5 else "")
        notes.append(f"the link's parameters {shown} mean nothing here (known: {', '.join(PARAMS)}); ignored")
    for name in ("baseline", "kpsem", "data"):
        if name in params:
            setattr(state, name, _path(name, _one(params[name]), settings, notes))
    if "split" in params:
        split = _text("split", _one(params["split"]), notes)
        if split is not None and split not in SPLITS:
            notes.append(f"the link's split {split[:40]!r} is not one of {', '.join(SPLITS)}; the test split is shown")
            split = None
        state.split = split
    if "clip" in params:
        state.clip = _text("clip", _one(params["clip"]), notes)
    if "frame" in params:
        raw = _text("frame", _one(params["frame"]), notes)
        if raw is not None:
            if raw.isascii() and raw.isdigit() and len(raw) <= 6 and int(raw) >= 1:
                state.frame = int(raw)
            else:
                notes.append(f"the link's frame {raw[:40]!r} is not a frame number (1, 2, …); frame 1 is shown")
    if "overlay" in params:
        raw = _text("overlay", _one(params["overlay"]), notes)
        if raw is not None:
            if raw in OVERLAYS:
                state.overlay = OVERLAYS[raw]
            else:
                notes.append(f"the link's overlay {raw[:40]!r} is not one of {', '.join(OVERLAYS)}; "
                             "Grad-CAM is shown")
    return state


def _slot_keys(name: str, value: str) -> dict[str, str]:
    """The sidebar's widget values that choose ``value`` for the checkpoint or data set ``name``."""
    prefix = "data" if name == "data" else name
    if value == DEMO:
        return {f"{prefix}_source": "bundled demo"}
    return {f"{prefix}_source": "path", f"{prefix}_path": value}


def apply(state: LinkState, session: dict, *, explorer: bool) -> None:
    """Preset the widgets a link chooses, before they are drawn, once per session (a reload is a new session).

    The clip goes through the Explorer's own request (``explorer_request``), which checks it against the
    sidebar's data set and says so when it is not there; the frame waits for :func:`apply_frame`, which knows
    how many frames the models read. The view (clip, frame, overlay) applies only when the link opens the
    Explorer."""
    for name in ("baseline", "kpsem", "data"):
        value = getattr(state, name)
        if value is not None:
            session.update(_slot_keys(name, value))
    if state.split is not None:
        session["data_split"] = state.split
    if explorer:
        if state.clip is not None:
            session["explorer_request"] = state.clip
        if state.overlay is not None:
            session["overlay"] = state.overlay
        if state.frame is not None:
            session["_url_frame"] = state.frame
    if state.notes:
        session[NOTES] = list(state.notes)


def apply_frame(session: dict, frames: int | None) -> None:
    """Set the Explorer's frame from the link once the models' clip length (``frames``) is known."""
    frame = session.pop("_url_frame", None)
    if frame is None:
        return
    if frames is not None and 1 <= frame <= frames:
        session["frame"] = frame
        return
    limit = f"the models read {frames} frames" if frames is not None else "no models are loaded"
    session.setdefault(NOTES, []).append(f"the link's frame {frame} is not shown ({limit}); frame 1 is shown")


def overlay_param(label: str) -> str | None:
    """The link value of an overlay label; None for the default (Grad-CAM) or a label without one."""
    value = next((key for key, shown in OVERLAYS.items() if shown == label), None)
    return None if value == "gradcam" else value


def sidebar_params(chosen: object, session: Mapping[str, object]) -> dict[str, str | None]:
    """The link values of the sidebar's choices (a ``ui.Selection``); None drops a parameter (the default, an
    upload, or a path that did not open)."""
    values: dict[str, str | None] = {}
    for name, slot in (("baseline", chosen.baseline), ("kpsem", chosen.kpsem)):  # type: ignore[attr-defined]
        values[name] = (str(slot.key[0]) if slot.source == "path" and slot.loaded is not None else None)
    data = chosen.data  # type: ignore[attr-defined]
    values["data"] = str(data.root) if data.source == "path" and data.index is not None else None
    split = session.get("data_split")
    values["split"] = str(split) if split in SPLITS and split != "test" else None
    return values
