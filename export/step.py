"""One PULSE iteration as a pure function of tensors: what step.onnx computes (docs/artifacts.md).

The PyTorch reference (export/reference.py) runs PULSE with torch.optim and in-place updates;
this module writes the same iteration functionally (state in, next state out) so it can be traced
into one graph. The optimiser updates follow torch.optim's single-tensor formulas exactly
(torch/optim/adam.py, adamax.py, sgd.py with their defaults), so k calls of the step function
reproduce k steps of the reference.

Every row of the batch is its own search at its own step (graph contract 2, for the engine's
continuous batching, engine/scheduler.py): `lr` and `t` are per-row vectors; a row whose t is 1
starts from its `start.X` (zero moments, no best yet); a row whose t is 0 does not move; and the
best iterate (lowest TOTAL, the rule of engine.result.TrajectoryTracker) and the smallest L2 are
tracked inside the step, so the host never copies state to keep them. This module is the torch
twin the exported graph is verified against; run row by row on a per-row schedule it reproduces
export/reference.py (tests/export/test_step.py).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch

from ..engine.bicubic import factor_for
from ..engine.errors import PulseError
from ..engine.options import PulseOptions, noise_roles
from ..engine.spec import GeneratorSpec
from ..engine.state import latent_rows
from .generators.base import Generator
from .losses import downscale, loss_terms

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
TERMS = ("L2", "L1", "GEOCROSS", "TOTAL")
# Optimiser moments per optimised tensor X, named "<prefix>.X" (docs/artifacts.md).
MOMENTS = {"adam": ("m", "v"), "adamax": ("m", "u"), "sgdm": ("m",), "sgd": ()}
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam / Adamax defaults
SGD_MOMENTUM = 0.9
SPHERE_EPS = 1e-9
BEST_LOSS, MIN_L2 = "best.loss", "min.L2"  # per-row trackers of the step (state tensors [B])


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape ("B" = the dynamic batch dimension) and dtype of one graph input or output."""

    name: str
    shape: tuple
    dtype: str = "float32"

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    def concrete(self, batch: int) -> tuple[int, ...]:
        return tuple(batch if s == "B" else int(s) for s in self.shape)


@dataclass(frozen=True)
class StepLayout:
    """Inputs and outputs of the step and render graphs for one (spec, options, lr_size).

    params:  the optimised tensors: "latent", then "noise{i}" for each trainable map.
    state:   params, then each param's optimiser moments ("m.latent", "v.latent", ...), then the
             best iterate "best.<param>" per param, "best.loss" and "min.L2" (all ping-pong).
    starts:  "start.<param>" per param: the state a row starts from when its t is 1.
    radii:   "radius.<param>" per param.
    frozen:  "noise{i}" for each frozen map.
    """

    spec: GeneratorSpec
    options: PulseOptions
    lr_size: int
    roles: tuple[str, ...]
    params: tuple[str, ...]
    state: tuple[str, ...]
    starts: tuple[str, ...]
    radii: tuple[str, ...]
    frozen: tuple[str, ...]
    shapes: dict

    @property
    def factor(self) -> int:
        return factor_for(self.spec.resolution, self.lr_size)

    @property
    def latent_rows(self) -> int:
        return latent_rows(self.spec, self.options)

    def step_inputs(self) -> list[TensorInfo]:
        names = ["target", "lr", "t", *self.state, *self.starts, *self.radii, *self.frozen]
        return [TensorInfo(n, self.shapes[n]) for n in names]

    def step_outputs(self) -> list[TensorInfo]:
        out = [TensorInfo(f"next.{n}", self.shapes[n]) for n in self.state]
        return out + [TensorInfo(f"loss.{t}", ("B",)) for t in TERMS]

    def render_inputs(self) -> list[TensorInfo]:
        names = ["latent"] + [f"noise{i}" for i, r in enumerate(self.roles) if r != "zero"]
        return [TensorInfo(n, self.shapes[n]) for n in names]

    def render_outputs(self) -> list[TensorInfo]:
        r, lr = self.spec.resolution, self.lr_size
        return [TensorInfo("image", ("B", self.spec.channels, r, r)),
                TensorInfo("lr_image", ("B", self.spec.channels, lr, lr))]

    def state_entries(self) -> list[dict]:
        """manifest["state"]: name, next, shape, dtype per state tensor, in input order."""
        return [{"name": n, "next": f"next.{n}", "shape": list(self.shapes[n]), "dtype": "float32"} for n in self.state]


