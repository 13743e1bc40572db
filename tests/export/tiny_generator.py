"""Tiny generators for tests: the shape of the real ones at a few thousand weights.

TinyStyleGenerator: a StyleGAN-like 16 px generator (mapping network + Gaussian fit, num_ws=6
style rows, 6 single-channel noise inputs at 4, 4, 8, 8, 16, 16 px), like stylegan1 at 1024.
TinyVectorGenerator: a DCGAN-like 16 px generator fed one vector (num_ws=1, no noise, tanh).
Weights come from a fixed torch seed, so every test sees the same generator.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pulse_trt.engine.spec import GeneratorSpec
from pulse_trt.export.generators.base import Generator


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class TinyStyleGenerator(Generator):
    """16 px, latent D=8, 8 channels, 6 style rows and 6 noise maps."""

    def __init__(self, dim: int = 8, channels: int = 8, seed: int = 1):
        super().__init__()
        g = _seeded(seed)
        sizes = (4, 4, 8, 8, 16, 16)
        self.spec = GeneratorSpec(name="tiny-style", resolution=16, latent_dim=dim, num_ws=len(sizes),
                                  noise_shapes=tuple((1, s, s) for s in sizes), has_mapping=True,
                                  value_range=(-1.0, 1.0))
        self.mapping = nn.Sequential(nn.Linear(dim, dim), nn.LeakyReLU(0.2), nn.Linear(dim, dim), nn.LeakyReLU(0.2))
        self.const = nn.Parameter(torch.randn(1, channels, 4, 4, generator=g))
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in sizes)
        self.styles = nn.ModuleList(nn.Linear(dim, 2 * channels) for _ in sizes)
        self.noise_weight = nn.Parameter(0.5 + torch.rand(len(sizes), channels, generator=g))
        self.to_rgb = nn.Conv2d(channels, 3, 1)
        with torch.no_grad():
            for p in list(self.mapping.parameters()) + list(self.convs.parameters()) + \
                    list(self.styles.parameters()) + list(self.to_rgb.parameters()):
                p.copy_(torch.randn(p.shape, generator=g) * (0.4 if p.ndim > 1 else 0.1))
        # Gaussian fit of the mapping output (PULSE computes it from 1M samples; 4096 do here).
        with torch.no_grad():
            z = torch.randn(4096, dim, generator=g)
            x = F.leaky_relu(self.mapping(z), 5.0)
        self.register_buffer("w_mean", x.mean(0))
        self.register_buffer("w_std", x.std(0))
        self.requires_grad_(False)
        self.eval()

    def synthesis(self, w: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
        x = self.const.expand(w.shape[0], -1, -1, -1)  # [B, C, 4, 4]
        for i, (conv, style) in enumerate(zip(self.convs, self.styles)):
            if noise[i].shape[-1] != x.shape[-1]:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = conv(x)
            x = x + noise[i] * self.noise_weight[i].view(1, -1, 1, 1)
            x = F.leaky_relu(x, 0.2)
            x = F.instance_norm(x)
            ys, yb = style(w[:, i]).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)  # [B, C, 1, 1] each
            x = x * (1 + ys) + yb
        return self.to_rgb(x) * 0.5  # [B, 3, 16, 16], unclamped


class TinyVectorGenerator(Generator):
    """16 px, one latent vector of D=12, no mapping, no noise, tanh output (like dcgan)."""

    def __init__(self, dim: int = 12, channels: int = 8, seed: int = 2):
        super().__init__()
        g = _seeded(seed)
        self.spec = GeneratorSpec(name="tiny-vector", resolution=16, latent_dim=dim, num_ws=1)
        self.fc = nn.Linear(dim, channels * 16)
        self.up1 = nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1)
        self.up2 = nn.ConvTranspose2d(channels, 3, 4, stride=2, padding=1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.ndim > 1 else 0.05))
        self.channels = channels
        self.requires_grad_(False)
        self.eval()

    def synthesis(self, w: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
        x = self.fc(w[:, 0]).view(-1, self.channels, 4, 4)  # [B, C, 4, 4]
        x = F.relu(self.up1(x))  # [B, C, 8, 8]
        return torch.tanh(self.up2(x))  # [B, 3, 16, 16]
