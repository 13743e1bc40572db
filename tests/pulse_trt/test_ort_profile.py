"""ort_profile: ONNX Runtime's Chrome-trace profile summarised by op type and node."""
import json

import pytest

from pulse_trt.engine.errors import PulseError
from pulse_trt.ort_profile import summarize, to_markdown


def _event(cat, name, dur, op=None):
    ev = {"cat": cat, "name": name, "dur": dur, "ph": "X"}
    if op:
        ev["args"] = {"op_name": op, "provider": "CPUExecutionProvider"}
    return ev


def test_summary_by_op_and_node(tmp_path):
    events = []
    for _ in range(2):  # two runs
        events += [_event("Session", "model_run", 1000),
                   _event("Node", "conv_a_kernel_time", 300, "Conv"), _event("Node", "conv_a_fence_before", 5, "Conv"),
                   _event("Node", "conv_b_kernel_time", 100, "Conv"),
                   _event("Node", "d2s_kernel_time", 100, "DepthToSpace")]
    events.append(_event("Session", "session_initialization", 99999))
    path = tmp_path / "p.json"
    path.write_text(json.dumps(events))
    s = summarize(path, top=2)
    assert s["runs"] == 2 and s["kernel_ms_per_run"] == 0.5 and s["run_ms_per_run"] == 1.0
    assert s["by_op"][0] == {"op": "Conv", "ms_per_run": 0.4, "share": 0.8, "nodes": 2}
    assert s["by_op"][1]["op"] == "DepthToSpace" and s["by_op"][1]["share"] == 0.2
    assert [n["node"] for n in s["top_nodes"]] == ["conv_a", "conv_b"]
    md = to_markdown(s, "ort fp32 batch 1")
    assert "| Conv | 0.40 | 80.0% | 2 |" in md and "`conv_a`" in md


@pytest.mark.parametrize("text", ["not json", "{}", "[]", json.dumps([{"cat": "Session", "name": "model_run", "dur": 1}])])
def test_not_a_profile_is_one_line(tmp_path, text):
    path = tmp_path / "p.json"
    path.write_text(text)
    with pytest.raises(PulseError) as e:
        summarize(path)
    assert "\n" not in str(e.value)
    with pytest.raises(PulseError, match="cannot read"):
        summarize(tmp_path / "missing.json")
