"""TensorRT runner: deserialized engines, cuda-python buffers, ping-pong state, CUDA graphs.

Optional: `tensorrt` (10.x / 11.x Python API) and cuda-python (`cuda.bindings.runtime`, or the
older `cuda.cudart`) are imported in activate(), never at module import, so this module loads
(and its buffer planning is testable) on machines without them.

The engines come from the export stage's builder (export/trt_build.py); this runner only
deserializes them: by default DIR/step.engine and DIR/render.engine beside the ONNX graphs.

Per chunk of B rows (engine/runner.py's interface):
  1. Allocate every buffer of plan_buffers(manifest, B) with cudaMalloc, zero it; state twice
     (ping-pong sets A and B).
  2. For direction d in (A->B, B->A): set every tensor address of the step context, run once
     (TensorRT's deferred setup happens on the first enqueue), then capture one enqueue into a
     CUDA graph (cudaStreamBeginCapture / execute_async_v3 / cudaStreamEndCapture) and
     instantiate it. Capture happens on zeroed buffers *before* the start state is uploaded,
     so the warm-up runs clobber nothing.
  3. Upload target, radii, frozen noise and the start state (set A); moments stay zero.
  4. step(lr, t): copy lr and t in (8 bytes), cudaGraphLaunch the graph of the current
     direction (or execute_async_v3 without graphs), copy the four [B] loss vectors out,
     synchronise. keep(rows): device-to-device copies of the improved rows (rows are contiguous
     in [B, ...] layout) from the set the step read into the best buffers.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import PulseError
from .manifest import LOSS_OUTPUTS, Manifest
from .runner import TERMS, BufferPlan, Runner, plan_buffers


def import_cudart():
    """cuda-python's runtime module (cuda.bindings.runtime, or cuda.cudart before 12.6)."""
    try:
        from cuda.bindings import runtime as cudart  # noqa: PLC0415
    except ImportError:
        try:
            from cuda import cudart  # noqa: PLC0415
        except ImportError:
            raise PulseError("backend tensorrt needs cuda-python: pip install 'pulse-trt[trt]'") from None
    return cudart


def import_tensorrt():
    try:
        import tensorrt as trt  # noqa: PLC0415
    except ImportError:
        raise PulseError("backend tensorrt needs TensorRT: pip install 'pulse-trt[trt]' on a machine with an NVIDIA GPU") from None
    return trt


def _check(result):
    """cuda-python calls return (err, *values): raise on an error, return the values."""
    err, *values = result if isinstance(result, tuple) else (result,)
    code = int(err.value) if hasattr(err, "value") else int(err)
    if code == 2:  # cudaErrorMemoryAllocation: the GPU is full, not a bug
        raise MemoryError(f"CUDA could not allocate device memory ({err})")
    if code != 0:
        raise PulseError(f"CUDA error {err}")
    return values[0] if len(values) == 1 else (tuple(values) if values else None)


