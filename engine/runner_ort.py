"""ONNX Runtime runners: CPU (the default on every machine) and CUDA (state stays on the GPU).

Both bind every step input and output once per chunk with IO binding and ping-pong two state
sets: binding A->B reads the state from set A and writes `next.X` into set B, binding B->A the
other way round, so a step moves no state at all; only lr and t (4 bytes each) go in and the
four [B] loss vectors come out.

- CPU: the buffers are numpy arrays bound by pointer (ORT reads and writes them in place); the
  best iterate is a numpy row copy. Sessions use every core for intra-op work (inter-op 1,
  sequential: the step graph is one chain), graph optimisation level ALL.
- CUDA: the buffers are OrtValues in device memory; lr and t live on the device too (CUDA
  graphs need every input at a fixed device address); with `cuda_graph=True` ORT captures each
  direction as its own CUDA graph (run option gpu_graph_id) and replays it. The best iterate is
  kept with device-to-device row copies when cuda-python is installed, else with host copies
  of the improved rows (a few KB per row).
"""
from __future__ import annotations

import os
import re

import numpy as np

from .errors import PulseError
from .manifest import LOSS_OUTPUTS, Manifest
from .runner import TERMS, Runner


def _ort():
    try:
        import onnxruntime as ort  # noqa: PLC0415
    except ImportError:
        raise PulseError("onnxruntime is not installed: pip install onnxruntime (or onnxruntime-gpu)") from None
    return ort


# How ONNX Runtime reports an allocation failure (its CPU arena, CUDA, the C++ runtime).
_OOM = re.compile(r"BFCArena|Failed to allocate memory|bad_alloc|out of memory|cudaErrorMemoryAllocation|"
                  r"CUDA failure 2:|CUBLAS_STATUS_ALLOC_FAILED|CUDNN_STATUS_ALLOC_FAILED")


def ort_memory_error(e: BaseException, what: str | None = None) -> MemoryError | None:
    """A MemoryError (one line, what ran out and where) when ONNX Runtime's exception `e` is an
    allocation failure, else None: running out of memory is the machine's limit, not a bug."""
    text = " ".join(str(e).split())
    if not _OOM.search(text):
        return None
    asked = re.search(r"requested bytes of (\d+)", text)
    size = f"{int(asked.group(1))} bytes" if asked else "memory"
    return MemoryError(f"ONNX Runtime could not allocate {size}" + (f" while {what}" if what else ""))


def session_options(threads: int | None = None, profile: str | None = None):
    """SessionOptions for the PULSE graphs: `threads` intra-op threads (default: every core),
    one inter-op thread, sequential execution, every graph optimisation. ONNX Runtime's own log
    is off (fatal only): every failure reaches the caller as an exception, turned into one line
    (PulseError, MemoryError), so its coloured log line would only say the same thing twice."""
    ort = _ort()
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads or os.cpu_count() or 1)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 4  # fatal only: errors come back as exceptions (see above)
    if profile:
        so.enable_profiling = True
        so.profile_file_prefix = profile
    return so


def check_session_io(sess, inputs: dict, outputs: dict, what: str) -> None:
    """The ONNX graph's declared inputs/outputs agree with the manifest: the same names, and per
    dimension either a symbolic dim where the manifest says "B" or the same size. (IO binding does
    not re-check shapes per run, so a graph traced with a fixed batch must fail here, not
    compute garbage.)"""
    for kind, declared, expected in (("input", sess.get_inputs(), inputs), ("output", sess.get_outputs(), outputs)):
        names = {a.name for a in declared}
        if names != set(expected):
            raise PulseError(f"{what}.onnx {kind}s {sorted(names ^ set(expected))} disagree with the manifest; re-export")
        for a in declared:
            want = expected[a.name].shape
            got = list(a.shape) if a.shape is not None else []
            ok = len(got) == len(want) and all(
                (w == "B" and not isinstance(g, int)) or (w != "B" and g == w) for g, w in zip(got, want))
            if not ok:
                raise PulseError(f"{what}.onnx {kind} {a.name!r} has shape {got}, the manifest says {list(want)} "
                                 "(a fixed batch where it should be dynamic?); re-export the artefacts")


