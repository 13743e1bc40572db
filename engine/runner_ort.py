"""ONNX Runtime runners: CPU (the default on every machine) and CUDA (state stays on the GPU).

Both bind every step input and output by pointer with IO binding (engine/runner.py's interface):
the state ping-pongs between two sets (binding A->B reads set A and writes `next.X` into set B),
so a step moves no state at all, and the best iterate is kept by the step itself. A binding is
made per (rows in use n, direction, ring position j) on first use and kept: step j of a run reads
lr / t from row j of the [ring, slots] rings and writes the four loss vectors into row j of the
[ring, 4, slots] loss ring, so a run of k steps needs no transfer between its steps.

- CPU: the buffers are numpy arrays (ORT reads and writes them in place); per-row writes and row
  moves are numpy row copies. Sessions use every core for intra-op work (inter-op 1, sequential:
  the step graph is one chain), graph optimisation level ALL.
- CUDA: the buffers are OrtValues in device memory (rows bound by device pointer). Per-row
  inputs are kept in host mirrors and uploaded whole (OrtValue.update_inplace) before a run that
  follows a write: the state itself never crosses the bus (a row starts over inside the step when
  its t is 1). Within a run every step but the last skips ORT's end-of-run stream
  synchronisation (run option disable_synchronize_execution_providers); the last synchronises
  and the loss ring comes back in one copy. With `cuda_graph=True` each binding is captured as
  its own CUDA graph (run option gpu_graph_id) and replayed. Rows are not moved on CUDA (ORT's
  Python API has no device-to-device row copy): the scheduler then shrinks the rows in use from
  the top only.
"""
from __future__ import annotations

import os
import re

import numpy as np

from .errors import PulseError
from .manifest import LOSS_OUTPUTS, Manifest
from .runner import TERMS, Runner, check_feeds


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


def _raise_oom_or(e: BaseException, what: str):
    """Re-raise ONNX Runtime's exception `e` as a MemoryError when it is an allocation failure."""
    oom = ort_memory_error(e, what)
    if oom is not None:
        raise oom from None
    raise e


