"""Test tooling, not part of the installed package: the real app in a real browser, for
tests/test_browser.py and ``benchmarks/bench_app.py --browser``: ``streamlit run app.py`` on loopback,
driven through Debian's Chromium by Playwright.

Never ``playwright install``: the browser is the system's (``.ci/system-packages.sh`` installs it, and
``./studio test`` runs that where it can).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "CHROMIUM",
    "chromium_missing",
    "CHROMIUM_ARGS",
    "free_port",
    "served_app",
    "chromium_page",
    "wait_rendered",
    "timed_click",
    "footer",
]

CHROMIUM = "/usr/bin/chromium"  # Debian's package
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ROOT = Path(__file__).resolve().parents[1]

# Streamlit has finished the run (no element of the previous run still marked stale, no status widget:
# that one shows up late or not at all) and at least n pictures are decoded: then the page's text
# signature (every caption and image caption, in order: the clip's path, the frame shown, the footer
# "Device ... drawn in ... ms"), else null.
_RENDERED = """(n) => {
    const imgs = Array.from(document.querySelectorAll('[data-testid="stImage"] img'));
    if (document.querySelector('[data-stale="true"], [data-testid="stStatusWidget"]') || imgs.length < n) return null;
    if (!imgs.every(i => i.complete && i.naturalWidth > 0)) return null;
    const texts = document.querySelectorAll('[data-testid="stCaptionContainer"], [data-testid="stImageCaption"]');
    return Array.from(texts).map(t => t.innerText).join('\\n');
}"""


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here (what to install), or None when they can."""
    if not os.access(CHROMIUM, os.X_OK):
        return (f"Chromium is not installed at {CHROMIUM}: install Debian's package "
                "(`sudo apt-get install chromium`, or `bash .ci/system-packages.sh` as root), "
                "then run `./studio test -m browser`")
    try:
        import playwright.sync_api  # noqa: F401  (only whether it imports)
    except ImportError:
        return "the Python package playwright is missing: install the test extra (`./studio test` does)"
    return None


def free_port() -> int:
    """A TCP port nobody listens on now (loopback)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {process.returncode} before serving")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"streamlit did not answer at {url} within {timeout:.0f} s")


@contextmanager
def served_app(log_path: Path, *, env: dict[str, str] | None = None, timeout: float = 120.0) -> Iterator[str]:
    """Start ``streamlit run app.py`` on a free loopback port; yield its URL once it answers; stop it
    (by its PID) on leaving. The server's output goes to ``log_path``."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port",
             str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
             # no file watcher: an edit in the checkout during a test would put up "Source file changed",
             # and wait_rendered waits for the status widget to go
             "--server.fileWatcherType", "none"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ if env is None else env))
        try:
            _wait_healthy(url, server, timeout)
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=20)


@contextmanager
def chromium_page(width: int = 1400, height: int = 1800, *, evidence: Path | None = None) -> Iterator[object]:
    """A Playwright page in headless Chromium (the browser is closed on leaving).

    With ``evidence``, a Playwright trace is recorded; if the block raises, the trace
    (``trace.zip``, open it with ``playwright show-trace``) and a screenshot of the page are saved there
    so that a flaky failure can be read afterwards. A passing block leaves nothing behind.
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": width, "height": height})
        if evidence is not None:
            context.tracing.start(screenshots=True, snapshots=True)
        page = context.new_page()
        try:
            yield page
        except BaseException:
            if evidence is not None:
                _keep_evidence(page, context, evidence)
            raise
        else:
            if evidence is not None:
                context.tracing.stop()
        finally:
            browser.close()


def _keep_evidence(page, context, folder: Path) -> None:
    """Save what a failed browser test saw; never mask the failure itself."""
    folder.mkdir(parents=True, exist_ok=True)
    for save in (lambda: page.screenshot(path=str(folder / "screenshot.png"), full_page=True),
                 lambda: context.tracing.stop(path=str(folder / "trace.zip"))):
        try:
            save()
        except Exception as error:  # noqa: BLE001  (the page may be gone: keep whatever else can be saved)
            print(f"could not save browser evidence: {error}", file=sys.stderr)
    print(f"browser evidence (trace.zip, screenshot.png, streamlit.log) in {folder}", file=sys.stderr)


def _condition(images: int, unlike: str | None) -> tuple[str, list]:
    # an object (never '' or null: those are falsy), stamped with the page's clock when it first held
    return f"""([n, old]) => {{
        const now = ({_RENDERED})(n);
        return now !== null && now !== old ? {{signature: now, at: performance.now()}} : null;
    }}""", [images, unlike]


def wait_rendered(page, *, images: int, unlike: str | None = None, timeout_ms: int = 180_000,
                  settle_ms: int = 500, polling_ms: int = 250) -> str:
    """Wait until a run has finished and ``images`` pictures are decoded (and, with ``unlike``, the page's
    signature differs from that one); return the signature: every caption and image caption shown.

    Checked twice around a quiet moment (``settle_ms``): a rerun may start right after the first ends and
    swap image sources, and an image whose source was just swapped is ``complete`` before it is decoded.
    """
    condition, arg = _condition(images, unlike)
    handle = page.wait_for_function(condition, arg=arg, timeout=timeout_ms, polling=polling_ms)
    if settle_ms:
        page.wait_for_timeout(settle_ms)
        handle = page.wait_for_function(condition, arg=arg, timeout=timeout_ms, polling=polling_ms)
    return handle.json_value()["signature"]


def timed_click(page, target, *, images: int, unlike: str, polling_ms: int = 16,
                timeout_ms: int = 180_000) -> tuple[str, float]:
    """Click ``target`` (a locator) and time, on the page's own clock, from the click reaching the page
    until the run it starts has finished and every picture is decoded. Returns (signature, seconds).

    The page's clock leaves out Playwright's own work around a click (waiting for the element to be
    actionable, scrolling it into view: tens of milliseconds that no user waits for)."""
    return _timed(page, "pointerdown", target.click, images=images, unlike=unlike, polling_ms=polling_ms,
                  timeout_ms=timeout_ms)


def timed_key(page, target, key: str, *, images: int, unlike: str, polling_ms: int = 16,
              timeout_ms: int = 180_000) -> tuple[str, float]:
    """As :func:`timed_click`, for a key pressed on ``target`` (e.g. ArrowRight on a slider's thumb)."""
    return _timed(page, "keydown", lambda: target.press(key), images=images, unlike=unlike,
                  polling_ms=polling_ms, timeout_ms=timeout_ms)


def _timed(page, event: str, act, *, images: int, unlike: str, polling_ms: int, timeout_ms: int) -> tuple[str, float]:
    page.evaluate("""(event) => document.addEventListener(
        event, () => { window.__kpsemActAt = performance.now(); }, {capture: true, once: true})""", event)
    act()
    condition, arg = _condition(images, unlike)
    done = page.wait_for_function(condition, arg=arg, timeout=timeout_ms, polling=polling_ms).json_value()
    acted = page.evaluate("() => window.__kpsemActAt")
    return done["signature"], (done["at"] - acted) / 1000


def footer(signature: str) -> str:
    """The explorer's footer line in a page signature ("" when there is none)."""
    return next((line for line in signature.splitlines() if line.startswith("Device ")), "")
