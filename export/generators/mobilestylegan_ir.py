"""MobileStyleGAN's weights from its OpenVINO IR (the `random-face` wheel), numpy only.

The wheel ships two IRs traced from MobileStyleGAN.pytorch (bes-dev) for inference:
  MappingNetwork   var [1, 512] -> style [1, 512]: pixel norm (eps 1e-8), then 8 x (MatMul with
                   W^T, + b, LeakyReLU 0.2, * sqrt 2); the equalised-lr scales already folded
                   into W and b.
  SynthesisNetwork style [1, 512] -> img [1, 3, 1024, 1024]: constant input, a modulated 3x3 conv,
                   7 blocks (modulated inverse-DWT upsample, two modulated depthwise-separable
                   convs), a modulated 1x1 to-wavelet conv and a final inverse Haar DWT. The
                   per-channel demodulation (style independent here) is folded into the
                   pointwise weights, and each layer's noise map times its strength into a
                   constant [1, 1, H, W]; the intermediate to-image layers, unused by `img`,
                   were pruned away.

Named constants keep the PyTorch module names (`m.layers.3.conv1.conv.weight_dw`); folded ones do
not (`Mul_106_copy`, `1560`), so those are found by their place in the graph: the pointwise
weight of a block conv is the Convolution fed by that conv's depthwise GroupConvolution, its
noise the constant added right after. Every structural fact the PyTorch model relies on is
checked (activation slopes, modulation scales, the Haar filters, layer counts), so an IR of
another model is refused with one line instead of converted into nonsense.

    state = state_from_ir(mapping_xml, synthesis_xml)      # {our key: float32 numpy array}
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from ...engine.errors import PulseError
from ..openvino_ir import IRGraph, IRLayer

CHANNELS = (512, 512, 512, 512, 512, 256, 128, 64)  # side 4, then blocks 8..512 (MobileStyleGAN 1024)
LATENT_DIM = 512
MAPPING_LAYERS = 8
SLOPE = 0.2
HAAR = 1.0 / math.sqrt(2.0)
_TOL = 1e-5


def expected_shapes(channels=CHANNELS, latent_dim: int = LATENT_DIM) -> dict[str, tuple]:
    """Every tensor of the converted state, in order: key -> shape. The layout of
    MobileStyleGANGenerator.state_dict() minus the Gaussian-fit buffers."""
    d = latent_dim
    shapes: dict[str, tuple] = {}
    for i in range(MAPPING_LAYERS):
        shapes[f"mapping.dense{i}.weight"] = (d, d)
        shapes[f"mapping.dense{i}.bias"] = (d,)
    c0 = channels[0]
    shapes["input.const"] = (1, c0, 4, 4)
    shapes.update({"conv1.modulation.weight": (c0, d), "conv1.modulation.bias": (c0,),
                   "conv1.weight": (c0, c0, 3, 3), "conv1.noise": (1, 1, 4, 4), "conv1.bias": (c0,)})
    cin = c0
    for i, cout in enumerate(channels[1:]):
        side = 8 << i
        p = f"layers.{i}"
        shapes[f"{p}.up.modulation.weight"] = (cin, d)
        shapes[f"{p}.up.modulation.bias"] = (cin,)
        for j, (a, b) in enumerate(((cin // 4, cout), (cout, cout)), start=1):
            q = f"{p}.conv{j}"
            shapes.update({f"{q}.modulation.weight": (a, d), f"{q}.modulation.bias": (a,),
                           f"{q}.weight_dw": (a, 1, 3, 3), f"{q}.weight_pw": (b, a, 1, 1),
                           f"{q}.noise": (1, 1, side, side), f"{q}.bias": (b,)})
        cin = cout
    shapes.update({"to_img.modulation.weight": (cin, d), "to_img.modulation.bias": (cin,),
                   "to_img.weight": (12, cin, 1, 1), "to_img.bias": (12,)})
    return shapes


def state_from_ir(mapping_xml: str | Path, synthesis_xml: str | Path) -> dict[str, np.ndarray]:
    """Read both IRs and return the generator's tensors (float32, our key layout: expected_shapes()).
    PulseError (one line) when a file is unreadable or the graph is not MobileStyleGAN 1024's."""
    state = mapping_from_ir(IRGraph.load(mapping_xml))
    state.update(synthesis_from_ir(IRGraph.load(synthesis_xml)))
    expected = expected_shapes()
    for key, shape in expected.items():
        if key not in state:
            raise PulseError(f"the MobileStyleGAN IR lacks {key} (an IR of another model?)")
        if tuple(state[key].shape) != shape:
            raise PulseError(f"the MobileStyleGAN IR's {key} has shape {tuple(state[key].shape)}, expected {shape} "
                             "(an IR of another model?)")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise PulseError(f"the MobileStyleGAN IR has an unexpected tensor {extra[0]} (an IR of another model?)")
    return {k: np.ascontiguousarray(state[k], dtype=np.float32) for k in expected}


