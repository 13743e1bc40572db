"""kernels.downsample_loss: the reference against engine.bicubic, torch autograd of
export/losses.py and hand-computed values; the CUDA kernels against the reference (GPU only)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pulse_trt.engine import bicubic
from pulse_trt.engine.errors import PulseError
from pulse_trt.export import losses
from pulse_trt.kernels.downsample_loss import downsample_loss, downsample_loss_ref

# (N, H, W, f): odd batch sizes, non-square, many factors.
CASES = [(1, 8, 8, 1), (3, 16, 16, 2), (5, 24, 24, 3), (2, 32, 32, 4), (3, 64, 32, 8), (1, 64, 64, 16),
         (7, 32, 48, 4), (1, 96, 96, 32)]


def _inputs(n, h, w, f, seed, near=()):
    """Random HR in [0, 1] and a target; images listed in `near` get a target within eps/10."""
    rng = np.random.default_rng(seed)
    hr = rng.random((n, 3, h, w))
    target = rng.random((n, 3, h // f, w // f))
    for i in near:
        target[i] = bicubic.downscale(hr[i:i + 1], f)[0] + 0.01 * rng.standard_normal(target[i].shape)
    return hr, target


def _torch_reference(hr, target, f, eps, w2, w1):
    x = torch.tensor(hr, requires_grad=True)
    lr = losses.downscale(x, f)  # [N, 3, h, w] float64
    lr.retain_grad()
    t = torch.tensor(target)
    l2, l1 = losses.l2(lr, t, eps), losses.l1(lr, t, eps)
    (w2 * l2.sum() + w1 * l1.sum()).backward()
    return lr.detach().numpy(), l2.detach().numpy(), l1.detach().numpy(), lr.grad.numpy(), x.grad.numpy()


@pytest.mark.parametrize("n, h, w, f", CASES)
@pytest.mark.parametrize("w2, w1", [(100.0, 0.0), (1.0, 0.5), (0.0, 2.0)])
def test_ref_matches_torch_autograd(n, h, w, f, w2, w1):
    eps = 2e-3
    hr, target = _inputs(n, h, w, f, seed=n * 1000 + h + f, near=(0,) if n > 1 else ())
    ref = downsample_loss_ref(hr, target, f, eps, w2, w1)  # float64 in, float64 out
    want = _torch_reference(hr, target, f, eps, w2, w1)
    for got, exp in zip(ref, want):
        assert got.shape == exp.shape
        assert got == pytest.approx(exp, rel=1e-9, abs=1e-12)
    if n > 1:  # image 0 is within eps for L2 (MSE ~1e-4), not for L1 (MAE ~8e-3)
        assert ref.l2[0] == eps and (ref.grad_hr[1] != 0).any()
        assert (ref.grad_lr[0] != 0).any() == (w1 > 0)


def test_ref_is_bicubic_and_its_transpose():
    hr, target = _inputs(3, 32, 32, 4, seed=5)
    ref = downsample_loss_ref(hr.astype(np.float32), target.astype(np.float32), 4, 2e-3, 100.0, 0.0)
    assert ref.lr.dtype == np.float32 and ref.grad_hr.dtype == np.float32
    assert ref.lr == pytest.approx(bicubic.downscale(hr, 4), abs=1e-6)
    assert ref.grad_hr == pytest.approx(bicubic.downscale_transpose(ref.grad_lr.astype(np.float64), 4, (32, 32)), rel=1e-5, abs=1e-9)


def test_ref_hand_computed_constant_image():
    """A constant image downscales to itself (taps sum to 1, reflection keeps it constant):
    with the target 0.1 below, MSE 0.01, MAE 0.1, dL/dLR = w2 * 2 * 0.1 / count + w1 * 10 / count."""
    hr = np.full((1, 3, 16, 16), 0.5)
    target = np.full((1, 3, 4, 4), 0.4)
    ref = downsample_loss_ref(hr, target, 4, 2e-3, w2=3.0, w1=0.5)
    count = 3 * 4 * 4
    assert ref.lr == pytest.approx(np.full((1, 3, 4, 4), 0.5))
    assert ref.l2 == pytest.approx([0.01]) and ref.l1 == pytest.approx([1.0])
    assert ref.grad_lr == pytest.approx(np.full((1, 3, 4, 4), 3.0 * 2 * 0.1 / count + 0.5 * 10 / count))
    # D^T of a constant spreads it with total weight count * value: sum of dL/dHR = sum of dL/dLR
    assert ref.grad_hr.sum() == pytest.approx(ref.grad_lr.sum())


def test_ref_clamp_below_eps_gives_no_gradient():
    hr = np.full((2, 3, 8, 8), 0.5)
    target = np.full((2, 3, 4, 4), 0.5)
    target[1] -= 0.2
    ref = downsample_loss_ref(hr, target, 2, 2e-3, w2=1.0, w1=1.0)
    assert ref.l2.tolist() == pytest.approx([2e-3, 0.04]) and ref.l1.tolist() == pytest.approx([2e-2, 2.0])
    assert not ref.grad_lr[0].any() and not ref.grad_hr[0].any() and ref.grad_hr[1].all()


@pytest.mark.parametrize("hr_shape, target_shape, f", [((3, 16, 16), (1, 3, 4, 4), 4), ((1, 3, 16, 16), (1, 3, 8, 8), 4),
                                                       ((1, 3, 18, 18), (1, 3, 4, 4), 4), ((1, 3, 16, 16), (1, 3, 4, 4), 0)])
def test_bad_shapes_are_pulse_errors(hr_shape, target_shape, f):
    with pytest.raises(PulseError):
        downsample_loss(np.zeros(hr_shape), np.zeros(target_shape), f, 2e-3)


def test_unknown_impl_and_host_tensors_for_cuda():
    hr, target = np.zeros((1, 3, 8, 8), np.float32), np.zeros((1, 3, 4, 4), np.float32)
    with pytest.raises(PulseError, match="impl"):
        downsample_loss(hr, target, 2, 2e-3, impl="triton")
    with pytest.raises(PulseError, match="CUDA tensors"):
        downsample_loss(torch.tensor(hr), torch.tensor(target), 2, 2e-3, impl="cuda")


# ---- GPU: the kernels against the reference ----------------------------------------------------

GPU_CASES = [(1, 1024, 16), (1, 1024, 32), (3, 1024, 64), (8, 256, 8), (5, 96, 3), (2, 64, 1), (1, 1024, 4)]


def _poisoned(shape, dtype=torch.float32):
    return torch.full(shape, float("nan"), dtype=dtype, device="cuda")


def _run_cuda_poisoned(hr, target, f, eps, w2, w1):
    """The pointer-level launch with every output poisoned with NaN first."""
    from pulse_trt.kernels.downsample_loss import launch_downsample_loss
    from pulse_trt.kernels.loader import get_module

    n, c, h, w = hr.shape
    lr, grad_lr = _poisoned(target.shape), _poisoned(target.shape)
    loss, grad_hr = _poisoned((n, 2)), _poisoned(hr.shape, hr.dtype)
    counters = torch.full((n,), 7, dtype=torch.int32, device="cuda")
    launch_downsample_loss(get_module(), hr, target, lr, loss, grad_lr, grad_hr, counters, (n, c, h, w), f,
                           str(hr.dtype).replace("torch.", ""), eps, w2, w1, torch.cuda.current_stream().cuda_stream)
    torch.cuda.synchronize()
    return lr, loss, grad_lr, grad_hr


def _rel(got, want):
    want = np.asarray(want, np.float64)
    return np.linalg.norm(np.asarray(got, np.float64) - want) / max(np.linalg.norm(want), 1e-30)


@pytest.mark.gpu
@pytest.mark.parametrize("n, size, lr_size", GPU_CASES)
def test_cuda_matches_ref_fp32(n, size, lr_size):
    f = size // lr_size
    hr, target = _inputs(n, size, size, f, seed=size + lr_size + n, near=(0,) if n > 1 else ())
    hr, target = hr.astype(np.float32), target.astype(np.float32)
    ref = downsample_loss_ref(hr.astype(np.float64), target.astype(np.float64), f, 2e-3, 100.0, 0.5)
    lr, loss, grad_lr, grad_hr = _run_cuda_poisoned(torch.tensor(hr, device="cuda"), torch.tensor(target, device="cuda"),
                                                    f, 2e-3, 100.0, 0.5)
    for name, got, want in [("lr", lr, ref.lr), ("l2", loss[:, 0], ref.l2), ("l1", loss[:, 1], ref.l1),
                            ("grad_lr", grad_lr, ref.grad_lr), ("grad_hr", grad_hr, ref.grad_hr)]:
        got = got.cpu().numpy()
        assert not np.isnan(got).any(), f"{name}: unwritten (NaN-poisoned) elements"
        assert _rel(got, want) < 1e-5, name


@pytest.mark.gpu
@pytest.mark.parametrize("dtype, tol", [(torch.float16, 2e-3), (torch.bfloat16, 1e-2)])
def test_cuda_low_precision_inputs(dtype, tol):
    f = 32
    hr, target = _inputs(3, 1024, 1024, f, seed=11)
    hr_lp = torch.tensor(hr, dtype=torch.float32).to(dtype)
    ref = downsample_loss_ref(hr_lp.float().numpy().astype(np.float64), target, f, 2e-3, 100.0, 0.0)  # same rounded input
    lr, loss, grad_lr, grad_hr = _run_cuda_poisoned(hr_lp.cuda(), torch.tensor(target, dtype=torch.float32, device="cuda"),
                                                    f, 2e-3, 100.0, 0.0)
    assert grad_hr.dtype == dtype
    assert _rel(lr.cpu().numpy(), ref.lr) < 1e-5  # fp32 accumulation of exactly representable inputs
    assert _rel(loss[:, 0].cpu().numpy(), ref.l2) < 1e-5
    assert _rel(grad_hr.float().cpu().numpy(), ref.grad_hr) < tol  # only the output rounding


@pytest.mark.gpu
def test_cuda_public_function_and_gather_downscale():
    from pulse_trt.kernels.downsample_loss import downscale

    hr, target = _inputs(3, 256, 256, 8, seed=3)
    ref = downsample_loss_ref(hr, target, 8, 2e-3, 100.0, 0.0)
    out = downsample_loss(torch.tensor(hr, dtype=torch.float32, device="cuda"),
                          torch.tensor(target, dtype=torch.float32, device="cuda"), 8, 2e-3, 100.0, 0.0, impl="cuda")
    assert _rel(out.grad_hr.cpu().numpy(), ref.grad_hr) < 1e-5
    y = downscale(torch.tensor(hr, dtype=torch.float32, device="cuda"), 8, impl="cuda")
    assert _rel(y.cpu().numpy(), ref.lr) < 1e-5
