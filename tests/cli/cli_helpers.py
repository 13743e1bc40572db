"""Helpers of the CLI tests: small PNGs and a fake search backend."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pulse_trt.engine.bicubic import downscale
from pulse_trt.engine.result import ImageResult
from pulse_trt.engine.spec import GeneratorSpec

# Steps of the fast real runs: the session's shared artefacts are exported with these options.
FAST_STEPS = 5


def write_png(path: Path, array: np.ndarray) -> Path:
    """Save [H, W, 3] uint8 (or [H, W]) as PNG; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array)).save(path)
    return path


def constant_png(path: Path, side: int = 8, value=(90, 60, 40)) -> Path:
    return write_png(path, np.broadcast_to(np.array(value, np.uint8), (side, side, 3)).copy())


def noise_png(path: Path, side: int = 8, seed: int = 0) -> Path:
    return write_png(path, np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8))


class FakeBackends:
    """Stands in for upsample.open_backend (a pulse_trt.api.Pulse per input size) without a
    generator: hr = nearest-neighbour upscale of the target, so a constant target is matched
    exactly (L2 = 0, success) and a noisy one is not. Records every search call's targets in
    `batches` (one call per input size); raises KeyboardInterrupt on call number `interrupt_at`."""

    def __init__(self, resolution: int = 64, interrupt_at: int | None = None):
        self.resolution = resolution
        self.interrupt_at = interrupt_at
        self.batches: list[np.ndarray] = []
        self.opened: list[int] = []

    def __call__(self, args, lr_size, options, log):
        self.opened.append(lr_size)
        return FakeBackend(self, options, args.batch_size)


class FakeBackend:
    backend = "fake"
    key = None
    artifacts_dir = None
    precision = "fp32"
    device = "cpu"

    def __init__(self, owner: FakeBackends, options, batch_size: int):
        self.owner, self.options, self.batch_size = owner, options, batch_size
        self.spec = GeneratorSpec(name="fake", resolution=owner.resolution, latent_dim=4, num_ws=1)
        self.resolution = owner.resolution

    def describe(self) -> dict:
        return {"name": "fake", "resolution": self.resolution}

    def prepare(self):
        return self

    def close(self) -> None:
        pass

    def search(self, targets, progress=None):
        options = self.options
        if self.owner.interrupt_at is not None and len(self.owner.batches) == self.owner.interrupt_at:
            raise KeyboardInterrupt
        self.owner.batches.append(np.array(targets))
        chunks = -(-len(targets) // self.batch_size)
        for j in range(options.steps * chunks):
            if progress is not None:
                progress(j + 1, options.steps * chunks)
        f = self.resolution // targets.shape[-1]
        hr = np.repeat(np.repeat(targets, f, axis=2), f, axis=3).astype(np.float32)  # [N, 3, R, R]
        lr = downscale(hr, f)
        out = []
        for i in range(len(targets)):
            l2 = float(np.mean((lr[i].astype(np.float64) - targets[i]) ** 2))
            terms = {"L2": max(l2, options.eps), "L1": 0.0, "GEOCROSS": 0.0, "TOTAL": 100 * max(l2, options.eps)}
            record = {"input": i, "restart": 0, "success": l2 <= options.eps, "l2": terms["L2"], "min_l2": terms["L2"],
                      "eps": options.eps, "best_step": 0, "steps": options.steps, "terms": terms, "seconds": 0.01,
                      "backend": "fake"}
            history = {"L2": [terms["L2"]] * options.steps, "GEOCROSS": [0.0] * options.steps}
            out.append(ImageResult(hr=hr[i], lr=lr[i], record=record, history=history))
        return out
