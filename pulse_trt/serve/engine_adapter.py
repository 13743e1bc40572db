"""The one seam between the HTTP service and the search engine: submit a face, get a ticket.

    engine = SearchEngine(Pulse(lr_size=8), slots=8)
    engine.start()                                            # artefacts found or exported, warmed
    ticket = engine.submit(target, options, progress=cb)      # target [3, lr, lr] float in [0, 1]
    ticket.future.result()                                    # ImageResult (or SearchCancelled)
    ticket.cancel("client went away")                         # out of the queue, or its rows stop

The service (app.py) knows only this interface: submit / cancel / progress callbacks / queue
depth / busy slots / counters. When the continuous-batching scheduler (issue 12: engine/
scheduler.py, `Pulse.submit`) lands, this module alone changes: `submit` becomes the scheduler's
submit, `Ticket.cancel` its cancel (the slot is freed at the next sync), and the batching below
goes away.

What runs today (the lockstep engine of engine/loop.py, driven one chunk at a time):
  1. `pulse_trt.api.Pulse` resolves the artefacts (the cache, exporting on first use, or
     --artifacts; TensorRT engines built there) and is closed again; the worker opens one runner
     on them (engine.api.make_runner), so one process holds one engine.
  2. One worker thread takes the oldest queued ticket and, in queue order, every other queued
     ticket with the same lockstep key (steps, learning rate, schedule), while their rows
     (options.duplicates each) fit in `slots`. Seeds, duplicates and the target are per ticket.
  3. The chunk runs as engine.loop.run_search does (same starts, schedule, tracker, restart
     choice: for one ticket the result equals Pulse.search's), with per-ticket starts keyed by
     (seed, index, restart), so a result does not depend on its neighbours beyond float rounding.
     After every step each ticket's progress callback gets (step, steps, L2 now, min L2), and
     every `preview_every` steps a render of its best iterate so far.
  4. Cancellation: a queued ticket leaves the queue at once; a running ticket's future fails at
     once, but its rows run until the chunk ends unless every ticket of the chunk is cancelled,
     in which case the chunk stops at the next step (the slots are free). Per-row retirement is
     the scheduler's (issue 12).
A new ticket waits for the running chunk to end (up to `steps` steps): admission into free slots
mid-search is the scheduler's too.
"""
from __future__ import annotations

import collections
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..engine.errors import PulseError
from ..engine.options import PulseOptions
from ..engine.result import ImageResult, TrajectoryTracker, pick_restart, to_uint8

STATES = ("queued", "running", "done", "failed", "cancelled")
WARMUP_STEPS = 2
RATE_WINDOW_S = 30.0  # steps/s and images/s are averaged over this window


class SearchCancelled(PulseError):
    """A ticket's search was cancelled (by its client, a deadline or shutdown); str() says why."""


