"""Engine cache keys and errors without TensorRT; a real build where TensorRT exists."""
from __future__ import annotations

import importlib.util

import pytest

from pulse_trt.engine.errors import PulseError
from pulse_trt.export import trt_build
from pulse_trt.export.trt_build import BuildConfig, EngineFromOnnx, engine_cache_key, onnx_sha256


def test_key_depends_on_every_factor():
    c = BuildConfig()
    base = engine_cache_key("h", "10.15.1", "NVIDIA H100", c)
    assert base == engine_cache_key("h", "10.15.1", "NVIDIA H100", BuildConfig())
    others = {engine_cache_key("h2", "10.15.1", "NVIDIA H100", c), engine_cache_key("h", "11.0.0", "NVIDIA H100", c),
              engine_cache_key("h", "10.15.1", "NVIDIA H200", c),
              engine_cache_key("h", "10.15.1", "NVIDIA H100", BuildConfig(max_batch=16)),
              engine_cache_key("h", "10.15.1", "NVIDIA H100", BuildConfig(tf32=False))}
    assert base not in others and len(others) == 5


def test_onnx_hash_includes_external_data(tmp_path):
    p = tmp_path / "step.onnx"
    p.write_bytes(b"graph")
    h1 = onnx_sha256(p)
    (tmp_path / "step.onnx.data").write_bytes(b"weights")
    assert onnx_sha256(p) != h1
    e = EngineFromOnnx(p, cache_dir=tmp_path / "c")
    assert e.engine_path("10.15", "gpu").name.startswith("step-") and e.timing_cache == tmp_path / "c" / "timing.cache"
    with pytest.raises(PulseError, match="does not exist"):
        onnx_sha256(tmp_path / "missing.onnx")


def test_bad_profile():
    with pytest.raises(PulseError, match="min <= opt <= max"):
        BuildConfig(min_batch=2, opt_batch=1, max_batch=4)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_missing_tensorrt_is_one_line_error(tmp_path):
    with pytest.raises(PulseError) as e:
        trt_build.build_engines(tmp_path)
    assert "pip install 'pulse-trt[trt]'" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.trt
@pytest.mark.gpu
def test_build_and_cache_engine(tmp_path, tiny_vector):
    from pulse_trt.engine.options import PulseOptions
    from pulse_trt.export.onnx_export import export_artifacts

    out = export_artifacts(tiny_vector, PulseOptions(), 4, tmp_path / "a", verify=False, progress=False)
    first = trt_build.build_engines(out, max_batch=4)
    assert all(p.is_file() for p in first)
    assert trt_build.build_engines(out, max_batch=4) == first  # cached
