"""One optimiser step fused with PULSE's spherical projection, in place: reference and CUDA.

sphere_adam(param, grad, m, v, radius, lr, t, ...) is Adam (torch.optim.Adam's formulas and
defaults, bias-corrected) followed by x <- x / sqrt(sum x^2 + 1e-9) * radius for every vector
over dims >= 2 (a latent [B, L, D]: each of its B*L rows; a noise map [B, C, H, W]: each
image's map), as export/step.py's update and projection. sphere_update covers adam, adamax,
sgd and sgdm (momentum 0.9) with one kernel (sphere_adam.cu).
"""
from __future__ import annotations

import math

import numpy as np

from ..engine.errors import PulseError

OPTIMIZERS = ("adam", "adamax", "sgd", "sgdm")
_OPT_CODE = {"adam": 0, "adamax": 1, "sgd": 2, "sgdm": 3}
SPHERE_EPS = 1e-9
MOMENTUM = 0.9


def vector_length(shape) -> int:
    """Length of one projected vector: D for a latent [B, L, D], C*H*W for a map [B, C, H, W]."""
    shape = tuple(shape)
    if len(shape) < 2:
        raise PulseError(f"sphere projection needs a tensor of >= 2 dims, got shape {shape}")
    return shape[-1] if len(shape) == 3 else int(np.prod(shape[1:]))


def sphere_adam(param, grad, m, v, radius, lr: float, t: int, beta1: float = 0.9, beta2: float = 0.999,
                eps: float = 1e-8, impl: str = "ref", stream=None) -> None:
    """Adam step then spherical projection, in place on param, m and v.

    Algorithm (torch.optim.Adam single-tensor path, then PULSE's projection):
      1. m = m + (1 - beta1) (g - m);  v = beta2 v + (1 - beta2) g^2
      2. param -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
      3. for each vector x of param (see vector_length): x <- x / sqrt(sum x^2 + 1e-9) * radius
    Args:
        param, grad, m, v: same shape, [B, L, D] (latent) or [B, C, H, W] (noise), float32;
                           ref: numpy arrays, cuda: torch / CuPy device arrays (contiguous).
        radius: one norm per vector ([B, L, 1] or [B, 1, 1, 1]), float32: the start's norms.
        lr:     learning rate of this step; t: 1-based step count.
        beta1, beta2, eps: torch's defaults.
        impl:   "ref" | "cuda".
    """
    sphere_update("adam", param, grad, [m, v], radius, lr, t, beta1, beta2, eps, impl=impl, stream=stream)


def sphere_update(opt_name: str, param, grad, moments: list, radius, lr: float, t: int = 1,
                  beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, impl: str = "ref",
                  stream=None) -> None:
    """One step of adam | adamax | sgd | sgdm (momentum 0.9) then the projection, in place.
    moments: adam [m, v]; adamax [m, u]; sgdm [m]; sgd []. Formulas: export/step.py
    optimizer_update (torch.optim's). Other arguments as sphere_adam."""
    if opt_name not in OPTIMIZERS:
        raise PulseError(f"opt_name must be one of {', '.join(OPTIMIZERS)}; got {opt_name!r}")
    want = {"adam": 2, "adamax": 2, "sgdm": 1, "sgd": 0}[opt_name]
    if len(moments) != want:
        raise PulseError(f"{opt_name} takes {want} moment tensors, got {len(moments)}")
    if impl == "ref":
        return sphere_update_ref(opt_name, param, grad, moments, radius, lr, t, beta1, beta2, eps)
    if impl == "cuda":
        return sphere_update_cuda(opt_name, param, grad, moments, radius, lr, t, beta1, beta2, eps, stream)
    raise PulseError(f"impl must be one of ref, cuda; got {impl!r}")


def sphere_update_ref(opt_name, param, grad, moments, radius, lr, t=1, beta1=0.9, beta2=0.999, eps=1e-8) -> None:
    """The specification (numpy, float32 arithmetic like torch's): see sphere_update."""
    f32 = np.float32
    g = grad
    if opt_name == "adam":
        m, v = moments
        m += f32(1.0 - beta1) * (g - m)
        v *= f32(beta2)
        v += f32(1.0 - beta2) * g * g
        step_size = f32(lr / (1.0 - beta1**t))
        denom = np.sqrt(v) / f32(math.sqrt(1.0 - beta2**t)) + f32(eps)
        param -= step_size * (m / denom)
    elif opt_name == "adamax":
        m, u = moments
        m += f32(1.0 - beta1) * (g - m)
        np.maximum(u * f32(beta2), np.abs(g) + f32(eps), out=u)
        param -= f32(lr / (1.0 - beta1**t)) * (m / u)
    elif opt_name == "sgdm":
        (m,) = moments
        m *= f32(MOMENTUM)
        m += g
        param -= f32(lr) * m
    else:
        param -= f32(lr) * g
    n = vector_length(param.shape)
    rows = param.reshape(-1, n)                                             # [nvec, len] view
    norm = np.sqrt((rows * rows).sum(axis=1, keepdims=True) + f32(SPHERE_EPS))  # [nvec, 1]
    rows *= np.asarray(radius, np.float32).reshape(-1, 1) / norm


def sphere_update_cuda(opt_name, param, grad, moments, radius, lr, t=1, beta1=0.9, beta2=0.999, eps=1e-8,
                       stream=None) -> None:
    """sphere_update on a GPU (torch or CuPy float32, contiguous): one block per vector."""
    from .downsample_loss import _array_lib, _dtype_name  # noqa: PLC0415
    from .loader import get_module  # noqa: PLC0415

    xp = _array_lib(param)
    for x in (param, grad, *moments, radius):
        if _dtype_name(x) != "float32":
            raise PulseError(f"sphere_update (cuda) takes float32 tensors, got {_dtype_name(x)}")
    n = vector_length(param.shape)
    nvec = int(np.prod(param.shape)) // n
    m = moments[0] if moments else None
    v = moments[1] if len(moments) > 1 else None
    step_size = lr / (1.0 - beta1**t) if opt_name in ("adam", "adamax") else lr
    launch_sphere_update(get_module(xp.device_index(param)), opt_name, param, grad, m, v, radius, nvec, n,
                         lr, step_size, math.sqrt(1.0 - beta2**t), beta1, beta2, eps, xp.stream(stream))


def launch_sphere_update(module, opt_name, param, grad, m, v, radius, nvec: int, length: int, lr: float,
                         step_size: float, bc2_sqrt: float, beta1: float, beta2: float, eps: float,
                         stream=0) -> None:
    """Pointer-level launch of sphere_update_f32 (nvec blocks of 256 threads)."""
    threads = 256 if length >= 256 else max(32, 1 << (max(length, 1) - 1).bit_length())
    module.launch("sphere_update_f32", (nvec, 1, 1), (threads, 1, 1), [
        (param, "ptr"), (grad, "ptr"), (m, "ptr"), (v, "ptr"), (radius, "ptr"), (nvec, "i32"), (length, "i32"),
        (_OPT_CODE[opt_name], "i32"), (lr, "f32"), (step_size, "f32"), (bc2_sqrt, "f32"), (beta1, "f32"),
        (beta2, "f32"), (eps, "f32"), (MOMENTUM, "f32")], 0, stream)