def session_options(threads: int | None = None, profile: str | None = None, tuning: dict | None = None):
    """SessionOptions for the PULSE graphs: `threads` intra-op threads (default: every core),
    one inter-op thread, sequential execution, every graph optimisation. ONNX Runtime's own log
    is off (fatal only): every failure reaches the caller as an exception, turned into one line
    (PulseError, MemoryError), so its coloured log line would only say the same thing twice.
    `tuning` (benchmarks/ort_session_options.py): SessionOptions attributes by name
    (e.g. {"enable_mem_pattern": False}) and session config entries by their dotted key
    (e.g. {"session.set_denormal_as_zero": "1"})."""
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
    for name, value in (tuning or {}).items():
        if "." in name:
            so.add_session_config_entry(name, str(value))
        elif hasattr(so, name):
            setattr(so, name, value)
        else:
            raise PulseError(f"unknown ONNX Runtime session option {name!r}")
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
        cuda_graph: with device="cuda", capture and replay each step binding as a CUDA graph.
        device_id:  CUDA device.
        profile:    file prefix: the step session writes ONNX Runtime's profile (the file is
                    runner.profile_file after deactivate(); pulse_trt.ort_profile summarises it).
        tuning:     extra session options (session_options), e.g. {"session.set_denormal_as_zero": "1"}.
    """

    def __init__(self, manifest: Manifest, device: str = "cpu", *, threads: int | None = None,
                 cuda_graph: bool = True, device_id: int = 0, profile: str | None = None,
                 tuning: dict | None = None):
        super().__init__(manifest)
        if device not in ("cpu", "cuda"):
            raise PulseError(f"OrtRunner device must be 'cpu' or 'cuda', got {device!r}")
        self.device = device
        self.name = "ort" if device == "cpu" else "ort-cuda"
        self.can_move_rows = device == "cpu"
        self.threads = threads
        self.cuda_graph = bool(cuda_graph)
        self.device_id = int(device_id)
        self.memory = ("cpu", 0) if device == "cpu" else ("cuda", self.device_id)  # where bound buffers live
        self.profile = profile
        self.tuning = dict(tuning or {})
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
        so = session_options(self.threads, self.profile, self.tuning)
        try:
            self._step_sess = ort.InferenceSession(str(self.manifest.step_path), so, providers=step_providers)
            self._render_sess = ort.InferenceSession(str(self.manifest.render_path), session_options(self.threads, tuning=self.tuning),
                                                     providers=render_providers)
        except Exception as e:  # ORT raises its own exception types for corrupt files
            oom = ort_memory_error(e, "loading the graphs")
            if oom is not None:
                raise oom from None
            raise PulseError(f"cannot load the ONNX graphs of {str(self.manifest.dir)!r}: {str(e).splitlines()[0]}") from None
        self._graph_ids: dict = {}
        if self.device != "cpu":
            check_cuda_provider(self._step_sess, self._render_sess)
        check_session_io(self._step_sess, self.manifest.step_inputs, self.manifest.step_outputs, "step")
        check_session_io(self._render_sess, self.manifest.render_inputs, self.manifest.render_outputs, "render")

    def _deactivate(self) -> None:
        if self.profile and self._step_sess is not None:
            self.profile_file = self._step_sess.end_profiling()
        self._step_sess = self._render_sess = None
        self._bindings = self._sets = self._rows = self._mirror = None

    # -- buffers ----------------------------------------------------------------------------------
    def _zeros(self, shape) -> object:
        if self.device == "cpu":
            return np.zeros(shape, np.float32)
        return _ort().OrtValue.ortvalue_from_numpy(np.zeros(shape, np.float32), "cuda", self.device_id)

    def _ptr(self, buf) -> int:
        return buf.ctypes.data if self.device == "cpu" else buf.data_ptr()

    def _bind(self, binding, output: bool, name: str, buf, shape, offset: int = 0) -> None:
        """Bind `name` to `shape` float32 values at byte `offset` of buffer `buf` (by pointer)."""
        bind = binding.bind_output if output else binding.bind_input
        bind(name, *self.memory, np.float32, list(shape), self._ptr(buf) + offset)

    def _open(self, plan) -> None:
        self._plan = plan
        # Bound by pointer: every buffer lives on self as long as the bindings do.
        self._rows = {b.name: self._zeros(b.shape) for b in plan.rows}
        self._sets = tuple({b.name: self._zeros(b.shape) for b, _ in plan.state} for _ in range(2))
        self._rings = {b.name: self._zeros(b.shape) for b in plan.rings}
        self._loss_ring = self._zeros(plan.losses.shape)
        self._row_bytes = {b.name: b.row_bytes for b in plan.rows}
        self._row_bytes.update({b.name: b.row_bytes for b, _ in plan.state})
        self._shapes = {b.name: b.shape[1:] for b in plan.rows}
        self._shapes.update({b.name: b.shape[1:] for b, _ in plan.state})
        if self.device == "cuda":  # host mirrors of what the host writes; uploaded whole before a run
            self._mirror = {b.name: np.zeros(b.shape, np.float32) for b in list(plan.rows) + list(plan.rings)}
            self._dirty = set()
        self._bindings, self._run_options = {}, {}
        self._cur = 0  # the set holding the state the next step reads

    def _binding(self, n: int, d: int, j: int):
        """IO binding of step j of a run over rows [0, n) reading state set d (made once)."""
        key = (n, d, j)
        b = self._bindings.get(key)
        if b is not None:
            return b
        slots, f4 = self.slots, 4
        b = self._step_sess.io_binding()
        for name, buf in self._rows.items():
            self._bind(b, False, name, buf, (n, *self._shapes[name]))
        for name in ("lr", "t"):
            self._bind(b, False, name, self._rings[name], (n,), j * slots * f4)
        src, dst = self._sets[d], self._sets[1 - d]
        for s in self.manifest.state:
            self._bind(b, False, s.name, src[s.name], (n, *self._shapes[s.name]))
            self._bind(b, True, s.next, dst[s.name], (n, *self._shapes[s.name]))
        for i, name in enumerate(LOSS_OUTPUTS):
            self._bind(b, True, name, self._loss_ring, (n,), (j * len(LOSS_OUTPUTS) + i) * slots * f4)
        self._bindings[key] = b
        return b

    def _options(self, n: int, d: int, j: int, last: bool):
        """RunOptions of a CUDA step: its own CUDA graph id; no stream sync unless it is the last."""
        key = (n, d, j, last)
        ro = self._run_options.get(key)
        if ro is None:
            ro = _ort().RunOptions()
            if not last:
                ro.add_run_config_entry("disable_synchronize_execution_providers", "1")
            if self.cuda_graph:
                gid = self._graph_ids.setdefault((self.slots, n, d, j), len(self._graph_ids) + 1)  # 0: no id
                ro.add_run_config_entry("gpu_graph_id", str(gid))
            self._run_options[key] = ro
        return ro

    # -- per row, per run -------------------------------------------------------------------------
    def _write_rows(self, rows: list[int], feeds: dict) -> None:
        for name, a in feeds.items():
            if self.device == "cpu":
                self._rows[name][rows] = a
            else:
                self._mirror[name][rows] = a
                self._dirty.add(name)

    def _upload(self, names) -> None:
        for name in names:
            buf = self._rows[name] if name in self._rows else self._rings[name]
            buf.update_inplace(self._mirror[name])  # H2D, whole buffer

    def _run(self, n: int, lr: np.ndarray, t: np.ndarray) -> dict:
        k = lr.shape[0]
        if self.device == "cpu":
            self._rings["lr"][:k, :n] = lr
            self._rings["t"][:k, :n] = t
        else:
            self._mirror["lr"][:k, :n] = lr
            self._mirror["t"][:k, :n] = t
            self._upload(sorted(self._dirty) + ["lr", "t"])
            self._dirty = set()
        for j in range(k):
            d = self._cur
            ro = self._options(n, d, j, j == k - 1) if self.device == "cuda" else None
            try:
                self._step_sess.run_with_iobinding(self._binding(n, d, j), ro)
            except Exception as e:  # noqa: BLE001  ORT's exception types; an allocation failure is not a bug
                _raise_oom_or(e, f"running the step graph on {n} rows")
            self._cur = 1 - d
        ring = self._loss_ring if self.device == "cpu" else self._loss_ring.numpy()  # one D2H on CUDA
        return {term: np.array(ring[:k, i, :n]) for i, term in enumerate(TERMS)}

    def _move_row(self, src: int, dst: int) -> None:
        for buf in list(self._rows.values()) + list(self._sets[self._cur].values()):
            buf[dst] = buf[src]

    def read_rows(self, names, rows=None) -> dict:
        """Host copies of per-row inputs or current state tensors (tests, replays): {name: [m, ...]}."""
        self._require_open()
        rows = list(range(self.slots)) if rows is None else self._check_rows(rows)
        out = {}
        for name in names:
            if name in self._rows:
                buf = self._rows[name] if self.device == "cpu" else self._mirror[name]
            else:
                buf = self._sets[self._cur][name]
                buf = buf if self.device == "cpu" else buf.numpy()
            out[name] = np.array(buf[rows])
        return out

    def _render(self, rows: list[int], iterate: str) -> dict:
        """Render one iterate of slots `rows` (Runner.render): {image [m, 3, R, R], lr_image
        [m, 3, lr, lr]}. CPU: the rows are gathered into one call. CUDA: one call per row, its
        inputs bound by device pointer to the row of the source buffer (best.X, X or start.X; no
        state crosses the bus; the image comes back)."""
        names = list(self.manifest.render_outputs)
        cur = self._sets[self._cur]
        sources = {name: self.render_source(name, iterate) for name in self.manifest.render_inputs}
        if self.device == "cpu":
            feeds = {name: np.ascontiguousarray(cur[src][rows] if src in cur else self._rows[src][rows])
                     for name, src in sources.items()}
            try:
                return dict(zip(names, self._render_sess.run(names, feeds)))
            except Exception as e:  # noqa: BLE001
                _raise_oom_or(e, "rendering")
        if self._dirty:  # per-row inputs written since the last run (start.X, frozen noise): upload first
            self._upload(sorted(self._dirty))
            self._dirty = set()
        outs = {name: [] for name in names}
        for r in rows:
            b = self._render_sess.io_binding()
            for name, src in sources.items():
                buf = cur[src] if src in cur else self._rows[src]
                self._bind(b, False, name, buf, (1, *self._shapes[name]), r * self._row_bytes[src])
            for name in names:
                b.bind_output(name, "cpu")
            try:
                self._render_sess.run_with_iobinding(b)
            except Exception as e:  # noqa: BLE001
                _raise_oom_or(e, "rendering")
            for name, v in zip(names, b.copy_outputs_to_cpu()):
                outs[name].append(v)
        return {name: np.concatenate(v) for name, v in outs.items()}

    def run_step(self, feeds: dict) -> dict:
        """Stateless step for checks: every step input -> every step output (host arrays)."""
        self._require_active()
        check_feeds(feeds, self.manifest.step_inputs, None, f"{self.name} step")
        names = list(self.manifest.step_outputs)
        return dict(zip(names, self._step_sess.run(names, feeds)))


def check_cuda_provider(*sessions) -> None:
    """ONNX Runtime falls back to the CPU, with only a log line, when its CUDA provider cannot load
    its libraries (CUDA / cuDNN missing or mismatched): `--backend ort-cuda` would then time the CPU
    without saying so. Refuse instead, naming what the session got."""
    for sess in sessions:
        got = sess.get_providers()
        if not got or got[0] != "CUDAExecutionProvider":
            raise PulseError("backend ort-cuda: ONNX Runtime could not start its CUDA provider (CUDA or cuDNN libraries "
                             f"missing or mismatched?) and would run on {', '.join(got) or 'nothing'}; fix the CUDA "
                             "install or use --backend ort")
