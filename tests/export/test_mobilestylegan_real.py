"""MobileStyleGAN's real weights (the pinned random-face wheel, fetched once per run by the
`mobilestylegan_wheel` fixture): converted with numpy only, then our PyTorch networks against
OpenVINO's execution of the wheel's own IR on several latents (f32): relative error <= 1e-4 on the
mapped styles and on the 1024 image."""
from __future__ import annotations

import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pulse_trt.export.checkpoints import copy_strict  # noqa: E402
from pulse_trt.export.generators.mobilestylegan import MobileStyleGANGenerator  # noqa: E402
from pulse_trt.weights import WHEEL_DATA, WHEEL_SHA256, provenance, resolve_weights, sha256_file  # noqa: E402


@pytest.fixture(scope="module")
def converted(mobilestylegan_wheel, tmp_path_factory):
    return resolve_weights("mobilestylegan", mobilestylegan_wheel, cache_dir=tmp_path_factory.mktemp("weights"))


def test_wheel_is_the_pinned_one_and_converts(mobilestylegan_wheel, converted):
    assert sha256_file(mobilestylegan_wheel) == WHEEL_SHA256
    rec = provenance(converted)
    assert rec["source"]["wheel_sha256"] == WHEEL_SHA256 and rec["values"] == 10_106_652
    assert "non-commercial" in rec["license"]
    assert rec["weights_sha256"] == sha256_file(converted)


@pytest.mark.slow
def test_real_networks_match_openvino(mobilestylegan_wheel, converted, tmp_path):
    ov = pytest.importorskip("openvino", reason="openvino (a dev-extra test dependency) is not installed")
    from safetensors.torch import load_file  # noqa: PLC0415

    with zipfile.ZipFile(mobilestylegan_wheel) as z:
        for name in ("MappingNetwork", "SynthesisNetwork"):
            for ext in (".xml", ".bin"):
                (tmp_path / f"{name}{ext}").write_bytes(z.read(f"{WHEEL_DATA}{name}{ext}"))
    g = MobileStyleGANGenerator()
    copy_strict(g.weights_state_dict(), load_file(str(converted)), "converted")
    core, cfg = ov.Core(), {"INFERENCE_PRECISION_HINT": "f32"}
    mapping = core.compile_model(core.read_model(str(tmp_path / "MappingNetwork.xml")), "CPU", cfg)
    synthesis = core.compile_model(core.read_model(str(tmp_path / "SynthesisNetwork.xml")), "CPU", cfg)
    rng = np.random.default_rng(2021)
    for k in range(3):
        z = rng.standard_normal((1, 512)).astype(np.float32)
        w_ov = mapping(z)[0]
        img_ov = synthesis(w_ov)[0]
        with torch.no_grad():
            w_pt = g.mapping(torch.from_numpy(z)).numpy()
            img_pt = g.synthesis(torch.from_numpy(w_ov)[:, None].expand(1, 23, 512), []).numpy()
        err_w = np.linalg.norm(w_pt - w_ov) / np.linalg.norm(w_ov)
        err_img = np.linalg.norm(img_pt - img_ov) / np.linalg.norm(img_ov)
        print(f"latent {k}: mapping {err_w:.2e}, image {err_img:.2e}")
        assert err_w <= 1e-4 and err_img <= 1e-4
        assert 0.2 < img_ov.std() < 1.0  # a real face image in about [-1, 1], not a degenerate output


def test_truncated_real_wheel_is_refused(mobilestylegan_wheel, tmp_path):
    from pulse_trt.engine.errors import PulseError  # noqa: PLC0415

    cut = tmp_path / mobilestylegan_wheel.name
    cut.write_bytes(mobilestylegan_wheel.read_bytes()[: 20 << 20])
    cache = tmp_path / "weights"
    with pytest.raises(PulseError, match="truncated, corrupt or another file"):
        resolve_weights("mobilestylegan", cut, cache_dir=cache)
    assert not cache.exists() or not any(cache.rglob("*.safetensors"))
