"""Run the engine's scheduler synchronously in tests: search(runner, targets, ...) submits every
input to a fresh engine/scheduler.py Scheduler and steps it to the end (one thread, no futures)."""
from __future__ import annotations

import numpy as np

from pulse_trt.engine.runner_ort import OrtRunner
from pulse_trt.engine.scheduler import Request, Scheduler, start_rows


def search(runner, targets, *, options=None, slots=None, sync_every=4, order=None, progress=None, fields=None):
    """Results of targets [N, 3, lr, lr] (input i keyed by index i) through a fresh Scheduler of
    `slots` rows (default: every start at once); `order`: the submission order of the inputs;
    `fields(i)`: more Request fields of input i (e.g. render_every, on_render, keep_restarts).
    Returns (results in input order, the scheduler)."""
    targets = np.asarray(targets, np.float32)
    opts = runner.manifest.resolve_options(options)
    slots = slots or len(targets) * (opts.duplicates)
    sched = Scheduler(runner, slots=slots, sync_every=sync_every)
    order = range(len(targets)) if order is None else order
    reqs = {i: sched.add(Request(target=targets[i], index=i, options=opts,
                                 progress=None if progress is None else progress(i),
                                 **(fields(i) if fields is not None else {}))) for i in order}
    sched.run_until_done()
    for r in reqs.values():
        if r.error is not None:
            raise r.error
    return [reqs[i].result for i in range(len(targets))], sched


def toy_targets(n, seed=5):
    """n LR targets [n, 3, 2, 2] for the toy artefacts (tests/engine/toy_artifacts.py)."""
    return np.random.default_rng(seed).uniform(0.3, 0.7, (n, 3, 2, 2)).astype(np.float32)


def reachable(m, n=1, scale=0.9):
    """Targets the toy can make: the lr image of a scaled start (reached within eps)."""
    feeds = start_rows(m, m.options, toy_targets(n), [(50 + i, 0) for i in range(n)])
    with OrtRunner(m) as r:
        r.open(n)
        out = r._render_sess.run(None, {"latent": feeds["start.latent"] * scale, "noise0": feeds["start.noise0"],
                                        "noise1": feeds["noise1"]})
    return out[1]  # lr_image [n, 3, 2, 2]
