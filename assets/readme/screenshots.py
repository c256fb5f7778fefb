"""The README's pictures of the app, taken with the browser tests' tooling from the bundled demo.

    python assets/readme/screenshots.py        # needs Debian's chromium (tests/browser_harness.py)

Each view is opened as a link (``?clip=...&frame=...&overlay=...``, the app's URL state), rendered in
headless Chromium at 1500 px and saved here: the Explorer with Grad-CAM, with key points and shifts (and the
centres over time beneath), and the Figure studio's Fig. 9 and Fig. 10 at single column come from
``kpsem explain --column single`` on the same clip.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CLIP = "hop_cw/hop_cw_test_003"  # a demo clip both models get right, whose key points move
FRAME = 9


def explorer_shots(out: Path) -> None:
    sys.path.insert(0, str(REPO / "tests"))
    from browser_harness import chromium_page, served_app, wait_rendered

    with tempfile.TemporaryDirectory() as tmp, served_app(Path(tmp) / "streamlit.log") as url, \
            chromium_page(width=1500, height=3000) as page:
        for overlay, name in (("gradcam", "explorer_gradcam.png"), ("keypoints", "explorer_keypoints.png")):
            page.goto(f"{url}/?clip={CLIP}&frame={FRAME}&overlay={overlay}")
            wait_rendered(page, images=4, timeout_ms=420_000, settle_ms=1500)
            page.screenshot(path=str(out / name), full_page=True)
            print(f"wrote {out / name}")


def figure_shots(out: Path) -> None:
    demo = REPO / "assets" / "demo"
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "kpsem", "explain", "--baseline", str(demo / "mfnet.pt"),
                        "--kpsem", str(demo / "mf_kpsem.pt"), "--clip", str(demo / "clips" / f"{CLIP}.mp4"),
                        "--out", tmp, "--column", "single", "--formats", "png", "--precision", "fp32",
                        "--device", "cpu"], check=True, cwd=REPO)
        for figure in ("fig9_gradcam.png", "fig10_keypoints.png"):
            shutil.copy(Path(tmp) / figure, out / f"single_{figure}")
            print(f"wrote {out / f'single_{figure}'}")


if __name__ == "__main__":
    explorer_shots(HERE)
    figure_shots(HERE)
