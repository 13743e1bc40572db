"""CMake build of the fatbin (architectures and kernel names, no GPU needed) and the loader's
errors when the build, cuda-python or the driver is missing."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from pulse_trt.engine.errors import PulseError
from pulse_trt.kernels import loader

HAVE_TOOLS = shutil.which("nvcc") is not None and shutil.which("cmake") is not None


def _check_fatbin(data: bytes) -> None:
    entries = loader.fatbin_entries(data)
    assert sorted(e.arch for e in entries if e.kind == "elf") == sorted(loader.SASS_ARCHS)
    assert [e.arch for e in entries if e.kind == "ptx"] == [loader.PTX_ARCH]
    for e in entries:
        if e.kind == "elf":
            missing = [k for k in loader.KERNELS if k.encode() not in e.payload]
            assert not missing, f"sm_{e.arch} lacks {missing}"


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_TOOLS, reason="needs nvcc and cmake")
def test_cmake_builds_fatbin_with_every_arch_and_kernel(tmp_path):
    build = tmp_path / "build"
    subprocess.run(["cmake", "-S", str(loader.REPO_ROOT), "-B", str(build)], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build)], check=True, capture_output=True)
    _check_fatbin((build / "kernels" / "pulse_kernels.fatbin").read_bytes())
    ptx = (build / "kernels" / "pulse_kernels.ptx").read_text()
    assert ".target sm_75" in ptx and all(f".entry {k}(" in ptx for k in loader.KERNELS)
    cuobjdump = shutil.which("cuobjdump")
    if cuobjdump:  # cross-check with NVIDIA's tool where it is installed
        elf = subprocess.run([cuobjdump, "--list-elf", str(build / "kernels" / "pulse_kernels.fatbin")],
                             check=True, capture_output=True, text=True).stdout
        assert all(f"sm_{a}" in elf for a in loader.SASS_ARCHS)


def test_existing_build_is_complete():
    path = loader.fatbin_path()
    if not path.is_file():
        pytest.skip(f"no build at {path} ({loader.BUILD_HINT})")
    _check_fatbin(path.read_bytes())


def test_missing_fatbin_names_the_build_command(tmp_path, monkeypatch):
    monkeypatch.setenv(loader.ENV_VAR, str(tmp_path / "none.fatbin"))
    assert loader.fatbin_path() == tmp_path / "none.fatbin"
    with pytest.raises(PulseError, match=r"cmake -S \. -B build && cmake --build build"):
        loader.KernelModule.load()


def test_no_driver_is_a_clear_error(tmp_path, monkeypatch):
    pytest.importorskip("cuda.bindings")
    try:
        from cuda.bindings import driver
        err = driver.cuInit(0)[0]
        if err == driver.CUresult.CUDA_SUCCESS:
            pytest.skip("a CUDA driver is present")
    except Exception:
        pass
    fake = tmp_path / "k.fatbin"
    fake.write_bytes(b"\x50\xed\x55\xba" + bytes(12))
    monkeypatch.setenv(loader.ENV_VAR, str(fake))
    with pytest.raises(PulseError, match="CUDA driver"):
        loader.KernelModule.load()


def test_fatbin_parser_rejects_other_files():
    with pytest.raises(PulseError, match="not a fatbin"):
        loader.fatbin_entries(b"\x7fELF" + bytes(40))


def test_device_ptr_sources():
    class Cai:
        __cuda_array_interface__ = {"data": (1234, False), "shape": (1,), "typestr": "<f4", "version": 3}

    class OrtLike:
        def data_ptr(self):
            return 5678

    class Buffer:
        handle = 42

    assert loader.device_ptr(99) == 99
    assert loader.device_ptr(Cai()) == 1234
    assert loader.device_ptr(OrtLike()) == 5678
    assert loader.device_ptr(Buffer()) == 42
    import torch

    with pytest.raises(PulseError, match="host memory"):
        loader.device_ptr(torch.zeros(2))
    with pytest.raises(PulseError):
        loader.device_ptr("not a buffer")


def test_pack_args_layout():
    import ctypes

    keep, array = loader.pack_args([(7, "ptr"), (3, "i32"), (0.5, "f32"), (None, "ptr")])
    assert ctypes.cast(array[0], ctypes.POINTER(ctypes.c_uint64)).contents.value == 7
    assert ctypes.cast(array[1], ctypes.POINTER(ctypes.c_int32)).contents.value == 3
    assert ctypes.cast(array[2], ctypes.POINTER(ctypes.c_float)).contents.value == 0.5
    assert ctypes.cast(array[3], ctypes.POINTER(ctypes.c_uint64)).contents.value == 0
