"""kernels.sphere_adam: the reference against torch.optim (Adam, Adamax, SGD, SGD momentum 0.9)
followed by PULSE's projection over several steps; the CUDA kernel against the reference."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pulse_trt.engine.errors import PulseError
from pulse_trt.kernels.sphere_adam import sphere_adam, sphere_update, vector_length

SHAPES = [(3, 4, 16), (1, 18, 512), (3, 1, 8, 8), (5, 1, 4, 4)]  # latents [B, L, D], noise [B, 1, H, W]


def _torch_norm(x):
    dims = (2,) if x.ndim == 3 else tuple(range(1, x.ndim))
    return (x.pow(2).sum(dim=dims, keepdim=True) + 1e-9).sqrt()


def _torch_run(opt_name, x0, grads, lrs):
    """torch.optim + projection, exactly as export/reference.py runs PULSE."""
    p = torch.nn.Parameter(torch.tensor(x0))
    opt = {"adam": lambda: torch.optim.Adam([p], lr=lrs[0]), "adamax": lambda: torch.optim.Adamax([p], lr=lrs[0]),
           "sgd": lambda: torch.optim.SGD([p], lr=lrs[0]), "sgdm": lambda: torch.optim.SGD([p], lr=lrs[0], momentum=0.9)}[opt_name]()
    radius = _torch_norm(p.detach())
    for g, lr in zip(grads, lrs):
        for group in opt.param_groups:
            group["lr"] = lr
        p.grad = torch.tensor(g)
        opt.step()
        with torch.no_grad():
            p.mul_(radius / _torch_norm(p))
    return p.detach().numpy(), radius.numpy()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("opt_name", ["adam", "adamax", "sgd", "sgdm"])
def test_ref_matches_torch_optim_with_projection(shape, opt_name):
    rng = np.random.default_rng(len(shape) * 10 + shape[-1])
    x0 = rng.standard_normal(shape).astype(np.float32)
    grads = [rng.standard_normal(shape).astype(np.float32) for _ in range(6)]
    lrs = [0.04, 0.2, 0.4, 0.3, 0.1, 0.004]  # a linear1cycledrop-like schedule
    want, radius = _torch_run(opt_name, x0, grads, lrs)
    p = x0.copy()
    moments = [np.zeros_like(p) for _ in range({"adam": 2, "adamax": 2, "sgdm": 1, "sgd": 0}[opt_name])]
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        sphere_update(opt_name, p, g, moments, radius, lr, t)
    assert p == pytest.approx(want, rel=1e-5, abs=1e-5)
    n = vector_length(shape)
    assert np.linalg.norm(p.reshape(-1, n), axis=1) == pytest.approx(radius.reshape(-1), rel=1e-5)


def test_sphere_adam_first_step_by_hand():
    """t = 1 with zero moments: m = 0.1 g, v = 0.001 g^2, m_hat / sqrt(v_hat) = sign(g), so the
    step is -lr * sign(g) (eps negligible), then the row is rescaled to its radius."""
    p = np.array([[[3.0, 4.0]]], np.float32)       # [1, 1, 2], norm 5
    g = np.array([[[2.0, -0.5]]], np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    sphere_adam(p, g, m, v, np.array([[[5.0]]], np.float32), lr=1.0, t=1)
    stepped = np.array([2.0, 5.0])
    assert p.reshape(-1) == pytest.approx(stepped / np.linalg.norm(stepped) * 5.0, rel=1e-6)
    assert m.reshape(-1) == pytest.approx([0.2, -0.05]) and v.reshape(-1) == pytest.approx([0.004, 0.00025])


def test_vector_length_and_errors():
    assert vector_length((2, 18, 512)) == 512 and vector_length((2, 1, 16, 16)) == 256
    with pytest.raises(PulseError):
        sphere_update("rmsprop", np.zeros((1, 1, 2), np.float32), np.zeros((1, 1, 2), np.float32), [], np.ones(1), 0.1)
    with pytest.raises(PulseError, match="moment"):
        sphere_update("adam", np.zeros((1, 1, 2), np.float32), np.zeros((1, 1, 2), np.float32), [], np.ones(1), 0.1)


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(3, 18, 512), (1, 1, 512), (5, 1, 16, 16), (2, 1, 64, 64)])
@pytest.mark.parametrize("opt_name", ["adam", "adamax", "sgd", "sgdm"])
def test_cuda_matches_ref(shape, opt_name):
    rng = np.random.default_rng(shape[-1])
    p0 = rng.standard_normal(shape).astype(np.float32)
    n = vector_length(shape)
    radius = np.linalg.norm(p0.reshape(-1, n), axis=1).astype(np.float32)
    k = {"adam": 2, "adamax": 2, "sgdm": 1, "sgd": 0}[opt_name]
    p_ref, m_ref = p0.copy(), [np.abs(rng.standard_normal(shape)).astype(np.float32) for _ in range(k)]
    p_gpu, m_gpu = torch.tensor(p0, device="cuda"), [torch.tensor(m, device="cuda") for m in m_ref]
    r_gpu = torch.tensor(radius, device="cuda")
    for t in range(1, 4):
        g = rng.standard_normal(shape).astype(np.float32)
        sphere_update(opt_name, p_ref, g, m_ref, radius, 0.3, t)
        sphere_update(opt_name, p_gpu, torch.tensor(g, device="cuda"), m_gpu, r_gpu, 0.3, t, impl="cuda")
    torch.cuda.synchronize()
    rel = np.linalg.norm(p_gpu.cpu().numpy() - p_ref) / np.linalg.norm(p_ref)
    assert rel < 1e-5
    for a, b in zip(m_gpu, m_ref):
        assert np.linalg.norm(a.cpu().numpy() - b) / np.linalg.norm(b) < 1e-5
