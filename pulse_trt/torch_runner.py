"""The exported PULSE iteration run by PyTorch itself, behind the engine's Runner interface.

This is "the strongest thing a PyTorch user would do": the functional step of export/step.py
(the very computation step.onnx holds: the torch twin of graph contract 2), optionally under
torch.compile (on CUDA with mode="reduce-overhead", i.e. CUDA graphs), driven by the engine's
own scheduler (engine/scheduler.py), so the benchmark compares backends on the same algorithm,
the same starts and the same bookkeeping.
"""
from __future__ import annotations

import numpy as np
import torch

from .engine.manifest import Manifest
from .engine.runner import TERMS, Runner
from .export.generators.base import Generator
from .export.step import make_render_fn, make_step_fn


class TorchRunner(Runner):
    """Runner over the torch step function (engine/runner.py's interface).

    Args:
        manifest:  the artefacts' manifest (options, lr size, precision, I/O names).
        generator: the generator those artefacts were exported from.
        device:    "cpu" or "cuda".
        compile:   wrap the step in torch.compile (CUDA: mode="reduce-overhead" = CUDA graphs).
    """

    can_move_rows = True

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

    def _deactivate(self) -> None:
        self._step_fn = self._render_fn = None
        self._bufs = {}

    def _open(self, plan) -> None:
        self._bufs = {b.name: torch.zeros(b.shape, device=self.device) for b in plan.rows}
        self._bufs.update({b.name: torch.zeros(b.shape, device=self.device) for b, _ in plan.state})

    def _write_rows(self, rows: list[int], feeds: dict) -> None:
        idx = torch.tensor(rows, device=self.device)
        for name, a in feeds.items():
            self._bufs[name][idx] = torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

    def _move_row(self, src: int, dst: int) -> None:
        for v in self._bufs.values():
            v[dst] = v[src]

    @torch.no_grad()
    def _run(self, n: int, lr: np.ndarray, t: np.ndarray) -> dict:
        st = {k: v[:n] for k, v in self._bufs.items()}
        lr_d, t_d = torch.from_numpy(lr).to(self.device), torch.from_numpy(t).to(self.device)
        losses = []
        for j in range(lr.shape[0]):
            st["lr"], st["t"] = lr_d[j], t_d[j]
            if self.compile and self.device.type == "cuda":
                torch.compiler.cudagraph_mark_step_begin()
            outs = dict(zip(self._out_names, self._step_fn(*(st[name] for name in self._in_names))))
            for s in self.manifest.state:
                st[s.name] = outs[s.next].clone() if self.compile else outs[s.next]  # CUDA-graph outputs are reused
            losses.append(torch.stack([outs[f"loss.{k}"] for k in TERMS]))  # [4, n]
        for s in self.manifest.state:
            self._bufs[s.name][:n] = st[s.name]
        ring = torch.stack(losses).float().cpu().numpy()  # [k, 4, n]: the run's one host copy
        return {term: ring[:, i] for i, term in enumerate(TERMS)}

    def read_rows(self, names, rows=None) -> dict:
        rows = list(range(self.slots)) if rows is None else self._check_rows(rows)
        return {name: self._bufs[name][rows].cpu().numpy() for name in names}

    @torch.no_grad()
    def _render(self, rows: list[int], iterate: str) -> dict:
        ins = [self._bufs[self.render_source(name, iterate)][rows] for name in self.manifest.render_inputs]
        image, lr_image = self._render_fn(*ins)
        return {"image": image.float().cpu().numpy(), "lr_image": lr_image.float().cpu().numpy()}
