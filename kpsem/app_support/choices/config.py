"""Where the app finds its bundled demo, and the server settings a lab administrator may set.

Everything configurable lives here, in two typed dataclasses:

* :class:`DemoPaths` -- the bundled demo (``assets/demo/``: two checkpoints, a clip data set and two
  predictions tables), made by ``assets/demo/make_demo.sh`` and committed with the app.
* :class:`ServerSettings` -- which folders users may browse (``KPSEM_BROWSE_ROOTS``), the upload cap
  (``KPSEM_MAX_UPLOAD_MB``) and the cache folder (``KPSEM_CACHE_DIR``). Each is read from the
  environment first, then from ``[kpsem]`` in ``.streamlit/secrets.toml`` (``browse_roots``,
  ``max_upload_mb``, ``cache_dir``), then the defaults below.

``python -m kpsem.app_support.choices.config`` prints the upload cap in MB (``./studio app`` hands it to Streamlit's
``server.maxUploadSize`` before the server starts) and says on stderr what the settings allow.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "REPO_ROOT",
    "DemoPaths",
    "DEMO",
    "ServerSettings",
    "PathNotAllowed",
    "load_settings",
    "check_path",
    "default_cache_dir",
    "apply_upload_limit",
    "NO_ROOTS",
]

REPO_ROOT = Path(__file__).resolve().parents[3]  # the checkout: app.py, assets/, pages/


@dataclass(frozen=True)
class DemoPaths:
    """The files of one demo; every path is absolute."""

    root: Path  # folder holding everything below
    baseline: Path  # MFNet checkpoint
    kpsem: Path  # MF-KPSEM checkpoint
    clips: Path  # clip data set root (class-folder layout with train/val/test lists)
    predictions_baseline: Path  # `python -m kpsem evaluate` table of the baseline on the clips' test split
    predictions_kpsem: Path  # the same for MF-KPSEM
    split: str = "test"  # split the predictions were made on

    @classmethod
    def at(cls, root: Path) -> DemoPaths:
        root = Path(root).resolve()
        return cls(root=root, baseline=root / "mfnet.pt", kpsem=root / "mf_kpsem.pt", clips=root / "clips",
                   predictions_baseline=root / "predictions_mfnet.parquet",
                   predictions_kpsem=root / "predictions_mf_kpsem.parquet")

    def has_models_and_clips(self) -> bool:
        """Checkpoints and clips exist (predictions may be computed later)."""
        return self.baseline.is_file() and self.kpsem.is_file() and (self.clips / "test.txt").is_file()

    def require(self) -> DemoPaths:
        """These paths, or ``FileNotFoundError`` saying how to get the demo back (a trimmed checkout)."""
        if not self.has_models_and_clips():
            raise FileNotFoundError(f"the bundled demo is missing from {self.root} (its checkpoints or clips): "
                                    "restore it with `git checkout -- assets/demo`, remake it with "
                                    "assets/demo/make_demo.sh, or choose a path or an upload")
        return self


DEMO = DemoPaths.at(REPO_ROOT / "assets" / "demo")  # the trained demo (assets/demo/make_demo.sh)


def default_cache_dir() -> Path:
    """``$KPSEM_CACHE_DIR``, else ``$XDG_CACHE_HOME/kpsem-studio``, else ``~/.cache/kpsem-studio``."""
    if os.environ.get("KPSEM_CACHE_DIR"):
        return Path(os.environ["KPSEM_CACHE_DIR"]).expanduser().resolve()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return (base / "kpsem-studio").resolve()


class PathNotAllowed(ValueError):  # noqa: N818 - a refusal the user reads, not a program error
    """A path the server's settings do not let users open; the message names the allowed roots."""


@dataclass(frozen=True)
class ServerSettings:
    """What a lab server restricts. Without browse roots any readable path may be opened (local use);
    browse roots that name no folder open none (only the bundled demo and uploads)."""

    browse_roots: tuple[Path, ...] | None = None  # folders users may open paths under; None = no restriction
    max_upload_mb: int = 200  # largest upload, in MB (checkpoints, videos, tables)
    cache_dir: Path = field(default_factory=default_cache_dir)  # computed predictions, probes, uploads

    @property
    def restricted(self) -> bool:
        return self.browse_roots is not None


def _secrets() -> dict:
    """The ``[kpsem]`` table of ``.streamlit/secrets.toml`` (project, then home); {} when absent."""
    for folder in (Path.cwd() / ".streamlit", REPO_ROOT / ".streamlit", Path.home() / ".streamlit"):
        path = folder / "secrets.toml"
        if path.is_file():
            try:
                table = tomllib.loads(path.read_text()).get("kpsem", {})
            except (tomllib.TOMLDecodeError, OSError):
                continue
            if isinstance(table, dict):
                return table
    return {}


