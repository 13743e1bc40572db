"""Fixtures of the service tests: the dcgan artefacts for 8x8 inputs (exported once per session
into the session cache shared with tests/cli, whose key they match), engines over them, and a
running server. Every server binds 127.0.0.1 and stops at the end of its test."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")

from serve_helpers import GatedEngine, running_server  # noqa: E402

from shared import FAST_STEPS  # noqa: E402  (the steps of the session's shared artefacts)


@pytest.fixture(scope="session")
def serve_cache(tmp_path_factory):
    path = tmp_path_factory.getbasetemp() / "pulse-trt-cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def artifacts(serve_cache):
    """dcgan artefacts for 8x8 inputs: SimpleNamespace(dir, key)."""
    pytest.importorskip("torch")
    from pulse_trt.api import Pulse  # noqa: PLC0415
    from pulse_trt.engine.options import PulseOptions  # noqa: PLC0415

    with Pulse(lr_size=8, options=PulseOptions(steps=FAST_STEPS), cache_dir=serve_cache) as p:
        return SimpleNamespace(dir=p.artifacts_dir, key=p.key)


@pytest.fixture
def make_engine(artifacts):
    """make_engine(steps=20, slots=4, gated=False) -> a SearchEngine (not started) over the artefacts."""
    from pulse_trt.api import Pulse  # noqa: PLC0415
    from pulse_trt.engine.options import PulseOptions  # noqa: PLC0415
    from pulse_trt.serve.engine_adapter import SearchEngine  # noqa: PLC0415

    def make(steps: int = 20, slots: int = 4, gated: bool = False):
        pulse = Pulse(artifacts=artifacts.dir, options=PulseOptions(steps=steps))
        return (GatedEngine if gated else SearchEngine)(pulse, slots=slots, threads=1)

    return make


@pytest.fixture
def server(make_engine):
    """server(settings=None, engine=None, **make_engine_kwargs) -> context manager yielding (url, app)."""
    from pulse_trt.serve.settings import ServeSettings  # noqa: PLC0415

    def start(settings: ServeSettings | None = None, *, engine=None, **engine_kwargs):
        settings = settings or ServeSettings(drain_seconds=1.0)
        return running_server(engine or make_engine(**engine_kwargs), settings)

    return start
