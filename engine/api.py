"""PulseEngine: the Python API over exported artefacts (no torch).

    from pulse_trt.engine.api import PulseEngine
    with PulseEngine("artifacts/dcgan-8") as engine:
        results = engine.upsample([face_uint8_8x8x3, pil_image])    # list[ImageResult], blocking
        future = engine.submit(face, progress=lambda done, total: ...)  # concurrent.futures.Future
        hr = to_uint8(future.result().hr)                            # [R, R, 3] uint8
        future.cancel()                                              # frees its slot at the next sync

One search loop: every call goes through the engine's continuous-batching scheduler
(engine/scheduler.py), driven by one worker thread that owns the runner. submit() may be called
from any thread; requests from different callers share the slots, and a request's result does
not depend on what runs beside it. There is no global state, so two engines on two artefact
directories run side by side. Exporting artefacts (torch) is pulse_trt.api's job, not this
module's.
"""
from __future__ import annotations

import threading
from concurrent.futures import CancelledError, Future
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import PulseError
from .manifest import Manifest, load_manifest
from .options import PulseOptions
from .result import ImageResult
from .runner import Runner
from .scheduler import (DEFAULT_SYNC_EVERY, INTERMEDIATE_ITERATES, Observation, Request, Scheduler, Snapshot,
                        check_render_request, check_targets)

BACKENDS = ("ort", "ort-cuda", "tensorrt")
DEFAULT_SLOTS = 8


def make_runner(manifest: Manifest, backend: str = "ort", **kwargs) -> Runner:
    """Runner of `backend` for the artefacts: "ort" (CPU), "ort-cuda", "tensorrt" (needs
    DIR/step.engine and DIR/render.engine from export/trt_build.py, or engine paths in kwargs)."""
    if backend == "ort":
        from .runner_ort import OrtRunner  # noqa: PLC0415

        return OrtRunner(manifest, "cpu", **kwargs)
    if backend == "ort-cuda":
        from .runner_ort import OrtRunner  # noqa: PLC0415

        return OrtRunner(manifest, "cuda", **kwargs)
    if backend == "tensorrt":
        from .runner_trt import TrtRunner  # noqa: PLC0415

        return TrtRunner(manifest, **kwargs)
    raise PulseError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")


def image_to_chw01(image, lr_size: int, index: int = 0) -> np.ndarray:
    """One input -> [3, lr, lr] float32 in [0, 1] (k / 255).

    Accepts a PIL image (converted to RGB) or a uint8 array [H, W, 3]; H and W must equal
    lr_size. Raises PulseError otherwise."""
    what = f"image {index}"
    try:
        from PIL import Image  # noqa: PLC0415

        if isinstance(image, Image.Image):
            if image.mode not in ("RGB", "L"):
                raise PulseError(f"{what}: PIL mode {image.mode} is not RGB; convert it first (image.convert('RGB'))")
            image = np.asarray(image.convert("RGB"))
    except ImportError:  # pragma: no cover - Pillow is a dependency
        pass
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise PulseError(f"{what}: expected uint8 pixels, got {a.dtype}")
    if a.ndim != 3 or a.shape[2] != 3:
        raise PulseError(f"{what}: expected an [H, W, 3] RGB array, got shape {list(a.shape)}")
    if a.shape[:2] != (lr_size, lr_size):
        raise PulseError(f"{what} is {a.shape[1]}x{a.shape[0]}; these artefacts take {lr_size}x{lr_size} inputs")
    return a.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)


def intermediate_request(on_intermediate, every=None, iterate=None) -> dict:
    """The Request fields (render_every, render_iterate, on_render) of the API's intermediate-image
    arguments: on_intermediate(Snapshot) receives the image of every start at every `every`-th
    step (default 1: every step, as PULSE's save_intermediate), the "best" so far (default, as
    PULSE's code saves) or the "current" iterate. {} without a callback; PulseError (one line) for a bad value or for
    `every` / `iterate` without a callback."""
    if on_intermediate is None:
        if every is not None or iterate is not None:
            raise PulseError("intermediate_every and intermediate_iterate need on_intermediate (the callback that "
                             "receives the intermediate images)")
        return {}
    every = 1 if every is None else every
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        raise PulseError(f"intermediate_every must be an integer >= 1 (1: every step), got {every!r}")
    iterate = "best" if iterate is None else iterate
    if iterate not in INTERMEDIATE_ITERATES:
        raise PulseError(f"intermediate_iterate must be one of {', '.join(INTERMEDIATE_ITERATES)}, got {iterate!r}")
    check_render_request(every, iterate, on_intermediate)
    return {"render_every": every, "render_iterate": iterate, "on_render": on_intermediate}


def wait_all(futures: list[Future]) -> list[ImageResult]:
    """Results of `futures` in order; on the first error (or Ctrl-C) cancel the rest and raise it."""
    try:
        return [f.result() for f in futures]
    except BaseException:
        for f in futures:
            f.cancel()
        raise


