"""The real app in a real browser: `streamlit run app.py` driven through Debian's Chromium by Playwright."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from browser_harness import chromium_page, footer, served_app, wait_rendered

SCREENSHOT_COPY = Path("/tmp/kpsem-explorer.png")
EVIDENCE_ROOT = Path(__file__).resolve().parents[1] / "test-artifacts"  # git-ignored


@pytest.fixture
def evidence(request: pytest.FixtureRequest) -> Path:
    """The server log of a browser test, and on failure its Playwright trace and a screenshot (emptied first)."""
    folder = EVIDENCE_ROOT / request.node.name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


@pytest.mark.browser
def test_explorer_in_chromium(app_demo, tmp_path, evidence):
    env = {k: v for k, v in os.environ.items() if k not in ("KPSEM_BROWSE_ROOTS", "KPSEM_MAX_UPLOAD_MB")}
    with served_app(evidence / "streamlit.log", env=env) as url, chromium_page(evidence=evidence) as page:
        page.goto(url, wait_until="domcontentloaded")
        first = wait_rendered(page, images=4)
        assert page.get_by_text("MF-KPSEM", exact=True).count() >= 1
        assert "/clips/" in first and "Device " in first

        # pick another clip: the "Clip" select box, a visible option (the list is virtual)
        clip_box = page.locator('[data-testid="stSelectbox"]', has_text="Clip (")
        clip_box.click()
        options = page.get_by_role("option")
        options.first.wait_for(timeout=30_000)
        options.nth(min(3, options.count() - 1)).click()
        second = wait_rendered(page, images=4, unlike=first)  # the path caption changed, all decoded
        assert second.split("/clips/")[1].split()[0] != first.split("/clips/")[1].split()[0]

        images = page.locator('[data-testid="stImage"] img')
        charts = page.locator(".js-plotly-plot")
        legend = page.locator(".kpsem-legend")
        arrows = page.get_by_text("shift arrows")
        assert images.count() >= 4  # both frames, the key point density, the colour bar
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
        # a frame change reruns only the frame viewer (a fragment): new frame, nothing recomputed
        # the one frame control is the slider: keyboard steps from frame 1 to frame 9
        frame_slider = page.locator('[data-testid="stSlider"]').filter(has=page.get_by_text("Frame", exact=True))
        thumb = frame_slider.get_by_role("slider")
        thumb.focus()
        for _ in range(8):
            thumb.press("ArrowRight")
        page.get_by_text("MF-KPSEM, frame 9 (feature frame").first.wait_for(timeout=60_000)
        third = wait_rendered(page, images=4, unlike=second)
        assert "MF-KPSEM, frame 9 (feature frame" in third and "(cached)" in footer(third)
        assert "/clips/" in third and third.split("/clips/")[1].split()[0] == second.split("/clips/")[1].split()[0]
        assert page.locator('[data-testid="stException"]').count() == 0
        shot = tmp_path / "explorer.png"
        page.screenshot(path=str(shot), full_page=True)
        shutil.copy(shot, SCREENSHOT_COPY)
        assert shot.stat().st_size > 20_000


@pytest.mark.browser
def test_cancelling_a_predictions_computation_in_chromium(app_demo, tmp_path, evidence):
    """Cancel interrupts the running computation through Streamlit's rerun (which AppTest cannot do)."""
    import re

    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k not in ("KPSEM_BROWSE_ROOTS", "KPSEM_MAX_UPLOAD_MB")}
    env["KPSEM_CACHE_DIR"] = str(cache)
    with served_app(evidence / "streamlit.log", env=env) as url, chromium_page(evidence=evidence) as page:
        page.goto(url, wait_until="domcontentloaded")
        signature = wait_rendered(page, images=4)
        roles = (("Baseline checkpoint", "mfnet.pt"), ("KPSEM checkpoint", "mf_kpsem.pt"))
        for number, (role, name) in enumerate(roles):
            copy = tmp_path / f"copy_{name}"  # not the bundled demo: no bundled table applies
            shutil.copy(app_demo.root / name, copy)
            page.locator('[data-testid="stRadio"]', has_text=role).get_by_text("path", exact=True).click()
            field = page.get_by_label("Checkpoint path").nth(number)
            field.fill(str(copy))
            field.press("Enter")
            signature = wait_rendered(page, images=4, unlike=signature)
            assert f"copy_{name}" in page.locator('[data-testid="stSidebar"]').inner_text()
        page.get_by_role("link", name="Class comparison").click()
        clips = page.get_by_label("Clips per video (when computing)")
        clips.wait_for(timeout=60_000)
        clips.fill("2")  # 128 clips a model: time enough to cancel
        clips.press("Enter")
        compute = page.get_by_role("button", name="Compute predictions")
        compute.wait_for(timeout=60_000)
        compute.click()
        page.get_by_text(re.compile(r": [1-9][0-9]* of 128 clips")).wait_for(timeout=60_000)  # under way
        page.get_by_role("button", name="Cancel").click()
        page.get_by_text("The computation was stopped; nothing was saved.").wait_for(timeout=60_000)
        again = page.get_by_role("button", name="Compute predictions")
        again.wait_for(timeout=60_000)  # the run that shows the warning draws the button after it
        assert again.count() == 1  # can start again
        assert page.locator('[data-testid="stException"]').count() == 0
        assert not list(cache.rglob("*.parquet"))  # nothing half-written was kept