# -- mapping ----------------------------------------------------------------------------------------
def mapping_from_ir(g: IRGraph) -> dict[str, np.ndarray]:
    """dense{i}.weight [D, D] (stored as MatMul's B with transpose_b) and dense{i}.bias [D]."""
    where = f"{g.path} (mapping network)"
    params = g.parameters()
    if len(params) != 1 or len(params[0].out_shapes.get("0", ())) != 2:
        raise PulseError(f"{where}: expected one [1, D] input, found {[p.name for p in params]} (an IR of another model?)")
    matmuls = g.of_type("MatMul")
    if len(matmuls) != MAPPING_LAYERS:
        raise PulseError(f"{where}: expected {MAPPING_LAYERS} dense layers, found {len(matmuls)} (an IR of another model?)")
    state = {}
    for i, mm in enumerate(matmuls):
        weight = g.const_input(mm, 1)
        if weight is None or weight.ndim != 2 or mm.attrs.get("transpose_b") != "true":
            raise PulseError(f"{where}: dense layer {i} is not x @ W^T with a constant W")
        add = _single_user(g, mm, "Add", where)
        bias = _const_through_reshape(g, add, where)
        prelu = _single_user(g, add, "PReLU", where)
        _check_scalar(g.const_input(prelu, 1), SLOPE, f"{where}: LeakyReLU slope of dense layer {i}")
        mul = _single_user(g, prelu, "Multiply", where)
        _check_scalar(_other_const(g, mul, prelu), math.sqrt(2.0), f"{where}: activation gain of dense layer {i}")
        state[f"mapping.dense{i}.weight"] = weight
        state[f"mapping.dense{i}.bias"] = bias.reshape(-1)
    return state


# -- synthesis --------------------------------------------------------------------------------------
_NAMED = [  # IR constant name -> our key
    (re.compile(r"^m\.input\.input$"), lambda m: "input.const"),
    (re.compile(r"^m\.conv1\.conv\.modulation\.(weight|bias)$"), lambda m: f"conv1.modulation.{m[1]}"),
    (re.compile(r"^m\.conv1\.bias$"), lambda m: "conv1.bias"),
    (re.compile(r"^m\.layers\.(\d+)\.up\.modulation\.(weight|bias)$"), lambda m: f"layers.{m[1]}.up.modulation.{m[2]}"),
    (re.compile(r"^m\.layers\.(\d+)\.(conv[12])\.conv\.modulation\.(weight|bias)$"),
     lambda m: f"layers.{m[1]}.{m[2]}.modulation.{m[3]}"),
    (re.compile(r"^m\.layers\.(\d+)\.(conv[12])\.conv\.weight_dw$"), lambda m: f"layers.{m[1]}.{m[2]}.weight_dw"),
    (re.compile(r"^m\.layers\.(\d+)\.(conv[12])\.bias$"), lambda m: f"layers.{m[1]}.{m[2]}.bias"),
    (re.compile(r"^m\.layers\.\d+\.to_img\.conv\.modulation\.(weight|bias)$"), lambda m: f"to_img.modulation.{m[1]}"),
    (re.compile(r"^m\.layers\.\d+\.to_img\.conv\.weight$"), lambda m: "to_img.weight"),
    (re.compile(r"^m\.layers\.\d+\.to_img\.bias$"), lambda m: "to_img.bias"),
]


