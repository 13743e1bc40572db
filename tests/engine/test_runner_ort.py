"""engine.runner_ort: the ORT runners against the toy graph's numpy reference."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from pulse_trt.engine.errors import PulseError
from pulse_trt.engine.loop import chunk_feeds
from pulse_trt.engine.manifest import load_manifest
from pulse_trt.engine.runner import plan_buffers
from pulse_trt.engine.runner_ort import OrtRunner
from pulse_trt.engine.state import job_rows

from toy_artifacts import seal, toy_search_ref

HAS_CUDA_EP = "CUDAExecutionProvider" in ort.get_available_providers()


def _feeds(m, n=2):
    y = np.random.default_rng(3).uniform(0.2, 0.8, (n, 3, m.lr_size, m.lr_size)).astype(np.float32)
    return chunk_feeds(m, y, job_rows(n, 1))


def test_no_session_before_activate_and_errors_when_inactive(toy_dir):
    r = OrtRunner(load_manifest(toy_dir))
    assert r._step_sess is None and not r.is_active
    with pytest.raises(PulseError, match="not active"):
        r.step(0.1, 1)
    with r:
        assert r.is_active and r._step_sess is not None
        with pytest.raises(PulseError, match="load"):
            r.step(0.1, 1)
    assert not r.is_active and r._step_sess is None


def test_load_checks_names_dtypes_and_shapes(toy_dir):
    m = load_manifest(toy_dir)
    feeds, _ = _feeds(m)
    with OrtRunner(m) as r:
        bad = dict(feeds)
        del bad["radius.latent"]
        with pytest.raises(PulseError, match=r"missing \['radius.latent'\]"):
            r.load(bad)
        with pytest.raises(PulseError, match="unexpected"):
            r.load({**feeds, "bogus": feeds["target"]})
        with pytest.raises(PulseError, match="must be float32"):
            r.load({**feeds, "latent": feeds["latent"].astype(np.float64)})
        with pytest.raises(PulseError, match="has shape"):
            r.load({**feeds, "latent": feeds["latent"][:1]})  # batch 1 against batch 2
        with pytest.raises(PulseError, match="has shape"):
            r.load({**feeds, "noise1": np.zeros((2, 1, 3, 3), np.float32)})


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not HAS_CUDA_EP, reason="no CUDAExecutionProvider")])])
def test_steps_match_numpy_reference_and_ping_pong(toy_dir, device):
    m = load_manifest(toy_dir)
    feeds, start = _feeds(m, n=3)
    ref, v_ref, n0_ref = toy_search_ref(feeds["target"], m.options, start.latent, start.noise)
    with OrtRunner(m, device=device) as r:
        r.load(feeds)
        got = {k: [] for k in ("L2", "L1", "TOTAL", "GEOCROSS")}
        for j in range(m.options.steps):
            terms = r.step(m.options.lr_at(j), j + 1)
            assert set(terms) == {"L2", "L1", "GEOCROSS", "TOTAL"}
            for k in got:
                got[k].append(terms[k])
        state = r.current()
    for k in ("L2", "L1", "TOTAL"):
        np.testing.assert_allclose(np.array(got[k]), ref[k], rtol=2e-5, atol=1e-7)
    assert np.all(np.array(got["GEOCROSS"]) == 0)
    np.testing.assert_allclose(state["latent"].reshape(3, -1), v_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(state["noise0"].reshape(3, -1), n0_ref, rtol=1e-4, atol=1e-5)
    # the sphere: every row keeps its start norm
    np.testing.assert_allclose(np.linalg.norm(state["latent"], axis=2), np.linalg.norm(start.latent, axis=2), rtol=1e-5)


def test_keep_copies_the_input_state_of_the_last_step(toy_dir):
    m = load_manifest(toy_dir)
    feeds, _ = _feeds(m, n=2)
    with OrtRunner(m) as r:
        r.load(feeds)
        r.step(m.options.lr_at(0), 1)
        before_step2 = r.current()
        r.step(m.options.lr_at(1), 2)
        r.keep(np.array([False, True]))
        best = r.best()
    np.testing.assert_array_equal(best["latent"][0], feeds["latent"][0])  # untouched: the start
    np.testing.assert_array_equal(best["latent"][1], before_step2["latent"][1])  # step 2's input
    np.testing.assert_array_equal(best["noise0"][1], before_step2["noise0"][1])
    assert set(best) == {"latent", "noise0"}


def test_stateless_run_step_equals_bound_step(toy_dir):
    m = load_manifest(toy_dir)
    feeds, _ = _feeds(m)
    with OrtRunner(m) as r:
        out = r.run_step({**feeds, "lr": np.array(0.3, np.float32), "t": np.ones((), np.float32)})
        r.load(feeds)
        terms = r.step(0.3, 1)
        nxt = r.current()
    np.testing.assert_array_equal(out["loss.TOTAL"], terms["TOTAL"])
    np.testing.assert_array_equal(out["next.latent"], nxt["latent"])


def test_render_checks_inputs(toy_dir):
    m = load_manifest(toy_dir)
    feeds, start = _feeds(m)
    with OrtRunner(m) as r:
        out = r.render({"latent": feeds["latent"], "noise0": feeds["noise0"], "noise1": feeds["noise1"]})
        assert out["image"].shape == (2, 3, 8, 8) and out["lr_image"].shape == (2, 3, 2, 2)
        assert out["image"].min() >= 0 and out["image"].max() <= 1
        with pytest.raises(PulseError, match="missing"):
            r.render({"latent": feeds["latent"]})


def test_buffer_plan_from_manifest(toy_dir):
    plan = plan_buffers(load_manifest(toy_dir), 4)
    names = [b.name for b in plan.constants]
    assert names == ["target", "radius.latent", "radius.noise0", "noise1"]
    assert [(b.name, nxt) for b, nxt in plan.state][:2] == [("latent", "next.latent"), ("noise0", "next.noise0")]
    assert plan.state[0][0].shape == (4, 1, 6)
    assert [b.shape for b in plan.scalars] == [(), ()]
    assert [b.name for b in plan.losses] == ["loss.L2", "loss.L1", "loss.GEOCROSS", "loss.TOTAL"]
    # target 4*12 + radii 4 + 4 + noise1 16, state 2 x (24 + 16 + 24*2 + 16*2), losses 16, best 24+16, scalars 2
    assert plan.nbytes == 4 * (48 + 8 + 16 + 2 * 120 + 16 + 40 + 2)
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
