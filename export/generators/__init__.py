"""Generators PULSE can search: `dcgan` (the embedded default), `stylegan1` and `mobilestylegan`.

    load_generator("dcgan")                                   # vendored 64 px weights, no download
    load_generator("stylegan1", "synthesis.pt", mapping="mapping.pt")   # PULSE's 1024 px FFHQ files
    load_generator("mobilestylegan", "mobilestylegan1024.safetensors")  # converted by pulse_trt.weights
    weights_sha256(generator)                                 # for caches and manifests
"""
from __future__ import annotations

import importlib.resources
from pathlib import Path

import torch

from ...engine.errors import PulseError
from ..checkpoints import copy_strict, load_checkpoint, state_sha256
from .base import Generator
from .dcgan import DCGANGenerator, dcgan_state_from_checkpoint
from .mobilestylegan import MobileStyleGANGenerator, load_mobilestylegan
from .stylegan1 import StyleGAN1Generator, load_stylegan1

GENERATORS = ("dcgan", "stylegan1", "mobilestylegan")
DCGAN_WEIGHTS = "dcgan64_faces.safetensors"

__all__ = ["GENERATORS", "Generator", "DCGANGenerator", "MobileStyleGANGenerator", "StyleGAN1Generator", "embedded_weights",
           "load_generator", "weights_sha256"]


def embedded_weights(name: str = "dcgan") -> Path:
    """Path of the weights shipped inside the package (export/weights/, package data). Only dcgan
    has embedded weights."""
    if name != "dcgan":
        raise PulseError(f"only dcgan has embedded weights; pass weights=PATH for {name}")
    resource = importlib.resources.files("pulse_trt.export") / "weights" / DCGAN_WEIGHTS
    path = Path(str(resource))
    if not path.is_file():
        raise PulseError(f"embedded dcgan weights missing from the installation ({path}); reinstall pulse-trt "
                         "or run scripts/vendor_dcgan_weights.py")
    return path


def load_generator(name: str, weights: str | Path | None = None, *, mapping: str | Path | None = None,
                   resolution: int = 1024, fmaps: dict | None = None, fit_cache_dir: Path | None = None,
                   fit_samples: int = 1_000_000, fit_seed: int = 0, gaussian_fit: str | Path | None = None,
                   device="cpu") -> Generator:
    """Build a registered generator with its weights, in eval mode with requires_grad False.

    Args:
        name:          one of GENERATORS.
        weights:       dcgan: default the embedded file; else a folded state (safetensors), the
                       gan-face-generate checkpoint or a tutorial DCGAN state (BatchNorm folded
                       on load). stylegan1: required; PULSE's synthesis.pt or the prefixed
                       `g_synthesis.`/`g_mapping.` layout (checkpoints.split_stylegan1_state).
                       mobilestylegan: required; the safetensors file pulse_trt.weights converts
                       from the random-face wheel's IR (resolve_weights fetches it).
        mapping:       stylegan1 only: PULSE's mapping.pt (not needed when `weights` holds
                       `g_mapping.*`).
        resolution:    stylegan1 only: output side, power of 2 >= 8 (default 1024).
        fmaps:         stylegan1 only: channels per side {R: C}; default FFHQ's.
        fit_cache_dir: stylegan1 / mobilestylegan: where the Gaussian fit is cached (default:
                       beside the mapping weights).
        fit_samples:   stylegan1 / mobilestylegan: samples of the Gaussian fit (PULSE: 1,000,000).
        fit_seed:      stylegan1 / mobilestylegan: seed of the Gaussian fit (PULSE: 0).
        gaussian_fit:  stylegan1 / mobilestylegan: read the fit from this file instead of
                       computing it (PULSE's shipped gaussian_fit.pt: {"mean": [D], "std": [D]}).
        device:        torch device of the returned generator.
    Raises:
        PulseError (one line): unknown name, missing or unreadable file, a key missing,
        unexpected or of the wrong shape.
    """
    if name not in GENERATORS:
        raise PulseError(f"unknown generator {name!r}; choose one of {', '.join(GENERATORS)}")
    if name == "dcgan":
        if mapping is not None:
            raise PulseError("dcgan has no mapping network; drop the mapping weights")
        if gaussian_fit is not None:
            raise PulseError("dcgan has no mapping network, so no Gaussian fit; drop the Gaussian fit file")
        path = embedded_weights("dcgan") if weights is None else Path(weights)
        source = f"dcgan weights {path}"
        state = dcgan_state_from_checkpoint(load_checkpoint(path, "dcgan weights"), source)
        generator = DCGANGenerator()
        copy_strict(generator.state_dict(), state, source)
        return generator.to(device)
    if name == "mobilestylegan":
        if mapping is not None:
            raise PulseError("mobilestylegan's mapping network is inside its weights file; drop the mapping weights")
        if resolution not in (1024, None):
            raise PulseError(f"mobilestylegan makes 1024x1024 faces only, not {resolution}")
        if weights is None or Path(weights).suffix != ".safetensors":
            raise PulseError("mobilestylegan needs its converted weights file (.safetensors); "
                             "pulse_trt.weights.resolve_weights fetches and converts them")
        return load_mobilestylegan(weights, fit_cache_dir=fit_cache_dir, fit_samples=fit_samples,
                                   fit_seed=fit_seed, gaussian_fit=gaussian_fit, device=device)
    if weights is None:
        raise PulseError("stylegan1 weights are not embedded: pass weights=PATH (PULSE's synthesis.pt) "
                         "and mapping=PATH (mapping.pt)")
    return load_stylegan1(weights, mapping, resolution=resolution, fmaps=fmaps, fit_cache_dir=fit_cache_dir,
                          fit_samples=fit_samples, fit_seed=fit_seed, gaussian_fit=gaussian_fit, device=device)


def weights_sha256(generator: torch.nn.Module) -> str:
    """sha256 of every tensor of the generator's state dict (weights, buffers, the Gaussian fit):
    sorted names, dtypes, shapes and bytes (checkpoints.state_sha256). Same weights -> same hash,
    whatever the device or load path."""
    return state_sha256(generator.state_dict())

