"""Verification helpers: error metric, random inputs, checker failure."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, save

from pulse_trt.engine.errors import PulseError
from pulse_trt.engine.options import PulseOptions
from pulse_trt.export.step import sphere_norm, step_layout
from pulse_trt.export.verify import check_onnx, norm_relative_error, random_inputs, relative_error


def test_relative_error_is_scale_relative():
    ref = np.array([0.0, 2.0, -4.0])
    assert relative_error(ref + np.array([0.0, 0.0, 0.004]), ref) == pytest.approx(1e-3)
    assert relative_error(np.zeros(2), np.zeros(3)) == float("inf")
    assert relative_error(np.array([np.nan]), np.array([1.0])) == float("inf")


def test_random_inputs_by_role(tiny_style):
    lay = step_layout(tiny_style.spec, PulseOptions(), 4)
    feeds = random_inputs(lay.step_inputs(), 3)
    assert list(feeds) == [i.name for i in lay.step_inputs()]
    assert feeds["target"].min() >= 0 and feeds["target"].max() <= 1 and (feeds["t"] == np.round(feeds["t"])).all()
    assert feeds["t"][0] >= 2 and list(feeds["t"][1:]) == [1, 0]  # under way, starting over, holding still
    assert feeds["lr"].shape == (3,) and np.isfinite(feeds["best.loss"]).all()
    one = random_inputs(lay.step_inputs(), 1)
    assert np.isnan(one["best.loss"]).all() and np.isinf(one["min.L2"]).all()  # batch 1: no best yet
    assert (feeds["v.latent"] > 0).all() and feeds["latent"].shape == (3, 6, 8)
    ratio = feeds["radius.latent"] / sphere_norm(torch.from_numpy(feeds["latent"])).numpy()
    assert ((ratio > 0.79) & (ratio < 1.21)).all()


def test_checker_failure_is_pulse_error(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    bad = helper.make_model(helper.make_graph([helper.make_node("Relu", ["nope"], ["y"])], "g", [x], [y]),
                            opset_imports=[helper.make_opsetid("", 20)])
    save(bad, str(tmp_path / "bad.onnx"))
    with pytest.raises(PulseError, match="bad.onnx fails onnx.checker"):
        check_onnx(tmp_path / "bad.onnx")


def test_norm_relative_error_is_tensor_wise():
    ref = np.array([3.0, 4.0])  # norm 5
    assert norm_relative_error(ref + np.array([0.0, 0.05]), ref) == pytest.approx(1e-2)
    # one entry off by 1e-3 of the max in a 100-entry tensor: tensor-wise ~1e-4
    big = np.ones(100)
    got = big.copy()
    got[0] += 1e-3
    assert norm_relative_error(got, big) == pytest.approx(1e-4)
    assert relative_error(got, big) == pytest.approx(1e-3)
    assert norm_relative_error(np.zeros(2), np.zeros(3)) == float("inf")
    assert norm_relative_error(np.array([np.nan]), np.array([1.0])) == float("inf")
