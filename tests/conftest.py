"""Fixtures shared by every test package: the embedded dcgan (torch side), the session's
artefact cache folder and the dcgan artefacts for 8x8 inputs exported into it once per session
(tests/cli, tests/serve and tests/ray point PULSE_TRT_CACHE at that folder)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from shared import FAST_STEPS


@pytest.fixture(scope="session")
def pulse_cache(tmp_path_factory):
    """The session's artefact cache folder."""
    path = tmp_path_factory.getbasetemp() / "pulse-trt-cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def artifacts5(pulse_cache):
    """dcgan artefacts for 8x8 inputs, options PulseOptions(steps=FAST_STEPS), exported (or found)
    in the session cache by pulse_trt.api.Pulse. SimpleNamespace(dir, key, log)."""
    pytest.importorskip("torch")
    from pulse_trt.api import Pulse  # noqa: PLC0415
    from pulse_trt.engine.options import PulseOptions  # noqa: PLC0415

    lines: list[str] = []
    with Pulse(lr_size=8, options=PulseOptions(steps=FAST_STEPS), cache_dir=pulse_cache, log=lines.append) as p:
        return SimpleNamespace(dir=p.artifacts_dir, key=p.key, log=lines)


@pytest.fixture(scope="session")
def dcgan():
    """The embedded 64 px dcgan (skips where torch or its weights are not available)."""
    try:
        from pulse_trt.export.generators import load_generator  # noqa: PLC0415

        return load_generator("dcgan")
    except (ImportError, FileNotFoundError) as e:
        pytest.skip(f"dcgan not available: {e}")


@pytest.fixture(scope="session")
def mobilestylegan_wheel(tmp_path_factory):
    """The pinned random-face wheel (MobileStyleGAN's IR), fetched once per test run with pip
    download (the project never depends on the package). $PULSE_TRT_TEST_WHEEL may name a copy on
    disk. Skips, saying why, only when the package index cannot be reached."""
    import os  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from pulse_trt.engine.errors import PulseError  # noqa: PLC0415
    from pulse_trt.weights import _pip_download  # noqa: PLC0415

    given = os.environ.get("PULSE_TRT_TEST_WHEEL")
    if given:
        return Path(given)
    try:
        return _pip_download(tmp_path_factory.mktemp("wheel"))
    except PulseError as e:
        pytest.skip(f"the random-face wheel could not be fetched here: {e}")