@pytest.mark.browser
def test_a_link_opens_its_view_offline_and_without_raw_page_names(app_demo, evidence):
    """A link with query parameters opens that clip, frame and overlay, and a reload keeps them; on the server's
    first run the sidebar never lists raw file names; nothing is fetched from outside loopback (no icon font,
    no favicon)."""
    from urllib.parse import parse_qs, quote, urlparse

    clip = sorted(p.relative_to(app_demo.clips).with_suffix("").as_posix() for p in app_demo.clips.glob("*/*.mp4"))[9]
    env = {k: v for k, v in os.environ.items() if k not in ("KPSEM_BROWSE_ROOTS", "KPSEM_MAX_UPLOAD_MB")}
    with served_app(evidence / "streamlit.log", env=env) as url, chromium_page(evidence=evidence) as page:
        outside = []
        page.on("request", lambda r: outside.append(r.url)
                if urlparse(r.url).hostname not in ("127.0.0.1", "localhost") and urlparse(r.url).scheme != "data"
                else None)
        page.add_init_script("""
            window.__pageLists = [];  // every list of page names the sidebar showed, in order
            new MutationObserver(() => {
                const links = document.querySelectorAll(
                    '[data-testid="stSidebarNavLink"], [data-testid="stPageLink-NavLink"]');
                const names = Array.from(links).map(a => a.innerText.split('\\n').pop().trim()).join('|');
                const seen = window.__pageLists;
                if (names && seen[seen.length - 1] !== names) seen.push(names);
            }).observe(document, {subtree: true, childList: true, characterData: true});
        """)
        page.goto(f"{url}/?clip={quote(clip)}&frame=5&overlay=difference", wait_until="domcontentloaded")

        def same_view() -> None:
            wait_rendered(page, images=4, timeout_ms=420_000)  # a cold start: models, analysis and MP4 on a busy CPU
            assert f"/clips/{clip}." in "\n".join(page.locator('[data-testid="stCaptionContainer"]').all_inner_texts())
            frame = page.locator('[data-testid="stSlider"]', has_text="Frame")
            assert frame.locator('[data-testid="stSliderThumbValue"]').inner_text() == "5"
            assert page.get_by_role("radio", name="Difference").is_checked()
            assert "baseline minus KPSEM" in "\n".join(page.locator('[data-testid="stImageCaption"]').all_inner_texts())
            assert page.locator('[data-testid="stException"]').count() == 0

        same_view()
        assert parse_qs(urlparse(page.url).query) == {"clip": [clip], "frame": ["5"], "overlay": ["difference"]}
        lists = page.evaluate("window.__pageLists")
        assert lists and all(names.split("|")[:2] == ["Explorer", "Class comparison"] for names in lists), lists
        page.reload(wait_until="domcontentloaded")  # a reload is a new session: the URL alone brings the view back
        same_view()
        assert not outside, outside
