"""The command line on a base install: with torch, onnx and pulse_trt.export made unimportable (a
sys.meta_path blocker in a subprocess), a warm-cache `pulse-trt upsample` finds its artefacts
through the torch-free cache index (pulse_trt/cache_index.py) and runs; so does
`pulse-trt bench --backends ort`. Neither imports torch at all."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from cli_helpers import FAST_STEPS
from shared import BLOCK_TORCH

pytestmark = pytest.mark.slow  # subprocesses importing the CLI, a bench run: about 2 minutes on 2 busy cores

BLOCKER = BLOCK_TORCH + textwrap.dedent("""
    import json
    from pulse_trt.cli import main
    rc = main(sys.argv[1:])
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "onnx") or m.startswith("pulse_trt.export"))
    print(json.dumps({"rc": rc, "leaked": leaked}), file=sys.stderr)
    sys.exit(rc)
""")


def run_blocked(*argv, cache) -> tuple[dict, str, str]:
    env = dict(os.environ, PULSE_TRT_CACHE=str(cache))
    proc = subprocess.run([sys.executable, "-c", BLOCKER, *map(str, argv)], capture_output=True, text=True,
                          timeout=600, env=env)
    status = json.loads(proc.stderr.strip().splitlines()[-1])
    return status, proc.stdout, proc.stderr


def test_warm_upsample_runs_without_torch(artifacts5, pulse_cache, dcgan_faces, tmp_path):
    out = tmp_path / "out"
    status, stdout, err = run_blocked("upsample", dcgan_faces[0], "--steps", FAST_STEPS, "-o", out, cache=pulse_cache)
    assert status == {"rc": 0, "leaked": []}, err[-2000:]
    record = json.loads((out / "face0_pulse.json").read_text())
    assert record["artifacts_key"] == artifacts5.key and record["steps"] == FAST_STEPS
    assert "exporting" not in err


def test_cold_upsample_without_torch_is_one_line(pulse_cache, dcgan_faces, tmp_path):
    """Artefacts the index does not know (another graph option): the torch path is needed, and
    without torch that is one line, exit 2, nothing written."""
    status, _, err = run_blocked("upsample", dcgan_faces[0], "--steps", FAST_STEPS, "--eps", "0.0031",
                                 "-o", tmp_path / "o", cache=pulse_cache)
    assert status["rc"] == 2 and status["leaked"] == []
    assert "needs torch" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_bench_ort_runs_without_torch_and_torch_backends_are_one_line(artifacts5, pulse_cache, tmp_path):
    status, stdout, err = run_blocked("bench", "--backends", "ort", "--steps", FAST_STEPS, "--batch", "1",
                                      "--repeats", "1", "-o", tmp_path / "b", cache=pulse_cache)
    assert status == {"rc": 0, "leaked": []}, err[-2000:]
    result = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert [(r["backend"], r["batch"]) for r in result["rows"]] == [("ort", 1)]
    assert result["rows"][0]["ms_per_step"] > 0 and "no torch" in result["workload"]["targets"]
    status, _, err = run_blocked("bench", "--backends", "torch,ort", "-o", tmp_path / "t", cache=pulse_cache)
    assert status["rc"] == 2 and "backend torch needs torch" in err and "Traceback" not in err
    assert not (tmp_path / "t").exists()
