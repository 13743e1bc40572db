"""Fixtures of the export tests: tiny generators (tests/export/tiny_generator.py); the embedded
dcgan comes from tests/conftest.py."""
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
