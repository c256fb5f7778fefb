"""App responsiveness, in one run (Streamlit's AppTest, the demo checkpoints, this machine's CPU or GPU).

Run: ``python benchmarks/bench_app.py [--repeats 5]``. Measures, on the Explorer page:

* cold start: the first script run of a fresh session in a fresh process (imports, loading both
  checkpoints, decoding the clip, both analyses, drawing) until the page is fully rendered;
* a new clip: picking another clip (decode + both analyses + drawing), against the library's own
  time for the same work (``load_clip`` + ``analyse_pair`` on the same cached models), timed on a
  fresh thread right after each app run, as Streamlit runs every script run; and once more on the
  main thread after all app runs (see :func:`_timed_in_thread` for why not interleaved there);
  target <= 1.5x;
* a frame change and a display setting on an analysed clip (drawing only, no model); target < 0.3 s.

Each figure is the median of ``--repeats`` (new clips are distinct clips, never cached). Scripts are
compiled once, as ``streamlit run`` does (AppTest alone would recompile them on every run).

``--browser`` adds the same walk in a real browser: ``streamlit run`` on loopback driven through
Debian's Chromium (see tests/browser_harness.py), timed from the click until the run has
finished and every picture is decoded on screen. On a small machine the browser shares the cores with
the server, which the split printed beside it (the server's own analysis and drawing times) shows.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _server_script_cache() -> None:
    """Compile app.py and each page once, as a server does.

    ``streamlit run`` keeps one ScriptCache per server, so a rerun executes cached bytecode; AppTest
    makes a new cache (and compiles both scripts again) on every run, a cost no user ever pays.
    """
    from streamlit.runtime.scriptrunner.script_cache import ScriptCache
    from streamlit.testing.v1 import app_test, local_script_runner

    shared = ScriptCache()
    app_test.ScriptCache = local_script_runner.ScriptCache = lambda: shared


def _timed(action) -> float:  # noqa: ANN001
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def _timed_in_thread(action) -> float:  # noqa: ANN001
    """Time ``action`` on a new thread, as Streamlit runs each script run.

    Why: OpenMP keeps a worker team for each thread that runs parallel work, for as long as that thread
    lives. Library calls on the main thread, interleaved with script runs on other threads, would keep a
    second team alive; with more OpenMP threads than cores libgomp stops spinning and every parallel
    region waits for its workers to wake (the next script run was a third slower here).
    """
    seconds: list[float] = []
    thread = threading.Thread(target=lambda: seconds.append(_timed(action)))
    thread.start()
    thread.join()
    return seconds[0]


def browser_walk(repeats: int) -> None:
    """Cold start, new clips and frame changes in Chromium against ``streamlit run``; prints medians."""
    import re
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the browser harness is test tooling
    from browser_harness import chromium_page, footer, served_app, timed_click, timed_key, wait_rendered

    def server_split(signature: str) -> tuple[float, float]:
        found = re.search(r"analysis ([0-9.]+) s .* drawn in ([0-9]+) ms", footer(signature))
        return (float(found[1]), float(found[2]) / 1000) if found else (float("nan"), float("nan"))

    with tempfile.TemporaryDirectory() as tmp, chromium_page() as page:
        started = time.perf_counter()
        with served_app(Path(tmp) / "streamlit.log") as url:
            page.goto(url)
            signature = wait_rendered(page, images=4, settle_ms=0, polling_ms=20)
            cold = time.perf_counter() - started
            clips, splits = [], []
            for k in range(repeats):
                page.locator('[data-testid="stSelectbox"]', has_text="Clip (").click()
                options = page.get_by_role("option")
                options.first.wait_for(timeout=30_000)
                option = options.nth(1 + k % max(1, options.count() - 1))
                if option.get_attribute("aria-selected") == "true":  # the clip shown now: take the next one
                    option = options.nth(2 + k % max(1, options.count() - 2))
                signature, seconds = timed_click(page, option, images=4, unlike=signature)
                clips.append(seconds)
                splits.append(server_split(signature))
            frames = []
            frame_slider = page.locator('[data-testid="stSlider"]').filter(has=page.get_by_text("Frame", exact=True))
            thumb = frame_slider.get_by_role("slider")  # the one frame control: a step to the next frame
            for _ in range(repeats):
                signature, seconds = timed_key(page, thumb, "ArrowRight", images=4, unlike=signature)
                frames.append(seconds)
    med = statistics.median
    print(f"in Chromium (streamlit run on loopback, the browser on this machine too); medians of {repeats}")
    print(f"cold start (server start to a fully rendered explorer): {cold:8.2f} s")
    print(f"new clip, click to every picture decoded:       {med(clips):8.3f} s "
          f"(server: analysis {med(a for a, _ in splits):.3f} s, drawing {med(d for _, d in splits):.3f} s)")
    print(f"frame change (slider step), key to decoded:     {med(frames):8.3f} s")


def _check(at) -> None:  # noqa: ANN001
    if at.exception or at.error:
        raise RuntimeError(f"the app failed: {[e.value for e in at.exception]} {[e.value for e in at.error]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="clips and frames timed (medians are printed)")
    parser.add_argument("--browser", action="store_true",
                        help="also time the walk in Chromium against streamlit run (needs /usr/bin/chromium)")
    args = parser.parse_args()

    import logging

    import torch
    from streamlit.testing.v1 import AppTest

    logging.getLogger("streamlit").setLevel(logging.ERROR)  # bare-mode cache warnings are expected here

    from kpsem.app_support.caching import services
    from kpsem.app_support.choices.config import DEMO

    DEMO.require()  # the bundled demo, or a message saying how to restore it
    _server_script_cache()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
    cold = _timed(at.run)
    _check(at)
    selection = at.session_state["_selection"]
    device = selection.device
    ids = at.selectbox(key="ex_clip").options
    index = selection.data.index
    by_id = {r.video_id: r for r in index.videos}
    info = selection.kpsem.info
    base_model, kpsem_model = selection.baseline.model, selection.kpsem.model

    from kpsem.data import load_clip
    from kpsem.explain.analysis import analyse_pair

    def library(video_id: str, *, fresh_thread: bool = True) -> float:
        def work() -> None:
            sample = load_clip(by_id[video_id].path, frames=info.clip_frames, size=info.clip_size,
                               mean=tuple(info.mean), std=tuple(info.std))
            with services.MODEL_LOCK:
                analyse_pair(base_model, kpsem_model, sample.clips[:1].to(device), class_names=info.class_names)
            if device.startswith("cuda"):
                torch.cuda.synchronize(device)
        return _timed_in_thread(work) if fresh_thread else _timed(work)

    app_clip, lib_clip = [], []
    for video_id in ids[1:1 + args.repeats]:  # interleaved: app (uncached clip), then the library on it
        app_clip.append(_timed(lambda v=video_id: at.selectbox(key="ex_clip").set_value(v).run()))
        _check(at)
        footer = next(c.value for c in at.caption if c.value.startswith("Device "))
        if "(fresh)" not in footer:
            raise RuntimeError(f"expected a fresh analysis for a new clip; footer says {footer!r}")
        lib_clip.append(library(video_id))

    frames = at.slider(key="frame").max
    frame_times = []
    for k in range(args.repeats):
        frame_times.append(_timed(lambda f=2 + (3 * k) % (frames - 1): at.slider(key="frame").set_value(f).run()))
        _check(at)
        assert "(cached)" in next(c.value for c in at.caption if c.value.startswith("Device "))
    setting_times = []
    for k in range(args.repeats):
        value = 0.3 + 0.1 * (k % 5)
        setting_times.append(_timed(lambda v=value: at.slider(key="alpha").set_value(v).run()))
        _check(at)
    overlay_times = []
    for mode in ("Key points and shifts", "Difference", "Grad-CAM")[: max(1, min(3, args.repeats))]:
        overlay_times.append(_timed(lambda m=mode: at.radio(key="overlay").set_value(m).run()))
        _check(at)

    # after the app: no interleaving
    lib_main = [library(video_id, fresh_thread=False) for video_id in ids[1:1 + args.repeats]]

    threads = torch.get_num_threads()
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else f"CPU, {threads} threads"
    med = statistics.median
    print(f"device: {name}; demo: bundled "
          f"{info.clip_frames}x{info.clip_size}x{info.clip_size} clips; AppTest script runs; medians of {args.repeats}")
    print(f"cold start to a fully rendered explorer:        {cold:8.2f} s")
    print(f"new clip, app (decode + analyse + draw):        {med(app_clip):8.3f} s")
    print(f"new clip, library (load_clip + analyse_pair):   {med(lib_clip):8.3f} s")
    print(f"  the same on the main thread, after the app:   {med(lib_main):8.3f} s")
    print(f"ratio app / library: {med(app_clip) / med(lib_clip):.2f}x (target <= 1.5x); "
          f"against the main-thread figure {med(app_clip) / med(lib_main):.2f}x")
    print(f"frame change on an analysed clip:               {med(frame_times):8.3f} s (target < 0.3 s)")
    print(f"display setting (heat-map opacity):             {med(setting_times):8.3f} s (target < 0.3 s)")
    print(f"overlay switch (key points / difference / CAM): {med(overlay_times):8.3f} s (target < 0.3 s)")
    if args.browser:
        browser_walk(args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
