"""The exported PULSE iteration run by PyTorch itself, behind the engine's Runner interface.

This is "the strongest thing a PyTorch user would do": the functional step of export/step.py
(the very computation step.onnx holds), optionally under torch.compile (on CUDA with
mode="reduce-overhead", i.e. CUDA graphs), driven by the engine's own loop (engine.loop), so the
benchmark compares backends on the same algorithm, the same starts and the same bookkeeping.
"""
from __future__ import annotations

import numpy as np
import torch

from .engine.manifest import Manifest
from .engine.runner import TERMS, Runner
from .export.generators.base import Generator
from .export.step import make_render_fn, make_step_fn


class TorchRunner(Runner):
    """Runner over the torch step function.

    Args:
        manifest:  the artefacts' manifest (options, lr size, precision, I/O names).
        generator: the generator those artefacts were exported from.
        device:    "cpu" or "cuda".
        compile:   wrap the step in torch.compile (CUDA: mode="reduce-overhead" = CUDA graphs).
    """

    def __init__(self, manifest: Manifest, generator: Generator, device: str = "cpu", compile: bool = False):
        super().__init__(manifest)
        self.generator = generator
        self.device = torch.device(device)
        self.compile = compile
        self.name = "torch-compile" if compile else "torch-step"

    def _activate(self) -> None:
        m = self.manifest
        self.generator.to(self.device)
        fn = make_step_fn(self.generator, m.options, m.lr_size, m.precision)
        self._in_names, self._out_names = fn.input_names, fn.output_names
        if self.compile:
            mode = "reduce-overhead" if self.device.type == "cuda" else "default"
            fn = torch.compile(fn, mode=mode, dynamic=False)
        self._step_fn = fn
        self._render_fn = make_render_fn(self.generator, m.options, m.lr_size, m.precision)
        self._state: dict[str, torch.Tensor] = {}

    def _deactivate(self) -> None:
        self._step_fn = self._render_fn = None
        self._state = {}

    def _t(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

    def load(self, feeds: dict) -> None:
        self._require_active()
        self.batch = self._check_load(feeds)
        self._state = {k: self._t(v) for k, v in feeds.items()}
        self._last = {p: self._state[p] for p in self.manifest.params}
        self._best = {p: self._state[p].clone() for p in self.manifest.params}
        self.step_seconds = 0.0

    @torch.no_grad()
    def _step(self, lr: float, t: int) -> dict:
        st = self._state
        st["lr"] = torch.tensor(lr, dtype=torch.float32, device=self.device)
        st["t"] = torch.tensor(float(t), dtype=torch.float32, device=self.device)
        if self.compile and self.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()
        outs = dict(zip(self._out_names, self._step_fn(*(st[n] for n in self._in_names))))
        self._last = {p: st[p] for p in self.manifest.params}
        for s in self.manifest.state:
            st[s.name] = outs[s.next].clone() if self.compile else outs[s.next]  # CUDA-graph outputs are reused
        return {k: outs[f"loss.{k}"].float().cpu().numpy() for k in TERMS}

    def keep(self, rows: np.ndarray) -> None:
        idx = torch.from_numpy(np.flatnonzero(rows)).to(self.device)
        if idx.numel():
            for p in self.manifest.params:
                self._best[p][idx] = self._last[p][idx]

    def best(self) -> dict:
        return {p: v.cpu().numpy() for p, v in self._best.items()}

    @torch.no_grad()
    def render(self, feeds: dict) -> dict:
        self._require_active()
        self._check_render(feeds)
        ins = [self._t(feeds[n]) for n in self.manifest.render_inputs]
        image, lr_image = self._render_fn(*ins)
        return {"image": image.float().cpu().numpy(), "lr_image": lr_image.float().cpu().numpy()}
