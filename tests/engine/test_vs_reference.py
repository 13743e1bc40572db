"""The ORT-CPU engine against the PyTorch side, same seed and options (slow: exports with torch).

1. Teacher-forced, every step of 100: from the engine's own state before step j, the torch
   step function (export/step.py, the computation step.onnx was traced from, whose optimiser
   follows torch.optim; run under the tracer's InstanceNormAsFormula, as traced) gives the same
   four loss terms within 1e-4 relative, and the same next state (best iterate and smallest L2
   included).
2. Free-running against export/reference.py's pulse_search (torch.optim): per-step terms within
   1e-2 for the first steps (1e-4 on some hosts: see the test), the same success verdicts and
   restart choices.
On the embedded dcgan, a small stylegan1 (random weights, 16 px, 8 channels) and a small
mobilestylegan (random weights, 32 px).
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pulse_trt.engine.manifest import load_manifest  # noqa: E402
from pulse_trt.engine.runner_ort import OrtRunner  # noqa: E402
from pulse_trt.engine.scheduler import start_rows  # noqa: E402
from pulse_trt.engine.state import job_rows  # noqa: E402

from searching import search  # noqa: E402

pytestmark = pytest.mark.slow


def _cases(request):
    if request.param == "dcgan":
        return request.getfixturevalue("dcgan"), request.getfixturevalue("dcgan_dir")
    if request.param == "mobilestylegan":
        return request.getfixturevalue("small_mobilestylegan"), request.getfixturevalue("mobilestylegan_dir")
    return request.getfixturevalue("small_stylegan"), request.getfixturevalue("stylegan_dir")


@pytest.fixture(params=["dcgan", "stylegan1", "mobilestylegan"])
def case(request):
    return _cases(request)


def _targets(n, lr_size, seed=11):
    return np.random.default_rng(seed).uniform(0.2, 0.8, (n, 3, lr_size, lr_size)).astype(np.float32)


def test_teacher_forced_steps_match_the_torch_step(case):
    from pulse_trt.export.decompositions import InstanceNormAsFormula  # noqa: PLC0415
    from pulse_trt.export.step import make_step_fn  # noqa: PLC0415

    gen, art = case
    m = load_manifest(art)
    fn = make_step_fn(gen, m.options, m.lr_size)
    rows = job_rows(2, m.options.duplicates)
    feeds = start_rows(m, m.options, np.repeat(_targets(2, m.lr_size), m.options.duplicates, axis=0), rows)
    b = len(rows)
    worst = 0.0
    names = [s.name for s in m.state]
    with OrtRunner(m) as r:
        r.open(b)
        r.write_rows(list(range(b)), feeds)
        for j in range(m.options.steps):
            state = r.read_rows(names)
            named = {**feeds, **state, "lr": np.full(b, m.options.lr_at(j), np.float32),
                     "t": np.full(b, j + 1, np.float32)}
            # The arithmetic traced into step.onnx: eager F.instance_norm (stylegan1) is one fused
            # kernel whose float32 rounding Adam's second step (update ~ lr * g / |g| for tiny g)
            # turns into latent differences of ~3e-3 on a few elements.
            with torch.no_grad(), InstanceNormAsFormula():
                ref = dict(zip(fn.output_names, fn(*[torch.from_numpy(named[n]) for n in fn.input_names])))
            terms = r.run(b, named["lr"][None], named["t"][None])
            for term, got in terms.items():
                want = ref[f"loss.{term}"].numpy()
                np.testing.assert_allclose(got[0], want, rtol=1e-4, atol=1e-7, err_msg=f"step {j} {term}")
                worst = max(worst, float(np.max(np.abs(got[0] - want) / np.maximum(np.abs(want), 1e-7))))
            nxt = r.read_rows(names)
            for s in m.state:
                got_s, want_s = nxt[s.name], ref[s.next].numpy()
                if gen.spec.name != "stylegan1":
                    np.testing.assert_allclose(got_s, want_s, rtol=1e-3, atol=1e-4, err_msg=f"step {j} {s.next}")
                    continue
                # The small random stylegan1 (8 channels, instance norms over 4x4 maps) has gradients
                # that amplify rounding differences between ONNX Runtime's and torch's kernels: on
                # an AMD EPYC host, at step 2, 40 of 384 Adam first-moment entries differed by up
                # to 6e-3 and one noise entry by 0.023 (Adam turns a gradient at rounding level
                # into a full step), with every loss term still within 1e-4; on the Intel host all
                # agreed to 1e-3. Compared norm-wise there.
                err = float(np.linalg.norm(got_s - want_s) / max(float(np.linalg.norm(want_s)), 1e-12))
                assert err <= 5e-2, f"step {j} {s.next}: relative error {err:.3g}"
    print(f"worst relative loss difference over {m.options.steps} steps: {worst:.2e}")


def test_free_running_search_matches_the_reference(case):
    from pulse_trt.export.reference import pulse_search  # noqa: PLC0415

    gen, art = case
    m = load_manifest(art)
    y = _targets(2, m.lr_size)
    ref = pulse_search(gen, y, m.options)
    with OrtRunner(m) as r:
        got, _ = search(r, y, slots=3)
    for a, b in zip(ref, got):
        assert b.record["success"] == a.record["success"]
        assert b.record["restart"] == a.record["restart"]
        for term in ("L2", "TOTAL"):
            # the same rounding-level drift (see above) grows along a free-running search: within
            # 1e-4 on the Intel host, 3.7e-3 by step 9 for stylegan1 on the AMD one
            np.testing.assert_allclose(b.history[term][:10], a.history[term][:10], rtol=1e-2)
        assert b.record["min_l2"] == pytest.approx(a.record["min_l2"], rel=0.1)
