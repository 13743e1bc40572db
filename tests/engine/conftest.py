"""Fixtures of the engine tests: toy artefacts (tests/engine/toy_artifacts.py, no torch) and,
when the exporter and generators exist, real ones exported once per session."""
from __future__ import annotations

import pytest

from toy_artifacts import write_toy_artifacts


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory):
    """Toy artefacts: adam, 20 steps, duplicates 2, noise roles trainable/frozen/zero."""
    return write_toy_artifacts(tmp_path_factory.mktemp("toy"), duplicates=2)


def _export(tmp_path_factory, name: str, generator, lr_size: int, **options):
    """Export real artefacts once per session (torch; skip while the exporter is missing)."""
    try:
        from pulse_trt.export.onnx_export import export_artifacts  # noqa: PLC0415
    except ImportError as e:
        pytest.skip(f"exporter not available: {e}")
    from pulse_trt.engine.options import PulseOptions  # noqa: PLC0415

    out = tmp_path_factory.mktemp(name) / "art"
    return export_artifacts(generator, PulseOptions(**options), lr_size, out, verify=False, check_trt=False,
                            progress=False)


@pytest.fixture(scope="session")
def dcgan_generator():
    try:
        from pulse_trt.export.generators import load_generator  # noqa: PLC0415

        return load_generator("dcgan")
    except (ImportError, FileNotFoundError) as e:
        pytest.skip(f"dcgan not available: {e}")


@pytest.fixture(scope="session")
def dcgan_dir(tmp_path_factory, dcgan_generator):
    """The embedded dcgan exported at lr 8 (x8), default options (100 steps)."""
    return _export(tmp_path_factory, "dcgan8", dcgan_generator, 8)
