"""Line-by-line numpy ports of the CUDA kernels' index arithmetic (block tiles, rolling window,
reflection, the transpose's position lists), so the tiling is tested on machines without a
GPU. Each function walks the grid exactly as downsample_loss.cu does and returns what the
kernel would write; float64 math (the ports test indexing, not rounding)."""
from __future__ import annotations

import numpy as np

from pulse_trt.engine.bicubic import bicubic_taps
from pulse_trt.kernels.downsample_loss import fwd_config, gather_config, transpose_config


def _reflect(p, before, n):
    i = p - before
    return -i if i < 0 else (2 * (n - 1) - i if i >= n else i)


def downsample_fwd(x, factor):
    """downsample_loss_fwd's scatter: per block, rolling window down the rows, warp sums across."""
    n, c, H, W = x.shape
    f, h, w = factor, H // factor, W // factor
    taps, before = bicubic_taps(f), (3 * f) // 2
    grid, _, _, QY, QX = fwd_config(n, c, H, W, f)
    lr = np.zeros((n * c, h, w))
    img = x.reshape(n * c, H, W)
    for z in range(grid[2]):
        for by in range(grid[1]):
            for bx in range(grid[0]):
                qy0, qx0 = by * QY, bx * QX
                qy1, qx1 = min(qy0 + QY, h + 3), min(qx0 + QX, w + 3)
                ny, cols = qy1 - qy0, QX * f
                vert = np.full((QY + 3, cols), np.nan)
                for pc in range(qx0 * f, qx1 * f):
                    col, lc = _reflect(pc, before, W), pc - qx0 * f
                    a = [0.0, 0.0, 0.0, 0.0]
                    for q in range(qy0, qy1):
                        for r in range(f):
                            v = img[z, _reflect(q * f + r, before, H), col]
                            for j in range(4):
                                a[j] += taps[r + j * f] * v
                        vert[q - qy0, lc] = a[3]
                        a = [0.0, a[0], a[1], a[2]]
                    vert[ny, lc], vert[ny + 1, lc], vert[ny + 2, lc] = a[3], a[2], a[1]
                nj = (qx1 - qx0) + 3
                for pair in range((ny + 3) * nj):
                    k, o, j = pair // nj, qy0 - 3 + pair // nj, qx0 - 3 + pair % nj
                    if o < 0 or o >= h or j < 0 or j >= w:
                        continue
                    t0, t1 = max(0, (qx0 - j) * f), min(4 * f, (qx1 - j) * f)
                    lr[z, o, j] += sum(taps[t] * vert[k, j * f + t - qx0 * f] for t in range(t0, t1))
    return lr.reshape(n, c, h, w)


def _padded(i, before, after, n):
    out = [i + before]
    if 1 <= i <= before:
        out.append(before - i)
    if n - 1 - after <= i <= n - 2:
        out.append(before + 2 * (n - 1) - i)
    return out


def _outputs(p, f, m):
    lo = p - 4 * f + 1
    lo = 0 if lo <= 0 else (lo + f - 1) // f
    return [(o, p - o * f) for o in range(lo, min(p // f, m - 1) + 1)]


def downscale_transpose(g, factor, size):
    """downscale_transpose's gather: tile bounds, LR tile in 'shared memory', two passes."""
    n, c, h, w = g.shape
    H, W = size
    f = factor
    taps, before = bicubic_taps(f), (3 * f) // 2
    after = 3 * f - before
    grid, block, _, RT = transpose_config(n, c, H, W, f)
    T = block[0]
    NR, NC = -(-RT // f) + 6, -(-T // f) + 6
    out = np.full((n * c, H, W), np.nan)
    gi = g.reshape(n * c, h, w)
    for z in range(grid[2]):
        for by in range(grid[1]):
            for bx in range(grid[0]):
                r0, r1 = by * RT, min(by * RT + RT, H)
                c0, c1 = bx * T, min(bx * T + T, W)
                os_ = [o for r in range(r0, r1) for p in _padded(r, before, after, H) for o, _ in _outputs(p, f, h)]
                js = [j for cc in range(c0, c1) for p in _padded(cc, before, after, W) for j, _ in _outputs(p, f, w)]
                oa, ob, ja, jb = min(os_), max(os_), min(js), max(js)
                assert ob - oa + 1 <= NR and jb - ja + 1 <= NC, "the kernel would __trap()"
                gs = gi[z, oa:ob + 1, ja:jb + 1]
                for cc in range(c0, c1):
                    tmp = [sum(taps[t] * gs[k, j - ja] for p in _padded(cc, before, after, W) for j, t in _outputs(p, f, w))
                           for k in range(ob - oa + 1)]
                    for r in range(r0, r1):
                        out[z, r, cc] = sum(taps[t] * tmp[o - oa] for p in _padded(r, before, after, H) for o, t in _outputs(p, f, h))
    return out.reshape(n, c, H, W)


def downscale_gather(x, factor):
    """downscale_gather: TO LR rows per block, rolling window, then the row taps."""
    n, c, H, W = x.shape
    f, h, w = factor, H // factor, W // factor
    taps, before = bicubic_taps(f), (3 * f) // 2
    grid, _, _, TO = gather_config(n, c, H, W, f)
    y = np.full((n * c, h, w), np.nan)
    img = x.reshape(n * c, H, W)
    for z in range(grid[2]):
        for by in range(grid[1]):
            o0, o1 = by * TO, min(by * TO + TO, h)
            vert = np.full((TO, W), np.nan)
            for col in range(W):
                a = [0.0, 0.0, 0.0, 0.0]
                for q in range(o0, o1 + 3):
                    for r in range(f):
                        v = img[z, _reflect(q * f + r, before, H), col]
                        for j in range(4):
                            a[j] += taps[r + j * f] * v
                    if q - 3 >= o0:
                        vert[q - 3 - o0, col] = a[3]
                    a = [0.0, a[0], a[1], a[2]]
            for i in range((o1 - o0) * w):
                k, j = divmod(i, w)
                y[z, o0 + k, j] = sum(taps[t] * vert[k, _reflect(j * f + t, before, W)] for t in range(4 * f))
    return y.reshape(n, c, h, w)
