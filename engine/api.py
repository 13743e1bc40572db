"""PulseEngine: the Python API over exported artefacts (no torch).

    from pulse_trt.engine.api import PulseEngine
    with PulseEngine("artifacts/dcgan-8") as engine:
        results = engine.upsample([face_uint8_8x8x3, pil_image])   # list[ImageResult]
        hr = to_uint8(results[0].hr)                                # [R, R, 3] uint8

Thread-safe: one lock serialises calls on the engine's runner (its sessions and bound buffers
are per-engine state); there is no global state, so two engines on two artefact directories
run side by side. Exporting artefacts (torch) is pulse_trt.api's job, not this module's.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import PulseError
from .loop import run_search
from .manifest import Manifest, load_manifest
from .options import PulseOptions
from .result import ImageResult
from .runner import Runner

BACKENDS = ("ort", "ort-cuda", "tensorrt")


def make_runner(manifest: Manifest, backend: str = "ort", **kwargs) -> Runner:
    """Runner of `backend` for the artefacts: "ort" (CPU), "ort-cuda", "tensorrt" (needs
    DIR/step.engine and DIR/render.engine from export/trt_build.py, or engine paths in kwargs)."""
    if backend == "ort":
        from .runner_ort import OrtRunner  # noqa: PLC0415

        return OrtRunner(manifest, "cpu", **kwargs)
    if backend == "ort-cuda":
        from .runner_ort import OrtRunner  # noqa: PLC0415

        return OrtRunner(manifest, "cuda", **kwargs)
    if backend == "tensorrt":
        from .runner_trt import TrtRunner  # noqa: PLC0415

        return TrtRunner(manifest, **kwargs)
    raise PulseError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")


def image_to_chw01(image, lr_size: int, index: int = 0) -> np.ndarray:
    """One input -> [3, lr, lr] float32 in [0, 1] (k / 255).

    Accepts a PIL image (converted to RGB) or a uint8 array [H, W, 3]; H and W must equal
    lr_size. Raises PulseError otherwise."""
    what = f"image {index}"
    try:
        from PIL import Image  # noqa: PLC0415

        if isinstance(image, Image.Image):
            if image.mode not in ("RGB", "L"):
                raise PulseError(f"{what}: PIL mode {image.mode} is not RGB; convert it first (image.convert('RGB'))")
            image = np.asarray(image.convert("RGB"))
    except ImportError:  # pragma: no cover - Pillow is a dependency
        pass
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise PulseError(f"{what}: expected uint8 pixels, got {a.dtype}")
    if a.ndim != 3 or a.shape[2] != 3:
        raise PulseError(f"{what}: expected an [H, W, 3] RGB array, got shape {list(a.shape)}")
    if a.shape[:2] != (lr_size, lr_size):
        raise PulseError(f"{what} is {a.shape[1]}x{a.shape[0]}; these artefacts take {lr_size}x{lr_size} inputs")
    return a.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)


class PulseEngine:
    """PULSE over one artefact directory with one backend.

    Args:
        artifacts_dir: a directory written by the exporter (manifest.json, step.onnx,
                       render.onnx); validated here (PulseError when missing or incompatible).
        backend:       "ort" (CPU, default), "ort-cuda" or "tensorrt".
        batch_size:    rows (inputs x restarts) per search chunk; default 8.
        runner_options: passed to the runner (e.g. threads=2 for "ort").
    The runner is activated on first use (or on __enter__) and released by close() / __exit__.
    """

    def __init__(self, artifacts_dir, backend: str = "ort", batch_size: int = 8, **runner_options):
        if backend not in BACKENDS:
            raise PulseError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise PulseError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.artifacts_dir = Path(artifacts_dir)
        self.manifest = load_manifest(self.artifacts_dir)
        self.backend = backend
        self.batch_size = batch_size
        self._runner = make_runner(self.manifest, backend, **runner_options)
        self._lock = threading.Lock()

    @property
    def lr_size(self) -> int:
        return self.manifest.lr_size

    @property
    def resolution(self) -> int:
        return self.manifest.resolution

    @property
    def options(self) -> PulseOptions:
        """The manifest's options: the defaults of upsample / search."""
        return self.manifest.options

    def __enter__(self) -> "PulseEngine":
        with self._lock:
            if not self._runner.is_active:
                self._runner.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._runner.deactivate()

    def upsample(self, images: Sequence, *, options: PulseOptions | None = None,
                 progress: Callable[[int, int], None] | None = None) -> list[ImageResult]:
        """Upsample faces: uint8 [lr, lr, 3] arrays or PIL images (lr = self.lr_size).

        options: this call's PulseOptions (default the manifest's): the runtime ones (steps,
        seed, duplicates, learning_rate, lr_schedule) are free, the graph ones must equal the
        manifest's (PulseError otherwise). Every input is validated before any search starts. Returns one ImageResult per input:
        hr [3, R, R] float32 in [0, 1], lr [3, lr, lr], record (success, l2, best_step, ...,
        backend, seconds), history."""
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = [images]
        targets = np.stack([image_to_chw01(im, self.lr_size, i) for i, im in enumerate(images)]) \
            if len(images) else None
        if targets is None:
            raise PulseError("upsample needs at least one image")
        return self.search(targets, options=options, progress=progress)

    def search(self, targets: np.ndarray, *, options: PulseOptions | None = None,
               progress: Callable[[int, int], None] | None = None) -> list[ImageResult]:
        """Search for targets [N, 3, lr, lr] float in [0, 1] (engine.loop.run_search) with
        `options` (default the manifest's; see upsample)."""
        options = self.manifest.resolve_options(options)  # fails before the runner opens
        with self._lock:
            if not self._runner.is_active:
                self._runner.activate()
            return run_search(self._runner, targets, options=options, batch_size=self.batch_size, progress=progress)