class OrtRunner(Runner):
    """PULSE step and render graphs on ONNX Runtime.

    Args:
        manifest:   engine.manifest.Manifest of the artefact directory.
        device:     "cpu" (CPUExecutionProvider) or "cuda" (CUDAExecutionProvider, device 0).
        threads:    intra-op threads (default: os.cpu_count()).
        cuda_graph: with device="cuda", capture and replay the step as a CUDA graph.
        device_id:  CUDA device.
    """

    def __init__(self, manifest: Manifest, device: str = "cpu", *, threads: int | None = None,
                 cuda_graph: bool = True, device_id: int = 0, profile: str | None = None):
        super().__init__(manifest)
        if device not in ("cpu", "cuda"):
            raise PulseError(f"OrtRunner device must be 'cpu' or 'cuda', got {device!r}")
        self.device = device
        self.name = "ort" if device == "cpu" else "ort-cuda"
        self.threads = threads
        self.cuda_graph = bool(cuda_graph)
        self.device_id = int(device_id)
        self.profile = profile
        self._step_sess = self._render_sess = None

    # -- lifecycle --------------------------------------------------------------------------------
    def _providers(self):
        ort = _ort()
        if self.device == "cpu":
            return ["CPUExecutionProvider"], ["CPUExecutionProvider"]
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise PulseError("backend ort-cuda needs onnxruntime-gpu with the CUDA execution provider "
                             "(pip install onnxruntime-gpu); this onnxruntime has "
                             + ", ".join(ort.get_available_providers()))
        opts = {"device_id": str(self.device_id)}
        step_opts = dict(opts, enable_cuda_graph="1" if self.cuda_graph else "0")
        return [("CUDAExecutionProvider", step_opts)], [("CUDAExecutionProvider", opts)]

    def _activate(self) -> None:
        ort = _ort()
        step_providers, render_providers = self._providers()
        so = session_options(self.threads, self.profile)
        try:
            self._step_sess = ort.InferenceSession(str(self.manifest.step_path), so, providers=step_providers)
            self._render_sess = ort.InferenceSession(str(self.manifest.render_path), session_options(self.threads),
                                                     providers=render_providers)
        except Exception as e:  # ORT raises its own exception types for corrupt files
            oom = ort_memory_error(e, "loading the graphs")
            if oom is not None:
                raise oom from None
            raise PulseError(f"cannot load the ONNX graphs of {str(self.manifest.dir)!r}: {str(e).splitlines()[0]}") from None
        self._graph_ids: dict[int, int] = {}
        check_session_io(self._step_sess, self.manifest.step_inputs, self.manifest.step_outputs, "step")
        check_session_io(self._render_sess, self.manifest.render_inputs, self.manifest.render_outputs, "render")

    def _deactivate(self) -> None:
        if self.profile and self._step_sess is not None:
            self.profile_file = self._step_sess.end_profiling()
        self._step_sess = self._render_sess = None
        self._bindings = self._sets = self._best = self._consts = None

    # -- buffers ----------------------------------------------------------------------------------
    def _alloc(self, shape) -> object:
        if self.device == "cpu":
            return np.empty(shape, np.float32)
        ort = _ort()
        return ort.OrtValue.ortvalue_from_shape_and_type(list(shape), np.float32, "cuda", self.device_id)

    def _upload(self, a: np.ndarray):
        a = np.ascontiguousarray(a, np.float32)
        if self.device == "cpu":
            return a.copy()
        return _ort().OrtValue.ortvalue_from_numpy(a, "cuda", self.device_id)

    def _bind_in(self, binding, name: str, buf) -> None:
        if self.device == "cpu":
            binding.bind_input(name, "cpu", 0, np.float32, list(buf.shape), buf.ctypes.data)
        else:
            binding.bind_ortvalue_input(name, buf)

    def _bind_out(self, binding, name: str, buf) -> None:
        if self.device == "cpu":
            binding.bind_output(name, "cpu", 0, np.float32, list(buf.shape), buf.ctypes.data)
        else:
            binding.bind_ortvalue_output(name, buf)

    def load(self, feeds: dict) -> None:
        """Copy a chunk's step inputs (all but lr, t) into the bound buffers: constants once,
        state into set A, set B allocated; two bindings A->B and B->A."""
        self._require_active()
        batch = self._check_load(feeds)
        m = self.manifest
        state_names = [s.name for s in m.state]
        # Bound by pointer: every buffer must live on self as long as the bindings do.
        self._consts = consts = {k: self._upload(v) for k, v in feeds.items() if k not in state_names}
        set_a = {k: self._upload(feeds[k]) for k in state_names}
        set_b = {k: self._alloc(feeds[k].shape) for k in state_names}
        if self.device == "cpu":
            self._scalars = {"lr": np.zeros((), np.float32), "t": np.zeros((), np.float32)}
        else:
            self._scalars = {k: self._upload(np.zeros((), np.float32)) for k in ("lr", "t")}
        self._losses = [{name: self._alloc((batch,)) for name in LOSS_OUTPUTS} for _ in range(2)]
        self._sets = (set_a, set_b)
        self._bindings = []
        for d in range(2):
            src, dst = self._sets[d], self._sets[1 - d]
            b = self._step_sess.io_binding()
            for k, v in consts.items():
                self._bind_in(b, k, v)
            for k, v in self._scalars.items():
                self._bind_in(b, k, v)
            for s in m.state:
                self._bind_in(b, s.name, src[s.name])
                self._bind_out(b, s.next, dst[s.name])
            for name, v in self._losses[d].items():
                self._bind_out(b, name, v)
            self._bindings.append(b)
        self._best = {p: np.array(feeds[p], np.float32, copy=True) for p in m.params}
        self._cur = 0  # the set holding the state the next step reads
        self._last_in = None  # the set the last step read
        self._run_options = None
        if self.device == "cuda" and self.cuda_graph:
            ort = _ort()
            self._run_options = []
            for d in range(2):
                key = (batch, d)
                gid = self._graph_ids.setdefault(key, len(self._graph_ids) + 1)  # 0 means "no graph id" in ORT
                ro = ort.RunOptions()
                ro.add_run_config_entry("gpu_graph_id", str(gid))
                self._run_options.append(ro)
        self.batch = batch
        self.step_seconds = 0.0

    # -- per step ---------------------------------------------------------------------------------
    def _step(self, lr: float, t: int) -> dict:
        d = self._cur
        if self.device == "cpu":
            self._scalars["lr"][...] = lr
            self._scalars["t"][...] = t
        else:
            self._scalars["lr"].update_inplace(np.asarray(lr, np.float32))
            self._scalars["t"].update_inplace(np.asarray(t, np.float32))
        ro = self._run_options[d] if self._run_options else None
        try:
            self._step_sess.run_with_iobinding(self._bindings[d], ro)
        except Exception as e:  # noqa: BLE001  ORT's exception types; an allocation failure is not a bug
            oom = ort_memory_error(e, f"running the step graph at batch {self.batch}")
            if oom is not None:
                raise oom from None
            raise
        losses = self._losses[d]
        if self.device == "cpu":
            out = {term: losses[name].copy() for term, name in zip(TERMS, LOSS_OUTPUTS)}
        else:
            out = {term: losses[name].numpy() for term, name in zip(TERMS, LOSS_OUTPUTS)}  # [B] D2H
        self._last_in, self._cur = d, 1 - d
        return out

    def keep(self, rows: np.ndarray) -> None:
        """Copy rows [B] bool of the optimised tensors' input state of the last step aside."""
        self._require_loaded()
        rows = np.asarray(rows, bool)
        if self._last_in is None or not rows.any():
            return
        src = self._sets[self._last_in]
        for p, best in self._best.items():
            if self.device == "cpu":
                best[rows] = src[p][rows]
            else:
                best[rows] = src[p].numpy()[rows]  # D2H of one state tensor: small (a few KB a row)

    def best(self) -> dict:
        self._require_loaded()
        return {p: v.copy() for p, v in self._best.items()}

    def current(self) -> dict:
        """Host copy of the whole state the next step will read (tests, replays)."""
        self._require_loaded()
        src = self._sets[self._cur]
        return {k: (v.copy() if self.device == "cpu" else v.numpy()) for k, v in src.items()}

    def render(self, feeds: dict) -> dict:
        """{latent, noise{i} non-zero} [B, ...] -> {image [B, 3, R, R], lr_image [B, 3, lr, lr]}."""
        self._require_active()
        self._check_render(feeds)
        names = list(self.manifest.render_outputs)
        try:
            outs = self._render_sess.run(names, feeds)
        except Exception as e:  # noqa: BLE001
            oom = ort_memory_error(e, "rendering")
            if oom is not None:
                raise oom from None
            raise
        return dict(zip(names, outs))

    def run_step(self, feeds: dict) -> dict:
        """Stateless step for checks: every step input -> every step output (host arrays)."""
        self._require_active()
        from .runner import check_feeds  # noqa: PLC0415

        check_feeds(feeds, self.manifest.step_inputs, None, f"{self.name} step")
        names = list(self.manifest.step_outputs)
        return dict(zip(names, self._step_sess.run(names, feeds)))
