"""engine.bicubic: the Keys kernel, the taps, and D against a direct loop (values by hand)."""
from __future__ import annotations

import numpy as np
import pytest

from pulse_trt.engine.bicubic import (bicubic_taps, downscale, downscale_matrix, downscale_transpose,
                                      factor_for, keys_cubic, padding)
from pulse_trt.engine.errors import PulseError


def test_keys_kernel_known_points():
    x = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, -0.5, -1.5])
    # a = -0.5: |x| <= 1: 1.5|x|^3 - 2.5|x|^2 + 1; 1 < |x| < 2: -0.5|x|^3 + 2.5|x|^2 - 4|x| + 2.
    assert keys_cubic(x) == pytest.approx([1.0, 0.5625, 0.0, -0.0625, 0.0, 0.0, 0.5625, -0.0625])
    assert keys_cubic(0.25) == pytest.approx(0.8671875)
    assert keys_cubic(1.75) == pytest.approx(-0.0234375)


def test_taps_factor_2():
    # positions (i - 4 + 0.5) / 2 = -1.75 .. 1.75; raw values -0.0234375, -0.0703125, 0.2265625,
    # 0.8671875 (and mirrored) sum to 2.
    half = [-0.01171875, -0.03515625, 0.11328125, 0.43359375]
    assert bicubic_taps(2) == pytest.approx(half + half[::-1], abs=1e-15)
    assert bicubic_taps(2).sum() == pytest.approx(1.0, abs=1e-15)


@pytest.mark.parametrize("factor", [1, 2, 3, 4, 8, 16])
def test_taps_sum_to_one_and_are_symmetric(factor):
    t = bicubic_taps(factor)
    assert t.shape == (4 * factor,)
    assert t.sum() == pytest.approx(1.0, abs=1e-12)
    assert t == pytest.approx(t[::-1], abs=1e-15)


def test_padding_is_three_factors():
    assert padding(1) == (1, 2)
    assert padding(2) == (3, 3)
    assert padding(8) == (12, 12)
    assert padding(3) == (4, 5)


def test_constant_image_stays_constant():
    x = np.full((2, 3, 32, 32), 0.37, np.float32)
    for f in (2, 4, 8):
        y = downscale(x, f)
        assert y.shape == (2, 3, 32 // f, 32 // f) and y.dtype == np.float32
        assert np.allclose(y, 0.37, atol=1e-6)


def _downscale_loop(x: np.ndarray, f: int) -> np.ndarray:
    """Direct implementation: reflect pad, then strided correlation with the taps, rows then columns."""
    taps = bicubic_taps(f)
    before, after = padding(f)
    n, c, h, w = x.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (before, after), (0, 0)), mode="reflect")
    rows = np.zeros((n, c, h // f, w))
    for o in range(h // f):
        for t in range(4 * f):
            rows[:, :, o, :] += taps[t] * xp[:, :, o * f + t, :]
    rp = np.pad(rows, ((0, 0), (0, 0), (0, 0), (before, after)), mode="reflect")
    out = np.zeros((n, c, h // f, w // f))
    for o in range(w // f):
        for t in range(4 * f):
            out[:, :, :, o] += taps[t] * rp[:, :, :, o * f + t]
    return out


@pytest.mark.parametrize("h, w, f", [(16, 16, 1), (16, 16, 2), (16, 24, 4), (24, 24, 3), (64, 64, 8), (32, 48, 16)])
def test_matches_direct_loop(h, w, f):
    x = np.random.default_rng(h * w + f).random((2, 3, h, w))
    assert downscale(x, f) == pytest.approx(_downscale_loop(x, f), abs=1e-12)


def test_transpose_is_adjoint():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 32, 24))
    g = rng.standard_normal((2, 3, 8, 6))
    lhs = float((downscale(x, 4) * g).sum())
    rhs = float((x * downscale_transpose(g, 4, (32, 24))).sum())
    assert lhs == pytest.approx(rhs, rel=1e-12)
    assert downscale_transpose(g, 4, (32, 24)).shape == (2, 3, 32, 24)


def test_matrix_rows_sum_to_one():
    m = downscale_matrix(32, 4)
    assert m.shape == (8, 32)
    assert m.sum(axis=1) == pytest.approx(np.ones(8), abs=1e-12)


def test_errors():
    with pytest.raises(PulseError, match="not divisible"):
        downscale(np.zeros((1, 3, 10, 10)), 4)
    with pytest.raises(PulseError, match="too large"):
        downscale(np.zeros((1, 3, 4, 4)), 4)  # reflect padding of 6 needs a side > 6
    with pytest.raises(PulseError, match=r"\[N, C, H, W\]"):
        downscale(np.zeros((3, 16, 16)), 2)
    with pytest.raises(PulseError, match="integer >= 1"):
        bicubic_taps(0)
    with pytest.raises(PulseError, match="does not divide"):
        factor_for(64, 7)
    with pytest.raises(PulseError, match="does not divide"):
        factor_for(64, 0)
    assert factor_for(1024, 32) == 32 and factor_for(64, 8) == 8


def test_integer_input_gives_float32():
    x = np.full((1, 3, 8, 8), 2, np.int64)
    y = downscale(x, 2)
    assert y.dtype == np.float32 and np.allclose(y, 2.0)
