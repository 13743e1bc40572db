"""Load the pulse-trt kernels (the CMake-built fatbin) with cuda-python's driver API and launch
them on raw device pointers.

    module = KernelModule.load()                   # once per process (cached by get_module())
    module.launch("sphere_update_f32", grid, block, [(ptr, "ptr"), (n, "i32"), (x, "f32")], stream=s)

Device pointers are plain ints; device_ptr() takes them from cuda-python buffers, CuPy arrays
(__cuda_array_interface__), torch tensors (data_ptr()) or onnxruntime OrtValues (data_ptr()).
Errors: PulseError("build the kernels with: ...") when the fatbin is missing; PulseError naming
the cause when cuda-python or the CUDA driver is absent; RuntimeError with the driver's error
name when a CUDA call fails.
"""
from __future__ import annotations

import ctypes
import os
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..engine.errors import PulseError

BUILD_HINT = ("build the kernels with: cmake -S . -B build && cmake --build build (in a checkout of "
              "pulse-trt), or set PULSE_TRT_KERNELS to a built pulse_kernels.fatbin")
ENV_VAR = "PULSE_TRT_KERNELS"
REPO_ROOT = Path(__file__).resolve().parents[1]
SASS_ARCHS = (75, 80, 86, 87, 89, 90)   # CMakeLists.txt: PULSE_SASS_ARCHS
PTX_ARCH = 90                           # CMakeLists.txt: PULSE_PTX_ARCH
KERNELS = tuple(
    f"{name}_{sfx}" for name in ("downsample_loss_fwd", "downscale_transpose", "downscale_gather")
    for sfx in ("f32", "f16", "bf16")) + ("sphere_update_f32",)


def fatbin_path() -> Path:
    """$PULSE_TRT_KERNELS if set, else <repo>/build/kernels/pulse_kernels.fatbin."""
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else REPO_ROOT / "build" / "kernels" / "pulse_kernels.fatbin"


def ptx_path() -> Path:
    """The compute_75 PTX beside the fatbin (what the TensorRT AOT plugin embeds)."""
    return fatbin_path().with_suffix(".ptx")


def read_build(path: Path | None = None) -> bytes:
    """The bytes of a built artefact, or PulseError with the build command."""
    path = Path(path) if path is not None else fatbin_path()
    if not path.is_file():
        raise PulseError(f"CUDA kernels not found at {path}: {BUILD_HINT}")
    return path.read_bytes()


@dataclass(frozen=True)
class FatbinEntry:
    """One image inside a fatbin: kind "elf" (SASS) or "ptx", for arch (75 = sm_75 / compute_75)."""

    kind: str
    arch: int
    payload: bytes


_FATBIN_MAGIC = 0xBA55ED50


def fatbin_entries(data: bytes) -> list[FatbinEntry]:
    """Parse a fatbin container (what nvcc -fatbin writes): a 16-byte header (magic, version,
    header size, payload size), then entries of (kind u16: 1 PTX / 2 ELF, version u16, header
    size u32, payload size u64, ..., arch u32 at byte 28). PTX payloads are usually compressed;
    ELF payloads hold the kernel names in plain text. Used by the build test; no GPU needed."""
    if len(data) < 16:
        raise PulseError("not a fatbin: too short")
    magic, _version, header, size = struct.unpack_from("<IHHQ", data, 0)
    if magic != _FATBIN_MAGIC:
        raise PulseError(f"not a fatbin: magic {magic:#x}")
    out, off, end = [], header, header + size
    while off + 32 <= min(end, len(data)):
        kind, _v, ehs, payload = struct.unpack_from("<HHIQ", data, off)
        arch = struct.unpack_from("<I", data, off + 28)[0]
        out.append(FatbinEntry({1: "ptx", 2: "elf"}.get(kind, str(kind)), arch, data[off + ehs: off + ehs + payload]))
        off += ehs + payload
    return out


def device_ptr(x) -> int:
    """Raw device pointer (int) of a device buffer: int, cuda.bindings CUdeviceptr, cuda.core
    Buffer (.handle), CuPy / Numba / anything with __cuda_array_interface__, torch tensors and
    onnxruntime OrtValue (data_ptr())."""
    if isinstance(x, int):
        return x
    cai = getattr(x, "__cuda_array_interface__", None)
    if cai is not None:
        return int(cai["data"][0])
    if hasattr(x, "data_ptr"):               # torch.Tensor, onnxruntime.OrtValue
        is_cuda = getattr(x, "is_cuda", None)
        if is_cuda is False:
            raise PulseError("expected a CUDA tensor, got one in host memory")
        return int(x.data_ptr())
    if hasattr(x, "handle"):                 # cuda.core Buffer
        return int(x.handle)
    try:
        return int(x)                        # CUdeviceptr and friends
    except (TypeError, ValueError):
        raise PulseError(f"cannot take a device pointer from {type(x).__name__}") from None


