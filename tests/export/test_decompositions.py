"""Each decomposition against autograd on random shapes, strides, paddings, dilations, groups."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pulse_trt.export import decompositions as dec

CONV_CASES = [  # (cin, cout, k, stride, padding, dilation, groups, size)
    (3, 4, 3, 1, 1, 1, 1, 9), (4, 6, 3, 2, 1, 1, 2, 10), (6, 6, 3, 2, 0, 2, 6, 13),
    (2, 5, (3, 1), (2, 1), (1, 0), 1, 1, 8), (4, 4, 4, 3, 2, 1, 4, 11), (3, 6, 1, 1, 0, 1, 3, 5),
    # stride 1, groups 1: the input gradient as a conv with the flipped kernel
    (3, 5, 3, 1, 0, 1, 1, 7), (4, 2, 3, 1, 2, 2, 1, 9), (2, 3, (3, 1), 1, (1, 0), 1, 1, 6), (3, 3, 5, 1, 2, 1, 1, 8),
    (2, 4, 1, 1, 1, 1, 1, 5),  # padding > d (k - 1): back to conv_transpose
    # stride 1, grouped / depthwise (MobileStyleGAN): a grouped conv with per-group swapped kernels
    (4, 6, 3, 1, 1, 1, 2, 9), (6, 6, 3, 1, 1, 1, 6, 8), (4, 8, 3, 1, 2, 2, 4, 9), (6, 3, 1, 1, 0, 1, 3, 5),
]


@pytest.mark.parametrize("cin,cout,k,stride,padding,dilation,groups,size", CONV_CASES)
def test_conv_backward_matches_autograd(cin, cout, k, stride, padding, dilation, groups, size):
    g = torch.Generator().manual_seed(cin * 31 + size)
    kk = k if isinstance(k, tuple) else (k, k)
    x = torch.randn(2, cin, size, size + 1, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(cout, cin // groups, *kk, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(cout, generator=g, dtype=torch.float64, requires_grad=True)
    y = F.conv2d(x, w, b, stride, padding, dilation, groups)
    gy = torch.randn(y.shape, generator=g, dtype=torch.float64)
    gx_ref, gw_ref, gb_ref = torch.autograd.grad(y, (x, w, b), gy)
    gx, gw, gb = dec.convolution_backward(gy, x.detach(), w.detach(), [cout], dec._pair(stride), dec._pair(padding),
                                          dec._pair(dilation), False, [0, 0], groups, [True, True, True])
    torch.testing.assert_close(gx, gx_ref)
    torch.testing.assert_close(gw, gw_ref)
    torch.testing.assert_close(gb, gb_ref)


@pytest.mark.parametrize("cin,cout,k,stride,padding,output_padding,dilation,groups,size", [
    (4, 3, 4, 2, 1, 0, 1, 1, 5), (4, 6, 3, 2, 1, 1, 1, 2, 6), (6, 6, 3, 3, 0, 2, 1, 3, 4), (2, 2, 3, 2, 2, 1, 2, 1, 7),
])
def test_transposed_conv_backward_matches_autograd(cin, cout, k, stride, padding, output_padding, dilation, groups, size):
    g = torch.Generator().manual_seed(size * 7 + k)
    x = torch.randn(2, cin, size, size, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(cin, cout // groups, k, k, generator=g, dtype=torch.float64, requires_grad=True)
    y = F.conv_transpose2d(x, w, None, stride, padding, output_padding, groups, dilation)
    gy = torch.randn(y.shape, generator=g, dtype=torch.float64)
    gx_ref, gw_ref = torch.autograd.grad(y, (x, w), gy)
    gx, gw, gb = dec.convolution_backward(gy, x.detach(), w.detach(), None, [stride] * 2, [padding] * 2, [dilation] * 2,
                                          True, [output_padding] * 2, groups, [True, True, False])
    assert gb is None
    torch.testing.assert_close(gx, gx_ref)
    torch.testing.assert_close(gw, gw_ref)


def test_output_mask_skips_unrequested_grads():
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    gy = torch.randn(1, 3, 3, 3)
    gx, gw, gb = dec.convolution_backward(gy, x, w, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [True, False, False])
    assert gx.shape == x.shape and gw is None and gb is None


@pytest.mark.parametrize("pad", [(1, 2, 3, 0), (3, 3, 3, 3), (0, 0, 2, 1)])
def test_reflection_pad_backward(pad):
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64, requires_grad=True)
    y = F.pad(x, pad, mode="reflect")
    gy = torch.randn(y.shape, dtype=torch.float64)
    (ref,) = torch.autograd.grad(y, x, gy)
    torch.testing.assert_close(dec.reflection_pad_backward(gy, x.detach(), list(pad)), ref)


@pytest.mark.parametrize("fh,fw", [(2, 2), (3, 1), (2, 4)])
def test_upsample_nearest_backward_and_expand_form(fh, fw):
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    y = F.interpolate(x, scale_factor=(fh, fw), mode="nearest")
    torch.testing.assert_close(dec.upsample_nearest_expand(x, fh, fw), y)
    gy = torch.randn(y.shape, dtype=torch.float64)
    (ref,) = torch.autograd.grad(y, x, gy)
    torch.testing.assert_close(dec.upsample_nearest2d_backward(gy, y.shape[2:], x.shape), ref)


@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_avg_pool_backward(k, s, p):
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64, requires_grad=True)
    y = F.avg_pool2d(x, k, s, p, count_include_pad=True)
    gy = torch.randn(y.shape, dtype=torch.float64)
    (ref,) = torch.autograd.grad(y, x, gy)
    torch.testing.assert_close(dec.avg_pool2d_backward(gy, x.detach(), [k, k], [s, s], [p, p], False, True, None), ref)


def test_select_and_slice_backward_are_pads():
    x = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    gy = torch.randn(2, 3, dtype=torch.float64)
    (ref,) = torch.autograd.grad(x.select(1, 2), x, gy)
    torch.testing.assert_close(dec.select_backward(gy, list(x.shape), 1, 2), ref)
    gs = torch.randn(2, 2, 3, dtype=torch.float64)
    (ref,) = torch.autograd.grad(x[:, 1:3], x, gs)
    torch.testing.assert_close(dec.slice_backward(gs, list(x.shape), 1, 1, 3, 1), ref)


def test_traced_gradient_has_no_backward_ops():
    from torch.fx.experimental.proxy_tensor import make_fx

    w = torch.randn(4, 3, 3, 3)

    def f(x):
        y = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), w, stride=2)
        return F.interpolate(y, scale_factor=2, mode="nearest").pow(2).sum()

    with dec.NearestUpsampleAsExpand():
        gm = make_fx(torch.func.grad(f), decomposition_table=dec.decomposition_table(), tracing_mode="symbolic",
                     _allow_non_fake_inputs=True)(torch.randn(2, 3, 8, 8))
    ops = {str(n.target) for n in gm.graph.nodes if n.op == "call_function"}
    # index_select: the sub-pixel kernels gathered from the constant weight (folded at load)
    assert not [o for o in ops if "backward" in o or ("index" in o and o != "aten.index_select.default")
                or "scatter" in o], ops
    x = torch.randn(3, 3, 8, 8, requires_grad=True)
    (ref,) = torch.autograd.grad(f(x), x)
    torch.testing.assert_close(gm(x.detach()), ref, rtol=1e-5, atol=1e-5)


def test_stride1_input_grad_is_a_plain_conv():
    """At stride 1 (any groups: dense, grouped, depthwise) the input gradient is traced as a
    regular convolution with the flipped kernel; strided ones stay transposed convolutions."""
    from torch.fx.experimental.proxy_tensor import make_fx

    def traced(stride, groups):
        w = torch.randn(6 * (2 if groups == 6 else 1), 6 // groups, 3, 3)
        gm = make_fx(torch.func.grad(lambda x: F.conv2d(x, w, None, stride, 1, 1, groups).sum()),
                     decomposition_table=dec.decomposition_table())(torch.randn(1, 6, 8, 8))
        return [n.args[6] for n in gm.graph.nodes if n.target == torch.ops.aten.convolution.default]

    assert traced(1, 1) == [False, False]  # forward conv, input-gradient conv
    assert traced(1, 3) == [False, False]
    assert traced(1, 6) == [False, False]  # depthwise with channel multiplier 2
    # strided: the input gradient is a transposed conv (the default "plain" mode) ...
    assert sorted(traced(2, 1)) == [False, True]
    assert sorted(traced(2, 3)) == [False, True]
    with dec.transposed_conv_mode("subpixel"):  # ... or a stride-1 conv + DepthToSpace
        assert traced(2, 1) == [False, False]
        assert traced(2, 3) == [False, False]


SUBPIXEL_CASES = [  # (cin, cout, k, stride, padding, output_padding, groups, h, w)
    (4, 6, 4, 2, 1, 0, 1, 5, 7),  # dcgan's upsampling layers
    (5, 8, 4, 1, 0, 0, 1, 1, 1),  # dcgan's first layer: 1x1 -> 4x4, stride 1
    (4, 6, 3, 2, 1, 1, 2, 6, 6), (6, 6, 3, 3, 0, 2, 3, 4, 5), (3, 3, 5, 3, 2, 1, 3, 4, 4),
    (3, 4, 1, 2, 0, 1, 1, 3, 3),  # 1x1 kernel at stride 2: phases with no tap at all
    (2, 2, 2, 2, 0, 0, 1, 3, 4), (2, 3, 3, 1, 2, 0, 1, 5, 5),  # padding > k - 1: the input is cropped
    (3, 3, (128, 1), (32, 1), 0, 0, 3, 3, 2),  # the bicubic downscale's gradient (1024 -> 32, rows)
    (3, 3, (1, 12), (1, 3), 0, (0, 2), 3, 2, 5),  # columns, anisotropic stride and output padding
]


@pytest.mark.parametrize("cin,cout,k,stride,padding,output_padding,groups,h,w", SUBPIXEL_CASES)
def test_conv_transpose_as_conv_matches_conv_transpose(cin, cout, k, stride, padding, output_padding, groups, h, w):
    g = torch.Generator().manual_seed(cin * 13 + h * 7 + w)
    kk = k if isinstance(k, tuple) else (k, k)
    x = torch.randn(2, cin, h, w, generator=g, dtype=torch.float64, requires_grad=True)
    wt = torch.randn(cin, cout // groups, *kk, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(cout, generator=g, dtype=torch.float64)
    ref = F.conv_transpose2d(x, wt, b, stride, padding, output_padding, groups)
    out = dec.conv_transpose_as_conv(x, wt, b, stride, padding, output_padding, groups)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref)
    # and its gradients (the rewrite is differentiated when a modulated weight depends on w)
    gy = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    for a, r in zip(torch.autograd.grad(out, (x, wt), gy), torch.autograd.grad(ref, (x, wt), gy)):
        torch.testing.assert_close(a, r)


def test_traced_transposed_conv_gradient_is_subpixel_and_matches_autograd():
    """A dcgan-like layer stack traced as make_fx(grad_and_value): forward transposed convs and
    the strided conv's input gradient both become stride-1 convs (+ DepthToSpace); the traced
    gradient and value equal autograd's."""
    from torch.fx.experimental.proxy_tensor import make_fx

    g = torch.Generator().manual_seed(3)
    w1, w2 = torch.randn(6, 4, 4, 4, generator=g), torch.randn(4, 3, 4, 4, generator=g)
    taps = torch.randn(3, 1, 8, 1, generator=g)

    def f(z):
        y = F.relu(F.conv_transpose2d(z, w1, None, 1, 0))  # [B, 4, 4, 4]
        y = torch.tanh(F.conv_transpose2d(y, w2, None, 2, 1))  # [B, 3, 8, 8]
        return F.conv2d(y, taps, stride=(4, 1), groups=3).square().sum()  # strided: its gradient is transposed

    def ops(mode):
        with dec.transposed_conv_mode(mode):
            gm = make_fx(torch.func.grad_and_value(f), decomposition_table=dec.decomposition_table(),
                         tracing_mode="symbolic", _allow_non_fake_inputs=True)(torch.randn(2, 6, 1, 1))
        convs = [n.args[6] for n in gm.graph.nodes if n.target == torch.ops.aten.convolution.default]
        return gm, convs

    gm, convs = ops("subpixel")
    assert True not in convs and len(convs) >= 5
    z = torch.randn(3, 6, 1, 1, dtype=torch.float32, requires_grad=True)
    value = f(z)
    (ref,) = torch.autograd.grad(value, z)
    grad, val = gm(z.detach())
    torch.testing.assert_close(grad, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(val, value.detach(), rtol=1e-5, atol=1e-5)
    _, plain = ops("plain")
    assert plain.count(True) == 3  # two forward layers + the strided conv's input gradient


def test_transposed_conv_mode_rejects_unknown():
    with pytest.raises(ValueError, match="plain, subpixel"):
        with dec.transposed_conv_mode("fast"):
            pass


@pytest.mark.parametrize("slope", [0.2, 0.01, 0.7])
def test_leaky_relu_backward_matches_autograd_exactly(slope):
    x = torch.randn(3, 4, 5, 6)
    x[0, 0, 0, :3] = 0.0  # the kink: slope, as in torch
    gy = torch.randn(x.shape)
    xr = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(F.leaky_relu(xr, slope), xr, gy)
    assert torch.equal(dec.leaky_relu_backward(gy, x, slope, False), ref)


def test_threshold_backward_matches_autograd_exactly():
    x = torch.randn(3, 4, 5, 6)
    x[0, 0, 0, :3] = 0.0
    gy = torch.randn(x.shape)
    xr = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(F.relu(xr), xr, gy)
    assert torch.equal(dec.threshold_backward(gy, x, 0.0), ref)


@pytest.mark.parametrize("exponent", [1, 2, 3, 2.0])
def test_small_integer_powers_are_products_bit_exact(exponent):
    x = torch.randn(4, 1000, dtype=torch.float32) * 10
    assert torch.equal(dec.pow_small_integer(x, exponent), torch.pow(x, exponent))


def test_other_powers_stay_pow():
    assert dec.pow_small_integer(torch.randn(3), 0.5) is NotImplemented
    assert dec.pow_small_integer(torch.randn(3), -1) is NotImplemented


def test_instance_norm_as_formula_matches_instance_norm():
    """The tracer's written-out instance norm equals F.instance_norm (what eager PyTorch and PULSE's
    nn.InstanceNorm2d run), values and input gradients, and leaves affine calls alone."""
    from pulse_trt.export.decompositions import InstanceNormAsFormula, instance_norm_formula

    g = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 3, 8, 8, generator=g) * torch.tensor([1.0, 0.01, 5.0]).view(1, 3, 1, 1) + 0.5).requires_grad_()
    gy = torch.randn(2, 3, 8, 8, generator=g)
    fused = torch.nn.functional.instance_norm(x, eps=1e-5)
    (gx_fused,) = torch.autograd.grad(fused, x, gy)
    with InstanceNormAsFormula():
        written = torch.nn.functional.instance_norm(x, eps=1e-5)
    (gx_written,) = torch.autograd.grad(written, x, gy)
    torch.testing.assert_close(written, fused, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx_written, gx_fused, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(instance_norm_formula(x, 1e-5), torch.nn.InstanceNorm2d(3)(x), rtol=1e-5, atol=1e-5)
    weight = torch.full((3,), 2.0)
    with InstanceNormAsFormula():
        affine = torch.nn.functional.instance_norm(x, weight=weight, eps=1e-5)
    torch.testing.assert_close(affine, 2.0 * fused)


@pytest.mark.parametrize("r", [2, 4])
def test_pixel_unshuffle_as_conv_is_exact(r):
    """pixel_shuffle's backward (pixel_unshuffle) as a one-hot depthwise stride-r conv: bit-exact,
    and traced gradients of pixel_shuffle hold no pixel_unshuffle (a 6-d Transpose in ONNX)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    x = torch.randn(2, 5, 4 * r, 3 * r)
    assert torch.equal(dec.pixel_unshuffle_as_conv(x, r), F.pixel_unshuffle(x, r))
    scale = torch.arange(6.0 * r).view(1, 1, 1, -1)

    def f(z):
        return (F.pixel_shuffle(z, r).square() * scale).sum()

    gm = make_fx(torch.func.grad(f), decomposition_table=dec.decomposition_table(), tracing_mode="symbolic",
                 _allow_non_fake_inputs=True)(torch.randn(2, 3 * r * r, 4, 6))
    assert "aten.pixel_unshuffle.default" not in {str(n.target) for n in gm.graph.nodes}
    z = torch.randn(3, 3 * r * r, 4, 6, requires_grad=True)
    (ref,) = torch.autograd.grad(f(z), z)
    assert torch.equal(gm(z.detach()), ref)
