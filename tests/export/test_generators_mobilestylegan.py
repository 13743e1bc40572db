"""mobilestylegan: the PyTorch model against its IR's computation, the IR reader and converter,
and the generator contract (spec, export, verification) on random weights; no download.

The real weights (the pinned random-face wheel, fetched once per run) are compared with
OpenVINO's execution of the same IR in test_mobilestylegan_real.py.
"""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from mobilestylegan_ir_writer import write_ir_pair  # noqa: E402
from pulse_trt.engine.errors import PulseError  # noqa: E402
from pulse_trt.export.generators import GENERATORS, load_generator  # noqa: E402
from pulse_trt.export.generators.mobilestylegan import (  # noqa: E402
    MobileStyleGANGenerator, inverse_haar, num_ws, resolution_of)
from pulse_trt.export.generators.mobilestylegan_ir import CHANNELS, expected_shapes, state_from_ir  # noqa: E402

SMALL = (16, 16, 8)  # 32 px, 8 style rows


@pytest.fixture(scope="module")
def full():
    """Random weights in the exact 1024 px layout (not a trained model)."""
    return MobileStyleGANGenerator(seed=0)


@pytest.fixture(scope="module")
def ir_dir(full, tmp_path_factory):
    """Those weights written as an IR pair in the wheel's layout."""
    state = {k: v.numpy() for k, v in full.weights_state_dict().items()}
    return write_ir_pair(state, tmp_path_factory.mktemp("ir"))


def haar_ir_ref(x: torch.Tensor) -> torch.Tensor:
    """The IR's inverse DWT, op for op: depthwise stride-2 transposed convs with 2-tap Haar filters
    along rows (ll with (a, a), band 0 with (a, -a); bands 1, 2 likewise), then along columns,
    low part with (a, a), high part with (a, -a); the two summed."""
    b, c4, h, w = x.shape
    c = c4 // 4
    a = 1 / math.sqrt(2)
    ll, high = x[:, :c], x[:, c:].reshape(b, c, 3, h, w)
    lo_f, hi_f = torch.tensor([a, a], dtype=x.dtype), torch.tensor([a, -a], dtype=x.dtype)

    def tconv(t, taps, rows):
        k = taps.reshape(1, 1, 2, 1) if rows else taps.reshape(1, 1, 1, 2)
        return F.conv_transpose2d(t, k.expand(c, 1, *k.shape[2:]), stride=(2, 1) if rows else (1, 2), groups=c)

    lo = tconv(tconv(ll, lo_f, True) + tconv(high[:, :, 0], hi_f, True), lo_f, False)
    hi = tconv(tconv(high[:, :, 1], lo_f, True) + tconv(high[:, :, 2], hi_f, True), hi_f, False)
    return lo + hi


def test_registered_and_shaped(full):
    assert "mobilestylegan" in GENERATORS
    s = full.spec
    assert (s.resolution, s.latent_dim, s.num_ws, s.noise_shapes, s.has_mapping) == (1024, 512, 23, (), True)
    assert num_ws(SMALL) == 8 and resolution_of(SMALL) == 32
    got = {k: tuple(v.shape) for k, v in full.weights_state_dict().items()}
    assert got == expected_shapes()
    assert sum(math.prod(v) for v in got.values()) == 10_106_652  # the wheel's tensors, value for value


def test_inverse_haar_is_the_irs_transposed_convs():
    x = torch.randn(2, 4 * 5, 6, 7, dtype=torch.float64)
    torch.testing.assert_close(inverse_haar(x), haar_ir_ref(x), rtol=1e-12, atol=1e-12)


