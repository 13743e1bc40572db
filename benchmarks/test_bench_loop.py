"""Loop benchmarks (pytest-benchmark): one short PULSE search on the embedded default, by the
PyTorch reference and by the ONNX Runtime engine, tiny so that CI runs them quickly."""
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

from pulse_trt.engine.api import PulseEngine  # noqa: E402
from pulse_trt.engine.options import PulseOptions  # noqa: E402
from pulse_trt.export.generators import load_generator  # noqa: E402
from pulse_trt.export.onnx_export import export_cached  # noqa: E402
from pulse_trt.export.reference import pulse_search  # noqa: E402

pytestmark = pytest.mark.benchmark
OPTIONS = PulseOptions(steps=5)


@pytest.fixture(scope="module")
def dcgan():
    return load_generator("dcgan")


@pytest.fixture(scope="module")
def targets():
    return np.random.default_rng(0).random((2, 3, 8, 8), dtype=np.float32)


@pytest.fixture(scope="module")
def artifacts(dcgan, tmp_path_factory):
    return export_cached(dcgan, OPTIONS, 8, tmp_path_factory.mktemp("art"), verify=False, progress=False)


def test_reference_search(benchmark, dcgan, targets):
    results = benchmark(pulse_search, dcgan, targets, OPTIONS)
    assert len(results) == 2 and results[0].record["steps"] == 5


def test_engine_search_ort(benchmark, artifacts, targets):
    with PulseEngine(artifacts, backend="ort", slots=2) as engine:
        results = benchmark(engine.search, targets)
    assert len(results) == 2 and results[0].record["backend"]
