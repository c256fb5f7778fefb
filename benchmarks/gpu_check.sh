#!/usr/bin/env bash
# The GPU check: on a CUDA machine, from a fresh checkout with nothing installed, install KPSEM Studio,
# show the GPU as nvidia-smi and torch see it, run the GPU tests (pytest -m cuda) and the benchmarks that
# run on CUDA, and write it all to one log.
#
#   benchmarks/gpu_check.sh OUT_DIR        (or OUT=OUT_DIR benchmarks/gpu_check.sh)
#
# Writes OUT_DIR/gpu_check.log (everything), OUT_DIR/cuda-tests.xml (JUnit) and OUT_DIR/summary.txt.
# Every step has a time limit and the whole run stops starting steps after KPSEM_GPU_CHECK_BUDGET
# seconds (default 450), so it ends within 8 minutes on an H200. A failing step does not stop the
# later ones; the exit status is non-zero if any step failed, timed out or had no time left to run.
# The virtual environment lives outside the checkout (KPSEM_GPU_VENV, default /tmp/kpsem-gpu-venv) and
# is reused while the requirement files are unchanged.
#
# Offline machines (the lent H200 has its own CUDA build of torch and no network): when the checkout holds
# a folder wheelhouse/ (made here by benchmarks/gpu_wheels.sh and carried along), the venv sees the
# machine's own packages (--system-site-packages) and only what they lack is installed, from that folder
# alone. The torch is then the machine's, not the 2.13.0 pin: the log records which ran.
set -euo pipefail

out=${1:-${OUT:-}}
if [ -z "$out" ]; then
  echo "usage: $0 OUT_DIR   (or set OUT): the folder that receives the log" >&2
  exit 2
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."

