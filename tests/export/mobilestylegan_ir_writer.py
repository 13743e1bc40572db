"""Write an OpenVINO IR (xml + bin) in the layout of the random-face wheel's MobileStyleGAN
networks, from any state in our key layout (mobilestylegan_ir.expected_shapes): the same op
types, constant names, folded noise / pointwise constants under anonymous names, modulation
scales and Haar inverse-DWT filters as GroupConvolutionBackpropData. Tests use it to convert
random weights without downloading anything, and (with openvino installed) to run the written IR
against the PyTorch model.

    write_mapping_ir(state, dir / "MappingNetwork.xml")
    write_synthesis_ir(state, dir / "SynthesisNetwork.xml", channels=CHANNELS)
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from pulse_trt.export.generators.mobilestylegan_ir import CHANNELS, SLOPE, expected_shapes, modulation_scale

_PREC = {np.float32: ("f32", "FP32"), np.int64: ("i64", "I64")}


class _IR:
    def __init__(self, name: str):
        self.name = name
        self.layers: list[ET.Element] = []
        self.edges: list[tuple[int, int, int, int]] = []
        self.blob = bytearray()
        self.shapes: dict[tuple[int, int], tuple] = {}
        self.anon = 1000

    def _layer(self, kind: str, name: str, data: dict | None, inputs: list[tuple[int, int]], out_shapes: list[tuple],
               out_dtype=np.float32) -> list[tuple[int, int]]:
        lid = len(self.layers)
        el = ET.Element("layer", id=str(lid), name=name, type=kind, version="opset1")
        if data is not None:
            ET.SubElement(el, "data", {k: str(v) for k, v in data.items()})
        if inputs:
            inp = ET.SubElement(el, "input")
            for k, src in enumerate(inputs):
                port = ET.SubElement(inp, "port", id=str(k), precision="FP32")
                for d in self.shapes[src]:
                    ET.SubElement(port, "dim").text = str(d)
                self.edges.append((src[0], src[1], lid, k))
        outs = []
        if out_shapes:
            out = ET.SubElement(el, "output")
            for j, shape in enumerate(out_shapes):
                pid = len(inputs) + j
                port = ET.SubElement(out, "port", id=str(pid), precision=_PREC[out_dtype][1])
                for d in shape:
                    ET.SubElement(port, "dim").text = str(d)
                self.shapes[(lid, pid)] = tuple(shape)
                outs.append((lid, pid))
        self.layers.append(el)
        return outs

    def const(self, value, name: str | None = None) -> tuple[int, int]:
        value = np.ascontiguousarray(value)
        dtype = np.int64 if value.dtype.kind in "iu" else np.float32
        value = value.astype(dtype)
        if name is None:
            name, self.anon = str(self.anon), self.anon + 1
        offset = len(self.blob)
        self.blob += value.tobytes()
        data = {"element_type": _PREC[dtype][0], "shape": ", ".join(map(str, value.shape)),
                "offset": offset, "size": value.nbytes}
        lid = len(self.layers)
        el = ET.Element("layer", id=str(lid), name=name, type="Const", version="opset1")
        ET.SubElement(el, "data", {k: str(v) for k, v in data.items()})
        out = ET.SubElement(el, "output")
        port = ET.SubElement(out, "port", id="0", precision=_PREC[dtype][1])
        for d in value.shape:
            ET.SubElement(port, "dim").text = str(d)
        self.shapes[(lid, 0)] = tuple(value.shape)
        self.layers.append(el)
        return (lid, 0)

    def op(self, kind: str, inputs, out_shape, data=None, name=None, n_out: int = 1):
        if name is None:
            name, self.anon = f"{kind}_{self.anon}", self.anon + 1
        shapes = out_shape if n_out > 1 else [out_shape]
        outs = self._layer(kind, name, data, list(inputs), shapes)
        return outs if n_out > 1 else outs[0]

    def write(self, xml_path: Path) -> None:
        net = ET.Element("net", name=self.name, version="10")
        layers = ET.SubElement(net, "layers")
        layers.extend(self.layers)
        edges = ET.SubElement(net, "edges")
        for fl, fp, tl, tp in self.edges:
            ET.SubElement(edges, "edge", {"from-layer": str(fl), "from-port": str(fp), "to-layer": str(tl), "to-port": str(tp)})
        ET.ElementTree(net).write(xml_path)
        Path(xml_path).with_suffix(".bin").write_bytes(bytes(self.blob))


_B = {"auto_broadcast": "numpy"}


def _conv_attrs(pad: int) -> dict:
    return {"strides": "1, 1", "dilations": "1, 1", "pads_begin": f"{pad}, {pad}", "pads_end": f"{pad}, {pad}",
            "auto_pad": "explicit"}


def _bcast(a: tuple, b: tuple) -> tuple:
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b
    return tuple(max(x, y) for x, y in zip(a, b))


def _mul(ir, a, b):
    return ir.op("Multiply", [a, b], _bcast(ir.shapes[a], ir.shapes[b]), _B)


def _add(ir, a, b):
    return ir.op("Add", [a, b], _bcast(ir.shapes[a], ir.shapes[b]), _B)


def write_mapping_ir(state: dict, xml_path: Path, layers: int = 8) -> None:
    d = state["mapping.dense0.weight"].shape[1]
    ir = _IR("MappingNetwork")
    x = ir.op("Parameter", [], (1, d), {"shape": f"1, {d}", "element_type": "f32"}, name="var")
    sq = ir.op("Power", [x, ir.const(np.array([[2.0]]))], (1, d), _B)
    mean = ir.op("ReduceMean", [sq, ir.const(np.array([1]))], (1, 1), {"keep_dims": "true"})
    inv = ir.op("Power", [_add(ir, mean, ir.const(np.array([[1e-8]]))), ir.const(np.array([[-0.5]]))], (1, 1), _B)
    h = _mul(ir, x, inv)
    for i in range(layers):
        w, b = state[f"mapping.dense{i}.weight"], state[f"mapping.dense{i}.bias"]
        mm = ir.op("MatMul", [h, ir.const(w)], (1, w.shape[0]), {"transpose_a": "false", "transpose_b": "true"})
        bias = ir.op("Reshape", [ir.const(b), ir.const(np.array([1, b.shape[0]]))], (1, b.shape[0]), {"special_zero": "true"})
        act = ir.op("PReLU", [_add(ir, mm, bias), ir.const(np.array([SLOPE]))], (1, w.shape[0]))
        h = _mul(ir, act, ir.const(np.array([[math.sqrt(2.0)]])))
    ir._layer("Result", "style/sink_port_0", None, [h], [])
    ir.write(xml_path)


def _ir_name(key: str) -> str:
    """Our key -> the IR's constant name (MobileStyleGAN.pytorch module names under `m.`)."""
    if key == "input.const":
        return "m.input.input"
    if key.startswith("conv1.modulation"):
        return "m.conv1.conv." + key[len("conv1."):]
    if key.startswith("to_img."):
        last = len(CHANNELS) - 2
        rest = key[len("to_img."):]
        return f"m.layers.{last}.to_img.conv.{rest}" if rest.startswith(("modulation", "weight")) else f"m.layers.{last}.to_img.{rest}"
    parts = key.split(".")
    if parts[0] == "layers" and parts[2] in ("conv1", "conv2") and parts[3] in ("modulation", "weight_dw"):
        return f"m.layers.{parts[1]}.{parts[2]}.conv." + ".".join(parts[3:])
    return "m." + key


