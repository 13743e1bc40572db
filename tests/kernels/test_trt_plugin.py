"""kernels.trt_plugin: the ONNX rewrite on CPU (hand-built graphs and torch's export of
export/losses.downscale); the TensorRT plugins themselves need TensorRT and a GPU."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from pulse_trt.engine.bicubic import bicubic_taps, padding  # noqa: E402
from pulse_trt.kernels.trt_plugin import NAMESPACE, replace_downsample_loss  # noqa: E402


def _d_graph(f=4, c=3, size=32, stride=None, mode="reflect", extra_consumer=False):
    """x -> Pad -> Conv(rows) -> Pad -> Conv(cols) -> y (-> Mul -> z), as the exporter writes D."""
    before, after = padding(f)
    taps = bicubic_taps(f).astype(np.float32)
    inits = [numpy_helper.from_array(np.tile(taps.reshape(1, 1, -1, 1), (c, 1, 1, 1)), "kh"),
             numpy_helper.from_array(np.tile(taps.reshape(1, 1, 1, -1), (c, 1, 1, 1)), "kw"),
             numpy_helper.from_array(np.array([0, 0, before, 0, 0, 0, after, 0], np.int64), "pads_h"),
             numpy_helper.from_array(np.array([0, 0, 0, before, 0, 0, 0, after], np.int64), "pads_w"),
             numpy_helper.from_array(np.array(2.0, np.float32), "two")]
    s = stride or f
    nodes = [helper.make_node("Pad", ["x", "pads_h"], ["p1"], mode=mode),
             helper.make_node("Conv", ["p1", "kh"], ["c1"], group=c, strides=[s, 1], kernel_shape=[4 * f, 1]),
             helper.make_node("Pad", ["c1", "pads_w"], ["p2"], mode="reflect"),
             helper.make_node("Conv", ["p2", "kw"], ["y"], group=c, strides=[1, s], kernel_shape=[1, 4 * f]),
             helper.make_node("Mul", ["y", "two"], ["z"])]
    outputs = [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)]
    if extra_consumer:
        outputs.append(helper.make_tensor_value_info("c1", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "d", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", c, size, size])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("f", [1, 2, 4, 8, 16])
def test_pattern_becomes_one_plugin_node(f):
    model = _d_graph(f, size=16 * f)
    out = replace_downsample_loss(model)
    ops = [(n.op_type, n.domain) for n in out.graph.node]
    assert ops == [("downscale", NAMESPACE), ("Mul", "")]
    node = out.graph.node[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert list(node.input) == ["x"] and list(node.output) == ["y"]
    assert attrs == {"factor": f, "plugin_namespace": NAMESPACE.encode(), "plugin_version": b"1"}
    assert any(o.domain == NAMESPACE for o in out.opset_import)
    assert len(model.graph.node) == 5  # the input model is untouched


@pytest.mark.parametrize("kwargs", [dict(stride=2), dict(mode="constant"), dict(extra_consumer=True)])
def test_other_graphs_are_left_alone(kwargs):
    model = _d_graph(4, **kwargs)
    out = replace_downsample_loss(model)
    assert [n.op_type for n in out.graph.node] == [n.op_type for n in model.graph.node]


def test_wrong_taps_are_left_alone():
    model = _d_graph(4)
    kh = model.graph.initializer[0]
    kh.CopyFrom(numpy_helper.from_array(np.ones((3, 1, 16, 1), np.float32) / 16, "kh"))
    assert len(replace_downsample_loss(model).graph.node) == 5


@pytest.mark.slow
def test_torch_export_of_losses_downscale_is_rewritten():
    torch = pytest.importorskip("torch")
    from pulse_trt.export.losses import downscale

    class D(torch.nn.Module):
        def forward(self, x):
            return downscale(x, 8)

    prog = torch.onnx.export(D().eval(), (torch.rand(2, 3, 64, 64),), dynamo=True, opset_version=18,
                             dynamic_shapes=({0: torch.export.Dim("B")},))
    out = replace_downsample_loss(prog.model_proto)
    assert [(n.op_type, n.domain) for n in out.graph.node] == [("downscale", NAMESPACE)]


@pytest.mark.trt
@pytest.mark.gpu
def test_trt_engine_with_plugin_matches_reference(tmp_path):
    """Build a TensorRT engine from the rewritten graph and compare with engine.bicubic."""
    import tensorrt as trt
    import torch

    from pulse_trt.engine.bicubic import downscale
    from pulse_trt.kernels.trt_plugin import register_plugins

    register_plugins()
    model = replace_downsample_loss(_d_graph(8, size=256))
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(model.SerializeToString()), [parser.get_error(i).desc() for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("x", (1, 3, 256, 256), (3, 3, 256, 256), (8, 3, 256, 256))
    config.add_optimization_profile(profile)
    engine = trt.Runtime(logger).deserialize_cuda_engine(builder.build_serialized_network(network, config))
    ctx = engine.create_execution_context()
    x = torch.rand(3, 3, 256, 256, device="cuda")
    z = torch.full((3, 3, 32, 32), float("nan"), device="cuda")
    ctx.set_input_shape("x", tuple(x.shape))
    ctx.set_tensor_address("x", x.data_ptr())
    ctx.set_tensor_address("z", z.data_ptr())
    assert ctx.execute_async_v3(torch.cuda.current_stream().cuda_stream)
    torch.cuda.synchronize()
    want = 2 * downscale(x.cpu().numpy().astype(np.float64), 8)
    assert np.linalg.norm(z.cpu().numpy() - want) / np.linalg.norm(want) < 1e-5
