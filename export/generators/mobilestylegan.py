"""mobilestylegan: MobileStyleGAN 1024 (Belousov 2021), a StyleGAN2-FFHQ distilled into a
depthwise-separable, wavelet-domain generator, as its OpenVINO IR computes it.

Written from the IR's graph (export/generators/mobilestylegan_ir.py reads the weights) and the
public description of the architecture (bes-dev/MobileStyleGAN.pytorch):

  mapping   z [N, 512] -> pixel norm (eps 1e-8) -> 8 x (dense, LeakyReLU 0.2, * sqrt 2) -> w [N, 512]
  synthesis w [B, 23, 512] (W+: one row per modulated layer, below) -> image [B, 3, 1024, 1024]:
    row 0   4x4:  x = const * s0; 3x3 conv 512 -> 512; + noise; + bias; LeakyReLU 0.2
    block i = 0..6 (side 8 << i), rows 1+3i, 2+3i, 3+3i:
            up:     x = x * s (no scale); x [B, C, h, h] -> inverse Haar DWT of (low = x[:, :C/4],
                    high = x[:, C/4:] as 3 bands) -> [B, C/4, 2h, 2h]
            conv1:  x = x * s / sqrt(9 Cin); depthwise 3x3; pointwise 1x1 (Cin -> Cout, the
                    demodulation folded in); + noise; + bias; LeakyReLU 0.2
            conv2:  the same, Cout -> Cout
    row 22  to_img: x * s / sqrt(64); 1x1 conv 64 -> 12; + bias; inverse Haar DWT of the 12
            channels (3 low + 3x3 high) -> [B, 3, 1024, 1024], about [-1, 1]
  with s = dense(w_row) per layer (modulation weight [Cin, 512] and bias [Cin]). Channels 512 at
  4..64 px, then 256, 128, 64 at 128, 256, 512 px (the last blocks' input side); the image is
  the inverse DWT of a 512 px 12-channel wavelet image.

Noise: the IR has no noise input. Each layer's noise (a fixed map times its learnt strength) is a
constant [1, 1, H, W] of the weights (`*.noise`), so PULSE's noise options do not apply to this
generator. With one style row tiled to all 23 the synthesis equals the IR's (tested against
OpenVINO); distinct rows are PULSE's W+ setting.

Gaussian fit: the mapping's last activation is sqrt(2) * LeakyReLU_0.2(a) = LeakyReLU_0.2(sqrt(2) a),
so LeakyReLU_5(w) = sqrt(2) a undoes it as PULSE's recipe expects and
w = LeakyReLU_0.2(v * std + mean) stays exact.

Weights: NVIDIA's StyleGAN2-FFHQ, from which MobileStyleGAN was distilled, is licensed for
non-commercial use only (NVIDIA Source Code License-NC); the MobileStyleGAN networks inherit that.
They are fetched on request (pulse_trt/weights.py), never shipped with this package.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...engine.errors import PulseError
from ...engine.spec import GeneratorSpec
from ..checkpoints import copy_strict, load_checkpoint, tensors_only
from .base import Generator
from .mobilestylegan_ir import CHANNELS, LATENT_DIM, MAPPING_LAYERS, SLOPE, expected_shapes, modulation_scale

RESOLUTION = 1024


def num_ws(channels=CHANNELS) -> int:
    """Modulated layers, one W+ row each: the 4x4 conv, 3 per block, the to-wavelet conv (23)."""
    return 3 * (len(channels) - 1) + 2


def resolution_of(channels=CHANNELS) -> int:
    """Image side: 4 px doubled by each block, doubled again by the final inverse DWT (1024)."""
    return 4 << len(channels)


NUM_WS = num_ws()
SQRT2 = math.sqrt(2.0)
PIXEL_NORM_EPS = 1e-8
LICENSE_NOTE = ("MobileStyleGAN is distilled from NVIDIA's StyleGAN2-FFHQ, whose weights are licensed for "
                "non-commercial use only (NVIDIA Source Code License-NC)")


def inverse_haar(x: torch.Tensor) -> torch.Tensor:
    """Inverse one-level Haar DWT (pytorch_wavelets' DWTInverse, wave db1, mode zero) of
    x [B, 4C, H, W] = (low [B, C], high bands LH, HL, HH [B, C, 3] flattened) -> [B, C, 2H, 2W].

    With a = 1/sqrt(2) taps, out[2i+r, 2j+c] = (ll + s_r h0 + s_c h1 + s_r s_c h2) / 2 with
    s_0 = +1, s_1 = -1: the four phases computed as sums, then interleaved (a pixel shuffle), which
    exports as elementwise ops + DepthToSpace instead of six strided transposed convolutions.
    """
    return _interleave_phases(x * 0.5)


def _interleave_phases(x: torch.Tensor) -> torch.Tensor:
    """inverse_haar without its final factor 1/2 (exact to fold into a preceding scale: a power
    of two): x [B, 4C, H, W] = (ll, bands) -> [B, C, 2H, 2W]."""
    b, c4, h, w = x.shape
    c = c4 // 4
    ll = x[:, :c]  # [B, C, H, W]
    high = x[:, c:].reshape(b, c, 3, h, w)
    h0, h1, h2 = high[:, :, 0], high[:, :, 1], high[:, :, 2]  # [B, C, H, W] each
    a, d = ll + h0, ll - h0
    e, f = h1 + h2, h1 - h2
    phases = torch.stack((a + e, a - e, d + f, d - f), dim=2)  # [B, C, 4 (r, c), H, W]
    return F.pixel_shuffle(phases.reshape(b, 4 * c, h, w), 2)  # [B, C, 2H, 2W]


class Modulation(nn.Module):
    """s = (w_row @ weight^T + bias) * scale -> [B, C, 1, 1]; scale None: no scaling."""

    def __init__(self, channels: int, latent_dim: int, scale: float | None):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels, latent_dim))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.scale = scale

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        s = F.linear(w, self.weight, self.bias)  # [B, C]
        if self.scale is not None:
            s = s * self.scale
        return s[:, :, None, None]


class StyledConv(nn.Module):
    """The 4x4 layer: modulated input, dense 3x3 conv, + noise + bias, LeakyReLU 0.2."""

    def __init__(self, channels: int, latent_dim: int):
        super().__init__()
        self.modulation = Modulation(channels, latent_dim, 1.0 / math.sqrt(channels * 9))
        self.weight = nn.Parameter(torch.zeros(channels, channels, 3, 3))
        self.register_buffer("noise", torch.zeros(1, 1, 4, 4))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x * self.modulation(w), self.weight, self.bias, padding=1)  # [B, C, 4, 4]
        return F.leaky_relu(x + self.noise, SLOPE)


class StyledDWConv(nn.Module):
    """Block conv: modulated input, depthwise 3x3, pointwise 1x1, + noise + bias, LeakyReLU 0.2."""

    def __init__(self, cin: int, cout: int, side: int, latent_dim: int):
        super().__init__()
        self.modulation = Modulation(cin, latent_dim, 1.0 / math.sqrt(cin * 9))
        self.weight_dw = nn.Parameter(torch.zeros(cin, 1, 3, 3))
        self.weight_pw = nn.Parameter(torch.zeros(cout, cin, 1, 1))
        self.register_buffer("noise", torch.zeros(1, 1, side, side))
        self.bias = nn.Parameter(torch.zeros(cout))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = x * self.modulation(w)  # [B, Cin, H, W]
        x = F.conv2d(x, self.weight_dw, padding=1, groups=x.shape[1])  # [B, Cin, H, W]
        x = F.conv2d(x, self.weight_pw, self.bias)  # [B, Cout, H, W]; the bias inside the Conv: one pass less
        return F.leaky_relu(x + self.noise, SLOPE)


class UpModulation(nn.Module):
    """Modulated inverse-DWT upsample: [B, C, h, h] -> [B, C/4, 2h, 2h]. The inverse DWT's 1/2
    rides on the [B, C, 1, 1] modulation (exact: a power of two) instead of a full-size pass."""

    def __init__(self, channels: int, latent_dim: int):
        super().__init__()
        self.modulation = Modulation(channels, latent_dim, None)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return _interleave_phases(x * (self.modulation(w) * 0.5))


class SynthesisBlock(nn.Module):
    """up (row 0), conv1 (row 1), conv2 (row 2) at side `side`."""

    def __init__(self, cin: int, cout: int, side: int, latent_dim: int):
        super().__init__()
        self.up = UpModulation(cin, latent_dim)
        self.conv1 = StyledDWConv(cin // 4, cout, side, latent_dim)
        self.conv2 = StyledDWConv(cout, cout, side, latent_dim)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x [B, Cin, side/2, side/2], w [B, 3, D] -> [B, Cout, side, side]."""
        x = self.up(x, w[:, 0])
        return self.conv2(self.conv1(x, w[:, 1]), w[:, 2])


class ToWavelet(nn.Module):
    """Modulated 1x1 conv to the 12-channel wavelet image, + bias."""

    def __init__(self, cin: int, latent_dim: int):
        super().__init__()
        self.modulation = Modulation(cin, latent_dim, 1.0 / math.sqrt(cin))
        self.weight = nn.Parameter(torch.zeros(12, cin, 1, 1))
        self.bias = nn.Parameter(torch.zeros(12))

    def forward(self, x: torch.Tensor, w: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        """gain: a power of two folded into the (constant) weight and bias, e.g. the inverse DWT's 1/2."""
        return F.conv2d(x * self.modulation(w), self.weight * gain, self.bias * gain)  # [B, 12, H, W]


class Input(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.const = nn.Parameter(torch.zeros(1, channels, 4, 4))


class MappingNetwork(nn.Module):
    """z [N, D] -> w [N, D]: pixel norm, then dense{i} (x @ W^T + b), LeakyReLU 0.2, * sqrt 2."""

    def __init__(self, latent_dim: int = LATENT_DIM, layers: int = MAPPING_LAYERS):
        super().__init__()
        self.latent_dim = latent_dim
        self.num_layers = layers
        for i in range(layers):
            self.add_module(f"dense{i}", nn.Linear(latent_dim, latent_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + PIXEL_NORM_EPS)  # [N, D]
        for i in range(self.num_layers):
            x = F.leaky_relu(getattr(self, f"dense{i}")(x), SLOPE) * SQRT2  # [N, D]
        return x


class MobileStyleGANGenerator(Generator):
    """MobileStyleGAN (mapping + synthesis), state in the layout of
    mobilestylegan_ir.expected_shapes() plus the Gaussian-fit buffers `w_mean`, `w_std` [D].

    Args:
        seed:       None: zero weights (to be loaded). An int: seeded random weights of the exact
                    layout, scaled so activations stay O(1) (tests; not a trained model).
        channels:   channels at side 4, then after each block (default MobileStyleGAN 1024's;
                    each a multiple of 4). Smaller tuples make small test models: the image side
                    is 4 << len(channels).
        latent_dim: D (512 for the real weights).
    """

    def __init__(self, seed: int | None = None, channels=CHANNELS, latent_dim: int = LATENT_DIM):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if len(channels) < 2 or any(c % 4 for c in channels):
            raise PulseError(f"mobilestylegan channels must be >= 2 multiples of 4, got {channels}")
        d = latent_dim
        self.channels = channels
        self.spec = GeneratorSpec(name="mobilestylegan", resolution=resolution_of(channels), latent_dim=d,
                                  num_ws=num_ws(channels), noise_shapes=(), has_mapping=True, value_range=(-1.0, 1.0))
        self.mapping = MappingNetwork(d)
        self.input = Input(channels[0])
        self.conv1 = StyledConv(channels[0], d)
        self.layers = nn.ModuleList(SynthesisBlock(cin, cout, 8 << i, d)
                                    for i, (cin, cout) in enumerate(zip(channels[:-1], channels[1:])))
        self.to_img = ToWavelet(channels[-1], d)
        self.register_buffer("w_mean", torch.zeros(d))
        self.register_buffer("w_std", torch.ones(d))
        shapes = expected_shapes(channels, d)
        for name, module in self.named_modules():
            if isinstance(module, Modulation):
                want = modulation_scale(f"{name}.weight", shapes)
                assert want is None if module.scale is None else math.isclose(module.scale, want), name
        if seed is not None:
            self._randomize(seed)
        self.requires_grad_(False)
        self.eval()

    def synthesis(self, w: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
        """w [B, 23, D] -> image [B, 3, 1024, 1024], about [-1, 1] (unclamped). No noise inputs.
        (Smaller `channels`: w [B, num_ws, D] -> [B, 3, R, R].)"""
        if noise:
            raise ValueError(f"mobilestylegan has no noise inputs, got {len(noise)} maps")
        x = self.input.const.expand(w.shape[0], -1, -1, -1)  # [B, 512, 4, 4]
        x = self.conv1(x, w[:, 0])
        for i, block in enumerate(self.layers):
            x = block(x, w[:, 1 + 3 * i:4 + 3 * i])  # [B, C_i, 8 << i, 8 << i]
        return _interleave_phases(self.to_img(x, w[:, self.spec.num_ws - 1], 0.5))  # [B, 3, 1024, 1024]

    def weights_state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor but the Gaussian fit: the converted file's layout."""
        return {k: v for k, v in self.state_dict().items() if k not in ("w_mean", "w_std")}

    def _randomize(self, seed: int) -> None:
        """Random weights whose activations stay O(1) layer after layer: each modulation is about
        1 +- 0.3 times its fixed 1/sqrt(fan-in) scale, so conv weights are N(0, gain^2) with
        no fan-in division (sqrt 2 before a LeakyReLU); mapping layers N(0, 1/D)."""
        g = torch.Generator().manual_seed(seed)
        d = self.spec.latent_dim
        with torch.no_grad():
            for name, t in self.state_dict().items():
                if name in ("w_mean", "w_std"):
                    continue
                r = torch.randn(t.shape, generator=g)
                if name.startswith("mapping.") and name.endswith("weight"):
                    value = r / math.sqrt(d)
                elif name.endswith("modulation.weight"):
                    value = 0.3 * r / math.sqrt(d)
                elif name.endswith("modulation.bias"):
                    value = 1.0 + 0.1 * r  # MobileStyleGAN initialises modulation biases at 1
                elif name.endswith(".noise"):
                    value = 0.05 * r
                elif name.endswith("weight_dw") or name == "input.const" or name == "to_img.weight":
                    value = r
                elif name.endswith(("weight_pw", "conv1.weight")):
                    value = SQRT2 * r
                else:  # biases
                    value = 0.1 * r
                t.copy_(value)


def load_mobilestylegan(weights: str | Path, *, fit_cache_dir: Path | None = None, fit_samples: int = 1_000_000,
                        fit_seed: int = 0, gaussian_fit: str | Path | None = None,
                        device="cpu") -> MobileStyleGANGenerator:
    """MobileStyleGAN from our converted safetensors file (pulse_trt/weights.py writes it), strict
    names and shapes, with its Gaussian fit (cached in fit_cache_dir, default beside the file)."""
    from ..gaussian_fit import fill_gaussian_fit  # noqa: PLC0415

    weights = Path(weights)
    state = tensors_only(load_checkpoint(weights, "mobilestylegan weights"), weights, "mobilestylegan weights")
    generator = MobileStyleGANGenerator()
    copy_strict(generator.weights_state_dict(), state, f"mobilestylegan weights {weights}")
    generator.to(device)
    cache_dir = Path(fit_cache_dir) if fit_cache_dir is not None else weights.parent
    fill_gaussian_fit(generator, cache_dir, n=fit_samples, seed=fit_seed, fit_file=gaussian_fit)
    return generator


def state_tensors(state_np: dict) -> dict[str, torch.Tensor]:
    """numpy state (mobilestylegan_ir.state_from_ir) -> torch tensors."""
    if not state_np:
        raise PulseError("empty mobilestylegan state")
    return {k: torch.from_numpy(v.copy()) for k, v in state_np.items()}
