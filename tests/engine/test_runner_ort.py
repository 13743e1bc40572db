"""engine.runner_ort: the ORT runners against the toy graph's numpy reference (graph contract 2:
per-row steps, rows starting over at t = 1, still at t = 0, best kept by the step)."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from pulse_trt.engine.errors import PulseError
from pulse_trt.engine.manifest import load_manifest
from pulse_trt.engine.runner import plan_buffers
from pulse_trt.engine.runner_ort import OrtRunner
from pulse_trt.engine.scheduler import start_rows

from toy_artifacts import seal, toy_search_ref, toy_weights

HAS_CUDA_EP = "CUDAExecutionProvider" in ort.get_available_providers()


def _rows(m, n=2, seed=3):
    y = np.random.default_rng(seed).uniform(0.2, 0.8, (n, 3, m.lr_size, m.lr_size)).astype(np.float32)
    return start_rows(m, m.options, y, [(i, 0) for i in range(n)])


def _steps(m, r, n, first, count, rows=None):
    """Run steps first..first+count-1 (0-based) on rows [0, n), one run each."""
    out = []
    for j in range(first, first + count):
        out.append(r.run(n, np.full((1, n), m.options.lr_at(j), np.float32), np.full((1, n), j + 1, np.float32)))
    return out


def test_no_session_before_activate_and_errors_when_inactive(toy_dir):
    r = OrtRunner(load_manifest(toy_dir))
    assert r._step_sess is None and not r.is_active
    with pytest.raises(PulseError, match="not active"):
        r.open(2)
    with r:
        assert r.is_active and r._step_sess is not None
        with pytest.raises(PulseError, match="open"):
            r.run(1, [[0.1]], [[1]])
    assert not r.is_active and r._step_sess is None


def test_write_rows_checks_names_dtypes_shapes_and_rows(toy_dir):
    m = load_manifest(toy_dir)
    feeds = _rows(m)
    with OrtRunner(m) as r:
        r.open(3)
        bad = dict(feeds)
        del bad["radius.latent"]
        with pytest.raises(PulseError, match=r"missing \['radius.latent'\]"):
            r.write_rows([0, 1], bad)
        with pytest.raises(PulseError, match="unexpected"):
            r.write_rows([0, 1], {**feeds, "latent": feeds["start.latent"]})  # the state is never written
        with pytest.raises(PulseError, match="must be float32"):
            r.write_rows([0, 1], {**feeds, "start.latent": feeds["start.latent"].astype(np.float64)})
        with pytest.raises(PulseError, match="has shape"):
            r.write_rows([0], feeds)  # 2 rows of data for 1 slot
        with pytest.raises(PulseError, match="slot indices"):
            r.write_rows([0, 3], feeds)
        with pytest.raises(PulseError, match=r"\[k, 2\]"):
            r.run(2, np.zeros((2, 2)), np.zeros((2, 2)))  # k = 2 > ring 1


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not HAS_CUDA_EP, reason="no CUDAExecutionProvider")])])
def test_steps_match_numpy_reference_ping_pong_and_ring(toy_dir, device):
    m = load_manifest(toy_dir)
    feeds = _rows(m, n=3)
    ref, v_ref, n0_ref = toy_search_ref(feeds["target"], m.options, feeds["start.latent"],
                                        [feeds["start.noise0"], feeds["noise1"]])
    with OrtRunner(m, device=device) as r:
        r.open(4, ring=6)  # 3 of 4 slots in use; runs of up to 6 steps
        r.write_rows([0, 1, 2], feeds)
        got = {k: [] for k in ("L2", "L1", "TOTAL", "GEOCROSS")}
        j = 0
        for k in (6, 1, 5, 6, 2):  # 20 steps in runs of various lengths
            js = np.arange(j, j + k)
            lr = np.repeat(np.array([m.options.lr_at(x) for x in js], np.float32)[:, None], 3, 1)
            losses = r.run(3, lr, np.repeat(js[:, None] + 1, 3, 1).astype(np.float32))
            for key in got:
                got[key].extend(losses[key])
            j += k
        state = r.read_rows(["latent", "noise0"], [0, 1, 2])
        assert (r.syncs, r.steps_run) == (5, 20)
    for k in ("L2", "L1", "TOTAL"):
        np.testing.assert_allclose(np.array(got[k]), ref[k], rtol=2e-5, atol=1e-7)
    assert np.all(np.array(got["GEOCROSS"]) == 0)
    np.testing.assert_allclose(state["latent"].reshape(3, -1), v_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(state["noise0"].reshape(3, -1), n0_ref, rtol=1e-4, atol=1e-5)
    # the sphere: every row keeps its start norm
    np.testing.assert_allclose(np.linalg.norm(state["latent"], axis=2), np.linalg.norm(feeds["start.latent"], axis=2),
                               rtol=1e-5)


def test_t_one_starts_a_row_over_and_t_zero_keeps_it_still(toy_dir):
    """Row 0 runs 3 steps, then starts over (t = 1) from a new start while row 1 keeps going
    and row 2 holds still (t = 0): row 0 then equals a fresh run of the new start, row 1 is
    untouched by its neighbours, row 2 is bit-for-bit what it was."""
    m = load_manifest(toy_dir)
    feeds, other = _rows(m, n=3), _rows(m, n=1, seed=8)
    with OrtRunner(m) as r:
        r.open(3)
        r.write_rows([0, 1, 2], feeds)
        _steps(m, r, 3, 0, 3)
        before = r.read_rows([s.name for s in m.state])
        r.write_rows([0], other)
        losses = r.run(3, [[m.options.lr_at(0), m.options.lr_at(3), 0.0]], [[1, 4, 0]])
        after = r.read_rows([s.name for s in m.state])
    with OrtRunner(m) as r:
        r.open(1)
        r.write_rows([0], other)
        fresh_losses = r.run(1, [[m.options.lr_at(0)]], [[1]])
        fresh = r.read_rows([s.name for s in m.state])
        r.open(3)
        r.write_rows([0, 1, 2], feeds)
        _steps(m, r, 2, 0, 4)  # row 1 alone (with row 0) for 4 steps
        alone = r.read_rows(["latent"], [1])
    assert losses["TOTAL"][0, 0] == fresh_losses["TOTAL"][0, 0]
    for s in m.state:
        np.testing.assert_array_equal(after[s.name][0], fresh[s.name][0], err_msg=s.name)
        np.testing.assert_array_equal(after[s.name][2], before[s.name][2], err_msg=s.name)
    np.testing.assert_allclose(after["latent"][1], alone["latent"][0], rtol=1e-6)
    assert np.isnan(before["best.loss"]).sum() == 0 and np.isfinite(after["min.L2"]).all()


def test_best_is_the_input_state_of_the_lowest_total(toy_dir):
    m = load_manifest(toy_dir)
    feeds = _rows(m, n=2)
    with OrtRunner(m) as r:
        r.open(2)
        r.write_rows([0, 1], feeds)
        states, totals = [], []
        for j in range(6):
            states.append(r.read_rows(["latent", "noise0"]) if j else
                          {"latent": feeds["start.latent"], "noise0": feeds["start.noise0"]})
            totals.append(r.run(2, [[m.options.lr_at(j)] * 2], [[j + 1] * 2])["TOTAL"][0])
        best = r.read_rows(["best.latent", "best.noise0", "best.loss"])
    totals = np.array(totals)  # [6, 2]
    for row in range(2):
        j = int(np.argmin(totals[:, row]))
        np.testing.assert_array_equal(best["best.latent"][row], states[j]["latent"][row])
        np.testing.assert_array_equal(best["best.noise0"][row], states[j]["noise0"][row])
        assert best["best.loss"][row] == totals[j, row]


def test_move_row_and_render_best(toy_dir):
    m = load_manifest(toy_dir)
    feeds = _rows(m, n=3)
    with OrtRunner(m) as r:
        r.open(3)
        r.write_rows([0, 1, 2], feeds)
        _steps(m, r, 3, 0, 2)
        names = list(m.row_inputs) + [s.name for s in m.state]
        before = r.read_rows(names, [2])
        images = r.render_best([2, 0])
        r.move_row(2, 0)
        moved = r.read_rows(names, [0])
        assert images["image"].shape == (2, 3, 8, 8) and images["lr_image"].shape == (2, 3, 2, 2)
        np.testing.assert_array_equal(r.render_best([0])["image"][0], images["image"][0])
    for name in names:
        np.testing.assert_array_equal(moved[name], before[name], err_msg=name)


def test_render_draws_the_best_current_or_start_iterate(toy_dir):
    """render(rows, iterate) feeds the render graph best.X, X or start.X (frozen noise: always the
    row's own): each image equals the toy generator's image of that state, computed by hand."""
    m = load_manifest(toy_dir)
    feeds = _rows(m, n=3)
    a, nmaps, c, p = toy_weights()

    def image(latent, noise0, row):
        return np.clip(a @ latent.ravel() + nmaps[0] @ noise0.ravel() + nmaps[1] @ feeds["noise1"][row].ravel() + c, 0, 1)

    with OrtRunner(m) as r:
        r.open(3)
        r.write_rows([0, 1, 2], feeds)
        start = r.render([2, 0], "start")  # before any step: the state buffers hold nothing yet
        _steps(m, r, 3, 0, 4)
        cur, best = r.render([2, 0], "current"), r.render([2, 0], "best")
        np.testing.assert_array_equal(r.render_best([2, 0])["image"], best["image"])
        st = r.read_rows(["latent", "noise0", "best.latent", "best.noise0"], [2, 0])
        with pytest.raises(PulseError, match="iterate must be one of"):
            r.render([0], "last")
    for i, row in enumerate((2, 0)):
        for got, latent, noise0 in ((start, feeds["start.latent"][row], feeds["start.noise0"][row]),
                                    (cur, st["latent"][i], st["noise0"][i]),
                                    (best, st["best.latent"][i], st["best.noise0"][i])):
            want = image(latent, noise0, row)
            np.testing.assert_allclose(got["image"][i].ravel(), want, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(got["lr_image"][i].ravel(), p @ want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(cur["image"], start["image"])  # four steps moved the state


def test_stateless_run_step_equals_bound_step(toy_dir):
    m = load_manifest(toy_dir)
    feeds = _rows(m)
    with OrtRunner(m) as r:
        r.open(2)
        r.write_rows([0, 1], feeds)
        state = r.read_rows([s.name for s in m.state])  # zeros: a t = 1 row ignores them
        out = r.run_step({**feeds, **state, "lr": np.full(2, 0.3, np.float32), "t": np.ones(2, np.float32)})
        terms = r.run(2, [[0.3, 0.3]], [[1, 1]])
        nxt = r.read_rows(["latent"])
    np.testing.assert_array_equal(out["loss.TOTAL"], terms["TOTAL"][0])
    np.testing.assert_array_equal(out["next.latent"], nxt["latent"])


def test_buffer_plan_from_manifest(toy_dir):
    plan = plan_buffers(load_manifest(toy_dir), 4, ring=3)
    names = [b.name for b in plan.rows]
    assert names == ["target", "start.latent", "start.noise0", "radius.latent", "radius.noise0", "noise1"]
    assert [(b.name, nxt) for b, nxt in plan.state][:2] == [("latent", "next.latent"), ("noise0", "next.noise0")]
    assert [b.name for b, _ in plan.state][-4:] == ["best.latent", "best.noise0", "best.loss", "min.L2"]
    assert plan.state[0][0].shape == (4, 1, 6) and plan.state[0][0].row_bytes == 24
    assert [b.shape for b in plan.rings] == [(3, 4), (3, 4)] and plan.losses.shape == (3, 4, 4)
    # rows: target 4*12 + start 4*(6+4) + radii 4*2 + noise1 4*4; state twice: 4*(6+4)*3 + 4*(6+4) + 4*2;
    # rings 2*3*4; losses 3*4*4
    assert plan.nbytes == 4 * (48 + 40 + 8 + 16 + 2 * (120 + 40 + 8) + 24 + 48)
    with pytest.raises(PulseError):
        plan_buffers(load_manifest(toy_dir), 0)


def test_cuda_runner_without_provider_is_a_pulse_error(toy_dir):
    if HAS_CUDA_EP:
        pytest.skip("CUDA provider present")
    with pytest.raises(PulseError, match="onnxruntime-gpu"):
        OrtRunner(load_manifest(toy_dir), device="cuda").activate()


def test_graph_shapes_must_agree_with_the_manifest(toy_dir, tmp_path):
    import json  # noqa: PLC0415
    import shutil  # noqa: PLC0415

    d = tmp_path / "art"
    shutil.copytree(toy_dir, d)
    raw = json.loads((d / "manifest.json").read_text())
    for e in raw["step"]["inputs"]:
        if e["name"] == "radius.latent":
            e["shape"] = ["B", 1, 2]
    seal(raw, d)  # a self-consistent manifest whose graph disagrees with it
    with pytest.raises(PulseError, match="radius.latent"):
        OrtRunner(load_manifest(d)).activate()


class _DeviceValue:
    """An OrtValue "on the GPU" that lives in host memory: counts uploads and downloads."""

    def __init__(self, a, log):
        self.a, self.log = np.array(a, np.float32), log

    def data_ptr(self):
        return self.a.ctypes.data

    def update_inplace(self, a):
        assert a.shape == self.a.shape and a.dtype == np.float32
        self.log.append(("upload", id(self)))
        self.a[...] = a

    def numpy(self):
        self.log.append(("download", id(self)))
        return self.a.copy()


class _FakeOrt:
    """onnxruntime with a CUDA provider that runs on CPU and OrtValues in host memory."""

    def __init__(self, log):
        self._log = log
        self.OrtValue = type("OrtValue", (), {"ortvalue_from_numpy": staticmethod(lambda a, *where: _DeviceValue(a, log))})

    def __getattr__(self, name):
        return getattr(ort, name)

    def get_available_providers(self):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]

    def InferenceSession(self, path, so, providers):
        assert providers[0][0] == "CUDAExecutionProvider"
        return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("cuda_graph", [False, True])
def test_cuda_path_logic_in_host_memory(toy_dir, monkeypatch, cuda_graph):
    """OrtRunner(device="cuda")'s own logic (host mirrors of the per-row inputs uploaded whole
    before a run, rings bound by device pointer, the loss ring back in one copy per run, render
    at a row's pointers, no row moves) with the CUDA provider emulated on CPU: the same searches
    as the CPU runner, bit for bit, and no state ever copied to the host. Not a GPU measurement."""
    from pulse_trt.engine import runner_ort  # noqa: PLC0415
    from searching import search  # noqa: PLC0415

    m = load_manifest(toy_dir)
    y = np.random.default_rng(2).uniform(0.3, 0.7, (4, 3, 2, 2)).astype(np.float32)
    with OrtRunner(m) as r:
        ref, _ = search(r, y, slots=3, sync_every=4, order=[3, 1, 0, 2])
    log = []
    monkeypatch.setattr(runner_ort, "_ort", lambda: _FakeOrt(log))
    monkeypatch.setattr(runner_ort, "check_cuda_provider", lambda *sessions: None)  # CPU sessions stand in for CUDA
    cuda = OrtRunner(m, device="cuda", cuda_graph=cuda_graph)
    assert not cuda.can_move_rows
    cuda.memory = ("cpu", 0)  # the emulated device memory is host memory
    with cuda as r:
        got, sched = search(r, y, slots=3, sync_every=4, order=[3, 1, 0, 2])
        state = {id(v) for s in r._sets for v in s.values()}
        downloads = [i for kind, i in log if kind == "download"]
        assert downloads == [id(r._loss_ring)] * sched.blocks  # one copy back per run, never the state
        assert not state & {i for kind, i in log if kind == "upload"}  # the state is never written either
    for a, b in zip(ref, got):
        assert b.record["backend"] == "ort-cuda" and a.record["restart"] == b.record["restart"]
        np.testing.assert_allclose(a.history["TOTAL"], b.history["TOTAL"], rtol=1e-5)  # no moves: other rows
        np.testing.assert_allclose(a.hr, b.hr, atol=1e-5)


def test_ort_cuda_refuses_a_silent_cpu_fallback():
    """ORT keeps running on the CPU when its CUDA provider fails to load: ort-cuda must say so."""
    from pulse_trt.engine.errors import PulseError  # noqa: PLC0415
    from pulse_trt.engine.runner_ort import check_cuda_provider  # noqa: PLC0415

    class Sess:
        def __init__(self, providers):
            self._p = providers

        def get_providers(self):
            return self._p

    check_cuda_provider(Sess(["CUDAExecutionProvider", "CPUExecutionProvider"]))
    with pytest.raises(PulseError, match="could not start its CUDA provider") as e:
        check_cuda_provider(Sess(["CUDAExecutionProvider", "CPUExecutionProvider"]), Sess(["CPUExecutionProvider"]))
    assert "\n" not in str(e.value)


def test_session_options_tuning_sets_attributes_and_config_entries():
    """tuning: SessionOptions attributes by name, config entries by dotted key; unknown names
    are a one-line PulseError (benchmarks/ort_session_options.py measures these)."""
    from pulse_trt.engine.errors import PulseError
    from pulse_trt.engine.runner_ort import session_options

    so = session_options(1, tuning={"enable_mem_pattern": False, "session.set_denormal_as_zero": "1"})
    assert so.enable_mem_pattern is False and so.intra_op_num_threads == 1
    assert so.get_session_config_entry("session.set_denormal_as_zero") == "1"
    with pytest.raises(PulseError, match="unknown ONNX Runtime session option 'no_such_option'"):
        session_options(tuning={"no_such_option": 1})
