"""pulse-trt bench: the harness end to end on a tiny workload, and its reports."""
import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

from pulse_trt.bench import Workload, run_bench, to_markdown, write_results  # noqa: E402
from pulse_trt.engine.errors import PulseError  # noqa: E402


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory):
    work = Workload(generator="dcgan", lr_size=8, steps=3, batches=(1, 2), repeats=1, profile=True)
    return run_bench(work, ("torch", "ort", "ort-cuda"), cache_root=tmp_path_factory.mktemp("cache"),
                     device="cpu", progress=lambda m: None)


def test_rows_per_backend_and_batch(tiny_result):
    rows = {(r["backend"], r["batch"]) for r in tiny_result["rows"]}
    assert rows == {("torch", 1), ("torch", 2), ("ort", 1), ("ort", 2)}
    for r in tiny_result["rows"]:
        assert r["ms_per_step"] > 0 and r["images_per_s"] > 0
        assert r["flops_per_step"] > 0 and 0 < r["flop_floor_fraction"] < 10
        assert r["speedup_vs_torch"] > 0
    torch_rows = [r for r in tiny_result["rows"] if r["backend"] == "torch"]
    assert all(r["speedup_vs_torch"] == 1.0 for r in torch_rows)
    # FLOPs grow linearly with the batch
    ort = {r["batch"]: r["flops_per_step"] for r in tiny_result["rows"] if r["backend"] == "ort"}
    assert ort[2] == 2 * ort[1]
    assert tiny_result["skipped"] == [{"backend": "ort-cuda", "precision": "fp32", "why": "needs a CUDA GPU"}]
    assert tiny_result["machine"]["cores"] >= 1 and tiny_result["machine_label"]


def test_reports_written(tiny_result, tmp_path):
    paths = write_results(tiny_result, tmp_path, command="pulse-trt bench -o x")
    assert sorted(p.name for p in paths) == ["bench.json", "bench.md", "bench.png"]
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["command"] == "pulse-trt bench -o x" and len(data["rows"]) == 4
    md = (tmp_path / "bench.md").read_text()
    assert "| ort | fp32 | 2 |" in md and "pulse-trt bench -o x" in md and tiny_result["machine_label"] in md
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_markdown_of_empty_result():
    res = {"workload": {"generator": "dcgan", "lr_size": 8, "steps": 1}, "machine_label": "x", "date": "d",
           "rows": [], "skipped": [{"backend": "tensorrt", "precision": "fp32", "why": "TensorRT is not installed"}]}
    assert "skipped tensorrt (fp32): TensorRT is not installed" in to_markdown(res)


def test_unknown_backend():
    with pytest.raises(PulseError, match="unknown backend"):
        run_bench(Workload(steps=1, batches=(1,), repeats=1), ("nope",), device="cpu")


def test_peak_recorded_and_named(tiny_result):
    """The matmul peak behind the FLOP-floor column is in the JSON and under the table."""
    peak = tiny_result["peak_flops"]["fp32"]
    assert peak > 1e9
    r = tiny_result["rows"][0]
    assert r["flop_floor_fraction"] == pytest.approx(r["flops_per_step"] / (r["ms_per_step"] / 1000) / peak, rel=1e-2)
    assert f"fp32 {peak / 1e9:.0f} GFLOP/s" in to_markdown(tiny_result)


def test_cpu_peak_takes_the_faster_library(monkeypatch):
    """CPU: the larger of torch's and ONNX Runtime's matmul rates, whichever it is."""
    import pulse_trt.bench as bench

    monkeypatch.setattr(bench, "_ort_matmul_flops", lambda n: 1e15)
    assert bench.peak_flops("cpu", "fp32") == 1e15
    monkeypatch.setattr(bench, "_ort_matmul_flops", lambda n: 1.0)
    assert 1e9 < bench.peak_flops("cpu", "fp32") < 1e15


# ---- stream mode --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stream_result(tmp_path_factory):
    from pulse_trt.bench import Stream, run_stream  # noqa: PLC0415

    work = Workload(generator="dcgan", lr_size=8, steps=6, repeats=1)
    return run_stream(work, Stream(inputs=5, slots=2, sync_every=3, restarts=1), ("ort", "torch"),
                      cache_root=tmp_path_factory.mktemp("cache"), device="cpu", progress=lambda m: None)


