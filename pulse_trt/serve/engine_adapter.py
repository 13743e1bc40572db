"""The one seam between the HTTP service and the search engine: submit a face, get a ticket.

    engine = SearchEngine(Pulse(lr_size=8), slots=8)
    engine.start()                                            # artefacts found or exported, warmed
    ticket = engine.submit(target, options, progress=cb)      # target [3, lr, lr] float in [0, 1]
    ticket.future.result()                                    # ImageResult (or SearchCancelled)
    ticket.cancel("client went away")                         # its slot is freed at the next sync

The service (app.py) knows only this interface: submit / cancel / progress callbacks / queue
depth / busy slots / counters. Underneath is the engine's one search loop, the continuous-
batching scheduler (engine/scheduler.py), through its public API (engine.api.PulseEngine):
  1. `pulse_trt.api.Pulse` resolves the artefacts (the cache, exporting on first use, or
     --artifacts; TensorRT engines built there) and is closed again; one PulseEngine with
     `slots` rows is opened on them, so one process holds one engine.
  2. `submit` is PulseEngine.submit_target with the ticket's own options (steps, seed, restarts,
     early_stop; graph options as the artefacts'): a face takes a free slot at the scheduler's
     next sync (every sync_every steps), beside whatever else runs; its result does not depend
     on its neighbours or its slot.
  3. Progress comes from the scheduler's observe callback after every sync: the L2 of each step
     run since the last one (one Progress per step), the smallest L2 so far, and, every
     `preview_every` steps, a render of the best iterate so far.
  4. `Ticket.cancel` fails the ticket's future at once (SearchCancelled with the reason) and
     cancels the scheduler request: it leaves the queue, or its slot is freed at the next sync.
"""
from __future__ import annotations

import collections
import threading
import time
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..engine.errors import PulseError
from ..engine.options import PulseOptions
from ..engine.result import to_uint8

STATES = ("queued", "running", "done", "failed", "cancelled")
WARMUP_STEPS = 2
RATE_WINDOW_S = 30.0  # steps/s and images/s are averaged over this window


class SearchCancelled(PulseError):
    """A ticket's search was cancelled (by its client, a deadline or shutdown); str() says why."""


@dataclass
class Progress:
    """One progress report of a ticket, after `step` of `steps` optimiser steps (over all its
    starts; `steps` grows when a restart is queued and shrinks on early stop).

    l2:     the L2 of this step.
    min_l2: the smallest L2 so far (over its starts).
    image:  [R, R, 3] uint8 render of the best iterate so far, on preview steps; else None.
    """

    step: int
    steps: int
    l2: float
    min_l2: float
    image: np.ndarray | None = None


@dataclass(eq=False)
class Ticket:
    """One submitted search: `future` resolves to its ImageResult, or raises SearchCancelled /
    the search's error. `state` is one of STATES. Thread-safe: cancel() from any thread."""

    target: np.ndarray  # [3, lr, lr] float32 in [0, 1]
    options: PulseOptions
    index: int = 0
    progress: Callable[[Progress], None] | None = None
    preview_every: int = 0
    future: Future = field(default_factory=Future)
    state: str = "queued"
    submitted: float = field(default_factory=time.perf_counter)
    started: float | None = None  # its first sync in a slot
    _engine: "SearchEngine | None" = None
    _search: Future | None = None  # the engine's future (PulseEngine.submit_target)
    _steps_done: int = 0
    _min_l2: float = float("inf")

    def cancel(self, reason: str = "cancelled") -> bool:
        """Cancel with `reason`; False when it had already finished."""
        return self._engine._cancel(self, reason) if self._engine is not None else False


