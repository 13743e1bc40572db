"""PULSE's options as command-line flags, shared by every subcommand that runs or exports a search.

`add_pulse_options(parser)` adds one flag per field of engine.options.PulseOptions (defaults from
the dataclass, so there is one source of truth); `options_from_args(args)` builds the validated
PulseOptions back (a bad value raises PulseError with a one-line message).
"""
from __future__ import annotations

import argparse
from dataclasses import fields

from ..engine.options import NOISE_TYPES, OPTIMIZERS, SCHEDULES, PulseOptions

_DEFAULTS = PulseOptions()

# field -> (flag, type, choices, help); order as in PulseOptions.
_FLAGS = {
    "loss_str": ("--loss-str", str, None, "loss terms `weight*NAME` joined by + (NAME: L2, L1, GEOCROSS)"),
    "eps": ("--eps", float, None, "per-image MSE counted as downscaling correctly"),
    "noise_type": ("--noise-type", str, NOISE_TYPES, "noise maps: zero, fixed (random, frozen) or trainable"),
    "num_trainable_noise_layers": ("--num-trainable-noise-layers", int, None,
                                   "with trainable noise: how many of the first maps are optimised"),
    "tile_latent": ("--tile-latent", None, None, "optimise one latent row per image, tiled to every style input"),
    "bad_noise_layers": ("--bad-noise-layers", str, None, "dot-separated noise indices always zero ('' for none)"),
    "opt_name": ("--opt-name", str, OPTIMIZERS, "optimiser"),
    "learning_rate": ("--learning-rate", float, None, "base learning rate"),
    "steps": ("--steps", int, None, "optimiser steps"),
    "lr_schedule": ("--lr-schedule", str, SCHEDULES, "learning-rate schedule"),
    "duplicates": ("--duplicates", int, None, "restarts per input (the best is kept)"),
    "seed": ("--seed", int, None, "seed of every start (0 is a seed like any other)"),
    "restarts": ("--restarts", int, None, "up to this many extra starts per input, each only after the previous "
                                          "ones missed eps (engine backends)"),
    "early_stop": ("--early-stop", None, None, "end a start as soon as its L2 is within eps (PULSE itself keeps "
                                               "improving GEOCROSS to the last step; engine backends)"),
}


def add_pulse_options(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Add one flag per PulseOptions field to `parser` (in an argument group "PULSE options").

    Flags: --loss-str, --eps, --noise-type, --num-trainable-noise-layers, --tile-latent,
    --bad-noise-layers, --opt-name, --learning-rate, --steps, --lr-schedule, --duplicates, --seed,
    --restarts, --early-stop.
    Defaults are PulseOptions' defaults. Returns the group.
    """
    group = parser.add_argument_group("PULSE options")
    names = {f.name for f in fields(PulseOptions)}
    assert names == set(_FLAGS), f"cli.options out of date with PulseOptions: {sorted(names ^ set(_FLAGS))}"
    for name, (flag, typ, choices, help_) in _FLAGS.items():
        default = getattr(_DEFAULTS, name)
        if typ is None:  # boolean switch
            group.add_argument(flag, dest=name, action="store_true", default=default, help=help_)
        else:
            group.add_argument(flag, dest=name, type=typ, choices=choices, default=default, metavar=None if choices else name.upper(),
                               help=f"{help_} (default: {default!r})")
    return group


def options_from_args(args: argparse.Namespace) -> PulseOptions:
    """PulseOptions from parsed flags (validated: raises PulseError on a bad value)."""
    return PulseOptions(**{name: getattr(args, name) for name in _FLAGS})
