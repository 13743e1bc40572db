"""The PULSE search over exported artefacts: continuous batching of starts in B slots (numpy only).

The same algorithm as the PyTorch reference (export/reference.py), with the same starts
(engine.state), the same schedule (PulseOptions.lr_at) and the same bookkeeping (engine.result),
so both sides pick the same best iterates and restarts. What changes is how rows share the
graph (as LLM servers batch requests): a request is one input; it runs as one or more starts
(jobs); a job holds one slot (one row of the step graph, graph contract 2) from its first step to
its last, at its own step count, and a freed slot takes the next job at once.

Per scheduler step (`Scheduler.step()`, one block of at most `sync_every` steps):
  1. Take in new requests and cancellations (thread-safe inbox); a cancelled request's jobs
     leave the queue and their slots, and it gets no record.
  2. Admit: free slots (lowest first) take queued jobs. Per job: its seeded start
     (engine.state.start_state of (index, restart), the same stream as a lockstep run), radii
     sqrt(sum x^2 + 1e-9) over dims >= 2; runner.write_rows. The step starts the row over when
     its t is 1 (zero moments, best = start), so no state is written by the host.
  3. Compact (runners that can move rows, when nothing waits): the highest rows move into free
     lower slots, so the rows in use are a prefix [0, n) and the step runs n rows, not B.
  4. Run k = min(sync_every, the longest remaining job) steps over rows [0, n): each row gets
     the lr and t of its own step (t = 0 once its job has ended within the block, and for empty
     slots: such rows do not move). One host synchronisation per block: the [k, 4, n] loss ring.
     A request with render_every = R (intermediate images, PULSE's save_intermediate) asks for
     its starts' iterates at every step s with s % R == 0: the block is run in pieces split at
     those steps and the rows are rendered between the pieces (runner.render; start.X for step
     0), so the block's length, its retirements, admissions and early stops, and every row's
     arithmetic stay what they are without renders: results never depend on them (each piece is
     one more host synchronisation, paid only while such a row runs). The images go to
     request.on_render (a Snapshot each) before the block's bookkeeping.
  5. Per job: TrajectoryTracker.update for each step it ran (the history, best step, smallest
     L2: the same records as a lockstep run). A job retires when it has run its steps or, with
     options.early_stop, when its L2 is within eps (decided at the block's end, so it may run up
     to k - 1 steps past that point). Retiring jobs' best iterates (best.X, kept by the step) are
     rendered; their slots are free for the next block. With request.keep_restarts every start's
     result is kept (ImageResult.restarts), not only the chosen one's.
  6. A request whose jobs are done is finished when one succeeded or it has no restarts left
     (engine.result.pick_restart among its starts); otherwise its next restart (options.restarts:
     up to that many extra starts, each queued only after the previous ones missed eps) is queued
     ahead of new requests. Progress, observe and completion callbacks run last.

Results do not depend on the slot, the neighbours, the number of slots or sync_every (with
early_stop off): every row's arithmetic is its own (the graphs are batch-independent per row;
exact on ONNX Runtime CPU, tests/engine/test_scheduler.py).
"""
from __future__ import annotations

import collections
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .errors import PulseError
from .options import PulseOptions
from .result import ImageResult, TrajectoryTracker, pick_restart
from .runner import TERMS, Runner
from .state import start_state

# The host reads the losses every K = 4 steps, chosen by measurement (benchmarks/RESULTS.md,
# "Engine v2"): on ORT CPU images/s is flat in K from 1 to 16 within the noise of the machine,
# while early stopping overshoots by up to K - 1 steps (compute 0.57 of lockstep at K = 1, 0.58
# at 4, 0.63 at 16); 4 cuts host round trips, what a GPU pays for (not yet measured), to a quarter.
DEFAULT_SYNC_EVERY = 4


def sphere_radius(x: np.ndarray) -> np.ndarray:
    """sqrt(sum x^2 + 1e-9) over dims >= 2, keepdims: latent [B, L, D] -> [B, L, 1]; noise
    [B, C, H, W] -> [B, 1, 1, 1] (docs/artifacts.md; float32 like the reference)."""
    x = np.asarray(x, np.float32)
    dims = (2,) if x.ndim == 3 else tuple(range(1, x.ndim))
    return np.sqrt(np.square(x).sum(axis=dims, keepdims=True, dtype=np.float32) + np.float32(1e-9)).astype(np.float32)


