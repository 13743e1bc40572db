"""engine.runner_trt: what can be checked without TensorRT (engine-file and import errors, buffer
planning), and the full search on TensorRT where it is installed."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from pulse_trt.engine.errors import PulseError
from pulse_trt.engine.manifest import load_manifest
from pulse_trt.engine.runner import plan_buffers
from pulse_trt.engine.runner_trt import TrtRunner

from searching import search

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


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


def test_buffer_plan_for_slots(toy_dir):
    plan = plan_buffers(load_manifest(toy_dir), 3, ring=4)
    state = {b.name: b for b, _ in plan.state}
    assert state["best.latent"].shape == (3, 1, 6) and state["best.latent"].nbytes == 3 * 6 * 4
    assert state["best.latent"].row_bytes == 24  # one row: the unit of row writes and moves
    assert plan.rings[0].nbytes == 4 * 3 * 4  # lr: one [3] row per step of a run of 4


@pytest.mark.trt
@pytest.mark.gpu
def test_trt_search_matches_ort(toy_dir, tmp_path):
    build = pytest.importorskip("pulse_trt.export.trt_build")
    from pulse_trt.engine.runner_ort import OrtRunner  # noqa: PLC0415

    m = load_manifest(toy_dir)
    step_engine, render_engine = build.build_engines(toy_dir)  # into toy_dir/trt_engines/
    y = np.random.default_rng(1).uniform(0.3, 0.7, (2, 3, 2, 2)).astype(np.float32)
    with OrtRunner(m) as r:
        ref, _ = search(r, y)
    for graph in (True, False):
        with TrtRunner(m, step_engine=step_engine, render_engine=render_engine, cuda_graph=graph) as r:
            got, _ = search(r, y, slots=3, sync_every=4)  # rows move as starts finish
        for a, b in zip(ref, got):
            np.testing.assert_allclose(b.history["TOTAL"], a.history["TOTAL"], rtol=1e-4)
            assert a.record["restart"] == b.record["restart"] and b.record["backend"] == "tensorrt"
            np.testing.assert_allclose(b.hr, a.hr, atol=1e-4)


@pytest.mark.parametrize("cuda_graph", [True, False])
def test_runner_logic_on_emulated_tensorrt_and_cuda(toy_dir, tmp_path, monkeypatch, cuda_graph):
    """runner_trt's own logic (row offsets, rings, ping-pong, CUDA-graph capture and replay, row
    moves, render at a row's pointers, one host sync per run) with tensorrt and cuda-python
    replaced by tests/engine/trt_emulate.py (ONNX Runtime CPU behind TensorRT's API, host memory
    behind CUDA's): the same searches as OrtRunner, bit for bit. Not a TensorRT measurement."""
    from pulse_trt.engine import runner_trt  # noqa: PLC0415
    from pulse_trt.engine.runner_ort import OrtRunner  # noqa: PLC0415
    from trt_emulate import FakeCudart, fake_tensorrt, write_fake_engines  # noqa: PLC0415

    cudart = FakeCudart()
    monkeypatch.setattr(runner_trt, "import_cudart", lambda: cudart)
    monkeypatch.setattr(runner_trt, "import_tensorrt", lambda: fake_tensorrt(cudart))
    m = load_manifest(toy_dir)
    step_engine, render_engine = write_fake_engines(toy_dir, tmp_path)
    y = np.random.default_rng(1).uniform(0.3, 0.7, (5, 3, 2, 2)).astype(np.float32)
    with OrtRunner(m) as r:
        ref, _ = search(r, y, slots=3, sync_every=4, order=[4, 2, 0, 3, 1])
    runs = []  # per run: (rows, stream syncs, graphs captured)
    with TrtRunner(m, step_engine=step_engine, render_engine=render_engine, cuda_graph=cuda_graph) as r:
        run = r.run

        def counted(n, lr, t):
            s0, c0 = cudart.syncs, cudart.captured
            out = run(n, lr, t)
            runs.append((n, cudart.syncs - s0, cudart.captured - c0))
            return out
        r.run = counted
        got, sched = search(r, y, slots=3, sync_every=4, order=[4, 2, 0, 3, 1])
        steps = r.steps_run
    for a, b in zip(ref, got):
        assert b.record["backend"] == "tensorrt" and a.record["restart"] == b.record["restart"]
        assert a.history == b.history
        np.testing.assert_array_equal(a.hr, b.hr)
    used = {n for n, _, _ in runs}
    assert len(runs) == sched.blocks and 3 in used and min(used) < 3  # rows move down as starts end
    assert all(syncs == 1 for _, syncs, captured in runs if not captured)  # one host sync per run
    if cuda_graph:  # every (rows in use, direction, ring position) captured once, then replayed
        assert cudart.captured == len(used) * 2 * 4 and cudart.launches == steps
    else:
        assert cudart.captured == cudart.launches == 0


def test_render_iterates_on_emulated_tensorrt(toy_dir, tmp_path, monkeypatch):
    """TrtRunner.render's start / current / best iterates point the render engine at the rows of
    start.X, X and best.X (tests/engine/trt_emulate.py behind TensorRT and CUDA): the images
    OrtRunner renders from the same state."""
    from pulse_trt.engine import runner_trt  # noqa: PLC0415
    from pulse_trt.engine.runner_ort import OrtRunner  # noqa: PLC0415
    from pulse_trt.engine.scheduler import start_rows  # noqa: PLC0415
    from trt_emulate import FakeCudart, fake_tensorrt, write_fake_engines  # noqa: PLC0415

    cudart = FakeCudart()
    monkeypatch.setattr(runner_trt, "import_cudart", lambda: cudart)
    monkeypatch.setattr(runner_trt, "import_tensorrt", lambda: fake_tensorrt(cudart))
    m = load_manifest(toy_dir)
    step_engine, render_engine = write_fake_engines(toy_dir, tmp_path)
    y = np.random.default_rng(4).uniform(0.3, 0.7, (3, 3, 2, 2)).astype(np.float32)
    feeds = start_rows(m, m.options, y, [(i, 0) for i in range(3)])
    lr = np.array([[m.options.lr_at(j)] * 3 for j in range(3)], np.float32)
    t = np.repeat(np.arange(1, 4, dtype=np.float32)[:, None], 3, 1)
    images = {}
    for name, runner in (("ort", OrtRunner(m)), ("trt", TrtRunner(m, step_engine=step_engine,
                                                                  render_engine=render_engine, cuda_graph=False))):
        with runner as r:
            r.open(3, 3)
            r.write_rows([0, 1, 2], feeds)
            got = [r.render([2, 0], "start")]
            r.run(3, lr, t)
            got += [r.render([2, 0], "current"), r.render([2, 0], "best")]
            images[name] = got
    for a, b in zip(images["ort"], images["trt"]):
        np.testing.assert_allclose(b["image"], a["image"], atol=1e-6)
        np.testing.assert_allclose(b["lr_image"], a["lr_image"], atol=1e-6)
    assert not np.allclose(images["ort"][0]["image"], images["ort"][1]["image"])
