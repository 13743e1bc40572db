"""Reading an OpenVINO IR (`model.xml` topology + `model.bin` constants) with numpy only.

OpenVINO is not needed at run time: an IR is an XML list of layers (id, type, name, attributes,
ports with shapes) and edges (from-layer:port -> to-layer:port), and every `Const` layer points at
`size` bytes at `offset` in the .bin file. This module parses that much and nothing more, for
turning an IR's weights into a state dict (export/generators/mobilestylegan_ir.py).

    graph = IRGraph.load("SynthesisNetwork.xml")          # .bin beside it
    for layer in graph.topological():                     # non-Const layers in execution order
        weight = graph.const_input(layer, 1)              # numpy array, or None if not a Const
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..engine.errors import PulseError

_DTYPES = {"f32": np.float32, "f16": np.float16, "f64": np.float64, "i64": np.int64, "i32": np.int32,
           "i8": np.int8, "u8": np.uint8, "boolean": np.bool_}


@dataclass
class IRLayer:
    """One layer: `inputs[k]` is the (layer id, port) feeding input port k (in port order);
    `out_shapes[port]` the shape of each output port."""

    id: str
    type: str
    name: str
    attrs: dict
    inputs: list = field(default_factory=list)
    out_shapes: dict = field(default_factory=dict)
    input_ports: list = field(default_factory=list)


class IRGraph:
    """An OpenVINO IR (v10/v11) held as layers, edges and a view of the weights file."""

    def __init__(self, xml_path: Path, layers: dict[str, IRLayer], blob: bytes, version: str, name: str):
        self.path = xml_path
        self.layers = layers
        self.blob = blob
        self.version = version
        self.name = name
        self.consumers: dict[tuple[str, str], list[tuple[str, int]]] = {}
        for layer in layers.values():
            for k, src in enumerate(layer.inputs):
                self.consumers.setdefault(src, []).append((layer.id, k))

    # -- loading ----------------------------------------------------------------------------------
    @classmethod
    def load(cls, xml_path: str | Path, bin_path: str | Path | None = None) -> "IRGraph":
        """Parse `xml_path` and read its weights (`bin_path`, default the .bin beside it).
        PulseError (one line) for a missing, unreadable or malformed file."""
        xml_path = Path(xml_path)
        bin_path = Path(bin_path) if bin_path is not None else xml_path.with_suffix(".bin")
        for p in (xml_path, bin_path):
            if not p.is_file():
                raise PulseError(f"OpenVINO IR file not found: {p}")
        try:
            root = ET.parse(xml_path).getroot()
        except (ET.ParseError, OSError) as e:
            raise PulseError(f"{xml_path} is not a readable OpenVINO IR topology ({e})") from None
        if root.tag != "net" or root.find("layers") is None or root.find("edges") is None:
            raise PulseError(f"{xml_path} is not an OpenVINO IR topology (no <net> with layers and edges)")
        try:
            blob = bin_path.read_bytes()
        except OSError as e:
            raise PulseError(f"cannot read OpenVINO IR weights {bin_path} ({e.strerror or e})") from None
        layers: dict[str, IRLayer] = {}
        for el in root.find("layers"):
            data = el.find("data")
            layer = IRLayer(id=el.get("id"), type=el.get("type"), name=el.get("name") or "",
                            attrs=dict(data.attrib) if data is not None else {})
            inp = el.find("input")
            if inp is not None:
                layer.input_ports = [p.get("id") for p in inp]
            out = el.find("output")
            if out is not None:
                for p in out:
                    layer.out_shapes[p.get("id")] = tuple(int(d.text) for d in p.findall("dim"))
            layers[layer.id] = layer
        edges = {}
        for e in root.find("edges"):
            edges[(e.get("to-layer"), e.get("to-port"))] = (e.get("from-layer"), e.get("from-port"))
        for layer in layers.values():
            for port in layer.input_ports:
                src = edges.get((layer.id, port))
                if src is None or src[0] not in layers:
                    raise PulseError(f"{xml_path}: input {port} of layer {layer.name!r} is not connected")
                layer.inputs.append(src)
        return cls(xml_path, layers, blob, root.get("version", "?"), root.get("name", ""))

    # -- constants --------------------------------------------------------------------------------
    def const(self, layer_id: str) -> np.ndarray:
        """The value of a Const layer as a numpy array (a copy), checked against the .bin size."""
        layer = self.layers[layer_id]
        if layer.type != "Const":
            raise PulseError(f"{self.path}: layer {layer.name!r} is a {layer.type}, not a Const")
        a = layer.attrs
        dtype = _DTYPES.get(a.get("element_type", ""))
        if dtype is None:
            raise PulseError(f"{self.path}: constant {layer.name!r} has unsupported type {a.get('element_type')!r}")
        offset, size = int(a.get("offset", -1)), int(a.get("size", -1))
        shape = tuple(int(s) for s in a.get("shape", "").replace(" ", "").split(",") if s)
        count = int(np.prod(shape)) if shape else 1
        if offset < 0 or size != count * np.dtype(dtype).itemsize or offset + size > len(self.blob):
            raise PulseError(f"{self.path}: constant {layer.name!r} lies outside the weights file "
                             f"(offset {offset}, {size} bytes, file {len(self.blob)} bytes): truncated or mismatched .bin")
        return np.frombuffer(self.blob, dtype=dtype, count=count, offset=offset).reshape(shape).copy()

    def source(self, layer: IRLayer, k: int) -> IRLayer:
        """The layer feeding input k of `layer`."""
        return self.layers[layer.inputs[k][0]]

    def const_input(self, layer: IRLayer, k: int) -> np.ndarray | None:
        """Input k of `layer` when it is a Const (its value), else None."""
        src = self.source(layer, k)
        return self.const(src.id) if src.type == "Const" else None

    def users(self, layer: IRLayer, port: str | None = None) -> list[IRLayer]:
        """Layers that consume an output of `layer` (port None: any output)."""
        out = []
        for (lid, p), uses in self.consumers.items():
            if lid == layer.id and (port is None or p == port):
                out.extend(self.layers[u] for u, _ in uses)
        return out

    def topological(self) -> list[IRLayer]:
        """Non-Const layers in an order where every layer follows its inputs (ties by id)."""
        order, seen = [], set()
        for layer in sorted(self.layers.values(), key=lambda l: int(l.id)):
            stack = [(layer, False)]
            while stack:
                node, expanded = stack.pop()
                if node.id in seen:
                    continue
                if expanded:
                    seen.add(node.id)
                    if node.type != "Const":
                        order.append(node)
                    continue
                stack.append((node, True))
                for src, _ in reversed(node.inputs):
                    if src not in seen:
                        stack.append((self.layers[src], False))
        return order

    def of_type(self, kind: str) -> list[IRLayer]:
        """Layers of one type, in topological order."""
        return [l for l in self.topological() if l.type == kind]

    def parameters(self) -> list[IRLayer]:
        return [l for l in self.layers.values() if l.type == "Parameter"]
