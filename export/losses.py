"""PULSE's objective in torch, per image: D (bicubic downscale), L2, L1, GEOCROSS.

Every function returns one value per image ([B]) so that a batch is B independent problems:
the reference sums them before backward, exactly as PULSE does, and each image's gradient is
unaffected by the others.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..engine.bicubic import bicubic_taps, padding


def downscale(x: torch.Tensor, factor: int) -> torch.Tensor:
    """D(x): [B, C, H, W] -> [B, C, H/f, W/f]. Reflect pad then a depthwise stride-f convolution
    with the 4f bicubic taps, rows first then columns (PULSE's operator; engine.bicubic is the
    numpy reference)."""
    c = x.shape[1]
    taps = torch.as_tensor(bicubic_taps(factor), dtype=x.dtype, device=x.device)
    before, after = padding(factor)
    kh = taps.view(1, 1, -1, 1).expand(c, 1, -1, 1)  # [C, 1, 4f, 1]
    kw = taps.view(1, 1, 1, -1).expand(c, 1, 1, -1)  # [C, 1, 1, 4f]
    x = F.pad(x, (0, 0, before, after), mode="reflect")
    x = F.conv2d(x, kh, stride=(factor, 1), groups=c)
    x = F.pad(x, (before, after, 0, 0), mode="reflect")
    return F.conv2d(x, kw, stride=(1, factor), groups=c)


def l2(lr: torch.Tensor, target: torch.Tensor, eps: float) -> torch.Tensor:
    """[B]: max(eps, mean_chw (lr - target)^2)."""
    return (lr - target).pow(2).mean(dim=(1, 2, 3)).clamp(min=eps)


def l1(lr: torch.Tensor, target: torch.Tensor, eps: float) -> torch.Tensor:
    """[B]: 10 * max(eps, mean_chw |lr - target|)."""
    return 10.0 * (lr - target).abs().mean(dim=(1, 2, 3)).clamp(min=eps)


def geocross(w: torch.Tensor) -> torch.Tensor:
    """[B]: mean over row pairs (i, j) of D * d_ij^2 / 8, for w [B, L, D] (mapped latents);
    d_ij = 2 atan2(sqrt(|w_i - w_j|^2 + 1e-9), sqrt(|w_i + w_j|^2 + 1e-9)). Zero when L == 1
    (a tiled or single-vector latent)."""
    b, rows, dim = w.shape
    if rows == 1:
        return w.new_zeros(b)
    x = w.unsqueeze(1)  # [B, 1, L, D]
    y = w.unsqueeze(2)  # [B, L, 1, D]
    a = ((x - y).pow(2).sum(-1) + 1e-9).sqrt()  # [B, L, L]
    c = ((x + y).pow(2).sum(-1) + 1e-9).sqrt()
    d = 2.0 * torch.atan2(a, c)
    return (d.pow(2) * dim).mean(dim=(1, 2)) / 8.0


def loss_terms(lr: torch.Tensor, target: torch.Tensor, w: torch.Tensor, weights: dict[str, float],
               eps: float) -> dict[str, torch.Tensor]:
    """Per-image terms {'L2', 'L1', 'GEOCROSS', 'TOTAL'} ([B] each; every term is computed for
    the record, TOTAL uses only those in `weights`). `w` [B, L, D] is the mapped latent before
    tiling, so a tiled latent (L == 1) has GEOCROSS 0."""
    terms = {
        "L2": l2(lr, target, eps),
        "L1": l1(lr, target, eps),
        "GEOCROSS": geocross(w),
    }
    total = sum(weight * terms[name] for name, weight in weights.items())
    terms["TOTAL"] = total
    return terms
