"""The FLOP floor of an ONNX graph: multiply-adds of its convolutions, transposed convolutions
and matrix products, counted from the graph itself at a given batch size.

Napkin math, per node (2 FLOPs per multiply-add):
  Conv           2 * N * C_out * H_out * W_out * (C_in / groups) * kH * kW
  ConvTranspose  2 * N * C_in  * H_in  * W_in  * (C_out / groups) * kH * kW
  MatMul / Gemm  2 * prod(batch dims) * M * K * N
Everything else (elementwise, reductions, pads) is ignored: it is memory-bound and is what a
"fraction of the FLOP floor" figure is meant to expose.

Structural zeros: a Conv whose weight is a constant expression (computed from initializers
only, e.g. the sub-pixel form of a transposed convolution, export.decompositions.
conv_transpose_as_conv, whose phase kernels hold zero taps) is counted by its nonzero weights,
2 * N * H_out * W_out * nnz(W): the multiply-adds the operation needs, the same count as the
ConvTranspose it replaces. The floor is what the maths needs, not what a kernel happens to run.
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


def count_flops(model_or_path, batch: int = 1, run_shapes: bool = True) -> dict:
    """FLOPs of one run of an ONNX graph at batch size `batch`.

    Returns {"total": int, "by_op": {op_type: int}, "uncounted": [node names whose shapes
    could not be found]}. Shapes come from ONNX shape inference (the dynamic leading dimension
    of every tensor is taken as `batch`); where it gives none, and run_shapes, from ONNX
    Runtime runs of the graph at batch 1 and 2 (_flops_from_runs).
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
    uncounted: list = []
    density = _constant_weight_density(g, list(model.opset_import))
    for node in g.node:
        if node.op_type not in COUNTED:
            continue
        flops = _node_flops(node, shapes)
        if flops is not None and node.op_type == "Conv" and node.input[1] in density:
            flops = round(flops * density[node.input[1]])
        if flops is None:
            uncounted.append(node)
            continue
        by_op[node.op_type] = by_op.get(node.op_type, 0) + flops
    if uncounted and run_shapes:
        # ONNX shape inference loses some shapes in the traced step graphs (the backward half of
        # dcgan's step was uncounted, half its FLOPs): take them from a run instead.
        measured = _flops_from_runs(model, uncounted, batch, density)
        if measured is not None:
            for op, f in measured.items():
                by_op[op] = by_op.get(op, 0) + f
            uncounted = []
    return {"total": sum(by_op.values()), "by_op": by_op, "uncounted": [n.name or n.op_type for n in uncounted]}


def _flops_from_runs(model, nodes, batch: int, density: dict) -> dict | None:
    """FLOPs of `nodes` at `batch` from the shapes of one ONNX Runtime run at batch 1 and one at
    batch 2 (random inputs; every tensor the nodes read or write added as a graph output), then
    extended linearly in the batch (every count is affine in it: the graphs' batch is the rows
    of one step). None when onnxruntime is missing or a run fails."""
    try:
        import numpy as np  # noqa: PLC0415
        import onnx  # noqa: PLC0415
        import onnxruntime as ort  # noqa: PLC0415
    except ImportError:
        return None
    names = sorted({t for n in nodes for t in list(n.input[:2]) + [n.output[0]] if t})
    per_batch = []
    for b in (1, 2):
        m = _with_batch(model, b)
        have = {o.name for o in m.graph.output}
        m.graph.output.extend(onnx.ValueInfoProto(name=t) for t in names if t not in have)
        inits = {i.name for i in m.graph.initializer}
        rng = np.random.default_rng(0)
        feeds = {}
        for vi in m.graph.input:
            if vi.name in inits:
                continue
            t = vi.type.tensor_type
            shape = [d.dim_value if d.HasField("dim_value") else b for d in t.shape.dim]
            dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)
            feeds[vi.name] = (rng.random(shape) + 0.5).astype(dtype) if np.issubdtype(dtype, np.floating) \
                else np.ones(shape, dtype)
        try:
            so = ort.SessionOptions()
            so.log_severity_level = 4
            sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
            outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
        except Exception:  # noqa: BLE001  (best effort: the nodes stay uncounted)
            return None
        shapes = {t: list(outs[t].shape) for t in names if t in outs}
        for i in model.graph.initializer:
            shapes.setdefault(i.name, list(i.dims))
        counts: dict = {}
        for node in nodes:
            f = _node_flops(node, shapes)
            if f is None:
                return None
            if node.op_type == "Conv" and node.input[1] in density:
                f = round(f * density[node.input[1]])
            counts[node.op_type] = counts.get(node.op_type, 0) + f
        per_batch.append(counts)
    one, two = per_batch
    return {op: one[op] + (batch - 1) * (two[op] - one[op]) for op in one}


def _constant_weight_density(g, opset_import) -> dict[str, float]:
    """{weight name: fraction of nonzero entries} for the Conv weights that are constant
    expressions but not initializers (their whole ancestry is initializers and Constant nodes),
    evaluated with onnx's reference evaluator; others are left out (counted dense)."""
    import numpy as np  # noqa: PLC0415
    import onnx  # noqa: PLC0415
    from onnx import helper  # noqa: PLC0415

    producer = {o: n for n in g.node for o in n.output}
    inits = {i.name: i for i in g.initializer}
    out: dict[str, float] = {}
    for conv in g.node:
        if conv.op_type != "Conv" or len(conv.input) < 2 or conv.input[1] in inits or conv.input[1] in out:
            continue
        needed, stack, ok = [], [conv.input[1]], True
        seen: set = set()
        while stack and ok:
            name = stack.pop()
            if name in seen or name in inits or name == "":
                continue
            seen.add(name)
            node = producer.get(name)
            if node is None or len(needed) > 64:  # a graph input, or not a small weight expression
                ok = False
                break
            needed.append(node)
            stack.extend(node.input)
        if not ok:
            continue
        order = [n for n in g.node if any(n is m for m in needed)]  # graph order is topological
        used = {i for n in order for i in n.input}
        sub = helper.make_graph(order, "weight", [], [helper.make_tensor_value_info(conv.input[1], onnx.TensorProto.UNDEFINED, None)],
                                [inits[i] for i in used if i in inits])
        try:
            from onnx.reference import ReferenceEvaluator  # noqa: PLC0415

            model = helper.make_model(sub, opset_imports=opset_import)
            (w,) = ReferenceEvaluator(model).run(None, {})
            w = np.asarray(w)
            if w.size:
                out[conv.input[1]] = float(np.count_nonzero(w)) / w.size
        except Exception:  # noqa: BLE001  (best effort: the weight is counted dense)
            continue
    return out


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
