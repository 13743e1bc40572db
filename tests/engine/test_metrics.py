"""Tests of engine.metrics: PSNR and SSIM against scikit-image and by hand; the downscale
consistency error; quality_record."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pulse_trt.engine import metrics as M
from pulse_trt.engine.bicubic import downscale
from pulse_trt.engine.errors import PulseError

skm = pytest.importorskip("skimage.metrics")
skdata = pytest.importorskip("skimage.data")


def sk_ssim(a, b, **kw):
    """scikit-image's SSIM configured as Wang et al. 2004 (Gaussian 11 / 1.5, population stats)."""
    return skm.structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, **kw)


@pytest.fixture(scope="module")
def pair():
    """A real image [3, 96, 80] in [0, 1] and a noisy, slightly darker copy."""
    img = skdata.astronaut()[100:196, 180:260].transpose(2, 0, 1).astype(np.float64) / 255.0
    rng = np.random.default_rng(1)
    noisy = np.clip(0.9 * img + 0.05 * rng.standard_normal(img.shape), 0, 1)
    return img, noisy


def test_gaussian_window():
    g = M.gaussian_window()
    assert g.shape == (11,) and abs(g.sum() - 1) < 1e-15
    np.testing.assert_allclose(g, g[::-1])
    np.testing.assert_allclose(g[6] / g[5], math.exp(-1 / (2 * 1.5**2)))  # one step from the centre


def test_ssim_matches_scikit_image_colour(pair):
    a, b = pair
    ours = M.ssim(a, b, data_range=1.0, channel_axis=0)
    assert abs(ours - sk_ssim(a, b, data_range=1.0, channel_axis=0)) < 1e-10
    # [H, W, C] layout and 0..255 data give the same number.
    hwc_a, hwc_b = a.transpose(1, 2, 0) * 255, b.transpose(1, 2, 0) * 255
    assert abs(M.ssim(hwc_a, hwc_b, data_range=255.0, channel_axis=-1) - ours) < 1e-10


def test_ssim_matches_scikit_image_gray_and_per_channel_mean(pair):
    a, b = pair
    per_channel = [M.ssim(a[c], b[c], channel_axis=None) for c in range(3)]
    for c in range(3):
        assert abs(per_channel[c] - sk_ssim(a[c], b[c], data_range=1.0)) < 1e-10
    assert abs(M.ssim(a, b) - np.mean(per_channel)) < 1e-12


def test_ssim_by_hand_for_constant_images():
    # Constant images: variances and covariance 0, so SSIM = (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1).
    a, b = np.full((3, 16, 16), 0.5), np.full((3, 16, 16), 0.3)
    c1 = (0.01 * 1.0) ** 2
    expect = (2 * 0.5 * 0.3 + c1) / (0.5**2 + 0.3**2 + c1)
    assert abs(M.ssim(a, b) - expect) < 1e-12
    assert M.ssim_map(a[0], b[0]).shape == (6, 6)  # 'valid' positions of an 11-tap window
    assert M.ssim(a, a) == pytest.approx(1.0, abs=1e-12)


def test_ssim_too_small_and_shape_mismatch():
    with pytest.raises(PulseError, match="at least 11x11"):
        M.ssim(np.zeros((3, 8, 8)), np.zeros((3, 8, 8)))
    with pytest.raises(PulseError, match="differ in shape"):
        M.ssim(np.zeros((3, 16, 16)), np.zeros((3, 16, 15)))


def test_psnr_matches_scikit_image_and_hand(pair):
    a, b = pair
    assert abs(M.psnr(a, b) - skm.peak_signal_noise_ratio(a, b, data_range=1.0)) < 1e-10
    # By hand: a constant error of 0.1 on [0, 1] data is 10 log10(1 / 0.01) = 20 dB.
    x = np.zeros((3, 4, 4))
    assert M.psnr(x, x + 0.1) == pytest.approx(20.0, abs=1e-9)
    assert M.psnr(x * 255, x * 255 + 25.5, data_range=255) == pytest.approx(20.0, abs=1e-9)
    assert M.psnr(x, x) == math.inf


def test_downscale_mse_by_hand():
    # A constant HR image downscales to the same constant (the taps sum to 1).
    hr = np.full((3, 32, 32), 0.6, np.float32)
    lr_in = np.full((3, 8, 8), 0.5, np.float32)
    assert M.downscale_mse(hr, lr_in) == pytest.approx(0.01, abs=1e-7)
    # Given lr_out, it is just the MSE to the input.
    lr_out = np.full((3, 8, 8), 0.7, np.float32)
    assert M.downscale_mse(hr, lr_in, lr_out) == pytest.approx(0.04, abs=1e-7)
    # uint8 [H, W, 3] inputs are k / 255.
    rng = np.random.default_rng(0)
    hr8 = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    lr = rng.random((3, 8, 8))
    d = downscale(hr8.transpose(2, 0, 1)[None].astype(np.float64) / 255, 4)[0]
    assert M.downscale_mse(hr8, lr) == pytest.approx(np.mean((d - lr) ** 2), rel=1e-12)


def test_quality_record(pair):
    a, b = pair
    lr_in = np.full((3, 12, 10), 0.5)
    with pytest.raises(PulseError, match="not a multiple"):
        M.quality_record(b, a, None, lr_in)  # non-square output
    hr_out = np.zeros((3, 32, 32))
    hr_truth = np.full((32, 32, 3), 51, np.uint8)  # 0.2 everywhere
    rec = M.quality_record(hr_out, hr_truth, None, np.zeros((3, 8, 8)))
    assert set(rec) == {"psnr", "ssim", "downscale_mse"}
    assert rec["psnr"] == pytest.approx(10 * math.log10(1 / 0.04))
    assert rec["downscale_mse"] == 0.0
    assert rec["ssim"] == pytest.approx(M.ssim(hr_out, np.full((3, 32, 32), 0.2)))
    none = M.quality_record(hr_out, None, np.zeros((3, 8, 8)), np.full((3, 8, 8), 0.1))
    assert none["psnr"] is None and none["ssim"] is None and none["downscale_mse"] == pytest.approx(0.01)
    equal = M.quality_record(hr_out, hr_out, None, np.zeros((3, 8, 8)))
    assert equal["psnr"] == M.PSNR_CAP and equal["ssim"] == pytest.approx(1.0)
    json.dumps(equal, allow_nan=False)  # valid JSON