def synthesis_from_ir(g: IRGraph) -> dict[str, np.ndarray]:
    """The synthesis tensors: named constants by name, folded ones by their place in the graph.
    Also checks the modulation scales, activation slopes and inverse-DWT filters the PyTorch
    model hard-codes."""
    where = f"{g.path} (synthesis network)"
    params = g.parameters()
    if len(params) != 1 or params[0].out_shapes.get("0") != (1, LATENT_DIM):
        raise PulseError(f"{where}: expected one style input [1, {LATENT_DIM}] (an IR of another model?)")
    state: dict[str, np.ndarray] = {}
    for layer in g.layers.values():
        if layer.type != "Const":
            continue
        for pattern, key in _NAMED:
            m = pattern.match(layer.name)
            if m:
                value = g.const(layer.id)
                if key(m).endswith((".bias",)) or key(m).endswith("modulation.bias"):
                    value = value.reshape(-1)
                if ".weight_dw" in key(m):
                    value = value.reshape(value.shape[0], 1, value.shape[-2], value.shape[-1])  # OV [G,1,1,k,k]
                state[key(m)] = value
                break
    convs = g.of_type("Convolution")
    blocks = len(CHANNELS) - 1
    if len(convs) != 2 * blocks + 2:
        raise PulseError(f"{where}: expected {2 * blocks + 2} convolutions, found {len(convs)} (an IR of another model?)")
    for n, conv in enumerate(convs):
        weight = g.const_input(conv, 1)
        if weight is None:
            raise PulseError(f"{where}: convolution {conv.name!r} has no constant weight")
        if n == len(convs) - 1:  # the to-wavelet 1x1 conv: named, checked above
            continue
        src = g.source(conv, 0)
        if n == 0:
            prefix = "conv1"
            state["conv1.weight"] = weight
        else:
            dw_name = g.source(src, 1).name if src.type == "GroupConvolution" else ""
            m = re.match(r"^m\.layers\.(\d+)\.(conv[12])\.conv\.weight_dw$", dw_name)
            if not m:
                raise PulseError(f"{where}: convolution {conv.name!r} is not fed by a named depthwise conv "
                                 "(an IR of another model?)")
            prefix = f"layers.{m[1]}.{m[2]}"
            state[f"{prefix}.weight_pw"] = weight
        noise_add = _single_user(g, conv, "Add", where)
        noise = _other_const(g, noise_add, conv)
        if noise is None or noise.ndim != 4 or noise.shape[:2] != (1, 1):
            raise PulseError(f"{where}: no noise constant after convolution {conv.name!r}")
        state[f"{prefix}.noise"] = noise
        bias_add = _single_user(g, noise_add, "Add", where)
        prelu = _single_user(g, bias_add, "PReLU", where)
        _check_scalar(g.const_input(prelu, 1), SLOPE, f"{where}: LeakyReLU slope after {conv.name!r}")
    _check_modulation_scales(g, where)
    _check_haar(g, where)
    return state


def modulation_scale(key: str, shapes: dict[str, tuple] | None = None) -> float | None:
    """The constant the PyTorch model multiplies a layer's modulation by: 1/sqrt(fan_in) of its
    conv (3x3 convs: Cin*9; the 1x1 to-wavelet conv: Cin); None for the upsample's."""
    shapes = shapes or expected_shapes()
    if ".up." in key:
        return None
    cin = shapes[key][0]  # modulation weight [Cin, D]
    return 1.0 / math.sqrt(cin if key.startswith("to_img") else cin * 9)