def test_w_plus_rows_each_drive_one_layer():
    g = MobileStyleGANGenerator(seed=1, channels=SMALL)
    w = g.mapping(torch.randn(1, 512, generator=torch.Generator().manual_seed(0)))  # [1, 512]
    tiled = w[:, None].expand(1, g.spec.num_ws, 512)
    base = g.synthesis(tiled, [])
    torch.testing.assert_close(g.image01(w[:, None], []), (base + 1) / 2)  # one row tiled == the IR's single style
    for row in range(g.spec.num_ws):
        moved = tiled.clone()
        moved[:, row] += 0.5
        assert not torch.allclose(g.synthesis(moved, []), base), f"row {row} unused"
    with pytest.raises(ValueError):
        g.synthesis(tiled, [torch.zeros(1, 1, 4, 4)])


def test_gaussian_fit_inverts_the_last_activation():
    """PULSE's fit is taken on LeakyReLU_5(w); the mapping ends in sqrt(2) * LeakyReLU_0.2, so
    map_latent((LeakyReLU_5(w) - mean) / std) must give w back."""
    g = MobileStyleGANGenerator(seed=2, channels=SMALL)
    w = g.mapping(torch.randn(64, 512, generator=torch.Generator().manual_seed(1)))  # [64, 512]
    u = F.leaky_relu(w, 5.0)
    g.w_mean.copy_(u.mean(0))
    g.w_std.copy_(u.std(0))
    v = ((u - g.w_mean) / g.w_std)[:, None]  # [64, 1, 512]
    torch.testing.assert_close(g.map_latent(v)[:, 0], w, rtol=1e-5, atol=1e-5)


def test_random_weights_ir_round_trip(full, ir_dir):
    state = state_from_ir(ir_dir / "MappingNetwork.xml", ir_dir / "SynthesisNetwork.xml")
    assert list(state) == list(expected_shapes())
    for k, v in full.weights_state_dict().items():
        assert np.array_equal(state[k], v.numpy()), k


@pytest.mark.slow
def test_random_weights_ir_matches_openvino(full, ir_dir):
    """Our model against OpenVINO running the written IR (same weights, f32): mapping and 1024
    image within 1e-4 relative."""
    ov = pytest.importorskip("openvino", reason="openvino (a dev-extra test dependency) is not installed")
    core, cfg = ov.Core(), {"INFERENCE_PRECISION_HINT": "f32"}
    mapping = core.compile_model(core.read_model(str(ir_dir / "MappingNetwork.xml")), "CPU", cfg)
    synthesis = core.compile_model(core.read_model(str(ir_dir / "SynthesisNetwork.xml")), "CPU", cfg)
    z = np.random.default_rng(3).standard_normal((1, 512)).astype(np.float32)
    w_ov = mapping(z)[0]
    with torch.no_grad():
        w_pt = full.mapping(torch.from_numpy(z)).numpy()
        img_pt = full.synthesis(torch.from_numpy(w_ov)[:, None].expand(1, 23, 512), []).numpy()
    img_ov = synthesis(w_ov)[0]
    assert np.linalg.norm(w_pt - w_ov) / np.linalg.norm(w_ov) <= 1e-4
    assert img_ov.shape == (1, 3, 1024, 1024)
    assert np.linalg.norm(img_pt - img_ov) / np.linalg.norm(img_ov) <= 1e-4


def _one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


@pytest.mark.slow
def test_ir_of_another_model_is_refused(ir_dir, tmp_path):
    m, s = ir_dir / "MappingNetwork.xml", ir_dir / "SynthesisNetwork.xml"
    with pytest.raises(PulseError) as e:  # the networks swapped
        state_from_ir(s, m)
    assert "another model" in _one_line(e)
    text = s.read_text()
    for name, edit in (("slope", lambda t: t), ("names", lambda t: t.replace("m.layers.3.conv1.conv.weight_dw", "features.9"))):
        if name == "slope":  # a LeakyReLU slope of 0.1 instead of 0.2
            blob = bytearray((ir_dir / "SynthesisNetwork.bin").read_bytes())
            f02 = np.float32(0.2).tobytes()
            blob = blob.replace(f02, np.float32(0.1).tobytes())
            (tmp_path / "SynthesisNetwork.bin").write_bytes(bytes(blob))
        else:
            (tmp_path / "SynthesisNetwork.bin").write_bytes((ir_dir / "SynthesisNetwork.bin").read_bytes())
        (tmp_path / "SynthesisNetwork.xml").write_text(edit(text))
        with pytest.raises(PulseError) as e:
            state_from_ir(m, tmp_path / "SynthesisNetwork.xml")
        assert re.search(r"another model|slope", _one_line(e)), name


