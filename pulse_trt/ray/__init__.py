"""pulse-trt on Ray (the optional extra `pulse-trt[ray]`): thin layers over the same engine API.

    data.py   upsample_dataset and `pulse-trt upsample --ray`: Ray Data map_batches with one
              engine per actor, writing the local CLI's files and records
    serve.py  `pulse-trt serve --ray`: the serve app (pulse_trt.serve.create_app) as a Ray Serve
              deployment, one engine per replica

Nothing here imports ray until it is used, so `import pulse_trt.ray` works without it.
"""
from __future__ import annotations


def upsample_dataset(*args, **kwargs):
    """pulse_trt.ray.data.upsample_dataset (imported on first call)."""
    from .data import upsample_dataset as run  # noqa: PLC0415

    return run(*args, **kwargs)
