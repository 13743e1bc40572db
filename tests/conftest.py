"""Fixtures shared by every test package: the embedded dcgan (torch side)."""
from __future__ import annotations

import pytest


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