def check_targets(targets, lr_size: int) -> np.ndarray:
    """targets [N, 3, lr, lr] floats in [0, 1] -> float32 contiguous; PulseError otherwise."""
    t = np.asarray(targets)
    if t.ndim != 4 or t.shape[0] < 1 or t.shape[1] != 3 or t.shape[2:] != (lr_size, lr_size):
        raise PulseError(f"targets must be [N, 3, {lr_size}, {lr_size}], got shape {list(t.shape)}")
    if not np.issubdtype(t.dtype, np.floating):
        raise PulseError(f"targets must be floats in [0, 1], got dtype {t.dtype}")
    t = np.ascontiguousarray(t, np.float32)
    if not np.isfinite(t).all() or t.min() < 0.0 or t.max() > 1.0:
        raise PulseError("targets must be finite values in [0, 1]")
    return t


def check_render_request(every, iterate: str, callback) -> None:
    """A request's intermediate-image settings (Request.render_every, render_iterate, on_render):
    PulseError (one line) unless every is an integer >= 0 (0: none), iterate one of
    INTERMEDIATE_ITERATES, and a callable callback is given when every >= 1."""
    if not isinstance(every, int) or isinstance(every, bool) or every < 0:
        raise PulseError(f"render_every must be an integer >= 0 (0: no intermediate images), got {every!r}")
    if iterate not in INTERMEDIATE_ITERATES:
        raise PulseError(f"render_iterate must be one of {', '.join(INTERMEDIATE_ITERATES)}, got {iterate!r}")
    if every and not callable(callback):
        raise PulseError("render_every needs a callable on_render to receive the intermediate images")


def start_rows(manifest, options: PulseOptions, target: np.ndarray, rows: list[tuple[int, int]]) -> dict:
    """Per-row step inputs (manifest.row_inputs) of starts given as (input index, restart):
    target [m, 3, lr, lr] (one per start), seeded start.X, radius.X, frozen noise."""
    start = start_state(manifest.spec, options, rows)
    params = {"latent": start.latent}
    for i, role in enumerate(start.roles):
        if role == "trainable":
            params[f"noise{i}"] = start.noise[i]
    feeds = {"target": np.ascontiguousarray(target, np.float32)}
    for name, x in params.items():
        feeds[f"start.{name}"] = np.ascontiguousarray(x, np.float32)
        feeds[f"radius.{name}"] = sphere_radius(x)
    for name in manifest.frozen:
        feeds[name] = np.ascontiguousarray(start.noise[int(name[5:])], np.float32)
    return feeds


@dataclass(eq=False)
class Observation:
    """What one block did for a request, given to Request.observe in the worker thread.

    done, total: as progress(done, total).
    l2:          the L2 of every optimiser step the request ran in this block, start by start
                 (slot order), one value per step (len(l2) steps of `done` ran in this block).
    min_l2:      the smallest L2 so far over all its starts.
    render():    [3, R, R] float32 in [0, 1], the best iterate so far (of the running start with
                 the lowest best loss, else of the best finished start); only during the call.
    Rendering reads best.X and changes nothing: results do not depend on who observes.
    """

    done: int
    total: int
    l2: list
    min_l2: float
    _render: Callable[[], np.ndarray] | None = field(default=None, repr=False)

    def render(self) -> np.ndarray:
        if self._render is None:
            raise PulseError("Observation.render() is only valid inside the observe callback")
        return self._render()


INTERMEDIATE_ITERATES = ("current", "best")  # what a request's intermediate images show


@dataclass(frozen=True, eq=False)
class Snapshot:
    """One intermediate image of a start (Request.render_every), given to Request.on_render in
    the worker thread; its arrays are the request's to keep.

    index:    the request's input index.
    restart:  the start (0-based: duplicates first, then restarts; record["restart"]'s numbering).
    step:     the optimiser step (0-based, s % render_every == 0).
    iterate:  "current": the iterate step `step` evaluates (history[step] is its loss; step 0 is
              the seeded start), as an earlier version of PULSE's code saved it; "best": the best
              iterate over steps 0..step (the first lowest TOTAL so far), as PULSE's June 2020
              code yields it.
    image:    [3, R, R] float32 in [0, 1] (the render graph: clamp of the generator's image).
    lr_image: [3, lr, lr] float32: its bicubic downscale.
    """

    index: int
    restart: int
    step: int
    iterate: str
    image: np.ndarray
    lr_image: np.ndarray


