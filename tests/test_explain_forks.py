"""Figures drawn in forked processes as soon as they are queued (kpsem.explain.forks), reproducible PDFs, and
the figures' module without grad-cam. Speed is measured by benchmarks/bench_explain.py, never here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kpsem.explain.figures import FigureStyle, PaperFigure
from kpsem.explain.forks import FigureForks, can_fork

REPO = Path(__file__).resolve().parents[1]
needs_fork = pytest.mark.skipif(not can_fork(), reason="figures are forked only on Linux")


def _figure(name: str, text: str) -> PaperFigure:
    style = FigureStyle(column="single", dpi=30)
    fig = style.figure(1.0)
    fig.text(0.5, 0.5, text)
    return PaperFigure(name, fig, {"text": text}, style)


def _save(out: Path) -> object:
    return lambda figure: figure.save(out, formats=("png", "svg"))


def _failing() -> PaperFigure:
    raise ValueError("no frames to draw")


@needs_fork
@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_forked_figures_are_those_drawn_here_and_listed_in_the_order_queued(tmp_path: Path, jobs: int) -> None:
    here, forked = tmp_path / "here", tmp_path / f"forked{jobs}"
    names = [("light", 1.0), ("heavy", 3.0), ("middle", 2.0)]
    expected = [_figure(n, n).save(here, formats=("png", "svg")) for n, _ in names]
    with FigureForks(_save(forked), jobs) as forks:
        for name, weight in names:
            forks.add(lambda name=name: _figure(name, name), weight=weight)
        assert forks.count == 3
        written = forks.finish()
    assert [p.name for p in written] == [p.name for paths in expected for p in paths]  # queued order, not weight
    for path in written:
        assert path.read_bytes() == (here / path.name).read_bytes(), path.name


@needs_fork
def test_an_error_in_a_forked_figure_is_raised_in_the_parent(tmp_path: Path) -> None:
    with FigureForks(_save(tmp_path), 2) as forks:
        forks.add(_failing)
        with pytest.raises(ValueError, match="^no frames to draw$"):
            forks.finish()


def _add_slow_then_fail(forks: FigureForks, seen: list) -> None:
    def slow() -> PaperFigure:
        import time

        time.sleep(60)
        return _figure("slow", "slow")

    forks.add(slow)
    seen.extend(forks._running)
    raise RuntimeError("the analysis failed")


@needs_fork
def test_leaving_on_an_error_stops_the_figures_still_drawing(tmp_path: Path) -> None:
    running: list = []
    with pytest.raises(RuntimeError, match="the analysis failed"), FigureForks(_save(tmp_path), 2) as forks:
        _add_slow_then_fail(forks, running)
    assert len(running) == 1  # forked at once: a slot was free
    assert not running[0].process.is_alive() and not (tmp_path / "slow.png").exists()


def test_one_job_draws_here_in_finish(tmp_path: Path) -> None:
    drawn = []
    with FigureForks(_save(tmp_path), 1) as forks:
        forks.add(lambda: drawn.append("a") or _figure("a", "a"))
        assert drawn == []  # nothing before finish: --jobs 1 draws one by one at the drawing step
        assert [p.name for p in forks.finish()] == ["a.png", "a.svg", "a.json"]
    assert drawn == ["a"]
    with pytest.raises(ValueError, match="jobs must be at least 1; got 0"):
        FigureForks(_save(tmp_path), 0)


def test_pdf_and_svg_are_the_same_bytes_each_time(tmp_path: Path) -> None:
    """No creation date in either: a figure saved twice (or remade later) is the same file."""
    import time

    figure = _figure("same", "same")
    first = [p.read_bytes() for p in figure.save(tmp_path / "a", formats=("pdf", "svg"))[:2]]
    time.sleep(1.1)  # a date would differ by now
    second = [p.read_bytes() for p in figure.save(tmp_path / "b", formats=("pdf", "svg"))[:2]]
    assert first == second
    assert b"/CreationDate" not in first[0]


def test_figures_load_without_grad_cam() -> None:
    """The figures (and so the compare command and the app's figure pages) need no grad-cam, torchvision or
    scikit-learn: kpsem.explain.analysis imports grad-cam only where it computes a CAM."""
    code = ("import sys\nimport kpsem.explain.figures, kpsem.explain.analysis\n"
            "print([m for m in ('pytorch_grad_cam', 'torchvision', 'sklearn') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
