"""Helpers of the CLI tests: small PNGs and a fake search backend."""
from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path

import numpy as np
from PIL import Image

from pulse_trt.engine.bicubic import downscale
from pulse_trt.engine.result import ImageResult
from pulse_trt.engine.spec import GeneratorSpec

from shared import FAST_STEPS  # noqa: F401  (the steps of the session's shared artefacts)


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
    exactly (L2 = 0, success) and a noisy one is not. Records every submitted input as
    (lr size, index, target) in `submitted`; the future of submission number `interrupt_at`
    raises KeyboardInterrupt (as Ctrl-C while waiting for it)."""

    def __init__(self, resolution: int = 64, interrupt_at: int | None = None):
        self.resolution = resolution
        self.interrupt_at = interrupt_at
        self.submitted: list[tuple[int, int, np.ndarray]] = []
        self.opened: list[int] = []

    def __call__(self, args, lr_size, options, log):
        self.opened.append(lr_size)
        return FakeBackend(self, options, args.slots)


class FakeBackend:
    backend = "fake"
    key = None
    artifacts_dir = None
    precision = "fp32"
    device = "cpu"

    def __init__(self, owner: FakeBackends, options, slots: int):
        self.owner, self.options, self.slots = owner, options, slots
        self.spec = GeneratorSpec(name="fake", resolution=owner.resolution, latent_dim=4, num_ws=1)
        self.resolution = owner.resolution

    def describe(self) -> dict:
        return {"name": "fake", "resolution": self.resolution}

    def prepare(self):
        return self

    def close(self) -> None:
        pass

    def submit_target(self, target, *, index=0, progress=None) -> Future:
        options, future = self.options, Future()
        future.set_running_or_notify_cancel()
        if self.owner.interrupt_at is not None and len(self.owner.submitted) == self.owner.interrupt_at:
            self.owner.submitted.append((target.shape[-1], index, np.array(target)))
            future.set_exception(KeyboardInterrupt())
            return future
        self.owner.submitted.append((target.shape[-1], index, np.array(target)))
        for j in range(options.steps):
            if progress is not None:
                progress(j + 1, options.steps)
        f = self.resolution // target.shape[-1]
        hr = np.repeat(np.repeat(target, f, axis=1), f, axis=2).astype(np.float32)  # [3, R, R]
        lr = downscale(hr[None], f)[0]
        l2 = float(np.mean((lr.astype(np.float64) - target) ** 2))
        terms = {"L2": max(l2, options.eps), "L1": 0.0, "GEOCROSS": 0.0, "TOTAL": 100 * max(l2, options.eps)}
        record = {"input": index, "restart": 0, "starts": 1, "success": l2 <= options.eps, "l2": terms["L2"],
                  "min_l2": terms["L2"], "eps": options.eps, "best_step": 0, "steps": options.steps, "terms": terms,
                  "search_steps": options.steps, "seconds": 0.01, "backend": "fake"}
        history = {"L2": [terms["L2"]] * options.steps, "GEOCROSS": [0.0] * options.steps}
        future.set_result(ImageResult(hr=hr, lr=lr, record=record, history=history))
        return future
