#!/usr/bin/env bash
# Run the GPU suite from the repository root on a lent GPU machine; results land in $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
export OUT="${OUT:-$PWD/gpu_suite_out}"
# pulse_trt importable: editable, no dependencies, no build isolation (the GPU machine has no
# network; its image already holds torch, onnx, onnxscript, onnxruntime, cuda-bindings, cupy).
python3 -m pip install -q --no-deps --no-build-isolation -e . \
  || { echo "gpu_suite: cannot install pulse-trt (editable) here" >&2; exit 1; }
python3 benchmarks/gpu_suite.py --out "$OUT" "$@"

# Whole-system figures (issue: benchmarks): the full StyleGAN v1 1024 architecture with seeded
# random weights, PULSE defaults (100 steps, LR 32), every backend available on this machine,
# fp32 and bf16, batch 1 up to the largest that fits (out of memory ends a backend's sweep).
# PULSE_BENCH=0 skips it; PULSE_BENCH_BATCHES overrides the batch sizes.
if [ "${PULSE_BENCH:-1}" = 1 ]; then
  # shellcheck disable=SC2086
  python3 -m pulse_trt bench --generator stylegan1 --random-weights --resolution 1024 --lr-size 32 \
    --steps 100 --batch ${PULSE_BENCH_BATCHES:-1 4 16} --precision fp32 bf16 \
    --backends torch,torch-compile,ort-cuda,tensorrt --repeats 2 --device cuda \
    --cache-dir "${PULSE_BENCH_CACHE:-/tmp/pulse-trt-cache}" -o "$OUT/bench_stylegan1_1024"
fi
