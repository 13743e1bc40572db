"""`pulse-trt serve --ray [ADDRESS] [--replicas N | --autoscale MIN:MAX]`: the service's FastAPI app
(pulse_trt.serve.app.create_app, issue 13) as a Ray Serve deployment, one engine per replica.

    app = serve_application(pulse_kwargs, settings, slots=8, replicas=2)     # a bound deployment
    ray.serve.run(app, name="pulse-trt", route_prefix="/")

Flow:
  1. Driver: the artefacts are found in the cache or exported once (Pulse.resolve_artifacts)
     and shipped (pulse_trt.ray.data.ship_artifacts: path + object store); nothing is exported
     on a replica.
  2. Each replica (`PulseDeployment`, `@serve.ingress()` with the app built at replica start):
     opens one engine on the shipped artefacts (the app's SearchEngine over a Pulse), warms it,
     then builds the same app `pulse-trt serve` runs locally with create_app(engine, settings):
     the same routes, limits and errors. Its engine keeps its continuous batching: the requests
     a replica receives share its slots.
  3. Ray Serve's health check calls check_health, which fails exactly when /readyz would say
     503 (the engine failed to start or is not ready): a failing replica is replaced.
  4. Replicas: a fixed number (`replicas`), or autoscaled between MIN and MAX on ongoing
     requests (target: the engine's slots per replica); num_gpus per replica for the GPU
     backends when the cluster has GPUs.

The app factory and the engine adapter are looked up by name (APP_FACTORY, ENGINE_FACTORY) so
that this module does not change when the service's internals do.
"""
from __future__ import annotations

import importlib
from typing import Any

from ..engine.errors import PulseError
from .data import GPU_BACKENDS, materialise, require_ray, resolve_shipments

APP_FACTORY = "pulse_trt.serve.app:create_app"  # create_app(engine, settings, log=...) -> FastAPI
ENGINE_FACTORY = "pulse_trt.serve.engine_adapter:SearchEngine"  # SearchEngine(pulse, slots=..., **runner_options)
DEPLOYMENT = "pulse-trt"


def parse_autoscale(text: str) -> tuple[int, int]:
    """"MIN:MAX" -> (min, max), 0 <= MIN <= MAX, MAX >= 1; PulseError otherwise."""
    try:
        lo, hi = (int(x) for x in text.split(":"))
    except ValueError:
        raise PulseError(f"--autoscale {text!r}: give MIN:MAX replicas, e.g. 1:4") from None
    if lo < 0 or hi < 1 or lo > hi:
        raise PulseError(f"--autoscale {text!r}: need 0 <= MIN <= MAX and MAX >= 1")
    return lo, hi


def deployment_options(*, slots: int, replicas: int | None = None, autoscale: tuple[int, int] | None = None,
                       num_cpus: float = 1, num_gpus: float = 0) -> dict:
    """Ray Serve options of the deployment: num_replicas or autoscaling_config (target ongoing
    requests = slots: a replica is busy when its slots are), ray_actor_options, the health
    check's period and timeout."""
    if replicas is not None and autoscale is not None:
        raise PulseError("--replicas and --autoscale exclude each other")
    opts: dict[str, Any] = {"ray_actor_options": {"num_cpus": num_cpus, "num_gpus": num_gpus},
                            "health_check_period_s": 5, "health_check_timeout_s": 30,
                            "max_ongoing_requests": max(4 * slots, 16)}
    if autoscale is not None:
        lo, hi = autoscale
        opts["autoscaling_config"] = {"min_replicas": lo, "max_replicas": hi, "initial_replicas": max(lo, 1),
                                      "target_ongoing_requests": slots}
    else:
        opts["num_replicas"] = 1 if replicas is None else replicas
    return opts


