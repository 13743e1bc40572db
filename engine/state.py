"""Where every search starts: seeded latents and noise maps, in numpy.

Both the PyTorch reference and the runtime take their starts from here, so the same seed gives
the same trajectory on every backend. Each batch row has its own random stream keyed by
(seed, input index, restart index): a row's start does not depend on how inputs are batched.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .options import PulseOptions, noise_roles
from .spec import GeneratorSpec


@dataclass
class StartState:
    """Initial search state for B rows.

    latent: [B, L, D] float32, L = 1 when tiled or when the generator takes one vector, else
            spec.num_ws. Standard normal.
    noise:  one [B, C, H, W] float32 array per noise input of the generator, in layer order
            (zeros for 'zero' roles).
    roles:  per noise input, 'zero' | 'frozen' | 'trainable' (engine.options.noise_roles).
    """

    latent: np.ndarray
    noise: list[np.ndarray]
    roles: list[str]


def latent_rows(spec: GeneratorSpec, options: PulseOptions) -> int:
    """Rows of the optimised latent per image: 1 if tiled or single-vector, else spec.num_ws."""
    return 1 if (options.tile_latent or spec.num_ws == 1) else spec.num_ws


def start_state(spec: GeneratorSpec, options: PulseOptions, rows: list[tuple[int, int]]) -> StartState:
    """Seeded start for each row given as (input_index, restart_index).

    Per row: rng = PCG64(SeedSequence([seed, input_index, restart_index])); first the latent
    ([L, D] standard normal, float32), then each non-zero noise map in layer order.
    """
    L, D = latent_rows(spec, options), spec.latent_dim
    roles = noise_roles(spec.num_noise, options)
    latents, noises = [], [[] for _ in spec.noise_shapes]
    for input_index, restart_index in rows:
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([options.seed, input_index, restart_index])))
        latents.append(rng.standard_normal((L, D), dtype=np.float32))
        for i, (shape, role) in enumerate(zip(spec.noise_shapes, roles)):
            if role == "zero":
                noises[i].append(np.zeros(shape, np.float32))
            else:
                noises[i].append(rng.standard_normal(shape, dtype=np.float32))
    latent = np.stack(latents) if latents else np.zeros((0, L, D), np.float32)
    noise = [np.stack(n) if n else np.zeros((0, *s), np.float32) for n, s in zip(noises, spec.noise_shapes)]
    return StartState(latent=latent, noise=noise, roles=roles)


def job_rows(num_inputs: int, duplicates: int) -> list[tuple[int, int]]:
    """Rows for a job: input-major, restarts adjacent (input i restart k at row i*duplicates+k)."""
    return [(i, k) for i in range(num_inputs) for k in range(duplicates)]
