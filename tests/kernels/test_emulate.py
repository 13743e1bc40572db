"""The CUDA kernels' tiling and index arithmetic, ported to numpy (tests/kernels/emulate.py),
against engine.bicubic: every LR value and every HR gradient value computed exactly once."""
from __future__ import annotations

import numpy as np
import pytest

from pulse_trt.engine import bicubic

import kernel_emulate as emulate

# (N, C, H, W, f): odd batch, non-square, factors 1 .. 32, several tiles per axis at small f.
CASES = [(1, 1, 8, 8, 1), (3, 2, 16, 24, 2), (1, 1, 24, 12, 3), (2, 1, 32, 32, 4), (1, 1, 48, 16, 8),
         (1, 1, 64, 32, 16), (1, 1, 64, 64, 32)]


@pytest.mark.parametrize("n, c, h, w, f", CASES)
def test_scatter_forward_tiles_match_numpy(n, c, h, w, f):
    x = np.random.default_rng(h * w + f).random((n, c, h, w))
    assert emulate.downsample_fwd(x, f) == pytest.approx(bicubic.downscale(x, f), abs=1e-12)


@pytest.mark.parametrize("n, c, h, w, f", CASES)
def test_transpose_tiles_match_numpy(n, c, h, w, f):
    g = np.random.default_rng(f).standard_normal((n, c, h // f, w // f))
    out = emulate.downscale_transpose(g, f, (h, w))
    assert not np.isnan(out).any()  # every HR element written
    assert out == pytest.approx(bicubic.downscale_transpose(g, f, (h, w)), abs=1e-12)


@pytest.mark.parametrize("n, c, h, w, f", CASES[:5])
def test_gather_forward_tiles_match_numpy(n, c, h, w, f):
    x = np.random.default_rng(w).random((n, c, h, w))
    assert emulate.downscale_gather(x, f) == pytest.approx(bicubic.downscale(x, f), abs=1e-12)


def test_transpose_tile_bounds_at_1024():
    """The shared-memory bound (NR, NC) of downscale_transpose holds for every PULSE factor at
    1024 px (the kernel traps otherwise): check the first, an interior and the last tile."""
    from pulse_trt.kernels.downsample_loss import transpose_config

    for f in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512):
        before, after = 3 * f // 2, 3 * f - 3 * f // 2
        grid, block, _, rt = transpose_config(1, 1, 1024, 1024, f)
        nr = -(-rt // f) + 6
        for by in (0, grid[1] // 2, grid[1] - 1):
            rows = range(by * rt, min(by * rt + rt, 1024))
            os_ = [o for r in rows for p in emulate._padded(r, before, after, 1024) for o, _ in emulate._outputs(p, f, 1024 // f)]
            assert max(os_) - min(os_) + 1 <= nr, (f, by)