class PulseEngine:
    """PULSE over one artefact directory with one backend, continuously batched.

    Args:
        artifacts_dir: a directory written by the exporter (manifest.json, step.onnx,
                       render.onnx); validated here (PulseError when missing or incompatible);
                       or its engine.manifest.Manifest, already loaded.
        backend:       "ort" (CPU, default), "ort-cuda" or "tensorrt".
        slots:         rows searched together (B); every start of every request takes one row
                       while it runs. Default 8.
        sync_every:    steps between host synchronisations (K; engine.scheduler): retirements
                       and admissions happen then. Results do not depend on it (early_stop off).
        options:       default PulseOptions of requests (default: the manifest's).
        runner_options: passed to the runner (e.g. threads=2 for "ort").
    The runner is activated on first use (or on __enter__ / prepare()) and released by close()
    / __exit__, which cancels what is still queued or running.
    """

    def __init__(self, artifacts_dir, backend: str = "ort", *, slots: int = DEFAULT_SLOTS,
                 sync_every: int = DEFAULT_SYNC_EVERY, options: PulseOptions | None = None, **runner_options):
        if backend not in BACKENDS:
            raise PulseError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
        for name, v in (("slots", slots), ("sync_every", sync_every)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise PulseError(f"{name} must be an integer >= 1, got {v!r}")
        if isinstance(artifacts_dir, Manifest):
            self.manifest = artifacts_dir
        else:
            self.manifest = load_manifest(artifacts_dir)
        self.artifacts_dir = self.manifest.dir
        self.options = self.manifest.resolve_options(options)
        self.backend = backend
        self.slots, self.sync_every = slots, sync_every
        self._runner = make_runner(self.manifest, backend, **runner_options)
        self._scheduler: Scheduler | None = None
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._worker: threading.Thread | None = None
        self._closing = False
        self._requests: dict[int, tuple[Request, Future]] = {}

    @property
    def lr_size(self) -> int:
        return self.manifest.lr_size

    @property
    def resolution(self) -> int:
        return self.manifest.resolution

    @property
    def scheduler(self) -> Scheduler | None:
        """The scheduler once prepared (its counters: blocks, row_steps; the runner's syncs)."""
        return self._scheduler

    # -- lifecycle --------------------------------------------------------------------------------
    def prepare(self) -> "PulseEngine":
        """Activate the runner, open its slots and start the worker thread, now."""
        with self._lock:
            self._prepare()
        return self

    def _prepare(self) -> None:
        if self._closing:
            raise PulseError("this PulseEngine is closed")
        if self._scheduler is None:
            self._runner.activate()
            try:
                self._scheduler = Scheduler(self._runner, self.slots, self.sync_every)
            except BaseException:
                self._runner.deactivate()
                raise
        if self._worker is None:
            self._worker = threading.Thread(target=self._loop, name="pulse-engine", daemon=True)
            self._worker.start()

    def __enter__(self) -> "PulseEngine":
        return self.prepare()

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Cancel what is queued or running, stop the worker, release the runner. Idempotent."""
        with self._lock:
            self._closing = True
            pending = list(self._requests.values())
            self._wake.notify_all()
        for request, future in pending:
            request.cancel()
            future.cancel()
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join()
        with self._lock:
            self._worker = None
            self._scheduler = None
            self._runner.deactivate()
            self._closing = False

    def _loop(self) -> None:
        """The worker: scheduler steps while there is work; sleeps otherwise."""
        while True:
            with self._lock:
                while not self._closing and not self._scheduler.has_work():
                    self._wake.wait()
                if self._closing and not self._scheduler.has_work():
                    return
                scheduler = self._scheduler
            try:
                scheduler.step()  # outside the lock: submit() never waits for a block
            except Exception as e:  # noqa: BLE001  (a bug: fail what is in flight, keep serving)
                scheduler.fail_all(e)

    # -- requests ---------------------------------------------------------------------------------
    def submit(self, image, *, options: PulseOptions | None = None, index: int = 0,
               progress: Callable[[int, int], None] | None = None,
               observe: Callable[[Observation], None] | None = None, keep_restarts: bool = False,
               on_intermediate: Callable[[Snapshot], None] | None = None, intermediate_every: int | None = None,
               intermediate_iterate: str | None = None) -> Future:
        """Queue one face (uint8 [lr, lr, 3] array or PIL image); returns a Future of its
        ImageResult. Raises PulseError at once for a bad image or options (nothing is queued).

        options:  this request's PulseOptions (default the engine's): runtime ones (steps, seed,
                  duplicates, restarts, early_stop, learning_rate, lr_schedule) are free, graph
                  ones must equal the manifest's.
        index:    the input index that keys its seeded starts (start k: (seed, index, k)).
        progress: progress(done, total) in the worker thread, at every sync: optimiser steps run
                  for this request and that plus the steps still planned. A callback that
                  raises fails its own request (the future raises it), nothing else.
        observe:  observe(engine.scheduler.Observation) in the worker thread after every sync:
                  progress plus the L2 of each step run since the last one, the smallest L2 so
                  far and render() of the best iterate so far (valid during the call only). A
                  callback that raises fails its own request.
        keep_restarts: the result's `restarts` holds every start's own ImageResult (PULSE writes
                  one output per duplicate); the chosen result is the same with or without it.
        on_intermediate: on_intermediate(engine.scheduler.Snapshot) in the worker thread: the
                  image of every start at every `intermediate_every`-th step (default 1, every
                  step: PULSE's save_intermediate), of the "best" so far (default) or the
                  "current" iterate (`intermediate_iterate`), in step order, all before the result.
                  Results do not depend on it. A callback that raises fails its own request.
        future.cancel() takes the request out of the queue or its slot at the next sync; it
        then has no result and no record.
        """
        return self.submit_target(image_to_chw01(image, self.lr_size, index), options=options, index=index,
                                  progress=progress, observe=observe, keep_restarts=keep_restarts,
                                  on_intermediate=on_intermediate, intermediate_every=intermediate_every,
                                  intermediate_iterate=intermediate_iterate)

    def submit_target(self, target, *, options: PulseOptions | None = None, index: int = 0,
                      progress: Callable[[int, int], None] | None = None,
                      observe: Callable[[Observation], None] | None = None, keep_restarts: bool = False,
                      on_intermediate: Callable[[Snapshot], None] | None = None, intermediate_every: int | None = None,
                      intermediate_iterate: str | None = None) -> Future:
        """submit() for a target [3, lr, lr] float in [0, 1]."""
        future: Future = Future()
        renders = intermediate_request(on_intermediate, intermediate_every, intermediate_iterate)
        request = Request(target=target, index=index, options=options if options is not None else self.options,
                          progress=progress, observe=observe, on_done=self._done, keep_restarts=keep_restarts,
                          **renders)
        with self._lock:
            self._prepare()
            self._scheduler.add(request)  # checks; PulseError before anything is queued
            self._requests[request.id] = (request, future)
            self._wake.notify_all()
        future.add_done_callback(lambda f: request.cancel() if f.cancelled() else None)
        return future

    def _done(self, request: Request) -> None:
        with self._lock:
            _, future = self._requests.pop(request.id, (None, None))
        if future is None or not future.set_running_or_notify_cancel():
            return  # cancelled by its caller: no result
        if request.cancelled:
            future.set_exception(CancelledError())
        elif request.error is not None:
            future.set_exception(request.error)
        else:
            request.result.record["artifacts_key"] = self.manifest.key
            for start in request.result.restarts:
                start.record["artifacts_key"] = self.manifest.key
            future.set_result(request.result)

    def upsample(self, images: Sequence, *, options: PulseOptions | None = None,
                 progress: Callable[[int, int], None] | None = None, **outputs) -> list[ImageResult]:
        """Upsample faces: uint8 [lr, lr, 3] arrays or PIL images (lr = self.lr_size); blocks.

        Every input is validated before any is queued. Input i's starts are keyed by index i.
        options: as submit(). progress(done, total): summed over the inputs of this call.
        outputs: submit()'s keep_restarts, on_intermediate (Snapshot.index says the input),
        intermediate_every, intermediate_iterate.
        Returns one ImageResult per input: hr [3, R, R] float32 in [0, 1], lr [3, lr, lr],
        record (success, l2, best_step, restart, starts, seconds, backend, ...), history."""
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = [images]
        images = list(images)
        if not images:
            raise PulseError("upsample needs at least one image")
        targets = np.stack([image_to_chw01(im, self.lr_size, i) for i, im in enumerate(images)])
        return self.search(targets, options=options, progress=progress, **outputs)

    def search(self, targets, *, options: PulseOptions | None = None,
               progress: Callable[[int, int], None] | None = None, keep_restarts: bool = False,
               on_intermediate: Callable[[Snapshot], None] | None = None, intermediate_every: int | None = None,
               intermediate_iterate: str | None = None) -> list[ImageResult]:
        """upsample() for targets [N, 3, lr, lr] float in [0, 1]; blocks."""
        targets = check_targets(targets, self.lr_size)
        options = self.manifest.resolve_options(options if options is not None else self.options)
        outputs = dict(keep_restarts=keep_restarts, on_intermediate=on_intermediate,
                       intermediate_every=intermediate_every, intermediate_iterate=intermediate_iterate)
        intermediate_request(on_intermediate, intermediate_every, intermediate_iterate)  # checked before any is queued
        report = _Aggregate(len(targets), options.steps * options.duplicates, progress) if progress else None
        futures = []
        try:
            for i, t in enumerate(targets):
                futures.append(self.submit_target(t, options=options, index=i,
                                                  progress=report.callback(i) if report else None, **outputs))
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        return wait_all(futures)


class _Aggregate:
    """progress(done, total) summed over the requests of one call."""

    def __init__(self, n: int, planned: int, progress: Callable[[int, int], None]):
        self._done, self._total = [0] * n, [planned] * n
        self._progress = progress
        self._lock = threading.Lock()

    def callback(self, i: int) -> Callable[[int, int], None]:
        def report(done: int, total: int) -> None:
            with self._lock:
                self._done[i], self._total[i] = done, total
                d, t = sum(self._done), sum(self._total)
            self._progress(d, t)
        return report
