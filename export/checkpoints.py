"""Loading and hashing generator weights, with one-line errors for every bad file.

Checkpoints are read with `torch.load(..., weights_only=True)` (no pickled code runs) or with
safetensors; every check names the first offending key, so a user sees what is wrong with the
file rather than a stack trace.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Mapping

import torch

from ..engine.errors import PulseError

_CHUNK_BYTES = 1 << 20


def file_sha256(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def state_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """Deterministic sha256 of named tensors: independent of dict order, device and memory layout.

    Algorithm: for each name in sorted order, hash the name, the dtype, the shape and the raw
    little-endian bytes of the contiguous CPU tensor (each field separated so that no two
    different states share a byte stream).
    """
    digest = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}\0{str(t.dtype)}\0{tuple(t.shape)}\0".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_checkpoint(path: str | Path, what: str = "checkpoint") -> dict:
    """Read a weights file into a dict without running pickled code.

    `.safetensors` files are read with safetensors; anything else with
    torch.load(weights_only=True, map_location="cpu"). Raises PulseError (one line) for a missing
    file, a file that is not a checkpoint, a truncated file, or one that does not hold a dict.
    `what` names the file in messages (e.g. "stylegan1 synthesis weights").
    """
    path = Path(path)
    if not path.is_file():
        raise PulseError(f"{what} not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError  # noqa: PLC0415
        from safetensors.torch import load_file  # noqa: PLC0415

        try:
            return dict(load_file(str(path), device="cpu"))
        except (SafetensorError, OSError, ValueError) as e:
            raise PulseError(f"{what} {path} is not a readable safetensors file ({_first_line(e)})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (pickle, zip and EOF errors all mean "not a checkpoint")
        refused = _refused_global(e)
        if refused is not None:
            raise PulseError(f"{what} {path} holds pickled code or objects ({refused}), not only tensors: refused "
                             "(checkpoints are loaded with weights_only=True, so none of it ran); save a plain state "
                             "dict (torch.save(model.state_dict(), path)) or a .safetensors file") from None
        raise PulseError(f"{what} {path} is not a readable PyTorch checkpoint (truncated, corrupt or not "
                         f"a weights file; {type(e).__name__}: {_first_line(e)})") from None
    if not isinstance(obj, Mapping):
        raise PulseError(f"{what} {path} holds a {type(obj).__name__}, not a state dict")
    return dict(obj)


def tensors_only(obj: Mapping, path: str | Path, what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The dict itself when every value is a tensor, else PulseError naming the first other key."""
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise PulseError(f"{what} {path}: entry {key!r} is a {type(value).__name__}, not a tensor "
                             "(expected a plain state dict)")
    return dict(obj)


def check_state(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Size],
                source: str) -> None:
    """Strict names and shapes: PulseError naming the first missing key, then the first unexpected
    key, then the first shape mismatch (expected vs found), each in `expected`'s order."""
    for key in expected:
        if key not in state:
            raise PulseError(f"{source}: missing key {key!r} (expected shape {_shape(expected[key])}); "
                             "wrong file or wrong resolution/fmaps?")
    for key in state:
        if key not in expected:
            raise PulseError(f"{source}: unexpected key {key!r} (shape {_shape(state[key].shape)}); "
                             "wrong file or wrong resolution/fmaps?")
    for key, shape in expected.items():
        if tuple(state[key].shape) != tuple(shape):
            raise PulseError(f"{source}: key {key!r} has shape {_shape(state[key].shape)}, expected "
                             f"{_shape(shape)}; wrong resolution/fmaps?")


def copy_strict(target: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], source: str) -> None:
    """check_state(state, shapes of target), then copy every tensor of `state` into `target` (a
    module's state_dict(), or part of it: its tensors share the module's storage), converting to
    the target's dtype."""
    check_state(state, {k: v.shape for k, v in target.items()}, source)
    with torch.no_grad():
        for key, tensor in target.items():
            tensor.copy_(state[key])


# --- the StyleGAN v1 checkpoint layouts ------------------------------------------------------------

# Entries of the `g_mapping.` / `g_synthesis.` layout (lernapparat's nn.Sequential of mapping,
# truncation and synthesis) that hold no trained weight and are dropped: the truncation module's
# average latent, and noise maps some ports store as buffers (PULSE feeds its own noise).
_DROPPED = (
    re.compile(r"^g_truncation\."),
    re.compile(r"^truncation\."),
    re.compile(r"(^|\.)noise\.noise$"),  # NoiseLayer buffer `...epi1.noise.noise`
    re.compile(r"(^|\.)noise_?\d+$"),  # per-layer noise buffers `noise0` .. `noise17`
)


def split_stylegan1_state(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split a StyleGAN v1 state dict into (synthesis, mapping) in PULSE's key layout.

    Layouts accepted:
      1. PULSE's `synthesis.pt` (keys `blocks.*`, `torgb.*`) or `mapping.pt` (keys `dense{i}.*`):
         returned as they are (the other dict is empty).
      2. The prefixed layout of lernapparat's port (`g_mapping.dense0.weight`,
         `g_synthesis.blocks.4x4.const`, ...), possibly both networks in one file. Steps:
         a. drop entries that are no trained weight: `g_truncation.*` (the truncation average) and
            noise buffers (`*.noise.noise`, `noise0`..`noise17`);
         b. rename the noise weight `epi{1,2}.top_epi.noise.weight` to `epi{1,2}.noise.weight`
            (lernapparat nests the noise layer inside `top_epi`);
         c. strip `g_synthesis.` into the synthesis dict and `g_mapping.` into the mapping dict.
    Unknown keys are kept in the synthesis dict (or the mapping dict when they look like one), so
    that the strict check names them.
    """
    synthesis: dict[str, torch.Tensor] = {}
    mapping: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if any(p.search(key) for p in _DROPPED):
            continue
        key = key.replace(".top_epi.noise.weight", ".noise.weight")
        if key.startswith("g_mapping."):
            mapping[key[len("g_mapping."):]] = value
        elif key.startswith("g_synthesis."):
            synthesis[key[len("g_synthesis."):]] = value
        elif re.match(r"^(pixel_norm|dense\d+)(\.|$)", key):
            mapping[key] = value
        else:
            synthesis[key] = value
    return synthesis, mapping


def _shape(shape) -> str:
    return str(tuple(int(s) for s in shape))


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _first_line(e: BaseException) -> str:
    text = _ANSI.sub("", str(e)).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


def _refused_global(e: BaseException) -> str | None:
    """What torch's weights_only unpickler refused ("GLOBAL builtins.print": the class or
    function a pickled object or call needs), or None when `e` is another failure (garbage
    bytes, truncation). torch's own message is several lines of advice to load with
    weights_only=False, which is exactly what must not be done with such a file."""
    text = _ANSI.sub("", str(e))
    m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text) if "Weights only load failed" in text else None
    return f"GLOBAL {m.group(1)}" if m else None


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file and os.replace, so readers never see a partial file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