def _check_modulation_scales(g: IRGraph, where: str) -> None:
    """Each modulation MatMul -> Add bias -> Reshape [1, C, 1, 1] -> (Multiply by our scale)."""
    for const in [l for l in g.layers.values() if l.type == "Const" and l.name.endswith("modulation.weight")]:
        ir_name = const.name
        key = next((k(p.match(ir_name)) for p, k in _NAMED if p.match(ir_name)), None)
        if key is None:
            raise PulseError(f"{where}: unknown modulation {ir_name} (an IR of another model?)")
        users = g.users(const)
        if len(users) != 1 or users[0].type != "MatMul":
            raise PulseError(f"{where}: modulation {ir_name} is not used by one MatMul")
        add = _single_user(g, users[0], "Add", where)
        reshape = _single_user(g, add, "Reshape", where)
        after = g.users(reshape)
        want = modulation_scale(key)
        scale_muls = [u for u in after if u.type == "Multiply" and _other_const(g, u, reshape) is not None]
        if want is None:
            if scale_muls:
                raise PulseError(f"{where}: unexpected scale on {ir_name}")
            continue
        if len(scale_muls) != 1:
            raise PulseError(f"{where}: no modulation scale after {ir_name}")
        _check_scalar(_other_const(g, scale_muls[0], reshape), want, f"{where}: modulation scale of {ir_name}")


def _check_haar(g: IRGraph, where: str) -> None:
    """Every transposed conv is a 2-tap Haar synthesis filter, +-1/sqrt(2), low = (1, 1), high = (1, -1)."""
    deconvs = g.of_type("GroupConvolutionBackpropData")
    if len(deconvs) != 6 * len(CHANNELS):  # 6 per inverse DWT: 7 upsamples + the final one
        raise PulseError(f"{where}: expected {6 * len(CHANNELS)} inverse-DWT filters, found {len(deconvs)}")
    for d in deconvs:
        w = g.const_input(d, 1)
        if w is None or w.size % 2 or w.shape[-2] * w.shape[-1] != 2:
            raise PulseError(f"{where}: {d.name!r} is not a 2-tap filter")
        taps = w.reshape(-1, 2)
        ok_low = np.allclose(taps, [HAAR, HAAR], atol=_TOL)
        ok_high = np.allclose(taps, [HAAR, -HAAR], atol=_TOL)
        if not (ok_low or ok_high) or d.attrs.get("strides", "").replace(" ", "") not in ("2,1", "1,2"):
            raise PulseError(f"{where}: {d.name!r} is not a Haar inverse-DWT filter (an IR of another model?)")


# -- graph helpers ----------------------------------------------------------------------------------
def _single_user(g: IRGraph, layer: IRLayer, kind: str, where: str) -> IRLayer:
    users = [u for u in g.users(layer) if u.type not in ("ShapeOf",)]
    if len(users) != 1 or users[0].type != kind:
        found = ", ".join(u.type for u in users) or "nothing"
        raise PulseError(f"{where}: {layer.name!r} feeds {found}, expected one {kind} (an IR of another model?)")
    return users[0]


def _other_const(g: IRGraph, layer: IRLayer, not_from: IRLayer) -> np.ndarray | None:
    for k, (src, _) in enumerate(layer.inputs):
        if src != not_from.id:
            value = g.const_input(layer, k)
            if value is not None:
                return value
    return None


def _const_through_reshape(g: IRGraph, add: IRLayer, where: str) -> np.ndarray:
    for k in range(len(add.inputs)):
        src = g.source(add, k)
        if src.type == "Reshape" and g.source(src, 0).type == "Const":
            return g.const(g.source(src, 0).id)
        if src.type == "Const":
            return g.const(src.id)
    raise PulseError(f"{where}: no bias constant for {add.name!r}")


def _check_scalar(value, want: float, what: str) -> None:
    if value is None or value.size != 1 or abs(float(value.reshape(-1)[0]) - want) > _TOL * max(1.0, abs(want)):
        got = None if value is None else value.reshape(-1)[:4].tolist()
        raise PulseError(f"{what} is {got}, expected {want:.6g} (an IR of another model?)")
