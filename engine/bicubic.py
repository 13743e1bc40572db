"""PULSE's bicubic downscale operator D, in numpy: the reference every other path matches.

D(x) for x [N, C, H, W] and integer factor f (H and W divisible by f):
  1. Keys cubic kernel, a = -0.5, 4f taps at positions (i - floor(4f/2) + 0.5) / f, normalised
     to sum 1.
  2. Reflect-pad 3f in total per axis (floor half before, ceil half after).
  3. Correlate with the taps at stride f: rows (H) first, then columns (W).
Each axis is linear, so D(x) = M_H x M_W^T with M = conv_matrix @ reflect_matrix, [H/f, H].
The gradient (transpose) of D is then M_H^T g M_W.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from .errors import PulseError


def keys_cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Keys' cubic convolution kernel at positions x."""
    ax = np.abs(np.asarray(x, dtype=np.float64))
    near = (a + 2.0) * ax**3 - (a + 3.0) * ax**2 + 1.0
    far = a * ax**3 - 5.0 * a * ax**2 + 8.0 * a * ax - 4.0 * a
    return np.where(ax <= 1.0, near, np.where(ax < 2.0, far, 0.0))


def bicubic_taps(factor: int) -> np.ndarray:
    """The 4*factor normalised filter taps of PULSE's downscale by `factor` (float64)."""
    _check_factor(factor)
    size = 4 * factor
    pos = (np.arange(size) - np.floor(size / 2) + 0.5) / factor
    k = keys_cubic(pos)
    return k / k.sum()


def padding(factor: int) -> tuple[int, int]:
    """Reflect padding (before, after) per axis: 3*factor in total, floor half first."""
    total = max(4 * factor - factor, 0)
    return total // 2, total - total // 2


@lru_cache(maxsize=32)
def downscale_matrix(size: int, factor: int) -> np.ndarray:
    """M [size/factor, size] (float64) with D along one axis = M @ x (reflect padding folded in)."""
    _check_factor(factor)
    if size % factor:
        raise PulseError(f"size {size} is not divisible by the downscale factor {factor}")
    before, after = padding(factor)
    if before >= size or after >= size:
        raise PulseError(f"downscale factor {factor} is too large for size {size} (reflect padding {before + after} needs a side > {max(before, after)})")
    taps = bicubic_taps(factor)
    out = size // factor
    m = np.zeros((out, size))
    for o in range(out):
        for t, w in enumerate(taps):
            p = o * factor + t - before  # position in the unpadded signal
            if p < 0:
                p = -p  # reflect (edge not repeated)
            elif p >= size:
                p = 2 * (size - 1) - p
            m[o, p] += w
    m.setflags(write=False)
    return m


def downscale(x: np.ndarray, factor: int) -> np.ndarray:
    """D(x): [N, C, H, W] -> [N, C, H/f, W/f], PULSE's bicubic downscale. float64 math,
    returned in x's float dtype (float32 for integer input)."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise PulseError(f"downscale expects [N, C, H, W], got shape {x.shape}")
    mh = downscale_matrix(x.shape[2], factor)
    mw = downscale_matrix(x.shape[3], factor)
    y = np.einsum("ih,nchw,jw->ncij", mh, x.astype(np.float64), mw, optimize=True)
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
    return y.astype(dtype)


def downscale_transpose(g: np.ndarray, factor: int, size: tuple[int, int]) -> np.ndarray:
    """D^T(g): [N, C, h, w] -> [N, C, H, W] with (H, W) = size; the gradient of D."""
    mh = downscale_matrix(size[0], factor)
    mw = downscale_matrix(size[1], factor)
    y = np.einsum("ih,ncij,jw->nchw", mh, np.asarray(g, np.float64), mw, optimize=True)
    return y.astype(g.dtype if np.issubdtype(np.asarray(g).dtype, np.floating) else np.float32)


def factor_for(hr_size: int, lr_size: int) -> int:
    """The integer factor hr/lr, or a one-line error when lr does not divide hr."""
    if lr_size < 1 or hr_size % lr_size:
        raise PulseError(f"input size {lr_size}x{lr_size} does not divide the generator's {hr_size}x{hr_size} output")
    return hr_size // lr_size


def _check_factor(factor: int) -> None:
    if not isinstance(factor, (int, np.integer)) or factor < 1:
        raise PulseError(f"downscale factor must be an integer >= 1, got {factor!r}")
