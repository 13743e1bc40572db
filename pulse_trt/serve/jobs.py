"""Jobs: what the service tracks per request (one uploaded image, one or more faces), fed by the
engine adapter's progress callbacks from its worker thread and read by the HTTP handlers.

A job's state: queued (no face has started) -> running -> done (every face has a result) |
failed (a face's search raised; the others are cancelled) | cancelled (DELETE, deadline, client
gone, shutdown; `error` says which). `version` grows with every change, so a reader (the
server-sent events stream) can wait for news without missing any.
"""
from __future__ import annotations

import collections
import secrets
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .engine_adapter import Progress, SearchCancelled, Ticket

TERMINAL = ("done", "failed", "cancelled")


@dataclass(eq=False)
class Face:
    """One face of a job: its input, search progress and result."""

    index: int
    target: np.ndarray  # [3, lr, lr] float32 in [0, 1]
    truth: np.ndarray | None = None  # [3, R, R] aligned crop (align=true)
    box: tuple | None = None  # detection box in the photo (align=true)
    label: str = ""
    ticket: Ticket | None = None
    state: str = "queued"
    step: int = 0
    steps: int = 0
    l2: float | None = None
    min_l2: float | None = None
    l2_history: list = field(default_factory=list)
    preview: bytes | None = None  # PNG of the best iterate so far
    preview_step: int = 0
    result: object = None  # engine.result.ImageResult
    record: dict | None = None
    error: str | None = None


