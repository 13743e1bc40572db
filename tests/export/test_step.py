"""The functional step (the torch twin of step.onnx, graph contract 2) against export/reference.py
(torch.optim) trajectories: in lockstep, and on a per-row schedule (rows starting at different
calls, holding still, starting over)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pulse_trt.engine.errors import PulseError
from pulse_trt.engine.options import PulseOptions
from pulse_trt.engine.state import job_rows, start_state
from pulse_trt.export.reference import pulse_search
from pulse_trt.export.step import make_render_fn, make_step_fn, start_inputs, step_layout


def _run_steps(gen, options, target, steps):
    fn = make_step_fn(gen, options, target.shape[-1])
    st = start_state(gen.spec, options, job_rows(target.shape[0], 1))
    named = start_inputs(fn.layout, torch.tensor(st.latent), [torch.tensor(n) for n in st.noise], target)
    b = target.shape[0]
    totals = []
    for j in range(steps):
        named["lr"] = torch.full((b,), options.lr_at(j), dtype=torch.float32)
        named["t"] = torch.full((b,), float(j + 1))
        out = dict(zip(fn.output_names, fn(*[named[n] for n in fn.input_names])))
        totals.append(out["loss.TOTAL"])
        for s in fn.layout.state:
            named[s] = out[f"next.{s}"]
    return torch.stack(totals, 1).numpy(), named


@pytest.mark.parametrize("opt", ["adam", "adamax", "sgd", "sgdm"])
def test_step_reproduces_reference_trajectory(tiny_style, opt):
    options = PulseOptions(opt_name=opt, steps=5, learning_rate=0.1 if opt.startswith("sgd") else 0.4, eps=1e-6)
    target = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    ref = np.array([r.history["TOTAL"] for r in pulse_search(tiny_style, target, options)])
    ours, _ = _run_steps(tiny_style, options, target, options.steps)
    np.testing.assert_allclose(ours, ref, rtol=2e-5)


def test_tiled_single_vector_generator(tiny_vector):
    options = PulseOptions(steps=4, eps=1e-6)
    target = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(4))
    ref = np.array([r.history["TOTAL"] for r in pulse_search(tiny_vector, target, options)])
    ours, named = _run_steps(tiny_vector, options, target, options.steps)
    np.testing.assert_allclose(ours, ref, rtol=2e-5)
    # the projection keeps each latent row on its start sphere
    r = named["radius.latent"]
    torch.testing.assert_close(named["latent"].pow(2).sum(-1, keepdim=True).add(1e-9).sqrt(), r)


def test_per_row_schedule_reproduces_the_reference_row_by_row(tiny_style):
    """Three rows of one batch on their own schedules: row 0 runs steps 0..4 from call 0; row 1
    holds still (t = 0) until call 3, then runs steps 0..4; row 2 runs 2 steps of another start,
    then starts over (t = 1) at call 2 and runs steps 0..4. Per row, the terms equal
    pulse_search's for that input alone, and best.X is its best iterate (its render equals the
    reference's image)."""
    options = PulseOptions(steps=5, eps=1e-6)
    target = torch.rand(3, 3, 4, 4, generator=torch.Generator().manual_seed(5))
    fn = make_step_fn(tiny_style, options, 4)
    st = start_state(tiny_style.spec, options, [(0, 0), (1, 0), (2, 0)])
    named = start_inputs(fn.layout, torch.tensor(st.latent), [torch.tensor(n) for n in st.noise], target)
    trainable = [i for i, r in enumerate(st.roles) if r == "trainable"]

    def set_start(row, start, k):  # start.X of one row from row k of a StartState
        for name, x in zip(fn.layout.starts, [start.latent] + [start.noise[i] for i in trainable]):
            named[name] = named[name].clone()
            named[name][row] = torch.tensor(x[k])

    set_start(2, start_state(tiny_style.spec, options, [(9, 0)]), 0)  # row 2's abandoned first start
    first = {0: 0, 1: 3, 2: 2}  # the call at which each row's search takes its step 0
    terms = {r: [] for r in range(3)}
    for call in range(8):
        if call == 2:
            set_start(2, st, 2)  # row 2 starts over from its real start
        step = [call - first[r] for r in range(3)]
        live = [0 <= j < options.steps for j in step]
        t = [j + 1 if ok else 0 for j, ok in zip(step, live)]
        lr = [options.lr_at(j) if ok else 0.0 for j, ok in zip(step, live)]
        if call < 2:  # row 2's abandoned start, steps 0 and 1
            t[2], lr[2] = call + 1, options.lr_at(call)
        named["t"], named["lr"] = torch.tensor(t, dtype=torch.float32), torch.tensor(lr, dtype=torch.float32)
        out = dict(zip(fn.output_names, fn(*[named[n] for n in fn.input_names])))
        for r in range(3):
            if live[r]:
                terms[r].append(float(out["loss.TOTAL"][r]))
        for s in fn.layout.state:
            named[s] = out[f"next.{s}"]
    render = make_render_fn(tiny_style, options, 4)
    noise = [named[f"best.noise{i}"] if r == "trainable" else torch.tensor(st.noise[i])
             for i, r in enumerate(st.roles) if r != "zero"]
    image = render(named["best.latent"], *noise)[0]  # [3, 3, 16, 16]
    for r in range(3):
        ref = pulse_search(tiny_style, target[r:r + 1], options, first_input=r)[0]
        np.testing.assert_allclose(terms[r], ref.history["TOTAL"], rtol=2e-5, err_msg=f"row {r}")
        assert float(named["best.loss"][r]) == pytest.approx(min(terms[r]), rel=1e-6)
        np.testing.assert_allclose(image[r].numpy(), ref.hr, atol=2e-5)