@dataclass(eq=False)
class Request:
    """One input and what its search produced.

    target:   [3, lr, lr] float32 in [0, 1].
    index:    the input index that keys its starts: start k is seeded by (options.seed, index, k).
    options:  the request's PulseOptions (None: the manifest's; graph options must be the
              manifest's, the runtime ones are free, per request).
    progress: optional progress(done, total): optimiser steps run over its starts, and that plus
              the steps still planned (grows when a restart is queued, shrinks on early stop).
    observe:  optional observe(Observation) after every block it ran in (with progress): the
              per-step L2 and a render of the best iterate so far (the service's curve, preview).
    on_done:  optional on_done(request), called once: result, error or cancelled is set.
    render_every: 0 (default) or R >= 1: intermediate images of every start at the steps s with
              s % R == 0 (1: every step, as PULSE's save_intermediate), each a Snapshot given to
              on_render (required then) in the worker thread, in step order per start, before
              the request's result. A callback that raises fails its own request only.
    render_iterate: "current" (default: the iterate each such step evaluates) or "best" (the best
              iterate so far); see Snapshot.
    keep_restarts: keep every start's result (result.restarts, by restart), not only the best.
    Filled in: result (ImageResult), error (an exception), cancelled, seconds (submission to
    completion), starts_run, steps_run.
    """

    target: np.ndarray
    index: int = 0
    options: PulseOptions | None = None
    progress: Callable[[int, int], None] | None = None
    observe: Callable[[Observation], None] | None = None
    on_done: Callable[["Request"], None] | None = None
    render_every: int = 0
    render_iterate: str = "current"
    on_render: Callable[[Snapshot], None] | None = None
    keep_restarts: bool = False
    id: int = field(default_factory=itertools.count().__next__)
    result: ImageResult | None = None
    error: BaseException | None = None
    cancelled: bool = False
    seconds: float = 0.0
    starts_run: int = 0
    steps_run: int = 0
    # scheduler bookkeeping
    _submitted: float = 0.0
    _records: list = field(default_factory=list)  # (restart, record) per finished start
    _best: tuple | None = None  # (restart, record, history, hr, lr) of the best start so far
    _starts: list = field(default_factory=list)  # with keep_restarts: ImageResult per finished start
    _pending: int = 0  # jobs queued or running
    _next_restart: int = 0
    _cancel_asked: bool = False

    @property
    def done(self) -> bool:
        return self.result is not None or self.error is not None or self.cancelled

    def cancel(self) -> None:
        """Ask for cancellation: the scheduler drops its jobs at the next block boundary."""
        self._cancel_asked = True


@dataclass(eq=False)
class Job:
    """One start of a request, in the queue or in a slot."""

    request: Request
    restart: int
    steps: int
    lr: np.ndarray  # [steps] float32: options.lr_at(j)
    slot: int = -1
    done: int = 0  # steps run
    tracker: TrajectoryTracker | None = None

    @property
    def remaining(self) -> int:
        return self.steps - self.done


