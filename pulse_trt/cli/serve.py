"""`pulse-trt serve`: PULSE as an HTTP service (FastAPI + uvicorn; pip install 'pulse-trt[serve]').

One process holds one engine (one generator, LR size, option set and backend); requests from
every client share its slots. The API, the limits and the drain on SIGTERM are described in
pulse_trt/serve/app.py and server.py; the web page is at /, the OpenAPI docs at /docs.

Flow:
  1. Options as for `pulse-trt upsample` (with --artifacts the manifest's, runtime flags override
     it; graph flags must agree), then the generator / backend / LR size of the one engine.
  2. Bind the socket (127.0.0.1 by default) and start serving at once: /healthz answers while
     the engine finds or exports its artefacts and warms up; /readyz says 200 once it is ready.
  3. Serve until SIGTERM / Ctrl-C, then drain (--drain-seconds) and exit 0; 2 when the engine
     failed to start (one line says why).
"""
from __future__ import annotations

import argparse
import ipaddress
import sys
from dataclasses import fields

from ..api import BACKENDS, DEFAULT_BACKEND, GENERATORS, PRECISIONS
from ..engine.errors import PulseError
from ..engine.options import PulseOptions
from .options import add_pulse_options

DEFAULT_LR = {"dcgan": 8, "stylegan1": 32, "mobilestylegan": 32}
SERVE_HINT = "pip install 'pulse-trt[serve]'"


def add_parser(subparsers) -> argparse.ArgumentParser:
    from ..serve.settings import ServeSettings  # noqa: PLC0415  (no FastAPI import)

    d = ServeSettings()
    p = subparsers.add_parser(
        "serve", help="serve PULSE over HTTP (API, web page, metrics)",
        description="Serve PULSE over HTTP: POST /v1/upsample, /v1/jobs, a web page at /, /metrics, OpenAPI at /docs. "
                    "One engine for the whole process; requests from every client share its slots.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 picks a free one)")
    p.add_argument("--slots", type=int, default=8, help="rows searched together by the engine (default: 8)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: every core)")
    p.add_argument("--cors", action="append", default=[], metavar="ORIGIN",
                   help="allow browser requests from ORIGIN (repeatable; default: no CORS headers)")
    p.add_argument("-q", "--quiet", action="store_true", help="no export progress lines")
    g = p.add_argument_group("generator")
    g.add_argument("--generator", choices=GENERATORS, default=None, help="dcgan (default, embedded), mobilestylegan, stylegan1")
    g.add_argument("--weights", default=None, help="generator weights (as pulse-trt upsample)")
    g.add_argument("--weights-dir", default=None, metavar="DIR", help="where fetched weights are cached")
    g.add_argument("--mapping", default=None, help="stylegan1 mapping network (PULSE's mapping.pt)")
    g.add_argument("--resolution", type=int, default=None, help="stylegan1 output side")
    g.add_argument("--lr-size", type=int, default=None, metavar="N",
                   help="side of the LR faces the server takes (default: 8 for dcgan, 32 otherwise; the artefacts' "
                        "with --artifacts); photos sent with align=true are cut and downscaled to it")
    b = p.add_argument_group("backend")
    b.add_argument("--backend", choices=[x for x in BACKENDS if x != "torch"], default=DEFAULT_BACKEND,
                   help="ort (default): ONNX Runtime on CPU; ort-cuda; tensorrt")
    b.add_argument("--artifacts", default=None, metavar="DIR", help="pre-exported artefacts (no torch needed)")
    b.add_argument("--cache-dir", default=None, metavar="DIR", help="where artefacts are exported on first use")
    b.add_argument("--precision", choices=PRECISIONS, default=None, help="generator precision in the graphs")
    lim = p.add_argument_group("limits")
    lim.add_argument("--max-upload-bytes", type=int, default=d.max_upload_bytes, help=f"413 above (default: {d.max_upload_bytes})")
    lim.add_argument("--max-pixels", type=int, default=d.max_pixels, help=f"413 above, per image (default: {d.max_pixels})")
    lim.add_argument("--max-queue", type=int, default=d.max_queue,
                     help=f"searches waiting for a slot; 429 + Retry-After above (default: {d.max_queue})")
    lim.add_argument("--max-jobs", type=int, default=d.max_jobs, help=f"jobs kept, live and finished (default: {d.max_jobs})")
    lim.add_argument("--job-ttl", type=float, default=d.job_ttl, help=f"seconds a finished job stays readable (default: {d.job_ttl:g})")
    lim.add_argument("--deadline", type=float, default=d.deadline,
                     help=f"seconds per request or job; 504 and the search cancelled after (default: {d.deadline:g})")
    lim.add_argument("--max-steps", type=int, default=d.max_steps, help=f"most steps a request may ask for (default: {d.max_steps})")
    lim.add_argument("--max-faces", type=int, default=d.max_faces, help=f"most faces of one photo (default: {d.max_faces})")
    lim.add_argument("--preview-every", type=int, default=d.preview_every,
                     help=f"jobs: render the best face so far every N steps (default: {d.preview_every}; 0: never)")
    lim.add_argument("--drain-seconds", type=float, default=d.drain_seconds,
                     help=f"on SIGTERM, in-flight work may finish for this long, then is cancelled (default: {d.drain_seconds:g})")
    from ..ray.serve import add_arguments as add_ray_arguments  # noqa: PLC0415  (no ray import)

    add_ray_arguments(p)
    add_pulse_options(p)
    p.set_defaults(**{f.name: None for f in fields(PulseOptions)})
    return p


