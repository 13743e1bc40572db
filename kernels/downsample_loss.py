"""PULSE's downscale D fused with the L2 / L1 loss and its gradient: reference and CUDA kernels.

downsample_loss(hr, target, factor, eps, w2, w1, impl=...) returns D(hr), the per-image loss
terms, dL/dLR and dL/dHR for L = w2 * sum_n L2_n + w1 * sum_n L1_n (export/losses.py's terms):
the objective's image half of one PULSE step, one read and one write of the HR image on a GPU.
impl="ref" is the readable specification (numpy, float64 inside); impl="cuda" runs
downsample_loss.cu through kernels/loader.py on torch or CuPy device arrays.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..engine import bicubic
from ..engine.errors import PulseError

IMPLS = ("ref", "cuda")
_SUFFIX = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}
THREADS = 256


class DownsampleLoss(NamedTuple):
    """lr [N, C, h, w] = D(hr); l2, l1 [N] (loss terms: max(eps, MSE), 10 max(eps, MAE));
    grad_lr [N, C, h, w] = dL/dLR; grad_hr [N, C, H, W] = dL/dHR = D^T(grad_lr)."""

    lr: object
    l2: object
    l1: object
    grad_lr: object
    grad_hr: object


def downsample_loss(hr, target, factor: int, eps: float, w2: float = 1.0, w1: float = 0.0,
                    impl: str = "ref", stream=None) -> DownsampleLoss:
    """PULSE's bicubic downscale, loss and gradient in one pass over the HR image.

    Algorithm (per image n, count = C*h*w):
      1. lr = D(hr): reflect pad 3f (floor half first), 4f Keys taps (a = -0.5) at stride f,
         rows then columns (engine.bicubic).
      2. d = lr - target; mse_n = mean d^2; mae_n = mean |d|.
      3. l2_n = max(eps, mse_n); l1_n = 10 * max(eps, mae_n)   (export.losses.l2 / l1).
      4. grad_lr = w2 * [mse_n >= eps] * 2 d / count + w1 * 10 * [mae_n >= eps] * sign(d) / count
         (the clamp passes no gradient below eps, as torch.clamp).
      5. grad_hr = D^T(grad_lr).
    Args:
        hr:     [N, C, H, W]; ref: numpy float (float64 math, float64 out for float64 in, else
                float32); cuda: torch / CuPy device array, float32 | float16 | bfloat16.
        target: [N, C, H/f, W/f] float32 (float64 allowed for ref).
        factor: integer f >= 1 dividing H and W (1024 / lr_size in PULSE).
        eps:    clamp of the mean errors (PULSE default 2e-3).
        w2, w1: weights of the L2 and L1 terms in L (default 1, 0).
        impl:   "ref" | "cuda".
        stream: cuda only: stream to launch on (default: the array library's current stream).
    Returns:
        DownsampleLoss(lr, l2, l1, grad_lr, grad_hr); cuda: float32 device arrays except
        grad_hr in hr's dtype.
    """
    if impl == "ref":
        return downsample_loss_ref(hr, target, factor, eps, w2, w1)
    if impl == "cuda":
        return downsample_loss_cuda(hr, target, factor, eps, w2, w1, stream=stream)
    raise PulseError(f"impl must be one of {', '.join(IMPLS)}; got {impl!r}")


def downsample_loss_ref(hr, target, factor: int, eps: float, w2: float = 1.0, w1: float = 0.0) -> DownsampleLoss:
    """The specification of downsample_loss (numpy): see its docstring."""
    hr = np.asarray(hr)
    out_dtype = np.float64 if hr.dtype == np.float64 else np.float32
    n, c, h, w = _check_shapes(hr.shape, np.shape(target), factor)
    lr = bicubic.downscale(hr.astype(np.float64), factor)                   # [N, C, h, w]
    d = lr - np.asarray(target, np.float64)                                # [N, C, h, w]
    count = c * (h // factor) * (w // factor)
    mse = (d * d).reshape(n, -1).mean(axis=1)                              # [N]
    mae = np.abs(d).reshape(n, -1).mean(axis=1)                            # [N]
    c2 = np.where(mse >= eps, w2 * 2.0 / count, 0.0)[:, None, None, None]
    c1 = np.where(mae >= eps, w1 * 10.0 / count, 0.0)[:, None, None, None]
    grad_lr = c2 * d + c1 * np.sign(d)                                     # [N, C, h, w]
    grad_hr = bicubic.downscale_transpose(grad_lr, factor, (h, w))         # [N, C, H, W]
    cast = lambda a: np.asarray(a, out_dtype)  # noqa: E731
    return DownsampleLoss(cast(lr), cast(np.maximum(eps, mse)), cast(10.0 * np.maximum(eps, mae)),
                          cast(grad_lr), cast(grad_hr))


def _check_shapes(hr_shape, target_shape, factor: int) -> tuple[int, int, int, int]:
    if len(hr_shape) != 4:
        raise PulseError(f"downsample_loss expects hr [N, C, H, W], got shape {tuple(hr_shape)}")
    n, c, h, w = (int(s) for s in hr_shape)
    bicubic.downscale_matrix(h, factor)  # PulseError for a bad factor or size
    bicubic.downscale_matrix(w, factor)
    want = (n, c, h // factor, w // factor)
    if tuple(int(s) for s in target_shape) != want:
        raise PulseError(f"target must have shape {list(want)} for hr {list(hr_shape)} and factor {factor}; got {list(target_shape)}")
    return n, c, h, w


# ---- CUDA ---------------------------------------------------------------------------------------

def fwd_config(n: int, c: int, h: int, w: int, factor: int):
    """(grid, block, shared bytes, QY, QX) of downsample_loss_fwd_*: a block covers QY x QX
    groups of f padded positions (~32 rows x 256 columns of HR)."""
    f = factor
    qx, qy = max(1, THREADS // f), max(1, 32 // f)
    grid = (-(-(w // f + 3) // qx), -(-(h // f + 3) // qy), n * c)
    shared = 4 * (4 * f + (qy + 3) * qx * f + 40)
    return grid, (THREADS, 1, 1), shared, qy, qx


def transpose_config(n: int, c: int, h: int, w: int, factor: int):
    """(grid, block, shared bytes, RT) of downscale_transpose_*: RT HR rows x 256 columns."""
    f = factor
    rt = min(64, 8 * f)
    nr, ncol = -(-rt // f) + 6, -(-THREADS // f) + 6
    grid = (-(-w // THREADS), -(-h // rt), n * c)
    return grid, (THREADS, 1, 1), 4 * (4 * f + nr * ncol + nr * THREADS), rt


def gather_config(n: int, c: int, h: int, w: int, factor: int):
    """(grid, block, shared bytes, TO) of downscale_gather_*: TO LR rows x all columns."""
    f = factor
    to = max(1, min(8, 8192 // w))
    return (1, -(-(h // f) // to), n * c), (THREADS, 1, 1), 4 * (4 * f + to * w), to


def launch_downsample_loss(module, hr, target, lr, loss, grad_lr, grad_hr, counters, shape, factor: int,
                           dtype: str, eps: float, w2: float, w1: float, stream=0) -> None:
    """Pointer-level launch (for engines holding raw buffers, e.g. ORT values): zero lr and
    counters, run downsample_loss_fwd then downscale_transpose on `stream`.
    hr [N, C, H, W] dtype; target, lr, grad_lr [N, C, h, w] f32; loss [N, 2] f32 (L2, L1);
    grad_hr [N, C, H, W] dtype; counters [N] u32 workspace. dtype: float32 | float16 | bfloat16."""
    n, c, h, w = shape
    sfx = _SUFFIX[dtype]
    module.memset32(lr, n * c * (h // factor) * (w // factor), stream)
    module.memset32(counters, n, stream)
    grid, block, shared, qy, qx = fwd_config(n, c, h, w, factor)
    module.launch(f"downsample_loss_fwd_{sfx}", grid, block, [
        (hr, "ptr"), (target, "ptr"), (n, "i32"), (c, "i32"), (h, "i32"), (w, "i32"), (factor, "i32"),
        (qy, "i32"), (qx, "i32"), (eps, "f32"), (w2, "f32"), (w1, "f32"),
        (lr, "ptr"), (loss, "ptr"), (grad_lr, "ptr"), (counters, "ptr")], shared, stream)
    grid, block, shared, rt = transpose_config(n, c, h, w, factor)
    module.launch(f"downscale_transpose_{sfx}", grid, block, [
        (grad_lr, "ptr"), (n, "i32"), (c, "i32"), (h, "i32"), (w, "i32"), (h // factor, "i32"),
        (rt, "i32"), (grad_hr, "ptr")], shared, stream)


def downsample_loss_cuda(hr, target, factor: int, eps: float, w2: float = 1.0, w1: float = 0.0,
                         stream=None) -> DownsampleLoss:
    """downsample_loss on a GPU (torch or CuPy arrays): see downsample_loss."""
    from .loader import get_module  # noqa: PLC0415

    xp = _array_lib(hr)
    n, c, h, w = _check_shapes(hr.shape, target.shape, factor)
    dtype = _dtype_name(hr)
    if dtype not in _SUFFIX or _dtype_name(target) != "float32":
        raise PulseError(f"downsample_loss (cuda) takes hr float32/float16/bfloat16 and target float32; got {dtype}, {_dtype_name(target)}")
    hr, target = xp.contiguous(hr), xp.contiguous(target)
    lr_shape = (n, c, h // factor, w // factor)
    lr, grad_lr = xp.empty(lr_shape, "float32", hr), xp.empty(lr_shape, "float32", hr)
    loss = xp.empty((n, 2), "float32", hr)
    grad_hr = xp.empty((n, c, h, w), dtype, hr)
    counters = xp.empty((n,), "int32", hr)
    module = get_module(xp.device_index(hr))
    launch_downsample_loss(module, hr, target, lr, loss, grad_lr, grad_hr, counters, (n, c, h, w), factor,
                           dtype, eps, w2, w1, xp.stream(stream))
    return DownsampleLoss(lr, loss[:, 0], loss[:, 1], grad_lr, grad_hr)


def downscale(x, factor: int, impl: str = "ref", stream=None):
    """D(x): [N, C, H, W] -> [N, C, H/f, W/f] float32. ref: engine.bicubic.downscale;
    cuda: the gather kernel (one launch, the TensorRT plugin's kernel) on torch / CuPy arrays."""
    if impl == "ref":
        return bicubic.downscale(np.asarray(x), factor)
    if impl != "cuda":
        raise PulseError(f"impl must be one of {', '.join(IMPLS)}; got {impl!r}")
    from .loader import get_module  # noqa: PLC0415

    xp = _array_lib(x)
    n, c, h, w = _check_shapes(x.shape, (x.shape[0], x.shape[1], x.shape[2] // factor, x.shape[3] // factor), factor)
    x = xp.contiguous(x)
    y = xp.empty((n, c, h // factor, w // factor), "float32", x)
    grid, block, shared, to = gather_config(n, c, h, w, factor)
    get_module(xp.device_index(x)).launch(f"downscale_gather_{_SUFFIX[_dtype_name(x)]}", grid, block, [
        (x, "ptr"), (n, "i32"), (c, "i32"), (h, "i32"), (w, "i32"), (h // factor, "i32"), (to, "i32"),
        (y, "ptr")], shared, xp.stream(stream))
    return y


def _dtype_name(x) -> str:
    return str(x.dtype).replace("torch.", "")


class _Torch:
    def __init__(self, torch):
        self.torch = torch

    def empty(self, shape, dtype, like):
        return self.torch.empty(shape, dtype=getattr(self.torch, dtype), device=like.device)

    def contiguous(self, x):
        return x.contiguous()

    def device_index(self, x) -> int:
        return x.device.index or 0

    def stream(self, stream):
        return stream if stream is not None else self.torch.cuda.current_stream().cuda_stream


class _Cupy:
    def __init__(self, cupy):
        self.cupy = cupy

    def empty(self, shape, dtype, like):
        return self.cupy.empty(shape, dtype=dtype)

    def contiguous(self, x):
        return self.cupy.ascontiguousarray(x)

    def device_index(self, x) -> int:
        return x.device.id

    def stream(self, stream):
        return stream if stream is not None else self.cupy.cuda.get_current_stream().ptr


def _array_lib(x):
    """torch or CuPy glue for a device array (impl="cuda" takes either)."""
    mod = type(x).__module__.split(".")[0]
    if mod == "torch":
        if not x.is_cuda:
            raise PulseError("impl='cuda' needs CUDA tensors; use impl='ref' for host arrays")
        import torch  # noqa: PLC0415

        return _Torch(torch)
    if mod == "cupy":
        import cupy  # noqa: PLC0415

        return _Cupy(cupy)
    raise PulseError(f"impl='cuda' takes torch CUDA tensors or CuPy arrays, got {type(x).__name__}")
