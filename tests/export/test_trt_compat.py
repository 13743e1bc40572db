"""TensorRT supported-operator check on hand-made graphs."""
from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from pulse_trt.engine.errors import PulseError
from pulse_trt.export.trt_compat import check_model, require_compatible, supported_ops


def _model(nodes, opset=20):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", opset)])


def test_list_names_its_source_and_version():
    t = supported_ops()
    assert "onnx-tensorrt" in t["source"] and t["tensorrt_version"].startswith("10.")
    assert {"Conv", "ConvTranspose", "Pad", "Resize", "ReduceSum", "Atan"} <= set(t["supported"])
    assert "SplitToSequence" in t["unsupported"] and "SplitToSequence" not in t["supported"]


def test_supported_graph_passes():
    assert check_model(_model([helper.make_node("Relu", ["x"], ["y"], name="r")])) == []


def test_unsupported_op_named():
    m = _model([helper.make_node("Relu", ["x"], ["a"], name="ok"), helper.make_node("Unique", ["a"], ["y"], name="uniq")])
    problems = check_model(m)
    assert [p.node for p in problems] == ["uniq"]
    with pytest.raises(PulseError, match="uniq.*Unique"):
        require_compatible(m, "step.onnx")
    assert require_compatible(m, allow_unsupported=True)[0].op_type == "Unique"


def test_attribute_rules():
    pads = helper.make_tensor("pads", TensorProto.INT64, [8], [0] * 8)
    m = _model([helper.make_node("Constant", [], ["p"], value=pads),
                helper.make_node("Pad", ["x", "p"], ["y"], name="wrap", mode="wrap")])
    assert "mode='wrap'" in str(check_model(m)[0])
    m = _model([helper.make_node("Constant", [], ["p"], value=pads),
                helper.make_node("Pad", ["x", "p"], ["y"], name="refl", mode="reflect")])
    assert check_model(m) == []
    m = _model([helper.make_node("Resize", ["x", "", "s"], ["y"], name="cubic", mode="cubic")])
    assert "cubic" in str(check_model(m)[0])


def test_opset_out_of_range_and_custom_domain():
    m = _model([helper.make_node("Relu", ["x"], ["y"])], opset=25)
    assert check_model(m)[0].op_type == "opset"
    m = _model([helper.make_node("Foo", ["x"], ["y"], name="f", domain="com.example")])
    assert "custom domain" in check_model(m)[0].reason


def test_subgraph_nodes_checked():
    then = helper.make_graph([helper.make_node("Unique", ["x"], ["u"], name="inner")], "t", [],
                             [helper.make_tensor_value_info("u", TensorProto.FLOAT, None)])
    els = helper.make_graph([helper.make_node("Relu", ["x"], ["v"])], "e", [],
                            [helper.make_tensor_value_info("v", TensorProto.FLOAT, None)])
    c = helper.make_tensor("c", TensorProto.BOOL, [], [True])
    m = _model([helper.make_node("Constant", [], ["cond"], value=c),
                helper.make_node("If", ["cond"], ["y"], name="if", then_branch=then, else_branch=els)])
    assert [p.node for p in check_model(m)] == ["if/inner"]

