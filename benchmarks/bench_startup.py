"""How soon the commands and the app answer, in one run: help texts, the first line of a long command,
``explain`` end to end on the bundled demo, and the app's cold start.

    python benchmarks/bench_startup.py                  # 3 rounds
    python benchmarks/bench_startup.py --rounds 5 --no-app

* ``kpsem --help`` and each command's ``--help`` (a fresh process each; building a command's options
  may import PyTorch, grad-cam and matplotlib for their choices).
* ``kpsem explain`` on a demo clip (``assets/demo/``): the time to its first line of output and to the
  end of the process, as shipped and with each of its speed-ups undone (figures drawn one by one,
  ``--jobs 1``; the interpreter's normal teardown, by calling ``kpsem.cli.main`` with the arguments).
* The app: the imports of ``app.py`` and the Explorer in a fresh process (and whether modules only other
  pages need were loaded), and the Explorer's first script run under AppTest (imports, both checkpoints,
  decoding, both analyses, drawing) with the analysis time its footer reports for the first and later clips.

Variants are run alternately in every round, so machine noise hits all alike; each figure is the median
over rounds and each ratio the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
DEMO = ROOT / "assets" / "demo"
CLIP = DEMO / "clips" / "hop_cw" / "hop_cw_test_000.mp4"
# Modules only the other pages (class comparison, figure studio) need: the Explorer must not load them.
OTHER_PAGES = ("kpsem.explain.figures", "kpsem.explain.compare", "kpsem.evaluate", "kpsem.app_support.drawing.tables",
               "kpsem.app_support.caching.predictions", "kpsem.app_support.caching.figures", "pyarrow.parquet")
EXPLORER_IMPORTS = """
import streamlit as st
from kpsem.app_support.widgets import ui
from kpsem.app_support.widgets import faithfulness, probes, video
from kpsem.app_support.drawing.render import colour_bar, draw_frame, encode_jpeg, filmstrip, topk_chart
from kpsem.app_support.choices.sources import file_key
from kpsem.app_support.drawing.text import escape_markdown
from kpsem.explain.analysis import common_target
from kpsem.explain.draw import REGION_NAMES, KeyPointOptions, select_channels
"""
APP_RUN = """
import json, os, re, sys, time
started = time.perf_counter()
sys.path.insert(0, {benchmarks!r})
from bench_app import _server_script_cache
_server_script_cache()
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({app!r}, default_timeout=300)
at.run()
cold = time.perf_counter() - started
assert not at.exception, [e.value for e in at.exception]
def analysis():
    caption = next(c.value for c in at.caption if c.value.startswith("Device "))
    return float(re.search(r"analysis ([0-9.]+) s", caption)[1])
seconds = [analysis()]
for clip in at.selectbox(key="ex_clip").options[1:4]:
    at.selectbox(key="ex_clip").set_value(clip).run()
    seconds.append(analysis())
other_pages = [m for m in {other!r} if m in sys.modules]
print(json.dumps({{"cold": cold, "first": seconds[0], "later": seconds[1:], "other_pages": other_pages}}))
"""


def wall(command: list[str], **kwargs: object) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT, **kwargs)  # type: ignore[call-overload]
    return time.perf_counter() - started


def first_line_and_end(command: list[str]) -> tuple[float, float, str, dict[str, float]]:
    """(seconds to the first line on stdout, seconds to the process's end, that line, and the command's own
    progress stamps: the seconds at which each step ("loading", "drawing", "wrote", ...) began)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    first = time.perf_counter() - started
    rest = process.stdout.read()
    if process.wait() != 0:
        raise RuntimeError(f"{' '.join(command)} failed")
    stamps = {found[2]: float(found[1]) for found in re.finditer(r"^\[\s*([0-9.]+) s\] (\w+)", rest, re.MULTILINE)}
    return first, time.perf_counter() - started, line.strip(), stamps


def med(values: list[float]) -> float:
    return statistics.median(values)


def help_times(rounds: int) -> None:
    sys.path.insert(0, str(ROOT))
    from kpsem.cli import _command_modules

    commands = ["", *_command_modules()]
    times: dict[str, list[float]] = {c: [] for c in commands}
    for round_ in range(rounds):
        for command in commands[round_ % len(commands):] + commands[:round_ % len(commands)]:
            times[command].append(wall([PYTHON, "-m", "kpsem", *([command] if command else []), "--help"]))
    print(f"--help, a fresh process each (medians of {rounds})")
    for command, values in times.items():
        print(f"  kpsem {command + ' ' if command else ''}--help{'':{14 - len(command)}} {med(values):6.2f} s")


