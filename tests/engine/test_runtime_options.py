"""Runtime options (steps, seed, duplicates, learning_rate, lr_schedule, restarts, early_stop)
over fixed artefacts: engine.options.graph_options, Manifest.runtime_options / resolve_options,
the scheduler's requests and PulseEngine.search(options=) on the toy artefacts (against the float64 numpy reference), and
on the exported dcgan against export/reference.py's pulse_search (slow: exports with torch)."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from pulse_trt.engine.api import PulseEngine
from pulse_trt.engine.errors import PulseError
from pulse_trt.engine.manifest import load_manifest
from pulse_trt.engine.options import RUNTIME_OPTIONS, PulseOptions, graph_options
from pulse_trt.engine.runner_ort import OrtRunner
from pulse_trt.engine.scheduler import start_rows
from pulse_trt.engine.state import job_rows

from searching import search
from toy_artifacts import seal, toy_search_ref


def _targets(n, seed=5):
    return np.random.default_rng(seed).uniform(0.3, 0.7, (n, 3, 2, 2)).astype(np.float32)


def test_graph_options_are_the_others():
    o = PulseOptions(steps=3, seed=7, eps=1e-3)
    g = graph_options(o)
    assert set(RUNTIME_OPTIONS) == {"steps", "seed", "duplicates", "learning_rate", "lr_schedule", "restarts",
                                    "early_stop"}
    assert set(g) == set(o.to_dict()) - set(RUNTIME_OPTIONS)
    assert g["eps"] == 1e-3 and g["loss_str"] == "100*L2+0.05*GEOCROSS" and g["opt_name"] == "adam"
    assert graph_options(replace(o, steps=99, seed=1, duplicates=3, learning_rate=0.1, lr_schedule="fixed")) == g


def test_manifest_without_runtime_options_field_loads(toy_dir):
    # The toy manifest predates the field: the same list is assumed.
    assert "runtime_options" not in json.loads((toy_dir / "manifest.json").read_text())
    assert load_manifest(toy_dir).runtime_options == RUNTIME_OPTIONS


def test_manifest_runtime_options_field(toy_dir, tmp_path):
    d = tmp_path / "art"
    shutil.copytree(toy_dir, d)
    p = d / "manifest.json"
    raw = json.loads(p.read_text())
    seal({**raw, "runtime_options": ["seed"]}, d)  # as an exporter would write it (key recomputed)
    m = load_manifest(d)
    assert m.runtime_options == ("seed",)
    assert m.resolve_options(replace(m.options, seed=4)).seed == 4
    with pytest.raises(PulseError, match="steps=3 is baked into the graphs"):  # not overridable here
        m.resolve_options(replace(m.options, steps=3))
    seal({**raw, "runtime_options": ["seed", "colour"]}, d)
    with pytest.raises(PulseError, match="runtime_options"):
        load_manifest(d)


def test_resolve_options(toy_dir):
    m = load_manifest(toy_dir)
    assert m.resolve_options(None) is m.options
    o = replace(m.options, steps=3, seed=9, duplicates=1, learning_rate=0.1, lr_schedule="fixed")
    assert m.resolve_options(o) is o
    with pytest.raises(PulseError) as e:
        m.resolve_options(replace(m.options, eps=0.01, opt_name="sgd", steps=3))
    msg = str(e.value)
    assert "\n" not in msg and "eps=0.01" in msg and "eps=0.002" in msg and "re-export" in msg
    assert "opt_name" not in msg  # the first differing option only
    with pytest.raises(PulseError, match="PulseOptions"):
        m.resolve_options({"steps": 3})


def test_search_with_runtime_options_matches_the_reference(toy_dir):
    """steps 3 (manifest: 20), seed 9, duplicates 1 (manifest: 2), fixed lr 0.05: the search runs
    exactly 3 steps from seed 9's starts, with the fixed schedule, as the numpy reference does."""
    m = load_manifest(toy_dir)
    assert m.options.steps == 20 and m.options.duplicates == 2 and m.options.seed == 0
    o = replace(m.options, steps=3, seed=9, duplicates=1, learning_rate=0.05, lr_schedule="fixed")
    y = _targets(2)
    seen = []
    with OrtRunner(m) as r:
        results, _ = search(r, y, options=o, sync_every=1, progress=lambda i: lambda d, t: seen.append((i, d, t)))
    assert seen == [(i, d, 3) for d in (1, 2, 3) for i in (0, 1)]
    feeds = start_rows(m, o, y, job_rows(2, 1))
    ref, _, _ = toy_search_ref(feeds["target"], o, feeds["start.latent"], [feeds["start.noise0"], feeds["noise1"]])
    for i, res in enumerate(results):
        assert len(res.history["TOTAL"]) == 3 and res.record["steps"] == 3 and res.record["restart"] == 0
        assert res.record["options"] == o.to_dict()
        np.testing.assert_allclose(res.history["TOTAL"], ref["TOTAL"][:, i], rtol=2e-5)
        np.testing.assert_allclose(res.history["L2"], ref["L2"][:, i], rtol=2e-5)
    # another seed: other starts, other losses; the manifest's seed is the default
    feeds0 = start_rows(m, m.options, y, job_rows(2, 1))
    assert not np.allclose(feeds0["start.latent"], feeds["start.latent"])


