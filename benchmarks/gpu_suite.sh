#!/usr/bin/env bash
# Run the GPU suite from the repository root on a lent GPU machine; results land in $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
export OUT="${OUT:-$PWD/gpu_suite_out}"
pip install -q -e . --no-deps 2>/dev/null || true   # pulse_trt importable (editable, no downloads)
python benchmarks/gpu_suite.py --out "$OUT" "$@"
