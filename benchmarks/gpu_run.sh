#!/usr/bin/env bash
# The whole GPU session in one command, for a machine with one NVIDIA GPU, its own CUDA torch,
# nvcc, CMake, ninja and scikit-build-core, and no network. From the repository root:
#
#     OUT=/some/dir bash benchmarks/gpu_run.sh
#
# 1. preflight: what the machine has (GPU, driver, nvcc, torch, the Python packages imported);
#    pure-Python wheels found in .whl/ (carried with the tree) are installed first, offline;
# 2. the acceptance run (benchmarks/gpu_acceptance.py): `pip install --no-deps
#    --no-build-isolation -e .` into $PYTHON for nvidia-smi's compute capability, in a fresh build
#    tree, then tests/ops/test_native_cuda.py, the op bandwidths, the denoiser rows and 1000
#    `small` images, stopped at $ACCEPTANCE_LIMIT seconds;
# 3. the other GPU tests that need no TensorRT (ONNX Runtime on CUDA).
#
# Everything is written unbuffered into $OUT: run.log (this whole output), acceptance.json,
# acceptance.md, gpu-tests.log and logs.tar.gz (the stages' own logs); at most 8 files, as the
# device machine returns them. Exit status: the acceptance run's (0 when no stage failed), else
# the tests'. $ARCH (e.g. 90) builds for that compute capability instead of nvidia-smi's: a CPU
# machine rehearses the build that way, with every GPU stage and test reporting itself skipped.
# $STAGES (e.g. ops,sampling) reruns only those stages on a machine that still has the install.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the directory for the results}"
PYTHON=${PYTHON:-python3}
# Two runs and a machine start must fit in 15 minutes of GPU time: at most about 6 minutes each.
ACCEPTANCE_LIMIT=${ACCEPTANCE_LIMIT:-300}
TESTS_LIMIT=${TESTS_LIMIT:-60}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/vmddpm-gpu-run.XXXXXX)
exec > >(tee "$OUT/run.log") 2>&1

echo "== preflight $(date -u +%FT%TZ) in $(pwd)"
nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader || echo "nvidia-smi: no GPU listed"
(nvcc --version || /usr/local/cuda/bin/nvcc --version) 2>/dev/null | tail -1 || echo "nvcc not found"
cmake --version | head -1; ninja --version
if compgen -G ".whl/*.whl" > /dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir .whl/*.whl || exit 3
fi
"$PYTHON" - <<'PY' || exit 3
import importlib, sys
import torch
print(f"python {sys.version.split()[0]} ({sys.executable}); torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"GPU: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none visible'}")
missing = []
for name in ("numpy", "typer", "rich", "PIL", "onnx", "onnxscript", "onnxruntime", "pytest", "scikit_build_core"):
    try:
        importlib.import_module(name)
    except ImportError as error:
        missing.append(f"{name} ({error})")
if missing:
    sys.exit("missing Python packages (carry their wheels in .whl/): " + ", ".join(missing))
PY

echo "== acceptance (stopped at ${ACCEPTANCE_LIMIT} s)"
"$PYTHON" benchmarks/gpu_acceptance.py --out "$WORK/acceptance" --time-limit "$ACCEPTANCE_LIMIT" ${ARCH:+--arch "$ARCH"} ${STAGES:+--stages "$STAGES"}
acceptance=$?

echo "== GPU tests that need no TensorRT (stopped at ${TESTS_LIMIT} s)"
timeout "$TESTS_LIMIT" "$PYTHON" -m pytest tests/runtime/test_source.py -k cuda -q -p no:cacheprovider -rs 2>&1 | tee "$OUT/gpu-tests.log"
tests=$?

cp "$WORK/acceptance/acceptance.json" "$WORK/acceptance/acceptance.md" "$OUT/" 2>/dev/null
(cd "$WORK/acceptance" && tar czf "$OUT/logs.tar.gz" --ignore-failed-read ./*.log 2>/dev/null)
echo "== done $(date -u +%FT%TZ): acceptance exit $acceptance, tests exit $tests"
[ "$acceptance" -ne 0 ] && exit "$acceptance"
exit "$tests"