def test_truncated_or_malformed_ir_is_refused(ir_dir, tmp_path):
    (tmp_path / "SynthesisNetwork.xml").write_text((ir_dir / "SynthesisNetwork.xml").read_text())
    (tmp_path / "SynthesisNetwork.bin").write_bytes((ir_dir / "SynthesisNetwork.bin").read_bytes()[:1 << 20])
    with pytest.raises(PulseError) as e:
        state_from_ir(ir_dir / "MappingNetwork.xml", tmp_path / "SynthesisNetwork.xml")
    assert "truncated" in _one_line(e)
    (tmp_path / "SynthesisNetwork.xml").write_text("<net><layers>")
    with pytest.raises(PulseError) as e:
        state_from_ir(ir_dir / "MappingNetwork.xml", tmp_path / "SynthesisNetwork.xml")
    assert "not a readable OpenVINO IR" in _one_line(e)


def test_load_generator_needs_the_converted_file(tmp_path, full):
    from safetensors.torch import save_file  # noqa: PLC0415

    with pytest.raises(PulseError, match="safetensors"):
        load_generator("mobilestylegan")
    with pytest.raises(PulseError, match="1024"):
        load_generator("mobilestylegan", tmp_path / "x.safetensors", resolution=512)
    path = tmp_path / "w.safetensors"
    state = {k: v.contiguous() for k, v in full.weights_state_dict().items()}
    save_file(state, str(path))
    g = load_generator("mobilestylegan", path, fit_samples=256, fit_cache_dir=tmp_path)
    assert g.w_std.min() > 0 and torch.equal(g.to_img.weight, full.to_img.weight)
    state.pop("to_img.bias")
    save_file(state, str(path))
    with pytest.raises(PulseError, match="missing key 'to_img.bias'"):
        load_generator("mobilestylegan", path, fit_samples=256, fit_cache_dir=tmp_path)


@pytest.mark.slow
def test_small_model_exports_and_verifies(tmp_path):
    """The generator contract end to end on a 32 px model: step and render graphs exported with
    dynamic batch, onnx.checker, ONNX Runtime vs torch at batch 1 and 3 (1e-4), TensorRT ops."""
    from pulse_trt.engine.manifest import load_manifest  # noqa: PLC0415
    from pulse_trt.engine.options import PulseOptions  # noqa: PLC0415
    from pulse_trt.export.onnx_export import export_artifacts  # noqa: PLC0415

    g = MobileStyleGANGenerator(seed=3, channels=SMALL, latent_dim=32)
    out = export_artifacts(g, PulseOptions(steps=5), 8, tmp_path / "art", progress=False)
    m = load_manifest(out)
    assert m.spec.name == "mobilestylegan" and m.spec.num_ws == 8 and m.raw["noise_roles"] == []
    worst = m.raw["verification"]["step"]["worst"]
    assert max(worst.values()) <= 1e-4
    import onnx  # noqa: PLC0415

    ops = {n.op_type for n in onnx.load(str(out / "step.onnx"), load_external_data=False).graph.node}
    assert "DepthToSpace" in ops  # the inverse DWT's interleave
    convt = [n for n in onnx.load(str(out / "step.onnx"), load_external_data=False).graph.node if n.op_type == "ConvTranspose"]
    assert len(convt) <= 2  # stride-1 conv gradients are Convs; only the bicubic downscale's adjoint (rows, columns) is strided
