"""Figures drawn and saved in forked processes, each started as soon as its inputs exist (``kpsem explain``).

Why processes: drawing is most of what ``explain`` does after the models, pure Python and matplotlib that
one core runs. Why fork: a child inherits the analyses and the figure's builder (a closure) without
copying or pickling them. Why as soon as the inputs exist: the figures of the first analysis are drawn
while the parent still analyses the difference's class and counts Table 1's multiply-adds, instead of
after both. The parent forks only from its own thread, between its steps.
"""

from __future__ import annotations

import gc
import importlib
import multiprocessing
import multiprocessing.connection
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["FigureForks", "can_fork", "save_figure"]

# What every child would otherwise import for its first save (PDF, SVG, the PDF font subsetter, PNG):
# imported once here before the first fork, 0.08 s, saved ~0.08 s of CPU in each child.
_SAVE_MODULES = ("matplotlib.backends.backend_pdf", "matplotlib.backends.backend_svg", "fontTools.subset",
                 "PIL.PngImagePlugin")


def can_fork() -> bool:
    """Whether figures can be drawn in forked processes here (Linux: fork is cheap and safe for this)."""
    return sys.platform.startswith("linux")


@dataclass
class _Job:
    order: int  # position among the figures: the files are listed in this order
    weight: float  # rough cost: the heaviest ready figure starts first
    builder: Callable[[], Any]  # () -> PaperFigure
    process: Any = None  # multiprocessing.Process once started
    reader: Any = None  # the parent's end of the child's result pipe
    paths: list[Path] = field(default_factory=list)


class FigureForks:
    """Build and save figures, at most ``jobs`` child processes at a time, heaviest ready figure first.

    ``add`` queues a figure and starts what fits; ``finish`` waits for every figure and returns the files
    written, in the order the figures were added. With ``jobs == 1`` (or where fork is unavailable) the
    figures are drawn here, one by one, in ``finish``. Use as a context manager: leaving on an exception
    stops the children still drawing.
    """

    def __init__(self, save: Callable[[Any], list[Path]], jobs: int) -> None:
        if jobs < 1:
            raise ValueError(f"jobs must be at least 1; got {jobs}")
        self._save = save  # PaperFigure -> paths written
        self._forking = jobs > 1 and can_fork()
        self._jobs = jobs
        self._waiting: list[_Job] = []
        self._running: list[_Job] = []
        self._done: list[_Job] = []
        self._context = multiprocessing.get_context("fork") if self._forking else None

    def __enter__(self) -> FigureForks:
        return self

    def __exit__(self, exc_type: object, exc_value: object, traceback_: object) -> bool:
        for job in self._running:  # only after an error: finish() leaves none running
            job.process.terminate()
            job.process.join()
            job.reader.close()
        self._running.clear()
        gc.unfreeze()
        return False

    @property
    def forking(self) -> bool:
        """Whether figures are drawn in forked processes (else here, one by one, in :meth:`finish`)."""
        return self._forking

    @property
    def count(self) -> int:
        return len(self._waiting) + len(self._running) + len(self._done)

    def add(self, builder: Callable[[], Any], *, weight: float = 1.0) -> None:
        """Queue one figure; in forking mode, start it now if a process slot is free."""
        self._waiting.append(_Job(self.count, weight, builder))
        if self._forking:
            self._collect(block=False)
            self._start_what_fits()

    def finish(self) -> list[Path]:
        """Wait for every figure; the files written, in the order the figures were added."""
        if not self._forking:
            for job in self._waiting:
                job.paths = self._save(job.builder())
            self._done, self._waiting = self._waiting, []
        while self._waiting or self._running:
            self._collect(block=True)
            self._start_what_fits()
        gc.unfreeze()
        return [path for job in sorted(self._done, key=lambda j: j.order) for path in job.paths]

    # -- forking ----------------------------------------------------------------------------------

    def _start_what_fits(self) -> None:
        self._waiting.sort(key=lambda j: -j.weight)
        while self._waiting and len(self._running) < self._jobs:
            self._start(self._waiting.pop(0))

    def _start(self, job: _Job) -> None:
        assert self._context is not None
        for module in _SAVE_MODULES:
            importlib.import_module(module)
        reader, writer = self._context.Pipe(duplex=False)
        process = self._context.Process(target=self._child, args=(job.builder, writer), daemon=True)
        # Objects that exist now are never collected in the child: its garbage collector then does not walk
        # (and so copy, page by page) the parent's millions of objects from PyTorch and grad-cam.
        gc.freeze()
        with warnings.catch_warnings():
            # Python 3.12 warns that forking a threaded process may deadlock the child; PyTorch's idle OpenMP
            # workers are those threads. Drawing children never enter PyTorch; the one that counts Table 1
            # runs it on a single thread, so it never waits for the OpenMP workers it did not inherit.
            warnings.simplefilter("ignore", DeprecationWarning)
            process.start()
        writer.close()
        job.process, job.reader = process, reader
        self._running.append(job)

    def _child(self, builder: Callable[[], Any], writer: Any) -> None:
        try:
            result: tuple[str, Any] = ("ok", [str(path) for path in self._save(builder())])
        except BaseException as error:  # noqa: BLE001 - every failure goes back to the parent, which raises it
            result = ("error", error)
        try:
            writer.send(result)
        except Exception:  # noqa: BLE001 - an exception that does not pickle goes back as its text
            writer.send(("error", RuntimeError("".join(traceback.format_exception(result[1])))))
        writer.close()

    def _collect(self, *, block: bool) -> None:
        """Take the results of finished children (waiting for at least one when ``block``); raise a child's
        error here, in the parent. A child's result pipe is read before the child is joined: a child blocks
        in its send until the parent reads."""
        if not self._running:
            return
        handles = [handle for job in self._running for handle in (job.reader, job.process.sentinel)]
        ready = multiprocessing.connection.wait(handles, timeout=None if block else 0)
        for job in [j for j in self._running if j.reader in ready or j.process.sentinel in ready]:
            self._running.remove(job)
            try:
                status, value = job.reader.recv()
            except EOFError:  # it ended without a word: killed, or out of memory
                job.process.join()
                status, value = "error", RuntimeError(f"the process drawing figure {job.order + 1} ended with "
                                                      f"exit code {job.process.exitcode} before saving it")
            job.process.join()
            job.reader.close()
            if status != "ok":
                raise value
            job.paths = [Path(p) for p in value]
            self._done.append(job)


def save_figure(out: Path, formats: Sequence[str], extra: dict) -> Callable[[Any], list[Path]]:
    """PaperFigure -> its files in ``out``: what each forked child (or the parent, one by one) runs."""
    return lambda figure: figure.save(out, formats=formats, extra=extra)