def test_stream_mode_reports_throughput_latency_and_compute(stream_result):
    (row,) = stream_result["rows"]
    assert row["backend"] == "ort" and stream_result["skipped"][0]["backend"] == "torch"
    assert row["images_per_s"] > 0 and 0 < row["latency_p50_s"] <= row["latency_p90_s"] <= row["latency_p99_s"]
    recs = row["records"]
    assert [r["input"] for r in recs] == list(range(5)) and row["starts"] == sum(r["starts"] for r in recs)
    assert all(r["starts"] in (1, 2) for r in recs) and all(r["search_steps"] == 6 * r["starts"] for r in recs)
    assert row["row_steps"] == 6 * row["starts"] and row["compute_vs_lockstep"] == pytest.approx(row["starts"] / 5)
    # 2 slots, runs of up to 3 steps: one host sync per 3 graph steps (fewer where a run ends early)
    assert row["syncs"] * 3 >= row["graph_steps"] > row["syncs"]
    assert row["syncs_per_step"] == pytest.approx(row["syncs"] / row["graph_steps"], abs=1e-4)
    assert row["success_rate"] == sum(r["success"] for r in recs) / 5
    assert stream_result["stream"]["slots"] == 2 and stream_result["workload"]["options"]["restarts"] == 1


def test_stream_reports_written(stream_result, tmp_path):
    paths = write_results(stream_result, tmp_path, command="pulse-trt bench --stream 5 -o x")
    assert sorted(p.name for p in paths) == ["stream.json", "stream.md"]
    md = (tmp_path / "stream.md").read_text()
    assert "a stream of 5 inputs through 2 slots, sync every 3 steps" in md and "| ort | fp32 |" in md
    assert "pulse-trt bench --stream 5 -o x" in md and "skipped torch" in md


def test_cli_help_describes_every_flag_and_warns_when_busy(monkeypatch, capsys):
    """`pulse-trt bench --help`: every flag has a description (the memory column and the cache's
    $PULSE_TRT_CACHE explained); -o/--output like the other commands; a load average above the
    core count is a warning."""
    import argparse
    import os

    from pulse_trt.cli import bench as bench_cli

    sub = argparse.ArgumentParser().add_subparsers()
    bench_cli.add_parser(sub)
    p = sub.choices["bench"]
    for action in p._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"{action.option_strings} has no help"
    assert "--output" in p._option_string_actions and "-o" in p._option_string_actions
    assert "$PULSE_TRT_CACHE" in p.format_help() and "peak RSS MiB" in p.format_help()
    monkeypatch.setattr(os, "getloadavg", lambda: (9.5, 9.0, 8.0))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert "busy (load average 9.5 on 2 cores)" in bench_cli.load_warning()
    monkeypatch.setattr(os, "getloadavg", lambda: (0.5, 0.5, 0.5))
    assert bench_cli.load_warning() is None


def test_profile_summarises_the_step_graph_per_ort_row(tiny_result, tmp_path):
    """--profile: each ONNX Runtime row carries ORT's per-op summary of a short profiled search
    (shares of kernel time summing to 1; dcgan's step holds ConvTranspose forward and Conv
    backward); the torch rows do not; bench.md shows the tables."""
    for r in tiny_result["rows"]:
        if r["backend"] == "torch":
            assert "profile" not in r
            continue
        prof = r["profile"]
        assert prof["runs"] >= 3 and prof["kernel_ms_per_run"] > 0
        ops = {o["op"] for o in prof["by_op"]}
        assert {"Conv", "ConvTranspose"} <= ops
        assert abs(sum(o["share"] for o in prof["by_op"]) - 1.0) < 1e-2
        assert prof["top_nodes"] and prof["top_nodes"][0]["share"] >= prof["top_nodes"][-1]["share"]
    write_results(tiny_result, tmp_path)
    md = (tmp_path / "bench.md").read_text()
    assert "ONNX Runtime profile of the step" in md and "| op type | ms/step | share | nodes |" in md