class SearchEngine:
    """One engine for the whole process; tickets from every client share its slots.

    Args:
        pulse:  a pulse_trt.api.Pulse for the generator, LR size, graph options and backend
                (not backend "torch": the service runs exported artefacts).
        slots:  rows searched together (each start of a ticket takes one while it runs).
        log:    receives one-line messages (export on first use, warm-up).
        runner_options: passed to the runner (e.g. threads=2 for "ort").
    """

    supports_early_stop = True

    def __init__(self, pulse, *, slots: int = 8, log: Callable[[str], None] | None = None, **runner_options):
        if pulse.backend == "torch":
            raise PulseError("pulse-trt serve runs exported artefacts: choose --backend ort, ort-cuda or tensorrt")
        if not isinstance(slots, int) or isinstance(slots, bool) or slots < 1:
            raise PulseError(f"slots must be an integer >= 1, got {slots!r}")
        self.pulse = pulse
        self.slots = slots
        self._log = log or (lambda msg: None)
        self._runner_options = runner_options
        self._engine = None  # engine.api.PulseEngine
        self.manifest = None
        self.ready = False
        self._lock = threading.Lock()
        self._live: set[Ticket] = set()
        self._closing = False
        # counters (read by the metrics): optimiser row-steps, finished searches by outcome
        self.row_steps = 0
        self.finished = collections.Counter()
        self._events: collections.deque = collections.deque()  # (time, row_steps, images)

    # -- description ------------------------------------------------------------------------------
    @property
    def lr_size(self) -> int:
        return self.pulse.lr_size

    @property
    def resolution(self) -> int:
        return self.pulse.resolution

    @property
    def options(self) -> PulseOptions:
        """Default options of a ticket (the Pulse's)."""
        return self.pulse.options

    def describe(self) -> dict:
        sync = self._engine.sync_every if self._engine is not None else None
        return {"generator": self.pulse.describe(), "backend": self.pulse.backend, "precision": self.pulse.precision,
                "device": self.pulse.device, "artifacts_key": self.pulse.key, "lr_size": self.lr_size,
                "resolution": self.resolution, "slots": self.slots, "sync_every": sync,
                "engine": "continuous batching (engine/scheduler.py)"}

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> "SearchEngine":
        """Find or export the artefacts, open the engine, warm it up with a short search. Blocking
        (minutes on a first export); PulseError on failure."""
        from ..engine.api import PulseEngine  # noqa: PLC0415

        self.pulse.prepare()  # artefacts (cache / export / --artifacts), TensorRT engines
        self.pulse.close()  # its engine: ours is opened below, once, with our slots
        self.manifest = self.pulse.manifest
        kwargs = dict(self._runner_options)
        if self.pulse.backend == "tensorrt":
            kwargs.update(self.pulse._trt_engines())
        engine = PulseEngine(self.manifest, self.pulse.backend, slots=self.slots, options=self.options, **kwargs)
        engine.prepare()
        self._engine = engine
        self._warm_up()
        with self._lock:
            self.ready = True
        return self

    def _warm_up(self) -> None:
        """One short search through the engine (first-run allocations happen here, not in a request)."""
        o = PulseOptions(**{**self.options.to_dict(), "steps": WARMUP_STEPS, "duplicates": 1, "restarts": 0,
                            "early_stop": False})
        self._engine.submit_target(np.zeros((3, self.lr_size, self.lr_size), np.float32), options=o).result()

    def close(self, reason: str = "the server is shutting down") -> None:
        """Cancel everything queued or running with `reason`, stop the engine, release the runner."""
        self.cancel_all(reason)
        with self._lock:
            self._closing = True
            self.ready = False
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()

    # -- tickets ----------------------------------------------------------------------------------
    def submit(self, target: np.ndarray, options: PulseOptions, *, index: int = 0,
               progress: Callable[[Progress], None] | None = None, preview_every: int = 0) -> Ticket:
        """Queue one search. target [3, lr, lr] float32 in [0, 1]; options: its PulseOptions
        (graph options as the artefacts', runtime ones free); index keys its seeded starts
        (start k: (seed, index, k)). PulseError when the engine is not running or the options
        do not fit (more duplicates than slots)."""
        if options.duplicates > self.slots:
            raise PulseError(f"{options.duplicates} starts per face need {options.duplicates} slots; this server has {self.slots}")
        ticket = Ticket(target=target, options=options, index=index, progress=progress, preview_every=preview_every)
        ticket._engine = self
        with self._lock:
            if not self.ready or self._closing:
                raise PulseError("the engine is not running")
            engine = self._engine
            self._live.add(ticket)
        try:
            ticket._search = engine.submit_target(target, options=options, index=index,
                                                  progress=lambda done, total: self._on_steps(ticket, done),
                                                  observe=lambda obs: self._on_observe(ticket, obs))
        except BaseException:
            with self._lock:
                self._live.discard(ticket)
            raise
        ticket._search.add_done_callback(lambda f: self._on_done(ticket, f))
        if ticket.state == "cancelled":  # cancelled from another thread while it was being handed in
            ticket._search.cancel()
        return ticket

    def _cancel(self, ticket: Ticket, reason: str) -> bool:
        with self._lock:
            if ticket.state in ("done", "failed", "cancelled"):
                return False
            ticket.state = "cancelled"
            self._live.discard(ticket)
            self.finished["cancelled"] += 1
        if ticket._search is not None:
            ticket._search.cancel()  # the scheduler drops it at its next sync: queue place or slot freed
        if not ticket.future.done():
            ticket.future.set_exception(SearchCancelled(reason))
        return True

    def cancel_all(self, reason: str) -> int:
        """Cancel every queued and running ticket; returns how many."""
        with self._lock:
            tickets = list(self._live)
        return sum(t.cancel(reason) for t in tickets)

    @property
    def queue_depth(self) -> int:
        """Searches waiting for a slot (cancelled ones leave at once)."""
        s = self._engine.scheduler if self._engine is not None else None
        return s.waiting if s is not None else 0

    @property
    def busy_slots(self) -> int:
        """Slots running a start (a cancelled one's until the next sync)."""
        s = self._engine.scheduler if self._engine is not None else None
        return s.running if s is not None else 0

    def idle(self) -> bool:
        """No live ticket and nothing in the scheduler (cancelled starts have left their slots)."""
        with self._lock:
            if self._live:
                return False
        s = self._engine.scheduler if self._engine is not None else None
        return s is None or not s.has_work()

    def rates(self, now: float | None = None) -> tuple[float, float]:
        """(optimiser row-steps per second, images per second) over the last RATE_WINDOW_S."""
        now = time.perf_counter() if now is None else now
        with self._lock:
            while self._events and self._events[0][0] < now - RATE_WINDOW_S:
                self._events.popleft()
            steps = sum(e[1] for e in self._events)
            images = sum(e[2] for e in self._events)
        return steps / RATE_WINDOW_S, images / RATE_WINDOW_S

    # -- engine callbacks (its worker thread) -----------------------------------------------------
    def _on_steps(self, ticket: Ticket, done: int) -> None:
        """progress(done, total) of the scheduler: counts the row-steps (every sync, and the last)."""
        with self._lock:
            new, ticket._steps_done = done - ticket._steps_done, done
            if ticket.state == "queued":
                ticket.state, ticket.started = "running", time.perf_counter()
            self.row_steps += new
            self._events.append((time.perf_counter(), new, 0))

    def _on_observe(self, ticket: Ticket, obs) -> None:
        """The scheduler's observation after a sync -> one Progress per step run since the last."""
        if ticket.progress is None or ticket.state != "running" or not obs.l2:
            return
        first = obs.done - len(obs.l2)  # steps done before this block
        every = ticket.preview_every
        image = None
        if every and obs.done // every > first // every:
            image = to_uint8(obs.render())
        for i, l2 in enumerate(obs.l2):
            ticket._min_l2 = min(ticket._min_l2, l2)
            last = i == len(obs.l2) - 1
            p = Progress(step=first + i + 1, steps=obs.total, l2=l2, min_l2=obs.min_l2 if last else ticket._min_l2,
                         image=image if last else None)
            ticket.progress(p)  # one that raises fails its own ticket (the scheduler's rule)

    def _on_done(self, ticket: Ticket, search: Future) -> None:
        if search.cancelled():
            return  # cancelled by _cancel, which has settled the ticket
        try:
            result = search.result()
        except CancelledError:
            result, error = None, SearchCancelled("cancelled")
        except BaseException as e:  # noqa: BLE001
            result, error = None, e
        with self._lock:
            if ticket.state in ("done", "failed", "cancelled"):
                return
            self._live.discard(ticket)
            if result is None:
                ticket.state = "cancelled" if isinstance(error, SearchCancelled) else "failed"
                self.finished[ticket.state] += 1
            else:
                ticket.state = "done"
                self.finished["success" if result.record["success"] else "missed"] += 1
                self._events.append((time.perf_counter(), 0, 1))
        if result is None:
            ticket.future.set_exception(error)
            return
        started = ticket.started if ticket.started is not None else ticket.submitted
        result.record["queue_seconds"] = started - ticket.submitted  # submission to its first sync in a slot
        ticket.future.set_result(result)
