"""The service's limits and behaviour (the flags of `pulse-trt serve`); no dependencies, so that the
command line can show the defaults without importing FastAPI."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServeSettings:
    """Limits and behaviour of the service (CLI flags of `pulse-trt serve`)."""

    max_upload_bytes: int = 8 << 20  # 413 above
    max_pixels: int = 1 << 24  # 413 above (checked on the image header)
    max_queue: int = 64  # searches waiting for a slot; 429 above
    max_jobs: int = 1000  # jobs kept (live + finished); 429 when all are live
    job_ttl: float = 3600.0  # seconds a finished job stays readable
    deadline: float = 300.0  # seconds per request or job, from its arrival; 504 / cancelled after
    max_steps: int = 1000  # 422 above
    max_faces: int = 16  # faces of one photo (align=true); 422 above
    preview_every: int = 10  # jobs: a render of the best face so far every N steps
    drain_seconds: float = 30.0  # SIGTERM: in-flight work may finish for this long
    cors: tuple[str, ...] = ()  # allowed origins; none: no CORS headers at all
