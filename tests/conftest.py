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
