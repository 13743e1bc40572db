"""The engine runs in a process where torch (and pulse_trt.export, and onnx) cannot be imported:
a subprocess installs a sys.meta_path blocker, loads pre-exported artefacts and runs the search."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from shared import BLOCK_TORCH as BLOCKER

SEARCH = textwrap.dedent("""
    import json, sys
    import numpy as np
    try:
        import torch
        raise SystemExit("torch imported despite the blocker")
    except ImportError:
        pass
    from pulse_trt.engine.api import PulseEngine
    from pulse_trt.engine.result import to_uint8
    art = sys.argv[1]
    with PulseEngine(art, slots=4) as engine:
        n = engine.lr_size
        rgb = (np.arange(n * n * 3) % 251).astype(np.uint8).reshape(n, n, 3)
        results = engine.upsample([rgb, rgb[::-1].copy()])
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "onnx") or m.startswith("pulse_trt.export"))
    print(json.dumps({"leaked": leaked, "records": [r.record for r in results],
                      "hr": [list(to_uint8(r.hr).shape) for r in results]}))
""")


def run_without_torch(artifacts_dir) -> dict:
    code = BLOCKER + SEARCH
    proc = subprocess.run([sys.executable, "-c", code, str(artifacts_dir)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_engine_runs_toy_artifacts_without_torch(toy_dir):
    out = run_without_torch(toy_dir)
    assert out["leaked"] == []
    assert out["hr"] == [[8, 8, 3], [8, 8, 3]]
    assert [r["input"] for r in out["records"]] == [0, 1] and all(r["backend"] == "ort" for r in out["records"])
    assert all(r["steps"] == 20 for r in out["records"])


@pytest.mark.slow
def test_engine_runs_exported_dcgan_without_torch(dcgan_dir):
    out = run_without_torch(dcgan_dir)
    assert out["leaked"] == [] and out["hr"] == [[64, 64, 3], [64, 64, 3]]
    assert all(r["steps"] == 100 for r in out["records"])
