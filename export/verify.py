"""Export-time verification: the ONNX graphs are checked, run, and compared with the torch
functions they were traced from.

1. onnx.checker.check_model(path, full_check=True) (path-based, so graphs over 2 GB work).
2. ONNX Runtime (CPU) runs each graph on fresh random inputs at batch 1 and batch 3 (the same
   dynamic graph), and the torch function (export.step.make_step_fn / make_render_fn, itself
   tested against export/reference.py) runs on the same inputs.
3. Per output, two relative errors, the worst over batches of each: "worst" (gating) =
   ||onnx - torch||_2 / ||torch||_2, the tensor-wise error standard for comparing gradients; and
   "worst_max" (reported) = max|onnx - torch| / max|torch|. PulseError is raised when a gating
   error exceeds TOLERANCE[precision]. Why tensor-wise: through a deep generator's backward pass
   (InstanceNorm, 18 layers) float32 kernels that sum in different orders differ by a few 1e-4 in
   their worst single entry (seen: 1.2e-4 on a 4x4 noise map's Adam moment of a random-weight
   stylegan1, 2.5e-4 at 1024 px) while the tensor as a whole agrees far closer.
4. fp32 only, for an output still over tolerance: float64 arbitrates. The torch function runs
   again in float64 (a float64 copy of the generator) on the same inputs; the output passes when
   ONNX Runtime's error against float64 is within FP32_SLACK x torch float32's own error against
   float64 (+ the tolerance): the graph is then as accurate as the reference itself. Seen on a
   random-weight StyleGAN v1 at 1024 px: the Adam moment of the 4x4 noise map is off by 7.3e-5
   tensor-wise in torch float32 and 9.1e-5 in ONNX Runtime (both against float64).

Tolerances: fp32 1e-4. fp16 5e-2 and bf16 1e-1: both sides then run the synthesis in low
precision with different accumulation orders (ORT's kernels vs torch's), the gradient goes
through it, and a [0, 1] image rounds at 2^-11 (fp16) / 2^-8 (bf16); the optimiser state and
the loss stay fp32. When ONNX Runtime's CPU provider has no kernel for a low-precision op
(bf16 Conv, for instance) the comparison is skipped with a note saying so: that precision is
then verified on a GPU (TensorRT or ORT CUDA) by the engine's tests.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..engine.errors import PulseError
from .step import StepLayout, TensorInfo, sphere_norm

TOLERANCE = {"fp32": 1e-4, "fp16": 5e-2, "bf16": 1e-1}
FP32_SLACK = 4.0  # ONNX Runtime may be this many times less accurate than torch float32 (vs float64)
BATCHES = (1, 3)


def check_onnx(path) -> None:
    """onnx.checker full check (shape inference included) of the model at `path`."""
    import onnx  # noqa: PLC0415

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as e:
        raise PulseError(f"{Path(path).name} fails onnx.checker: {str(e).splitlines()[0]}") from e


def random_inputs(infos: list[TensorInfo], batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Fresh float32 inputs by role: target in [0, 1]; lr per row in [0.01, 0.4]; t per row an
    integer, row 0 in 2..100 (a search under way), row 1 = 1 (a row starting over), row 2 = 0 (a
    row that does not move), further rows in 0..100; latent / noise / start / best standard
    normal; first moments N(0, 0.1^2); second moments (v., u.) positive; best.loss in [0, 200]
    and min.L2 in [0, 0.1], except at batch 1, whose row has no best yet (NaN, +inf); radius.X =
    sphere_norm of X times U(0.8, 1.2)."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for info in infos:
        shape, n = info.concrete(batch), info.name
        if n == "target":
            x = rng.uniform(0, 1, shape)
        elif n == "lr":
            x = rng.uniform(0.01, 0.4, shape)
        elif n == "t":
            x = rng.integers(0, 101, shape).astype(np.float64)
            x[:3] = [float(rng.integers(2, 101)), 1.0, 0.0][:min(batch, 3)]
        elif n.startswith("m."):
            x = rng.standard_normal(shape) * 0.1
        elif n.startswith(("v.", "u.")):
            x = rng.uniform(0.001, 0.05, shape)
        elif n == "best.loss":
            x = rng.uniform(0.0, 200.0, shape) if batch > 1 else np.full(shape, np.nan)
        elif n == "min.L2":
            x = rng.uniform(0.0, 0.1, shape) if batch > 1 else np.full(shape, np.inf)
        elif n.startswith("radius."):
            continue
        else:
            x = rng.standard_normal(shape)
        out[n] = np.asarray(x, np.float32)
    for info in infos:
        if info.name.startswith("radius."):
            base = torch.from_numpy(out[info.name[len("radius."):]])
            scale = rng.uniform(0.8, 1.2, info.concrete(batch)).astype(np.float32)
            out[info.name] = sphere_norm(base).numpy() * scale
    return {info.name: out[info.name] for info in infos}


def _comparable(got, ref) -> tuple[np.ndarray, np.ndarray] | None:
    """Both as float64, or None when they cannot match: other shapes, or NaN in got only."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    if got.shape != ref.shape or (np.isnan(got).any() and not np.isnan(ref).any()):
        return None
    return got, ref


def relative_error(got: np.ndarray, ref: np.ndarray) -> float:
    """max|got - ref| / max|ref| (inf when shapes differ or got has NaN where ref has none)."""
    pair = _comparable(got, ref)
    if pair is None:
        return float("inf")
    got, ref = pair
    if not ref.size:
        return 0.0
    scale = max(float(np.nanmax(np.abs(ref))), 1e-12)
    return float(np.nanmax(np.abs(got - ref)) / scale)


