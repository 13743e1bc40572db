"""engine.loop + engine.api on the toy artefacts: trajectories against the numpy reference,
best iterates, restarts, chunking, progress, input validation."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

from pulse_trt.engine.api import PulseEngine, image_to_chw01
from pulse_trt.engine.errors import PulseError
from pulse_trt.engine.loop import chunk_feeds, run_search, sphere_radius
from pulse_trt.engine.manifest import load_manifest
from pulse_trt.engine.result import TrajectoryTracker, pick_restart
from pulse_trt.engine.runner_ort import OrtRunner
from pulse_trt.engine.state import job_rows

from toy_artifacts import toy_search_ref, toy_weights


def _targets(n, seed=5):
    return np.random.default_rng(seed).uniform(0.3, 0.7, (n, 3, 2, 2)).astype(np.float32)


def test_sphere_radius_by_hand():
    x = np.array([[[3.0, 4.0], [0.0, 0.0]]], np.float32)  # [1, 2, 2]
    np.testing.assert_allclose(sphere_radius(x)[..., 0], [[5.0, np.sqrt(1e-9)]], rtol=1e-6)
    n = np.ones((2, 1, 2, 2), np.float32)
    assert sphere_radius(n).shape == (2, 1, 1, 1) and np.allclose(sphere_radius(n), 2.0)


def test_search_matches_reference_trajectory_best_iterate_and_restart(toy_dir):
    m = load_manifest(toy_dir)
    y = _targets(3)
    with OrtRunner(m) as r:
        results = run_search(r, y)
    # reference: same starts, float64 numpy, the same tracker/restart rules
    rows = job_rows(3, 2)
    feeds, start = chunk_feeds(m, np.repeat(y, 2, axis=0), rows)
    ref, _, _ = toy_search_ref(feeds["target"], m.options, start.latent, start.noise)
    tracker = TrajectoryTracker(6, m.options.eps)
    for j in range(m.options.steps):
        tracker.update(j, {"L2": ref["L2"][j], "L1": ref["L1"][j], "GEOCROSS": 0 * ref["L2"][j], "TOTAL": ref["TOTAL"][j]})
    a, nmaps, c, _ = toy_weights()
    for i, res in enumerate(results):
        recs = [tracker.record(2 * i + k) for k in range(2)]
        k = pick_restart(recs)
        assert res.record["restart"] == k and res.record["input"] == i
        assert res.record["best_step"] == recs[k]["best_step"]
        assert res.record["success"] == recs[k]["success"]
        np.testing.assert_allclose(res.history["TOTAL"], ref["TOTAL"][:, 2 * i + k], rtol=2e-5)
        assert res.record["backend"] == "ort" and res.record["seconds"] > 0
        assert res.hr.shape == (3, 8, 8) and res.lr.shape == (3, 2, 2)
        # the rendered image is the best iterate's: recompute it from the reference state at best_step
        # (via the lr the loss saw: at the best step L2 == mean((lr_unclamped - y)^2) when above eps)
        assert np.isclose(res.record["terms"]["TOTAL"], min(res.history["TOTAL"]))


def test_render_is_the_best_iterate(toy_dir):
    """Render input = the state at best_step: rerun the loop's steps by hand and compare."""
    m = load_manifest(toy_dir)
    y = _targets(1, seed=9)
    with OrtRunner(m) as r:
        res = run_search(r, y)[0]
        feeds, start = chunk_feeds(m, np.repeat(y, 2, axis=0), job_rows(1, 2))
        r.load(feeds)
        for j in range(res.record["best_step"]):
            r.step(m.options.lr_at(j), j + 1)
        state = r.current()
    row = res.record["restart"]
    a, nmaps, c, p = toy_weights()
    img = a @ state["latent"][row].ravel() + nmaps[0] @ state["noise0"][row].ravel() + \
        nmaps[1] @ start.noise[1][row].ravel() + c
    np.testing.assert_allclose(res.hr.ravel(), np.clip(img, 0, 1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.lr.ravel(), p @ np.clip(img, 0, 1), rtol=1e-5, atol=1e-6)


def test_chunking_gives_the_same_results_and_progress_counts_steps(toy_dir):
    m = load_manifest(toy_dir)
    y = _targets(3)
    seen = []
    with OrtRunner(m) as r:
        whole = run_search(r, y)
        chunked = run_search(r, y, batch_size=4, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (40, 40) and len(seen) == 40  # 6 rows in chunks of 4 -> 2 chunks x 20 steps
    for a, b in zip(whole, chunked):
        assert a.record["restart"] == b.record["restart"] and a.record["best_step"] == b.record["best_step"]
        np.testing.assert_allclose(a.history["TOTAL"], b.history["TOTAL"], rtol=1e-6)
        np.testing.assert_allclose(a.hr, b.hr, atol=1e-6)


def test_success_verdict_on_a_reachable_target(toy_dir):
    """A target the toy can produce exactly (the lr of a start) is reached within eps."""
    m = load_manifest(toy_dir)
    with PulseEngine(toy_dir) as engine:
        feeds, start = chunk_feeds(m, _targets(1), job_rows(1, 1))
        y = engine._runner.render({"latent": start.latent * 0.9, "noise0": start.noise[0], "noise1": start.noise[1]})["lr_image"]
        res = engine.search(y)[0]
    assert res.record["success"] and res.record["min_l2"] <= m.options.eps * (1 + 1e-6)


def test_bad_targets(toy_dir):
    with OrtRunner(load_manifest(toy_dir)) as r:
        with pytest.raises(PulseError, match=r"\[N, 3, 2, 2\]"):
            run_search(r, np.zeros((1, 3, 4, 4), np.float32))
        with pytest.raises(PulseError, match=r"\[0, 1\]"):
            run_search(r, np.full((1, 3, 2, 2), 2.0, np.float32))
        with pytest.raises(PulseError, match="batch_size"):
            run_search(r, _targets(1), batch_size=0)


def test_api_accepts_uint8_and_pil_and_validates(toy_dir):
    rgb = (np.arange(12, dtype=np.uint8) * 20).reshape(2, 2, 3)
    np.testing.assert_allclose(image_to_chw01(rgb, 2), rgb.transpose(2, 0, 1) / 255.0, rtol=1e-7)
    with PulseEngine(toy_dir, batch_size=3) as engine:
        assert engine.lr_size == 2 and engine.resolution == 8
        a, = engine.upsample([rgb])
        b, = engine.upsample([Image.fromarray(rgb)])
        assert a.record["backend"] == "ort" and len(engine.upsample([rgb, rgb])) == 2
        np.testing.assert_array_equal(a.hr, b.hr)  # same pixels, same seed: the same search
        with pytest.raises(PulseError, match="image 1 is 3x3"):
            engine.upsample([rgb, np.zeros((3, 3, 3), np.uint8)])
        with pytest.raises(PulseError, match="uint8"):
            engine.upsample([rgb.astype(np.float32)])
        with pytest.raises(PulseError, match="at least one"):
            engine.upsample([])
    with pytest.raises(PulseError, match="backend"):
        PulseEngine(toy_dir, backend="torch")


def test_api_is_thread_safe(toy_dir):
    rgb = (np.arange(12, dtype=np.uint8) * 20).reshape(2, 2, 3)
    out = {}
    with PulseEngine(toy_dir) as engine:
        expect = engine.upsample([rgb])[0].hr

        def work(k):
            out[k] = engine.upsample([rgb])[0].hr

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for k in range(4):
        np.testing.assert_array_equal(out[k], expect)