main() {
  local budget=${KPSEM_GPU_CHECK_BUDGET:-450}
  local deadline=$((SECONDS + budget))
  local venv=${KPSEM_GPU_VENV:-${TMPDIR:-/tmp}/kpsem-gpu-venv}
  local python=${PYTHON:-python3}
  failed=()

  # step NAME LIMIT_S COMMAND...: run COMMAND under LIMIT_S (cut to the time left), record a failure.
  step() {
    local name=$1 limit=$2
    shift 2
    local left=$((deadline - SECONDS))
    if ((left < 15)); then
      echo "=== $name: not run, the ${budget}s budget is spent ==="
      failed+=("$name (not run: no time left)")
      return 0
    fi
    ((limit > left)) && limit=$left
    echo
    echo "=== $name (limit ${limit}s) ==="
    local start=$SECONDS rc=0
    timeout --kill-after=10 "$limit" "$@" || rc=$?
    echo "=== $name: exit $rc after $((SECONDS - start))s ==="
    if ((rc == 124 || rc == 137)); then
      failed+=("$name (timed out after ${limit}s)")
    elif ((rc != 0)); then
      failed+=("$name (exit $rc)")
    fi
  }

  local commit
  commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  echo "KPSEM Studio GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $commit"
  echo "host $(hostname), $(nproc) CPUs, budget ${budget}s, venv $venv, output $out"

  step "nvidia-smi" 30 nvidia-smi

  # A lock file, once the project has one, pins every package; until then requirements.txt plus the
  # constraints that keep pip from swapping the torch pin for a newer release.
  local requirements=requirements.txt
  [ -f requirements.lock ] && requirements=requirements.lock
  local constraints=()
  [ -f constraints.txt ] && constraints=(-c constraints.txt)
  local want
  want=$(cat "$requirements" pyproject.toml ${constraints[@]:+constraints.txt} | sha256sum | cut -d' ' -f1)
  if [ -d wheelhouse ]; then
    step "install (offline: the machine's torch + wheelhouse/)" 240 bash -c '
      set -euo pipefail
      python=$1 venv=$2
      "$python" -c "import sys, torch; assert sys.version_info >= (3, 11); print(\"machine torch\", torch.__version__)"
      "$python" -m venv --clear --system-site-packages "$venv"
      pip=("$venv/bin/python" -m pip install --disable-pip-version-check --progress-bar off --no-index)
      "${pip[@]}" --no-deps wheelhouse/*.whl
      "${pip[@]}" --no-deps -e .
    ' install "$python" "$venv"
  elif [ -f "$venv/.kpsem-installed" ] && [ "$(cat "$venv/.kpsem-installed")" = "$want" ]; then
    echo "=== install: $venv is up to date with $requirements ==="
  else
    if [ -e "$venv" ] && [ ! -f "$venv/pyvenv.cfg" ]; then
      echo "refusing to replace $venv: it exists and is not a virtual environment (set KPSEM_GPU_VENV)"
      failed+=("install (KPSEM_GPU_VENV=$venv is not a virtual environment)")
      summary
      return 1
    fi
    step "install ($requirements)" 240 bash -c '
      set -euo pipefail
      python=$1 venv=$2 requirements=$3 want=$4
      shift 4  # the rest: constraint options for pip
      "$python" -c "import sys; assert sys.version_info >= (3, 11), f\"Python 3.11+ needed, not {sys.version}\""
      "$python" -m venv --clear "$venv"
      pip=("$venv/bin/python" -m pip install --disable-pip-version-check --progress-bar off)
      "${pip[@]}" "$@" -r "$requirements"
      "${pip[@]}" --no-deps -e .
      echo "$want" > "$venv/.kpsem-installed"
    ' install "$python" "$venv" "$requirements" "$want" ${constraints[@]:+"${constraints[@]}"}
  fi
  local py=$venv/bin/python
  if [ ! -x "$py" ] || ! "$py" -c 'import torch, kpsem' 2>/dev/null; then
    failed+=("environment (torch or kpsem not importable from $venv; nothing else can run)")
    summary
    return 1
  fi

  step "torch's view of the GPU" 60 "$py" - <<'EOF'
import torch

print(f"torch {torch.__version__}, built for CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
print(f"cuda available: {torch.cuda.is_available()}, devices: {torch.cuda.device_count()}")
if not torch.cuda.is_available():
    raise SystemExit("torch sees no GPU: every cuda test would be skipped (is this a CPU-only torch wheel?)")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"  cuda:{i} {p.name}, compute capability {p.major}.{p.minor}, {p.total_memory / 2**30:.1f} GiB, "
          f"{p.multi_processor_count} SMs")
nccl = torch.cuda.nccl.version()
nccl = ".".join(map(str, nccl)) if isinstance(nccl, tuple) else nccl
print(f"bf16 supported: {torch.cuda.is_bf16_supported()}; NCCL {nccl}")
conv, matmul = torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision
print(f"float32 precision: cuDNN conv {conv}, matmul {matmul} (tf32 or ieee)")
x = torch.randn(1024, 1024, device="cuda")
torch.testing.assert_close((x @ x).cpu(), x.cpu() @ x.cpu(), rtol=1e-2, atol=1e-1)
print("a matrix product on the GPU matches the CPU")
EOF

  # Only the files that hold cuda tests are collected: the app's tests import Streamlit, which an offline
  # GPU machine need not have.
  local cuda_files
  mapfile -t cuda_files < <(grep -l "pytest.mark.cuda" tests/test_*.py)
  step "pytest -m cuda" 180 "$py" -m pytest -m cuda -v -rs -p no:cacheprovider --durations=10 \
    --junitxml="$out/cuda-tests.xml" "${cuda_files[@]}"

  # Benchmarks that run on CUDA (a --device option, or bench_models.py's own CUDA pass), kept short.
  step "bench_models.py (CPU then CUDA)" 90 "$py" benchmarks/bench_models.py --rounds 3 --warmup 1 --train-rounds 2
  step "bench_explain.py --device cuda" 60 "$py" benchmarks/bench_explain.py --device cuda --part analysis --repeats 3
  step "bench_train.py --device cuda" 90 "$py" benchmarks/bench_train.py --device cuda --precision auto --rounds 3 \
    --steps 2 --skip-loader
  summary
  ((${#failed[@]} == 0))
}

summary() {
  {
    echo
    if ((${#failed[@]} == 0)); then
      echo "GPU check passed: every step succeeded (log: $out/gpu_check.log)"
    else
      echo "GPU check FAILED: ${#failed[@]} step(s)"
      printf '  - %s\n' "${failed[@]}"
    fi
  } | tee "$out/summary.txt"
}

main 2>&1 | tee "$out/gpu_check.log"
exit "${PIPESTATUS[0]}"
