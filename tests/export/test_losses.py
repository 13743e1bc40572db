"""export.losses: torch D against the numpy reference; L2, L1, GEOCROSS by hand; per-image terms."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pulse_trt.engine import bicubic
from pulse_trt.export.losses import downscale, geocross, l1, l2, loss_terms


@pytest.mark.parametrize("size, factor", [(16, 2), (32, 4), (64, 8), (24, 3), (32, 1)])
def test_downscale_matches_numpy(size, factor):
    x = np.random.default_rng(size + factor).random((2, 3, size, size))
    y_t = downscale(torch.tensor(x), factor).numpy()  # float64 all the way
    assert y_t == pytest.approx(bicubic.downscale(x, factor), abs=1e-12)
    y32 = downscale(torch.tensor(x, dtype=torch.float32), factor)
    assert y32.dtype == torch.float32 and y32.shape == (2, 3, size // factor, size // factor)
    assert y32.numpy() == pytest.approx(bicubic.downscale(x, factor), abs=2e-6)


def test_downscale_gradient_is_the_numpy_transpose():
    rng = np.random.default_rng(1)
    x = torch.tensor(rng.random((1, 3, 32, 32)), requires_grad=True)
    g = rng.standard_normal((1, 3, 8, 8))
    (downscale(x, 4) * torch.tensor(g)).sum().backward()
    assert x.grad.numpy() == pytest.approx(bicubic.downscale_transpose(g, 4, (32, 32)), abs=1e-12)


def test_l2_l1_values_and_clamp():
    target = torch.full((2, 3, 4, 4), 0.5)
    lr = target.clone()
    lr[0] = 0.0  # image 0: every pixel off by 0.5; image 1 exact
    assert l2(lr, target, 2e-3).tolist() == pytest.approx([0.25, 2e-3])
    assert l1(lr, target, 2e-3).tolist() == pytest.approx([5.0, 2e-2])  # 10 * max(eps, mean |.|)
    lr[1, 0, 0, 0] = 0.5 + 0.4  # one pixel of 48 off by 0.4: MSE 0.16/48 = 0.00333 > eps
    assert l2(lr, target, 2e-3)[1].item() == pytest.approx(0.16 / 48, rel=1e-5)
    assert l1(lr, target, 2e-3)[1].item() == pytest.approx(10 * 0.4 / 48, rel=1e-5)
    assert l2(lr, target, 0.0)[1].item() == pytest.approx(0.16 / 48, rel=1e-5)


def test_l2_clamp_stops_the_gradient():
    target = torch.zeros(1, 3, 2, 2)
    lr = torch.full((1, 3, 2, 2), 0.01, requires_grad=True)  # MSE 1e-4 < eps
    l2(lr, target, 2e-3).sum().backward()
    assert not lr.grad.any()


def _geocross_by_hand(w: np.ndarray) -> float:
    rows, dim = w.shape
    total = 0.0
    for i in range(rows):
        for j in range(rows):
            a = math.sqrt(((w[i] - w[j]) ** 2).sum() + 1e-9)
            c = math.sqrt(((w[i] + w[j]) ** 2).sum() + 1e-9)
            total += dim * (2 * math.atan2(a, c)) ** 2 / 8
    return total / rows**2


def test_geocross_orthogonal_rows():
    # d_01 = 2 atan2(sqrt 2, sqrt 2) = pi/2; diagonal d ~ 0: mean d^2 = (pi^2/4 * 2)/4, times D=2, /8.
    w = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)
    assert geocross(w).item() == pytest.approx(math.pi**2 / 32, rel=1e-8)
    w = torch.tensor([[[3.0, 0.0], [0.0, 0.5]]], dtype=torch.float64)  # unequal norms: still pi/2
    assert geocross(w).item() == pytest.approx(math.pi**2 / 32, rel=1e-8)


def test_geocross_identical_antipodal_and_tiled():
    w = torch.tensor([[[1.0, 2.0, 3.0]] * 4], dtype=torch.float64)
    assert geocross(w).item() < 1e-9
    w = torch.tensor([[[1.0, 2.0], [-1.0, -2.0]]], dtype=torch.float64)  # d_01 = pi
    assert geocross(w).item() == pytest.approx(2 * (2 * math.pi**2) / 4 / 8, rel=1e-4)  # 1e-9 shifts d by ~1e-5
    tiled = torch.randn(3, 1, 16)
    assert geocross(tiled).tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("rows", [2, 3])
def test_geocross_matches_hand_formula(rows):
    w = np.random.default_rng(rows).standard_normal((2, rows, 5))
    got = geocross(torch.tensor(w)).numpy()
    assert got == pytest.approx([_geocross_by_hand(w[0]), _geocross_by_hand(w[1])], rel=1e-10)


def test_loss_terms_total_and_per_image_independence():
    rng = torch.Generator().manual_seed(0)
    lr = torch.rand(3, 3, 4, 4, generator=rng, dtype=torch.float64, requires_grad=True)
    target = torch.rand(3, 3, 4, 4, generator=rng, dtype=torch.float64)
    w = torch.randn(3, 4, 6, generator=rng, dtype=torch.float64, requires_grad=True)
    terms = loss_terms(lr, target, w, {"L2": 100.0, "GEOCROSS": 0.05}, 2e-3)
    assert set(terms) == {"L2", "L1", "GEOCROSS", "TOTAL"} and all(t.shape == (3,) for t in terms.values())
    assert terms["TOTAL"].tolist() == pytest.approx((100 * terms["L2"] + 0.05 * terms["GEOCROSS"]).tolist())
    # The Jacobian of TOTAL_b is zero on every other image's inputs.
    for b in range(3):
        g_lr, g_w = torch.autograd.grad(terms["TOTAL"][b], (lr, w), retain_graph=True)
        others = [i for i in range(3) if i != b]
        assert not g_lr[others].any() and not g_w[others].any()
        assert g_lr[b].abs().sum() > 0 and g_w[b].abs().sum() > 0
    # Changing image 2 leaves images 0 and 1 unchanged.
    lr2 = lr.detach().clone()
    lr2[2] = 0.0
    terms2 = loss_terms(lr2, target, w.detach(), {"L2": 100.0, "GEOCROSS": 0.05}, 2e-3)
    assert terms2["TOTAL"][:2].tolist() == terms["TOTAL"][:2].tolist()


def test_loss_terms_without_l2():
    lr, target, w = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4), torch.randn(2, 1, 8)
    terms = loss_terms(lr, target, w, {"L1": 2.0}, 2e-3)
    assert terms["TOTAL"].tolist() == pytest.approx((2.0 * terms["L1"]).tolist())
    assert terms["GEOCROSS"].tolist() == [0.0, 0.0]
