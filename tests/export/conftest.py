"""Fixtures of the export tests: tiny generators (tests/export/tiny_generator.py) and, when the
real registry exists, the embedded dcgan."""
from __future__ import annotations

import pytest

from tiny_generator import TinyStyleGenerator, TinyVectorGenerator


@pytest.fixture(scope="session")
def tiny_style() -> TinyStyleGenerator:
    """16 px StyleGAN-like generator: mapping, num_ws=6, 6 noise maps."""
    return TinyStyleGenerator()


@pytest.fixture(scope="session")
def tiny_vector() -> TinyVectorGenerator:
    """16 px single-vector generator: num_ws=1, no mapping, no noise."""
    return TinyVectorGenerator()


@pytest.fixture(scope="session")
def dcgan():
    """The embedded 64 px dcgan, or a skip while export/generators/dcgan.py is not there."""
    try:
        from pulse_trt.export.generators import load_generator  # noqa: PLC0415
    except ImportError:
        pytest.skip("export.generators.load_generator not written yet")
    try:
        return load_generator("dcgan")
    except (ImportError, FileNotFoundError) as e:  # weights or module missing
        pytest.skip(f"dcgan not available: {e}")
