"""Helpers of the service tests: a real server (uvicorn on 127.0.0.1, a free port, in a thread),
an engine whose scheduler blocks wait at a gate (to hold searches in the queue or in their slots without
timing), small PNGs, and bounded waits."""
from __future__ import annotations

import io
import threading
import time
from contextlib import contextmanager

import numpy as np
from PIL import Image

from pulse_trt.serve.engine_adapter import SearchEngine

WAIT_S = 60.0  # upper bound of every wait for a condition (a hung server fails, never hangs)


def wait_for(condition, what: str, timeout: float = WAIT_S, every: float = 0.02):
    """Poll condition() until truthy (returned); AssertionError naming `what` after timeout."""
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


def png(array: np.ndarray, **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(array)).save(buf, format="PNG", **save)
    return buf.getvalue()


def face_png(seed: int, side: int = 8) -> bytes:
    """A smooth random 8-bit RGB square (a stand-in LR face: any square of the right size is valid)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(40, 220, (2, 2, 3)).astype(np.uint8)
    return png(np.asarray(Image.fromarray(small).resize((side, side), Image.Resampling.BILINEAR)))


def decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


class GatedEngine(SearchEngine):
    """The real engine, except that every block of the scheduler after the warm-up waits for
    `gate` before it runs: tests hold searches in their slots (admitted) or in the queue (handed
    in while a block waits), then let them go."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.blocks: list[int] = []  # rows run by each gated block, in order

    def _warm_up(self):
        super()._warm_up()
        runner = self._engine._runner
        run = runner.run

        def gated(n, lr, t):
            self.blocks.append(n)
            if not self.gate.wait(WAIT_S):
                raise RuntimeError("test gate never opened")
            return run(n, lr, t)

        runner.run = gated


@contextmanager
def running_server(engine, settings, *, ready: bool = True):
    """uvicorn serving create_app(engine, settings) on 127.0.0.1 (a free port) in a thread.
    Yields (base_url, app) once it listens (and, with `ready`, once the engine is warm); on exit
    stops it (lifespan: drain up to settings.drain_seconds, then close the engine)."""
    import uvicorn  # noqa: PLC0415

    from pulse_trt.serve.app import create_app  # noqa: PLC0415
    from pulse_trt.serve.server import bind  # noqa: PLC0415

    app = create_app(engine, settings, log=lambda msg: None)
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="on", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, "the server to start")
        if ready:
            wait_for(lambda: engine.ready or app.state.service.start_error, "the engine to start")
            assert not app.state.service.start_error, app.state.service.start_error
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(WAIT_S)
        sock.close()
