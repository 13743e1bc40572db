"""PULSE's options, their defaults and the formulas that need no tensor library.

One definition shared by the PyTorch reference (export/) and the runtime (engine/). Defaults are
those of ../shared/PULSE.md.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields

from .errors import PulseError

LOSS_TERMS = ("L2", "L1", "GEOCROSS")
NOISE_TYPES = ("zero", "fixed", "trainable")
OPTIMIZERS = ("adam", "sgd", "sgdm", "adamax")
SCHEDULES = ("fixed", "linear1cycle", "linear1cycledrop")
# Options that do not change the exported graphs (lr and t are graph inputs, starts are made on
# the host by engine.state, duplicates and restarts are extra starts, early stopping is the
# scheduler's): a run may override them.
RUNTIME_OPTIONS = ("steps", "seed", "duplicates", "learning_rate", "lr_schedule", "restarts", "early_stop")


@dataclass(frozen=True)
class PulseOptions:
    """Every option of the PULSE search (defaults as in the reference CLI).

    loss_str:   terms `weight*NAME` joined by `+`, NAME in L2, L1, GEOCROSS.
    eps:        per-image MSE below which an image counts as downscaling correctly.
    noise_type: zero | fixed | trainable.
    num_trainable_noise_layers: with `trainable`, the first this many noise maps are optimised.
    tile_latent: optimise one latent row per image, tiled to every style input.
    bad_noise_layers: dot-separated noise indices that are always zero ("" for none).
    opt_name:   adam | sgd | sgdm (momentum 0.9) | adamax.
    learning_rate, steps, lr_schedule: fixed | linear1cycle | linear1cycledrop.
    duplicates: starts per input, always run (each with its own seeded start); the best is kept.
    seed:       seeds every start; 0 is a seed like any other.
    restarts:   up to this many extra starts per input, each run only after the previous starts
                missed eps (not in PULSE: the engine's scheduler; start k is seeded as duplicate k).
    early_stop: a start ends as soon as its L2 is within eps (not in PULSE, which keeps improving
                GEOCROSS to the last step; the engine's scheduler checks every sync_every steps).
    """

    loss_str: str = "100*L2+0.05*GEOCROSS"
    eps: float = 2e-3
    noise_type: str = "trainable"
    num_trainable_noise_layers: int = 5
    tile_latent: bool = False
    bad_noise_layers: str = "17"
    opt_name: str = "adam"
    learning_rate: float = 0.4
    steps: int = 100
    lr_schedule: str = "linear1cycledrop"
    duplicates: int = 1
    seed: int = 0
    restarts: int = 0
    early_stop: bool = False

    def __post_init__(self) -> None:
        parse_loss(self.loss_str)
        parse_bad_noise_layers(self.bad_noise_layers)
        if isinstance(self.eps, bool) or not (isinstance(self.eps, (int, float)) and math.isfinite(self.eps) and self.eps >= 0):
            raise PulseError(f"eps must be a finite number >= 0, got {self.eps!r}")
        _choice("noise_type", self.noise_type, NOISE_TYPES)
        _choice("opt_name", self.opt_name, OPTIMIZERS)
        _choice("lr_schedule", self.lr_schedule, SCHEDULES)
        lr = self.learning_rate
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (math.isfinite(lr) and lr > 0):
            raise PulseError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        for name in ("steps", "duplicates"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise PulseError(f"{name} must be an integer >= 1, got {v!r}")
        v = self.num_trainable_noise_layers
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise PulseError(f"num_trainable_noise_layers must be an integer >= 0, got {v!r}")
        for name in ("seed", "restarts"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise PulseError(f"{name} must be an integer >= 0, got {v!r}")
        if not isinstance(self.early_stop, bool):
            raise PulseError(f"early_stop must be True or False, got {self.early_stop!r}")

    @property
    def loss_weights(self) -> dict[str, float]:
        return parse_loss(self.loss_str)

    @property
    def bad_noise(self) -> frozenset[int]:
        return parse_bad_noise_layers(self.bad_noise_layers)

    def lr_at(self, step: int) -> float:
        """Learning rate used by optimiser step `step` (0-based)."""
        return self.learning_rate * lr_factor(step, self.steps, self.lr_schedule)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PulseOptions":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise PulseError(f"unknown PULSE option {unknown[0]!r}")
        return cls(**d)


def graph_options(options: PulseOptions) -> dict:
    """The options baked into the exported graphs: options.to_dict() without RUNTIME_OPTIONS."""
    return {k: v for k, v in options.to_dict().items() if k not in RUNTIME_OPTIONS}


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise PulseError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


_TERM = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*\*\s*([A-Za-z0-9]+)\s*$")


def parse_loss(loss_str: str) -> dict[str, float]:
    """'100*L2+0.05*GEOCROSS' -> {'L2': 100.0, 'GEOCROSS': 0.05}. Order kept, names checked."""
    if not isinstance(loss_str, str) or not loss_str.strip():
        raise PulseError("loss_str is empty: give terms like '100*L2+0.05*GEOCROSS'")
    weights: dict[str, float] = {}
    for part in loss_str.split("+"):
        m = _TERM.match(part)
        if not m:
            raise PulseError(f"bad loss term {part.strip()!r} in {loss_str!r}: expected weight*NAME")
        weight, name = float(m.group(1)), m.group(2).upper()
        if name not in LOSS_TERMS:
            raise PulseError(f"unknown loss term {m.group(2)!r}: expected one of {', '.join(LOSS_TERMS)}")
        if name in weights:
            raise PulseError(f"loss term {name} appears twice in {loss_str!r}")
        weights[name] = weight
    return weights


def parse_bad_noise_layers(spec: str) -> frozenset[int]:
    """'17' -> {17}; '3.17' -> {3, 17}; '' -> {}."""
    if spec is None or str(spec).strip() == "":
        return frozenset()
    out = set()
    for tok in str(spec).split("."):
        tok = tok.strip()
        if not tok.isdigit():
            raise PulseError(f"bad_noise_layers must be dot-separated integers, got {spec!r}")
        out.add(int(tok))
    return frozenset(out)


def lr_factor(step: int, steps: int, schedule: str) -> float:
    """Multiplier of the base learning rate at optimiser step `step` of `steps` (PULSE.md).

    fixed:            1
    linear1cycle:     (9 * (1 - 2|x/S - 1/2|) + 1) / 10
    linear1cycledrop: that triangle over the first 0.9*S steps, then linear 0.1 -> 0.001
                      over the last 0.1*S.
    """
    x, s = float(step), float(steps)
    if schedule == "fixed":
        return 1.0
    if schedule == "linear1cycle":
        return (9.0 * (1.0 - abs(x / s - 0.5) * 2.0) + 1.0) / 10.0
    if schedule == "linear1cycledrop":
        if x < 0.9 * s:
            return (9.0 * (1.0 - abs(x / (0.9 * s) - 0.5) * 2.0) + 1.0) / 10.0
        return 0.1 + (x - 0.9 * s) / (0.1 * s) * (0.001 - 0.1)
    raise PulseError(f"lr_schedule must be one of {', '.join(SCHEDULES)}; got {schedule!r}")


def noise_roles(num_noise: int, options: PulseOptions) -> list[str]:
    """Role of each noise input: 'zero' (constant zeros), 'frozen' (random, fixed) or
    'trainable' (random start, optimised, projected on its own sphere). PULSE's rule: zero type
    or a bad layer -> zero; fixed type -> frozen; trainable type -> the first
    num_trainable_noise_layers maps are trainable, the rest frozen."""
    bad = options.bad_noise
    roles = []
    for i in range(num_noise):
        if options.noise_type == "zero" or i in bad:
            roles.append("zero")
        elif options.noise_type == "fixed":
            roles.append("frozen")
        else:
            roles.append("trainable" if i < options.num_trainable_noise_layers else "frozen")
    return roles
