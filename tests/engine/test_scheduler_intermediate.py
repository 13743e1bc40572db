"""engine.scheduler's outputs beyond the chosen image: intermediate images of every start
(Request.render_every / on_render, PULSE's save_intermediate) and every start's own result
(Request.keep_restarts). Checked: the images are the iterates they claim to be (the toy's state
rendered by hand; the best so far against the current ones), every asked step arrives in order
before the result, and neither changes any result, of the request or of its neighbours, with
early stopping too (the block structure is kept: renders happen between pieces of a block)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from pulse_trt.engine.api import PulseEngine, intermediate_request
from pulse_trt.engine.errors import PulseError
from pulse_trt.engine.manifest import load_manifest
from pulse_trt.engine.result import pick_restart
from pulse_trt.engine.runner_ort import OrtRunner
from pulse_trt.engine.scheduler import Request, Scheduler, start_rows

from searching import reachable as _reachable
from searching import search
from searching import toy_targets as _targets
from toy_artifacts import toy_weights


def _same(a, b):
    """Bit for bit: the chosen start, its record, history and images."""
    for key in ("restart", "best_step", "success", "l2", "min_l2", "starts", "search_steps", "terms", "steps"):
        assert a.record[key] == b.record[key], key
    assert a.history == b.history
    np.testing.assert_array_equal(a.hr, b.hr)
    np.testing.assert_array_equal(a.lr, b.lr)


def _close(a, b):
    """The same search up to float rounding (the toy's MatMul rounds by row position on ORT CPU)."""
    for key in ("restart", "best_step", "success", "starts"):
        assert a.record[key] == b.record[key], key
    np.testing.assert_allclose(a.history["TOTAL"], b.history["TOTAL"], rtol=1e-5)
    np.testing.assert_allclose(a.hr, b.hr, atol=1e-5)


def _toy_image(latent, noise0, noise1):
    a, nmaps, c, _ = toy_weights()
    return np.clip(a @ latent.ravel() + nmaps[0] @ noise0.ravel() + nmaps[1] @ noise1.ravel() + c, 0, 1)


def test_current_iterates_of_every_step_are_the_states_each_step_evaluates(toy_dir):
    """render_every 1: per start, steps 0..S-1 in order; the image of step s is the generator's
    image of the state after s updates (step 0: the seeded start), computed by hand from the
    runner's state; the chosen start's image at its best step is the result."""
    m = load_manifest(toy_dir)
    o = m.options  # adam, 20 steps, duplicates 2
    y = _targets(1, seed=9)
    shots = []
    with OrtRunner(m) as r:
        (res,), sched = search(r, y, slots=2, sync_every=4,
                               fields=lambda i: {"render_every": 1, "on_render": shots.append, "keep_restarts": True})
        assert sched.blocks == 5 and r.syncs > sched.blocks  # pieces within the same 5 blocks
        by_start = {k: [s for s in shots if s.restart == k] for k in range(2)}
        for k in range(2):
            assert [s.step for s in by_start[k]] == list(range(o.steps))
            assert {s.iterate for s in by_start[k]} == {"current"} and {s.index for s in by_start[k]} == {0}
        # the same start by hand, one step at a time, reading the state the next step evaluates
        k = 1
        feeds = start_rows(m, o, y, [(0, k)])
        r.open(1)
        r.write_rows([0], feeds)
        for j in range(o.steps):
            st = (r.read_rows(["latent", "noise0"]) if j else
                  {"latent": feeds["start.latent"], "noise0": feeds["start.noise0"]})
            want = _toy_image(st["latent"][0], st["noise0"][0], feeds["noise1"][0])
            np.testing.assert_allclose(by_start[k][j].image.ravel(), want, rtol=1e-5, atol=1e-6, err_msg=f"step {j}")
            r.run(1, [[o.lr_at(j)]], [[j + 1]])
    chosen = res.record["restart"]
    np.testing.assert_allclose(by_start[chosen][res.record["best_step"]].image, res.hr, atol=1e-6)
    for k in range(2):  # each start's own best image too
        start = res.restarts[k]
        np.testing.assert_allclose(by_start[k][start.record["best_step"]].image, start.hr, atol=1e-6)
        assert by_start[k][0].lr_image.shape == (3, 2, 2)


def test_best_iterates_are_the_best_so_far(toy_dir):
    """render_iterate "best": the image of step s is the current iterate of the first step with
    the lowest TOTAL among 0..s (TrajectoryTracker's rule); at the last step, the start's result."""
    m = load_manifest(toy_dir)
    y = _targets(1, seed=2)
    cur, best = [], []
    with OrtRunner(m) as r:
        (res,), _ = search(r, y, slots=2, sync_every=3,
                           fields=lambda i: {"render_every": 1, "on_render": cur.append, "keep_restarts": True})
        search(r, y, slots=2, sync_every=3, fields=lambda i: {"render_every": 1, "render_iterate": "best",
                                                             "on_render": best.append})
    for k in range(2):
        total = res.restarts[k].history["TOTAL"]
        c = [s for s in cur if s.restart == k]
        b = [s for s in best if s.restart == k]
        assert [s.step for s in b] == list(range(m.options.steps)) and {s.iterate for s in b} == {"best"}
        for s in range(m.options.steps):
            j = int(np.argmin(total[:s + 1]))  # the first lowest
            np.testing.assert_allclose(b[s].image, c[j].image, atol=1e-6, err_msg=f"start {k} step {s}")
        np.testing.assert_allclose(b[-1].image, res.restarts[k].hr, atol=1e-6)


@pytest.mark.parametrize("early_stop", [False, True])
def test_renders_change_no_result_of_the_row_or_its_neighbours(toy_dir, early_stop):
    """Five inputs through 3 slots (rows move as starts end), inputs 0 and 3 asking for every
    3rd step: every result is bit for bit the one without renders (with early stopping too: the
    blocks, hence the retirements, are the same), and the asked steps arrive per start in order."""
    m = load_manifest(toy_dir)
    o = replace(m.options, steps=30, early_stop=early_stop)
    y = np.concatenate([_reachable(m, 2), _targets(3)])  # two that reach eps (early stop ends them)
    shots: dict[int, list] = {0: [], 3: []}

    def fields(i):
        return {"render_every": 3, "on_render": shots[i].append} if i in shots else {}

    with OrtRunner(m) as r:
        plain, s_plain = search(r, y, options=o, slots=3, sync_every=4, order=[4, 2, 0, 3, 1])
        syncs = r.syncs
        got, s_got = search(r, y, options=o, slots=3, sync_every=4, order=[4, 2, 0, 3, 1], fields=fields)
        assert r.syncs > syncs
    assert s_got.blocks == s_plain.blocks and s_got.row_steps == s_plain.row_steps
    for a, b in zip(plain, got):
        _same(a, b)
    if early_stop:
        assert plain[0].record["steps"] < 30 and plain[0].record["success"]
    for i in shots:
        res = plain[i]
        for k in range(res.record["starts"]):
            steps = [s.step for s in shots[i] if s.restart == k]
            assert steps and steps == list(range(0, 3 * len(steps), 3))
        chosen = [s.step for s in shots[i] if s.restart == res.record["restart"]]
        assert chosen == list(range(0, res.record["steps"], 3))


def test_a_raising_on_render_fails_its_request_alone(toy_dir):
    m = load_manifest(toy_dir)
    y = _targets(2)
    calls = []

    def boom(shot):
        calls.append(shot.step)
        if len(calls) == 5:
            raise ValueError("writer bug")

    with OrtRunner(m) as r:
        (ref,), _ = search(r, y[1:], slots=3, sync_every=4)
        sched = Scheduler(r, slots=3, sync_every=4)
        bad = sched.add(Request(target=y[0], index=0, render_every=1, on_render=boom))
        good = sched.add(Request(target=y[1], index=0))
        sched.run_until_done()
    assert isinstance(bad.error, ValueError) and bad.result is None and len(calls) == 5
    assert good.error is None
    _close(ref, good.result)  # its rows moved when the failed request left: rounding only


@pytest.mark.parametrize("fields, words", [
    ({"render_every": -1, "on_render": print}, "render_every must be an integer >= 0"),
    ({"render_every": True, "on_render": print}, "render_every must be an integer >= 0"),
    ({"render_every": 2}, "needs a callable on_render"),
    ({"render_every": 1, "on_render": print, "render_iterate": "last"}, "render_iterate must be one of"),
    ({"keep_restarts": "yes"}, "keep_restarts must be True or False"),
])
def test_render_and_keep_settings_are_checked_when_added(toy_dir, fields, words):
    with OrtRunner(load_manifest(toy_dir)) as r:
        sched = Scheduler(r, slots=2)
        with pytest.raises(PulseError, match=words):
            sched.add(Request(target=_targets(1)[0], **fields))
        assert not sched.has_work()


def test_intermediate_arguments_of_the_api():
    assert intermediate_request(None) == {}
    assert intermediate_request(print) == {"render_every": 1, "render_iterate": "best", "on_render": print}
    assert intermediate_request(print, 5, "best")["render_every"] == 5
    for args, words in (((None, 2), "need on_intermediate"), ((None, None, "best"), "need on_intermediate"),
                        ((print, 0), "intermediate_every must be an integer >= 1"),
                        ((print, 1, "worst"), "intermediate_iterate must be one of")):
        with pytest.raises(PulseError, match=words):
            intermediate_request(*args)


def test_keep_restarts_keeps_every_start_and_changes_nothing(toy_dir):
    """duplicates 2 + restarts 2 on inputs that miss eps: four starts each, every one kept by
    restart with its own record, history and image; the chosen one is the result itself and
    pick_restart over the kept records picks it; the results equal those without the flag."""
    m = load_manifest(toy_dir)
    o = replace(m.options, duplicates=2, restarts=2)
    y = _targets(3, seed=1)
    with OrtRunner(m) as r:
        plain, _ = search(r, y, options=o, slots=3, sync_every=4)
        kept, _ = search(r, y, options=o, slots=3, sync_every=4, fields=lambda i: {"keep_restarts": True})
    for a, b in zip(plain, kept):
        _same(a, b)
        assert a.restarts == []
        assert [s.record["restart"] for s in b.restarts] == list(range(b.record["starts"]))
        chosen = b.restarts[b.record["restart"]]
        assert chosen.hr is b.hr or np.array_equal(chosen.hr, b.hr)
        assert chosen.history == b.history
        for key in ("success", "l2", "min_l2", "best_step", "steps", "terms"):
            assert chosen.record[key] == b.record[key], key
        assert pick_restart([s.record for s in b.restarts]) == b.record["restart"]
        for s in b.restarts:
            assert s.record["input"] == b.record["input"] and s.hr.shape == b.hr.shape
            assert s.record["terms"]["TOTAL"] == pytest.approx(min(s.history["TOTAL"]))


def test_engine_delivers_every_image_before_the_result(toy_dir):
    """PulseEngine.submit(on_intermediate=..., intermediate_every=...): the images of every asked
    step are there when the future resolves; the kept starts carry the artefact key."""
    rgb = (np.arange(12, dtype=np.uint8) * 20).reshape(2, 2, 3)
    shots = []
    with PulseEngine(toy_dir, slots=2, sync_every=4) as engine:
        plain = engine.submit(rgb).result(timeout=60)
        got = engine.submit(rgb, keep_restarts=True, on_intermediate=shots.append,
                            intermediate_every=5).result(timeout=60)
        n = len(shots)
        with pytest.raises(PulseError, match="need on_intermediate"):
            engine.submit(rgb, intermediate_every=2)
    steps = engine.options.steps
    assert n == len(shots) == 2 * len(range(0, steps, 5))
    assert sorted((s.restart, s.step) for s in shots) == [(k, s) for k in range(2) for s in range(0, steps, 5)]
    _same(plain, got)
    assert [s.record["artifacts_key"] for s in got.restarts] == [engine.manifest.key] * 2


def test_dcgan_renders_and_kept_starts_are_bit_identical(dcgan_dir):
    """On the exported dcgan (rows bit-identical at any batch and position on ORT CPU): input 1
    asks for every step and keeps its starts, among neighbours in 3 slots; every result equals
    the run without, bit for bit, and input 1's image at the chosen start's best step is its
    output, bit for bit."""
    m = load_manifest(dcgan_dir)
    o = replace(m.options, steps=6, duplicates=2)
    y = np.random.default_rng(3).uniform(0.2, 0.8, (3, 3, 8, 8)).astype(np.float32)
    shots = []

    def fields(i):
        return {"render_every": 1, "on_render": shots.append, "keep_restarts": True} if i == 1 else {}

    with OrtRunner(m) as r:
        plain, _ = search(r, y, options=o, slots=3, sync_every=4, order=[2, 1, 0])
        got, _ = search(r, y, options=o, slots=3, sync_every=4, order=[2, 1, 0], fields=fields)
    for a, b in zip(plain, got):
        _same(a, b)
    res = got[1]
    assert sorted((s.restart, s.step) for s in shots) == [(k, s) for k in range(2) for s in range(6)]
    at_best = next(s for s in shots if s.restart == res.record["restart"] and s.step == res.record["best_step"])
    np.testing.assert_array_equal(at_best.image, res.hr)
    for k, start in enumerate(res.restarts):
        at = next(s for s in shots if s.restart == k and s.step == start.record["best_step"])
        np.testing.assert_array_equal(at.image, start.hr)
