"""Stand-ins for the `tensorrt` and cuda-python modules, so engine/runner_trt.py's logic (buffer
layout, row offsets, ring positions, ping-pong directions, CUDA-graph capture and replay, host
synchronisations) runs on a machine without a GPU. Nothing here is a measurement: the "engines"
run the artefacts' ONNX graphs with ONNX Runtime on CPU, and "device memory" is host memory.

- FakeCudart: cudaMalloc hands out host buffers (kept alive here) and remembers them as device
  allocations; cudaMemcpyAsync checks that its kind matches where the pointers live
  (HostToDevice: a host source into an allocation, ...) and copies with ctypes; stream capture
  records the enqueued work (with the tensor addresses and shapes of that moment, as a CUDA
  graph does) and cudaGraphLaunch replays it. `syncs` counts cudaStreamSynchronize calls.
- FakeTensorRT: Runtime.deserialize_cuda_engine takes the bytes of a file that names an ONNX
  graph (write_fake_engines); an execution context keeps input shapes and tensor addresses and
  execute_async_v3 reads the inputs at their addresses, runs the graph, writes the outputs.
"""
from __future__ import annotations

import ctypes
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort


class FakeCudart:
    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice="H2D", cudaMemcpyDeviceToHost="D2H",
                                     cudaMemcpyDeviceToDevice="D2D")
    cudaStreamCaptureMode = SimpleNamespace(cudaStreamCaptureModeGlobal="global")

    def __init__(self):
        self.allocations: dict[int, np.ndarray] = {}
        self.syncs = 0
        self.launches = 0
        self.captured = 0
        self._capture: list | None = None

    def on_device(self, ptr: int, nbytes: int) -> bool:
        return any(base <= ptr and ptr + nbytes <= base + a.nbytes for base, a in self.allocations.items())

    def enqueue(self, work) -> None:
        """Run `work` now, or record it while the stream is being captured."""
        if self._capture is not None:
            self._capture.append(work)
        else:
            work()

    # -- the runtime API subset runner_trt uses ------------------------------------------------------
    def cudaMalloc(self, nbytes):
        a = np.full(int(nbytes), 0xAB, np.uint8)  # garbage until written: as cudaMalloc
        self.allocations[a.ctypes.data] = a
        return 0, a.ctypes.data

    def cudaFree(self, ptr):
        self.allocations.pop(int(ptr))
        return (0,)

    def cudaMemsetAsync(self, ptr, value, nbytes, stream):
        assert self.on_device(int(ptr), int(nbytes)), "memset outside device memory"
        self.enqueue(lambda: ctypes.memset(int(ptr), int(value), int(nbytes)))
        return (0,)

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        dst, src, nbytes = int(dst), int(src), int(nbytes)
        want = {"H2D": (False, True), "D2H": (True, False), "D2D": (True, True)}[kind]
        assert (self.on_device(src, nbytes), self.on_device(dst, nbytes)) == want, f"cudaMemcpy {kind} on wrong memory"
        self.enqueue(lambda: ctypes.memmove(dst, src, nbytes))
        return (0,)

    def cudaStreamCreate(self):
        return 0, 1

    def cudaStreamDestroy(self, stream):
        return (0,)

    def cudaStreamSynchronize(self, stream):
        self.syncs += 1
        return (0,)

    def cudaStreamBeginCapture(self, stream, mode):
        assert self._capture is None
        self._capture = []
        return (0,)

    def cudaStreamEndCapture(self, stream):
        graph, self._capture = self._capture, None
        self.captured += 1
        return 0, graph

    def cudaGraphInstantiate(self, graph, flags):
        return 0, list(graph)

    def cudaGraphLaunch(self, exec_, stream):
        self.launches += 1
        for work in exec_:
            work()
        return (0,)

    def cudaGraphExecDestroy(self, exec_):
        return (0,)

    def cudaGraphDestroy(self, graph):
        return (0,)


def _read(ptr: int, shape) -> np.ndarray:
    n = int(np.prod(shape, dtype=np.int64))
    return np.frombuffer((ctypes.c_float * n).from_address(ptr), np.float32, n).reshape(shape).copy()


def _write(ptr: int, a: np.ndarray) -> None:
    a = np.ascontiguousarray(a, np.float32)
    ctypes.memmove(ptr, a.ctypes.data, a.nbytes)


class FakeContext:
    def __init__(self, engine: "FakeEngine"):
        self.engine, self.shapes, self.addresses = engine, {}, {}

    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(int(d) for d in shape)
        return name in self.engine.inputs

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = int(ptr)
        return name in self.engine.inputs or name in self.engine.outputs

    def execute_async_v3(self, stream):
        shapes, addresses, eng = dict(self.shapes), dict(self.addresses), self.engine
        assert set(shapes) == set(eng.inputs), "execute without every input shape set"

        def work():
            feeds = {n: _read(addresses[n], shapes[n]) for n in eng.inputs}
            for name, out in zip(eng.outputs, eng.session.run(eng.outputs, feeds)):
                _write(addresses[name], out)
        eng.cudart.enqueue(work)
        return True


class FakeEngine:
    def __init__(self, onnx_path: str, cudart: FakeCudart, trt):
        self.session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.cudart, self._trt = cudart, trt

    @property
    def num_io_tensors(self):
        return len(self.inputs) + len(self.outputs)

    def get_tensor_name(self, i):
        return (self.inputs + self.outputs)[i]

    def get_tensor_mode(self, name):
        return self._trt.TensorIOMode.INPUT if name in self.inputs else self._trt.TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name):
        return self._trt.float32

    def create_execution_context(self):
        return FakeContext(self)


def fake_tensorrt(cudart: FakeCudart):
    """A module-like namespace with what runner_trt uses of `tensorrt`."""
    trt = SimpleNamespace(float32="float32", TensorIOMode=SimpleNamespace(INPUT="input", OUTPUT="output"))
    trt.Logger = type("Logger", (), {"WARNING": 1, "__init__": lambda self, level=None: None})

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, blob):
            return FakeEngine(blob.decode(), cudart, trt)

    trt.Runtime = Runtime
    return trt


def write_fake_engines(artifacts_dir, out_dir) -> tuple[Path, Path]:
    """step.engine / render.engine files that name the artefacts' ONNX graphs."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in ("step", "render"):
        p = out / f"{name}.engine"
        p.write_bytes(str(Path(artifacts_dir) / f"{name}.onnx").encode())
        paths.append(p)
    return paths[0], paths[1]
