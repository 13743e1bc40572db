"""Quality numbers of a PULSE result, in numpy: PSNR, SSIM, and the downscale consistency error.

PSNR and SSIM compare PULSE's output with the aligned HR crop when it is known (an aligned photo:
engine/align.py). They measure closeness to one particular face, which PULSE does not promise
("PULSE makes imaginary faces": any face that downscales to the input is a correct answer), so
the number PULSE is judged on is the downscale consistency error: the mean squared error between
D(output) and the LR input, the quantity the search drives under eps.

SSIM follows Wang, Bovik, Sheikh & Simoncelli (2004), "Image quality assessment: from error
visibility to structural similarity": an 11-tap Gaussian window (sigma 1.5), K1 = 0.01,
K2 = 0.03, population (not sample) statistics, the SSIM map over every full window position
('valid'), averaged; for colour images, per channel, then the mean over channels.
"""
from __future__ import annotations

import math

import numpy as np

from .bicubic import downscale
from .errors import PulseError

SSIM_WIN = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
PSNR_CAP = 100.0  # dB: quality_record's PSNR of equal images (an MSE under 1e-10)


def _pair(a, b, what: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise PulseError(f"{what}: images differ in shape, {a.shape} vs {b.shape}")
    return a, b


def mse(a, b) -> float:
    """Mean squared difference of two same-shape arrays (float64 math)."""
    a, b = _pair(a, b, "mse")
    return float(np.mean((a - b) ** 2))


def psnr(a, b, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB: 10 log10(data_range^2 / MSE); inf for equal images.

    Args:
        a, b:       same-shape arrays (any layout), e.g. [3, H, W] float in [0, 1].
        data_range: the span of possible values (1.0 for [0, 1]; 255 for uint8).
    """
    err = mse(a, b)
    if err == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / err)


def gaussian_window(size: int = SSIM_WIN, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """[size] float64 Gaussian taps centred on the middle tap, normalised to sum 1."""
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(r**2) / (2.0 * sigma**2))
    return g / g.sum()


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of [..., H, W] with g along H then W: [..., H-k+1, W-k+1]."""
    k = g.size
    h, w = x.shape[-2:]
    rows = np.zeros(x.shape[:-2] + (h - k + 1, w))  # [..., H-k+1, W]
    for i in range(k):
        rows += g[i] * x[..., i:h - k + 1 + i, :]
    out = np.zeros(x.shape[:-2] + (h - k + 1, w - k + 1))  # [..., H-k+1, W-k+1]
    for i in range(k):
        out += g[i] * rows[..., :, i:w - k + 1 + i]
    return out


def ssim_map(a, b, data_range: float = 1.0, win_size: int = SSIM_WIN, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """The SSIM map of two single-channel images [..., H, W] -> [..., H-10, W-10] (float64).

    1. Local means mu_a, mu_b, variances s_a, s_b and covariance s_ab under the Gaussian window
       (population statistics: E[x^2] - E[x]^2).
    2. SSIM = ((2 mu_a mu_b + C1)(2 s_ab + C2)) / ((mu_a^2 + mu_b^2 + C1)(s_a + s_b + C2)),
       C1 = (K1 L)^2, C2 = (K2 L)^2, L = data_range.
    """
    a, b = _pair(a, b, "ssim")
    if a.ndim < 2 or min(a.shape[-2:]) < win_size:
        raise PulseError(f"ssim needs images of at least {win_size}x{win_size} px, got shape {a.shape}")
    g = gaussian_window(win_size, sigma)
    mu_a, mu_b, e_aa, e_bb, e_ab = _filter_valid(np.stack([a, b, a * a, b * b, a * b]), g)  # 5 x [..., H-10, W-10]
    s_a = e_aa - mu_a * mu_a
    s_b = e_bb - mu_b * mu_b
    s_ab = e_ab - mu_a * mu_b
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    return ((2 * mu_a * mu_b + c1) * (2 * s_ab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (s_a + s_b + c2))


def ssim(a, b, data_range: float = 1.0, channel_axis: int | None = 0) -> float:
    """Structural similarity (Wang et al. 2004): the mean of ssim_map, per channel, then the
    mean over channels.

    Args:
        a, b:         same-shape images: [C, H, W] (channel_axis=0, PULSE's layout), [H, W, C]
                      (channel_axis=-1) or [H, W] (channel_axis=None).
        data_range:   span of possible values (1.0 for [0, 1]; 255 for uint8).
        channel_axis: axis of the colour channels, or None for a single-channel image.
    Returns:
        float in [-1, 1]; 1 for equal images.
    """
    a, b = _pair(a, b, "ssim")
    if channel_axis is not None:
        a, b = np.moveaxis(a, channel_axis, 0), np.moveaxis(b, channel_axis, 0)  # [C, H, W]
        return float(ssim_map(a, b, data_range).mean(axis=(-2, -1)).mean())  # per channel, then over channels
    return float(ssim_map(a, b, data_range).mean())


def _chw01(image, what: str) -> np.ndarray:
    """[3, H, W] float in [0, 1] as given, or [H, W, 3] uint8 -> [3, H, W] float64 in [0, 1]."""
    x = np.asarray(image)
    if x.dtype == np.uint8:
        if x.ndim != 3 or x.shape[2] != 3:
            raise PulseError(f"{what}: a uint8 image must be [H, W, 3], got shape {x.shape}")
        return x.transpose(2, 0, 1).astype(np.float64) / 255.0
    if x.ndim != 3 or x.shape[0] != 3:
        raise PulseError(f"{what}: a float image must be [3, H, W] in [0, 1], got shape {x.shape}")
    return x.astype(np.float64)


def downscale_mse(hr_out, lr_in, lr_out=None) -> float:
    """The downscale consistency error: mean over C, H, W of (D(hr_out) - lr_in)^2, the number
    PULSE compares with eps. `lr_out` (= D(hr_out), when the search already returned it) saves
    the downscale."""
    lr_in = _chw01(lr_in, "lr_in")
    if lr_out is None:
        hr = _chw01(hr_out, "hr_out")
        size = lr_in.shape[-1]
        if hr.shape[-1] % size or hr.shape[-2] != hr.shape[-1] or lr_in.shape[-2] != size:
            raise PulseError(f"downscale_mse: output {hr.shape} is not a multiple of the input {lr_in.shape}")
        lr_out = downscale(hr[None], hr.shape[-1] // size)[0]
    return mse(_chw01(lr_out, "lr_out"), lr_in)


def quality_record(hr_out, hr_truth, lr_out, lr_in) -> dict:
    """Quality numbers of one PULSE result, JSON-ready.

    Args:
        hr_out:   PULSE's output, [3, R, R] float in [0, 1] (ImageResult.hr) or [R, R, 3] uint8.
        hr_truth: the aligned HR crop, same layouts, or None when unknown.
        lr_out:   D(hr_out), [3, lr, lr] float (ImageResult.lr), or None to compute it.
        lr_in:    the LR input PULSE was given, [3, lr, lr] float in [0, 1] or [lr, lr, 3] uint8.
    Returns:
        {"psnr": dB or None, "ssim": float or None, "downscale_mse": float}; psnr and ssim
        compare hr_out with hr_truth (data range 1, SSIM per channel, averaged); None without a
        truth. PSNR is capped at PSNR_CAP dB so that equal images stay valid JSON (no Infinity).
    """
    rec = {"psnr": None, "ssim": None, "downscale_mse": downscale_mse(hr_out, lr_in, lr_out)}
    if hr_truth is not None:
        out, truth = _chw01(hr_out, "hr_out"), _chw01(hr_truth, "hr_truth")
        rec["psnr"] = min(psnr(out, truth, 1.0), PSNR_CAP)
        rec["ssim"] = ssim(out, truth, 1.0, channel_axis=0)
    return rec
