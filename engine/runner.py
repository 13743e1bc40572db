"""What every backend runner shares: the interface the search loop drives, and its checks.

A runner (after Polygraphy's) owns one backend's sessions and buffers for one artefact
directory. Nothing heavy happens in __init__: sessions, engines and device memory are created in
`activate()` and released in `deactivate()` (or by the `with` statement).

The loop drives a runner through a search chunk of B rows:
  1. load(feeds)          every step input but lr and t ([B, ...] float32, checked by name,
                          dtype and shape): target, state (optimised tensors and moments),
                          radii, frozen noise. Backends copy them into their own buffers once.
  2. step(lr, t)          one iteration; returns the four loss terms {L2, L1, GEOCROSS, TOTAL}
                          [B] float32 of the state *before* the update (the only per-step
                          transfer to the host); the state advances inside the runner
                          (ping-pong: the step's `next.X` outputs become the next step's X).
  3. keep(rows)           rows [B] bool: copy those rows of the optimised tensors' *input* state
                          of the last step aside (their best iterate so far).
  4. best()               {param: [B, ...]} host copies of the kept states.
  5. render(feeds)        latent + non-zero noise [B, ...] -> {image, lr_image} on the host.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .errors import PulseError
from .manifest import LOSS_OUTPUTS, Manifest

TERMS = tuple(name.split(".", 1)[1] for name in LOSS_OUTPUTS)  # L2, L1, GEOCROSS, TOTAL
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


@dataclass(frozen=True)
class BufferPlan:
    """Every buffer of a B-row step, as a device backend lays it out.

    constants: step inputs written once per chunk (target, radii, frozen noise).
    state:     (input X, output next.X) pairs; two buffers each (ping-pong sets A and B).
    scalars:   lr, t (written every step).
    losses:    the four [B] loss outputs (read back every step).
    best:      one buffer per optimised tensor, for the best iterate.
    """

    batch: int
    constants: tuple[Buffer, ...]
    state: tuple[tuple[Buffer, str], ...]
    scalars: tuple[Buffer, ...]
    losses: tuple[Buffer, ...]
    best: tuple[Buffer, ...]

    @property
    def nbytes(self) -> int:
        """Device bytes of the whole plan (state counted twice: ping-pong)."""
        return (sum(b.nbytes for b in self.constants) + 2 * sum(b.nbytes for b, _ in self.state)
                + sum(b.nbytes for b in self.scalars) + sum(b.nbytes for b in self.losses)
                + sum(b.nbytes for b in self.best))


def plan_buffers(manifest: Manifest, batch: int) -> BufferPlan:
    """Lay out the device buffers of a `batch`-row step from the manifest alone (no GPU)."""
    if not isinstance(batch, int) or batch < 1:
        raise PulseError(f"batch must be an integer >= 1, got {batch!r}")
    ins, outs = manifest.step_inputs, manifest.step_outputs
    state_names = {s.name for s in manifest.state}

    def buf(t, name=None) -> Buffer:
        return Buffer(name or t.name, t.concrete(batch), _NP[t.dtype])

    constants = tuple(buf(t) for name, t in ins.items() if name not in state_names and name not in ("lr", "t"))
    state = tuple((buf(ins[s.name]), s.next) for s in manifest.state)
    scalars = (buf(ins["lr"]), buf(ins["t"]))
    losses = tuple(buf(outs[name]) for name in LOSS_OUTPUTS)
    best = tuple(buf(ins[p]) for p in manifest.params)
    return BufferPlan(batch=batch, constants=constants, state=state, scalars=scalars, losses=losses, best=best)


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
            shown = [d if batch is None and d == -1 else d for d in want]
            raise PulseError(f"{what}: input {name!r} has shape {list(a.shape)}, expected "
                             f"{[('B' if d == -1 else d) for d in shown]}")
    return batch


class Runner:
    """Base of the backend runners: activation bookkeeping, checks, timing. Subclasses set
    `name` and implement _activate, _deactivate, load, step, keep, best, render."""

    name = "runner"

    def __init__(self, manifest: Manifest):
        self.manifest = manifest
        self.is_active = False
        self.batch: int | None = None
        self.step_seconds = 0.0  # wall time inside step() since the last load()

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
                self.batch = None

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def _require_active(self) -> None:
        if not self.is_active:
            raise PulseError(f"{self.name} runner is not active: use `with runner:` or runner.activate()")

    def _require_loaded(self) -> None:
        self._require_active()
        if self.batch is None:
            raise PulseError(f"{self.name} runner has no state: call load(feeds) first")

    # -- shared checks ----------------------------------------------------------------------------
    def _check_load(self, feeds: dict) -> int:
        expected = {k: v for k, v in self.manifest.step_inputs.items() if k not in ("lr", "t")}
        return check_feeds(feeds, expected, None, f"{self.name} step")

    def _check_render(self, feeds: dict) -> int:
        return check_feeds(feeds, self.manifest.render_inputs, None, f"{self.name} render")

    def _timed_step(self, lr: float, t: int) -> dict:
        self._require_loaded()
        t0 = time.perf_counter()
        out = self._step(lr, t)
        self.step_seconds += time.perf_counter() - t0
        return out

    def step(self, lr: float, t: int) -> dict:
        """One PULSE iteration at learning rate `lr`, optimiser count `t` (1-based); returns
        {L2, L1, GEOCROSS, TOTAL}: [B] float32 of the state before the update."""
        return self._timed_step(lr, t)

    # -- to implement -----------------------------------------------------------------------------
    def _activate(self) -> None:
        raise NotImplementedError

    def _deactivate(self) -> None:
        raise NotImplementedError

    def load(self, feeds: dict) -> None:
        raise NotImplementedError

    def _step(self, lr: float, t: int) -> dict:
        raise NotImplementedError

    def keep(self, rows: np.ndarray) -> None:
        raise NotImplementedError

    def best(self) -> dict:
        raise NotImplementedError

    def render(self, feeds: dict) -> dict:
        raise NotImplementedError
