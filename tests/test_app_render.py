"""The app's drawing helpers: what reaches the browser (JPEG bytes, plotly specs) is what was drawn."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import plotly.graph_objects as go
from PIL import Image, JpegImagePlugin

from kpsem.app_support.drawing.render import MODEL_COLOURS, TRUE_COLOUR, DrawnFrame, encode_jpeg, filmstrip, topk_chart
from kpsem.explain.analysis import TopK


def test_jpeg_keeps_full_colour_resolution_and_is_close():
    rng = np.random.default_rng(0)
    image = np.repeat(np.repeat(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), 4, axis=0), 4, axis=1)
    image[40:42, :] = (230, 159, 0)  # a thin coloured line, as an arrow is
    data = DrawnFrame(image).jpeg
    decoded = Image.open(io.BytesIO(data))
    assert decoded.format == "JPEG" and decoded.size == (128, 96)
    assert JpegImagePlugin.get_sampling(decoded) == 0  # 4:4:4, no chroma subsampling
    back = np.asarray(decoded.convert("RGB")).astype(int)
    assert np.abs(back - image).mean() < 4  # random noise is the worst case for JPEG
    assert np.abs(back[40:42] - image[40:42]).max(axis=-1).mean() < 24  # the line keeps its colour
    assert encode_jpeg(image, quality=50) != data


def test_topk_chart_is_a_valid_plotly_spec_with_the_true_class_marked():
    analysis = SimpleNamespace(topk=[TopK(2, "hop_cw", 0.6), TopK(0, "rise", 0.3), TopK(1, "jump", 0.1)])
    spec = topk_chart(analysis, true_label=0, colour=MODEL_COLOURS[1], k=2)
    figure = go.Figure(spec)  # what st.plotly_chart does with it: raises on any invalid property
    bar = figure.data[0]
    assert list(bar.y) == ["rise", "hop_cw"] and list(bar.x) == [0.3, 0.6]  # best at the top
    assert list(bar.marker.color) == [TRUE_COLOUR, MODEL_COLOURS[1]]
    assert list(bar.text) == ["30.0%", "60.0%"] and figure.layout.height == 40 + 32 * 2


def test_filmstrip_frames_every_thumbnail_and_marks_the_current_one():
    display = np.zeros((16, 96, 96, 3), np.uint8)
    display[:, :48] = 200  # top half light: the thumbnails are shrunk, not cropped
    strip = filmstrip(display, 5, thumb=40, border=2)
    assert strip.shape == (44, 16 * 44, 3)  # 704 px: Streamlit shows it as is (it shrinks anything over 1460)
    kpsem = [int(MODEL_COLOURS[1][i:i + 2], 16) for i in (1, 3, 5)]
    assert strip[0, 5 * 44 + 10].tolist() == kpsem and strip[0, 4 * 44 + 10].tolist() == [255, 255, 255]
    thumb = strip[2:42, 5 * 44 + 2:5 * 44 + 42]
    assert thumb[:20].min() == 200 and thumb[20:].max() == 0


def test_choices_and_drawing_import_no_streamlit_and_the_library_no_app_support():
    """The rule of kpsem.app_support's docstring: only its caching and widgets packages import Streamlit at
    module level, and nothing of the library imports the app's support code."""
    import subprocess
    import sys
    from pathlib import Path

    import kpsem

    script = """
import importlib, pkgutil, sys
import kpsem, kpsem.app_support.choices as choices, kpsem.app_support.drawing as drawing
for package in (choices, drawing):
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
print(sorted(name for name in sys.modules if name.split(".")[0] == "streamlit"))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
    library = Path(kpsem.__file__).parent
    importers = [path for path in library.rglob("*.py")
                 if "app_support" not in path.parts and "app_support" in path.read_text()]
    assert importers == []