def step_layout(spec: GeneratorSpec, options: PulseOptions, lr_size: int) -> StepLayout:
    """The graphs' input/output layout (docs/artifacts.md) for a generator spec and options."""
    if not isinstance(lr_size, int) or isinstance(lr_size, bool) or lr_size < 1:
        raise PulseError(f"lr_size must be a positive integer, got {lr_size!r}")
    factor_for(spec.resolution, lr_size)  # raises PulseError unless lr_size divides the resolution
    roles = tuple(noise_roles(spec.num_noise, options))
    rows = latent_rows(spec, options)
    shapes = {"target": ("B", spec.channels, lr_size, lr_size), "lr": ("B",), "t": ("B",),
              "latent": ("B", rows, spec.latent_dim), "radius.latent": ("B", rows, 1),
              BEST_LOSS: ("B",), MIN_L2: ("B",)}
    for i, s in enumerate(spec.noise_shapes):
        shapes[f"noise{i}"] = ("B", *s)
    params = ("latent",) + tuple(f"noise{i}" for i, r in enumerate(roles) if r == "trainable")
    moments = tuple(f"{p}.{x}" for x in params for p in MOMENTS[options.opt_name])
    for x in params:
        shapes[f"radius.{x}"] = shapes["radius.latent"] if x == "latent" else ("B", 1, 1, 1)
        shapes[f"start.{x}"] = shapes[f"best.{x}"] = shapes[x]
        for p in MOMENTS[options.opt_name]:
            shapes[f"{p}.{x}"] = shapes[x]
    frozen = tuple(f"noise{i}" for i, r in enumerate(roles) if r == "frozen")
    best = tuple(f"best.{x}" for x in params) + (BEST_LOSS, MIN_L2)
    return StepLayout(spec=spec, options=options, lr_size=lr_size, roles=roles, params=params,
                      state=params + moments + best, starts=tuple(f"start.{x}" for x in params),
                      radii=tuple(f"radius.{x}" for x in params), frozen=frozen, shapes=shapes)


def sphere_norm(x: torch.Tensor) -> torch.Tensor:
    """sqrt(sum x^2 + 1e-9) over dims >= 2 of a latent [B, L, D] -> [B, L, 1]; over all dims but
    the batch of a noise map [B, C, H, W] -> [B, 1, 1, 1] (as export.reference.sphere_norm)."""
    dims = (2,) if x.ndim == 3 else tuple(range(1, x.ndim))
    return (x.pow(2).sum(dim=dims, keepdim=True) + SPHERE_EPS).sqrt()