@dataclass
class Progress:
    """One progress report of a ticket, after `step` of `steps` optimiser steps.

    l2:     the L2 of this step (the smallest over the ticket's starts).
    min_l2: the smallest L2 so far.
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
    started: float | None = None
    _engine: "SearchEngine | None" = None

    @property
    def key(self) -> tuple:
        """Tickets with the same key can share a lockstep chunk."""
        o = self.options
        return (o.steps, o.learning_rate, o.lr_schedule)

    @property
    def rows(self) -> int:
        return self.options.duplicates

    def cancel(self, reason: str = "cancelled") -> bool:
        """Cancel with `reason`; False when it had already finished."""
        return self._engine._cancel(self, reason) if self._engine is not None else False


class SearchEngine:
    """One engine for the whole process; tickets from every client share its slots.

    Args:
        pulse:  a pulse_trt.api.Pulse for the generator, LR size, graph options and backend
                (not backend "torch": the service runs exported artefacts).
        slots:  rows searched together (each ticket takes options.duplicates rows).
        log:    receives one-line messages (export on first use, warm-up).
        runner_options: passed to the runner (e.g. threads=2 for "ort").
    Capabilities of today's engine (the scheduler's differ): early_stop is not available;
    restarts run as duplicates (every start always runs, the best is kept).
    """

    supports_early_stop = False
    restarts_as_duplicates = True

    def __init__(self, pulse, *, slots: int = 8, log: Callable[[str], None] | None = None, **runner_options):
        if pulse.backend == "torch":
            raise PulseError("pulse-trt serve runs exported artefacts: choose --backend ort, ort-cuda or tensorrt")
        if not isinstance(slots, int) or isinstance(slots, bool) or slots < 1:
            raise PulseError(f"slots must be an integer >= 1, got {slots!r}")
        self.pulse = pulse
        self.slots = slots
        self._log = log or (lambda msg: None)
        self._runner_options = runner_options
        self._runner = None
        self.manifest = None
        self.ready = False
        self._cv = threading.Condition()
        self._queue: collections.deque[Ticket] = collections.deque()
        self._running: list[Ticket] = []
        self._running_rows = 0
        self._closing = False
        self._worker: threading.Thread | None = None
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
        return {"generator": self.pulse.describe(), "backend": self.pulse.backend, "precision": self.pulse.precision,
                "device": self.pulse.device, "artifacts_key": self.pulse.key, "lr_size": self.lr_size,
                "resolution": self.resolution, "slots": self.slots, "engine": "lockstep chunks (engine/loop.py)"}

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> "SearchEngine":
        """Find or export the artefacts, open the runner, warm it up with a short search, start
        the worker. Blocking (minutes on a first export); PulseError on failure."""
        from ..engine.api import make_runner  # noqa: PLC0415

        self.pulse.prepare()  # artefacts (cache / export / --artifacts), TensorRT engines
        self.pulse.close()  # its runner: ours is opened below, once
        self.manifest = self.pulse.manifest
        runner = make_runner(self.manifest, self.pulse.backend, **self._runner_options)
        runner.activate()
        self._runner = runner
        warm = Ticket(target=np.zeros((3, self.lr_size, self.lr_size), np.float32),
                      options=PulseOptions(**{**self.options.to_dict(), "steps": WARMUP_STEPS, "duplicates": 1}))
        self._run_chunk([warm], count=False)
        with self._cv:
            self._worker = threading.Thread(target=self._loop, name="pulse-serve-engine", daemon=True)
            self._worker.start()
            self.ready = True
        return self

    def close(self, reason: str = "the server is shutting down") -> None:
        """Cancel everything queued or running with `reason`, stop the worker, release the runner."""
        self.cancel_all(reason)
        with self._cv:
            self._closing = True
            self.ready = False
            self._cv.notify_all()
            worker = self._worker
        if worker is not None:
            worker.join()
        if self._runner is not None:
            self._runner.deactivate()
            self._runner = None

    # -- tickets ----------------------------------------------------------------------------------
    def submit(self, target: np.ndarray, options: PulseOptions, *, index: int = 0,
               progress: Callable[[Progress], None] | None = None, preview_every: int = 0) -> Ticket:
        """Queue one search. target [3, lr, lr] float32 in [0, 1]; options: its PulseOptions
        (graph options as the artefacts', runtime ones free); index keys its seeded starts
        (start k: (seed, index, k)). PulseError when the engine is not running or the ticket
        cannot fit (more duplicates than slots)."""
        if options.duplicates > self.slots:
            raise PulseError(f"{options.duplicates} starts per face need {options.duplicates} slots; this server has {self.slots}")
        ticket = Ticket(target=target, options=options, index=index, progress=progress, preview_every=preview_every)
        ticket._engine = self
        with self._cv:
            if not self.ready or self._closing:
                raise PulseError("the engine is not running")
            self._queue.append(ticket)
            self._cv.notify_all()
        return ticket

    def _cancel(self, ticket: Ticket, reason: str) -> bool:
        with self._cv:
            if ticket.state in ("done", "failed", "cancelled"):
                return False
            if ticket.state == "queued":
                try:
                    self._queue.remove(ticket)
                except ValueError:
                    pass
            ticket.state = "cancelled"
            self.finished["cancelled"] += 1
        if not ticket.future.done():
            ticket.future.set_exception(SearchCancelled(reason))
        return True

    def cancel_all(self, reason: str) -> int:
        """Cancel every queued and running ticket; returns how many."""
        with self._cv:
            tickets = list(self._queue) + list(self._running)
        return sum(t.cancel(reason) for t in tickets)

    @property
    def queue_depth(self) -> int:
        """Searches waiting for a slot."""
        with self._cv:
            return len(self._queue)

    @property
    def busy_slots(self) -> int:
        """Rows of the running chunk (cancelled rows still count until the chunk stops)."""
        with self._cv:
            return self._running_rows

    def idle(self) -> bool:
        with self._cv:
            return not self._queue and not self._running

    def rates(self, now: float | None = None) -> tuple[float, float]:
        """(optimiser row-steps per second, images per second) over the last RATE_WINDOW_S."""
        now = time.perf_counter() if now is None else now
        with self._cv:
            while self._events and self._events[0][0] < now - RATE_WINDOW_S:
                self._events.popleft()
            steps = sum(e[1] for e in self._events)
            images = sum(e[2] for e in self._events)
        return steps / RATE_WINDOW_S, images / RATE_WINDOW_S

    # -- the worker -------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._closing and not self._queue:
                    self._cv.wait()
                if self._closing:
                    return
                chunk = self._take_chunk()
            try:
                self._run_chunk(chunk)
            except Exception as e:  # noqa: BLE001  a failed chunk fails its tickets; the engine goes on
                for t in chunk:
                    self._fail(t, e)
            finally:
                with self._cv:
                    self._running, self._running_rows = [], 0

    def _take_chunk(self) -> list[Ticket]:
        """(Under the lock.) The oldest ticket and, in queue order, others with its key that fit."""
        first = self._queue[0]
        chunk, rows = [], 0
        for t in list(self._queue):
            if t.key == first.key and rows + t.rows <= self.slots:
                chunk.append(t)
                rows += t.rows
                self._queue.remove(t)
        for t in chunk:
            t.state, t.started = "running", time.perf_counter()
        self._running, self._running_rows = chunk, rows
        return chunk

    def _fail(self, ticket: Ticket, error: BaseException) -> None:
        with self._cv:
            if ticket.state in ("done", "failed", "cancelled"):
                return
            ticket.state = "failed"
            self.finished["failed"] += 1
        if not ticket.future.done():
            ticket.future.set_exception(error)

    def _run_chunk(self, chunk: list[Ticket], *, count: bool = True) -> None:
        """engine.loop.run_search's algorithm over the tickets' rows, with per-ticket starts,
        progress, previews and early exit when every ticket is cancelled."""
        from ..engine.loop import chunk_feeds  # noqa: PLC0415

        t0 = time.perf_counter()
        m, runner = self.manifest, self._runner
        opts = chunk[0].options  # the lockstep key: steps, learning rate, schedule
        spans, parts, noise = [], [], []
        for t in chunk:
            o = t.options
            rows = [(t.index, k) for k in range(o.duplicates)]
            feeds, start = chunk_feeds(m, np.repeat(t.target[None], o.duplicates, axis=0), rows, o)
            first = sum(len(s) for s in spans)
            spans.append(range(first, first + o.duplicates))
            parts.append(feeds)
            noise.append(start.noise)
        feeds = {k: np.ascontiguousarray(np.concatenate([p[k] for p in parts])) for k in parts[0]}
        frozen = {f"noise{i}": np.concatenate([n[i] for n in noise]) for i in range(len(noise[0]))}
        n_rows = sum(len(s) for s in spans)
        runner.load(feeds)
        tracker = TrajectoryTracker(n_rows, opts.eps)
        for j in range(opts.steps):
            if all(t.state == "cancelled" for t in chunk):
                return  # every ticket gave up: the slots are free now
            terms = runner.step(opts.lr_at(j), j + 1)
            runner.keep(tracker.update(j, terms))
            if count:
                self._count(n_rows, 0)
            self._report(chunk, spans, tracker, terms, frozen, j + 1, opts.steps)
        best = runner.best()
        out = runner.render(self._render_feeds(best, frozen, slice(None)))
        seconds = time.perf_counter() - t0
        for t, span in zip(chunk, spans):
            records = [tracker.record(r) for r in span]
            chosen = pick_restart(records)
            row = span[chosen]
            record = {"input": t.index, "restart": chosen, **records[chosen], "seconds": seconds,
                      "queue_seconds": t.started - t.submitted if t.started else 0.0, "backend": runner.name,
                      "options": t.options.to_dict()}
            result = ImageResult(hr=out["image"][row].copy(), lr=out["lr_image"][row].copy(), record=record,
                                 history=tracker.history(row))
            with self._cv:
                if t.state != "running":
                    continue  # cancelled while running: no result
                t.state = "done"
                if count:
                    self.finished["success" if record["success"] else "missed"] += 1
            if count:
                self._count(0, 1)
            t.future.set_result(result)

    def _render_feeds(self, best: dict, frozen: dict, rows) -> dict:
        return {name: np.ascontiguousarray(best[name][rows] if name in best else frozen[name][rows])
                for name in self.manifest.render_inputs}

    def _report(self, chunk, spans, tracker, terms, frozen, step: int, steps: int) -> None:
        """Progress callbacks after a step; one render for every ticket due a preview."""
        l2 = np.asarray(terms["L2"], np.float64)
        due = [i for i, t in enumerate(chunk) if t.progress is not None and t.state == "running" and t.preview_every
               and (step % t.preview_every == 0 or step == steps)]
        images = {}
        if due:
            best_rows = [spans[i][int(np.argmin(tracker.best_total[spans[i].start:spans[i].stop]))] for i in due]
            rendered = self._runner.render(self._render_feeds(self._runner.best(), frozen, best_rows))["image"]
            images = {i: to_uint8(rendered[k]) for k, i in enumerate(due)}
        for i, (t, span) in enumerate(zip(chunk, spans)):
            if t.progress is None or t.state != "running":
                continue
            p = Progress(step=step, steps=steps, l2=float(np.nanmin(l2[span.start:span.stop])),
                         min_l2=float(np.min(tracker.min_l2[span.start:span.stop])), image=images.get(i))
            try:
                t.progress(p)
            except Exception as e:  # noqa: BLE001  a callback that raises fails its own ticket only
                self._fail(t, e)

    def _count(self, row_steps: int, images: int) -> None:
        with self._cv:
            self.row_steps += row_steps
            self._events.append((time.perf_counter(), row_steps, images))