def write_synthesis_ir(state: dict, xml_path: Path, channels=CHANNELS) -> None:
    shapes = expected_shapes(channels)
    d = state["conv1.modulation.weight"].shape[1]
    ir = _IR("SynthesisNetwork")
    style = ir.op("Parameter", [], (1, d), {"shape": f"1, {d}", "element_type": "f32"}, name="style")

    def modulation(prefix: str):
        w, b = state[f"{prefix}.modulation.weight"], state[f"{prefix}.modulation.bias"]
        c = w.shape[0]
        mm = ir.op("MatMul", [style, ir.const(w, _ir_name(f"{prefix}.modulation.weight"))], (1, c),
                   {"transpose_a": "false", "transpose_b": "true"})
        add = _add(ir, mm, ir.const(b.reshape(1, c), _ir_name(f"{prefix}.modulation.bias")))
        s = ir.op("Reshape", [add, ir.const(np.array([1, c, 1, 1]))], (1, c, 1, 1), {"special_zero": "true"})
        scale = modulation_scale(f"{prefix}.modulation.weight", shapes)
        return s if scale is None else _mul(ir, s, ir.const(np.array([scale])))

    def tail(conv, prefix: str):
        x = _add(ir, conv, ir.const(state[f"{prefix}.noise"]))
        x = _add(ir, x, ir.const(state[f"{prefix}.bias"].reshape(1, -1, 1, 1), _ir_name(f"{prefix}.bias")))
        return ir.op("PReLU", [x, ir.const(np.array([SLOPE]))], ir.shapes[x])

    def haar(x, c, h, w):
        low, high = ir.op("VariadicSplit", [x, ir.const(np.array(1)), ir.const(np.array([c, 3 * c]))],
                          [(1, c, h, w), (1, 3 * c, h, w)], n_out=2)
        bands5 = ir.op("Reshape", [high, ir.const(np.array([1, c, 3, h, w]))], (1, c, 3, h, w), {"special_zero": "true"})
        b0, b1, b2 = ir.op("VariadicSplit", [bands5, ir.const(np.array(2)), ir.const(np.array([1, 1, 1]))],
                           [(1, c, 1, h, w)] * 3, n_out=3)
        b0, b1, b2 = (ir.op("Squeeze", [b, ir.const(np.array([2]))], (1, c, h, w)) for b in (b0, b1, b2))
        a = 1.0 / math.sqrt(2.0)
        lo_f, hi_f = np.array([a, a], np.float32), np.array([a, -a], np.float32)

        def tconv(inp, taps, rows: bool):
            kshape = (c, 1, 1, 2, 1) if rows else (c, 1, 1, 1, 2)
            ih, iw = ir.shapes[inp][2:]
            out = (1, c, 2 * ih, iw) if rows else (1, c, ih, 2 * iw)
            attrs = {"strides": "2, 1" if rows else "1, 2", "pads_begin": "0, 0", "pads_end": "0, 0",
                     "dilations": "1, 1", "auto_pad": "explicit", "output_padding": "0, 0"}
            return ir.op("GroupConvolutionBackpropData", [inp, ir.const(np.broadcast_to(taps.reshape(1, 1, 1, *kshape[3:]), kshape))],
                         out, attrs)

        lo = tconv(_add(ir, tconv(low, lo_f, True), tconv(b0, hi_f, True)), lo_f, False)
        hi = tconv(_add(ir, tconv(b1, lo_f, True), tconv(b2, hi_f, True)), hi_f, False)
        return _add(ir, lo, hi)

    c0 = channels[0]
    x = _mul(ir, modulation("conv1"), ir.const(state["input.const"], "m.input.input"))
    conv = ir.op("Convolution", [x, ir.const(state["conv1.weight"], "Mul_39_copy")], (1, c0, 4, 4), _conv_attrs(1))
    x = tail(conv, "conv1")
    cin, side = c0, 4
    for i, cout in enumerate(channels[1:]):
        p = f"layers.{i}"
        x = _mul(ir, modulation(f"{p}.up"), x)
        x = haar(x, cin // 4, side, side)
        side *= 2
        for j, (a, b) in enumerate(((cin // 4, cout), (cout, cout)), start=1):
            q = f"{p}.conv{j}"
            x = _mul(ir, modulation(q), x)
            dw = state[f"{q}.weight_dw"].reshape(a, 1, 1, 3, 3)
            x = ir.op("GroupConvolution", [x, ir.const(dw, _ir_name(f"{q}.weight_dw"))], (1, a, side, side), _conv_attrs(1))
            conv = ir.op("Convolution", [x, ir.const(state[f"{q}.weight_pw"], f"Mul_{100 + 3 * i + j}_copy")],
                         (1, b, side, side), _conv_attrs(0))
            x = tail(conv, q)
        cin = cout
    x = _mul(ir, modulation("to_img"), x)
    x = ir.op("Convolution", [x, ir.const(state["to_img.weight"], _ir_name("to_img.weight"))], (1, 12, side, side), _conv_attrs(0))
    x = _add(ir, x, ir.const(state["to_img.bias"].reshape(1, 12, 1, 1), _ir_name("to_img.bias")))
    img = haar(x, 3, side, side)
    ir._layer("Result", "img/sink_port_0", None, [img], [])
    ir.write(xml_path)


def write_ir_pair(state: dict, folder: Path) -> Path:
    """Both networks into folder/{Mapping,Synthesis}Network.{xml,bin}; returns folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_mapping_ir(state, folder / "MappingNetwork.xml")
    write_synthesis_ir(state, folder / "SynthesisNetwork.xml")
    return folder