_ARG_TYPES = {"ptr": ctypes.c_uint64, "i32": ctypes.c_int32, "u32": ctypes.c_uint32, "f32": ctypes.c_float}


def pack_args(args: list[tuple[object, str]]):
    """[(value, "ptr" | "i32" | "u32" | "f32"), ...] -> (keep-alive list, void*[] array) in the
    layout cuLaunchKernel's kernelParams expects. Pointers may be anything device_ptr takes."""
    values = []
    for value, kind in args:
        if kind not in _ARG_TYPES:
            raise ValueError(f"unknown kernel argument type {kind!r}")
        v = device_ptr(value) if kind == "ptr" and value is not None else (0 if value is None else value)
        values.append(_ARG_TYPES[kind](v))
    array = (ctypes.c_void_p * max(len(values), 1))(*[ctypes.addressof(v) for v in values])
    return values, array


def _driver():
    try:
        from cuda.bindings import driver  # noqa: PLC0415
    except ImportError:
        try:
            from cuda import cuda as driver  # noqa: PLC0415  (cuda-python < 12.6)
        except ImportError:
            raise PulseError("cuda-python is not installed: pip install 'pulse-trt[gpu]'") from None
    return driver


def _check(driver, result):
    """cuda-python returns (CUresult, *values): raise on an error, return the values."""
    err, *rest = result if isinstance(result, tuple) else (result,)
    if err != driver.CUresult.CUDA_SUCCESS:
        _, name = driver.cuGetErrorName(err)
        raise RuntimeError(f"CUDA driver error {name.decode() if isinstance(name, bytes) else name}")
    return rest[0] if len(rest) == 1 else tuple(rest)


class KernelModule:
    """The loaded fatbin on one device: functions by name, launches on raw pointers."""

    def __init__(self, driver, context, module, device: int):
        self.driver, self.context, self.module, self.device = driver, context, module, device
        self._functions: dict = {}

    @classmethod
    def load(cls, path: Path | None = None, device: int = 0) -> "KernelModule":
        """Load the fatbin into device `device`'s primary context (made current)."""
        data = read_build(path)
        driver = _driver()
        try:
            err = driver.cuInit(0)
        except Exception as e:  # the bindings raise when libcuda.so itself is missing
            raise PulseError(f"no CUDA driver found ({type(e).__name__}): the kernels need an NVIDIA GPU and driver") from None
        err = err[0] if isinstance(err, tuple) else err
        if err != driver.CUresult.CUDA_SUCCESS:
            raise PulseError(f"CUDA driver unavailable ({err.name if hasattr(err, 'name') else err}): the kernels need an NVIDIA GPU")
        dev = _check(driver, driver.cuDeviceGet(device))
        ctx = _check(driver, driver.cuDevicePrimaryCtxRetain(dev))
        _check(driver, driver.cuCtxSetCurrent(ctx))
        module = _check(driver, driver.cuModuleLoadData(data))
        return cls(driver, ctx, module, device)

    def function(self, name: str):
        if name not in self._functions:
            self._functions[name] = _check(self.driver, self.driver.cuModuleGetFunction(self.module, name.encode()))
        return self._functions[name]

    def launch(self, name: str, grid: tuple[int, int, int], block: tuple[int, int, int],
               args: list[tuple[object, str]], shared_mem: int = 0, stream=0) -> None:
        """cuLaunchKernel(name) on `stream` (int handle, CUstream, torch/cupy stream with
        .cuda_stream / .ptr, or 0 for the legacy default stream)."""
        d = self.driver
        fn = self.function(name)
        if shared_mem > 48 * 1024:
            attr = d.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
            _check(d, d.cuFuncSetAttribute(fn, attr, int(shared_mem)))
        _keep, array = pack_args(args)
        _check(d, d.cuCtxSetCurrent(self.context))
        _check(d, d.cuLaunchKernel(fn, *map(int, grid), *map(int, block), int(shared_mem),
                                   stream_handle(stream), ctypes.addressof(array), 0))

    def memset32(self, ptr, count: int, stream=0) -> None:
        """Zero `count` 32-bit words at device pointer `ptr` (async on `stream`)."""
        _check(self.driver, self.driver.cuMemsetD32Async(device_ptr(ptr), 0, int(count), stream_handle(stream)))


def stream_handle(stream) -> int:
    """int handle of a stream given as int, CUstream, torch.cuda.Stream (.cuda_stream) or
    cupy Stream (.ptr)."""
    if stream is None:
        return 0
    for attr in ("cuda_stream", "ptr", "handle"):
        if hasattr(stream, attr):
            return int(getattr(stream, attr))
    return int(stream)


@lru_cache(maxsize=8)
def get_module(device: int = 0) -> KernelModule:
    """The process-wide KernelModule of `device` (loaded on first use)."""
    return KernelModule.load(device=device)
