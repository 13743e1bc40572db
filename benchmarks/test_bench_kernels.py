"""Kernel micro-benchmarks (pytest-benchmark): the references on CPU; the CUDA kernels on a GPU."""
import numpy as np
import pytest

from pulse_trt.kernels.downsample_loss import downsample_loss
from pulse_trt.kernels.sphere_adam import sphere_adam

pytestmark = pytest.mark.benchmark


@pytest.mark.parametrize("impl", ["ref", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_downsample_loss(benchmark, impl):
    rng = np.random.default_rng(0)
    hr = rng.random((2, 3, 64, 64), dtype=np.float32)  # dcgan size, factor 8 -> 8x8
    target = rng.random((2, 3, 8, 8), dtype=np.float32)
    if impl == "cuda":
        torch = pytest.importorskip("torch")
        hr, target = torch.from_numpy(hr).cuda(), torch.from_numpy(target).cuda()
    out = benchmark(downsample_loss, hr, target, 8, 2e-3, 100.0, 0.0, impl=impl)
    assert tuple(out.lr.shape) == (2, 3, 8, 8) and tuple(out.grad_hr.shape) == (2, 3, 64, 64)


@pytest.mark.parametrize("impl", ["ref", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_sphere_adam(benchmark, impl):
    rng = np.random.default_rng(1)
    p = rng.standard_normal((4, 18, 512), dtype=np.float32)
    g = rng.standard_normal(p.shape, dtype=np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    radius = np.sqrt((p.astype(np.float64) ** 2).sum(-1, keepdims=True) + 1e-9).astype(np.float32)
    if impl == "cuda":
        torch = pytest.importorskip("torch")
        p, g, m, v, radius = (torch.from_numpy(a).cuda() for a in (p, g, m, v, radius))
    benchmark(sphere_adam, p, g, m, v, radius, 0.1, 1, impl=impl)
    norms = np.sqrt((np.asarray(p.cpu() if impl == "cuda" else p, np.float64) ** 2).sum(-1, keepdims=True))
    np.testing.assert_allclose(norms, np.asarray(radius.cpu() if impl == "cuda" else radius), rtol=1e-4)
