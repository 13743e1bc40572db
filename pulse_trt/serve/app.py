"""The HTTP layer: `create_app(engine, settings)` -> a FastAPI app over one SearchEngine.

Thin by design (the house style's serving engines): it decodes uploads (inputs.py), turns query
options into PulseOptions, submits faces to the engine adapter (engine_adapter.py), waits or
tracks them as jobs (jobs.py) and answers. Every error is JSON {"error": "one line"}.

    POST   /v1/upsample            an image (multipart field `file`, or a raw image/png|jpeg body);
                                   waits; JSON {faces: [{record, images (base64 PNG)}]} or, with
                                   Accept: image/png (or format=png), the PNG of the one face
    POST   /v1/jobs                the same input; 202 {id, links}; the search runs on its own
    GET    /v1/jobs/{id}           state, step, steps, l2 (so far), per face the record when done
    GET    /v1/jobs/{id}/image     PNG: kind=pulse (default), pulse_lr, input, bicubic, preview, aligned
    GET    /v1/jobs/{id}/events    progress as server-sent events (progress, preview, end)
    DELETE /v1/jobs/{id}           cancel (its queue place / slot is freed)
    GET    /healthz  /readyz  /metrics  /v1/info  /docs (OpenAPI)  /  (the web page)

Limits (ServeSettings; each answered with its status): upload bytes and pixels 413; undecodable
400; not a face PULSE can take 422; bad options 422; queue full 429 + Retry-After; not ready or
shutting down 503 + Retry-After; deadline 504 (the search is cancelled). A client that
disconnects from POST /v1/upsample cancels its search; a job runs until done, DELETE or its
deadline.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from importlib import resources
from typing import Literal

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from .. import __version__
from ..engine.errors import PulseError
from ..engine.options import PulseOptions
from .engine_adapter import SearchEngine
from .inputs import FaceInput, InputError, decode, safe_name
from .jobs import Face, Job, JobStore
from .metrics import Metrics
from .settings import ServeSettings

IMAGE_KINDS = ("pulse", "pulse_lr", "input", "bicubic", "preview", "aligned")
POLL_DISCONNECT_S = 0.25  # how often a waiting request checks that its client is still there
SSE_KEEPALIVE_S = 15.0
DEBUG_ENV = "PULSE_TRT_DEBUG"


@dataclass
class ServiceState:
    engine: SearchEngine
    settings: ServeSettings
    jobs: JobStore
    metrics: Metrics
    log: object
    draining: bool = False
    drain_deadline: float | None = None
    start_error: str | None = None
    on_fatal: object = None
    received: dict = field(default_factory=dict)  # POSTs whose request line was read, by path
    _timer: threading.Timer | None = field(default=None, repr=False)

    def begin_drain(self) -> None:
        """Stop accepting work; after drain_seconds cancel what is still queued or running."""
        if self.draining:
            return
        self.draining = True
        self.drain_deadline = time.monotonic() + self.settings.drain_seconds
        self._timer = threading.Timer(self.settings.drain_seconds, self.cancel_all)
        self._timer.daemon = True
        self._timer.start()

    def cancel_all(self) -> int:
        reason = (f"the server is shutting down: the search was cancelled after the {self.settings.drain_seconds:g} s "
                  "drain; retry on another instance")
        n = self.engine.cancel_all(reason)
        for job in self.jobs.live():
            n += bool(job.cancel(reason))
        if n:
            self.log(f"drain over: {n} search(es) / job(s) cancelled after {self.settings.drain_seconds:g} s")
        return n


class _BodyLimit:
    """ASGI middleware: 413 when a request body exceeds `limit` bytes (Content-Length or counted)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        message = f"upload is larger than this server's limit of {self.limit} bytes"
        for k, v in scope.get("headers", []):
            if k == b"content-length" and v.isdigit() and int(v) > self.limit:
                return await _send_error(send, 413, message)
        received, sent = 0, False

        async def limited_receive():
            nonlocal received
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > self.limit:
                    raise _TooLarge()
            return msg

        async def tracking_send(msg):
            nonlocal sent
            if msg["type"] == "http.response.start":
                sent = True
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not sent:
                await _send_error(send, 413, message)


class _TooLarge(Exception):
    pass


