"""The functional step against export/reference.py (torch.optim) trajectories."""
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
    totals = []
    for j in range(steps):
        named["lr"] = torch.tensor(options.lr_at(j), dtype=torch.float32)
        named["t"] = torch.tensor(float(j + 1))
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
        "m.noise1", "v.noise1", "radius.latent", "radius.noise0", "radius.noise1", "noise2", "noise3", "noise4"]
    assert [o.name for o in lay.step_outputs()][-4:] == ["loss.L2", "loss.L1", "loss.GEOCROSS", "loss.TOTAL"]
    assert [i.name for i in lay.render_inputs()] == ["latent", "noise0", "noise1", "noise2", "noise3", "noise4"]
    assert lay.shapes["radius.noise1"] == ("B", 1, 1, 1)
    assert step_layout(tiny_style.spec, PulseOptions(opt_name="sgd"), 4).state == ("latent", "noise0", "noise1", "noise2", "noise3", "noise4")


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
