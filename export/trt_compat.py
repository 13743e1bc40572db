"""Will TensorRT's ONNX parser take this graph? A static check against its supported-op list.

The list (export/trt_supported_ops.json) is onnx-tensorrt's docs/operators.md for the TensorRT
version it names: operator types marked supported, and the attribute values the table names for
operators it restricts (Resize modes, Pad mode, ...). No TensorRT needed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..engine.errors import PulseError

SUPPORTED_OPS_JSON = Path(__file__).with_name("trt_supported_ops.json")


@dataclass(frozen=True)
class Incompatibility:
    """One node TensorRT's parser would reject: its name, op type and why."""

    node: str
    op_type: str
    reason: str

    def __str__(self) -> str:
        return f"node {self.node!r} ({self.op_type}): {self.reason}"


@lru_cache(maxsize=4)
def supported_ops(path: str | None = None) -> dict:
    """The parsed support list (see trt_supported_ops.json: source, tensorrt_version,
    opset_range, supported, unsupported, attributes, attribute_defaults)."""
    return json.loads(Path(path or SUPPORTED_OPS_JSON).read_text())


def _attr_value(attr):
    import onnx  # noqa: PLC0415

    v = onnx.helper.get_attribute_value(attr)
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, list):
        return [x.decode() if isinstance(x, bytes) else x for x in v]
    return v


def _nodes(graph, prefix: str = ""):
    for node in graph.node:
        yield prefix, node
        for attr in node.attribute:
            if attr.g is not None and attr.g.node:
                yield from _nodes(attr.g, f"{prefix}{node.name}/")
            for g in attr.graphs:
                yield from _nodes(g, f"{prefix}{node.name}/")


def check_model(model, table: dict | None = None) -> list[Incompatibility]:
    """Every node of `model` (onnx.ModelProto or a path; subgraphs and local functions included)
    that the TensorRT ONNX parser does not support, in graph order.

    Checks: 1. the default-domain opset is within table["opset_range"]; 2. each node's domain is
    the default ONNX domain (or a local function, whose body is checked); 3. its op type is in
    table["supported"]; 4. the attributes listed in table["attributes"] take supported values
    (attribute_defaults fill in unset ones).
    """
    import onnx  # noqa: PLC0415

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    table = table or supported_ops()
    supported = set(table["supported"])
    problems: list[Incompatibility] = []
    lo, hi = table["opset_range"]
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and not (lo <= imp.version <= hi):
            problems.append(Incompatibility("<model>", "opset", f"opset {imp.version} outside TensorRT {table['tensorrt_version']}'s range {lo}..{hi}"))
    functions = {(f.domain, f.name): f for f in model.functions}
    graphs = [("", model.graph)] + [(f"{f.name}/", f) for f in model.functions]
    for prefix, g in graphs:
        for sub, node in _nodes(g, prefix):
            name = f"{sub}{node.name or '<unnamed>'}"
            if (node.domain, node.op_type) in functions:
                continue  # a local function: its body is checked as its own graph
            if node.domain not in ("", "ai.onnx"):
                problems.append(Incompatibility(name, node.op_type, f"custom domain {node.domain!r} (no TensorRT plugin)"))
                continue
            if node.op_type not in supported:
                problems.append(Incompatibility(name, node.op_type, f"not supported by the TensorRT {table['tensorrt_version']} ONNX parser"))
                continue
            rules = table.get("attributes", {}).get(node.op_type)
            if not rules:
                continue
            values = dict(table.get("attribute_defaults", {}).get(node.op_type, {}))
            values.update({a.name: _attr_value(a) for a in node.attribute})
            for attr, allowed in rules.items():
                if attr not in values:
                    continue
                v = values[attr]
                if allowed == "all_ones":
                    if v and any(int(x) != 1 for x in v):
                        problems.append(Incompatibility(name, node.op_type, f"{attr}={v} (TensorRT needs all ones)"))
                elif v not in allowed:
                    problems.append(Incompatibility(name, node.op_type, f"{attr}={v!r} (TensorRT supports {', '.join(map(str, allowed))})"))
    return problems


def require_compatible(model, what: str = "graph", allow_unsupported: bool = False) -> list[Incompatibility]:
    """check_model, raising PulseError naming the first unsupported node unless
    allow_unsupported (then the problems are returned for the caller to report)."""
    problems = check_model(model)
    if problems and not allow_unsupported:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise PulseError(f"{what} is not TensorRT-compatible: {problems[0]}{more}; "
                         "pass --allow-unsupported-ops (allow_unsupported=True) to export anyway")
    return problems
