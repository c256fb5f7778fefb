"""Shared fixtures and the rules that skip tests whose hardware is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

_BROWSER_SKIPS: list[str] = []  # browser tests skipped in this run, reported again at the very end


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Browser tests need Debian's Chromium: skipped, saying what to install, where it is missing; under
    CI (CI=true) a missing browser fails them instead, so that CI never passes without running them."""
    if "browser" not in item.keywords:
        return
    from browser_harness import chromium_missing

    why = chromium_missing()
    if why is None:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true but the browser tests cannot run: {why}", pytrace=False)
    _BROWSER_SKIPS.append(item.nodeid)
    pytest.skip(why)


def pytest_unconfigure(config: pytest.Config) -> None:
    """The last line of a run that skipped the browser tests says so (after pytest's own totals)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if _BROWSER_SKIPS and reporter is not None:
        from browser_harness import chromium_missing

        reporter.write_line(f"NOTE: {len(_BROWSER_SKIPS)} browser test(s) did not run: {chromium_missing()}",
                            yellow=True, bold=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` run only where torch sees a GPU; elsewhere they are skipped, saying why."""
    if torch.cuda.is_available():
        return
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False); "
                                        "run benchmarks/gpu_check.sh on a GPU machine")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip_cuda)


APP_FILE = Path(__file__).resolve().parents[1] / "app.py"  # the Streamlit entry point: a router
PAGES = APP_FILE.parent / "pages"  # what it routes to; each page runs alone too


# --- training and evaluation (tests/test_train*.py, tests/test_evaluate*.py) ---------------------------

TINY_BACKBONE = {"widths": (16, 32, 32, 64), "depths": (1, 1, 1, 1)}  # a few thousand parameters


class ToyClips(Dataset):
    """In-memory stand-in for :class:`kpsem.data.ClipDataset`: the same item dicts, 8x32x32 clips.

    Class ``c`` is a bright vertical band in column block ``c``; training items add noise from torch's
    global RNG (as ClipDataset's augmentation does), so the trainer's per-item seeding matters.
    """

    def __init__(self, videos: int, *, classes: int = 3, frames: int = 8, size: int = 32, train: bool = True,
                 clips_per_video: int = 1) -> None:
        self.videos, self.classes, self.frames, self.size = videos, classes, frames, size
        self.train, self.clips_per_video = train, clips_per_video
        self.class_names = [f"class{c}" for c in range(classes)]

    def __len__(self) -> int:
        return self.videos * self.clips_per_video

    def __getitem__(self, index: int) -> dict:
        video, clip_index = divmod(index, self.clips_per_video)
        label = video % self.classes
        generator = torch.Generator().manual_seed(1000 * video + clip_index)
        clip = torch.randn(3, self.frames, self.size, self.size, generator=generator) * 0.3  # (3, T, S, S)
        band = self.size // self.classes
        clip[:, :, :, label * band:(label + 1) * band] += 1.0
        if self.train:
            clip = clip + 0.1 * torch.randn_like(clip)
        return {"clip": clip, "label": label, "video_id": f"video{video:03d}", "clip_index": clip_index,
                "index": index}


@pytest.fixture
def toy_clips() -> type[ToyClips]:
    return ToyClips


@pytest.fixture
def tiny_backbone() -> dict:
    return dict(TINY_BACKBONE)


def write_frame_folders(root, *, classes: int = 3, videos_per_class: int = 3, frames: int = 10) -> None:
    """A tiny on-disk data set in the "folders" layout: <root>/<class>/<video>/00001.jpg ...

    Class ``c`` is a bright vertical band at column block ``c`` over dark noise (40x48 frames).
    """
    import numpy as np
    from PIL import Image

    for c in range(classes):
        for v in range(videos_per_class):
            folder = root / f"class{c}" / f"video{c}_{v}"
            folder.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng(100 * c + v)
            for f in range(frames):
                pixels = rng.integers(0, 60, (40, 48, 3), dtype=np.uint8)
                pixels[:, 16 * c:16 * c + 16] = 230
                Image.fromarray(pixels).save(folder / f"{f + 1:05d}.jpg")


@pytest.fixture
def frame_folders(tmp_path):
    """Root of a 3-class, 9-video frame-folder data set (every split holds all 9 videos)."""
    root = tmp_path / "frames"
    write_frame_folders(root)
    return root


# --- explanations and figures (tests/test_explain*.py) ------------------------------------------------


@pytest.fixture
def tiny_pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    """A tiny MFNet and a tiny MF-KPSEM (5 classes, 8-frame clips), seeded, in eval mode."""
    import kpsem

    torch.manual_seed(0)
    baseline = kpsem.create_model("mfnet", num_classes=5, **TINY_BACKBONE).eval()
    ours = kpsem.create_model("mf_kpsem", num_classes=5, backbone=dict(TINY_BACKBONE), num_frames=8).eval()
    return baseline, ours


@pytest.fixture
def tiny_clip() -> torch.Tensor:
    """One normalised clip (1, 3, 8, 64, 64), seeded."""
    return torch.randn(1, 3, 8, 64, 64, generator=torch.Generator().manual_seed(1))


# --- the Streamlit app (tests/test_app*.py, tests/test_browser.py) ------------------------------------


@pytest.fixture(scope="session")
def app_demo():
    """The bundled demo (assets/demo/, made by its make_demo.sh)."""
    from kpsem.app_support.choices.config import DEMO

    return DEMO.require()


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from more threads; on a shared CPU extra threads only spin."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def app_env(app_demo, tmp_path, monkeypatch) -> None:
    """The app's settings for one test: the disk cache and uploads in its tmp folder, no browse roots, the
    default upload cap."""
    monkeypatch.setenv("KPSEM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("KPSEM_BROWSE_ROOTS", raising=False)
    monkeypatch.delenv("KPSEM_MAX_UPLOAD_MB", raising=False)


@pytest.fixture
def app(app_env):
    """A fresh session of the whole app on the demo, through app.py's router (it opens on the Explorer).

    For tests that move between pages in one session. From its second run AppTest runs the page alone in
    Streamlit's pages-folder mode (it looks for ``pages/`` next to app.py on every run); each page draws
    its own sidebar, so that changes nothing a test sees."""
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(APP_FILE), default_timeout=120)


@pytest.fixture
def page(app_env):
    """``page("compare")``: a fresh session of one page file on the demo, run alone as AppTest runs a script
    (the page draws the shared sidebar itself)."""
    from streamlit.testing.v1 import AppTest

    def open_page(name: str) -> AppTest:
        return AppTest.from_file(str(PAGES / f"{name}.py"), default_timeout=120)

    return open_page
