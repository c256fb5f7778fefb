#!/usr/bin/env bash
# Prepares wheelhouse/ for benchmarks/gpu_check.sh on an offline GPU machine whose image already holds
# torch, torchvision, numpy, OpenCV (headless), scikit-learn, matplotlib, pandas, pyarrow and pytest but
# not the rest of what the library imports. Run it here (with network), then carry wheelhouse/ along
# (device run: carry ["wheelhouse"]); it is git-ignored.
#
#   benchmarks/gpu_wheels.sh [PYTHON_VERSION]      (default 3.12, the H200 image's Python)
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-3.12}
rm -rf wheelhouse
mkdir wheelhouse
# Exact versions from the lock where it names them, so the GPU runs the code's own dependency versions.
pinned() { grep -iE "^$1==" requirements.txt || echo "$1"; }
quiet() { "$@" 2> >(grep -v "^WARNING: Location '.*' is ignored" >&2); }
# Pure-Python packages (grad-cam is published as a source archive only): built here into universal wheels.
quiet python3 -m pip wheel --quiet --no-deps --wheel-dir wheelhouse "$(pinned grad-cam)" "$(pinned ttach)" "$(pinned tqdm)"
# PyAV holds compiled code: the wheel for the GPU machine's Python and platform.
quiet python3 -m pip download --quiet --only-binary=:all: --no-deps --dest wheelhouse \
  --python-version "$version" --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
  "$(pinned av)"
ls -la wheelhouse
du -sh wheelhouse
