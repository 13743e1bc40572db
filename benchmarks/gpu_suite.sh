#!/usr/bin/env bash
# The GPU suite as one command on a lent GPU machine; results land in $OUT (benchmarks/README.md).
#   bash benchmarks/gpu_suite.sh --budget 8m          # everything that fits in 8 minutes, most important first
#   bash benchmarks/gpu_suite.sh --dry-run            # anywhere: the parts, their budgets, what would skip
#   bash benchmarks/gpu_suite.sh --prewarm            # CPU-side work only (stage_ort_gpu.sh starts it)
# onnxruntime-gpu and MobileStyleGAN's weights come from benchmarks/device/stage_ort_gpu.sh, whose
# env file (PYTHONPATH, LD_LIBRARY_PATH, PULSE_TRT_WEIGHTS) is sourced when present.
set -euo pipefail
export PULSE_SUITE_T0=$(date +%s.%N)   # --budget counts from here
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export OUT="${OUT:-$PWD/gpu_suite_out}"
ENV_FILE="${PULSE_GPU_TARGET:-/tmp/pulse-gpu-stage}/env.sh"
# shellcheck disable=SC1090
[ -f "$ENV_FILE" ] && . "$ENV_FILE"
export PYTHONUNBUFFERED=1
for a in "$@"; do [ "$a" = --dry-run ] && exec "$PY" benchmarks/gpu_suite.py "$@"; done
# pulse_trt importable from this checkout: editable, no dependencies, no build isolation (the GPU
# machine has no network; its image holds torch, onnx, onnxscript, onnxruntime, cuda-bindings, cupy).
if ! "$PY" -c "import sys, pulse_trt; sys.exit(not pulse_trt.__file__.startswith('$PWD/'))" 2>/dev/null; then
  "$PY" -m pip install -q --no-deps --no-build-isolation -e . \
    || { echo "gpu_suite: cannot install pulse-trt (editable) here" >&2; exit 1; }
fi
for a in "$@"; do [ "$a" = --prewarm ] && exec "$PY" benchmarks/gpu_suite.py "$@"; done
mkdir -p "$OUT"
"$PY" benchmarks/gpu_suite.py --out "$OUT" "$@" 2>&1 | tee "$OUT/suite.log"