def _lookup(name: str):
    module, attr = name.split(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise PulseError(f"serve --ray needs {name} (the HTTP service, pulse-trt serve): {e}") from None


def serve_application(pulse_kwargs: dict, settings=None, *, slots: int = 8, replicas: int | None = None,
                      autoscale: tuple[int, int] | None = None, num_cpus: float = 1, num_gpus: float | None = None,
                      runner_options: dict | None = None, artifacts=None, lr_size: int | None = None,
                      app_factory: str | Any = APP_FACTORY, engine_factory: str | Any = ENGINE_FACTORY, log=None):
    """The bound Ray Serve application of the service (ray.serve.run it). Ray must be
    initialised. pulse_kwargs: pulse_trt.api.Pulse's generator / options / backend / precision /
    cache_dir ...; artifacts or lr_size as for Pulse. app_factory / engine_factory: the
    service's create_app and SearchEngine (or "module:name" strings)."""
    ray = require_ray()
    from ray import serve  # noqa: PLC0415

    backend = pulse_kwargs.get("backend", "ort")
    size = lr_size
    if artifacts is not None:
        from ..engine.manifest import load_manifest  # noqa: PLC0415

        size = load_manifest(artifacts).lr_size
    if size is None:
        raise PulseError("serve --ray needs the LR size (lr_size) or artifacts")
    shipped = resolve_shipments([size], ship="auto", artifacts=artifacts, pulse_kwargs=pulse_kwargs, log=log)[size]
    if num_gpus is None:
        num_gpus = 1.0 if backend in GPU_BACKENDS and ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    options = pulse_kwargs.get("options")
    options_dict = options.to_dict() if options is not None else None
    runner_options = dict(runner_options or {})
    if backend == "ort" and "threads" not in runner_options:
        runner_options["threads"] = max(1, int(num_cpus))

    @serve.deployment(name=DEPLOYMENT)
    @serve.ingress()
    class PulseDeployment:
        """One replica: one engine, the service's app over it."""

        def __init__(self):
            from ..api import Pulse  # noqa: PLC0415
            from ..engine.options import PulseOptions  # noqa: PLC0415

            opts = PulseOptions(**options_dict) if options_dict is not None else None
            pulse = Pulse(artifacts=materialise(shipped), options=opts, backend=backend)
            make_engine = _lookup(engine_factory) if isinstance(engine_factory, str) else engine_factory
            self.engine = make_engine(pulse, slots=slots, **runner_options)
            self.engine.start()  # artefacts opened and warmed before the replica takes requests
            self._service_app = None

        def __serve_build_asgi_app__(self):
            create_app = _lookup(app_factory) if isinstance(app_factory, str) else app_factory
            self._service_app = create_app(self.engine, settings)
            return self._service_app

        def check_health(self):
            """Fails when /readyz would answer 503: Ray Serve then replaces the replica."""
            state = getattr(getattr(self._service_app, "state", None), "service", None)
            if state is not None and getattr(state, "start_error", None):
                raise RuntimeError(f"the engine failed to start: {state.start_error}")
            if not getattr(self.engine, "ready", True):
                raise RuntimeError("the engine is not ready")

        def __del__(self):
            engine = getattr(self, "engine", None)
            if engine is not None:
                engine.close()

    opts = deployment_options(slots=slots, replicas=replicas, autoscale=autoscale, num_cpus=num_cpus, num_gpus=num_gpus)
    return PulseDeployment.options(**opts).bind()


def add_arguments(parser) -> None:
    """The --ray flags of `pulse-trt serve` (pulse_trt/cli/serve.py calls this)."""
    g = parser.add_argument_group("ray (pip install 'pulse-trt[ray]')")
    g.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="serve on Ray Serve, one engine per replica: no ADDRESS starts a local Ray; 'auto' joins "
                        "this machine's cluster; or ray://HOST:10001")
    x = g.add_mutually_exclusive_group()
    x.add_argument("--replicas", type=int, default=None, metavar="N", help="with --ray: N replicas (default: 1)")
    x.add_argument("--autoscale", default=None, metavar="MIN:MAX",
                   help="with --ray: between MIN and MAX replicas, scaled on requests in flight (target: --slots each)")
    g.add_argument("--ray-cpus", type=float, default=1, metavar="C", help="with --ray: CPUs per replica (default: 1)")
    g.add_argument("--ray-gpus", type=float, default=None, metavar="G",
                   help="with --ray: GPUs per replica (default: 1 for ort-cuda / tensorrt when the cluster has GPUs)")


def run(args, pulse_kwargs: dict, settings, *, lr_size: int | None, log=None) -> int:
    """`pulse-trt serve --ray ...` after the CLI's own checks: deploy, print the URL, block until
    Ctrl-C / SIGTERM, then delete the application (Ray Serve drains its replicas)."""
    import signal  # noqa: PLC0415
    import threading  # noqa: PLC0415

    from .data import init_ray  # noqa: PLC0415

    if args.replicas is not None and args.replicas < 1:
        raise PulseError(f"--replicas must be >= 1, got {args.replicas}")
    autoscale = parse_autoscale(args.autoscale) if args.autoscale else None
    connected = init_ray(args.ray, quiet=getattr(args, "quiet", False))
    try:
        from ray import serve  # noqa: PLC0415

        serve.start(http_options={"host": args.host, "port": args.port})
        app = serve_application(pulse_kwargs, settings, slots=args.slots, replicas=args.replicas, autoscale=autoscale,
                                num_cpus=args.ray_cpus, num_gpus=args.ray_gpus, artifacts=args.artifacts,
                                lr_size=lr_size, log=log)
        serve.run(app, name=DEPLOYMENT, route_prefix="/")
        print(f"pulse-trt serve: Ray Serve on http://{args.host}:{args.port} ({args.ray}); "
              f"{'autoscaled ' + args.autoscale if autoscale else str(args.replicas or 1) + ' replica(s)'}", flush=True)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()
        serve.delete(DEPLOYMENT)
        return 0
    finally:
        if connected:
            require_ray().shutdown()
