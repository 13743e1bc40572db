"""FLOP counting against hand-computed values on tiny graphs."""
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
import numpy as np  # noqa: E402

from pulse_trt.flops import count_flops  # noqa: E402


def _model(nodes, inputs, outputs, inits):
    g = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def test_conv_flops_hand_computed():
    w = numpy_helper.from_array(np.zeros((8, 4, 3, 3), np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    m = _model([node], [_vi("x", ["B", 4, 10, 10])], [_vi("y", ["B", 8, 10, 10])], [w])
    # 2 * N * Cout * H * W * Cin * 9
    assert count_flops(m, batch=3)["total"] == 2 * 3 * 8 * 10 * 10 * 4 * 9


def test_grouped_conv_and_conv_transpose():
    wd = numpy_helper.from_array(np.zeros((4, 1, 3, 3), np.float32), "wd")
    wt = numpy_helper.from_array(np.zeros((4, 2, 4, 4), np.float32), "wt")
    n1 = helper.make_node("Conv", ["x", "wd"], ["h"], pads=[1, 1, 1, 1], group=4)
    n2 = helper.make_node("ConvTranspose", ["h", "wt"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1])
    m = _model([n1, n2], [_vi("x", ["B", 4, 8, 8])], [_vi("y", ["B", 2, 16, 16])], [wd, wt])
    r = count_flops(m, batch=2)
    assert r["by_op"]["Conv"] == 2 * 2 * 4 * 8 * 8 * 1 * 9
    assert r["by_op"]["ConvTranspose"] == 2 * 2 * 4 * 8 * 8 * 2 * 16
    assert r["uncounted"] == []


def test_matmul_and_gemm():
    wb = numpy_helper.from_array(np.zeros((5, 7), np.float32), "wb")
    n1 = helper.make_node("MatMul", ["x", "wb"], ["h"])
    n2 = helper.make_node("Gemm", ["h2", "wc"], ["y"], transB=1)
    wc = numpy_helper.from_array(np.zeros((3, 7), np.float32), "wc")
    n_flat = helper.make_node("Reshape", ["h", "shape"], ["h2"])
    shape = numpy_helper.from_array(np.array([-1, 7], np.int64), "shape")
    m = _model([n1, n_flat, n2], [_vi("x", ["B", 4, 5])], [_vi("y", [None, 3])], [wb, wc, shape])
    r = count_flops(m, batch=2)
    assert r["by_op"]["MatMul"] == 2 * 2 * 4 * 5 * 7
    assert r["by_op"]["Gemm"] == 2 * 8 * 7 * 3
