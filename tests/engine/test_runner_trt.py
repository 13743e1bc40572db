"""engine.runner_trt: what can be checked without TensorRT (row runs, engine-file and import
errors, buffer planning), and the full search on TensorRT where it is installed."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from pulse_trt.engine.errors import PulseError
from pulse_trt.engine.manifest import load_manifest
from pulse_trt.engine.runner import plan_buffers
from pulse_trt.engine.runner_trt import TrtRunner, row_runs

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def test_row_runs():
    assert row_runs(np.array([True, True, False, True, False, False, True, True, True])) == [(0, 2), (3, 1), (6, 3)]
    assert row_runs(np.zeros(4, bool)) == [] and row_runs(np.ones(3, bool)) == [(0, 3)]


def test_nothing_touched_before_activate_and_missing_engine_is_a_pulse_error(toy_dir):
    r = TrtRunner(load_manifest(toy_dir))
    assert r._trt is None and r._cudart is None and not r.is_active
    assert r.step_engine_path == toy_dir / "step.engine"
    with pytest.raises(PulseError, match="no TensorRT engine"):
        r.activate()
    assert not r.is_active


@pytest.mark.skipif(HAS_TRT, reason="TensorRT installed")
def test_without_tensorrt_a_one_line_install_hint(toy_dir, tmp_path):
    for name in ("step.engine", "render.engine"):
        (tmp_path / name).write_bytes(b"x")
    r = TrtRunner(load_manifest(toy_dir), step_engine=tmp_path / "step.engine", render_engine=tmp_path / "render.engine")
    with pytest.raises(PulseError, match="pip install 'pulse-trt\\[trt\\]'"):
        r.activate()


def test_buffer_plan_for_rows_of_a_chunk(toy_dir):
    plan = plan_buffers(load_manifest(toy_dir), 3)
    best = {b.name: b for b in plan.best}
    assert best["latent"].shape == (3, 1, 6) and best["latent"].nbytes == 3 * 6 * 4
    assert best["latent"].nbytes // 3 == 24  # one row: the unit of keep()'s device copies


@pytest.mark.trt
@pytest.mark.gpu
def test_trt_search_matches_ort(toy_dir, tmp_path):
    build = pytest.importorskip("pulse_trt.export.trt_build")
    from pulse_trt.engine.loop import run_search  # noqa: PLC0415
    from pulse_trt.engine.runner_ort import OrtRunner  # noqa: PLC0415

    m = load_manifest(toy_dir)
    step_engine, render_engine = build.build_engines(toy_dir)  # into toy_dir/trt_engines/
    y = np.random.default_rng(1).uniform(0.3, 0.7, (2, 3, 2, 2)).astype(np.float32)
    with OrtRunner(m) as r:
        ref = run_search(r, y)
    for graph in (True, False):
        with TrtRunner(m, step_engine=step_engine, render_engine=render_engine, cuda_graph=graph) as r:
            got = run_search(r, y, batch_size=3)
        for a, b in zip(ref, got):
            np.testing.assert_allclose(b.history["TOTAL"], a.history["TOTAL"], rtol=1e-4)
            assert a.record["restart"] == b.record["restart"] and b.record["backend"] == "tensorrt"
            np.testing.assert_allclose(b.hr, a.hr, atol=1e-4)