@dataclass(eq=False)
class Job:
    """One request: faces searched on the shared engine. Thread-safe."""

    faces: list[Face]
    kind: str = "job"  # "job" (POST /v1/jobs) or "sync" (POST /v1/upsample)
    name: str = "upload"
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    created: float = field(default_factory=time.time)
    finished: float | None = None
    state: str = "queued"
    error: str | None = None
    version: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _done: threading.Event = field(default_factory=threading.Event)
    make_record: object = None  # make_record(face, result) -> dict, run when a record is first read
    _watchers: list = field(default_factory=list)

    def watch(self, callback, *, progress: bool = True) -> None:
        """callback() after every change (progress=False: only when a face or the job ends), from
        whichever thread made it (keep it short)."""
        with self._lock:
            self._watchers.append((callback, progress))

    def unwatch(self, callback) -> None:
        with self._lock:
            self._watchers = [w for w in self._watchers if w[0] is not callback]

    def _notify(self, *, progress: bool = False) -> None:
        with self._lock:
            watchers = [cb for cb, wants_progress in self._watchers if wants_progress or not progress]
        for w in watchers:
            w()

    def record(self, face: Face) -> dict | None:
        """The face's record once it is done (made on first read, outside the engine's thread)."""
        with self._lock:
            if face.record is None and face.result is not None and self.make_record is not None:
                face.record = self.make_record(face, face.result)
            return face.record

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    # -- fed by the engine (worker thread) ----------------------------------------------------------
    def on_progress(self, face: Face, p: Progress, png=None) -> None:
        with self._lock:
            if face.state in TERMINAL:
                return
            face.state, face.step, face.steps = "running", p.step, p.steps
            face.l2, face.min_l2 = p.l2, p.min_l2
            face.l2_history.append(p.l2)
            if p.image is not None and png is not None:
                face.preview, face.preview_step = png(p.image), p.step
            if self.state == "queued":
                self.state = "running"
            self.version += 1
        self._notify(progress=True)

    def on_done(self, face: Face, future) -> None:
        """A face's future resolved: keep its result, or fail / cancel the job. (Runs in the
        engine's thread: nothing heavy here.)"""
        exc = future.exception()
        with self._lock:
            if face.state in TERMINAL:
                return
            if exc is None:
                face.result = future.result()
                face.state, face.step = "done", int(face.result.record["steps"])
                face.l2_history = list(face.result.history.get("L2", face.l2_history))
                if face.l2_history:  # the last sync's steps are reported by the result, not by progress
                    face.l2 = float(face.l2_history[-1])
                face.min_l2 = float(face.result.record.get("min_l2", face.min_l2))
            elif isinstance(exc, SearchCancelled):
                face.state, face.error = "cancelled", str(exc)
            else:
                face.state, face.error = "failed", _one_line(exc)
            self.version += 1
        self._notify()
        if exc is not None and not isinstance(exc, SearchCancelled):
            self.cancel(f"face {face.index} failed: {_one_line(exc)}", state="failed")
        self._settle()

    def _settle(self) -> None:
        with self._lock:
            if self.terminal:
                return
            states = [f.state for f in self.faces]
            if not all(s in TERMINAL for s in states):
                return
            if all(s == "done" for s in states):
                self.state = "done"
            elif "failed" in states:
                self.state = "failed"
                self.error = self.error or next(f.error for f in self.faces if f.state == "failed")
            else:
                self.state = "cancelled"
                self.error = self.error or next(f.error for f in self.faces if f.state == "cancelled")
            self.finished = time.time()
            self.version += 1
        self._done.set()
        self._notify()

    # -- from the handlers ----------------------------------------------------------------------
    def cancel(self, reason: str, *, state: str = "cancelled") -> bool:
        """Cancel every face still searching; the job ends in `state` with `reason` as its error.
        False when it had already finished."""
        with self._lock:
            if self.terminal:
                return False
            self.error = reason
            tickets = [f.ticket for f in self.faces if f.ticket is not None and f.state not in TERMINAL]
            for f in self.faces:
                if f.state not in TERMINAL:
                    f.state, f.error = "cancelled", reason
            self.version += 1
        for t in tickets:
            t.cancel(reason)
        with self._lock:
            if not self.terminal:
                self.state = state
                self.finished = time.time()
                self.version += 1
        self._done.set()
        self._notify()
        return True

    def status(self, *, history: bool = False) -> dict:
        """JSON-ready status: state, step / steps over all faces, L2 so far (the largest current L2
        over the faces: all are within eps when it is), per face the same and the record."""
        for f in self.faces:
            self.record(f)
        with self._lock:
            faces = []
            for f in self.faces:
                d = {"index": f.index, "state": f.state, "step": f.step, "steps": f.steps, "l2": f.l2,
                     "min_l2": f.min_l2, "error": f.error, "record": f.record}
                if f.box is not None:
                    d["box"] = list(f.box)
                if history:
                    d["l2_history"] = list(f.l2_history)
                faces.append(d)
            l2s = [f.l2 for f in self.faces if f.l2 is not None]
            return {"id": self.id, "state": self.state, "error": self.error, "name": self.name,
                    "faces_total": len(self.faces), "step": sum(f.step for f in self.faces),
                    "steps": sum(f.steps for f in self.faces), "l2": max(l2s) if l2s else None,
                    "created": self.created, "finished": self.finished, "faces": faces}

    def snapshot(self, since: list[int]) -> tuple[int, list[dict]]:
        """(version, events) for the event stream: per face the L2 points after since[face] (an
        index per face, advanced here) and a new preview. Events: dicts with "event" and "data"."""
        events = []
        with self._lock:
            for f in self.faces:
                new = f.l2_history[since[f.index]:]
                if new or f.state in TERMINAL:
                    events.append({"event": "progress",
                                   "data": {"face": f.index, "state": f.state, "step": f.step, "steps": f.steps,
                                            "first_step": since[f.index] + 1, "l2": new, "min_l2": f.min_l2}})
                    since[f.index] += len(new)
            return self.version, events


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class JobStore:
    """Jobs submitted with POST /v1/jobs, by id. Finished jobs are kept for `ttl` seconds and at
    most `max_jobs` are held (the oldest finished go first); full of live jobs -> add() is False."""

    def __init__(self, max_jobs: int = 1000, ttl: float = 3600.0):
        self.max_jobs, self.ttl = max_jobs, ttl
        self._jobs: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self._lock = threading.Lock()

    def add(self, job: Job) -> bool:
        with self._lock:
            self._expire()
            if len(self._jobs) >= self.max_jobs:
                finished = [k for k, j in self._jobs.items() if j.terminal]
                if not finished:
                    return False
                del self._jobs[finished[0]]
            self._jobs[job.id] = job
            return True

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            self._expire()
            return self._jobs.get(job_id)

    def live(self) -> list[Job]:
        with self._lock:
            return [j for j in self._jobs.values() if not j.terminal]

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)

    def _expire(self) -> None:
        now = time.time()
        for k in [k for k, j in self._jobs.items() if j.terminal and j.finished is not None and now - j.finished > self.ttl]:
            del self._jobs[k]