def run(args: argparse.Namespace) -> int:
    import importlib.util  # noqa: PLC0415

    for module in ("fastapi", "uvicorn", "prometheus_client", "multipart"):
        if importlib.util.find_spec(module) is None:
            package = {"multipart": "python-multipart", "prometheus_client": "prometheus-client"}.get(module, module)
            raise PulseError(f"pulse-trt serve needs {package}, which is not installed: {SERVE_HINT}")
    from ..api import Pulse  # noqa: PLC0415
    from ..serve.app import create_app  # noqa: PLC0415
    from ..serve.settings import ServeSettings  # noqa: PLC0415
    from ..serve.engine_adapter import SearchEngine  # noqa: PLC0415
    from ..serve.server import bind, serve  # noqa: PLC0415
    from .upsample import _given_options, _manifest_settings  # noqa: PLC0415

    settings = _settings(args, ServeSettings)
    if args.artifacts is not None:
        manifest, options = _manifest_settings(args)
        if args.lr_size is not None and args.lr_size != manifest.lr_size:
            raise PulseError(f"--lr-size {args.lr_size} disagrees with the artefacts in {args.artifacts}, which take "
                             f"{manifest.lr_size}x{manifest.lr_size} inputs")
        lr_size = None
    else:
        options = PulseOptions(**_given_options(args))  # validated: PulseError on a bad value
        lr_size = args.lr_size if args.lr_size is not None else DEFAULT_LR[args.generator or "dcgan"]
    if options.steps > settings.max_steps:
        raise PulseError(f"--steps {options.steps} is above --max-steps {settings.max_steps}")
    say = (lambda msg: None) if args.quiet else (lambda msg: print(f"pulse-trt serve: {msg}", file=sys.stderr, flush=True))
    runner_options = {"threads": args.threads} if args.threads is not None else {}
    if args.ray is not None:  # the same app on Ray Serve, one engine per replica (pulse_trt/ray/serve.py)
        from ..ray import serve as ray_serve  # noqa: PLC0415

        pulse_kwargs = dict(generator=args.generator, weights=args.weights, mapping=args.mapping,
                            resolution=args.resolution, options=options, backend=args.backend,
                            precision=args.precision, cache_dir=args.cache_dir, weights_dir=args.weights_dir,
                            export_progress=not args.quiet)
        return ray_serve.run(args, pulse_kwargs, settings, lr_size=lr_size, log=say)
    pulse = Pulse(args.generator, weights=args.weights, mapping=args.mapping, resolution=args.resolution, lr_size=lr_size,
                  options=options, backend=args.backend, precision=args.precision, artifacts=args.artifacts,
                  cache_dir=args.cache_dir, weights_dir=args.weights_dir, log=say, export_progress=not args.quiet)
    engine = SearchEngine(pulse, slots=args.slots, **runner_options)
    try:
        sock = bind(args.host, args.port)
    except OSError as e:
        raise PulseError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    host, port = sock.getsockname()[:2]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    print(f"pulse-trt serve: listening on {url} (page {url}/, API docs {url}/docs); "
          f"{pulse.generator} {pulse.lr_size}x{pulse.lr_size} -> {pulse.resolution}, {args.backend}, {args.slots} slots; "
          "loading the engine", file=sys.stderr, flush=True)
    if not _loopback(args.host):
        print(f"pulse-trt serve: note: {args.host} is reachable from other machines and the service has no "
              "authentication", file=sys.stderr, flush=True)
    app = create_app(engine, settings)
    return serve(app, sock, drain_seconds=settings.drain_seconds)


def _settings(args: argparse.Namespace, cls):
    for flag, value, low in (("--slots", args.slots, 1), ("--max-upload-bytes", args.max_upload_bytes, 1),
                             ("--max-pixels", args.max_pixels, 1), ("--max-queue", args.max_queue, 1),
                             ("--max-jobs", args.max_jobs, 1), ("--max-steps", args.max_steps, 1),
                             ("--max-faces", args.max_faces, 1), ("--preview-every", args.preview_every, 0)):
        if value < low:
            raise PulseError(f"{flag} must be >= {low}, got {value}")
    for flag, value in (("--deadline", args.deadline), ("--job-ttl", args.job_ttl)):
        if not value > 0:
            raise PulseError(f"{flag} must be > 0 seconds, got {value:g}")
    if not args.drain_seconds >= 0:
        raise PulseError(f"--drain-seconds must be >= 0, got {args.drain_seconds:g}")
    if args.threads is not None and args.threads < 1:
        raise PulseError(f"--threads must be >= 1, got {args.threads}")
    for origin in args.cors:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise PulseError(f"--cors {origin!r}: give an origin such as https://example.org (or *)")
    return cls(max_upload_bytes=args.max_upload_bytes, max_pixels=args.max_pixels, max_queue=args.max_queue,
               max_jobs=args.max_jobs, job_ttl=args.job_ttl, deadline=args.deadline, max_steps=args.max_steps,
               max_faces=args.max_faces, preview_every=args.preview_every, drain_seconds=args.drain_seconds,
               cors=tuple(args.cors))


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