def row_runs(rows: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous runs (start, count) of True in rows [B] bool: one memcpy per run."""
    rows = np.asarray(rows, bool)
    runs, b = [], 0
    while b < len(rows):
        if rows[b]:
            e = b
            while e < len(rows) and rows[e]:
                e += 1
            runs.append((b, e - b))
            b = e
        else:
            b += 1
    return runs


class TrtRunner(Runner):
    """PULSE step and render engines on TensorRT.

    Args:
        manifest:      engine.manifest.Manifest.
        step_engine:   serialized step engine (default manifest.dir / "step.engine").
        render_engine: serialized render engine (default manifest.dir / "render.engine").
        cuda_graph:    capture the step (per ping-pong direction) as a CUDA graph.
    """

    name = "tensorrt"

    def __init__(self, manifest: Manifest, *, step_engine=None, render_engine=None, cuda_graph: bool = True):
        super().__init__(manifest)
        self.step_engine_path = Path(step_engine) if step_engine else manifest.dir / "step.engine"
        self.render_engine_path = Path(render_engine) if render_engine else manifest.dir / "render.engine"
        self.cuda_graph = bool(cuda_graph)
        self._trt = self._cudart = None
        self._ptrs: list = []
        self._graphs: list = []
        self._keepalive: list = []

    # -- lifecycle --------------------------------------------------------------------------------
    def _activate(self) -> None:
        for p in (self.step_engine_path, self.render_engine_path):
            if not p.is_file():
                raise PulseError(f"no TensorRT engine {str(p)!r}: build it with `pulse-trt export --trt-engine`")
        trt, cudart = import_tensorrt(), import_cudart()
        self._trt, self._cudart = trt, cudart
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        engines = []
        for p in (self.step_engine_path, self.render_engine_path):
            engine = self._runtime.deserialize_cuda_engine(p.read_bytes())
            if engine is None:
                raise PulseError(f"TensorRT could not deserialize {str(p)!r} (built by another TensorRT version "
                                 "or for another GPU?): rebuild it with `pulse-trt export --trt-engine`")
            engines.append(engine)
        self._step_engine, self._render_engine = engines
        self._check_engine_io(self._step_engine, self.manifest.step_inputs, self.manifest.step_outputs, "step")
        self._check_engine_io(self._render_engine, self.manifest.render_inputs, self.manifest.render_outputs, "render")
        self._step_ctx = self._step_engine.create_execution_context()
        self._render_ctx = self._render_engine.create_execution_context()
        self._stream = _check(cudart.cudaStreamCreate())

    def _check_engine_io(self, engine, inputs: dict, outputs: dict, what: str) -> None:
        trt = self._trt
        names = {engine.get_tensor_name(i) for i in range(engine.num_io_tensors)}
        want = set(inputs) | set(outputs)
        if names != want:
            raise PulseError(f"TensorRT {what} engine tensors {sorted(names ^ want)} disagree with the manifest: rebuild it")
        for name in inputs:
            if engine.get_tensor_mode(name) != trt.TensorIOMode.INPUT:
                raise PulseError(f"TensorRT {what} engine: {name!r} is not an input")
            if engine.get_tensor_dtype(name) != trt.float32:
                raise PulseError(f"TensorRT {what} engine: input {name!r} is not float32")

    def _deactivate(self) -> None:
        self._free_chunk()
        if self._cudart is not None and getattr(self, "_stream", None) is not None:
            self._cudart.cudaStreamDestroy(self._stream)
        self._stream = self._step_ctx = self._render_ctx = None
        self._step_engine = self._render_engine = self._runtime = None

    # -- buffers ----------------------------------------------------------------------------------
    def _malloc(self, nbytes: int) -> int:
        cudart = self._cudart
        ptr = _check(cudart.cudaMalloc(max(int(nbytes), 4)))
        self._ptrs.append(ptr)
        _check(cudart.cudaMemsetAsync(ptr, 0, max(int(nbytes), 4), self._stream))
        return ptr

    def _h2d(self, dst, a: np.ndarray) -> None:
        a = np.ascontiguousarray(a)
        _check(self._cudart.cudaMemcpyAsync(dst, a.ctypes.data, a.nbytes,
                                            self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream))
        self._keepalive.append(a)  # pageable source must live until the stream syncs

    def _d2h(self, a: np.ndarray, src) -> None:
        _check(self._cudart.cudaMemcpyAsync(a.ctypes.data, src, a.nbytes,
                                            self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream))

    def _sync(self) -> None:
        _check(self._cudart.cudaStreamSynchronize(self._stream))
        self._keepalive = []

    def _free_chunk(self) -> None:
        cudart = self._cudart
        if cudart is None:
            return
        for graph, exec_ in self._graphs:
            cudart.cudaGraphExecDestroy(exec_)
            cudart.cudaGraphDestroy(graph)
        self._graphs = []
        for p in self._ptrs:
            cudart.cudaFree(p)
        self._ptrs = []
        self.batch = None

    def load(self, feeds: dict) -> None:
        """Allocate a chunk's buffers, capture the two step directions, upload the start."""
        self._require_active()
        batch = self._check_load(feeds)
        self._free_chunk()
        self._keepalive = []
        plan: BufferPlan = plan_buffers(self.manifest, batch)
        self._plan = plan
        self._const = {b.name: self._malloc(b.nbytes) for b in plan.constants}
        self._scal = {b.name: self._malloc(b.nbytes) for b in plan.scalars}
        self._loss = {b.name: self._malloc(b.nbytes) for b in plan.losses}
        self._sets = tuple({b.name: self._malloc(b.nbytes) for b, _ in plan.state} for _ in range(2))
        self._best = {b.name: self._malloc(b.nbytes) for b in plan.best}
        self._row_bytes = {b.name: b.nbytes // batch for b in plan.best}
        self._shapes = {b.name: b.shape for b in plan.best}
        ctx = self._step_ctx
        for name, info in self.manifest.step_inputs.items():
            if not ctx.set_input_shape(name, info.concrete(batch)):
                raise PulseError(f"TensorRT step engine rejects input {name!r} of shape {list(info.concrete(batch))} "
                                 "(batch outside the engine's optimisation profile?)")
        self._graphs = []
        for d in range(2):
            self._bind_direction(d)
            if not ctx.execute_async_v3(self._stream_handle()):
                raise PulseError("TensorRT step enqueue failed")
            self._sync()
            if self.cuda_graph:
                self._graphs.append(self._capture())
        # start state: set A, constants (after the warm-up runs, which wrote garbage into both sets)
        for b, _ in plan.state:
            _check(self._cudart.cudaMemsetAsync(self._sets[1][b.name], 0, b.nbytes, self._stream))
            if b.name in self.manifest.params:
                self._h2d(self._sets[0][b.name], feeds[b.name])
                self._h2d(self._best[b.name], feeds[b.name])
            else:
                _check(self._cudart.cudaMemsetAsync(self._sets[0][b.name], 0, b.nbytes, self._stream))
        for name, ptr in self._const.items():
            self._h2d(ptr, feeds[name].astype(np.float32, copy=False))
        self._sync()
        self._host_scalars = np.zeros(2, np.float32)
        self._host_losses = {name: np.empty(batch, np.float32) for name in LOSS_OUTPUTS}
        self._cur, self._last_in = 0, None
        self.batch = batch
        self.step_seconds = 0.0

    def _stream_handle(self) -> int:
        return int(self._stream)

    def _bind_direction(self, d: int) -> None:
        ctx = self._step_ctx
        src, dst = self._sets[d], self._sets[1 - d]
        addresses = {**self._const, **self._scal, **self._loss}
        for s in self.manifest.state:
            addresses[s.name] = src[s.name]
            addresses[s.next] = dst[s.name]
        for name, ptr in addresses.items():
            if not ctx.set_tensor_address(name, int(ptr)):
                raise PulseError(f"TensorRT step engine rejects the address of {name!r}")

    def _capture(self):
        cudart = self._cudart
        _check(cudart.cudaStreamBeginCapture(self._stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal))
        ok = self._step_ctx.execute_async_v3(self._stream_handle())
        graph = _check(cudart.cudaStreamEndCapture(self._stream))
        if not ok:
            raise PulseError("TensorRT step enqueue failed during CUDA graph capture")
        exec_ = _check(cudart.cudaGraphInstantiate(graph, 0))
        return graph, exec_

    # -- per step ---------------------------------------------------------------------------------
    def _step(self, lr: float, t: int) -> dict:
        d = self._cur
        self._host_scalars[:] = (lr, t)
        self._h2d(self._scal["lr"], self._host_scalars[0:1])
        self._h2d(self._scal["t"], self._host_scalars[1:2])
        if self.cuda_graph:
            _check(self._cudart.cudaGraphLaunch(self._graphs[d][1], self._stream))
        else:
            self._bind_direction(d)
            if not self._step_ctx.execute_async_v3(self._stream_handle()):
                raise PulseError("TensorRT step enqueue failed")
        for name, host in self._host_losses.items():
            self._d2h(host, self._loss[name])
        self._sync()
        self._last_in, self._cur = d, 1 - d
        return {term: self._host_losses[name].copy() for term, name in zip(TERMS, LOSS_OUTPUTS)}

    def keep(self, rows: np.ndarray) -> None:
        self._require_loaded()
        if self._last_in is None:
            return
        src = self._sets[self._last_in]
        kind = self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        for start, count in row_runs(rows):
            for p, best in self._best.items():
                rb = self._row_bytes[p]
                _check(self._cudart.cudaMemcpyAsync(int(best) + start * rb, int(src[p]) + start * rb, count * rb,
                                                    kind, self._stream))
        self._sync()

    def best(self) -> dict:
        self._require_loaded()
        out = {p: np.empty(self._shapes[p], np.float32) for p in self._best}
        for p, a in out.items():
            self._d2h(a, self._best[p])
        self._sync()
        return out

    def render(self, feeds: dict) -> dict:
        self._require_active()
        batch = self._check_render(feeds)
        ctx, ptrs = self._render_ctx, []
        cudart = self._cudart
        try:
            for name, a in feeds.items():
                ptr = _check(cudart.cudaMalloc(a.nbytes))
                ptrs.append(ptr)
                if not ctx.set_input_shape(name, a.shape):
                    raise PulseError(f"TensorRT render engine rejects input {name!r} of shape {list(a.shape)}")
                ctx.set_tensor_address(name, int(ptr))
                self._h2d(ptr, a)
            out = {}
            for name, info in self.manifest.render_outputs.items():
                out[name] = np.empty(info.concrete(batch), np.float32)
                ptr = _check(cudart.cudaMalloc(out[name].nbytes))
                ptrs.append(ptr)
                ctx.set_tensor_address(name, int(ptr))
            if not ctx.execute_async_v3(self._stream_handle()):
                raise PulseError("TensorRT render enqueue failed")
            for name, info in self.manifest.render_outputs.items():
                self._d2h(out[name], ptrs[len(feeds) + list(self.manifest.render_outputs).index(name)])
            self._sync()
            return out
        finally:
            for p in ptrs:
                cudart.cudaFree(p)
