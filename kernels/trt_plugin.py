"""TensorRT integration of the downscale kernels: Python plugins with ahead-of-time (AOT)
implementations (TensorRT 10.x / 11 `tensorrt.plugin`, the "quickly deployable plugin" API),
and an ONNX rewrite that puts the plugin in place of export/losses.downscale's subgraph.

- register_plugins(): registers `pulse_trt::downscale` (x [N, C, H, W] -> D(x) float32) and
  `pulse_trt::downscale_transpose` (g [N, C, h, w] -> D^T(g) [N, C, h f, w f]). Their AOT
  implementations return our compute_75 PTX (build/kernels/pulse_kernels.ptx), the kernel name
  and launch parameters, so TensorRT embeds the PTX in the engine: no Python at run time.
- replace_downsample_loss(model): Pad(reflect) -> Conv(depthwise, 4f x 1, stride (f, 1)) ->
  Pad(reflect) -> Conv(1 x 4f, stride (1, f)) becomes one `pulse_trt::downscale` node.

Why D and D^T rather than one fused downsample+loss plugin: an AOT plugin is one kernel launch,
and the per-image loss needs every block of D done before dL/dLR exists (a grid-wide
dependency; the loader path uses a threadfence reduction on zeroed counters, which a TRT AOT
plugin has no way to zero). TensorRT fuses the elementwise loss between the two plugins.
onnx and tensorrt are imported only inside the functions that need them.
"""
from __future__ import annotations

from ..engine.bicubic import bicubic_taps, padding
from ..engine.errors import PulseError
from .downsample_loss import THREADS
from .loader import ptx_path, read_build

NAMESPACE = "pulse_trt"
DOWNSCALE = f"{NAMESPACE}::downscale"
TRANSPOSE = f"{NAMESPACE}::downscale_transpose"
GATHER_ROWS = 4        # LR rows per block of downscale_gather (shared: 4 * (4f + 4 W) bytes)
TRANSPOSE_ROWS = 64    # HR rows per block of downscale_transpose (<= 8 f, see transpose_config)

_registered = False


def _trt():
    try:
        import tensorrt as trt  # noqa: PLC0415
        import tensorrt.plugin as trtp  # noqa: PLC0415
    except ImportError:
        raise PulseError("TensorRT is not installed: pip install 'pulse-trt[trt]' on a GPU machine") from None
    return trt, trtp