def load_settings(environ: dict[str, str] | None = None) -> ServerSettings:
    """Read the settings from ``environ`` (default ``os.environ``), then secrets, then defaults.

    ``KPSEM_BROWSE_ROOTS`` lists folders separated by ``os.pathsep`` (``:`` on Linux). Set but naming no
    folder (empty, ``:``, spaces) it opens no typed path at all: whoever set it meant to restrict, and an
    empty value must not open the whole disk.
    """
    env = os.environ if environ is None else environ
    secrets = _secrets()
    roots: list[str] | None = None  # None: not set anywhere, no restriction
    if env.get("KPSEM_BROWSE_ROOTS") is not None:
        roots = env["KPSEM_BROWSE_ROOTS"].split(os.pathsep)
    elif "browse_roots" in secrets:
        value = secrets["browse_roots"]
        roots = [value] if isinstance(value, str) else [str(r) for r in value]
    upload = env.get("KPSEM_MAX_UPLOAD_MB") or secrets.get("max_upload_mb") or ServerSettings.max_upload_mb
    try:
        upload_mb = int(upload)
    except (TypeError, ValueError):
        raise ValueError(f"KPSEM_MAX_UPLOAD_MB must be a whole number of megabytes; got {upload!r}") from None
    if upload_mb < 1:
        raise ValueError(f"KPSEM_MAX_UPLOAD_MB must be at least 1; got {upload_mb}")
    cache = env.get("KPSEM_CACHE_DIR") or secrets.get("cache_dir")
    return ServerSettings(
        browse_roots=None if roots is None else tuple(Path(r.strip()).expanduser().resolve()
                                                      for r in roots if r.strip()),
        max_upload_mb=upload_mb,
        cache_dir=Path(cache).expanduser().resolve() if cache else default_cache_dir(),
    )


NO_ROOTS = ("this server opens no typed paths: its browse roots (KPSEM_BROWSE_ROOTS, or browse_roots in "
            ".streamlit/secrets.toml) name no folder; use the bundled demo or upload the file")


def check_path(text: str | os.PathLike, settings: ServerSettings, *, what: str = "path") -> Path:
    """The resolved path ``text`` names (symlinks followed), or :class:`PathNotAllowed`.

    Under browse roots, the resolved path must lie inside one of them, so ``..`` and symlinks cannot
    leave them. Existence is the caller's to check (with its own message). A refusal names the path as
    typed, not where its symlinks lead: it tells nothing about what exists outside the roots.
    """
    raw = str(text).strip()
    if not raw:
        raise PathNotAllowed(f"the {what} is empty; type a path")
    if settings.browse_roots == ():
        raise PathNotAllowed(NO_ROOTS)
    typed = Path(os.path.normpath(Path(raw).expanduser().absolute()))
    path = typed.resolve()
    if settings.browse_roots is not None and not any(path.is_relative_to(root) for root in settings.browse_roots):
        allowed = ", ".join(str(r) for r in settings.browse_roots)
        raise PathNotAllowed(f"{typed} is outside the folders this server lets you open ({allowed}); "
                             "choose a path inside one of them or upload the file")
    return path


def apply_upload_limit(settings: ServerSettings) -> None:
    """Make Streamlit's own upload endpoint refuse bodies over the cap.

    Why: ``file_uploader(max_upload_size=)`` is checked in the browser only; a client that posts straight
    to ``/_stcore/upload_file/<session>/<file>`` meets ``server.maxUploadSize`` alone. The endpoint reads
    the option on every request, so setting it on every run also covers ``streamlit run app.py`` started
    without ``./studio app`` (which sets it before the server starts).
    """
    from streamlit import config as streamlit_config

    if streamlit_config.get_option("server.maxUploadSize") != settings.max_upload_mb:
        streamlit_config.set_option("server.maxUploadSize", settings.max_upload_mb, "KPSEM_MAX_UPLOAD_MB")


def _main() -> int:
    """For ``./studio app``: the upload cap on stdout, what the settings allow on stderr; 2 when invalid."""
    import sys

    try:
        settings = load_settings()
    except ValueError as error:
        print(f"kpsem studio: {error}", file=sys.stderr)
        return 2
    if settings.browse_roots is None:
        paths = "any path this account can read (set KPSEM_BROWSE_ROOTS on a shared server)"
    elif not settings.browse_roots:
        paths = "none, the browse roots name no folder (only the bundled demo and uploads)"
    else:
        paths = "only under " + os.pathsep.join(str(r) for r in settings.browse_roots)
    print(f"kpsem studio: typed paths: {paths}; uploads up to {settings.max_upload_mb} MB", file=sys.stderr)
    print(settings.max_upload_mb)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