def optimizer_update(opt_name: str, p: torch.Tensor, g: torch.Tensor, moments: list[torch.Tensor],
                     lr: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One optimiser step on p with gradient g, functionally: (new p, new moments).

    torch.optim's single-tensor formulas with torch's defaults (b1, b2 = 0.9, 0.999, eps 1e-8):
      adam:   m = lerp(m, g, 1-b1); v = b2 v + (1-b2) g^2;
              p = p - lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
      adamax: m = lerp(m, g, 1-b1); u = max(b2 u, |g| + eps); p = p - lr/(1-b1^t) * m / u
      sgdm:   m = 0.9 m + g (m starts at 0, so step 1 gives m = g, as torch's clone); p = p - lr m
      sgd:    p = p - lr g
    lr, t: float32, [] or one value per row broadcastable to p ([B, 1, ...]); t is the 1-based
    step count.
    """
    b1, b2 = ADAM_BETAS
    if opt_name == "adam":
        m, v = moments
        m = m + (1.0 - b1) * (g - m)  # torch: exp_avg.lerp_(grad, 1 - beta1)
        v = v * b2 + (1.0 - b2) * g * g
        step_size = lr / (1.0 - torch.pow(b1, t))
        denom = v.sqrt() / (1.0 - torch.pow(b2, t)).sqrt() + ADAM_EPS
        return p - step_size * (m / denom), [m, v]
    if opt_name == "adamax":
        m, u = moments
        m = m + (1.0 - b1) * (g - m)
        u = torch.maximum(u * b2, g.abs() + ADAM_EPS)
        clr = lr / (1.0 - torch.pow(b1, t))
        return p - clr * (m / u), [m, u]
    if opt_name == "sgdm":
        (m,) = moments
        m = m * SGD_MOMENTUM + g
        return p - lr * m, [m]
    if opt_name == "sgd":
        return p - lr * g, []
    raise PulseError(f"opt_name must be one of adam, sgd, sgdm, adamax; got {opt_name!r}")


def _low_precision_copy(generator: Generator, precision: str) -> Generator:
    if precision not in PRECISIONS:
        raise PulseError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision == "fp32":
        return generator
    return copy.deepcopy(generator).to(PRECISIONS[precision])


def _image01(generator: Generator, gen_lp: Generator, dtype: torch.dtype, w: torch.Tensor,
             noise: list[torch.Tensor]) -> torch.Tensor:
    """(G - lo)/(hi - lo) with the synthesis in `dtype`, returned in float32."""
    if dtype == torch.float32:
        return generator.image01(w, noise)
    return gen_lp.image01(w.to(dtype), [n.to(dtype) for n in noise]).float()


def _noise_list(layout: StepLayout, named: dict, like: torch.Tensor) -> list[torch.Tensor]:
    out = []
    for i, role in enumerate(layout.roles):
        if role == "zero":
            out.append(like.new_zeros((1, *layout.spec.noise_shapes[i])).expand(like.shape[0], -1, -1, -1))
        else:
            out.append(named[f"noise{i}"])
    return out


def rows_like(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-row vector v [B] shaped to broadcast against x [B, ...]: [B, 1, ..., 1]."""
    return v.reshape(v.shape[0], *([1] * (x.ndim - 1)))


def make_step_fn(generator: Generator, options: PulseOptions, lr_size: int,
                 precision: str = "fp32") -> Callable[..., tuple[torch.Tensor, ...]]:
    """One PULSE iteration per row as a pure function of tensors (the computation of step.onnx).

    Call as fn(*inputs) with tensors in the order of fn.layout.step_inputs() (target, lr, t,
    state..., starts..., radii..., frozen noise...; all float32); returns a tuple in the order of
    fn.layout.step_outputs() (next state..., loss.L2, loss.L1, loss.GEOCROSS, loss.TOTAL).

    Algorithm, per row b (lr [B] and t [B] are per row; t is the row's 1-based step count):
      1. live = t >= 1 (t = 0: an empty slot or a finished search, which does not move);
         fresh = t == 1: the row starts from start.X (X: latent, trainable noise), with zero
         moments, best.X = start.X, best.loss = NaN (no best yet), min.L2 = +inf.
      2. w = generator.map_latent(latent)                         [B, L, D] float32
      3. x = image01(w, noise) with the synthesis in `precision`  [B, 3, R, R] -> float32
         (noise: trainable from the state, frozen from the inputs, zero maps constant)
      4. terms = loss_terms(D(x), target, w)                      [B] each, float32: the terms of
         the state *before* this update, as PULSE records them
      5. best iterate: improved = live and (TOTAL < best.loss, or best.loss is NaN and TOTAL is
         not), engine.result.TrajectoryTracker's rule; improved rows take X into best.X and TOTAL
         into best.loss. min.L2 = min(min.L2, L2) over live rows (NaN never enters).
      6. gradients of sum_b TOTAL_b w.r.t. latent and trainable noise (torch.func.grad_and_value):
         images are independent, so a row's gradient does not depend on the batch.
      7. optimizer_update per optimised tensor with the row's lr and t (torch.optim's formulas),
         then the spherical projection x <- x / sphere_norm(x) * radius. Rows that are not live
         keep their state, moments and best unchanged.
    Args:
        generator: export.generators.base.Generator (weights become constants of the graph).
        options:   engine.options.PulseOptions (loss, eps, noise roles, optimiser, tiling).
        lr_size:   side of the LR target; must divide generator.spec.resolution.
        precision: "fp32" | "fp16" | "bf16": dtype of the synthesis; optimiser state, loss and
                   every input/output stay float32.
    Returns:
        fn, with fn.layout (StepLayout) and fn.input_names / fn.output_names.
    """
    layout = step_layout(generator.spec, options, lr_size)
    gen_lp = _low_precision_copy(generator, precision)
    dtype = PRECISIONS[precision]
    factor, weights, eps = layout.factor, options.loss_weights, options.eps
    in_names = [i.name for i in layout.step_inputs()]
    moment_names = MOMENTS[options.opt_name]

    def loss_fn(params: tuple[torch.Tensor, ...], target: torch.Tensor, named: dict):
        named = dict(named, **dict(zip(layout.params, params)))
        w = generator.map_latent(params[0])  # [B, L, D]
        x = _image01(generator, gen_lp, dtype, w, _noise_list(layout, named, params[0]))  # [B, 3, R, R]
        terms = loss_terms(downscale(x, factor), target, w, weights, eps)  # [B] each
        return terms["TOTAL"].sum(), tuple(terms[t] for t in TERMS)

    grad_loss = torch.func.grad_and_value(loss_fn, has_aux=True)

    def step(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        named = dict(zip(in_names, inputs))
        target, lr, t = named["target"], named["lr"], named["t"]  # [B, 3, lr, lr], [B], [B]
        live, fresh = t > 0.5, (t > 0.5) & (t < 1.5)  # [B] bool: t = 0 / t = 1 (t holds integers)

        def pick(mask, a, b):  # per row: a where mask else b
            return torch.where(rows_like(mask, b), a, b)

        # 1. fresh rows start over
        params = tuple(pick(fresh, named[f"start.{p}"], named[p]) for p in layout.params)
        moments = {f"{m}.{p}": pick(fresh, torch.zeros_like(named[p]), named[f"{m}.{p}"])
                   for p in layout.params for m in moment_names}
        best = {p: pick(fresh, named[f"start.{p}"], named[f"best.{p}"]) for p in layout.params}
        best_loss = torch.where(fresh, torch.full_like(named[BEST_LOSS], float("nan")), named[BEST_LOSS])
        min_l2 = torch.where(fresh, torch.full_like(named[MIN_L2], float("inf")), named[MIN_L2])
        # 2-4, 6. terms of the state before the update, and its gradient
        grads, (_, terms) = grad_loss(params, target, {n: named[n] for n in layout.frozen})
        l2, total = terms[TERMS.index("L2")], terms[TERMS.index("TOTAL")]
        # 5. best iterate and smallest L2, per live row
        improved = live & ((total < best_loss) | (torch.isnan(best_loss) & ~torch.isnan(total)))  # [B]
        next_best = [pick(improved, x, best[p]) for p, x in zip(layout.params, params)]
        next_best_loss = torch.where(improved, total, best_loss)
        next_min_l2 = torch.where(live & (l2 < min_l2), l2, min_l2)
        # 7. optimiser update and projection; rows that are not live stay as they were
        new_params, new_moments = [], []
        for name, p, g in zip(layout.params, params, grads):
            old = [moments[f"{m}.{name}"] for m in moment_names]
            q, upd = optimizer_update(options.opt_name, p, g, old, rows_like(lr, p), rows_like(t, p))
            q = q / sphere_norm(q) * named[f"radius.{name}"]
            new_params.append(pick(live, q, p))
            new_moments.extend(pick(live, a, b) for a, b in zip(upd, old))
        return (*new_params, *new_moments, *next_best, next_best_loss, next_min_l2, *terms)

    step.layout = layout
    step.generator, step.precision = generator, precision
    step.input_names = in_names
    step.output_names = [o.name for o in layout.step_outputs()]
    return step


def make_render_fn(generator: Generator, options: PulseOptions, lr_size: int,
                   precision: str = "fp32") -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """State -> (image, lr_image): the computation of render.onnx.

    fn(latent [B, L, D], noise{i} [B, C, H, W] for every non-zero map in layer order) ->
    image [B, 3, R, R] = clamp(image01(map_latent(latent), noise), 0, 1) and lr_image = D(image)
    [B, 3, lr, lr], both float32 (synthesis in `precision`).
    """
    layout = step_layout(generator.spec, options, lr_size)
    gen_lp = _low_precision_copy(generator, precision)
    dtype = PRECISIONS[precision]
    in_names = [i.name for i in layout.render_inputs()]

    def render(*inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        named = dict(zip(in_names, inputs))
        w = generator.map_latent(named["latent"])  # [B, L, D]
        x = _image01(generator, gen_lp, dtype, w, _noise_list(layout, named, named["latent"]))
        image = x.clamp(0.0, 1.0)  # [B, 3, R, R]
        return image, downscale(image, layout.factor)  # [B, 3, lr, lr]

    render.layout = layout
    render.generator, render.precision = generator, precision
    render.input_names = in_names
    render.output_names = [o.name for o in layout.render_outputs()]
    return render


def start_inputs(layout: StepLayout, latent: torch.Tensor, noise: list[torch.Tensor], target: torch.Tensor) -> dict:
    """Named step inputs of rows about to start (lr and t excluded; give those rows t = 1): the
    start (latent [B, L, D], noise one [B, C, H, W] per map) as start.X and as the state X, zero
    moments, best.X = start, best.loss NaN, min.L2 +inf, the radii of the start and the frozen
    maps."""
    named = {"target": target, "latent": latent}
    for i, role in enumerate(layout.roles):
        if role != "zero":
            named[f"noise{i}"] = noise[i]
    for x in layout.params:
        named[f"start.{x}"] = named[f"best.{x}"] = named[x]
        named[f"radius.{x}"] = sphere_norm(named[x])
        for p in MOMENTS[layout.options.opt_name]:
            named[f"{p}.{x}"] = torch.zeros_like(named[x])
    named[BEST_LOSS] = torch.full((latent.shape[0],), float("nan"))
    named[MIN_L2] = torch.full((latent.shape[0],), float("inf"))
    return named
