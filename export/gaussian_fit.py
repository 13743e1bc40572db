"""PULSE's "Gaussian fit" of a mapping network, computed in chunks and cached beside the weights.

PULSE maps its search variable v through w = LeakyReLU_0.2(v * std + mean), where mean and std
[D] describe the mapping's output with its final LeakyReLU(0.2) undone by LeakyReLU(5). The
reference computed it from 1,000,000 samples in one batch (out of memory on most GPUs) and looked
the cache up in the working directory; here it is accumulated in float64 over chunks and cached in
a small file keyed by the mapping weights, n and seed.
"""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..engine.errors import PulseError
from .checkpoints import atomic_write_bytes, state_sha256

FIT_SAMPLES = 1_000_000
FIT_CHUNK = 32_768
UNDO_SLOPE = 5.0  # LeakyReLU(5) inverts LeakyReLU(0.2)
_CACHE_FORMAT = "pulse-trt-gaussian-fit/1"


def gaussian_fit(mapping: nn.Module, n: int = FIT_SAMPLES, chunk: int = FIT_CHUNK, seed: int = 0, *,
                 latent_dim: int | None = None, progress: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std of LeakyReLU_5(mapping(z)), z ~ N(0, I).

    Algorithm:
      1. g = torch.Generator("cpu").manual_seed(seed). For each chunk of at most `chunk` rows
         (n rows in all): z = torch.randn(rows, D, generator=g) [rows, D] float32 on the CPU (so
         the samples do not depend on the device), moved to the mapping's device and dtype.
      2. x = LeakyReLU(mapping(z), negative_slope=5) [rows, D], cast to float64.
      3. Merge the chunk's mean and sum of squared deviations into the running ones (Chan et al.'s
         parallel update, float64), so no more than one chunk is ever in memory.
      4. mean = running mean; std = sqrt(M2 / (n - 1)) (unbiased, like torch.std).
    The samples are those of one torch.randn(n, D) draw whatever the chunk when D is a multiple of
    16 (torch's CPU sampler fills 16 values at a time), as for StyleGAN's D = 512.

    Args:
        mapping:    module z [N, D] -> w [N, D] (e.g. StyleGAN1Generator.mapping); run under no_grad.
        n:          number of samples (PULSE: 1,000,000); >= 2.
        chunk:      rows per forward pass (memory ~ chunk * D * 4 bytes per activation).
        seed:       seed of the torch.Generator drawing z (PULSE: 0).
        latent_dim: D; default mapping.latent_dim, else the input size of its first 2-D weight.
        progress:   tqdm bar on stderr; default: shown when n >= 100,000.
    Returns:
        (mean, std), each [D] float32 on the CPU.
    """
    if n < 2:
        raise PulseError(f"the Gaussian fit needs at least 2 samples; got n={n}")
    if chunk < 1:
        raise PulseError(f"the Gaussian fit chunk must be >= 1; got {chunk}")
    dim = latent_dim or _input_dim(mapping)
    param = next(iter(mapping.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    g = torch.Generator("cpu").manual_seed(seed)
    count = 0
    mean = torch.zeros(dim, dtype=torch.float64, device=device)
    m2 = torch.zeros(dim, dtype=torch.float64, device=device)
    bar = tqdm(total=n, desc="Gaussian fit", unit="z", unit_scale=True, leave=False,
               disable=not (n >= 100_000 if progress is None else progress))
    with torch.no_grad(), bar:
        while count < n:
            rows = min(chunk, n - count)
            z = torch.randn(rows, dim, generator=g).to(device=device, dtype=dtype)  # [rows, D]
            x = F.leaky_relu(mapping(z), UNDO_SLOPE).double()  # [rows, D]
            chunk_mean = x.mean(dim=0)  # [D]
            chunk_m2 = (x - chunk_mean).square().sum(dim=0)  # [D]
            total = count + rows
            delta = chunk_mean - mean
            mean = mean + delta * (rows / total)
            m2 = m2 + chunk_m2 + delta.square() * (count * rows / total)
            count = total
            bar.update(rows)
    std = (m2 / (n - 1)).sqrt()
    return mean.float().cpu(), std.float().cpu()


def fit_cache_key(mapping: nn.Module, n: int, seed: int) -> str:
    """sha256 naming a fit: the format tag, the hash of the mapping's tensors, n and seed."""
    weights = state_sha256(mapping.state_dict())
    return hashlib.sha256(f"{_CACHE_FORMAT}\0{weights}\0{n}\0{seed}".encode()).hexdigest()


def fit_cache_path(cache_dir: str | Path, key: str) -> Path:
    """The cache file of a fit: cache_dir/gaussian_fit-<first 24 hex digits of key>.safetensors."""
    return Path(cache_dir) / f"gaussian_fit-{key[:24]}.safetensors"


def cached_gaussian_fit(mapping: nn.Module, cache_dir: str | Path | None, n: int = FIT_SAMPLES, seed: int = 0, *,
                        chunk: int = FIT_CHUNK, progress: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """gaussian_fit, read from / written to a small cache file (two [D] float32 tensors).

    Steps:
      1. key = fit_cache_key(mapping, n, seed); file = fit_cache_path(cache_dir, key).
      2. If the file exists, holds `mean` and `std` of shape [D] and its metadata names the same
         key: return them (no sample is drawn).
      3. Else compute gaussian_fit and write the file atomically (temporary file + rename). A
         directory that cannot be written only warns: the fit is returned uncached.
    cache_dir None: no cache (always computed).
    """
    if cache_dir is None:
        return gaussian_fit(mapping, n, chunk, seed, progress=progress)
    from safetensors import SafetensorError  # noqa: PLC0415
    from safetensors.torch import load_file, safe_open, save  # noqa: PLC0415

    key = fit_cache_key(mapping, n, seed)
    path = fit_cache_path(cache_dir, key)
    dim = _input_dim(mapping)
    if path.is_file():
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            tensors = load_file(str(path))
            mean, std = tensors["mean"], tensors["std"]
            if meta.get("key") == key and mean.shape == (dim,) and std.shape == (dim,):
                return mean.float(), std.float()
        except (SafetensorError, OSError, KeyError, ValueError):
            pass  # unreadable or foreign: recompute and overwrite
    mean, std = gaussian_fit(mapping, n, chunk, seed, progress=progress)
    data = save({"mean": mean.contiguous(), "std": std.contiguous()},
                metadata={"format": _CACHE_FORMAT, "key": key, "n": str(n), "seed": str(seed),
                          "mapping_sha256": state_sha256(mapping.state_dict()),
                          "transform": "LeakyReLU(negative_slope=5) of the mapping output; std unbiased"})
    try:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
    except OSError as e:
        warnings.warn(f"could not cache the Gaussian fit in {cache_dir} ({e.strerror or e}); "
                      "it will be recomputed next time (pass fit_cache_dir to choose a writable folder)",
                      stacklevel=2)
    return mean, std


def _input_dim(mapping: nn.Module) -> int:
    if hasattr(mapping, "latent_dim"):
        return int(mapping.latent_dim)
    for p in mapping.parameters():
        if p.ndim == 2:
            return int(p.shape[1])
    raise PulseError("cannot tell the mapping network's input size; pass latent_dim")


def load_gaussian_fit(path: str | Path, latent_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fit from a file: PULSE's shipped gaussian_fit.pt (torch.save of {"mean": [D], "std": [D]})
    or a .safetensors file with the same two tensors. Read with weights_only=True
    (checkpoints.load_checkpoint); PulseError (one line) for a missing or unreadable file, a missing
    entry, a shape other than [D] (or [1, D]), a value that is not finite or a std that is not > 0.
    Returns (mean, std) float32 [D]."""
    from .checkpoints import load_checkpoint  # noqa: PLC0415

    what = f"Gaussian fit {path}"
    state = load_checkpoint(path, "Gaussian fit")
    out = []
    for name in ("mean", "std"):
        t = state.get(name)
        if not isinstance(t, torch.Tensor):
            found = ", ".join(repr(k) for k in list(state)[:4]) or "nothing"
            raise PulseError(f"{what}: no {name!r} tensor (found {found}); expected PULSE's gaussian_fit.pt, "
                             f"a dict of 'mean' and 'std' [{latent_dim}]")
        if tuple(t.shape) not in ((latent_dim,), (1, latent_dim)) or not t.is_floating_point():
            raise PulseError(f"{what}: {name!r} is {str(t.dtype).replace('torch.', '')} of shape {list(t.shape)}, "
                             f"expected float [{latent_dim}] (a fit of this generator's {latent_dim}-dim mapping)")
        t = t.detach().reshape(-1).float().cpu()
        if not bool(torch.isfinite(t).all()) or (name == "std" and float(t.min()) <= 0):
            raise PulseError(f"{what}: {name!r} has {'values that are not finite' if not bool(torch.isfinite(t).all()) else 'values <= 0'}")
        out.append(t)
    return out[0], out[1]


def fill_gaussian_fit(generator: nn.Module, cache_dir: str | Path | None, n: int = FIT_SAMPLES, seed: int = 0, *,
                      fit_file: str | Path | None = None) -> None:
    """Set a generator's `w_mean` / `w_std` buffers from cached_gaussian_fit of its `mapping`, or,
    with `fit_file`, from that file (load_gaussian_fit: PULSE's gaussian_fit.pt), nothing computed."""
    if fit_file is not None:
        mean, std = load_gaussian_fit(fit_file, int(generator.w_mean.shape[0]))
    else:
        mean, std = cached_gaussian_fit(generator.mapping, cache_dir, n=n, seed=seed)
    with torch.no_grad():
        generator.w_mean.copy_(mean)
        generator.w_std.copy_(std)