def register_plugins(ptx: str | None = None) -> None:
    """Register both plugins with TensorRT (idempotent). `ptx` defaults to the CMake build's
    compute_75 PTX; PulseError with the build command when it is missing."""
    global _registered
    if _registered:
        return
    trt, trtp = _trt()
    ptx_text = ptx if ptx is not None else read_build(ptx_path()).decode()
    suffix = {trt.float32: "f32", trt.float16: "f16"}

    @trtp.register(DOWNSCALE)
    def downscale_desc(x: trtp.TensorDesc, factor: int) -> trtp.TensorDesc:
        y = x.like()
        y.dtype = trt.float32
        y.shape_expr[2] = x.shape_expr[2] // factor
        y.shape_expr[3] = x.shape_expr[3] // factor
        return y

    @trtp.autotune(DOWNSCALE)
    def downscale_formats(x: trtp.TensorDesc, factor: int, outputs):
        return [trtp.AutoTuneCombination("FP32|FP16, FP32", "LINEAR")]

    @trtp.aot_impl(DOWNSCALE)
    def downscale_aot(x: trtp.TensorDesc, factor: int, outputs, tactic: int):
        n, c, h, w = (x.shape_expr[i] for i in range(4))
        params = trtp.KernelLaunchParams()
        params.grid_x = 1
        params.grid_y = trtp.cdiv(h // factor, GATHER_ROWS)
        params.grid_z = n * c
        params.block_x = THREADS
        params.shared_mem = 4 * (4 * factor + GATHER_ROWS * w)
        # downscale_gather_*(x, N, C, H, W, h, TO, y): ints between inputs and outputs
        extra = trtp.SymIntExprs(6)
        for i, e in enumerate((n, c, h, w, h // factor, GATHER_ROWS)):
            extra[i] = trtp.SymInt32(e)
        return f"downscale_gather_{suffix[x.dtype]}", ptx_text, params, extra

    @trtp.register(TRANSPOSE)
    def transpose_desc(g: trtp.TensorDesc, factor: int) -> trtp.TensorDesc:
        y = g.like()
        y.shape_expr[2] = g.shape_expr[2] * factor
        y.shape_expr[3] = g.shape_expr[3] * factor
        return y

    @trtp.autotune(TRANSPOSE)
    def transpose_formats(g: trtp.TensorDesc, factor: int, outputs):
        return [trtp.AutoTuneCombination("FP32, FP32", "LINEAR")]

    @trtp.aot_impl(TRANSPOSE)
    def transpose_aot(g: trtp.TensorDesc, factor: int, outputs, tactic: int):
        n, c, h, w = (g.shape_expr[i] for i in range(4))
        rows = min(TRANSPOSE_ROWS, 8 * factor)
        nr, ncol = -(-rows // factor) + 6, -(-THREADS // factor) + 6
        params = trtp.KernelLaunchParams()
        params.grid_x = trtp.cdiv(w * factor, THREADS)
        params.grid_y = trtp.cdiv(h * factor, rows)
        params.grid_z = n * c
        params.block_x = THREADS
        params.shared_mem = 4 * (4 * factor + nr * ncol + nr * THREADS)
        # downscale_transpose_f32(g, N, C, H, W, h, RT, out)
        extra = trtp.SymIntExprs(6)
        for i, e in enumerate((n, c, h * factor, w * factor, h, rows)):
            extra[i] = trtp.SymInt32(e)
        return "downscale_transpose_f32", ptx_text, params, extra

    _registered = True


# ---- ONNX rewrite ------------------------------------------------------------------------------

def _const_values(model, name: str):
    """numpy value of an initializer or Constant node output, or None."""
    from onnx import numpy_helper  # noqa: PLC0415

    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            for a in node.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
    return None


def _attr(node, name, default=None):
    from onnx import helper  # noqa: PLC0415

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _is_reflect_pad(model, node, axis: int, factor: int | None) -> bool:
    if node.op_type != "Pad" or _attr(node, "mode", b"constant") not in (b"reflect", "reflect"):
        return False
    if len(node.input) > 3 and node.input[3]:
        return False  # Pad with `axes`: not what losses.downscale exports
    pads = _const_values(model, node.input[1]) if len(node.input) > 1 else None
    if pads is None or len(pads) != 8:
        return False
    want = [0] * 8
    if factor is not None:
        before, after = padding(factor)
        want[axis], want[axis + 4] = before, after
        return list(map(int, pads)) == want
    others = [int(p) for i, p in enumerate(pads) if i % 4 != axis]
    return not any(others)


def _conv_factor(model, node, axis: int) -> int | None:
    """f if `node` is the depthwise bicubic Conv along `axis` (2: rows, 3: columns), else None."""
    if node.op_type != "Conv" or len(node.input) < 2 or (len(node.input) > 2 and node.input[2]):
        return None
    strides = list(_attr(node, "strides", [1, 1]))
    f = strides[axis - 2]
    if strides[3 - axis] != 1 or any(_attr(node, "pads", [0, 0, 0, 0])) or list(_attr(node, "dilations", [1, 1])) != [1, 1]:
        return None
    w = _const_values(model, node.input[1])
    if w is None or w.ndim != 4 or w.shape[1] != 1 or int(_attr(node, "group", 1)) != w.shape[0]:
        return None
    taps = w.reshape(w.shape[0], -1)
    want_shape = (4 * f, 1) if axis == 2 else (1, 4 * f)
    if tuple(w.shape[2:]) != want_shape:
        return None
    import numpy as np  # noqa: PLC0415

    return f if np.allclose(taps, bicubic_taps(f)[None, :], rtol=1e-3, atol=1e-6) else None


def replace_downsample_loss(model):
    """Replace every D subgraph of an ONNX model (export/losses.downscale as exported:
    Pad(reflect, rows) -> Conv(depthwise 4f x 1, stride (f, 1)) -> Pad(reflect, columns) ->
    Conv(1 x 4f, stride (1, f))) with one `pulse_trt::downscale` node (attribute factor = f,
    plugin_namespace / plugin_version for TensorRT's ONNX parser). Weights and pads are checked
    against engine.bicubic; intermediates used elsewhere keep the original nodes. Returns a new
    ModelProto (the input is not modified); the result runs on TensorRT with register_plugins()."""
    import onnx  # noqa: PLC0415
    from onnx import helper  # noqa: PLC0415

    model = onnx.ModelProto.FromString(model.SerializeToString())
    nodes = list(model.graph.node)
    consumers: dict[str, list] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    producer = {out: node for node in nodes for out in node.output}
    graph_outputs = {o.name for o in model.graph.output}
    remove, replacements = set(), {}
    for conv_w in nodes:
        f = _conv_factor(model, conv_w, axis=3)
        if f is None:
            continue
        chain = [conv_w]
        for want in ("Pad", "Conv", "Pad"):
            prev = producer.get(chain[-1].input[0])
            if prev is None or prev.op_type != want:
                break
            chain.append(prev)
        if len(chain) != 4:
            continue
        conv_w, pad_w, conv_h, pad_h = chain
        if not (_is_reflect_pad(model, pad_w, 3, f) and _conv_factor(model, conv_h, 2) == f
                and _is_reflect_pad(model, pad_h, 2, f)):
            continue
        inner = [pad_h.output[0], conv_h.output[0], pad_w.output[0]]
        if any(len(consumers.get(t, [])) != 1 or t in graph_outputs for t in inner):
            continue
        remove.update(id(n) for n in chain)
        replacements[id(pad_h)] = helper.make_node(
            "downscale", [pad_h.input[0]], [conv_w.output[0]], name=f"pulse_trt_downscale_{len(replacements)}",
            domain=NAMESPACE, factor=f, plugin_namespace=NAMESPACE, plugin_version="1")
    if not replacements:
        return model
    new_nodes = []
    for node in nodes:  # the plugin node takes the place of the first Pad: topological order kept
        if id(node) in replacements:
            new_nodes.append(replacements[id(node)])
        elif id(node) not in remove:
            new_nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    if not any(op.domain == NAMESPACE for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid(NAMESPACE, 1))
    return model