class Scheduler:
    """B slots over one runner, a queue of jobs, one search loop (module docstring).

    Args:
        runner:     an active Runner (engine/runner.py) for the artefacts.
        slots:      rows of the step graph (B).
        sync_every: steps between host synchronisations (K): losses are read, jobs retired and
                    admitted every K steps.
    add(request) and cancel(request) may be called from any thread; step() from one thread.
    """

    def __init__(self, runner: Runner, slots: int = 8, sync_every: int = DEFAULT_SYNC_EVERY):
        for name, v in (("slots", slots), ("sync_every", sync_every)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise PulseError(f"{name} must be an integer >= 1, got {v!r}")
        self.runner = runner
        self.manifest = runner.manifest
        self.slots = slots
        self.sync_every = sync_every
        runner.open(slots, sync_every)
        self._lock = threading.Lock()
        self._inbox: list[Request] = []
        self._active: dict[int, Request] = {}  # taken in, not finished
        self._queue: collections.deque[Job] = collections.deque()
        self._slot: list[Job | None] = [None] * slots
        self.blocks = 0  # blocks run (each one host synchronisation)
        self.row_steps = 0  # optimiser steps run, summed over jobs: the compute

    # -- thread-safe entry points -----------------------------------------------------------------
    def add(self, request: Request) -> Request:
        """Queue a request (checked here: options, target, index; PulseError otherwise)."""
        m = self.manifest
        request.options = m.resolve_options(request.options)
        if not isinstance(request.index, int) or isinstance(request.index, bool) or request.index < 0:
            raise PulseError(f"index must be an integer >= 0, got {request.index!r}")
        request.target = check_targets(np.asarray(request.target)[None], m.lr_size)[0]
        check_render_request(request.render_every, request.render_iterate, request.on_render)
        if not isinstance(request.keep_restarts, bool):
            raise PulseError(f"keep_restarts must be True or False, got {request.keep_restarts!r}")
        request._submitted = time.perf_counter()
        with self._lock:
            self._inbox.append(request)
        return request

    def cancel(self, request: Request) -> None:
        """Cancel a request: its jobs leave the queue and their slots at the next block boundary;
        it finishes as cancelled, with no record."""
        request.cancel()

    def has_work(self) -> bool:
        with self._lock:
            return bool(self._inbox or self._active)

    @property
    def running(self) -> int:
        """Slots in use (a cancelled request's until the next block boundary)."""
        return sum(j is not None for j in self._slot)

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot: handed in, or queued with none of their starts running
        (a restart between starts); cancelled ones are not counted. Any thread."""
        with self._lock:
            inbox = sum(not r._cancel_asked for r in self._inbox)
        busy = {j.request.id for j in list(self._slot) if j is not None}
        queued = {j.request.id for j in list(self._queue) if not j.request._cancel_asked}
        return inbox + len(queued - busy)

    # -- the loop ---------------------------------------------------------------------------------
    def run_until_done(self) -> None:
        """step() until nothing is queued or running (single-threaded use)."""
        while self.has_work():
            self.step()

    def step(self) -> None:
        """One block: take in, admit, compact, run, retire (module docstring, steps 1-6)."""
        finished: list[Request] = []
        self._take_in(finished)
        self._admit(finished)
        self._compact()
        occupied = [(s, j) for s, j in enumerate(self._slot) if j is not None]
        if occupied:
            self._run_block(occupied, finished)
        for r in finished:
            self._finish(r)

    def fail_all(self, error: BaseException) -> None:
        """Finish every request taken in or waiting with `error` (the engine's last resort when a
        block fails in a way the scheduler did not foresee); the slots are free afterwards."""
        with self._lock:
            new, self._inbox = self._inbox, []
        finished = []
        for r in list(self._active.values()) + new:
            r.error = error
            self._drop(r, finished)
        for r in finished:
            self._finish(r)

    def _take_in(self, finished: list) -> None:
        with self._lock:
            new, self._inbox = self._inbox, []
        for r in new:
            self._active[r.id] = r
            r._pending = r._next_restart = r.options.duplicates
            self._queue.extend(self._job(r, k) for k in range(r.options.duplicates))
        for r in [r for r in self._active.values() if r._cancel_asked]:
            r.cancelled = True
            self._drop(r, finished)

    def _drop(self, r: Request, finished: list) -> None:
        """Take a request's jobs out of the queue and the slots; it is finished."""
        self._queue = collections.deque(j for j in self._queue if j.request is not r)
        for s, j in enumerate(self._slot):
            if j is not None and j.request is r:
                self._slot[s] = None
        self._active.pop(r.id, None)
        r._pending = 0
        if r not in finished:
            finished.append(r)

    def _job(self, r: Request, restart: int) -> Job:
        o = r.options
        lr = np.array([o.lr_at(j) for j in range(o.steps)], np.float32)
        return Job(request=r, restart=restart, steps=o.steps, lr=lr)

    def _admit(self, finished: list) -> None:
        free = [s for s, j in enumerate(self._slot) if j is None]
        jobs = []
        while free and self._queue:
            job = self._queue.popleft()
            job.slot = free.pop(0)
            job.tracker = TrajectoryTracker(1, job.request.options.eps)
            jobs.append(job)
        for job in jobs:  # one write per job: its options (seed) are its own
            r = job.request
            if r.done:  # an earlier start of it failed to load just now
                continue
            try:
                feeds = start_rows(self.manifest, r.options, r.target[None], [(r.index, job.restart)])
                self.runner.write_rows([job.slot], feeds)
            except Exception as e:  # noqa: BLE001  (this request fails alone)
                r.error = e
                self._drop(r, finished)
                continue
            self._slot[job.slot] = job

    def _compact(self) -> None:
        """Move the highest rows into free lower slots (nothing waits, runner.can_move_rows)."""
        if self._queue or not self.runner.can_move_rows:
            return
        while True:
            used = [s for s, j in enumerate(self._slot) if j is not None]
            free = [s for s, j in enumerate(self._slot) if j is None]
            if not used or not free or free[0] > used[-1]:
                return
            src, dst = used[-1], free[0]
            self.runner.move_row(src, dst)
            job = self._slot[src]
            self._slot[src], self._slot[dst], job.slot = None, job, dst

    def _run_block(self, occupied: list, finished: list) -> None:
        n = occupied[-1][0] + 1
        k = min(self.sync_every, max(j.remaining for _, j in occupied))
        lr = np.zeros((k, n), np.float32)
        t = np.zeros((k, n), np.float32)
        for s, job in occupied:
            m = min(k, job.remaining)
            lr[:m, s] = job.lr[job.done:job.done + m]
            t[:m, s] = np.arange(job.done + 1, job.done + m + 1)
        renders = self._render_plan(occupied, k)
        failed: dict[int, tuple[Request, BaseException]] = {}  # request id -> (request, its error)
        try:
            losses = self._run_pieces(n, lr, t, renders, failed)  # {term: [k, n]}
        except Exception as e:  # noqa: BLE001  (the requests in the block fail; the engine goes on)
            for _, job in occupied:
                job.request.error = e
                self._drop(job.request, finished)
            return
        self.blocks += 1
        for r, e in failed.values():  # a render or on_render that raised: that request only
            r.error = e
            self._drop(r, finished)
        retiring = []
        block_l2: dict[int, list] = {}  # request id -> the L2 of its steps in this block
        for s, job in occupied:
            m = min(k, job.remaining)
            self.row_steps += m
            if job.request.done:
                continue
            if job.request.observe is not None:
                block_l2.setdefault(job.request.id, []).extend(float(v) for v in losses["L2"][:m, s])
            for i in range(m):
                job.tracker.update(job.done + i, {term: losses[term][i, s:s + 1] for term in TERMS})
            job.done += m
            job.request.steps_run += m
            o = job.request.options
            if job.done >= job.steps or (o.early_stop and bool(job.tracker.success[0])):
                retiring.append(job)
        if retiring:
            self._retire(retiring, finished)
        for r in {id(j.request): j.request for _, j in occupied}.values():
            if not r.done and r not in finished:
                self._progress(r, finished)
            if not r.done and r not in finished:
                self._observe(r, block_l2.get(r.id, []), finished)

    @staticmethod
    def _render_plan(occupied: list, k: int) -> dict:
        """{j: [(job, source, step)]}: the renders a block of k steps owes its rows' requests
        (Request.render_every), to make after j of its steps (0 <= j <= k). Step s of a start
        evaluates the state after s updates: "current" renders it before the block's step
        s - done runs (source X, or start.X for s = 0, whose state the row's first step reads from
        start.X); "best" after that step (best.X then holds the best over steps 0..s)."""
        plan: dict[int, list] = {}
        for _, job in occupied:
            r = job.request
            if not r.render_every:
                continue
            for step in range(job.done, job.done + min(k, job.remaining)):
                if step % r.render_every:
                    continue
                if r.render_iterate == "best":
                    j, source = step - job.done + 1, "best"
                else:
                    j, source = step - job.done, ("start" if step == 0 else "current")
                plan.setdefault(j, []).append((job, source, step))
        return plan

    def _run_pieces(self, n: int, lr: np.ndarray, t: np.ndarray, renders: dict, failed: dict) -> dict:
        """runner.run over the block's k = len(lr) steps, in pieces split where `renders`
        (_render_plan) asks for images; renders between the pieces, then hands the Snapshots to
        their requests' on_render. Errors of a render or a callback go to `failed` (that request
        only); the steps of the block all run. Returns the block's {term: [k, n]}."""
        k, pos, parts, shots = lr.shape[0], 0, [], []
        for j in sorted(set(renders) | {k}):
            if j > pos:
                parts.append(self.runner.run(n, lr[pos:j], t[pos:j]))
                pos = j
            for source, group in _group_by_source(renders.get(j, ()), failed):
                try:
                    images = self.runner.render([job.slot for job, _ in group], source)
                except Exception as e:  # noqa: BLE001  (the requests that asked fail alone)
                    for job, _ in group:
                        failed.setdefault(job.request.id, (job.request, e))
                    continue
                for i, (job, step) in enumerate(group):
                    r = job.request
                    shots.append((r, Snapshot(index=r.index, restart=job.restart, step=step, iterate=r.render_iterate,
                                              image=images["image"][i].copy(), lr_image=images["lr_image"][i].copy())))
        for r, shot in shots:
            if r.id in failed:
                continue
            try:
                r.on_render(shot)
            except Exception as e:  # noqa: BLE001  (a callback that raises fails its own request only)
                failed[r.id] = (r, e)
        if len(parts) == 1:
            return parts[0]
        return {term: np.concatenate([p[term] for p in parts]) for term in TERMS}

    def _retire(self, jobs: list, finished: list) -> None:
        try:
            images = self.runner.render_best([j.slot for j in jobs])
        except Exception as e:  # noqa: BLE001
            for j in jobs:
                j.request.error = e
                self._drop(j.request, finished)
            return
        for i, job in enumerate(jobs):
            r = job.request
            self._slot[job.slot] = None
            if r.done:
                continue
            record = job.tracker.record(0)
            r._records.append((job.restart, record))
            r.starts_run += 1
            r._pending -= 1
            candidate = (job.restart, record, job.tracker.history(0), images["image"][i].copy(),
                         images["lr_image"][i].copy())
            if r.keep_restarts:
                r._starts.append(ImageResult(hr=candidate[3], lr=candidate[4], history=candidate[2],
                                             record={"input": r.index, "restart": job.restart, **record,
                                                     "backend": self.runner.name}))
            pair = sorted([c for c in (r._best, candidate) if c is not None], key=lambda c: c[0])  # by restart
            r._best = pair[pick_restart([c[1] for c in pair])]
            if r._pending:
                continue
            succeeded = any(rec["success"] for _, rec in r._records)
            if not succeeded and r._next_restart < r.options.duplicates + r.options.restarts:
                r._pending += 1
                self._queue.appendleft(self._job(r, r._next_restart))  # ahead of new requests
                r._next_restart += 1
                continue
            r.seconds = time.perf_counter() - r._submitted
            restart, rec, history, hr, lr = r._best
            record = {"input": r.index, "restart": restart, "starts": r.starts_run, **rec,
                      "search_steps": r.steps_run, "seconds": r.seconds, "backend": self.runner.name,
                      "options": r.options.to_dict()}
            r.result = ImageResult(hr=hr, lr=lr, record=record, history=history,
                                   restarts=sorted(r._starts, key=lambda x: x.record["restart"]))
            self._active.pop(r.id, None)
            finished.append(r)

    def _planned(self, r: Request) -> int:
        """Steps still planned for a request: the rest of its running and queued jobs."""
        left = sum(j.remaining for j in self._queue if j.request is r)
        return left + sum(j.remaining for j in self._slot if j is not None and j.request is r)

    def _progress(self, r: Request, finished: list) -> None:
        if r.progress is None:
            return
        try:
            r.progress(r.steps_run, r.steps_run + self._planned(r))
        except Exception as e:  # noqa: BLE001  (a callback that raises fails its own request only)
            r.error = e
            self._drop(r, finished)

    def _observe(self, r: Request, l2: list, finished: list) -> None:
        if r.observe is None:
            return
        running = [j for j in self._slot if j is not None and j.request is r]
        lows = [rec["min_l2"] for _, rec in r._records] + [float(j.tracker.min_l2[0]) for j in running]

        def render() -> np.ndarray:
            if running:
                job = min(running, key=lambda j: float(j.tracker.best_total[0]))
                return self.runner.render_best([job.slot])["image"][0].copy()
            return r._best[3].copy()  # between starts: the best finished one

        obs = Observation(r.steps_run, r.steps_run + self._planned(r), l2, min(lows) if lows else float("inf"), render)
        try:
            r.observe(obs)
        except Exception as e:  # noqa: BLE001  (a callback that raises fails its own request only)
            r.error = e
            self._drop(r, finished)
        finally:
            obs._render = None

    def _finish(self, r: Request) -> None:
        if r.result is not None and r.progress is not None:
            try:
                r.progress(r.steps_run, r.steps_run)
            except Exception as e:  # noqa: BLE001
                r.result, r.error = None, e
        if r.on_done is not None:
            r.on_done(r)


def _group_by_source(items, failed: dict) -> list:
    """[(source, [(job, step)])] of a render point's (job, source, step) items, skipping the
    requests that already failed or finished."""
    groups: dict[str, list] = {}
    for job, source, step in items:
        if job.request.id in failed or job.request.done:
            continue
        groups.setdefault(source, []).append((job, step))
    return list(groups.items())