def explain_times(rounds: int, folder: Path) -> None:
    args = ["explain", "--baseline", str(DEMO / "mfnet.pt"), "--kpsem", str(DEMO / "mf_kpsem.pt"), "--clip", str(CLIP)]
    via_main = [PYTHON, "-c", "import sys; from kpsem.cli import main; sys.exit(main(sys.argv[1:]))"]
    variants = {
        "as shipped": [PYTHON, "-m", "kpsem", *args, "--out", str(folder / "a")],
        "figures one by one (--jobs 1)": [PYTHON, "-m", "kpsem", *args, "--out", str(folder / "b"), "--jobs", "1"],
        "normal interpreter teardown": [*via_main, *args, "--out", str(folder / "c")],
        "both undone": [*via_main, *args, "--out", str(folder / "d"), "--jobs", "1"],
    }
    firsts: dict[str, list[float]] = {k: [] for k in variants}
    ends: dict[str, list[float]] = {k: [] for k in variants}
    imports: dict[str, list[float]] = {k: [] for k in variants}
    drawing: dict[str, list[float]] = {k: [] for k in variants}
    line = ""
    names = list(variants)
    for round_ in range(rounds):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            first, end, shown, stamps = first_line_and_end(variants[name])
            firsts[name].append(first)
            ends[name].append(end)
            imports[name].append(stamps["loading"])  # the first step comes after the imports
            drawing[name].append(stamps["wrote"] - stamps["drawing"])
            line = line or shown
    print(f"kpsem explain on {CLIP.relative_to(ROOT)} (demo checkpoints, 16x96x96); medians of {rounds}")
    print(f"  first line: {line[:110]}{'...' if len(line) > 110 else ''}")
    for name in names:
        print(f"  {name:32s} first line {med(firsts[name]):5.2f} s   imports done {med(imports[name]):5.2f} s   "
              f"drawing {med(drawing[name]):5.2f} s   end {med(ends[name]):6.2f} s")
    shipped = ends["as shipped"]
    for name in names[1:]:
        ratio = med([undone / now for undone, now in zip(ends[name], shipped)])
        print(f"  {name} / as shipped: {ratio:.2f}x")


def app_times(rounds: int) -> None:
    import_script = EXPLORER_IMPORTS + f"import sys; print([m for m in {OTHER_PAGES!r} if m in sys.modules])"
    script = APP_RUN.format(benchmarks=str(ROOT / "benchmarks"), app=str(ROOT / "app.py"), other=OTHER_PAGES)
    env = {**os.environ, "KPSEM_CACHE_DIR": tempfile.mkdtemp(prefix="kpsem-bench-startup-")}
    imports, colds, firsts, laters, other = [], [], [], [], []
    single: dict[str, list[float]] = {"cold": [], "first": [], "later": []}
    for _ in range(rounds):
        imports.append(wall([PYTHON, "-c", import_script], env=env))
        for threads, into in ((None, None), ("1", single)):
            run_env = {**env, "OMP_NUM_THREADS": threads} if threads else env
            done = subprocess.run([PYTHON, "-c", script], cwd=ROOT, env=run_env, capture_output=True, text=True,
                                  check=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            if into is None:
                colds.append(result["cold"])
                firsts.append(result["first"])
                laters.extend(result["later"])
                other = result["other_pages"]
            else:
                into["cold"].append(result["cold"])
                into["first"].append(result["first"])
                into["later"].extend(result["later"])
    print(f"the app (AppTest, demo checkpoints); medians of {rounds}")
    print(f"  imports of app.py and the Explorer (fresh process)       {med(imports):6.2f} s")
    print(f"  cold start: first Explorer run, fully rendered            {med(colds):6.2f} s   "
          f"(one OpenMP thread: {med(single['cold']):.2f} s)")
    print(f"  analysis of the first clip / of later clips (footer)     {med(firsts):6.2f} s / {med(laters):.2f} s   "
          f"(one OpenMP thread: {med(single['first']):.2f} s / {med(single['later']):.2f} s)")
    print(f"  modules of other pages loaded for the Explorer: {other or 'none'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--no-app", action="store_true", help="skip the app")
    parser.add_argument("--no-explain", action="store_true", help="skip explain")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start")
    help_times(args.rounds)
    if not args.no_explain:
        with tempfile.TemporaryDirectory(prefix="kpsem-bench-explain-") as tmp:
            explain_times(args.rounds, Path(tmp))
    if not args.no_app:
        app_times(args.rounds)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
