"""The one interface the search needs from a generator."""
from __future__ import annotations

import torch
from torch import nn

from ...engine.spec import GeneratorSpec


class Generator(nn.Module):
    """A face generator as PULSE searches it.

    Subclasses set `self.spec` (engine.spec.GeneratorSpec) and implement `synthesis`. When
    spec.has_mapping, they also hold buffers `w_mean` and `w_std` ([D], the Gaussian fit) and a
    `mapping` module (z [N, D] -> w [N, D]) for computing that fit.
    """

    spec: GeneratorSpec

    def synthesis(self, w: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
        """w [B, num_ws, D] (already mapped and tiled), noise: one [B, C, H, W] per
        spec.noise_shapes -> image [B, 3, R, R] in spec.value_range (unclamped)."""
        raise NotImplementedError

    def map_latent(self, v: torch.Tensor) -> torch.Tensor:
        """PULSE's latent transform of the search variable v [B, L, D]:
        w = LeakyReLU_0.2(v * std + mean) with a mapping network, else w = v."""
        if not self.spec.has_mapping:
            return v
        return torch.nn.functional.leaky_relu(v * self.w_std + self.w_mean, 0.2)

    def image01(self, w: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
        """Synthesis from mapped rows w [B, L, D] (L = 1 is tiled to num_ws), rescaled to [0, 1]
        unclamped: (G - lo) / (hi - lo)."""
        if w.shape[1] != self.spec.num_ws:
            w = w.expand(-1, self.spec.num_ws, -1)
        lo, hi = self.spec.value_range
        return (self.synthesis(w, noise) - lo) / (hi - lo)
