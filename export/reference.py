"""PULSE in plain PyTorch: the readable specification every faster path is tested against.

One loop, as ../shared/PULSE.md states it, with the reference implementation's known defects
fixed (per-image success, seed 0, any loss string, any device). Uses torch's own optimisers
(what PULSE used), so an exported functional re-implementation can be checked against it.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch

from ..engine.bicubic import factor_for
from ..engine.errors import PulseError
from ..engine.options import PulseOptions
from ..engine.result import ImageResult, TrajectoryTracker, pick_restart
from ..engine.state import job_rows, start_state
from .generators.base import Generator
from .losses import downscale, loss_terms


def make_optimizer(opt_name: str, params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    """PULSE's optimisers with torch defaults: adam (betas 0.9/0.999, eps 1e-8), sgd, sgdm
    (SGD, momentum 0.9), adamax."""
    if opt_name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if opt_name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if opt_name == "sgdm":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    if opt_name == "adamax":
        return torch.optim.Adamax(params, lr=lr)
    raise PulseError(f"opt_name must be one of adam, sgd, sgdm, adamax; got {opt_name!r}")


def sphere_norm(x: torch.Tensor) -> torch.Tensor:
    """Norm PULSE keeps fixed: sqrt(sum x^2 + 1e-9) over dims >= 2 of a latent [B, L, D] -> [B, L, 1];
    over every dim but the batch of a noise map [B, C, H, W] -> [B, 1, 1, 1] (one sphere per map
    per image; PULSE's maps have C = 1, where both readings agree)."""
    dims = (2,) if x.ndim == 3 else tuple(range(1, x.ndim))
    return (x.pow(2).sum(dim=dims, keepdim=True) + 1e-9).sqrt()


def pulse_search(generator: Generator, targets, options: PulseOptions, *, device=None,
                 progress: Callable[[int, int], None] | None = None, first_input: int = 0) -> list[ImageResult]:
    """Search the generator's latent space for faces that downscale to `targets` (PULSE).

    Algorithm (B = N * options.duplicates rows, input-major, restarts adjacent):
      1. Start every row from engine.state.start_state (seeded numpy, shared by all backends):
         latent v [B, L, D] (optimised), noise maps by role: trainable (optimised), frozen
         (constant random), zero (constant zeros). Radii r = sphere_norm of each optimised tensor.
      2. For each step j = 0 .. steps-1:
         a. w = generator.map_latent(v)                         [B, L, D]
         b. x = generator.image01(w, noise)                     [B, 3, R, R], unclamped
         c. terms = loss_terms(D(x), y, w)                      [B] each: L2, L1, GEOCROSS, TOTAL
            recorded per row (these are the terms of the state *before* this step's update);
            a row whose TOTAL is its lowest so far keeps a copy of its state (its best iterate).
         d. gradient of sum_b TOTAL_b (images are independent problems); optimiser step with
            lr = options.lr_at(j) (PULSE's LambdaLR values).
         e. Spherical projection: x <- x / sphere_norm(x) * r for v and each trainable map.
         f. progress(j + 1, steps).
      3. Per row: success = (smallest L2 reached <= eps), judged per image.
      4. Per input: keep the restart given by engine.result.pick_restart (a success first, then
         the lowest best TOTAL); render its best iterate: hr = clamp(image01, 0, 1),
         lr = D(hr).
    Unlike PULSE, which returns its last iterate (and judges success on the batch sum), this
    returns the best iterate (lowest TOTAL over the evaluated steps) of each image.

    Args:
        generator: export.generators.base.Generator (its weights are not touched).
        targets:   [N, 3, lr, lr] float in [0, 1], numpy or torch; lr must divide
                   generator.spec.resolution.
        options:   engine.options.PulseOptions.
        device:    torch device to run on; default: the generator's device (CPU if it has no
                   tensors). The generator is used where it is; pass one that lives on `device`.
        progress:  optional callback progress(step, steps) after every step.
        first_input: global index of targets[0]: row (i, k) starts from the seed of input
                   first_input + i, restart k, so a job cut into chunks starts every input as
                   one call over all of them would (as the engine's scheduler keys them).
    Returns:
        One engine.result.ImageResult per input, in order; record["backend"] = "reference",
        record["seconds"] = wall time of this whole call (all inputs of the batch).
    """
    t0 = time.perf_counter()
    spec = generator.spec
    device = torch.device(device) if device is not None else _device_of(generator)
    target = _check_targets(targets, spec.channels).to(device)  # [N, 3, lr, lr]
    n, lr_size = target.shape[0], target.shape[-1]
    factor = factor_for(spec.resolution, lr_size)
    weights, eps = options.loss_weights, options.eps

    # 1. Start state (numpy -> torch) and radii.
    if not isinstance(first_input, int) or isinstance(first_input, bool) or first_input < 0:
        raise PulseError(f"first_input must be an integer >= 0, got {first_input!r}")
    rows = [(first_input + i, k) for i, k in job_rows(n, options.duplicates)]
    start = start_state(spec, options, rows)
    y = target.repeat_interleave(options.duplicates, dim=0)  # [B, 3, lr, lr], row i*dup+k -> input i
    latent = torch.tensor(start.latent, device=device, requires_grad=True)  # [B, L, D]
    noise = [torch.tensor(m, device=device, requires_grad=(role == "trainable"))  # [B, C, H, W]
             for m, role in zip(start.noise, start.roles)]
    params = [latent] + [m for m, role in zip(noise, start.roles) if role == "trainable"]
    radii = [sphere_norm(p).detach() for p in params]
    opt = make_optimizer(options.opt_name, params, options.lr_at(0))
    tracker = TrajectoryTracker(len(rows), eps)
    best = [p.detach().clone() for p in params]

    # 2. The search.
    for j in range(options.steps):
        w = generator.map_latent(latent)  # [B, L, D]
        x = generator.image01(w, noise)  # [B, 3, R, R]
        terms = loss_terms(downscale(x, factor), y, w, weights, eps)  # [B] each
        improved = tracker.update(j, {k: t.detach().cpu().numpy() for k, t in terms.items()})
        if improved.any():
            keep = torch.as_tensor(improved, device=device)
            for b, p in zip(best, params):
                b[keep] = p.detach()[keep]
        grads = torch.autograd.grad(terms["TOTAL"].sum(), params, allow_unused=True)
        for p, g in zip(params, grads):
            p.grad = torch.zeros_like(p) if g is None else g  # None: the loss ignores p (e.g. 1*GEOCROSS)
        for group in opt.param_groups:
            group["lr"] = options.lr_at(j)
        opt.step()
        with torch.no_grad():
            for p, r in zip(params, radii):
                p.mul_(r / sphere_norm(p))
        if progress is not None:
            progress(j + 1, options.steps)

    # 3-4. Verdicts, restart choice, render the chosen iterates.
    best_noise, k = [], 1
    for m, role in zip(noise, start.roles):
        if role == "trainable":
            best_noise.append(best[k])
            k += 1
        else:
            best_noise.append(m.detach())
    with torch.no_grad():
        hr = generator.image01(generator.map_latent(best[0]), best_noise).clamp(0, 1)  # [B, 3, R, R]
        lr = downscale(hr, factor)  # [B, 3, lr, lr]
    hr_np = hr.float().cpu().numpy()
    lr_np = lr.float().cpu().numpy()
    seconds = time.perf_counter() - t0
    results = []
    for i in range(n):
        row_ids = [i * options.duplicates + r for r in range(options.duplicates)]
        records = [tracker.record(r) for r in row_ids]
        chosen = pick_restart(records)
        row = row_ids[chosen]
        record = {"input": i, "restart": chosen, "starts": options.duplicates, **records[chosen],
                  "search_steps": options.steps * options.duplicates, "seconds": seconds, "backend": "reference"}
        results.append(ImageResult(hr=hr_np[row], lr=lr_np[row], record=record, history=tracker.history(row)))
    return results


def _device_of(module: torch.nn.Module) -> torch.device:
    for t in list(module.parameters()) + list(module.buffers()):
        return t.device
    return torch.device("cpu")


def _check_targets(targets, channels: int) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(targets) if not isinstance(targets, torch.Tensor) else targets)
    if t.ndim != 4 or t.shape[1] != channels or t.shape[2] != t.shape[3] or t.shape[0] < 1:
        raise PulseError(f"targets must be [N, {channels}, lr, lr] (square), got shape {tuple(t.shape)}")
    if not (t.is_floating_point()):
        raise PulseError(f"targets must be floats in [0, 1], got dtype {t.dtype}")
    t = t.detach().float()
    if not bool(torch.isfinite(t).all()) or float(t.min()) < 0.0 or float(t.max()) > 1.0:
        raise PulseError("targets must be finite values in [0, 1]")
    return t
