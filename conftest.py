"""Shared by tests/ and benchmarks/: markers that skip cleanly when hardware or libraries are
missing (gpu: a CUDA GPU; trt: TensorRT)."""
from __future__ import annotations

import importlib.util
import shutil

import pytest


def _has_cuda_gpu() -> bool:
    try:
        import torch  # noqa: PLC0415

        return torch.cuda.is_available()
    except ImportError:  # an engine-only install: ask the driver
        return shutil.which("nvidia-smi") is not None


def pytest_collection_modifyitems(config, items):
    gpu = _has_cuda_gpu()
    trt = importlib.util.find_spec("tensorrt") is not None
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (none here)")
    skip_trt = pytest.mark.skip(reason="needs TensorRT (not installed; pip install 'pulse-trt[trt]' on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords and not gpu:
            item.add_marker(skip_gpu)
        if "trt" in item.keywords and not trt:
            item.add_marker(skip_trt)
