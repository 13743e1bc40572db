"""pulse_trt.ray.serve: option parsing (fast); the deployment on a local Ray Serve (slow): 2
replicas answer concurrent requests and the service survives a replica being killed.

The service's own app (pulse_trt.serve, issue 13) is used where it is installed; the Ray layer is
also tested with a stand-in app factory and engine adapter (the same interface: create_app(engine,
settings) and SearchEngine(pulse, slots=...) with start / ready / close), so it is covered on a
branch without the service."""

import asyncio
import io
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from ray_helpers import FAST_STEPS
from pulse_trt.engine.errors import PulseError
from pulse_trt.engine.options import PulseOptions


def test_parse_autoscale_and_options():
    from pulse_trt.ray.serve import deployment_options, parse_autoscale  # noqa: PLC0415

    assert parse_autoscale("1:4") == (1, 4)
    for bad in ("4:1", "x", "1:0", "-1:2"):
        with pytest.raises(PulseError, match="--autoscale"):
            parse_autoscale(bad)
    assert deployment_options(slots=8, replicas=2)["num_replicas"] == 2
    auto = deployment_options(slots=8, autoscale=(1, 4), num_gpus=1)
    assert auto["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4, "initial_replicas": 1,
                                          "target_ongoing_requests": 8}
    assert auto["ray_actor_options"]["num_gpus"] == 1 and "num_replicas" not in auto
    with pytest.raises(PulseError, match="exclude"):
        deployment_options(slots=8, replicas=2, autoscale=(1, 2))


# -- a stand-in for the service (pulse_trt.serve): the same factory interface --------------------
class StandInEngine:
    def __init__(self, pulse, *, slots=8, **runner_options):
        self.pulse, self.slots, self.ready = pulse, slots, False

    def start(self):
        self.pulse.prepare()
        self.ready = True
        return self

    def close(self):
        self.pulse.close()


def stand_in_app(engine, settings=None):
    from fastapi import FastAPI, Request  # noqa: PLC0415

    app = FastAPI()

    @app.get("/readyz")
    async def readyz():
        return {"status": "ready" if engine.ready else "starting", "pid": os.getpid()}

    @app.post("/v1/upsample")
    async def upsample(request: Request):
        image = np.asarray(Image.open(io.BytesIO(await request.body())).convert("RGB"))
        result = await asyncio.wrap_future(engine.pulse.submit(image))
        return {"success": result.record["success"], "min_l2": result.record["min_l2"], "pid": os.getpid()}

    return app


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(40, 200, (8, 8, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _post(url: str, body: bytes, attempts: int = 20) -> dict:
    """POST with a bounded retry on connection errors / 5xx (a replica being replaced)."""
    for k in range(attempts):
        try:
            req = urllib.request.Request(url, data=body, headers={"Content-Type": "image/png"})
            with urllib.request.urlopen(req, timeout=120) as r:
                return json.loads(r.read())
        except (urllib.error.URLError, ConnectionError) as e:
            if isinstance(e, urllib.error.HTTPError) and e.code < 500:
                raise
            time.sleep(1.0)
    raise AssertionError(f"{url}: no answer after {attempts} attempts")


@pytest.fixture(scope="module")
def serve_app(local_ray, artifacts5):
    """The deployment with 2 replicas on 127.0.0.1 (a free port), stand-in app; deleted after."""
    pytest.importorskip("ray.serve")
    pytest.importorskip("fastapi")
    import socket  # noqa: PLC0415

    from ray import cloudpickle, serve  # noqa: PLC0415

    from pulse_trt.ray.serve import DEPLOYMENT, serve_application  # noqa: PLC0415

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    app = serve_application({"options": PulseOptions(steps=FAST_STEPS), "backend": "ort"}, None, slots=4,
                            replicas=2, num_cpus=0.5, artifacts=artifacts5.dir,
                            app_factory=stand_in_app, engine_factory=StandInEngine)
    serve.run(app, name=DEPLOYMENT, route_prefix="/")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.delete(DEPLOYMENT)
        serve.shutdown()


@pytest.mark.slow
def test_two_replicas_answer_concurrent_requests_and_survive_a_kill(serve_app, local_ray):
    """8 concurrent requests are answered by both replicas; one replica's process is killed
    (SIGKILL); requests go on being answered by the other, and Ray Serve brings the deployment
    back to 2 running replicas."""
    import signal  # noqa: PLC0415

    from ray import serve  # noqa: PLC0415

    def burst(n, seed0):
        results = [None] * n

        def one(i):
            results[i] = _post(f"{serve_app}/v1/upsample", _png(seed0 + i))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert all(r is not None and isinstance(r["min_l2"], float) for r in results), results
        return results

    def running():
        dep = serve.status().applications["pulse-trt"].deployments["pulse-trt"]
        return dep.replica_states.get("RUNNING", 0)

    first = burst(8, 0)
    pids = {r["pid"] for r in first}
    assert running() == 2
    assert len(pids) == 2, f"8 concurrent requests all went to one replica: {pids}"
    victim = sorted(pids)[0]
    os.kill(victim, signal.SIGKILL)
    second = burst(8, 100)  # answered while the controller replaces the killed replica
    assert victim not in {r["pid"] for r in second}
    deadline = time.monotonic() + 180
    while True:  # the controller replaces the replica: a third pid answers, 2 replicas run
        pids_now = {r["pid"] for r in burst(4, 200)}
        if running() == 2 and pids_now - pids - {victim}:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"the killed replica was not replaced within 180 s (answering: {pids_now})")
        time.sleep(2)