def test_default_options_are_the_manifests(toy_dir):
    m = load_manifest(toy_dir)
    y = _targets(1)
    with OrtRunner(m) as r:
        (a,), _ = search(r, y)
        (b,), _ = search(r, y, options=m.options)
    assert a.record["options"] == m.options.to_dict() and len(a.history["TOTAL"]) == 20
    np.testing.assert_array_equal(a.history["TOTAL"], b.history["TOTAL"])


def test_graph_option_mismatch_is_one_line_before_any_work(toy_dir):
    m = load_manifest(toy_dir)
    with OrtRunner(m) as r:
        with pytest.raises(PulseError) as e:
            search(r, _targets(1), options=replace(m.options, noise_type="zero"))
    assert "\n" not in str(e.value) and "noise_type='zero'" in str(e.value) and "re-export" in str(e.value)
    with PulseEngine(toy_dir) as engine:
        with pytest.raises(PulseError, match="loss_str"):
            engine.search(_targets(1), options=replace(m.options, loss_str="1*L2"))


def test_engine_search_and_upsample_take_options(toy_dir):
    m = load_manifest(toy_dir)
    o = replace(m.options, steps=4, seed=3)
    rgb = (np.arange(12, dtype=np.uint8) * 20).reshape(2, 2, 3)
    with PulseEngine(toy_dir, slots=3) as engine:
        a, = engine.upsample([rgb], options=o)
        b, = engine.search(rgb.transpose(2, 0, 1)[None].astype(np.float32) / 255, options=o)
        c, = engine.upsample([rgb])
    assert a.record["steps"] == 4 and a.record["options"]["seed"] == 3 and len(a.history["TOTAL"]) == 4
    np.testing.assert_array_equal(a.hr, b.hr)
    assert c.record["steps"] == 20 and engine.options == m.options


@pytest.mark.slow
def test_dcgan_with_other_seed_and_steps_matches_the_torch_reference(dcgan, dcgan_dir):
    """The exported dcgan (manifest: 100 steps, seed 0, duplicates 1) run with steps 12, seed 7,
    duplicates 2: the per-step terms of pulse_search with those options. Step 0 checks the starts
    (seed, rows), the next steps the schedule (lr_at over 12 steps, not 100). Compared over the
    first 6 steps at 1e-4: free-running float32 searches drift apart chaotically afterwards for
    some starts (seed 7 drifts 2e-4 by step 10 at the manifest's own 100 steps too); each single
    step is bounded by the teacher-forced test of test_vs_reference.py."""
    from pulse_trt.export.reference import pulse_search  # noqa: PLC0415

    m = load_manifest(dcgan_dir)
    assert (m.options.steps, m.options.seed, m.options.duplicates) == (100, 0, 1)
    o = replace(m.options, steps=12, seed=7, duplicates=2)
    y = np.random.default_rng(11).uniform(0.2, 0.8, (2, 3, 8, 8)).astype(np.float32)
    ref = pulse_search(dcgan, y, o)
    with OrtRunner(m) as r:
        got, _ = search(r, y, options=o)
        default, _ = search(r, y, slots=2)
    for a, b, d in zip(ref, got, default):
        assert len(b.history["TOTAL"]) == 12 and b.record["steps"] == 12 and b.record["options"] == o.to_dict()
        assert b.record["restart"] == a.record["restart"] and b.record["success"] == a.record["success"]
        for term in ("L2", "TOTAL"):
            np.testing.assert_allclose(b.history[term][:6], a.history[term][:6], rtol=1e-4)
        assert len(d.history["TOTAL"]) == 100 and abs(d.history["L2"][0] / b.history["L2"][0] - 1) > 1e-3