def test_rows_are_independent(tiny_style):
    fn = make_step_fn(tiny_style, PulseOptions(), 4)
    g = torch.Generator().manual_seed(0)
    ins = [torch.rand(i.concrete(3), generator=g) + 0.5 for i in fn.layout.step_inputs()]
    full = fn(*ins)
    one = fn(*[x[1:2] if x.ndim else x for x in ins])
    for a, b in zip(full, one):
        torch.testing.assert_close(a[1:2], b, rtol=1e-5, atol=1e-6)


def test_layout_names_follow_the_contract(tiny_style):
    lay = step_layout(tiny_style.spec, PulseOptions(num_trainable_noise_layers=2, bad_noise_layers="5"), 4)
    assert lay.roles == ("trainable", "trainable", "frozen", "frozen", "frozen", "zero")
    assert [i.name for i in lay.step_inputs()] == [
        "target", "lr", "t", "latent", "noise0", "noise1", "m.latent", "v.latent", "m.noise0", "v.noise0",
        "m.noise1", "v.noise1", "best.latent", "best.noise0", "best.noise1", "best.loss", "min.L2",
        "start.latent", "start.noise0", "start.noise1", "radius.latent", "radius.noise0", "radius.noise1",
        "noise2", "noise3", "noise4"]
    assert lay.shapes["lr"] == lay.shapes["t"] == lay.shapes["best.loss"] == ("B",)
    assert [o.name for o in lay.step_outputs()][-4:] == ["loss.L2", "loss.L1", "loss.GEOCROSS", "loss.TOTAL"]
    assert [i.name for i in lay.render_inputs()] == ["latent", "noise0", "noise1", "noise2", "noise3", "noise4"]
    assert lay.shapes["radius.noise1"] == ("B", 1, 1, 1)
    assert step_layout(tiny_style.spec, PulseOptions(opt_name="sgd"), 4).state == (
        "latent", "noise0", "noise1", "noise2", "noise3", "noise4", "best.latent", "best.noise0", "best.noise1",
        "best.noise2", "best.noise3", "best.noise4", "best.loss", "min.L2")


def test_bad_lr_size_and_precision(tiny_style):
    with pytest.raises(PulseError):
        step_layout(tiny_style.spec, PulseOptions(), 5)
    with pytest.raises(PulseError):
        make_step_fn(tiny_style, PulseOptions(), 4, precision="fp8")


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_low_precision_close_to_fp32(tiny_style, precision):
    f32 = make_render_fn(tiny_style, PulseOptions(), 4)
    low = make_render_fn(tiny_style, PulseOptions(), 4, precision)
    ins = [torch.randn(i.concrete(2), generator=torch.Generator().manual_seed(1)) for i in f32.layout.render_inputs()]
    a, b = f32(*ins)[0], low(*ins)[0]
    assert b.dtype == torch.float32
    assert (a - b).abs().max() < (0.05 if precision == "fp16" else 0.2)
