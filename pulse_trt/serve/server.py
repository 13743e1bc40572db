"""Run the app with uvicorn on one socket, with a graceful drain on SIGTERM / Ctrl-C.

SIGTERM (or the first Ctrl-C):
  1. the service starts draining: POSTs under /v1/ get 503 + Retry-After, /readyz says 503;
  2. uvicorn stops listening, closes idle keep-alive connections and waits for the requests in
     flight; searches queued or running (requests and jobs) may finish for `drain_seconds`;
  3. then every search still queued or running is cancelled with a clear message (a waiting
     POST /v1/upsample gets 503 "the server is shutting down: the search was cancelled after
     the N s drain"; a job ends "cancelled" with that error), the engine is closed, the process
     exits 0. The service writes no files, so nothing is left half-written.
A second Ctrl-C forces the exit at once.
"""
from __future__ import annotations

import signal
import socket
import sys

DRAIN_MARGIN_S = 10.0  # uvicorn's own backstop beyond the drain (handlers answer within a poll)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(app, sock: socket.socket, *, drain_seconds: float, log=None, access_log: bool = False) -> int:
    """Serve `app` on `sock` until SIGTERM / Ctrl-C (then drain) or a failed engine start.
    Returns the exit status: 0 after a clean stop, 2 when the engine failed to start."""
    import uvicorn  # noqa: PLC0415

    state = app.state.service
    log = log or (lambda msg: print(f"pulse-trt serve: {msg}", file=sys.stderr, flush=True))

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
                return
            if not state.draining:
                name = signal.Signals(sig).name
                busy = state.engine.queue_depth + state.engine.busy_slots
                log(f"{name}: draining ({busy} search row(s) queued or running; up to {drain_seconds:g} s, then cancelled)")
                state.begin_drain()
            self.should_exit = True  # no re-raise of the signal afterwards: a drained stop exits 0

    config = uvicorn.Config(app, log_level="warning", access_log=access_log, lifespan="on",
                            timeout_graceful_shutdown=int(drain_seconds + DRAIN_MARGIN_S), timeout_keep_alive=5)
    server = Server(config)
    state.on_fatal = lambda: setattr(server, "should_exit", True)
    server.run(sockets=[sock])
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # stopped and drained: a repeated SIGTERM changes nothing now
    return 2 if state.start_error else 0
