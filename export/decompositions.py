"""Backward ops rewritten as forward ops, so a traced gradient is a plain inference graph.

make_fx(torch.func.grad_and_value(f)) records the backward ops autograd uses. Several have no
ONNX equivalent (aten.convolution_backward, the pooling / upsampling / padding backwards); each
one here is the forward op with mirrored parameters (the stylegan3 way: the backward of a conv is
a transposed conv with the same weight, and vice versa), so the exported graph holds only Conv,
ConvTranspose, Pad, Slice, Reshape, ReduceSum and friends.

`decomposition_table()` gives the table for make_fx: these, plus torch's own decompositions of
the composite ops that would otherwise reach the exporter as backward ops.
"""
from __future__ import annotations

import contextlib
import contextvars

import torch
import torch.nn.functional as F

aten = torch.ops.aten


def _pair(v, n: int = 2) -> list[int]:
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    return v * n if len(v) == 1 else v


def conv_input_grad_ref(grad_out: torch.Tensor, weight: torch.Tensor, input_size, stride, padding, dilation,
                        transposed: bool, output_padding, groups: int) -> torch.Tensor:
    """Gradient of a (transposed) convolution w.r.t. its input, as the mirrored forward op.

    Regular conv y = conv(x, W): dx = conv_transpose(dy, W) with the same stride, padding,
    dilation and groups, and output_padding chosen so dx has x's spatial size; at stride 1
    (groups 1) the same sums as a plain conv: dx = conv(dy, flip(W)^T, padding d (k - 1) - p).
    Transposed conv y = conv_transpose(x, W): dx = conv(dy, W) (its output has x's size exactly).
    grad_out [N, Cout, *S_out], weight as in the forward op -> [N, Cin, *S_in].
    """
    nd = weight.ndim - 2
    stride, padding, dilation = _pair(stride, nd), _pair(padding, nd), _pair(dilation, nd)
    if transposed:
        return aten.convolution(grad_out, weight, None, stride, padding, dilation, False, [0] * nd, groups)
    k = weight.shape[2:]
    flipped_pad = [dilation[i] * (k[i] - 1) - padding[i] for i in range(nd)]
    if all(s == 1 for s in stride) and all(p >= 0 for p in flipped_pad):
        # Stride 1: the adjoint is itself a convolution, with the kernel flipped in space and its
        # in/out channels swapped within each group (constant-folded when W is a weight). Same
        # sums; inference runtimes run Conv far faster than ConvTranspose (ONNX Runtime CPU:
        # about 1.5x for dense 3x3 convs, 5x for MobileStyleGAN's depthwise and 1x1 convs).
        cout, cin_g = weight.shape[0], weight.shape[1]
        w_adj = aten.flip(weight, list(range(2, 2 + nd)))  # [Cout, Cin/g, *k]
        if groups == 1:
            w_adj = w_adj.transpose(0, 1)  # [Cin, Cout, *k]
        elif cin_g != 1 or cout != groups:  # general grouped: swap in/out inside each group
            w_adj = w_adj.reshape(groups, cout // groups, cin_g, *k).transpose(1, 2).reshape(groups * cin_g, cout // groups, *k)
        return aten.convolution(grad_out, w_adj, None, [1] * nd, flipped_pad, dilation, False, [0] * nd, groups)
    out_pad = []
    for i in range(nd):
        natural = (grad_out.shape[2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (k[i] - 1) + 1
        out_pad.append(int(input_size[2 + i]) - natural)
    return aten.convolution(grad_out, weight, None, stride, padding, dilation, True, out_pad, groups)
    # (under transposed_conv_mode("subpixel") that transposed convolution is itself rewritten
    # as conv_transpose_as_conv by the table below)


def conv_weight_grad_ref(x: torch.Tensor, grad_out: torch.Tensor, weight_shape, stride, padding, dilation,
                         groups: int) -> torch.Tensor:
    """Gradient of a regular convolution y = conv(x, W) w.r.t. W, as a forward conv.

    Per group: dW[o, i, k] = sum_n,p dy[n, o, p] x_pad[n, i, p*s + k*d], a convolution of x (its
    batch and channels swapped) with dy as the filter, stride d and dilation s; cropped to the
    kernel size. x [N, Cin, *S_in], grad_out [N, Cout, *S_out] -> [Cout, Cin/groups, *k].
    """
    nd = x.ndim - 2
    stride, padding, dilation = _pair(stride, nd), _pair(padding, nd), _pair(dilation, nd)
    k = list(weight_shape[2:])
    cin_g, cout_g = x.shape[1] // groups, grad_out.shape[1] // groups
    parts = []
    for g in range(groups):
        xg = x[:, g * cin_g:(g + 1) * cin_g].transpose(0, 1)  # [Cin/g, N, *S_in]
        dyg = grad_out[:, g * cout_g:(g + 1) * cout_g].transpose(0, 1)  # [Cout/g, N, *S_out]
        dw = aten.convolution(xg, dyg, None, dilation, padding, stride, False, [0] * nd, 1)  # [Cin/g, Cout/g, *>=k]
        for i in range(nd):
            dw = dw.narrow(2 + i, 0, k[i])
        parts.append(dw.transpose(0, 1))  # [Cout/g, Cin/g, *k]
    return torch.cat(parts, 0) if groups > 1 else parts[0]


# How transposed convolutions reach the graph: "plain" (default) as ConvTranspose, "subpixel" as
# one stride-1 Conv with s_h * s_w phases of output channels and an interleave
# (conv_transpose_as_conv). Plain is the default by measurement: on ONNX Runtime's CPU (AMD EPYC,
# 2 cores) the dcgan step took 58 ms at batch 16 with ConvTranspose and 94 ms sub-pixel (the
# zero taps of the phase kernels cost 2.25x the multiply-adds at kernel 4, stride 2), and no
# sub-pixel form (one joint Conv, one Conv per phase, a shared-window Conv) beat ConvTranspose
# on most layers (benchmarks/subpixel_layers.py, RESULTS.md). A context variable, set for one
# trace by transposed_conv_mode().
TRANSPOSED_CONV_MODES = ("plain", "subpixel")
_TRANSPOSED_CONV_MODE = contextvars.ContextVar("pulse_trt_transposed_conv", default="plain")


@contextlib.contextmanager
def transposed_conv_mode(mode: str):
    """Trace with transposed convolutions emitted as `mode` (TRANSPOSED_CONV_MODES)."""
    if mode not in TRANSPOSED_CONV_MODES:
        raise ValueError(f"transposed_conv must be one of {', '.join(TRANSPOSED_CONV_MODES)}; got {mode!r}")
    token = _TRANSPOSED_CONV_MODE.set(mode)
    try:
        yield
    finally:
        _TRANSPOSED_CONV_MODE.reset(token)


def _phase_taps(k: int, s: int, p: int) -> tuple[list[int], int]:
    """One axis of conv_transpose_as_conv. Output position i = s q + r (phase r) sums
    x[j] W[t] over i = s j + t - p, i.e. j = q + (r + p - t) / s for the taps t = r + p (mod s).
    Returns (index, a_min): index[r * L + m] = the tap t feeding phase r from x[q + a_min + m]
    (k, meaning zero, where none does), L = a_max - a_min + 1 the correlation window."""
    offsets = [(r + p - t) // s for r in range(s) for t in range(k) if (r + p - t) % s == 0]
    a_min, a_max = min(offsets), max(offsets)
    length = a_max - a_min + 1
    index = []
    for r in range(s):
        for m in range(length):
            t = r + p - s * (a_min + m)
            index.append(t if 0 <= t < k else k)
    return index, a_min


def conv_transpose_as_conv(x: torch.Tensor, weight: torch.Tensor, bias, stride, padding, output_padding,
                           groups: int) -> torch.Tensor:
    """conv_transpose2d(x, W, bias, stride, padding, output_padding, groups) as the sub-pixel
    convolution: one stride-1 Conv with s_h * s_w output channels per output channel (phase
    (r_h, r_w) computes the outputs at (s_h q + r_h, s_w q' + r_w) from a window of x, its taps
    picked from W's strided taps, zeros where a phase has fewer), then an interleave
    (DepthToSpace when s_h == s_w). The same products summed in the same tap order per output;
    inference runtimes run Conv on their fast blocked kernels where ConvTranspose goes through
    im2col + GEMM + col2im.
    x [N, Cin, H, W], weight [Cin, Cout/groups, kh, kw] (dilation 1) -> [N, Cout, Ho, Wo] with
    Ho = (H - 1) s_h - 2 p_h + kh + op_h."""
    n, cin, h, w = x.shape
    _, cout_g, kh, kw = (int(v) for v in weight.shape)
    (sh, sw), (ph, pw), (oph, opw) = _pair(stride), _pair(padding), _pair(output_padding)
    g, cin_g = groups, cin // groups
    ho, wo = (h - 1) * sh - 2 * ph + kh + oph, (w - 1) * sw - 2 * pw + kw + opw
    qh, qw = -(-ho // sh), -(-wo // sw)  # phase rows / columns (ceil)
    idx_h, amin_h = _phase_taps(kh, sh, ph)
    idx_w, amin_w = _phase_taps(kw, sw, pw)
    lh, lw = len(idx_h) // sh, len(idx_w) // sw
    # Phase kernels [g * Cout_g * sh * sw, Cin_g, Lh, Lw], channel ((c * sh) + r_h) * sw + r_w
    # (DepthToSpace's CRD order; contiguous per group): gathered from W with a zero tap appended.
    wz = F.pad(weight.reshape(g, cin_g, cout_g, kh, kw), (0, 1, 0, 1))  # [g, Cin_g, Cout_g, kh+1, kw+1]
    wz = aten.index_select(wz, 3, torch.tensor(idx_h, device=weight.device))
    wz = aten.index_select(wz, 4, torch.tensor(idx_w, device=weight.device))  # [g, Cin_g, Cout_g, sh Lh, sw Lw]
    wz = wz.reshape(g, cin_g, cout_g, sh, lh, sw, lw).permute(0, 2, 3, 5, 1, 4, 6)
    w_sub = wz.reshape(g * cout_g * sh * sw, cin_g, lh, lw)
    b_sub = None if bias is None else bias.repeat_interleave(sh * sw)
    # Window of phase row q: x[q + a_min .. q + a_max]; pad (or crop) x to that, qh rows out.
    pads = []
    for size, q, amin, length in ((w, qw, amin_w, lw), (h, qh, amin_h, lh)):
        before = -amin
        after = q + length - 1 - size - before
        pads += [before, after]
    crop = [max(-v, 0) for v in pads]
    if any(crop):
        x = x[:, :, crop[2]:h - crop[3], crop[0]:w - crop[1]]
    pad = [max(v, 0) for v in pads]
    symmetric = pad[0] == pad[1] and pad[2] == pad[3]
    if any(pad) and not symmetric:
        x = F.pad(x, pad)
    conv_pad = [pad[2], pad[0]] if symmetric else [0, 0]
    y = aten.convolution(x, w_sub, b_sub, [1, 1], conv_pad, [1, 1], False, [0, 0], g)  # [N, Cout sh sw, qh, qw]
    cout = g * cout_g
    if sh == sw:
        y = F.pixel_shuffle(y, sh) if sh > 1 else y
    else:
        y = y.reshape(n, cout, sh, sw, qh, qw).permute(0, 1, 4, 2, 5, 3).reshape(n, cout, qh * sh, qw * sw)
    if qh * sh != ho or qw * sw != wo:
        y = y[:, :, :ho, :wo]
    return y


def convolution_as_forward(x, weight, bias, stride, padding, dilation, transposed, output_padding, groups):
    """aten.convolution: under transposed_conv_mode("subpixel"), 2-d transposed convolutions
    (dilation 1) as conv_transpose_as_conv; every other convolution (and every one in the
    default "plain" mode) unchanged."""
    if (not transposed or weight.ndim != 4 or _TRANSPOSED_CONV_MODE.get() != "subpixel"
            or any(d != 1 for d in _pair(dilation))):
        return NotImplemented
    return conv_transpose_as_conv(x, weight, bias, stride, padding, output_padding, groups)


def convolution_backward(grad_out, input, weight, bias_sizes, stride, padding, dilation, transposed,
                         output_padding, groups, output_mask):
    """aten.convolution_backward -> (grad_input, grad_weight, grad_bias), each None unless asked
    for in output_mask. Forward ops only (see conv_input_grad_ref / conv_weight_grad_ref)."""
    gi = gw = gb = None
    nd = weight.ndim - 2
    if output_mask[0]:
        gi = conv_input_grad_ref(grad_out, weight, input.shape, stride, padding, dilation, transposed,
                                 output_padding, groups)
    if output_mask[1]:
        if transposed:  # y = conv_transpose(x, W) is the adjoint of z -> conv(z, W): swap roles
            gw = conv_weight_grad_ref(grad_out, input, weight.shape, stride, padding, dilation, groups)
        else:
            gw = conv_weight_grad_ref(input, grad_out, weight.shape, stride, padding, dilation, groups)
    if output_mask[2]:
        gb = grad_out.sum(dim=[0] + list(range(2, 2 + nd)))
    return gi, gw, gb


def upsample_nearest2d_backward(grad_out, output_size, input_size, scales_h=None, scales_w=None):
    """Backward of nearest upsampling by integer factors: sum over each factor x factor block.
    grad_out [N, C, H*fh, W*fw] -> [N, C, H, W]."""
    c, h, w = (int(s) for s in input_size[1:])  # the batch stays symbolic
    oh, ow = int(output_size[0]), int(output_size[1])
    if oh % h or ow % w:
        raise NotImplementedError("upsample_nearest2d_backward: only integer scale factors")
    fh, fw = oh // h, ow // w
    g = grad_out.reshape(grad_out.shape[0], c, h, fh, w, fw)  # [N, C, H, fh, W, fw]
    return g.sum(dim=(3, 5))


def _upsample_nearest2d_backward_vec(grad_out, output_size, input_size, scale_factors=None):
    return upsample_nearest2d_backward(grad_out, output_size, input_size)


def avg_pool2d_backward(grad_out, x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    """Backward of avg_pool2d as a depthwise transposed conv of grad_out with a constant kernel.
    Supports count_include_pad=True or no padding (every window then has k*k elements) and no
    ceil_mode; grad_out [N, C, Ho, Wo] -> [N, C, H, W]."""
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(stride) if stride else (kh, kw)
    ph, pw = _pair(padding)
    if ceil_mode or (not count_include_pad and (ph or pw)):
        raise NotImplementedError("avg_pool2d_backward: ceil_mode / count_include_pad=False with padding")
    c = x.shape[1]
    div = divisor_override if divisor_override else kh * kw
    weight = torch.full((c, 1, kh, kw), 1.0 / div, dtype=grad_out.dtype, device=grad_out.device)
    return conv_input_grad_ref(grad_out, weight, x.shape, (sh, sw), (ph, pw), (1, 1), False, (0, 0), c)


def _reflect_pad_backward_1d(g: torch.Tensor, dim: int, before: int, after: int) -> torch.Tensor:
    """Adjoint of reflect padding along `dim`: the centre plus the mirrored margins folded back."""
    size = g.shape[dim] - before - after
    out = g.narrow(dim, before, size)
    if before:
        left = g.narrow(dim, 0, before).flip(dim)  # lands on positions 1..before
        out = out + _pad_dim(left, dim, 1, size - 1 - before)
    if after:
        right = g.narrow(dim, before + size, after).flip(dim)  # lands on size-1-after .. size-2
        out = out + _pad_dim(right, dim, size - 1 - after, 1)
    return out


def _pad_dim(x: torch.Tensor, dim: int, before: int, after: int) -> torch.Tensor:
    pad = [0, 0] * (x.ndim - dim - 1) + [before, after]
    return F.pad(x, pad)  # constant zeros


def reflection_pad_backward(grad_out, x, padding):
    """Backward of reflection_pad{1,2,3}d: padding (left, right, top, bottom, ...) from the last
    dim backwards. grad_out [..., padded] -> x.shape."""
    g = grad_out
    for i in range(len(padding) // 2):
        dim = g.ndim - 1 - i
        g = _reflect_pad_backward_1d(g, dim, int(padding[2 * i]), int(padding[2 * i + 1]))
    return g


def decomposition_table() -> dict:
    """Decompositions for tracing a gradient into standard ONNX ops: the ones above plus torch's
    core decompositions of the composite backward ops (activation / norm backwards)."""
    from torch._decomp import core_aten_decompositions, get_decompositions  # noqa: PLC0415

    table = dict(get_decompositions([
        aten.tanh_backward, aten.sigmoid_backward,
        aten.native_batch_norm_backward, aten._native_batch_norm_legit_functional, aten.native_batch_norm,
        aten._native_batch_norm_legit, aten._native_batch_norm_legit_no_training,
        aten.native_layer_norm_backward, aten.native_group_norm_backward, aten.mse_loss_backward,
        aten._softmax_backward_data, aten.embedding_dense_backward,
        aten.elu_backward, aten.gelu_backward, aten.hardtanh_backward,
    ]))
    core = core_aten_decompositions()
    for op in (aten.instance_norm, aten.native_group_norm):
        for overload in (op.default,) if hasattr(op, "default") else ():
            if overload in core:
                table[overload] = core[overload]
    ours = {
        aten.convolution_backward.default: convolution_backward,
        aten.convolution.default: convolution_as_forward,
        aten.upsample_nearest2d.vec: upsample_nearest2d_vec,
        aten.select_backward.default: select_backward,
        aten.split.Tensor: split_as_slices,
        aten.split_with_sizes.default: split_with_sizes_as_slices,
        aten.unbind.int: unbind_as_selects,
        aten.slice_backward.default: slice_backward,
        aten.upsample_nearest2d_backward.default: upsample_nearest2d_backward,
        aten.avg_pool2d_backward.default: avg_pool2d_backward,
        aten.reflection_pad1d_backward.default: reflection_pad_backward,
        aten.reflection_pad2d_backward.default: reflection_pad_backward,
        aten.reflection_pad3d_backward.default: reflection_pad_backward,
        aten.pow.Tensor_Scalar: pow_small_integer,
        aten.leaky_relu_backward.default: leaky_relu_backward,
        aten.threshold_backward.default: threshold_backward,
        aten.pixel_unshuffle.default: pixel_unshuffle_as_conv,
    }
    table.update(ours)
    return table


def leaky_relu_backward(grad_out, x, negative_slope, self_is_result):
    """grad * (1 where x > 0 else slope), the factor computed as (x > 0) * (1 - slope) + slope.
    torch's own decomposition, where(x > 0, grad, grad * slope), selects between two whole
    tensors, which ONNX Runtime's CPU Where runs about 10x slower than a Mul (a sixth of a
    stylegan1 step); a Where of two scalars still costs 6 Muls (43 ms on [1, 64, 512, 512]), the
    Cast + Mul + Add form 3 (22 ms). Same values: the factor is exactly 1 or slope in float32
    (0.8f + 0.2f rounds to 1.0f), so grad * factor is what either form computes."""
    if self_is_result and negative_slope < 0:
        raise NotImplementedError("leaky_relu_backward on its result with a negative slope")
    mask = aten.gt.Scalar(x, 0).to(grad_out.dtype)
    factor = aten.add.Scalar(aten.mul.Scalar(mask, 1.0 - float(negative_slope)), float(negative_slope))
    return aten.mul.Tensor(grad_out, factor)


def threshold_backward(grad_out, x, threshold):
    """ReLU's backward as grad * (x > threshold), not a Where over whole tensors (see
    leaky_relu_backward). Same values for finite gradients."""
    return aten.mul.Tensor(grad_out, aten.gt.Scalar(x, threshold).to(grad_out.dtype))


def pow_small_integer(x, exponent):
    """x ** 1 -> x, x ** 2 -> x * x, x ** 3 -> x * x * x: the products torch's own pow kernel
    computes for these exponents, so values are unchanged. In the step graph they come from the
    normalisations (x.square()) and their gradients (2 * x ** 1, rsqrt's x ** 3); ONNX Runtime's
    generic Pow on whole activations cost about a sixth of a stylegan1 step on CPU. Other
    exponents stay Pow."""
    if exponent == 1:
        return aten.clone.default(x)
    if exponent == 2:
        return aten.mul.Tensor(x, x)
    if exponent == 3:
        return aten.mul.Tensor(aten.mul.Tensor(x, x), x)
    return NotImplemented


def pixel_unshuffle_as_conv(x, downscale_factor):
    """pixel_unshuffle (the backward of pixel_shuffle, e.g. of MobileStyleGAN's inverse Haar
    transforms) as a depthwise stride-r Conv with one-hot r x r kernels: output channel
    c r^2 + i r + j of input channel c takes tap (i, j). Exported as is, pixel_unshuffle is a
    Reshape + 6-d Transpose + Reshape, which ONNX Runtime's CPU runs slowly (41.8 ms for the
    1024 px image's gradient of MobileStyleGAN, the step's largest node). Values unchanged:
    each output is 1 * x plus zeros. x [N, C, H r, W r] -> [N, C r^2, H, W]."""
    r = int(downscale_factor)
    c = int(x.shape[1])
    eye = torch.eye(r * r, dtype=x.dtype, device=x.device).reshape(r * r, 1, r, r)  # tap (i, j) of output i r + j
    weight = eye.repeat(c, 1, 1, 1)  # [C r^2, 1, r, r]
    return aten.convolution(x, weight, None, [r, r], [0, 0], [1, 1], False, [0, 0], c)


def upsample_nearest2d_vec(x, output_size, scale_factors):
    """Keep F.interpolate(mode="nearest") as one aten.upsample_nearest2d (ONNX Resize) instead of
    its index-based decomposition, whose backward is a scatter."""
    if output_size is None:
        output_size = [int(x.shape[2 + i] * float(scale_factors[i])) for i in range(2)]
    return aten.upsample_nearest2d.default(x, list(output_size))


def select_backward(grad_out, input_sizes, dim, index):
    """Backward of x.select(dim, index): grad_out placed at `index` of zeros, as a constant Pad
    (ONNX Pad rather than a scatter). grad_out [*input_sizes without dim] -> input_sizes.
    Sizes stay symbolic (no int()), so a batch dimension is never specialised."""
    dim = dim % len(input_sizes)
    size = input_sizes[dim]
    if index < 0:
        index = index + size
    return _pad_dim(grad_out.unsqueeze(dim), dim, index, size - 1 - index)


def slice_backward(grad_out, input_sizes, dim, start, end, step):
    """Backward of x[start:end:step] along dim (step 1): zero padding back to input_sizes
    (symbolic sizes kept symbolic)."""
    if step != 1:
        raise NotImplementedError("slice_backward with step != 1")
    dim = dim % len(input_sizes)
    size = input_sizes[dim]
    if start < 0:
        start = start + size
    length = grad_out.shape[dim]
    return _pad_dim(grad_out, dim, start, size - start - length)


def upsample_nearest_expand(x: torch.Tensor, fh: int, fw: int) -> torch.Tensor:
    """Nearest upsampling by integer factors as unsqueeze + expand + reshape:
    [N, C, H, W] -> [N, C, H*fh, W*fw]. Its backward is a reshape + sum."""
    n, c, h, w = x.shape
    y = x.reshape(n, c, h, 1, w, 1).expand(n, c, h, fh, w, fw)  # [N, C, H, fh, W, fw]
    return y.reshape(n, c, h * fh, w * fw)


class NearestUpsampleAsExpand(torch.overrides.TorchFunctionMode):
    """While active, F.interpolate(mode="nearest") by integer factors runs as
    upsample_nearest_expand.

    Under make_fx with symbolic shapes, torch decomposes upsample_nearest2d into an index gather
    whose backward is a scatter (ONNX GatherND / ScatterND). The expand form exports as
    Reshape + Expand forward and ReduceSum backward, all plain TensorRT layers.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.interpolate:
            x = args[0]
            size = kwargs.get("size", args[1] if len(args) > 1 else None)
            scale = kwargs.get("scale_factor", args[2] if len(args) > 2 else None)
            mode = kwargs.get("mode", args[3] if len(args) > 3 else "nearest")
            if mode == "nearest" and x.ndim == 4:
                h, w = int(x.shape[2]), int(x.shape[3])
                if size is not None:
                    oh, ow = _pair(size)
                else:
                    s = _pair(scale)
                    oh, ow = int(h * s[0]), int(w * s[1])
                if oh % h == 0 and ow % w == 0:
                    return upsample_nearest_expand(x, oh // h, ow // w)
        return func(*args, **kwargs)


def instance_norm_formula(x: torch.Tensor, eps: float) -> torch.Tensor:
    """F.instance_norm without affine or running statistics, written out:
    (x - mean) * rsqrt(mean((x - mean)^2) + eps) over dims >= 2, per image and channel."""
    dims = tuple(range(2, x.ndim))
    x = x - x.mean(dim=dims, keepdim=True)
    return x * torch.rsqrt(x.square().mean(dim=dims, keepdim=True) + eps)


class InstanceNormAsFormula(torch.overrides.TorchFunctionMode):
    """While active, F.instance_norm (no affine, no running statistics) runs as
    instance_norm_formula.

    Traced, F.instance_norm becomes batch_norm on a [1, B*C, H, W] view and torch's decomposition
    of native_batch_norm_backward: a different float32 summation order from eager autograd,
    which Adam's first steps (update ~ lr * sign(g) where |g| is tiny) turn into visible latent
    differences. The formula traces into the same ReduceMean / Sub / Mul / Rsqrt as autograd
    differentiates it.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.instance_norm:
            names = ("input", "running_mean", "running_var", "weight", "bias", "use_input_stats", "momentum", "eps")
            bound = {**dict(zip(names, args)), **kwargs}
            plain = all(bound.get(k) is None for k in names[1:5]) and bound.get("use_input_stats", True)
            if plain:
                return instance_norm_formula(bound["input"], bound.get("eps", 1e-5))
        return func(*args, **kwargs)


def split_as_slices(x, split_size, dim=0):
    """aten.split.Tensor as narrow() slices (ONNX Slice), not a tensor sequence."""
    size = int(x.shape[dim])
    return [aten.slice.Tensor(x, dim, s, min(s + split_size, size)) for s in range(0, size, split_size)]


def split_with_sizes_as_slices(x, split_sizes, dim=0):
    """aten.split_with_sizes as slices."""
    out, s = [], 0
    for n in split_sizes:
        out.append(aten.slice.Tensor(x, dim, s, s + int(n)))
        s += int(n)
    return out


def unbind_as_selects(x, dim=0):
    """aten.unbind as selects."""
    return [aten.select.int(x, dim, i) for i in range(int(x.shape[dim]))]
