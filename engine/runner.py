"""What every backend runner shares: the interface the scheduler drives, and its checks.

A runner (after Polygraphy's) owns one backend's sessions and buffers for one artefact
directory. Nothing heavy happens in __init__: sessions, engines and device memory are created in
`activate()` and released in `deactivate()` (or by the `with` statement). A runner knows tensors
and rows, never requests: engine/scheduler.py decides which search runs in which row.

The scheduler drives a runner with `slots` rows (graph contract 2, docs/artifacts.md):
  1. open(slots, ring)    allocate every buffer for `slots` rows, zeroed: the per-row inputs, the
                          state twice (ping-pong: the step reads set A and writes `next.X` into set
                          B, then the other way round, so a step moves no state), and rings of
                          `ring` steps for lr, t and the four loss vectors.
  2. write_rows(rows, f)  the per-row inputs of searches starting in slots `rows`
                          (manifest.row_inputs: target, start.X, radius.X, frozen noise;
                          [len(rows), ...] float32, checked by name, dtype and shape); other rows
                          are not touched. The state is never written by the host: a row whose t is
                          1 starts from start.X inside the step.
  3. run(n, lr, t)        k = len(lr) steps over rows [0, n) (lr, t [k, n] float32; t = 0: the row
                          does not move); returns {L2, L1, GEOCROSS, TOTAL} [k, n] float32, the
                          terms of the state before each update. The only transfers are the lr / t
                          rings in and the loss ring out: one host synchronisation per call.
  4. move_row(src, dst)   (when can_move_rows) copy every per-row buffer of slot src to slot dst,
                          so the rows in use stay a prefix [0, n) as searches finish.
  5. render(rows, iterate) one iterate of those rows -> {image [m, 3, R, R], lr_image
                          [m, 3, lr, lr]} on the host: "best" (best.X, kept by the step; also
                          render_best(rows)), "current" (X: the state the row's next step
                          evaluates, valid once the row has run a step) or "start" (start.X:
                          the row's seeded start, what its first step evaluates). The render graph
                          takes any latent / noise state (docs/artifacts.md, render.onnx); frozen
                          noise is the row's own in every case.
Counters: `steps_run` (step-graph calls), `syncs` (run() calls: host round trips), `step_seconds`
(wall time inside run()).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .errors import PulseError
from .manifest import LOSS_OUTPUTS, Manifest

TERMS = tuple(name.split(".", 1)[1] for name in LOSS_OUTPUTS)  # L2, L1, GEOCROSS, TOTAL
ITERATES = ("best", "current", "start")  # what render() can draw (module docstring, step 5)
_NP = {"float32": np.float32, "float16": np.float16, "int64": np.int64, "int32": np.int32}


@dataclass(frozen=True)
class Buffer:
    """One device buffer the step needs: name, concrete shape, numpy dtype, bytes."""

    name: str
    shape: tuple[int, ...]
    dtype: type

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    @property
    def row_bytes(self) -> int:
        """Bytes of one row (the first dimension): the unit of row writes and moves."""
        return self.nbytes // self.shape[0]


@dataclass(frozen=True)
class BufferPlan:
    """Every buffer of a `slots`-row step with a ring of `ring` steps, as a backend lays it out.

    rows:   per-row inputs written when a search starts in a slot (target, start.X, radius.X,
            frozen noise), [slots, ...].
    state:  (input X, output next.X) pairs, [slots, ...]; two buffers each (ping-pong sets).
    rings:  lr and t, [ring, slots]: row j feeds step j of a run.
    losses: the four loss outputs, one ring [ring, 4, slots] (term order of LOSS_OUTPUTS).
    """

    slots: int
    ring: int
    rows: tuple[Buffer, ...]
    state: tuple[tuple[Buffer, str], ...]
    rings: tuple[Buffer, ...]
    losses: Buffer

    @property
    def nbytes(self) -> int:
        """Device bytes of the whole plan (state counted twice: ping-pong)."""
        return (sum(b.nbytes for b in self.rows) + 2 * sum(b.nbytes for b, _ in self.state)
                + sum(b.nbytes for b in self.rings) + self.losses.nbytes)


def plan_buffers(manifest: Manifest, slots: int, ring: int = 1) -> BufferPlan:
    """Lay out the buffers of a `slots`-row step with a `ring`-step ring from the manifest alone."""
    for name, v in (("slots", slots), ("ring", ring)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise PulseError(f"{name} must be an integer >= 1, got {v!r}")
    ins = manifest.step_inputs

    def buf(t) -> Buffer:
        return Buffer(t.name, t.concrete(slots), _NP[t.dtype])

    rows = tuple(buf(ins[name]) for name in manifest.row_inputs)
    state = tuple((buf(ins[s.name]), s.next) for s in manifest.state)
    rings = tuple(Buffer(name, (ring, slots), np.float32) for name in ("lr", "t"))
    losses = Buffer("losses", (ring, len(LOSS_OUTPUTS), slots), np.float32)
    return BufferPlan(slots=slots, ring=ring, rows=rows, state=state, rings=rings, losses=losses)


def check_feeds(feeds: dict, expected: dict, batch: int | None, what: str) -> int:
    """Check feeds {name: array} against {name: TensorInfo}: the same names, float32 (or the
    declared dtype), shapes with one common batch. Returns the batch."""
    missing = sorted(set(expected) - set(feeds))
    extra = sorted(set(feeds) - set(expected))
    if missing or extra:
        raise PulseError(f"{what}: inputs {('missing ' + str(missing)) if missing else ''}"
                         f"{' ' if missing and extra else ''}{('unexpected ' + str(extra)) if extra else ''}")
    for name, info in expected.items():
        a = feeds[name]
        if not isinstance(a, np.ndarray):
            raise PulseError(f"{what}: input {name!r} must be a numpy array, got {type(a).__name__}")
        if a.dtype != _NP[info.dtype]:
            raise PulseError(f"{what}: input {name!r} must be {info.dtype}, got {a.dtype}")
        if batch is None and "B" in info.shape and a.ndim == len(info.shape):
            batch = int(a.shape[info.shape.index("B")])
    for name, info in expected.items():
        a = feeds[name]
        want = info.concrete(batch if batch is not None else -1)
        if a.shape != want or (batch is not None and batch < 1):
            raise PulseError(f"{what}: input {name!r} has shape {list(a.shape)}, expected "
                             f"{[('B' if d == -1 else d) for d in want]}")
    return batch


class Runner:
    """Base of the backend runners: activation bookkeeping, checks, counters. Subclasses set
    `name` and implement _activate, _deactivate, _open, _write_rows, _run, _render (and
    _move_row where can_move_rows)."""

    name = "runner"
    can_move_rows = False

    def __init__(self, manifest: Manifest):
        self.manifest = manifest
        self.is_active = False
        self.slots: int | None = None
        self.ring: int | None = None
        self.steps_run = 0  # step-graph calls since open()
        self.syncs = 0  # run() calls since open(): host round trips
        self.step_seconds = 0.0  # wall time inside run() since open()

    # -- lifecycle --------------------------------------------------------------------------------
    def activate(self) -> "Runner":
        if self.is_active:
            raise PulseError(f"{self.name} runner is already active")
        self._activate()
        self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            try:
                self._deactivate()
            finally:
                self.is_active = False
                self.slots = self.ring = None

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def _require_active(self) -> None:
        if not self.is_active:
            raise PulseError(f"{self.name} runner is not active: use `with runner:` or runner.activate()")

    def _require_open(self) -> None:
        self._require_active()
        if self.slots is None:
            raise PulseError(f"{self.name} runner has no slots: call open(slots) first")

    # -- the interface ----------------------------------------------------------------------------
    def open(self, slots: int, ring: int = 1) -> None:
        """Allocate (zeroed) buffers for `slots` rows and a ring of `ring` steps."""
        self._require_active()
        plan = plan_buffers(self.manifest, slots, ring)
        self._open(plan)
        self.slots, self.ring = slots, ring
        self.steps_run = self.syncs = 0
        self.step_seconds = 0.0

    def write_rows(self, rows, feeds: dict) -> None:
        """Write the per-row inputs (manifest.row_inputs) of slots `rows` ([len(rows), ...] each)."""
        self._require_open()
        rows = self._check_rows(rows)
        expected = {k: self.manifest.step_inputs[k] for k in self.manifest.row_inputs}
        check_feeds(feeds, expected, len(rows), f"{self.name} rows")
        self._write_rows(rows, feeds)

    def run(self, n: int, lr, t) -> dict:
        """len(lr) steps over rows [0, n): lr, t [k, n] (k <= ring) -> {term: [k, n]} float32."""
        self._require_open()
        lr, t = np.ascontiguousarray(lr, np.float32), np.ascontiguousarray(t, np.float32)
        if not isinstance(n, (int, np.integer)) or not 1 <= n <= self.slots:
            raise PulseError(f"{self.name} run: n must be in 1..{self.slots}, got {n!r}")
        if lr.ndim != 2 or lr.shape != t.shape or lr.shape[1] != n or not 1 <= lr.shape[0] <= self.ring:
            raise PulseError(f"{self.name} run: lr and t must be [k, {n}] with 1 <= k <= {self.ring}, "
                             f"got {list(lr.shape)} and {list(t.shape)}")
        t0 = time.perf_counter()
        out = self._run(int(n), lr, t)
        self.step_seconds += time.perf_counter() - t0
        self.steps_run += lr.shape[0]
        self.syncs += 1
        return out

    def move_row(self, src: int, dst: int) -> None:
        """Copy every per-row buffer (per-row inputs and the current state) of slot src to dst."""
        self._require_open()
        if not self.can_move_rows:
            raise PulseError(f"{self.name} runner cannot move rows")
        src, dst = self._check_rows([src, dst])
        if src != dst:
            self._move_row(src, dst)

    def render(self, rows, iterate: str = "best") -> dict:
        """{image [m, 3, R, R], lr_image [m, 3, lr, lr]} of one iterate of slots `rows`: "best"
        (best.X), "current" (X) or "start" (start.X) (module docstring, step 5). Reads buffers
        only: rendering changes no search."""
        self._require_open()
        if iterate not in ITERATES:
            raise PulseError(f"{self.name} render: iterate must be one of {', '.join(ITERATES)}, got {iterate!r}")
        return self._render(self._check_rows(rows), iterate)

    def render_best(self, rows) -> dict:
        """render(rows, "best"): the best iterates of slots `rows`."""
        return self.render(rows, "best")

    def render_source(self, name: str, iterate: str) -> str:
        """The buffer that feeds render input `name` ("latent", "noise{i}") for `iterate`: a state
        tensor (best.X or X) or a per-row input (start.X; frozen noise is always the row's own)."""
        if name not in self.manifest.params:
            return name  # frozen noise: a per-row input
        return {"best": f"best.{name}", "current": name, "start": f"start.{name}"}[iterate]

    def _check_rows(self, rows) -> list[int]:
        rows = [int(r) for r in rows]
        if not rows or any(not 0 <= r < self.slots for r in rows):
            raise PulseError(f"{self.name}: rows must be slot indices in 0..{self.slots - 1}, got {rows}")
        return rows

    def _check_render(self, feeds: dict) -> int:
        return check_feeds(feeds, self.manifest.render_inputs, None, f"{self.name} render")

    # -- to implement -----------------------------------------------------------------------------
    def _activate(self) -> None:
        raise NotImplementedError

    def _deactivate(self) -> None:
        raise NotImplementedError

    def _open(self, plan: BufferPlan) -> None:
        raise NotImplementedError

    def _write_rows(self, rows: list[int], feeds: dict) -> None:
        raise NotImplementedError

    def _run(self, n: int, lr: np.ndarray, t: np.ndarray) -> dict:
        raise NotImplementedError

    def _move_row(self, src: int, dst: int) -> None:
        raise NotImplementedError

    def _render(self, rows: list[int], iterate: str) -> dict:
        raise NotImplementedError
