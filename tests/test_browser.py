"""The real app in a real browser: `streamlit run app.py` driven through Debian's Chromium by Playwright."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"  # Debian's package (.ci/system-packages.sh); never `playwright install`
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOT_COPY = Path("/tmp/kpsem-explorer.png")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {process.returncode} before serving")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"streamlit did not answer at {url} within {timeout:.0f} s")


def _wait_rendered(page, *, images: int, timeout_ms: int = 180_000) -> None:  # noqa: ANN001 - playwright Page
    """Streamlit has finished the run (no status widget) and the explorer's pictures are decoded.

    Checked twice around a quiet moment: a rerun may start right after the first ends and swap image
    sources, and an image whose source was just swapped is ``complete`` before it is decoded.
    """
    rendered = """(n) => {
        const imgs = Array.from(document.querySelectorAll('[data-testid="stImage"] img'));
        return !document.querySelector('[data-testid="stStatusWidget"]') && imgs.length >= n
               && imgs.every(i => i.complete && i.naturalWidth > 0);
    }"""
    page.wait_for_function(rendered, arg=images, timeout=timeout_ms, polling=250)
    page.wait_for_timeout(500)
    page.wait_for_function(rendered, arg=images, timeout=timeout_ms, polling=250)


@pytest.mark.browser
def test_explorer_in_chromium(app_demo, tmp_path):
    from playwright.sync_api import sync_playwright

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "streamlit.log", "w")
    env = {k: v for k, v in os.environ.items() if k not in ("KPSEM_BROWSE_ROOTS", "KPSEM_MAX_UPLOAD_MB")}
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_healthy(url, server)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1800})
                page.goto(url, wait_until="domcontentloaded")
                _wait_rendered(page, images=4)
                assert page.get_by_text("MF-KPSEM", exact=True).count() >= 1

                # pick another clip: the "Clip" select box, its last option
                first_path = page.locator("code", has_text="/clips/").first.inner_text()
                clip_box = page.locator('[data-testid="stSelectbox"]', has_text="Clip (")
                clip_box.click()
                options = page.get_by_role("option")
                options.first.wait_for(timeout=30_000)
                options.nth(min(3, options.count() - 1)).click()  # the list is virtual: pick a visible one
                page.wait_for_function(
                    """(old) => Array.from(document.querySelectorAll('code')).some(
                           c => c.innerText.includes('/clips/') && c.innerText !== old)""",
                    arg=first_path, timeout=120_000)
                _wait_rendered(page, images=4)

                images = page.locator('[data-testid="stImage"] img')
                charts = page.locator(".js-plotly-plot")
                legend = page.locator(".kpsem-legend")
                arrows = page.get_by_text("shift arrows")
                assert images.count() >= 4  # both frames, the colour bar, the filmstrip
                assert charts.count() >= 2  # the two top-k charts
                assert legend.count() == 1 and "top-left" in legend.inner_text()
                assert arrows.count() >= 1 and "key points" in arrows.first.inner_text()
                assert page.get_by_text("MFNet has no key points").count() == 1
                assert page.locator('[data-testid="stException"]').count() == 0  # never a traceback
                assert page.locator('[data-testid="stAlertContentError"]').count() == 0
                # Every image decodes. A late rerun may re-mount an image (it reloads from zero width), so the
                # widths checked are the ones of the moment the condition held, not of a later snapshot.
                decoded = page.wait_for_function(
                    """() => {
                        const imgs = Array.from(document.querySelectorAll('[data-testid="stImage"] img'));
                        const ok = imgs.length >= 4 && imgs.every(i => i.complete && i.naturalWidth > 0);
                        return ok ? imgs.map(i => i.naturalWidth) : null;
                    }""", timeout=30_000, polling=250)
                natural = decoded.json_value()
                assert len(natural) >= 4 and all(w > 0 for w in natural), natural
                shot = tmp_path / "explorer.png"
                page.screenshot(path=str(shot), full_page=True)
                shutil.copy(shot, SCREENSHOT_COPY)
                assert shot.stat().st_size > 20_000
            finally:
                browser.close()
    finally:
        server.terminate()  # stop the server we started, by its PID
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=20)
        log.close()
