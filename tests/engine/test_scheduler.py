"""engine.scheduler + engine.api on the toy artefacts (and the exported dcgan): trajectories
against the numpy reference, best iterates, restarts, continuous batching (results independent
of slot, neighbours, slot count and sync interval), host syncs per step, early stop, restarts,
cancellation, failures that stay with their request, progress, threads."""
from __future__ import annotations

import threading
import time
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from pulse_trt.engine.api import PulseEngine, image_to_chw01
from pulse_trt.engine.errors import PulseError
from pulse_trt.engine.manifest import load_manifest
from pulse_trt.engine.result import TrajectoryTracker, pick_restart
from pulse_trt.engine.runner_ort import OrtRunner
from pulse_trt.engine.scheduler import Request, Scheduler, sphere_radius, start_rows

from searching import reachable as _reachable
from searching import search
from searching import toy_targets as _targets
from toy_artifacts import toy_search_ref, toy_weights


def test_sphere_radius_by_hand():
    x = np.array([[[3.0, 4.0], [0.0, 0.0]]], np.float32)  # [1, 2, 2]
    np.testing.assert_allclose(sphere_radius(x)[..., 0], [[5.0, np.sqrt(1e-9)]], rtol=1e-6)
    n = np.ones((2, 1, 2, 2), np.float32)
    assert sphere_radius(n).shape == (2, 1, 1, 1) and np.allclose(sphere_radius(n), 2.0)


def test_search_matches_reference_trajectory_best_iterate_and_restart(toy_dir):
    m = load_manifest(toy_dir)
    y = _targets(3)
    with OrtRunner(m) as r:
        results, _ = search(r, y)
    # reference: same starts, float64 numpy, the same tracker/restart rules
    rows = [(i, k) for i in range(3) for k in range(2)]
    feeds = start_rows(m, m.options, np.repeat(y, 2, axis=0), rows)
    ref, _, _ = toy_search_ref(feeds["target"], m.options, feeds["start.latent"], [feeds["start.noise0"], feeds["noise1"]])
    tracker = TrajectoryTracker(6, m.options.eps)
    for j in range(m.options.steps):
        tracker.update(j, {"L2": ref["L2"][j], "L1": ref["L1"][j], "GEOCROSS": 0 * ref["L2"][j], "TOTAL": ref["TOTAL"][j]})
    for i, res in enumerate(results):
        recs = [tracker.record(2 * i + k) for k in range(2)]
        k = pick_restart(recs)
        assert res.record["restart"] == k and res.record["input"] == i and res.record["starts"] == 2
        assert res.record["best_step"] == recs[k]["best_step"] and res.record["search_steps"] == 40
        assert res.record["success"] == recs[k]["success"]
        np.testing.assert_allclose(res.history["TOTAL"], ref["TOTAL"][:, 2 * i + k], rtol=2e-5)
        assert res.record["backend"] == "ort" and res.record["seconds"] > 0
        assert res.hr.shape == (3, 8, 8) and res.lr.shape == (3, 2, 2)
        assert np.isclose(res.record["terms"]["TOTAL"], min(res.history["TOTAL"]))