def norm_relative_error(got: np.ndarray, ref: np.ndarray) -> float:
    """||got - ref||_2 / ||ref||_2 (inf when shapes differ or got has NaN where ref has none)."""
    pair = _comparable(got, ref)
    if pair is None:
        return float("inf")
    got, ref = pair
    if not ref.size:
        return 0.0
    diff = np.nan_to_num(got - ref)
    return float(np.linalg.norm(diff) / max(float(np.linalg.norm(np.nan_to_num(ref))), 1e-12))


def compare_graph(onnx_path, fn: Callable, inputs: list[TensorInfo], outputs: list[TensorInfo],
                  batches=BATCHES, seed: int = 0) -> dict:
    """Run the graph in ONNX Runtime (CPU) and fn in torch on the same random inputs per batch
    size; returns {"worst": {output: rel err}, "batches": [...]} or {"skipped": reason} when ORT
    cannot run the graph on CPU (a missing low-precision kernel)."""
    import onnxruntime as ort  # noqa: PLC0415

    so = ort.SessionOptions()
    so.enable_cpu_mem_arena = False  # give each run's memory back: at 1024 px the arena would hold
    # ORT's batch-3 peak while torch runs its own (MobileStyleGAN export: 9.2 -> under 8 GB peak RSS)
    try:
        sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own types for NOT_IMPLEMENTED kernels
        return {"skipped": f"ONNX Runtime {ort.__version__} CPU cannot load the graph: {str(e).splitlines()[0][:300]}"}
    worst = {o.name: 0.0 for o in outputs}
    worst_max = dict(worst)
    runs = []
    for k, batch in enumerate(batches):
        feeds = random_inputs(inputs, batch, seed=seed + k)
        got = sess.run([o.name for o in outputs], feeds)
        ref = [r.detach().float().numpy() for r in fn(*[torch.from_numpy(feeds[i.name]) for i in inputs])]
        runs.append((feeds, got, ref))
        for o, g, r in zip(outputs, got, ref):
            worst[o.name] = max(worst[o.name], norm_relative_error(g, r))
            worst_max[o.name] = max(worst_max[o.name], relative_error(g, r))
    return {"worst": worst, "worst_max": worst_max, "batches": list(batches), "_runs": runs}


def float64_arbiter(fn: Callable, inputs: list[TensorInfo], outputs: list[TensorInfo], runs, names) -> dict:
    """Step 4: {output: (ORT vs float64, torch float32 vs float64)} on the first (smallest-batch)
    run of `runs` (compare_graph's), for the outputs in `names`; fn must carry .generator
    (make_step_fn / make_render_fn do)."""
    import copy  # noqa: PLC0415

    from .step import make_render_fn, make_step_fn  # noqa: PLC0415

    make = make_step_fn if "loss.TOTAL" in [o.name for o in outputs] else make_render_fn
    fn64 = make(copy.deepcopy(fn.generator).double(), fn.layout.options, fn.layout.lr_size, "fp32")
    idx = {o.name: k for k, o in enumerate(outputs)}
    out = {n: (0.0, 0.0) for n in names}
    for feeds, got, ref32 in runs[:1]:  # the smallest batch: rows are independent, and float64
        # at 1024 px costs memory (23 GB peak at batch 3 vs about 14 GB without the arbiter)
        ref64 = [r.detach().numpy() for r in fn64(*[torch.from_numpy(feeds[i.name]).double() for i in inputs])]
        for n in names:
            k = idx[n]
            e_ort, e_t32 = norm_relative_error(got[k], ref64[k]), norm_relative_error(ref32[k], ref64[k])
            out[n] = (max(out[n][0], e_ort), max(out[n][1], e_t32))
    return out


def verify_artifacts(out_dir, step_fn: Callable, render_fn: Callable, layout: StepLayout, precision: str,
                     tolerance: float | None = None) -> dict:
    """Steps 1-3 of the module docstring on out_dir/step.onnx and out_dir/render.onnx; returns the
    report recorded in manifest["verification"] and raises PulseError over tolerance (default
    TOLERANCE[precision])."""
    out_dir = Path(out_dir)
    tol = TOLERANCE[precision] if tolerance is None else float(tolerance)
    report = {"tolerance": tol, "metric": "||onnx - torch||_2 / ||torch||_2 per output (gating; worst_max: max|onnx - torch| / max|torch|), worst over batches",
              "runtime": "onnxruntime CPU"}
    for name, fn, ins, outs in (("step", step_fn, layout.step_inputs(), layout.step_outputs()),
                                ("render", render_fn, layout.render_inputs(), layout.render_outputs())):
        path = out_dir / f"{name}.onnx"
        check_onnx(path)
        res = compare_graph(path, fn, ins, outs)
        runs = res.pop("_runs", [])
        report[name] = res
        over = [out for out, err in res.get("worst", {}).items() if not err <= tol]
        if over and precision == "fp32" and hasattr(fn, "generator"):
            judged = float64_arbiter(fn, ins, outs, runs, over)
            res["float64"] = {n: {"onnx_vs_f64": a, "torch_f32_vs_f64": b} for n, (a, b) in judged.items()}
            over = [n for n, (a, b) in judged.items() if not a <= FP32_SLACK * b + tol]
        for out in over:
            err = res["worst"][out]
            raise PulseError(f"{name}.onnx output {out!r} differs from the torch step by {err:.3g} "
                             f"(relative; tolerance {tol:g} for {precision}, and beyond float32's own error "
                             f"against float64; see --verify-tolerance)")
    report["checker"] = "onnx.checker full_check passed"
    return report
