"""Fixtures of the engine tests: toy artefacts (tests/engine/toy_artifacts.py, no torch) and,
when the exporter and generators exist, real ones exported once per session."""
from __future__ import annotations

import pytest

from toy_artifacts import write_toy_artifacts


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory):
    """Toy artefacts: adam, 20 steps, duplicates 2, noise roles trainable/frozen/zero."""
    return write_toy_artifacts(tmp_path_factory.mktemp("toy"), duplicates=2)
