"""benchmarks/gpu_suite.py without a GPU: arguments, the dry-run plan, the report files."""
from __future__ import annotations

import importlib.util
import json

import pytest

from pulse_trt.kernels.loader import REPO_ROOT

_spec = importlib.util.spec_from_file_location("gpu_suite", REPO_ROOT / "benchmarks" / "gpu_suite.py")
gpu_suite = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_suite)


def test_defaults_cover_the_issue_cases(monkeypatch):
    monkeypatch.setenv("OUT", "/tmp/out-dir")
    args = gpu_suite.parse_args([])
    assert args.out == "/tmp/out-dir" and args.size == 1024
    assert sorted({(b, lr) for b, lr, _ in gpu_suite.cases(args)}) == [(1, 16), (1, 32), (1, 64), (8, 16), (8, 32), (8, 64)]


def test_dry_run_lists_steps_and_touches_nothing(capsys, tmp_path):
    assert gpu_suite.main(["--dry-run", "--out", str(tmp_path / "o"), "--lr-sizes", "32", "--batches", "3", "--dtypes", "float32"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("1. build: cmake -S . -B build") and "pytest -m gpu" in lines[1]
    assert any("batch 3, 1024 px -> 32 px, float32" in s for s in lines)
    assert not (tmp_path / "o").exists()
    assert len(gpu_suite.plan(gpu_suite.parse_args(["--skip-build", "--skip-tests"]))) == 1 + 12 + 2  # bandwidth, 12 cases, sphere_update, write


def _report():
    return {"environment": {"device": "NVIDIA H100 80GB HBM3", "driver": "580.1", "cuda": "13.0", "torch": "2.11",
                            "command": "python benchmarks/gpu_suite.py"},
            "tests": {"summary": "60 passed"}, "copy_gbps": 3000.0,
            "downsample_loss": [{"batch": 8, "size": 1024, "lr_size": 32, "dtype": "float32", "max_rel_err": 3e-7,
                                 "ours_us": 40.0, "torch_us": 400.0, "gbps": 2400.0, "valid": True}],
            "sphere_update": [{"opt": "adam", "shape": [8, 18, 512], "max_rel_err": 1e-7, "ours_us": 5.0, "torch_us": 60.0}]}


def test_markdown_table_values():
    md = gpu_suite.markdown_table(_report())
    assert md.startswith("# GPU suite: NVIDIA H100 80GB HBM3")
    assert "| 8 | 1024 -> 32 | float32 | 3.0e-07 | 40.0 | 2400 | 80% | 400.0 | 10.0x |" in md
    assert "driver 580.1, CUDA 13.0" in md and "`python benchmarks/gpu_suite.py`" in md and "3000 GB/s" in md


def test_write_report(tmp_path):
    gpu_suite.write_report(_report(), tmp_path / "r")
    assert json.loads((tmp_path / "r" / "gpu_suite.json").read_text())["copy_gbps"] == 3000.0
    assert (tmp_path / "r" / "gpu_suite.md").read_text() == gpu_suite.markdown_table(_report())


@pytest.mark.gpu
def test_suite_runs_one_small_case(tmp_path):
    rc = gpu_suite.main(["--skip-build", "--skip-tests", "--out", str(tmp_path), "--size", "256", "--lr-sizes", "32",
                         "--batches", "1", "--dtypes", "float32", "--warmup", "1", "--repeat", "3"])
    report = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert rc == 0 and report["downsample_loss"][0]["valid"]
