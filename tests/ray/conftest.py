"""Fixtures of the Ray tests: the session's artefact cache (tests/conftest.py), 24
small LR inputs, their records from the local CLI, and a local Ray started by the test module
(`ray.init(num_cpus=2)`, no cluster; shut down at the module's end). Tests needing Ray skip
cleanly where it is not installed."""
from __future__ import annotations


import numpy as np
import pytest
from PIL import Image

from ray_helpers import FAST_STEPS, N_FACES, read_records


@pytest.fixture(autouse=True)
def _cache_env(monkeypatch, pulse_cache):
    monkeypatch.setenv("PULSE_TRT_CACHE", str(pulse_cache))


@pytest.fixture(scope="session")
def faces24(tmp_path_factory):
    """A folder of N_FACES 8x8 PNGs (smooth random colour fields, seeded)."""
    folder = tmp_path_factory.mktemp("faces24")
    for i in range(N_FACES):
        rng = np.random.default_rng(i)
        base = rng.integers(40, 200, 3)
        img = np.clip(base + rng.integers(-30, 30, (8, 8, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"face{i:02d}.png")
    return folder


@pytest.fixture(scope="session")
def local_records(faces24, artifacts5, tmp_path_factory, pulse_cache):
    """The local CLI's records of faces24 (--steps 5, the default slots): name -> record."""
    import os  # noqa: PLC0415

    from pulse_trt.cli import main  # noqa: PLC0415

    out = tmp_path_factory.mktemp("local_out")
    old = os.environ.get("PULSE_TRT_CACHE")
    os.environ["PULSE_TRT_CACHE"] = str(pulse_cache)
    try:
        assert main(["upsample", str(faces24), "-o", str(out), "--steps", str(FAST_STEPS), "-q"]) == 0
    finally:
        if old is None:
            os.environ.pop("PULSE_TRT_CACHE", None)
        else:
            os.environ["PULSE_TRT_CACHE"] = old
    return read_records(out)


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray for the module: 2 CPUs, no dashboard; shut down afterwards."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield ray
    finally:
        ray.shutdown()