class _Observe:
    """ASGI middleware: request metrics (route template, status, latency), and 503 for new work
    (POST under /v1/) once the server is draining."""

    def __init__(self, app, state: ServiceState):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0, status = time.perf_counter(), 500

        async def tracking_send(msg):
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]
            await send(msg)

        post = scope["method"] == "POST"
        if post:
            self.state.received[scope["path"]] = self.state.received.get(scope["path"], 0) + 1
        try:
            if self.state.draining and post and scope["path"].startswith("/v1/"):
                scope["route"] = SimpleNamespace(path=scope["path"])  # counted under the route it asked for
                status = 503
                await _send_error(send, 503, "the server is shutting down: not accepting new work",
                                  [(b"retry-after", b"5")])
            else:
                await self.app(scope, receive, tracking_send)
        finally:
            route = scope.get("route")
            self.state.metrics.observe_request(getattr(route, "path", "other"), status, time.perf_counter() - t0)


async def _send_error(send, status: int, message: str, headers: list | None = None) -> None:

    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
                "file": {"type": "string", "format": "binary", "description": "PNG or JPEG: an LR face, or a photo with align=true"}}}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
OPTION_FIELDS = ("align", "steps", "seed", "restarts", "early_stop", "eps", "timeout")


def create_app(engine: SearchEngine, settings: ServeSettings | None = None, *, log=None):
    """The FastAPI app over `engine` (a SearchEngine, started by the app's lifespan unless it is
    already ready). log: receives one-line messages (default: stderr)."""
    settings = settings or ServeSettings()
    log = log or (lambda msg: print(f"pulse-trt serve: {msg}", file=sys.stderr, flush=True))
    jobs = JobStore(settings.max_jobs, settings.job_ttl)
    state = ServiceState(engine=engine, settings=settings, jobs=jobs, metrics=Metrics(engine, jobs), log=log)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        task = None
        if not engine.ready:
            task = asyncio.create_task(_start_engine(state))
        try:
            yield
        finally:
            await _shutdown(state)
            if task is not None and not task.done():
                task.cancel()

    app = FastAPI(title="pulse-trt", version=__version__, lifespan=lifespan,
                  description="PULSE face super-resolution as a service: one engine, shared by every client. "
                              "Errors are JSON {\"error\": \"one line\"}.")
    app.state.service = state

    def error(status: int, message: str, headers: dict | None = None):
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.exception_handler(HTTPException)
    async def _http_error(request, exc):
        return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc):
        return error(422, _validation_line(exc.errors()))

    @app.exception_handler(Exception)
    async def _internal_error(request, exc):  # a bug of ours: one line; the traceback on request
        if os.environ.get(DEBUG_ENV):
            import traceback  # noqa: PLC0415

            traceback.print_exception(exc)
        log(f"internal error: {type(exc).__name__}: {exc} (a bug; {DEBUG_ENV}=1 prints the traceback)")
        return error(500, f"internal error: {type(exc).__name__} (a bug in pulse-trt serve; the server goes on)")

    if settings.cors:
        from fastapi.middleware.cors import CORSMiddleware  # noqa: PLC0415

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors), allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["*"])
    app.add_middleware(_BodyLimit, limit=settings.max_upload_bytes)
    app.add_middleware(_Observe, state=state)

    # -- health -----------------------------------------------------------------------------------
    @app.get("/healthz", summary="alive")
    async def healthz():
        return {"status": "alive"}

    @app.get("/readyz", summary="artefacts loaded and engine warmed")
    async def readyz():
        if state.start_error:
            return error(503, f"the engine failed to start: {state.start_error}")
        if state.draining:
            return error(503, "the server is shutting down", {"Retry-After": "5"})
        if not engine.ready:
            return error(503, "the engine is starting (finding or exporting artefacts, warming up)", {"Retry-After": "5"})
        return {"status": "ready", "queue_depth": engine.queue_depth, "busy_slots": engine.busy_slots}

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics():
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/info", summary="the engine, its defaults and the limits")
    async def info():
        o = engine.options
        return {"pulse_trt": __version__, "ready": engine.ready, **engine.describe(),
                "defaults": {"steps": o.steps, "seed": o.seed, "restarts": o.restarts, "early_stop": o.early_stop,
                             "eps": o.eps},
                "early_stop": engine.supports_early_stop,
                "limits": {"max_upload_bytes": settings.max_upload_bytes, "max_pixels": settings.max_pixels,
                           "max_queue": settings.max_queue, "deadline": settings.deadline, "max_steps": settings.max_steps,
                           "max_restarts": engine.slots - 1, "max_faces": settings.max_faces}}

    # -- the page ---------------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse(_static("index.html"))

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str):
        types = {"app.js": "text/javascript; charset=utf-8"}
        if name not in types:
            return error(404, f"no static file {name!r}")
        return Response(_static(name), media_type=types[name])

    # -- searches ---------------------------------------------------------------------------------
    async def admit(request: Request, query: dict) -> tuple[Job, PulseOptions, float]:
        """Readiness, queue, upload, options -> a job with its faces (not yet submitted)."""
        if state.start_error:
            raise HTTPException(503, f"the engine failed to start: {state.start_error}")
        if not engine.ready:
            raise HTTPException(503, "the engine is starting (finding or exporting artefacts, warming up)",
                                headers={"Retry-After": "5"})
        if engine.queue_depth >= settings.max_queue:
            raise _queue_full(state)
        data, name, fields = await _read_upload(request)
        for k, v in fields.items():
            if k not in OPTION_FIELDS:
                raise HTTPException(400, f"unknown form field {k!r}; options are {', '.join(OPTION_FIELDS)}")
            if query.get(k) is not None and str(query[k]).lower() != v.lower():
                raise HTTPException(400, f"{k} given twice with different values ({query[k]!r} in the query, {v!r} in the form)")
        q = {**{k: v for k, v in fields.items()}, **{k: v for k, v in query.items() if v is not None}}
        options, align, timeout = _options(engine, settings, q)
        try:
            faces = await asyncio.to_thread(decode, data, name, resolution=engine.resolution, lr_size=engine.lr_size,
                                            align=align, max_pixels=settings.max_pixels, max_faces=settings.max_faces)
        except InputError as e:
            raise HTTPException(e.status, str(e)) from None
        if engine.queue_depth + len(faces) > settings.max_queue:
            raise _queue_full(state, len(faces))
        job = Job(faces=[_face(k, f) for k, f in enumerate(faces)], name=name)
        return job, options, timeout

    def submit(job: Job, options: PulseOptions, *, watch_progress: bool = False, preview_every: int = 0) -> None:
        """Each face to the engine. Progress callbacks only where someone can watch (jobs)."""
        def record(face, result):
            return face_record(engine, face, result)

        def done(future, face):
            job.on_done(face, future)
            if not future.cancelled() and future.exception() is None:
                state.metrics.observe_search(future.result().record)

        job.make_record = record
        try:
            for f in job.faces:
                f.steps = options.steps
                progress = (lambda p, f=f: job.on_progress(f, p, _png)) if watch_progress else None
                f.ticket = engine.submit(f.target, options, index=f.index, preview_every=preview_every, progress=progress)
                f.ticket.future.add_done_callback(lambda fut, f=f: done(fut, f))
        except PulseError as e:
            job.cancel(str(e))
            raise HTTPException(503, str(e), headers={"Retry-After": "5"}) from None

    @app.post("/v1/upsample", summary="upsample one face (or every face of a photo) and wait",
              openapi_extra=UPLOAD_BODY,
              responses={200: {"content": {"application/json": {}, "image/png": {}},
                               "description": "JSON with the record and base64 PNGs per face, or the PNG"}})
    async def upsample(request: Request,
                       align: bool | None = Query(None, description="the image is a photo: align every face (dlib, FFHQ crop)"),
                       steps: int | None = Query(None, ge=1, description="optimiser steps (default: the server's)"),
                       seed: int | None = Query(None, ge=0, description="seed of the starts"),
                       restarts: int | None = Query(None, ge=0, description="up to this many extra starts per face, each only after the previous ones missed eps"),
                       early_stop: bool | None = Query(None, description="stop a start once its L2 is within eps (checked every sync)"),
                       eps: float | None = Query(None, description="must equal the artefacts' eps"),
                       timeout: float | None = Query(None, gt=0, description="deadline in seconds (at most the server's)"),
                       format: Literal["json", "png"] | None = Query(None, description="response type; default from Accept")):
        t0 = time.monotonic()
        job, options, deadline = await admit(request, dict(align=align, steps=steps, seed=seed, restarts=restarts,
                                                            early_stop=early_stop, eps=eps, timeout=timeout))
        want_png = format == "png" or (format is None and _prefers_png(request.headers.get("accept", "")))
        if want_png and len(job.faces) != 1:
            raise HTTPException(406, f"{job.name}: {len(job.faces)} faces found; a PNG holds one: ask for JSON "
                                     "(Accept: application/json) to get every face")
        job.kind = "sync"
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()

        def wake():
            loop.call_soon_threadsafe(changed.set)

        job.watch(wake, progress=False)
        submit(job, options)
        try:
            while not job.terminal:
                remaining = t0 + deadline - time.monotonic()
                if remaining <= 0:
                    job.cancel(f"deadline of {deadline:g} s exceeded; the search was cancelled", state="failed")
                    return error(504, f"deadline of {deadline:g} s exceeded; the search was cancelled (raise timeout, "
                                      "lower steps, or use POST /v1/jobs)")
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(changed.wait(), timeout=min(POLL_DISCONNECT_S, remaining))
                changed.clear()
                if not job.terminal and await request.is_disconnected():
                    job.cancel("the client disconnected; the search was cancelled")
                    state.log(f"{job.name}: client disconnected; search cancelled")
                    return error(499, "client disconnected")
        except asyncio.CancelledError:  # the server cancelled this request (forced shutdown)
            job.cancel("the server is shutting down; the search was cancelled")
            raise
        finally:
            job.unwatch(wake)
        if job.state == "done":
            if want_png:
                face = job.faces[0]
                rec = job.record(face)
                return Response(_png(face.result.hr), media_type="image/png", headers={
                    "X-Pulse-Success": str(rec["success"]).lower(), "X-Pulse-Min-L2": f"{rec['min_l2']:.6g}",
                    "X-Pulse-L2": f"{rec['l2']:.6g}", "X-Pulse-Steps": str(rec["steps"])})
            return {"name": job.name, "faces": [_face_json(job, f, engine) for f in job.faces]}
        if job.state == "cancelled" and "shutting down" in (job.error or ""):
            return error(503, job.error, {"Retry-After": "5"})
        if job.state == "cancelled":
            return error(409, job.error or "cancelled")
        if "deadline" in (job.error or ""):
            return error(504, job.error)
        return error(500, f"the search failed: {job.error}")

    @app.post("/v1/jobs", status_code=202, summary="submit a search; poll it, stream its progress, fetch its image",
              openapi_extra=UPLOAD_BODY)
    async def create_job(request: Request,
                         align: bool | None = Query(None), steps: int | None = Query(None, ge=1),
                         seed: int | None = Query(None, ge=0), restarts: int | None = Query(None, ge=0),
                         early_stop: bool | None = Query(None), eps: float | None = Query(None),
                         timeout: float | None = Query(None, gt=0)):
        job, options, deadline = await admit(request, dict(align=align, steps=steps, seed=seed, restarts=restarts,
                                                            early_stop=early_stop, eps=eps, timeout=timeout))
        if not jobs.add(job):
            raise HTTPException(429, f"{settings.max_jobs} jobs are running; retry later",
                                headers={"Retry-After": str(_retry_after(state))})
        submit(job, options, watch_progress=True, preview_every=settings.preview_every)
        asyncio.get_running_loop().call_later(
            deadline, lambda: job.cancel(f"deadline of {deadline:g} s exceeded; the search was cancelled", state="failed"))
        base = f"/v1/jobs/{job.id}"
        return JSONResponse({"id": job.id, "state": job.state, "faces_total": len(job.faces),
                             "links": {"self": base, "image": f"{base}/image", "events": f"{base}/events"}},
                            status_code=202, headers={"Location": base})

    def get_job(job_id: str) -> Job:
        job = jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id!r} (unknown, or finished more than {settings.job_ttl:g} s ago)")
        return job

    @app.get("/v1/jobs/{job_id}", summary="a job's state, progress and records")
    async def job_status(job_id: str, history: bool = False):
        return get_job(job_id).status(history=history)

    @app.delete("/v1/jobs/{job_id}", summary="cancel a job (frees its queue place or slot)")
    async def job_cancel(job_id: str):
        job = get_job(job_id)
        cancelled = job.cancel("cancelled by DELETE")
        return {**job.status(), "cancelled": cancelled}

    @app.get("/v1/jobs/{job_id}/image", summary="a PNG of a job", responses={200: {"content": {"image/png": {}}}})
    async def job_image(job_id: str, face: int = Query(0, ge=0), kind: Literal[IMAGE_KINDS] = "pulse"):
        job = get_job(job_id)
        if face >= len(job.faces):
            raise HTTPException(404, f"job {job_id} has {len(job.faces)} face(s); face={face} does not exist")
        f = job.faces[face]
        if kind == "input":
            data = _png(f.target)
        elif kind == "bicubic":
            data = _png(bicubic_upscale(f.target, engine.resolution))
        elif kind == "aligned":
            if f.truth is None:
                raise HTTPException(404, "no aligned crop: the job was not submitted with align=true")
            data = _png(f.truth)
        elif kind == "preview":
            if f.preview is None:
                raise HTTPException(404, f"no preview yet (one every {settings.preview_every} steps)")
            data = f.preview
        else:
            if f.result is None:
                raise HTTPException(409, f"face {face} is {f.state}" + (f": {f.error}" if f.error else
                                    f" (step {f.step} of {f.steps})") + "; its image comes when it is done")
            data = _png(f.result.hr if kind == "pulse" else f.result.lr)
        return Response(data, media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.get("/v1/jobs/{job_id}/events", summary="progress as server-sent events",
             responses={200: {"content": {"text/event-stream": {}}}})
    async def job_events(job_id: str, request: Request):
        job = get_job(job_id)
        return StreamingResponse(_events(job, request), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    return app


# -- helpers --------------------------------------------------------------------------------------

async def _start_engine(state: ServiceState) -> None:
    try:
        await asyncio.to_thread(state.engine.start)
        state.log(f"ready: {state.engine.describe()['generator']['name']} {state.engine.lr_size}x{state.engine.lr_size} "
                  f"-> {state.engine.resolution}, {state.engine.slots} slots")
    except Exception as e:  # noqa: BLE001  PulseError or not: one line, and the server stops
        state.start_error = str(e).splitlines()[0] if str(e) else type(e).__name__
        state.log(f"error: the engine failed to start: {state.start_error}")
        if state.on_fatal is not None:
            state.on_fatal()


async def _shutdown(state: ServiceState) -> None:
    """Lifespan end: let queued and running work finish until the drain deadline, cancel the rest."""
    state.begin_drain()
    engine = state.engine
    while not engine.idle() and time.monotonic() < state.drain_deadline:
        await asyncio.sleep(0.1)
    state.cancel_all()
    await asyncio.to_thread(engine.close)
    if state._timer is not None:
        state._timer.cancel()

    answered = state.metrics.answered()
    searches = {k: engine.finished.get(k, 0) for k in ("success", "missed", "failed", "cancelled")}
    total = sum(n for by_status in answered.values() for n in by_status.values())
    state.log(f"stopped: received POSTs {json.dumps(state.received)}; answered {total} request(s) {json.dumps(answered)}; "
              f"searches {json.dumps(searches)}")


def _queue_full(state: ServiceState, faces: int = 1):
    return HTTPException(429, f"the queue is full ({state.engine.queue_depth} searches waiting, limit "
                              f"{state.settings.max_queue}{'' if faces == 1 else f'; this photo has {faces} faces'}); "
                              "retry after the Retry-After seconds",
                         headers={"Retry-After": str(_retry_after(state))})


def _retry_after(state: ServiceState) -> int:
    """Seconds until the queue has room, from the recent images/s (1 .. 600)."""
    _, images_per_s = state.engine.rates()
    waiting = state.engine.queue_depth + state.engine.busy_slots
    if images_per_s <= 0:
        return 5
    return int(min(600, max(1, math.ceil(waiting / images_per_s))))


async def _read_upload(request) -> tuple[bytes, str, dict]:
    """(bytes, the client's safe file name, form fields) of a multipart or raw image body."""
    ctype = request.headers.get("content-type", "")
    kind = ctype.split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        try:
            form = await request.form(max_files=1, max_fields=len(OPTION_FIELDS) + 1)
        except (HTTPException, _TooLarge):  # _TooLarge: the body limit, answered 413 by _BodyLimit
            raise
        except Exception as e:  # noqa: BLE001  malformed multipart
            raise HTTPException(400, f"malformed multipart body: {e}") from None
        files = [(k, v) for k, v in form.multi_items() if isinstance(v, UploadFile)]
        fields = {k: v for k, v in form.multi_items() if not isinstance(v, UploadFile)}
        if len(files) != 1 or files[0][0] not in ("file", "image"):
            raise HTTPException(400, "multipart body needs exactly one file field named 'file' (a PNG or JPEG)")
        up = files[0][1]
        data = await up.read()
        await form.close()
        return data, safe_name(up.filename, up.content_type), fields
    if kind.startswith("image/") or kind == "application/octet-stream":
        return await request.body(), safe_name(None, kind), {}
    if not kind:
        raise HTTPException(400, "no Content-Type: send image/png, image/jpeg or multipart/form-data with a 'file' field")
    raise HTTPException(415, f"Content-Type {kind!r} is not an image: send image/png, image/jpeg or multipart/form-data "
                             "with a 'file' field")


def _options(engine: SearchEngine, settings: ServeSettings, q: dict) -> tuple[PulseOptions, bool, float]:
    """(PulseOptions, align, deadline seconds) from the request's query / form values."""
    def num(k, cast):
        v = q.get(k)
        if v is None or isinstance(v, (int, float, bool)) and not isinstance(v, str):
            return v
        try:
            return cast(v)
        except ValueError:
            raise HTTPException(422, f"{k}: {v!r} is not a valid {cast.__name__}") from None

    def flag(k):
        v = q.get(k)
        if v is None or isinstance(v, bool):
            return v
        s = str(v).strip().lower()
        if s in ("1", "true", "yes", "on"):
            return True
        if s in ("0", "false", "no", "off"):
            return False
        raise HTTPException(422, f"{k}: {v!r} is not true or false")

    base = engine.options
    steps, seed, restarts = num("steps", int), num("seed", int), num("restarts", int)
    eps, timeout = num("eps", float), num("timeout", float)
    align, early_stop = bool(flag("align")), flag("early_stop")
    if steps is not None and not 1 <= steps <= settings.max_steps:
        raise HTTPException(422, f"steps must be between 1 and {settings.max_steps} on this server, got {steps}")
    if restarts is not None and not 0 <= restarts < engine.slots:
        raise HTTPException(422, f"restarts must be between 0 and {engine.slots - 1} on this server ({engine.slots} slots), "
                                 f"got {restarts}")
    if seed is not None and seed < 0:
        raise HTTPException(422, f"seed must be an integer >= 0, got {seed}")
    if eps is not None and not math.isclose(eps, base.eps, rel_tol=1e-9, abs_tol=0.0):
        raise HTTPException(422, f"eps {eps:g} disagrees with the artefacts (eps={base.eps:g}, baked into the graphs): "
                                 "drop it, or serve artefacts exported with it")
    if timeout is not None and timeout <= 0:
        raise HTTPException(422, f"timeout must be > 0 seconds, got {timeout:g}")
    changes = {}
    if steps is not None:
        changes["steps"] = steps
    if seed is not None:
        changes["seed"] = seed
    if restarts is not None:
        changes["restarts"] = restarts  # extra starts, each only after the previous ones missed eps
    if early_stop is not None:
        changes["early_stop"] = early_stop
    try:
        options = replace(base, **changes)
    except PulseError as e:
        raise HTTPException(422, str(e)) from None
    deadline = settings.deadline if timeout is None else min(timeout, settings.deadline)
    return options, align, deadline


def _face(k: int, f: FaceInput) -> Face:
    return Face(index=k, target=f.target, truth=f.truth, box=f.box, label=f.label)


def _prefers_png(accept: str) -> bool:
    """Accept names image/png (or image/*) ahead of JSON."""
    types = [part.split(";")[0].strip().lower() for part in accept.split(",") if part.strip()]
    for t in types:
        if t in ("image/png", "image/*"):
            return True
        if t in ("application/json", "*/*"):
            return False
    return False


def _png(image) -> bytes:
    from ..engine.images import png_bytes  # noqa: PLC0415

    return png_bytes(image)


def bicubic_upscale(target: np.ndarray, side: int) -> np.ndarray:
    """[3, lr, lr] float in [0, 1] -> [side, side, 3] uint8, Pillow BICUBIC (the grid's column)."""
    from PIL import Image  # noqa: PLC0415

    from ..engine.images import from_chw01  # noqa: PLC0415

    return np.asarray(Image.fromarray(from_chw01(target), "RGB").resize((side, side), Image.Resampling.BICUBIC))


def face_record(engine: SearchEngine, face: Face, res) -> dict:
    """The record of one face, as `pulse-trt upsample` writes it (file names aside).

    output_l2: MSE of the returned image's downscale vs the input; output_l2_uint8: the same on
    the 8-bit PNGs as served; quality: PSNR / SSIM against the aligned crop (align=true)."""
    from ..engine.bicubic import downscale  # noqa: PLC0415
    from ..engine.images import from_chw01  # noqa: PLC0415
    from ..engine.metrics import quality_record  # noqa: PLC0415

    target = face.target
    lr_size, hr_size = target.shape[-1], res.hr.shape[-1]
    factor = hr_size // lr_size
    hr_u8 = from_chw01(res.hr).transpose(2, 0, 1)[None].astype(np.float64) / 255.0  # [1, 3, R, R]
    lr_of_png = downscale(hr_u8, factor)[0]  # [3, lr, lr]
    y_u8 = np.rint(target.astype(np.float64) * 255.0) / 255.0
    search = dict(res.record)
    for k in ("input", "backend", "artifacts_key"):
        search.pop(k, None)
    d = engine.describe()
    return {
        "face": face.index,
        "input": face.label,
        "success": bool(search.pop("success")),
        "eps": search.pop("eps", engine.options.eps),
        "l2": search.pop("l2"),
        "min_l2": search.pop("min_l2"),
        "output_l2": float(np.mean((res.lr.astype(np.float64) - target) ** 2)),
        "output_l2_uint8": float(np.mean((lr_of_png - y_u8) ** 2)),
        "quality": quality_record(res.hr, face.truth, res.lr, target),
        **search,  # best_step, steps, terms, restart, seconds, queue_seconds, options
        "box": list(face.box) if face.box is not None else None,
        "lr_size": lr_size, "hr_size": hr_size, "factor": factor,
        "generator": d["generator"], "backend": d["backend"], "artifacts_key": d["artifacts_key"],
        "precision": d["precision"], "device": d["device"], "engine": d["engine"],
        "pulse_trt": __version__,
    }


def _face_json(job: Job, face: Face, engine: SearchEngine) -> dict:
    b64 = lambda data: base64.b64encode(data).decode("ascii")  # noqa: E731
    images = {"pulse": b64(_png(face.result.hr)), "pulse_lr": b64(_png(face.result.lr)), "input": b64(_png(face.target)),
              "bicubic": b64(_png(bicubic_upscale(face.target, engine.resolution)))}
    if face.truth is not None:
        images["aligned"] = b64(_png(face.truth))
    return {"index": face.index, "record": job.record(face), "images_png_base64": images}


async def _events(job: Job, request):
    """SSE: `progress` {face, state, step, steps, first_step, l2: [new points], min_l2} as steps
    run, `preview` {face, step, png (base64)} when a new render is there, and one final `end`
    {the job's status}; a comment line every SSE_KEEPALIVE_S. Starlette's StreamingResponse
    cancels this generator when the client goes away."""

    loop = asyncio.get_running_loop()
    changed = asyncio.Event()

    def wake():
        loop.call_soon_threadsafe(changed.set)

    job.watch(wake)
    since = [0] * len(job.faces)
    previews = [0] * len(job.faces)
    try:
        yield "retry: 1000\n\n"
        while True:
            changed.clear()
            _, events = job.snapshot(since)
            for f in job.faces:
                if f.preview is not None and f.preview_step != previews[f.index]:
                    previews[f.index] = f.preview_step
                    events.append({"event": "preview", "data": {"face": f.index, "step": f.preview_step,
                                                                "png": base64.b64encode(f.preview).decode("ascii")}})
            for e in events:
                yield f"event: {e['event']}\ndata: {json.dumps(e['data'])}\n\n"
            if job.terminal:
                yield f"event: end\ndata: {json.dumps(job.status())}\n\n"
                return
            with contextlib.suppress(asyncio.TimeoutError):  # a client that leaves cancels this generator
                await asyncio.wait_for(changed.wait(), timeout=SSE_KEEPALIVE_S)
            if not changed.is_set():
                yield ": keep-alive\n\n"
            await asyncio.sleep(0.1)  # at most ~10 messages a second per stream
    finally:
        job.unwatch(wake)


def _validation_line(errors) -> str:
    """FastAPI's validation errors as one line: 'steps: Input should be ... (got 'x')'."""
    parts = []
    for e in errors:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x not in ("query", "body", "path"))
        got = e.get("input")
        parts.append(f"{loc}: {e.get('msg', 'invalid')}" + (f" (got {got!r})" if isinstance(got, (str, int, float)) else ""))
    return "; ".join(parts) or "invalid request"


def _static(name: str) -> bytes:
    return resources.files("pulse_trt.serve").joinpath("static", name).read_bytes()
