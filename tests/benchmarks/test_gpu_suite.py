"""benchmarks/gpu_suite.py without a GPU: the plan and its dry run, budgets and deadlines (stub
parts that finish, fail, overrun), skips with reasons, the rows and the files left in $OUT."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("gpu_suite", REPO / "benchmarks" / "gpu_suite.py")
gpu_suite = importlib.util.module_from_spec(_spec)
sys.modules["gpu_suite"] = gpu_suite  # dataclasses look their module up
_spec.loader.exec_module(gpu_suite)
Part = gpu_suite.Part


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("PULSE_TRT_WEIGHTS", str(tmp_path / "no-weights"))


def test_parts_are_ordered_by_importance_and_uniquely_named():
    names = [p.name for p in gpu_suite.PARTS]
    assert len(names) == len(set(names))
    assert names[:5] == ["env", "prewarm-wait", "dcgan-fp32-b1", "stylegan1-fp32-b1", "mobilestylegan-fp32-b1"]
    # every generator's fp32 batch-1 row comes before its bf16 and largest-batch rows
    for gen in gpu_suite.GENERATORS:
        first = names.index(f"{gen}-fp32-b1")
        assert all(names.index(n) > first for n in names if n.startswith(gen) and n != f"{gen}-fp32-b1")
    assert names.index("gpu-tests") < names.index("kernels") < names.index("stylegan1-bf16-b1")
    assert len(gpu_suite.OUT_FILES) <= 8
    # the prewarm exports what the parts need, in their order
    assert gpu_suite.EXPORTS[0] == ("dcgan", "fp32") and ("stylegan1", "bf16") in gpu_suite.EXPORTS


@pytest.mark.parametrize("text, seconds", [("8m", 480), ("90s", 90), ("1m30s", 90), ("1h", 3600), ("75", 75), ("2.5m", 150)])
def test_parse_budget(text, seconds):
    assert gpu_suite.parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["8 minutes", "m8", "", "8x"])
def test_parse_budget_rejects(text):
    with pytest.raises(Exception, match="budget"):
        gpu_suite.parse_budget(text)


def test_dry_run_lists_parts_budgets_and_skips_and_touches_nothing(capsys, tmp_path, no_weights):
    assert gpu_suite.main(["--dry-run", "--out", str(tmp_path / "o"), "--budget", "8m"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith(f"GPU suite plan: {len(gpu_suite.PARTS)} parts, budget 480 s (8.0 min)")
    rows = [ln for ln in lines if ln[:2].strip().isdigit()]
    assert [r.split()[1] for r in rows] == [p.name for p in gpu_suite.PARTS]
    assert rows[0].split()[2:4] == ["30", "s"] and rows[0].split()[4] == "0:30"
    assert "past the budget in the worst case" in rows[-1] and "past the budget" not in rows[2]
    assert "mobilestylegan-fp32-b1, mobilestylegan-bf16-b1" in out and "neither carried nor cached" in out
    assert gpu_suite.continuous_batching() is None  # issue 12 is in this checkout: the stream part runs
    assert "stream-dcgan: continuous batching" not in out
    assert "suite.md, suite.json, rows.jsonl" in out
    assert not (tmp_path / "o").exists()


def test_dry_run_through_the_shell_wrapper(tmp_path, no_weights):
    env = dict(os.environ, PULSE_GPU_TARGET=str(tmp_path), PYTHON=sys.executable, OUT=str(tmp_path / "o"))
    r = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_suite.sh"), "--dry-run", "--budget", "5m"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "budget 300 s (5.0 min)" in r.stdout and not (tmp_path / "o").exists()


def test_only_keeps_env_first(capsys):
    assert gpu_suite.main(["--dry-run", "--only", "kernels"]) == 0
    rows = [ln.split()[1] for ln in capsys.readouterr().out.splitlines() if ln[:2].strip().isdigit()]
    assert rows == ["env", "kernels"]
    with pytest.raises(SystemExit):
        gpu_suite.parse_args(["--only", "nonsense"])


def _cmd(name, code, budget=20.0):
    return Part(name, "cmd", budget, f"stub {name}", {"argv": [sys.executable, "-c", code]})


def test_run_suite_deadlines_failures_skips_and_files(tmp_path, monkeypatch, no_weights):
    monkeypatch.setattr(gpu_suite, "WORK", tmp_path / "work")
    out = tmp_path / "out"
    writer = (f"import json,time; f=open({str(out / 'rows.jsonl')!r},'a'); "
              "f.write(json.dumps({'kind':'bench','generator':'dcgan','precision':'fp32','backend':'ort-cuda','batch':1,"
              "'seconds_per_search':0.5,'ms_per_step':5.0,'images_per_s':2.0})+'\\n'); f.close()")
    parts = [
        _cmd("writes", writer),
        _cmd("overruns", writer.replace("'ort-cuda'", "'torch'") + "; time.sleep(60)", budget=1.5),
        _cmd("fails", "raise SystemExit(3)"),
        Part("stylegan1-fp32-max", "engine", 10, "needs a batch-1 row", {"generator": "stylegan1", "precision": "fp32",
                                                                         "batch": "max", "backends": ("ort-cuda",)}),
        Part("prewarm-wait", "prewarm-wait", 5, "no prewarm ran"),
        _cmd("late", "pass", budget=30),
    ]
    rc = gpu_suite.run_suite(parts, out, budget=12.0, reserve=0.0, command="gpu_suite.py --budget 12s")
    assert rc == 1  # a part failed
    rows = gpu_suite.read_rows(out)
    status = {r["part"]: r for r in rows if r["kind"] == "part"}
    assert status["writes"]["status"] == "ok"
    assert status["overruns"]["status"] == "timeout" and status["overruns"]["seconds"] < 10
    assert status["fails"]["status"] == "failed" and status["fails"]["why"] == "exit status 3"
    assert status["stylegan1-fp32-max"]["status"] == "skipped" and "no batch-1 row" in status["stylegan1-fp32-max"]["why"]
    assert status["prewarm-wait"]["status"] == "ok"
    assert next(r for r in rows if r["kind"] == "prewarm")["status"] == "none ran"
    assert [r["backend"] for r in rows if r["kind"] == "bench"] == ["ort-cuda", "torch"]  # the overrun's row is kept
    assert rows[0]["kind"] == "meta" and rows[-1]["kind"] == "end"
    files = {p.name for p in out.iterdir()}
    assert files <= set(gpu_suite.OUT_FILES) and {"suite.md", "suite.json", "rows.jsonl"} <= files
    md = (out / "suite.md").read_text()
    assert "| overruns | timeout |" in md and "stopped at its deadline" in md and "Elapsed:" in md
    assert "| dcgan | fp32 | ort-cuda | 1 | 5.00 | 2.00 | 1.00x |" in md  # torch 0.5 s / ort 0.5 s
    assert json.loads((out / "suite.json").read_text())["rows"][0]["command"] == "gpu_suite.py --budget 12s"


def test_run_suite_skips_parts_with_no_time_left(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_suite, "WORK", tmp_path / "work")
    # a part starts when at least min(10 s, its budget) is left
    rc = gpu_suite.run_suite([_cmd("a", "import time; time.sleep(30)", budget=2.0), _cmd("b", "pass", budget=2.0)],
                             tmp_path / "o", budget=3.0, reserve=0.0)
    status = {r["part"]: r for r in gpu_suite.read_rows(tmp_path / "o") if r["kind"] == "part"}
    assert rc == 0 and status["a"]["status"] == "timeout"
    assert status["b"]["status"] == "skipped" and status["b"]["why"].startswith("no time left")


def _env(cuda=True, ort_ok=True):
    return {"kind": "env", "cuda": cuda, "ort_cuda": {"ok": ort_ok, "why": "no CUDA provider"}}


def test_skip_reasons(no_weights):
    by = gpu_suite.PART_BY_NAME
    assert gpu_suite.skip_reason(by["env"], []) is None
    assert gpu_suite.skip_reason(by["kernels"], [_env(cuda=False)]) == "no CUDA GPU (env)"
    assert gpu_suite.skip_reason(by["kernels"], [_env()]) is None
    assert "neither carried nor cached" in gpu_suite.skip_reason(by["mobilestylegan-fp32-b1"], [_env()])
    assert "not active: no CUDA provider" in gpu_suite.skip_reason(by["stylegan1-bf16-b1"], [_env(ort_ok=False)])
    assert gpu_suite.skip_reason(by["stylegan1-fp32-b1"], [_env(ort_ok=False)]) is None  # torch still runs
    assert gpu_suite.skip_reason(by["stream-dcgan"], [_env()]) is None  # continuous batching is here
    b1 = {"kind": "bench", "generator": "dcgan", "precision": "fp32", "batch": 1, "backend": "torch", "seconds_per_search": 1.0}
    assert "no batch-1 row" in gpu_suite.skip_reason(by["dcgan-fp32-max"], [_env()])
    assert gpu_suite.skip_reason(by["dcgan-fp32-max"], [_env(), b1]) is None


def test_mobilestylegan_weights_found_when_cached(tmp_path, monkeypatch):
    weights = pytest.importorskip("pulse_trt.weights")
    entry = tmp_path / "mobilestylegan" / weights.WHEEL_SHA256[:16]
    entry.mkdir(parents=True)
    f = entry / weights.WEIGHTS_FILE
    f.write_bytes(b"weights")
    (entry / weights.PROVENANCE).write_text(json.dumps({"weights_sha256": weights.sha256_file(f)}))
    monkeypatch.setenv("PULSE_TRT_WEIGHTS", str(tmp_path))
    assert gpu_suite.mobilestylegan_weights() == (str(f), None)


def test_choose_batch_fits_the_time():
    rows = [{"kind": "bench", "generator": "stylegan1", "batch": 1, "backend": "ort-cuda", "precision": "bf16", "seconds_per_search": 1.0},
            {"kind": "bench", "generator": "stylegan1", "batch": 1, "backend": "torch", "precision": "fp32", "seconds_per_search": 3.0}]
    # (1 warm-up + 1 timed) x (1 + 3) s per image = 8 s per image of batch
    assert gpu_suite.choose_batch(rows, "stylegan1", "bf16", ("ort-cuda", "torch"), 1, 70.0, 64) == 8
    assert gpu_suite.choose_batch(rows, "stylegan1", "bf16", ("ort-cuda",), 1, 70.0, 64) == 32
    assert gpu_suite.choose_batch(rows, "stylegan1", "bf16", ("ort-cuda",), 1, 70.0, 16) == 16
    assert gpu_suite.choose_batch(rows, "stylegan1", "bf16", ("ort-cuda", "torch"), 1, 10.0, 64) == 1
    assert gpu_suite.choose_batch(rows, "dcgan", "fp32", ("ort-cuda",), 1, 70.0, 64) == 1


def test_markdown_tables_and_speedups():
    rows = [{"kind": "meta", "command": "gpu_suite.py --budget 8m", "budget_s": 480, "commit": "abc1234"},
            {"kind": "env", "device": "NVIDIA H200", "cuda": True, "torch": "2.11.0", "torch_cuda": "13.0", "python": "3.12.3",
             "nvcc": "Build cuda_13.0", "machine": {"cpu": "Xeon", "cores": 16, "gpu": {"name": "NVIDIA H200", "driver": "580.1"}},
             "ort_cuda": {"ok": True, "onnxruntime": "1.31.1", "cuda_options": {"use_tf32": "1"}}},
            {"kind": "bench", "generator": "stylegan1", "precision": "fp32", "backend": "torch", "batch": 1, "ms_per_step": 30.0,
             "images_per_s": 0.3, "seconds_per_search": 3.0, "flop_floor_fraction": 0.05, "peak_gpu_mib": 9000.0, "peak_flops": 5e13},
            {"kind": "bench", "generator": "stylegan1", "precision": "fp32", "backend": "torch-compile", "batch": 1, "ms_per_step": 20.0,
             "images_per_s": 0.5, "seconds_per_search": 2.0, "flop_floor_fraction": 0.08, "peak_gpu_mib": 9000.0, "peak_flops": 5e13},
            {"kind": "bench", "generator": "stylegan1", "precision": "bf16", "backend": "ort-cuda", "batch": 1, "ms_per_step": 2.5,
             "images_per_s": 4.0, "seconds_per_search": 0.25, "flop_floor_fraction": 0.4, "peak_gpu_mib": 3000.0, "peak_flops": 7e14},
            {"kind": "verify", "generator": "stylegan1", "precision": "fp32", "graph": "step", "worst": 8e-4, "worst_max": 3e-3,
             "tolerance": 1e-4, "use_tf32": "1", "valid": False, "over": ["next.latent"],
             "without_tf32": {"worst": 2e-6, "valid": True}, "note": "TF32 rounding"},
            {"kind": "copy", "gbps": 4000.0},
            {"kind": "kernel", "op": "downsample_loss", "batch": 8, "size": 1024, "lr_size": 32, "dtype": "float32",
             "max_rel_err": 3e-7, "ours_us": 40.0, "torch_us": 400.0, "gbps": 3200.0, "valid": True},
            {"kind": "tests", "command": "-m pytest -m gpu", "summary": "12 passed", "returncode": 0, "seconds": 40.0},
            {"kind": "part", "part": "env", "status": "ok", "seconds": 4.2, "deadline_s": 30}]
    md = gpu_suite.markdown(rows)
    assert md.startswith("# GPU suite: NVIDIA H200\n")
    assert "driver 580.1, CUDA 13.0 (torch 2.11.0)" in md and "CUDA provider active (use_tf32=1)" in md
    assert "| stylegan1 | bf16 | ort-cuda | 1 | 2.50 | 4.00 | 12.00x | - | 40.0% | 3000 |" in md
    assert "| stylegan1 | fp32 | torch-compile | 1 | 20.00 | 0.50 | 1.50x | 1.00x | 8.0% | 9000 |" in md
    assert "fp32 50 TFLOP/s" in md and "bf16 700 TFLOP/s" in md
    assert ("| stylegan1 | fp32 | cuda | step | 8.00e-04 | 3.00e-03 | 0.0001 | 1 | FAIL: next.latent (TF32 rounding; "
            "without TF32 worst 2.00e-06) |") in md
    assert "| 8 | 1024 -> 32 | float32 | 3.0e-07 | 40.0 | 3200 | 80% | 400.0 | 10.0x |" in md
    assert "12 passed (exit 0" in md and "| env | ok | 4.2 | 30 |  |" in md


@pytest.mark.gpu
def test_kernel_bench_one_small_case():
    import argparse

    rows = []
    args = argparse.Namespace(size=256, lr_sizes=[32], batches=[1], dtypes=["float32"], warmup=1, repeat=3)
    report = gpu_suite.kernel_bench(args, on_row=rows.append)
    assert report["downsample_loss"][0]["valid"] and report["sphere_update"][0]["valid"]
    assert [r["kind"] for r in rows] == ["copy", "kernel", "kernel"]


def test_env_part_on_a_cpu_machine(tmp_path):
    ctx = gpu_suite.Child(tmp_path, 60)
    assert gpu_suite.part_env(ctx) == 0
    env = gpu_suite.env_row(gpu_suite.read_rows(tmp_path))
    pytest.importorskip("torch")
    assert env["cuda"] is False and env["ort_cuda"]["ok"] is False and env["ort_cuda"]["why"]
    assert env["machine"]["cores"] >= 1 and env["torch"]
    assert "CUDA provider NOT active" in (tmp_path / "suite.md").read_text()


@pytest.mark.slow
def test_engine_part_runs_end_to_end_on_cpu(tmp_path, monkeypatch):
    """The engine part's code path (export, verification, run_bench per backend, rows) on dcgan
    with the CPU backends: what the GPU window runs with device="cuda" and ort-cuda."""
    pytest.importorskip("torch")
    monkeypatch.setattr(gpu_suite, "WORK", tmp_path / "work")
    ctx = gpu_suite.Child(tmp_path / "out", 600)
    assert gpu_suite.part_engine(ctx, "dcgan", "fp32", 1, ("ort", "torch"), 1, True, device="cpu") == 0
    rows = gpu_suite.read_rows(tmp_path / "out")
    verify = [r for r in rows if r["kind"] == "verify"]
    assert [v["graph"] for v in verify] == ["step", "render"]
    assert all(v["valid"] and v["providers"][0] == "CPUExecutionProvider" and v["worst"] <= 1e-4 for v in verify)
    bench = [r for r in rows if r["kind"] == "bench"]
    assert [(r["backend"], r["batch"], r["precision"], r["steps"]) for r in bench] == [("ort", 1, "fp32", 100), ("torch", 1, "fp32", 100)]
    assert all("note" not in r for r in bench)  # run_bench found the suite's export: the artefact keys agree
    assert len(gpu_suite._entries(tmp_path / "work" / "cache")) == 1
    md = (tmp_path / "out" / "suite.md").read_text()
    assert "| dcgan | fp32 | ort | 1 |" in md and "| dcgan | fp32 | cpu | step |" in md
    assert (tmp_path / "out" / "throughput.png").stat().st_size > 1000


def test_a_part_that_raises_leaves_one_error_line(tmp_path, monkeypatch):
    def broken(ctx):
        raise RuntimeError("cannot load the ONNX graphs\nsecond line")
    monkeypatch.setattr(gpu_suite, "part_env", broken)
    assert gpu_suite.run_part("env", tmp_path, 30) == 1
    err = [r for r in gpu_suite.read_rows(tmp_path) if r["kind"] == "error"]
    assert err == [{"t": err[0]["t"], "kind": "error", "part": "env", "error": "RuntimeError: cannot load the ONNX graphs"}]


def test_sigterm_to_the_suite_ends_the_running_part(tmp_path):
    import time

    pid_file = tmp_path / "child.pid"
    sleeper = tmp_path / "sleeper.py"
    sleeper.write_text(f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)\n")
    driver = tmp_path / "driver.py"
    driver.write_text(f"""import sys
