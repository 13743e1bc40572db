"""stylegan1: PULSE's generator, StyleGAN v1 (NVIDIA, FFHQ) as the lernapparat PyTorch port runs it.

Same architecture, scales and state-dict keys as the port PULSE loads (`synthesis.pt`,
`mapping.pt`), written from its description (../../shared/PULSE.md):

  mapping  z [N, D] -> pixel norm -> 8 x (equalised dense, lrmul 0.01, + LeakyReLU 0.2) -> w [N, D]
  synthesis w [B, num_ws, D], noise (one [B, 1, s, s] per layer) -> image [B, 3, R, R] in [-1, 1]:
    4x4:   x = const + bias; epi1(w0, n0); conv 3x3; epi2(w1, n1)
    RxR:   conv0_up (2x upsample + conv 3x3, blur [1,2,1]x[1,2,1]/16, + bias); epi1; conv1 3x3; epi2
           (nearest upsample then conv below 128 px output; the fused transposed conv from 128 px)
    epi:   x + noise * weight[C]; LeakyReLU 0.2; instance norm (eps 1e-5); x * (1 + ys) + yb with
           [ys, yb] = equalised dense(w_row) (gain 1)
    torgb: one equalised 1x1 conv (gain 1) at the last resolution.

Equalised learning rate: the stored weight is multiplied at run time by
w_mul = gain * fan_in^-0.5 * lrmul (gain sqrt(2) except style_mod and torgb, gain 1; lrmul 0.01 in
the mapping, else 1) and the bias by b_mul = lrmul.

Instance norm: what PULSE runs, torch.nn.InstanceNorm2d (no affine, eps 1e-5):
(x - mean) / sqrt(var + 1e-5) per image and channel, var biased. NVIDIA's TensorFlow release uses
eps 1e-8; with random weights at 1024 px the two differ by about 1e-4 relative in the image
(issue 17), so this follows PULSE. F.instance_norm is one fused kernel forward and one backward
in eager PyTorch, where the formula written out is about ten passes over each activation: at
1024 px, where the layers are wide and thin (16-32 channels of 512^2-1024^2), that was the
reference's largest cost after the convolutions. The export traces the written-out formula
instead (export.decompositions.InstanceNormAsFormula: the same ops in the graph and in the
verification's eager step).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ...engine.errors import PulseError
from ...engine.spec import GeneratorSpec
from ..checkpoints import copy_strict, load_checkpoint, split_stylegan1_state, tensors_only
from .base import Generator

SQRT2 = math.sqrt(2.0)
MAPPING_LRMUL = 0.01
MAPPING_LAYERS = 8
FUSED_MIN_RESOLUTION = 128  # output side from which conv0_up is the fused transposed conv
PIXEL_NORM_EPS = 1e-8  # the mapping's pixel norm (as the port)
INSTANCE_NORM_EPS = 1e-5  # torch.nn.InstanceNorm2d's default, which PULSE's synthesis uses


def ffhq_channels(res: int) -> int:
    """Channels of the FFHQ model at side `res`: min(16384 / res, 512) -> 512 for 4..32 px, then
    256, 128, 64, 32, 16 for 64..1024 (the port's nf(log2(res) - 1), fmap_base 8192)."""
    return min(16384 // res, 512)


def layer_sizes(resolution: int) -> list[int]:
    """Side of each of the 2*log2(R) - 2 layers: [4, 4, 8, 8, ..., R, R] (layer i: 2^(i//2 + 2))."""
    return [2 ** (i // 2 + 2) for i in range(2 * int(math.log2(resolution)) - 2)]


class EqualLinear(nn.Module):
    """Dense layer with equalised learning rate: y = x @ (weight * w_mul)^T + bias * b_mul.
    weight [out, in], bias [out]; w_mul = gain * in^-0.5 * lrmul, b_mul = lrmul."""

    def __init__(self, in_features: int, out_features: int, gain: float = SQRT2, lrmul: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.w_mul = gain * in_features ** -0.5 * lrmul
        self.b_mul = lrmul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.w_mul, self.bias * self.b_mul)


class EqualConv2d(nn.Module):
    """Same-padded k x k convolution with equalised learning rate. weight [out, in, k, k],
    bias [out]; w_mul = gain * (in * k * k)^-0.5."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, gain: float = SQRT2):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.w_mul = gain * (in_channels * kernel * kernel) ** -0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.w_mul, self.bias, padding=self.weight.shape[-1] // 2)


class Blur(nn.Module):
    """Depthwise [1,2,1]x[1,2,1]/16 blur, zero padding 1. Buffer `kernel` (1, 1, 3, 3) (stored in
    the checkpoint as `conv0_up.intermediate.kernel`)."""

    def __init__(self):
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("kernel", (taps[:, None] * taps[None, :] / 16.0)[None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        return F.conv2d(x, self.kernel.expand(channels, 1, 3, 3), padding=1, groups=channels)


class UpConv(nn.Module):
    """conv0_up: 2x upsample + 3x3 conv (no bias), blur, + bias. [B, in, H, W] -> [B, out, 2H, 2W].

    fused=False: nearest 2x upsample, then the 3x3 conv (pad 1).
    fused=True (output side >= 128, as NVIDIA trained it): one stride-2 transposed conv whose 4x4
    kernel is the scaled 3x3 weight, permuted to (in, out, 3, 3), zero padded by 1 and summed over
    its 4 one-pixel shifts; padding 1.
    """

    def __init__(self, in_channels: int, out_channels: int, fused: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.intermediate = Blur()
        self.w_mul = SQRT2 * (in_channels * 9) ** -0.5
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.w_mul  # [out, in, 3, 3]
        if self.fused:
            w = F.pad(w.permute(1, 0, 2, 3), (1, 1, 1, 1))  # [in, out, 5, 5]
            w = w[:, :, 1:, 1:] + w[:, :, :-1, 1:] + w[:, :, 1:, :-1] + w[:, :, :-1, :-1]  # [in, out, 4, 4]
            x = F.conv_transpose2d(x, w, stride=2, padding=1)  # [B, out, 2H, 2W]
        else:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")  # [B, in, 2H, 2W]
            x = F.conv2d(x, w, padding=1)  # [B, out, 2H, 2W]
        x = self.intermediate(x)
        return x + self.bias.view(1, -1, 1, 1)


class NoiseWeight(nn.Module):
    """Per-channel strength `weight` [C] of a layer's noise input."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels))


class StyleMod(nn.Module):
    """AdaIN style: `lin` (gain 1) maps w [B, D] to [ys, yb] [B, 2C]."""

    def __init__(self, latent_dim: int, channels: int):
        super().__init__()
        self.lin = EqualLinear(latent_dim, 2 * channels, gain=1.0)


class Epilogue(nn.Module):
    """End of every layer: noise, LeakyReLU 0.2, instance norm, style modulation."""

    def __init__(self, channels: int, latent_dim: int):
        super().__init__()
        self.noise = NoiseWeight(channels)
        self.style_mod = StyleMod(latent_dim, channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x [B, C, H, W], w [B, D], noise [B or 1, 1, H, W] -> [B, C, H, W]."""
        x = x + noise * self.noise.weight.view(1, -1, 1, 1)
        x = F.leaky_relu(x, 0.2)
        x = F.instance_norm(x, eps=INSTANCE_NORM_EPS)  # = nn.InstanceNorm2d(C)(x), PULSE's norm
        style = self.style_mod.lin(w).view(w.shape[0], 2, x.shape[1], 1, 1)  # [B, 2, C, 1, 1]
        return x * (style[:, 0] + 1.0) + style[:, 1]


class InputBlock(nn.Module):
    """4x4: const (1, C, 4, 4) + bias [C], epi1, conv 3x3, epi2."""

    def __init__(self, channels: int, latent_dim: int):
        super().__init__()
        self.const = nn.Parameter(torch.zeros(1, channels, 4, 4))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.epi1 = Epilogue(channels, latent_dim)
        self.conv = EqualConv2d(channels, channels, 3)
        self.epi2 = Epilogue(channels, latent_dim)

    def forward(self, w: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
        """w [B, 2, D], noise: 2 maps [B, 1, 4, 4] -> [B, C, 4, 4]."""
        x = self.const + self.bias.view(1, -1, 1, 1)  # [1, C, 4, 4]
        x = x.expand(w.shape[0], -1, -1, -1)  # [B, C, 4, 4]
        x = self.epi1(x, w[:, 0], noise[0])
        x = self.conv(x)
        return self.epi2(x, w[:, 1], noise[1])


class UpBlock(nn.Module):
    """RxR: conv0_up, epi1, conv1 3x3, epi2."""

    def __init__(self, in_channels: int, out_channels: int, latent_dim: int, fused: bool):
        super().__init__()
        self.conv0_up = UpConv(in_channels, out_channels, fused)
        self.epi1 = Epilogue(out_channels, latent_dim)
        self.conv1 = EqualConv2d(out_channels, out_channels, 3)
        self.epi2 = Epilogue(out_channels, latent_dim)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
        """x [B, Cin, R/2, R/2], w [B, 2, D], noise: 2 maps [B, 1, R, R] -> [B, Cout, R, R]."""
        x = self.epi1(self.conv0_up(x), w[:, 0], noise[0])
        return self.epi2(self.conv1(x), w[:, 1], noise[1])


class MappingNetwork(nn.Module):
    """z [N, D] -> w [N, D]: pixel norm (eps 1e-8), then dense0..dense7 (lrmul 0.01, gain sqrt 2),
    each followed by LeakyReLU 0.2."""

    def __init__(self, latent_dim: int = 512, layers: int = MAPPING_LAYERS):
        super().__init__()
        self.latent_dim = latent_dim
        self.num_layers = layers
        for i in range(layers):
            self.add_module(f"dense{i}", EqualLinear(latent_dim, latent_dim, gain=SQRT2, lrmul=MAPPING_LRMUL))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + PIXEL_NORM_EPS)  # [N, D]
        for i in range(self.num_layers):
            x = F.leaky_relu(getattr(self, f"dense{i}")(x), 0.2)  # [N, D]
        return x


def resolve_channels(resolution: int, fmaps: Mapping[int, int] | Callable[[int], int] | None) -> dict[int, int]:
    """Channels per side 4..resolution: fmaps[R] (a dict, missing sides default to FFHQ's) or
    fmaps(R) (a function), else ffhq_channels(R)."""
    sides = [2 ** k for k in range(2, int(math.log2(resolution)) + 1)]
    if fmaps is None:
        return {r: ffhq_channels(r) for r in sides}
    if callable(fmaps):
        return {r: int(fmaps(r)) for r in sides}
    unknown = sorted(set(int(k) for k in fmaps) - set(sides))
    if unknown:
        raise PulseError(f"fmaps has sides {unknown} outside 4..{resolution} (powers of 2)")
    return {r: int(fmaps.get(r, fmaps.get(str(r), ffhq_channels(r)))) for r in sides}


class StyleGAN1Generator(Generator):
    """StyleGAN v1 (mapping + synthesis) in PULSE's checkpoint layout.

    State dict: the synthesis keys exactly as PULSE's synthesis.pt (`blocks.4x4.const`, ...,
    `torgb.bias`; 100 tensors at 1024 px), `mapping.dense{i}.{weight,bias}` (mapping.pt with the
    `mapping.` prefix) and buffers `w_mean`, `w_std` [D] (the Gaussian fit; 0 and 1 until filled).

    Args:
        resolution: output side, a power of 2 >= 8 (default 1024).
        fmaps:      channels per side ({R: C} dict or function R -> C); default FFHQ's widths.
        latent_dim: D (512 for the FFHQ weights).
        seed:       None: all weights zero (to be loaded). An int: seeded random weights with
                    nonzero noise strengths and biases, for tests (not a trained model).
    """

    def __init__(self, resolution: int = 1024, fmaps=None, latent_dim: int = 512, seed: int | None = None):
        super().__init__()
        if resolution < 8 or resolution & (resolution - 1):
            raise PulseError(f"stylegan1 resolution must be a power of 2 >= 8; got {resolution}")
        channels = resolve_channels(resolution, fmaps)
        sizes = layer_sizes(resolution)
        self.channels = channels
        self.spec = GeneratorSpec(name="stylegan1", resolution=resolution, latent_dim=latent_dim,
                                  num_ws=len(sizes), noise_shapes=tuple((1, s, s) for s in sizes),
                                  has_mapping=True, value_range=(-1.0, 1.0))
        # torgb before blocks: the port's registration order, so state dicts list keys as synthesis.pt does.
        self.torgb = EqualConv2d(channels[resolution], 3, 1, gain=1.0)
        blocks: dict[str, nn.Module] = {"4x4": InputBlock(channels[4], latent_dim)}
        for r in sorted(channels)[1:]:
            blocks[f"{r}x{r}"] = UpBlock(channels[r // 2], channels[r], latent_dim, fused=r >= FUSED_MIN_RESOLUTION)
        self.blocks = nn.ModuleDict(blocks)
        self.mapping = MappingNetwork(latent_dim)
        self.register_buffer("w_mean", torch.zeros(latent_dim))
        self.register_buffer("w_std", torch.ones(latent_dim))
        if seed is not None:
            self._randomize(seed)
        self.requires_grad_(False)
        self.eval()

    def synthesis(self, w: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
        """w [B, num_ws, D], noise: num_ws maps [B or 1, 1, s, s] (spec.noise_shapes) ->
        image [B, 3, R, R], nominally in [-1, 1] (unclamped)."""
        if len(noise) != self.spec.num_ws:
            raise ValueError(f"stylegan1 synthesis takes {self.spec.num_ws} noise maps, got {len(noise)}")
        x = None
        for i, block in enumerate(self.blocks.values()):
            rows, maps = w[:, 2 * i:2 * i + 2], noise[2 * i:2 * i + 2]
            x = block(rows, maps) if i == 0 else block(x, rows, maps)  # [B, C_r, r, r]
        return self.torgb(x)  # [B, 3, R, R]

    def synthesis_state_dict(self) -> dict[str, torch.Tensor]:
        """The synthesis tensors in PULSE's synthesis.pt layout (no mapping, no fit)."""
        return {k: v for k, v in self.state_dict().items()
                if not k.startswith("mapping.") and k not in ("w_mean", "w_std")}

    def load_synthesis(self, state: Mapping[str, torch.Tensor], source: str = "stylegan1 synthesis") -> None:
        """Strictly load PULSE-layout synthesis tensors (PulseError naming the first bad key)."""
        copy_strict(self.synthesis_state_dict(), state, source)

    def load_mapping(self, state: Mapping[str, torch.Tensor], source: str = "stylegan1 mapping") -> None:
        """Strictly load mapping.pt tensors (`dense{i}.weight`, `dense{i}.bias`)."""
        copy_strict(self.mapping.state_dict(), state, source)

    def _randomize(self, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in self.named_parameters():
                lrmul = MAPPING_LRMUL if name.startswith("mapping.") else 1.0
                if name.endswith("noise.weight"):
                    p.copy_(0.1 + 0.2 * torch.rand(p.shape, generator=g))
                elif name.endswith("const") or p.ndim >= 2:
                    p.copy_(torch.randn(p.shape, generator=g) / lrmul)  # NVIDIA's init: N(0, 1/lrmul)
                else:
                    p.copy_(0.1 * torch.randn(p.shape, generator=g) / lrmul)


def load_stylegan1(weights: str | Path, mapping: str | Path | None = None, *, resolution: int = 1024,
                   fmaps=None, fit_cache_dir: Path | None = None, fit_samples: int = 1_000_000,
                   fit_seed: int = 0, gaussian_fit: str | Path | None = None, device="cpu") -> StyleGAN1Generator:
    """Build a StyleGAN1Generator from checkpoint files and fill its Gaussian fit.

    Steps:
      1. Read `weights` (torch.load weights_only=True, or safetensors): PULSE's synthesis.pt, or the
         prefixed `g_synthesis.` / `g_mapping.` layout (one combined file possible; truncation
         averages and noise buffers dropped: checkpoints.split_stylegan1_state).
      2. The mapping tensors come from `mapping` (PULSE's mapping.pt, or a prefixed file) when
         given, else from the `g_mapping.` part of `weights`; none -> PulseError.
      3. Strict names and shapes against a model of `resolution` / `fmaps` with D read from the
         mapping's dense0.weight [D, D] (512 for FFHQ), PulseError naming the first missing,
         unexpected or mis-shaped key.
      4. w_mean, w_std = gaussian_fit of the mapping (fit_samples z, seed fit_seed), cached in
         fit_cache_dir, else beside the mapping weights (export.gaussian_fit.cached_gaussian_fit);
         with `gaussian_fit`, read from that file instead (PULSE's gaussian_fit.pt: mean, std [D]).
    Returns the generator on `device`, eval mode, requires_grad False.
    """
    from ..gaussian_fit import fill_gaussian_fit  # noqa: PLC0415

    weights = Path(weights)
    raw = tensors_only(load_checkpoint(weights, "stylegan1 weights"), weights, "stylegan1 weights")
    synthesis_sd, mapping_sd = split_stylegan1_state(raw)
    mapping_file = weights
    if mapping is not None:
        mapping_file = Path(mapping)
        raw_map = tensors_only(load_checkpoint(mapping_file, "stylegan1 mapping weights"), mapping_file,
                               "stylegan1 mapping weights")
        extra, mapping_sd = split_stylegan1_state(raw_map)
        if extra:
            first = next(iter(extra))
            raise PulseError(f"stylegan1 mapping weights {mapping_file}: unexpected key {first!r} "
                             "(expected dense0..dense7 weights and biases only)")
    if not mapping_sd:
        raise PulseError(f"stylegan1 needs its mapping network for the Gaussian fit: {weights} has none; "
                         "pass mapping=PATH (PULSE's mapping.pt)")
    if not synthesis_sd:
        raise PulseError(f"stylegan1 weights {weights} hold no synthesis network (blocks.*, torgb.*)")

    dense0 = mapping_sd.get("dense0.weight")
    latent_dim = int(dense0.shape[1]) if dense0 is not None and dense0.ndim == 2 else 512
    generator = StyleGAN1Generator(resolution=resolution, fmaps=fmaps, latent_dim=latent_dim)
    generator.load_synthesis(synthesis_sd, f"stylegan1 weights {weights}")
    generator.load_mapping(mapping_sd, f"stylegan1 mapping weights {mapping_file}")
    generator.to(device)
    cache_dir = Path(fit_cache_dir) if fit_cache_dir is not None else mapping_file.parent
    fill_gaussian_fit(generator, cache_dir, n=fit_samples, seed=fit_seed, fit_file=gaussian_fit)
    return generator