def test_render_is_the_best_iterate(toy_dir):
    """Render input = the state at best_step: rerun the steps by hand and compare."""
    m = load_manifest(toy_dir)
    y = _targets(1, seed=9)
    with OrtRunner(m) as r:
        res = search(r, y)[0][0]
        row = res.record["restart"]
        feeds = start_rows(m, m.options, y, [(0, row)])
        r.open(1)
        r.write_rows([0], feeds)
        for j in range(res.record["best_step"]):
            r.run(1, [[m.options.lr_at(j)]], [[j + 1]])
        state = r.read_rows(["latent", "noise0"]) if res.record["best_step"] else \
            {"latent": feeds["start.latent"], "noise0": feeds["start.noise0"]}
    a, nmaps, c, p = toy_weights()
    img = a @ state["latent"][0].ravel() + nmaps[0] @ state["noise0"][0].ravel() + nmaps[1] @ feeds["noise1"][0].ravel() + c
    np.testing.assert_allclose(res.hr.ravel(), np.clip(img, 0, 1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.lr.ravel(), p @ np.clip(img, 0, 1), rtol=1e-5, atol=1e-6)


def test_in_graph_trackers_agree_with_the_host(toy_dir):
    """best.loss and min.L2 kept by the step equal the host tracker's best TOTAL and min L2."""
    m = load_manifest(toy_dir)
    y = _targets(2)
    feeds = start_rows(m, m.options, y, [(0, 0), (1, 0)])
    with OrtRunner(m) as r:
        r.open(2, 5)
        r.write_rows([0, 1], feeds)
        tracker = TrajectoryTracker(2, m.options.eps)
        for b in range(4):  # 20 steps in runs of 5
            js = np.arange(5 * b, 5 * b + 5)
            lr = np.array([[m.options.lr_at(j)] * 2 for j in js], np.float32)
            losses = r.run(2, lr, np.repeat(js[:, None] + 1, 2, 1))
            for i, j in enumerate(js):
                tracker.update(int(j), {k: v[i] for k, v in losses.items()})
        got = r.read_rows(["best.loss", "min.L2"])
    np.testing.assert_array_equal(got["best.loss"], tracker.best_total.astype(np.float32))
    np.testing.assert_array_equal(got["min.L2"], tracker.min_l2.astype(np.float32))


def _same(a, b, exact: bool):
    assert a.record["restart"] == b.record["restart"] and a.record["best_step"] == b.record["best_step"]
    assert a.record["success"] == b.record["success"]
    if exact:
        for term in a.history:
            np.testing.assert_array_equal(a.history[term], b.history[term])
        np.testing.assert_array_equal(a.hr, b.hr)
    else:  # the toy's MatMul rounds per row position on ORT CPU: same results up to float rounding
        np.testing.assert_allclose(a.history["TOTAL"], b.history["TOTAL"], rtol=1e-5)
        np.testing.assert_allclose(a.hr, b.hr, atol=1e-5)


def test_results_do_not_depend_on_slots_neighbours_or_sync_interval_toy(toy_dir):
    m = load_manifest(toy_dir)
    y = _targets(5)
    with OrtRunner(m) as r:
        base, _ = search(r, y, slots=10, sync_every=1)  # every start at once, lockstep
        runs = [search(r, y, slots=3, sync_every=4, order=[4, 2, 0, 3, 1])[0],  # continuous batching, moves
                search(r, y, slots=1, sync_every=7)[0]]  # one start at a time
    for got in runs:
        for a, b in zip(base, got):
            _same(a, b, exact=False)


def test_results_do_not_depend_on_slots_neighbours_or_sync_interval_dcgan_exact(dcgan_dir):
    """On the exported dcgan every row's arithmetic on ORT CPU is its own (the step is
    bit-identical per row at any batch and row position), so a search alone in one slot, among
    others in 3 slots with rows moving as they finish, and in lockstep with 8 are bit-identical:
    history, best step, restart and image."""
    m = load_manifest(dcgan_dir)
    o = replace(m.options, steps=10, duplicates=2)
    y = np.random.default_rng(3).uniform(0.2, 0.8, (4, 3, 8, 8)).astype(np.float32)
    with OrtRunner(m) as r:
        lockstep, _ = search(r, y, options=o, slots=8, sync_every=1)
        alone = [search(r, y[i:i + 1], options=o, slots=1, sync_every=3)[0][0] for i in (1, 3)]
        mixed, sched = search(r, y, options=o, slots=3, sync_every=4, order=[3, 1, 2, 0])
    for a, b in zip(lockstep, mixed):
        _same(a, b, exact=True)
    # alone, input i is keyed by index 0: compare with a lockstep run keyed the same way
    with OrtRunner(m) as r:
        for i, got in zip((1, 3), alone):
            ref = search(r, y[i:i + 1], options=o, slots=4, sync_every=2)[0][0]
            _same(ref, got, exact=True)
    assert sched.row_steps == 4 * 2 * 10


def test_host_syncs_per_step_are_one_in_k(toy_dir):
    """The host reads the losses once per run of K steps: syncs = graph steps / K (rounded up
    at a job's end), counted by the runner."""
    m = load_manifest(toy_dir)
    o = replace(m.options, duplicates=1)  # 20 steps
    with OrtRunner(m) as r:
        for k, syncs in ((1, 20), (4, 5), (3, 7), (20, 1), (32, 1)):
            _, sched = search(r, _targets(2), options=o, slots=2, sync_every=k)
            assert r.steps_run == 20 and r.syncs == syncs == sched.blocks, k


def test_early_stop_retires_a_start_once_within_eps(toy_dir):
    m = load_manifest(toy_dir)
    y = _reachable(m, 2)
    o = replace(m.options, duplicates=1, steps=200, early_stop=True)
    with OrtRunner(m) as r:
        full, _ = search(r, y, options=replace(o, early_stop=False), slots=2, sync_every=4)
        early, sched = search(r, y, options=o, slots=2, sync_every=4)
    for a, b in zip(full, early):
        assert a.record["success"] and b.record["success"]
        first = next(j for j, v in enumerate(a.history["L2"]) if v <= o.eps * (1 + 1e-6))
        # retired at the end of the first block that reached eps: at most K - 1 steps later
        assert first < b.record["steps"] <= first + 4 and b.record["steps"] % 4 == 0
        np.testing.assert_allclose(b.history["TOTAL"], a.history["TOTAL"][:b.record["steps"]], rtol=1e-5)
    assert sched.row_steps == sum(b.record["steps"] for b in early) < 400


def test_restarts_run_only_after_a_miss_and_match_duplicates(toy_dir):
    """restarts 3: start k + 1 only after starts 0..k missed; the same starts as duplicates 4,
    so the same success, and the winner is the first success (or the best of all four)."""
    m = load_manifest(toy_dir)
    y = np.concatenate([_reachable(m, 1), _targets(2, seed=1)])  # one reachable, two not
    o = replace(m.options, duplicates=1, steps=60)
    with OrtRunner(m) as r:
        dup, s_dup = search(r, y, options=replace(o, duplicates=4), slots=4)
        rst, s_rst = search(r, y, options=replace(o, restarts=3), slots=4)
    for a, b in zip(dup, rst):
        assert a.record["success"] == b.record["success"]
        assert b.record["starts"] == (b.record["restart"] + 1 if b.record["success"] else 4)
        assert b.record["search_steps"] == 60 * b.record["starts"]
        assert a.record["starts"] == 4
    assert rst[0].record["success"] and rst[0].record["starts"] < 4
    assert s_rst.row_steps < s_dup.row_steps


def test_bad_targets_and_settings(toy_dir):
    with OrtRunner(load_manifest(toy_dir)) as r:
        with pytest.raises(PulseError, match=r"\[N, 3, 2, 2\]"):
            search(r, np.zeros((1, 3, 4, 4), np.float32))
        with pytest.raises(PulseError, match=r"\[0, 1\]"):
            search(r, np.full((1, 3, 2, 2), 2.0, np.float32))
        with pytest.raises(PulseError, match="slots"):
            Scheduler(r, slots=0)
        with pytest.raises(PulseError, match="sync_every"):
            Scheduler(r, slots=2, sync_every=0)
        with pytest.raises(PulseError, match="index"):
            Scheduler(r, slots=2).add(Request(target=_targets(1)[0], index=-1))


def test_api_accepts_uint8_and_pil_and_validates(toy_dir):
    rgb = (np.arange(12, dtype=np.uint8) * 20).reshape(2, 2, 3)
    np.testing.assert_allclose(image_to_chw01(rgb, 2), rgb.transpose(2, 0, 1) / 255.0, rtol=1e-7)
    with PulseEngine(toy_dir, slots=3) as engine:
        assert engine.lr_size == 2 and engine.resolution == 8
        a, = engine.upsample([rgb])
        b, = engine.upsample([Image.fromarray(rgb)])
        assert a.record["backend"] == "ort" and a.record["artifacts_key"] == engine.manifest.key and len(engine.upsample([rgb, rgb])) == 2
        np.testing.assert_array_equal(a.hr, b.hr)  # same pixels, same seed: the same search
        with pytest.raises(PulseError, match="image 1 is 3x3"):
            engine.upsample([rgb, np.zeros((3, 3, 3), np.uint8)])
        with pytest.raises(PulseError, match="uint8"):
            engine.upsample([rgb.astype(np.float32)])
        with pytest.raises(PulseError, match="at least one"):
            engine.upsample([])
    with pytest.raises(PulseError, match="backend"):
        PulseEngine(toy_dir, backend="torch")
    with pytest.raises(PulseError, match="slots"):
        PulseEngine(toy_dir, slots=0)


def test_api_is_thread_safe_and_callers_share_the_slots(toy_dir):
    rgb = (np.arange(12, dtype=np.uint8) * 20).reshape(2, 2, 3)
    out = {}
    with PulseEngine(toy_dir, slots=4) as engine:
        expect = engine.upsample([rgb])[0]

        def work(k):
            out[k] = engine.upsample([rgb])[0]

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for k in range(4):
        _same(expect, out[k], exact=False)


def test_submit_progress_and_the_future(toy_dir):
    rgb = (np.arange(12, dtype=np.uint8) * 20).reshape(2, 2, 3)
    seen = []
    with PulseEngine(toy_dir, slots=2, sync_every=5) as engine:
        res = engine.submit(rgb, progress=lambda d, t: seen.append((d, t))).result(timeout=60)
    assert seen == [(10, 40), (20, 40), (30, 40), (40, 40)]  # duplicates 2 in 2 slots, every 5 steps
    assert res.record["starts"] == 2


def test_observe_reports_step_losses_and_renders_the_best_without_changing_results(toy_dir):
    rgb = (np.arange(12, dtype=np.uint8) * 20).reshape(2, 2, 3)
    seen, kept = [], []

    def observe(o):
        seen.append((o.done, o.total, list(o.l2), o.min_l2, o.render()))
        kept.append(o)

    with PulseEngine(toy_dir, slots=2, sync_every=5) as engine:
        options = replace(engine.options, duplicates=1)
        plain = engine.submit(rgb, options=options).result(timeout=60)
        watched = engine.submit(rgb, options=options, observe=observe).result(timeout=60)
    _same(plain, watched, exact=True)  # rendering mid-search reads best.X only
    steps = options.steps
    assert [(d, t) for d, t, *_ in seen] == [(d, steps) for d in range(5, steps, 5)]  # the last block: the result
    l2 = [v for _, _, block, _, _ in seen for v in block]
    np.testing.assert_allclose(l2, watched.history["L2"][:len(l2)], rtol=1e-6)
    for d, _, _, low, image in seen:
        assert low == pytest.approx(float(np.min(watched.history["L2"][:d])), rel=1e-6)
        assert image.shape == plain.hr.shape and np.isfinite(image).all()
    with pytest.raises(PulseError, match="only valid inside"):
        kept[0].render()


def test_cancel_frees_the_slot_and_leaves_no_record(toy_dir):
    m = load_manifest(toy_dir)
    rgb = (np.arange(12, dtype=np.uint8) * 20).reshape(2, 2, 3)
    with PulseEngine(toy_dir, slots=2, sync_every=1) as engine:
        ref = engine.submit(rgb, index=1).result(timeout=60)
        long = engine.submit(rgb, options=replace(m.options, steps=100_000, duplicates=1))
        started = threading.Event()
        other = engine.submit(rgb, index=1, progress=lambda d, t: started.set())
        assert started.wait(60)
        assert long.cancel() and long.cancelled()
        got = other.result(timeout=60)
        deadline = time.time() + 30
        while engine.scheduler.running and time.time() < deadline:
            time.sleep(0.01)
        assert engine.scheduler.running == 0  # the cancelled search left its slot
    _same(ref, got, exact=False)  # the neighbour's cancellation changed nothing


def test_a_bad_input_or_a_raising_callback_fails_alone(toy_dir):
    rgb = (np.arange(12, dtype=np.uint8) * 20).reshape(2, 2, 3)
    with PulseEngine(toy_dir, slots=2) as engine:
        good = engine.submit(rgb)
        with pytest.raises(PulseError, match="uint8"):
            engine.submit(rgb.astype(np.float64))  # nothing queued

        def boom(done, total):
            raise ValueError("callback bug")

        bad = engine.submit(rgb, progress=boom)
        also_good = engine.submit(rgb, index=3)
        with pytest.raises(ValueError, match="callback bug"):
            bad.result(timeout=60)
        assert good.result(timeout=60).record["starts"] == 2
        assert also_good.result(timeout=60).record["input"] == 3


def test_close_cancels_what_is_pending(toy_dir):
    m = load_manifest(toy_dir)
    rgb = (np.arange(12, dtype=np.uint8) * 20).reshape(2, 2, 3)
    engine = PulseEngine(toy_dir, slots=1, sync_every=1).prepare()
    futures = [engine.submit(rgb, options=replace(m.options, steps=100_000)) for _ in range(3)]
    engine.close()
    assert all(f.cancelled() for f in futures)
    assert engine.upsample([rgb])[0].record["steps"] == 20  # usable again: reopened on use
    engine.close()


def test_a_failing_run_fails_its_requests_and_the_engine_goes_on(toy_dir, monkeypatch):
    """The runner raising mid-search fails the requests in that block with its error; a bug in
    the scheduler itself fails what is in flight; either way the engine keeps serving."""
    rgb = (np.arange(12, dtype=np.uint8) * 20).reshape(2, 2, 3)
    with PulseEngine(toy_dir, slots=2) as engine:
        runner, calls = engine.scheduler.runner, []
        run = runner.run

        def flaky(n, lr, t):
            calls.append(n)
            if len(calls) == 2:
                raise RuntimeError("device lost")
            return run(n, lr, t)
        monkeypatch.setattr(runner, "run", flaky)
        with pytest.raises(RuntimeError, match="device lost"):
            engine.submit(rgb).result(timeout=60)
        assert engine.submit(rgb).result(timeout=60).record["starts"] == 2
        monkeypatch.setattr(engine.scheduler, "_compact", lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            engine.submit(rgb).result(timeout=60)
        monkeypatch.undo()
        assert engine.submit(rgb).result(timeout=60).record["starts"] == 2
