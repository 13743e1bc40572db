"""Two more sub-pixel forms of a transposed convolution, measured against ConvTranspose and the
exporter's own form (export.decompositions.conv_transpose_as_conv) by subpixel_layers.py.
Neither is used by the exporter: on ONNX Runtime's CPU neither beat ConvTranspose on most
layers (benchmarks/RESULTS.md). Values are tested against torch in test_subpixel_forms.py.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pulse_trt.export.decompositions import _pair

aten = torch.ops.aten


def _phase_kernels_1d(k: int, s: int, p: int) -> list[tuple[list[int], int]]:
    """Per phase r of one axis: (taps t in correlation order, window start a) with
    y_r[q] = sum_m x[q + a + m] W[taps[m]] (phases without taps: ([], 0))."""
    out = []
    for r in range(s):
        offs = sorted({(r + p - t) // s for t in range(k) if (r + p - t) % s == 0})
        if not offs:
            out.append(([], 0))
            continue
        a = offs[0]
        out.append(([r + p - s * (a + m) for m in range(offs[-1] - a + 1)], a))
    return out


def conv_transpose_as_phase_convs(x: torch.Tensor, weight: torch.Tensor, bias, stride, padding, output_padding,
                                  groups: int) -> torch.Tensor:
    """conv_transpose2d as s_h * s_w separate stride-1 convolutions, one per output phase, each
    with only its own taps (no zero taps: the multiply-adds of the transposed convolution), on
    slices of one padded input; concatenated phase-major and interleaved. The alternative to
    conv_transpose_as_conv where zero taps would cost more than the extra nodes. Same arguments
    and result."""
    n, cin, h, w = x.shape
    _, cout_g, kh, kw = (int(v) for v in weight.shape)
    (sh, sw), (ph, pw), (oph, opw) = _pair(stride), _pair(padding), _pair(output_padding)
    ho, wo = (h - 1) * sh - 2 * ph + kh + oph, (w - 1) * sw - 2 * pw + kw + opw
    qh, qw = -(-ho // sh), -(-wo // sw)
    rows, cols = _phase_kernels_1d(kh, sh, ph), _phase_kernels_1d(kw, sw, pw)
    # one padded input covering every phase's window: rows a_min .. a_max + qh - 1
    a0h = min(a for t, a in rows if t)
    a1h = max(a + len(t) - 1 for t, a in rows if t) + qh - 1
    a0w = min(a for t, a in cols if t)
    a1w = max(a + len(t) - 1 for t, a in cols if t) + qw - 1
    xp = F.pad(x, (max(-a0w, 0), max(a1w - (w - 1), 0), max(-a0h, 0), max(a1h - (h - 1), 0)))
    oh, ow = max(-a0h, 0), max(-a0w, 0)  # index of x[0, 0] in xp
    wg = weight.reshape(groups, cin // groups, cout_g, kh, kw).transpose(1, 2)  # [g, Cout_g, Cin_g, kh, kw]
    phases = []
    for taps_h, ah in rows:
        for taps_w, aw in cols:
            if not taps_h or not taps_w:
                phases.append(x.new_zeros((n, groups * cout_g, qh, qw)) + (0 if bias is None else bias.view(1, -1, 1, 1)))
                continue
            kr = aten.index_select(wg, 3, torch.tensor(taps_h, device=weight.device))
            kr = aten.index_select(kr, 4, torch.tensor(taps_w, device=weight.device))  # [g, Cout_g, Cin_g, Lh, Lw]
            kr = kr.reshape(groups * cout_g, cin // groups, len(taps_h), len(taps_w))
            xs = xp[:, :, oh + ah: oh + ah + qh + len(taps_h) - 1, ow + aw: ow + aw + qw + len(taps_w) - 1]
            phases.append(aten.convolution(xs, kr, bias, [1, 1], [0, 0], [1, 1], False, [0, 0], groups))
    y = torch.cat(phases, 1)  # [N, (r_h, r_w, c), qh, qw]
    cout = groups * cout_g
    y = y.reshape(n, sh, sw, cout, qh, qw).permute(0, 3, 4, 1, 5, 2).reshape(n, cout, qh * sh, qw * sw)
    if qh * sh != ho or qw * sw != wo:
        y = y[:, :, :ho, :wo]
    return y


def conv_transpose_as_window_conv(x: torch.Tensor, weight: torch.Tensor, bias, stride, padding, output_padding,
                                  groups: int) -> torch.Tensor:
    """conv_transpose2d as one stride-1 Conv whose s_h * s_w phases share a window of the
    longest phase's length (no zero taps where every phase has as many taps, as at kernel 4,
    stride 2), evaluated on a grid one window-offset larger than a phase, then each phase's
    output cropped at its own offset, stacked and interleaved. Same arguments and result as
    conv_transpose_as_conv."""
    n, cin, h, w = x.shape
    _, cout_g, kh, kw = (int(v) for v in weight.shape)
    (sh, sw), (ph, pw), (oph, opw) = _pair(stride), _pair(padding), _pair(output_padding)
    ho, wo = (h - 1) * sh - 2 * ph + kh + oph, (w - 1) * sw - 2 * pw + kw + opw
    qh, qw = -(-ho // sh), -(-wo // sw)
    axes = []
    for k, s, p, q, size in ((kh, sh, ph, qh, h), (kw, sw, pw, qw, w)):
        phases = _phase_kernels_1d(k, s, p)
        length = max(len(t) for t, _ in phases)
        starts = [a for t, a in phases if t] or [0]
        a_min, a_max = min(starts), max(starts)
        grid = q + a_max - a_min
        idx = []
        for t, a in phases:  # taps of the phase at window positions 0 .. length-1 (k = zero)
            row = [k] * length
            for m, tap in enumerate(t):
                row[m] = tap
            idx += row
        crops = [(a - a_min) if t else 0 for t, a in phases]
        before, after = -a_min, grid - 1 + a_min + length - 1 - (size - 1)
        axes.append((idx, length, crops, before, after, grid))
    (idx_h, lh, crop_h, bh, ah, gh), (idx_w, lw, crop_w, bw, aw, gw) = axes
    wz = F.pad(weight.reshape(groups, cin // groups, cout_g, kh, kw), (0, 1, 0, 1))
    wz = aten.index_select(wz, 3, torch.tensor(idx_h, device=weight.device))
    wz = aten.index_select(wz, 4, torch.tensor(idx_w, device=weight.device))  # [g, Cin_g, Cout_g, sh lh, sw lw]
    wz = wz.reshape(groups, cin // groups, cout_g, sh, lh, sw, lw).permute(0, 3, 5, 2, 1, 4, 6)
    w_win = wz.reshape(groups * sh * sw * cout_g, cin // groups, lh, lw)  # phase-major within each group
    crop = [max(-v, 0) for v in (bw, aw, bh, ah)]
    if any(crop):
        x = x[:, :, crop[2]:h - crop[3], crop[0]:w - crop[1]]
    pad = [max(v, 0) for v in (bw, aw, bh, ah)]
    if pad[0] == pad[1] and pad[2] == pad[3]:
        y = aten.convolution(x, w_win, None, [1, 1], [pad[2], pad[0]], [1, 1], False, [0, 0], groups)
    else:
        y = aten.convolution(F.pad(x, pad), w_win, None, [1, 1], [0, 0], [1, 1], False, [0, 0], groups)
    y = y.reshape(n, groups, sh * sw, cout_g, gh, gw)
    parts = []
    for rh in range(sh):
        for rw in range(sw):
            parts.append(y[:, :, rh * sw + rw, :, crop_h[rh]:crop_h[rh] + qh, crop_w[rw]:crop_w[rw] + qw])
    cout = groups * cout_g
    y = torch.stack(parts, 3).reshape(n, cout, sh, sw, qh, qw)  # [N, g, Cout_g, phase, qh, qw] -> CRD
    y = y.permute(0, 1, 4, 2, 5, 3).reshape(n, cout, qh * sh, qw * sw)
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    if qh * sh != ho or qw * sw != wo:
        y = y[:, :, :ho, :wo]
    return y
