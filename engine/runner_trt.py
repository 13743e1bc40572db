"""TensorRT runner: deserialized engines, cuda-python buffers, ping-pong state, CUDA graphs.

Optional: `tensorrt` (10.x / 11.x Python API) and cuda-python (`cuda.bindings.runtime`, or the
older `cuda.cudart`) are imported in activate(), never at module import, so this module loads
(and its buffer planning is testable) on machines without them.

The engines come from the export stage's builder (export/trt_build.py); this runner only
deserializes them: by default DIR/step.engine and DIR/render.engine beside the ONNX graphs.

engine/runner.py's interface, for `slots` rows and a ring of `ring` steps:
  1. open: cudaMalloc every buffer of plan_buffers(manifest, slots, ring), zeroed: per-row inputs,
     the state twice (ping-pong sets), the lr / t rings [ring, slots], the loss ring
     [ring, 4, slots].
  2. write_rows: one host-to-device copy per row and input (rows are contiguous in [B, ...]).
     move_row: device-to-device copies of one row of every per-row input and current-state buffer.
  3. run(n, lr, t): the first time n rows run, for both directions d and every ring position j:
     set the input shapes (batch n) and every tensor address (state from set d into set 1 - d,
     lr / t from ring row j, losses into loss-ring row j), enqueue once with t = 0 (TensorRT's
     deferred setup happens on the first enqueue; t = 0 rows do not move, so this changes no
     search), then capture one enqueue into a CUDA graph (cudaStreamBeginCapture /
     execute_async_v3 / cudaStreamEndCapture) and instantiate it. Then per run: copy the lr / t
     rings in, launch the k graphs back to back on one stream, copy the loss ring out,
     synchronise once. Without graphs: the same addresses are set before each enqueue.
  4. render (best / current / start iterate): per row, the render engine's inputs point at the
     row of best.X, X or start.X (and of the frozen noise); only the image comes back.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import PulseError
from .manifest import LOSS_OUTPUTS, Manifest
from .runner import TERMS, BufferPlan, Runner


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


class TrtRunner(Runner):
    """PULSE step and render engines on TensorRT.

    Args:
        manifest:      engine.manifest.Manifest.
        step_engine:   serialized step engine (default manifest.dir / "step.engine").
        render_engine: serialized render engine (default manifest.dir / "render.engine").
        cuda_graph:    capture each step binding (rows in use, direction, ring position) as a CUDA graph.
    """

    name = "tensorrt"
    can_move_rows = True

    def __init__(self, manifest: Manifest, *, step_engine=None, render_engine=None, cuda_graph: bool = True):
        super().__init__(manifest)
        self.step_engine_path = Path(step_engine) if step_engine else manifest.dir / "step.engine"
        self.render_engine_path = Path(render_engine) if render_engine else manifest.dir / "render.engine"
        self.cuda_graph = bool(cuda_graph)
        self._trt = self._cudart = None
        self._ptrs: list = []
        self._graphs: dict = {}
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
        self._free()
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

    def _h2d(self, dst, a: np.ndarray, nbytes: int | None = None) -> None:
        a = np.ascontiguousarray(a)
        _check(self._cudart.cudaMemcpyAsync(int(dst), a.ctypes.data, a.nbytes if nbytes is None else nbytes,
                                            self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream))
        self._keepalive.append(a)  # pageable source must live until the stream syncs

    def _d2h(self, a: np.ndarray, src) -> None:
        _check(self._cudart.cudaMemcpyAsync(a.ctypes.data, int(src), a.nbytes,
                                            self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream))

    def _d2d(self, dst, src, nbytes: int) -> None:
        _check(self._cudart.cudaMemcpyAsync(int(dst), int(src), nbytes,
                                            self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice, self._stream))

    def _sync(self) -> None:
        _check(self._cudart.cudaStreamSynchronize(self._stream))
        self._keepalive = []

    def _free(self) -> None:
        cudart = self._cudart
        if cudart is None:
            return
        for graph, exec_ in self._graphs.values():
            cudart.cudaGraphExecDestroy(exec_)
            cudart.cudaGraphDestroy(graph)
        self._graphs = {}
        for p in self._ptrs:
            cudart.cudaFree(p)
        self._ptrs = []

    def _open(self, plan: BufferPlan) -> None:
        self._free()
        self._keepalive = []
        self._plan = plan
        self._rows = {b.name: self._malloc(b.nbytes) for b in plan.rows}
        self._sets = tuple({b.name: self._malloc(b.nbytes) for b, _ in plan.state} for _ in range(2))
        self._rings = {b.name: self._malloc(b.nbytes) for b in plan.rings}
        self._loss_ring = self._malloc(plan.losses.nbytes)
        self._row_bytes = {b.name: b.row_bytes for b in list(plan.rows) + [b for b, _ in plan.state]}
        self._shapes = {b.name: b.shape[1:] for b in list(plan.rows) + [b for b, _ in plan.state]}
        self._host_rings = {b.name: np.zeros(b.shape, np.float32) for b in plan.rings}
        self._host_losses = np.zeros(plan.losses.shape, np.float32)
        r, lr = self.manifest.resolution, self.manifest.lr_size
        self._render_out = {"image": self._malloc(3 * r * r * 4), "lr_image": self._malloc(3 * lr * lr * 4)}
        self._shaped = None  # the batch the step context's input shapes are set for
        self._cur = 0
        self._sync()

    def _stream_handle(self) -> int:
        return int(self._stream)

    def _set_shapes(self, n: int) -> None:
        if self._shaped == n:
            return
        for name, info in self.manifest.step_inputs.items():
            if not self._step_ctx.set_input_shape(name, info.concrete(n)):
                raise PulseError(f"TensorRT step engine rejects input {name!r} of shape {list(info.concrete(n))} "
                                 "(rows outside the engine's optimisation profile? rebuild it for more slots)")
        self._shaped = n

    def _bind(self, n: int, d: int, j: int) -> None:
        """Tensor addresses of step j of a run over rows [0, n) reading state set d."""
        ctx, slots = self._step_ctx, self.slots
        src, dst = self._sets[d], self._sets[1 - d]
        addresses = dict(self._rows)
        addresses["lr"] = int(self._rings["lr"]) + j * slots * 4
        addresses["t"] = int(self._rings["t"]) + j * slots * 4
        for s in self.manifest.state:
            addresses[s.name] = src[s.name]
            addresses[s.next] = dst[s.name]
        for i, name in enumerate(LOSS_OUTPUTS):
            addresses[name] = int(self._loss_ring) + (j * len(LOSS_OUTPUTS) + i) * slots * 4
        for name, ptr in addresses.items():
            if not ctx.set_tensor_address(name, int(ptr)):
                raise PulseError(f"TensorRT step engine rejects the address of {name!r}")

    def _enqueue(self) -> None:
        if not self._step_ctx.execute_async_v3(self._stream_handle()):
            raise PulseError("TensorRT step enqueue failed")

    def _capture_all(self, n: int) -> None:
        """CUDA graphs of every (direction, ring position) for n rows (module docstring, step 3)."""
        cudart = self._cudart
        self._set_shapes(n)
        _check(cudart.cudaMemsetAsync(self._rings["t"], 0, self._plan.rings[1].nbytes, self._stream))  # t = 0
        for d in (self._cur, 1 - self._cur):  # t = 0: set 1 - cur receives a copy of cur, then cur itself
            for j in range(self.ring):
                self._bind(n, d, j)
                self._enqueue()  # deferred setup
                self._sync()
                _check(cudart.cudaStreamBeginCapture(self._stream,
                                                     cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal))
                ok = self._step_ctx.execute_async_v3(self._stream_handle())
                graph = _check(cudart.cudaStreamEndCapture(self._stream))
                if not ok:
                    raise PulseError("TensorRT step enqueue failed during CUDA graph capture")
                self._graphs[(n, d, j)] = (graph, _check(cudart.cudaGraphInstantiate(graph, 0)))

    # -- per row, per run -------------------------------------------------------------------------
    def _write_rows(self, rows: list[int], feeds: dict) -> None:
        for name, a in feeds.items():
            rb = self._row_bytes[name]
            for i, r in enumerate(rows):
                self._h2d(int(self._rows[name]) + r * rb, a[i])
        self._sync()

    def _move_row(self, src: int, dst: int) -> None:
        for bufs in (self._rows, self._sets[self._cur]):
            for name, ptr in bufs.items():
                rb = self._row_bytes[name]
                self._d2d(int(ptr) + dst * rb, int(ptr) + src * rb, rb)
        self._sync()

    def _run(self, n: int, lr: np.ndarray, t: np.ndarray) -> dict:
        k = lr.shape[0]
        if self.cuda_graph and (n, 0, 0) not in self._graphs:
            self._capture_all(n)
        self._host_rings["lr"][:k, :n] = lr
        self._host_rings["t"][:k, :n] = t
        for name in ("lr", "t"):
            self._h2d(self._rings[name], self._host_rings[name])
        for j in range(k):
            d = self._cur
            if self.cuda_graph:
                _check(self._cudart.cudaGraphLaunch(self._graphs[(n, d, j)][1], self._stream))
            else:
                self._set_shapes(n)
                self._bind(n, d, j)
                self._enqueue()
            self._cur = 1 - d
        self._d2h(self._host_losses, self._loss_ring)
        self._sync()  # the run's one host synchronisation
        return {term: self._host_losses[:k, i, :n].copy() for i, term in enumerate(TERMS)}

    def _render(self, rows: list[int], iterate: str) -> dict:
        """Per row: render inputs at the row of the source buffer (Runner.render_source: best.X,
        X or start.X in the current set or the per-row inputs; frozen noise is the row's own)."""
        ctx, out = self._render_ctx, {}
        names = list(self.manifest.render_outputs)
        results = {name: [] for name in names}
        cur = self._sets[self._cur]
        for r in rows:
            for name in self.manifest.render_inputs:
                src = self.render_source(name, iterate)
                ptr = cur[src] if src in cur else self._rows[src]
                rb = self._row_bytes[src]
                if not ctx.set_input_shape(name, (1, *self._shapes[name])):
                    raise PulseError(f"TensorRT render engine rejects input {name!r} at batch 1")
                ctx.set_tensor_address(name, int(ptr) + r * rb)
            for name in names:
                ctx.set_tensor_address(name, int(self._render_out[name]))
            if not ctx.execute_async_v3(self._stream_handle()):
                raise PulseError("TensorRT render enqueue failed")
            for name, info in self.manifest.render_outputs.items():
                out[name] = np.empty(info.concrete(1), np.float32)
                self._d2h(out[name], self._render_out[name])
            self._sync()
            for name in names:
                results[name].append(out[name])
        return {name: np.concatenate(v) for name, v in results.items()}
