"""dcgan: the embedded default generator, a 64x64 DCGAN face generator.

Weights: PyPI `gan-face-generate` 1.1.1 (MIT, Copyright (c) 2023 chien liu; trained on
DigiFace1M), vendored by scripts/vendor_dcgan_weights.py as export/weights/dcgan64_faces.safetensors.
Architecture: the PyTorch DCGAN tutorial generator (nz=100, ngf=64):

    z [B, 100, 1, 1]
    -> ConvT(100, 512, 4, 1, 0) + BN + ReLU   [B, 512, 4, 4]
    -> ConvT(512, 256, 4, 2, 1) + BN + ReLU   [B, 256, 8, 8]
    -> ConvT(256, 128, 4, 2, 1) + BN + ReLU   [B, 128, 16, 16]
    -> ConvT(128,  64, 4, 2, 1) + BN + ReLU   [B, 64, 32, 32]
    -> ConvT( 64,   3, 4, 2, 1) + Tanh        [B, 3, 64, 64] in [-1, 1]

The vendored file stores the eval-mode BatchNorms folded into the transposed convolutions
(fold_dcgan_state): ConvT(no bias) + BN(eval) == ConvT(w * s) + (beta - mean * s) with
s = gamma / sqrt(running_var + 1e-5) per output channel. The search only ever runs the
generator in eval mode, so the two are the same function; the folded form has fewer ops to
export. No mapping network, no noise inputs, one latent row (GEOCROSS is zero).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...engine.errors import PulseError
from ...engine.spec import GeneratorSpec
from .base import Generator

NZ = 100
NGF = 64
BN_EPS = 1e-5  # torch.nn.BatchNorm2d default, what the checkpoint was trained with

# (in, out, stride, padding) of the five transposed convolutions (kernel 4).
_LAYERS = ((NZ, 8 * NGF, 1, 0), (8 * NGF, 4 * NGF, 2, 1), (4 * NGF, 2 * NGF, 2, 1),
           (2 * NGF, NGF, 2, 1), (NGF, 3, 2, 1))
# Sequential indices of the tutorial generator: conv i lives at main.{3i}, its BN at main.{3i+1}.
_CONV_INDEX = (0, 3, 6, 9, 12)


class DCGANGenerator(Generator):
    """64 px DCGAN face generator with BatchNorm folded in (eval mode only).

    State: `convs.{i}.weight` [in, out, 4, 4] for i = 0..4 and `convs.{i}.bias` [out] for
    i = 0..3 (the folded BatchNorm shifts). Built with zero weights; load a state with
    load_state_dict or use load_generator("dcgan").
    """

    def __init__(self):
        super().__init__()
        self.spec = GeneratorSpec(name="dcgan", resolution=64, latent_dim=NZ, num_ws=1, noise_shapes=(),
                                  has_mapping=False, value_range=(-1.0, 1.0))
        self.convs = nn.ModuleList(
            nn.ConvTranspose2d(cin, cout, 4, stride, pad, bias=(i < len(_LAYERS) - 1))
            for i, (cin, cout, stride, pad) in enumerate(_LAYERS))
        with torch.no_grad():
            for p in self.parameters():
                p.zero_()
        self.requires_grad_(False)
        self.eval()

    def synthesis(self, w: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
        """w [B, 1, 100] (noise ignored: there is none) -> image [B, 3, 64, 64] in [-1, 1]."""
        x = w[:, 0].reshape(w.shape[0], NZ, 1, 1)  # [B, 100, 1, 1]
        for conv in self.convs[:-1]:
            x = F.relu(conv(x))  # [B, 512, 4, 4] .. [B, 64, 32, 32]
        return torch.tanh(self.convs[-1](x))  # [B, 3, 64, 64]


def fold_dcgan_state(state: dict[str, torch.Tensor], source: str = "dcgan checkpoint") -> dict[str, torch.Tensor]:
    """Fold the eval-mode BatchNorms of a tutorial DCGAN generator state into its convolutions.

    Args:
        state: the tutorial generator's state dict (`main.{0,3,6,9,12}.weight` [in, out, 4, 4];
               `main.{1,4,7,10}.{weight,bias,running_mean,running_var,num_batches_tracked}`).
               Keys `module.main.*` (DataParallel) are accepted too.
        source: names the file in error messages.
    Returns:
        {"convs.{i}.weight": [in, out, 4, 4], "convs.{i}.bias": [out] (i < 4)}, float32, where
        for each BN (gamma, beta, mean, var): s = gamma / sqrt(var + 1e-5) [out],
        weight = conv_weight * s[None, :, None, None], bias = beta - mean * s.
        The folding is done in float64 and rounded once to float32.
    """
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    expected = {}
    for i, (cin, cout, _, _) in enumerate(_LAYERS):
        expected[f"main.{_CONV_INDEX[i]}.weight"] = (cin, cout, 4, 4)
        if i < len(_LAYERS) - 1:
            for name in ("weight", "bias", "running_mean", "running_var"):
                expected[f"main.{_CONV_INDEX[i] + 1}.{name}"] = (cout,)
    for key, shape in expected.items():
        if key not in state:
            raise PulseError(f"{source}: missing key {key!r} (expected shape {shape}); not a 64 px DCGAN generator")
        if tuple(state[key].shape) != shape:
            raise PulseError(f"{source}: key {key!r} has shape {tuple(state[key].shape)}, expected {shape}")
    for key in state:
        if key not in expected and not key.endswith(".num_batches_tracked"):
            raise PulseError(f"{source}: unexpected key {key!r}; not a 64 px DCGAN generator")
    folded = {}
    for i in range(len(_LAYERS)):
        c = _CONV_INDEX[i]
        weight = state[f"main.{c}.weight"].double()  # [in, out, 4, 4]
        if i == len(_LAYERS) - 1:
            folded[f"convs.{i}.weight"] = weight.float()
            continue
        gamma, beta = state[f"main.{c + 1}.weight"].double(), state[f"main.{c + 1}.bias"].double()
        mean, var = state[f"main.{c + 1}.running_mean"].double(), state[f"main.{c + 1}.running_var"].double()
        scale = gamma / torch.sqrt(var + BN_EPS)  # [out]
        folded[f"convs.{i}.weight"] = (weight * scale.view(1, -1, 1, 1)).float().contiguous()
        folded[f"convs.{i}.bias"] = (beta - mean * scale).float().contiguous()
    return folded


def dcgan_state_from_checkpoint(obj: dict, source: str) -> dict[str, torch.Tensor]:
    """The folded state from any of: a folded state (`convs.*`, e.g. the vendored safetensors),
    the gan-face-generate checkpoint ({"netG_state_dict": ...}) or a bare tutorial state
    (`main.*`)."""
    if "netG_state_dict" in obj:
        obj = obj["netG_state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PulseError(f"{source}: not a DCGAN generator state dict")
    if any(k.startswith(("main.", "module.main.")) for k in obj):
        return fold_dcgan_state(obj, source)
    return dict(obj)
