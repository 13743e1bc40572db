"""stylegan1: PULSE's checkpoint layout at full size, both key layouts, strict errors, and the
forward pass against a plain functional reference written from PULSE.md (128 px, small widths,
so the fused upsampling path runs)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pulse_trt.engine.errors import PulseError
from pulse_trt.export.gaussian_fit import gaussian_fit
from pulse_trt.export.generators import load_generator, weights_sha256
from pulse_trt.export.generators.stylegan1 import StyleGAN1Generator, ffhq_channels, layer_sizes

SMALL = {4: 16, 8: 16, 16: 8, 32: 8, 64: 8, 128: 4}  # channels per side of the 128 px test model
FIT_N = 512


def pulse_synthesis_keys(resolution: int = 1024) -> list[str]:
    """PULSE's synthesis.pt key names from PULSE.md, in the port's order (torgb registered first;
    then per block its own tensors, epi1, conv, epi2)."""
    epi = [f"{k}" for k in ("noise.weight", "style_mod.lin.weight", "style_mod.lin.bias")]
    keys = ["torgb.weight", "torgb.bias", "blocks.4x4.const", "blocks.4x4.bias"]
    keys += [f"blocks.4x4.epi1.{k}" for k in epi] + ["blocks.4x4.conv.weight", "blocks.4x4.conv.bias"]
    keys += [f"blocks.4x4.epi2.{k}" for k in epi]
    r = 8
    while r <= resolution:
        b = f"blocks.{r}x{r}"
        keys += [f"{b}.conv0_up.weight", f"{b}.conv0_up.bias", f"{b}.conv0_up.intermediate.kernel"]
        keys += [f"{b}.epi1.{k}" for k in epi] + [f"{b}.conv1.weight", f"{b}.conv1.bias"]
        keys += [f"{b}.epi2.{k}" for k in epi]
        r *= 2
    return keys


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny convolutions: one intra-op thread is fastest and immune to a busy shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def small() -> StyleGAN1Generator:
    return StyleGAN1Generator(resolution=128, fmaps=SMALL, latent_dim=32, seed=3)


def _inputs(gen: StyleGAN1Generator, batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(batch, gen.spec.num_ws, gen.spec.latent_dim, generator=g)  # [B, L, D]
    noise = [torch.randn(batch, *shape, generator=g) for shape in gen.spec.noise_shapes]
    return w, noise


# --- a functional reference, independent of the module code ----------------------------------------

def _lin(x, weight, bias, gain, lrmul=1.0):
    return x @ (weight * (gain / math.sqrt(weight.shape[1]) * lrmul)).t() + bias * lrmul


def _conv(x, weight, bias, gain):
    fan_in = weight.shape[1] * weight.shape[2] * weight.shape[3]
    return F.conv2d(x, weight * (gain / math.sqrt(fan_in)), bias, padding=weight.shape[-1] // 2)


def _blur(x):
    k = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16
    return F.conv2d(x, k.expand(x.shape[1], 1, 3, 3), padding=1, groups=x.shape[1])


def _epilogue(sd, prefix, x, w_row, noise):
    x = x + noise * sd[f"{prefix}.noise.weight"].view(1, -1, 1, 1)
    x = torch.where(x >= 0, x, 0.2 * x)
    x = torch.nn.InstanceNorm2d(x.shape[1])(x)  # what PULSE's synthesis runs: no affine, eps 1e-5
    style = _lin(w_row, sd[f"{prefix}.style_mod.lin.weight"], sd[f"{prefix}.style_mod.lin.bias"], 1.0)
    ys, yb = style.chunk(2, dim=1)
    return x * (1 + ys[:, :, None, None]) + yb[:, :, None, None]


def synthesis_ref(sd, w, noise, resolution):
    """PULSE.md's synthesis on a PULSE-layout state dict. The fused upsampling (a stride-2
    transposed conv with the 4-shift-summed kernel) is computed through its equivalent: nearest 2x
    upsampling then a 3x3 convolution with the spatially flipped kernel."""
    sqrt2 = math.sqrt(2)
    b = "blocks.4x4"
    x = sd[f"{b}.const"].expand(w.shape[0], -1, -1, -1) + sd[f"{b}.bias"].view(1, -1, 1, 1)
    x = _epilogue(sd, f"{b}.epi1", x, w[:, 0], noise[0])
    x = _conv(x, sd[f"{b}.conv.weight"], sd[f"{b}.conv.bias"], sqrt2)
    x = _epilogue(sd, f"{b}.epi2", x, w[:, 1], noise[1])
    for i, r in enumerate(2 ** k for k in range(3, int(math.log2(resolution)) + 1)):
        b = f"blocks.{r}x{r}"
        weight = sd[f"{b}.conv0_up.weight"]
        if r >= 128:
            weight = weight.flip(-1, -2)
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = _blur(_conv(x, weight, None, sqrt2)) + sd[f"{b}.conv0_up.bias"].view(1, -1, 1, 1)
        x = _epilogue(sd, f"{b}.epi1", x, w[:, 2 * i + 2], noise[2 * i + 2])
        x = _conv(x, sd[f"{b}.conv1.weight"], sd[f"{b}.conv1.bias"], sqrt2)
        x = _epilogue(sd, f"{b}.epi2", x, w[:, 2 * i + 3], noise[2 * i + 3])
    return _conv(x, sd["torgb.weight"], sd["torgb.bias"], 1.0)


def mapping_ref(sd, z):
    x = z / torch.sqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
    for i in range(8):
        x = F.leaky_relu(_lin(x, sd[f"dense{i}.weight"], sd[f"dense{i}.bias"], math.sqrt(2), lrmul=0.01), 0.2)
    return x


# --- architecture -------------------------------------------------------------------------------

def test_full_size_pulse_layout():
    gen = StyleGAN1Generator(seed=0)  # 1024 px, FFHQ widths
    sd = gen.synthesis_state_dict()
    assert list(sd) == pulse_synthesis_keys(1024)
    assert len(sd) == 100
    assert sum(v.numel() for v in sd.values()) == 24_110_843  # "about 24.1M values"
    assert sd["blocks.4x4.const"].shape == (1, 512, 4, 4)
    assert sd["blocks.4x4.epi1.style_mod.lin.weight"].shape == (1024, 512)
    assert sd["blocks.64x64.conv0_up.weight"].shape == (256, 512, 3, 3)
    assert sd["blocks.1024x1024.epi2.noise.weight"].shape == (16,)
    assert sd["blocks.1024x1024.conv0_up.intermediate.kernel"].shape == (1, 1, 3, 3)
    assert sd["torgb.weight"].shape == (3, 16, 1, 1)
    m = gen.mapping.state_dict()
    assert list(m) == [f"dense{i}.{p}" for i in range(8) for p in ("weight", "bias")]
    assert all(m[f"dense{i}.weight"].shape == (512, 512) for i in range(8))
    s = gen.spec
    assert (s.resolution, s.latent_dim, s.num_ws, s.has_mapping, s.value_range) == (1024, 512, 18, True, (-1.0, 1.0))
    assert s.noise_shapes == tuple((1, 2 ** (i // 2 + 2), 2 ** (i // 2 + 2)) for i in range(18))
    assert [ffhq_channels(2 ** k) for k in range(2, 11)] == [512, 512, 512, 512, 256, 128, 64, 32, 16]


def test_layer_sizes_and_blur_kernel(small):
    assert layer_sizes(128) == [4, 4, 8, 8, 16, 16, 32, 32, 64, 64, 128, 128]
    assert small.spec.num_ws == 12
    k = small.state_dict()["blocks.8x8.conv0_up.intermediate.kernel"]
    torch.testing.assert_close(k[0, 0], torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16)
    fused = {name: block.conv0_up.fused for name, block in small.blocks.items() if name != "4x4"}
    assert fused == {"8x8": False, "16x16": False, "32x32": False, "64x64": False, "128x128": True}


def test_synthesis_matches_reference(small):
    w, noise = _inputs(small, batch=2)
    with torch.no_grad():
        out = small.synthesis(w, noise)  # [2, 3, 128, 128]
        ref = synthesis_ref(small.state_dict(), w, noise, 128)
    assert out.shape == (2, 3, 128, 128)
    assert out.std() > 0.1
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_fused_upsampling_against_direct_scatter(small):
    """The fused conv0_up on a small input equals the definition of a stride-2 transposed conv
    written as a scatter: out[o, 2i+a-1, 2j+b-1] += x[c, i, j] * K[c, o, a, b], with
    K = sum of the 4 one-pixel shifts of the padded scaled 3x3 weight (then blur and bias)."""
    conv = small.blocks["128x128"].conv0_up
    x = torch.randn(1, conv.weight.shape[1], 5, 5, generator=torch.Generator().manual_seed(1))
    w = conv.weight * conv.w_mul  # [out, in, 3, 3]
    p = F.pad(w.permute(1, 0, 2, 3), (1, 1, 1, 1))  # [in, out, 5, 5]
    kernel = sum(p[:, :, dy:dy + 4, dx:dx + 4] for dy in (0, 1) for dx in (0, 1))  # [in, out, 4, 4]
    full = torch.zeros(1, w.shape[0], 12, 12)  # 2*5 + 2 border rows/cols, cropped below
    for i in range(5):
        for j in range(5):
            full[0, :, 2 * i:2 * i + 4, 2 * j:2 * j + 4] += torch.einsum("c,coab->oab", x[0, :, i, j], kernel)
    ref = _blur(full[:, :, 1:11, 1:11]) + conv.bias.view(1, -1, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(conv(x), ref, rtol=1e-5, atol=1e-5)


def test_instance_norm_is_pulses():
    """The epilogue's norm is torch.nn.InstanceNorm2d (affine off, default eps 1e-5), as in
    PULSE's stylegan.py, not NVIDIA's eps 1e-8: with noise and styles neutral (noise weight 0,
    style 0) the epilogue is exactly InstanceNorm2d(LeakyReLU(x)). A small-variance channel tells
    the two eps apart."""
    from pulse_trt.export.generators.stylegan1 import Epilogue

    epi = Epilogue(channels=4, latent_dim=8)  # zero weights: noise * 0, style (0, 0) -> x * 1 + 0
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=g) * torch.tensor([1.0, 0.01, 3e-3, 10.0]).view(1, 4, 1, 1)
    out = epi(x, torch.randn(2, 8, generator=g), torch.randn(2, 1, 8, 8, generator=g))
    pulse = torch.nn.InstanceNorm2d(4)(F.leaky_relu(x, 0.2))
    torch.testing.assert_close(out, pulse, rtol=1e-5, atol=1e-6)
    y = F.leaky_relu(x, 0.2)
    nvidia = (y - y.mean((2, 3), keepdim=True)) * torch.rsqrt(y.var((2, 3), unbiased=False, keepdim=True) + 1e-8)
    assert (out[:, 2] - nvidia[:, 2]).abs().max() > 0.1  # channel std 3e-3: eps 1e-5 vs 1e-8 differ clearly


def test_noise_and_styles_are_used(small):
    w, noise = _inputs(small, batch=1)
    with torch.no_grad():
        base = small.synthesis(w, noise)
        other_noise = small.synthesis(w, [n.flip(-1) for n in noise])
        other_style = small.synthesis(torch.cat([w[:, :1] * 0.5, w[:, 1:]], dim=1), noise)
    assert (base - other_noise).abs().max() > 1e-3
    assert (base - other_style).abs().max() > 1e-3
    with pytest.raises(ValueError, match="12 noise maps"):
        small.synthesis(w, noise[:-1])


def test_mapping_matches_reference(small):
    z = torch.randn(5, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(small.mapping(z), mapping_ref(small.mapping.state_dict(), z), rtol=1e-5, atol=1e-6)


def test_bad_resolution():
    for r in (4, 100, 0):
        with pytest.raises(PulseError, match="power of 2 >= 8"):
            StyleGAN1Generator(resolution=r)
    with pytest.raises(PulseError, match="outside 4..64"):
        StyleGAN1Generator(resolution=64, fmaps={128: 8})


# --- checkpoints -----------------------------------------------------------------------------------

def _save_pulse_layout(gen, tmp_path):
    torch.save(gen.synthesis_state_dict(), tmp_path / "synthesis.pt")
    torch.save(gen.mapping.state_dict(), tmp_path / "mapping.pt")
    return tmp_path / "synthesis.pt", tmp_path / "mapping.pt"


def _prefixed_layout(gen) -> dict:
    """lernapparat's layout: g_mapping. / g_synthesis. prefixes, the noise layer nested in top_epi
    with a noise buffer, and the truncation average."""
    sd = {f"g_mapping.{k}": v for k, v in gen.mapping.state_dict().items()}
    sd["g_truncation.avg_latent"] = torch.zeros(gen.spec.latent_dim)
    for k, v in gen.synthesis_state_dict().items():
        if k.endswith(".noise.weight"):
            k = k.replace(".noise.weight", ".top_epi.noise.weight")
            sd[f"g_synthesis.{k[:-len('weight')]}noise"] = torch.randn(1, 1, 4, 4)
        sd[f"g_synthesis.{k}"] = v
    return sd


def _load_small(paths, tmp_path, **kw):
    mapping = paths[1] if len(paths) > 1 else None
    return load_generator("stylegan1", paths[0], mapping=mapping, resolution=128, fmaps=SMALL, fit_samples=FIT_N,
                          fit_cache_dir=tmp_path / "fit", **kw)


@pytest.mark.slow
def test_full_size_round_trip_both_layouts(tmp_path):
    gen = StyleGAN1Generator(seed=1)
    syn, mp = _save_pulse_layout(gen, tmp_path)
    loaded = load_generator("stylegan1", syn, mapping=mp, fit_samples=64, fit_cache_dir=tmp_path)
    for k, v in gen.synthesis_state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    torch.save(_prefixed_layout(gen), tmp_path / "g_all.pt")
    combined = load_generator("stylegan1", tmp_path / "g_all.pt", fit_samples=64, fit_cache_dir=tmp_path)
    assert weights_sha256(combined) == weights_sha256(loaded)


def test_round_trip_both_layouts(small, tmp_path):
    paths = _save_pulse_layout(small, tmp_path)
    a = _load_small(paths, tmp_path)
    for k, v in small.state_dict().items():
        if k not in ("w_mean", "w_std"):
            assert torch.equal(a.state_dict()[k], v), k
    assert not a.training and not any(p.requires_grad for p in a.parameters())
    # The Gaussian fit was computed from the loaded mapping and stored in the buffers.
    mean, std = gaussian_fit(small.mapping, FIT_N)
    assert torch.equal(a.w_mean, mean) and torch.equal(a.w_std, std)
    v = torch.randn(1, 12, 32)
    torch.testing.assert_close(a.map_latent(v), F.leaky_relu(v * std + mean, 0.2))

    torch.save(_prefixed_layout(small), tmp_path / "g_all.pt")
    b = _load_small([tmp_path / "g_all.pt"], tmp_path)
    assert weights_sha256(b) == weights_sha256(a)
    # The prefixed synthesis alone plus PULSE's mapping.pt works too.
    only_synthesis = {k: v for k, v in _prefixed_layout(small).items() if k.startswith("g_synthesis.")}
    torch.save(only_synthesis, tmp_path / "g_synthesis.pt")
    c = _load_small([tmp_path / "g_synthesis.pt", paths[1]], tmp_path)
    assert weights_sha256(c) == weights_sha256(a)
    w, noise = _inputs(a, batch=1)
    with torch.no_grad():
        torch.testing.assert_close(c.synthesis(w, noise), small.synthesis(w, noise), rtol=0, atol=0)


def test_fit_cached_beside_mapping_by_default(small, tmp_path):
    paths = _save_pulse_layout(small, tmp_path)
    load_generator("stylegan1", paths[0], mapping=paths[1], resolution=128, fmaps=SMALL, fit_samples=FIT_N)
    assert len(list(tmp_path.glob("gaussian_fit-*.safetensors"))) == 1


def test_pulse_gaussian_fit_file(small, tmp_path):
    """--gaussian-fit: PULSE's shipped gaussian_fit.pt (torch.save({"mean": [D], "std": [D]})) is
    used as is, nothing computed or cached; bad files are one-line errors, pickled code refused."""
    paths = _save_pulse_layout(small, tmp_path)
    d = small.spec.latent_dim
    mean, std = torch.linspace(-1, 1, d), torch.linspace(0.5, 2, d)
    torch.save({"mean": mean, "std": std}, tmp_path / "gaussian_fit.pt")
    gen = load_generator("stylegan1", paths[0], mapping=paths[1], resolution=128, fmaps=SMALL,
                         gaussian_fit=tmp_path / "gaussian_fit.pt")
    assert torch.equal(gen.w_mean, mean) and torch.equal(gen.w_std, std)
    assert not list(tmp_path.glob("gaussian_fit-*.safetensors"))  # no fit computed, none cached
    bad = {
        "no_std.pt": ({"mean": mean}, "no 'std' tensor"),
        "shape.pt": ({"mean": mean[:5], "std": std}, r"'mean' is float32 of shape \[5\], expected float \[32\]"),
        "zero.pt": ({"mean": mean, "std": std * 0}, "'std' has values <= 0"),
        "nan.pt": ({"mean": mean * float("nan"), "std": std}, "'mean' has values that are not finite"),
        "code.pt": ({"mean": mean, "std": std, "x": torch.nn.Linear(1, 1)}, "pickled code"),
    }
    for name, (obj, msg) in bad.items():
        torch.save(obj, tmp_path / name)
        with pytest.raises(PulseError, match=msg) as e:
            load_generator("stylegan1", paths[0], mapping=paths[1], resolution=128, fmaps=SMALL,
                           gaussian_fit=tmp_path / name)
        assert "\n" not in str(e.value)
    with pytest.raises(PulseError, match="Gaussian fit not found"):
        load_generator("stylegan1", paths[0], mapping=paths[1], resolution=128, fmaps=SMALL,
                       gaussian_fit=tmp_path / "nope.pt")
    with pytest.raises(PulseError, match="dcgan has no mapping network"):
        load_generator("dcgan", gaussian_fit=tmp_path / "gaussian_fit.pt")


def test_checkpoint_errors(small, tmp_path):
    syn, mp = _save_pulse_layout(small, tmp_path)
    sd = small.synthesis_state_dict()

    missing = dict(sd)
    del missing["blocks.32x32.epi2.noise.weight"]
    torch.save(missing, tmp_path / "missing.pt")
    with pytest.raises(PulseError, match=r"missing key 'blocks.32x32.epi2.noise.weight' \(expected shape \(8,\)\)"):
        _load_small([tmp_path / "missing.pt", mp], tmp_path)

    wrong = dict(sd)
    wrong["blocks.8x8.conv1.weight"] = torch.zeros(16, 16, 1, 1)
    torch.save(wrong, tmp_path / "wrong.pt")
    with pytest.raises(PulseError, match=r"'blocks.8x8.conv1.weight' has shape \(16, 16, 1, 1\), expected \(16, 16, 3, 3\)"):
        _load_small([tmp_path / "wrong.pt", mp], tmp_path)

    extra = dict(sd)
    extra["blocks.8x8.conv2.weight"] = torch.zeros(3)
    torch.save(extra, tmp_path / "extra.pt")
    with pytest.raises(PulseError, match=r"unexpected key 'blocks.8x8.conv2.weight'"):
        _load_small([tmp_path / "extra.pt", mp], tmp_path)

    # A 128 px file read as a 256 px model: the first missing block is named.
    with pytest.raises(PulseError, match=r"missing key 'blocks.256x256.conv0_up.weight'"):
        load_generator("stylegan1", syn, mapping=mp, resolution=256, fmaps=SMALL | {256: 4}, fit_samples=FIT_N,
                       fit_cache_dir=tmp_path)

    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    with pytest.raises(PulseError, match="not a readable PyTorch checkpoint"):
        _load_small([tmp_path / "notes.txt", mp], tmp_path)

    data = syn.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(PulseError, match="not a readable PyTorch checkpoint") as err:
        _load_small([tmp_path / "truncated.pt", mp], tmp_path)
    assert "\n" not in str(err.value)

    with pytest.raises(PulseError, match="needs its mapping network"):
        _load_small([syn], tmp_path)
    with pytest.raises(PulseError, match="mapping weights .*unexpected key 'torgb.weight'"):
        _load_small([syn, syn], tmp_path)
    with pytest.raises(PulseError, match="not found"):
        _load_small([tmp_path / "nope.pt", mp], tmp_path)
