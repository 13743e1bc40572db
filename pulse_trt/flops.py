"""The FLOP floor of an ONNX graph: multiply-adds of its convolutions, transposed convolutions
and matrix products, counted from the graph itself at a given batch size.

Napkin math, per node (2 FLOPs per multiply-add):
  Conv           2 * N * C_out * H_out * W_out * (C_in / groups) * kH * kW
  ConvTranspose  2 * N * C_in  * H_in  * W_in  * (C_out / groups) * kH * kW
  MatMul / Gemm  2 * prod(batch dims) * M * K * N
Everything else (elementwise, reductions, pads) is ignored: it is memory-bound and is what a
"fraction of the FLOP floor" figure is meant to expose.
"""
from __future__ import annotations

import math
from pathlib import Path

COUNTED = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def _dims(value_info, batch: int) -> list[int] | None:
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return None
    out = []
    for i, d in enumerate(t.shape.dim):
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif i == 0:  # the dynamic batch dimension
            out.append(batch)
        else:
            return None
    return out


def count_flops(model_or_path, batch: int = 1) -> dict:
    """FLOPs of one run of an ONNX graph at batch size `batch`.

    Returns {"total": int, "by_op": {op_type: int}, "uncounted": [node names whose shapes
    could not be inferred]}. Shapes come from ONNX shape inference (the dynamic leading
    dimension of every tensor is taken as `batch`).
    """
    import onnx  # noqa: PLC0415  (the export extra)
    from onnx import shape_inference  # noqa: PLC0415

    if isinstance(model_or_path, (str, Path)):
        model = onnx.load(str(model_or_path), load_external_data=False)
    else:
        model = model_or_path
    model = _with_batch(model, batch)
    try:
        model = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001  (inference is best effort; annotated shapes still count)
        pass
    g = model.graph
    shapes: dict[str, list[int] | None] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        shapes[vi.name] = _dims(vi, batch)
    for init in g.initializer:
        shapes[init.name] = list(init.dims)

    by_op: dict[str, int] = {}
    uncounted: list[str] = []
    for node in g.node:
        if node.op_type not in COUNTED:
            continue
        flops = _node_flops(node, shapes)
        if flops is None:
            uncounted.append(node.name or node.op_type)
            continue
        by_op[node.op_type] = by_op.get(node.op_type, 0) + flops
    return {"total": sum(by_op.values()), "by_op": by_op, "uncounted": uncounted}


def _with_batch(model, batch: int):
    """A copy whose graph inputs have the concrete batch size (so inference resolves every
    shape that depends on it) and no stale value_info."""
    import onnx  # noqa: PLC0415

    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.value_info[:]
    for vi in m.graph.input:
        dims = vi.type.tensor_type.shape.dim
        if len(dims) and not dims[0].HasField("dim_value"):
            dims[0].dim_value = batch
    return m


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return a.i if a.type == a.INT else list(a.ints) if a.ints else default
    return default


def _node_flops(node, shapes) -> int | None:
    ins = [shapes.get(n) for n in node.input]
    outs = [shapes.get(n) for n in node.output]
    if node.op_type in ("Conv", "ConvTranspose"):
        x, w, y = ins[0], ins[1], outs[0]
        if x is None or w is None or y is None:
            return None
        groups = _attr(node, "group", 1) or 1
        k = math.prod(w[2:])
        if node.op_type == "Conv":  # w [C_out, C_in/g, k...]
            return 2 * math.prod(y) * w[1] * k
        # ConvTranspose: w [C_in, C_out/g, k...]; every input pixel scatters a k-window
        return 2 * math.prod(x) * w[1] * k
    a, b = ins[0], ins[1]
    if a is None or b is None:
        return None
    if node.op_type == "Gemm":
        ta, tb = _attr(node, "transA", 0), _attr(node, "transB", 0)
        m, kk = (a[1], a[0]) if ta else (a[0], a[1])
        n = b[0] if tb else b[1]
        return 2 * m * kk * n
    # MatMul with numpy broadcasting of the leading dims
    import numpy as np  # noqa: PLC0415

    a = [1] + a if len(a) == 1 else a
    b = b + [1] if len(b) == 1 else b
    lead = math.prod(np.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2])))
    return 2 * lead * a[-2] * a[-1] * b[-1]