from pathlib import Path
sys.path.insert(0, {str(REPO / 'benchmarks')!r})
import gpu_suite as g
g.WORK = Path({str(tmp_path / 'work')!r})
g.run_suite([g.Part("sleeper", "cmd", 60, "s", {{"argv": [sys.executable, {str(sleeper)!r}]}})], {str(tmp_path / 'out')!r}, 60)
""")
    parent = subprocess.Popen([sys.executable, str(driver)])
    for _ in range(400):
        if pid_file.exists() and pid_file.read_text():
            break
        time.sleep(0.05)
    child = int(pid_file.read_text())
    parent.terminate()
    assert parent.wait(20) == 128 + 15
    for _ in range(100):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the part outlived the suite")


def test_engine_part_keeps_going_when_verification_or_a_backend_fails(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_suite, "WORK", tmp_path / "work")
    monkeypatch.setattr(gpu_suite, "export_for", lambda *a: (object(), tmp_path / "art", None, 0.1))

    def verify(*a):
        raise RuntimeError("Could not find an implementation for ConvTranspose(22)\nmore")
    calls = []

    def bench(work, backends, **kw):
        calls.append(backends)
        if backends == ("ort",):
            raise RuntimeError("CUDA graph capture failed")
        return {"rows": [{"backend": "torch", "precision": "fp32", "batch": 1, "seconds_per_search": 1.0}],
                "skipped": [], "peak_flops": {"fp32": 1e11}, "machine_label": "cpu"}
    monkeypatch.setattr(gpu_suite, "verify_graphs", verify)
    monkeypatch.setattr("pulse_trt.bench.run_bench", bench)
    ctx = gpu_suite.Child(tmp_path / "out", 60)
    assert gpu_suite.part_engine(ctx, "dcgan", "fp32", 1, ("ort", "torch"), 1, True, device="cpu") == 1
    rows = gpu_suite.read_rows(tmp_path / "out")
    assert calls == [("ort",), ("torch",)]
    assert [r["kind"] for r in rows] == ["export", "verify", "skip", "bench"]
    assert rows[1]["error"] == "RuntimeError: Could not find an implementation for ConvTranspose(22)"
    assert rows[2]["why"] == "error: RuntimeError: CUDA graph capture failed"
    md = (tmp_path / "out" / "suite.md").read_text()
    assert "ERROR: RuntimeError: Could not find" in md and "error: RuntimeError: CUDA graph capture failed" in md


@pytest.mark.slow
def test_verification_falls_back_to_the_float64_arbiter(tmp_path, dcgan):
    """Over a (here absurdly small) tolerance, fp32 outputs are judged against float64 as the
    export verification does: ORT within 4x torch float32's own error passes."""
    from pulse_trt.engine.options import PulseOptions
    from pulse_trt.export.onnx_export import export_cached

    art = export_cached(dcgan, PulseOptions(), 8, tmp_path, verify=False, progress=False)
    strict = gpu_suite.verify_graphs(art, dcgan, "fp32", "cpu", batches=(1,), tolerance=1e-12)
    assert [r["graph"] for r in strict] == ["step", "render"]
    for r in strict:
        assert r["float64"] and set(r["float64"]) == {n for n, e in r["per_output"].items() if e > 1e-12}
        for j in r["float64"].values():
            assert j["ort_vs_f64"] < 1e-5 and j["torch_f32_vs_f64"] < 1e-5
    assert "without_tf32" not in strict[0]  # CPU: no TF32 rerun
