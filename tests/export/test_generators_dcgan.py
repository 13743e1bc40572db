"""The embedded dcgan: vendored file provenance, face-like output, equality with the original
(unfolded) checkpoint, registry errors."""
from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import nn

from pulse_trt.engine.errors import PulseError
from pulse_trt.export.checkpoints import file_sha256, state_sha256
from pulse_trt.export.generators import GENERATORS, embedded_weights, load_generator, weights_sha256
from pulse_trt.export.generators.dcgan import fold_dcgan_state

REPO = Path(__file__).resolve().parents[2]
WEIGHTS_DIR = REPO / "export" / "weights"


def _vendor_script():
    spec = importlib.util.spec_from_file_location("vendor_dcgan_weights", REPO / "scripts" / "vendor_dcgan_weights.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


@pytest.fixture(scope="session")
def gfg_wheel(request, tmp_path_factory) -> Path:
    """The pinned original wheel gan-face-generate 1.1.1 (13 MB), fetched once with the vendor
    script's own `pip download` into pytest's cache (.pytest_cache/d/gan-face-generate) and checked
    against its pinned sha256. Skips only when the package index cannot be reached."""
    script = _vendor_script()
    cache = getattr(request.config, "cache", None)  # None with -p no:cacheprovider
    folder = Path(cache.mkdir("gan-face-generate")) if cache is not None else tmp_path_factory.mktemp("gan-face-generate")
    wheel = folder / script.WHEEL_NAME
    if not wheel.is_file():
        try:
            script.download_wheel(folder)
        except (subprocess.CalledProcessError, SystemExit, OSError) as e:
            pytest.skip(f"pip download {script.PACKAGE}=={script.VERSION} failed (no package index?): {e}")
    assert file_sha256(wheel) == script.WHEEL_SHA256, f"{wheel} is not the pinned wheel"
    return wheel


def _z(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 1, 100, generator=torch.Generator().manual_seed(seed))  # [n, 1, 100]


def _original_tutorial_generator(wheel: Path) -> nn.Sequential:
    """The PyTorch DCGAN tutorial generator, unfolded, with the wheel's own weights."""
    ngf, nz = 64, 100
    net = nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(),
        nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(),
        nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(),
        nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(),
        nn.ConvTranspose2d(ngf, 3, 4, 2, 1, bias=False), nn.Tanh())
    with zipfile.ZipFile(wheel) as zf:
        ckpt = torch.load(io.BytesIO(zf.read("gan_face_generate/weights.tar")), map_location="cpu",
                          weights_only=True)
    state = {k[len("main."):]: v for k, v in ckpt["netG_state_dict"].items()}
    net.load_state_dict(state, strict=True)
    return net.eval()


def test_registry_names():
    assert GENERATORS == ("dcgan", "stylegan1", "mobilestylegan")


def test_spec(dcgan):
    s = dcgan.spec
    assert (s.name, s.resolution, s.latent_dim, s.num_ws, s.noise_shapes, s.has_mapping, s.value_range) == \
        ("dcgan", 64, 100, 1, (), False, (-1.0, 1.0))
    assert not dcgan.training
    assert not any(p.requires_grad for p in dcgan.parameters())
    v = torch.randn(2, 1, 100)
    assert torch.equal(dcgan.map_latent(v), v)  # no mapping: w = v


def test_output_is_face_like(dcgan):
    with torch.no_grad():
        x = dcgan.synthesis(_z(64), [])  # [64, 3, 64, 64]
    assert x.shape == (64, 3, 64, 64)
    assert x.min() >= -1 and x.max() <= 1
    assert x.std(dim=(1, 2, 3)).min() > 0.1  # no flat image
    assert (x[0] - x[1]).abs().mean() > 0.1  # different latents, different faces
    # Faces are centred and roughly left-right symmetric: the mean image correlates with its mirror
    # image (0.87 measured; a random-weight DCGAN gives about 0).
    mean = x.mean(0) - x.mean()
    assert (mean * mean.flip(-1)).sum() / mean.square().sum() > 0.7
    # Skin in the centre: red > green > blue on average (measured -0.15, -0.40, -0.50).
    r, g, b = x[:, :, 20:44, 20:44].mean(dim=(0, 2, 3)).tolist()
    assert r > g > b


def test_deterministic(dcgan):
    with torch.no_grad():
        a = dcgan.synthesis(_z(3, seed=5), [])
        b = load_generator("dcgan").synthesis(_z(3, seed=5), [])
    assert torch.equal(a, b)
    assert weights_sha256(dcgan) == weights_sha256(load_generator("dcgan"))


def test_image01_in_unit_range(dcgan):
    with torch.no_grad():
        x = dcgan.image01(_z(2), [])
    assert x.min() >= 0 and x.max() <= 1


def test_vendored_file_matches_provenance():
    path = embedded_weights("dcgan")
    assert path.resolve() == (WEIGHTS_DIR / "dcgan64_faces.safetensors").resolve()
    record = json.loads((WEIGHTS_DIR / "dcgan64_faces.json").read_text())
    assert record["file"] == path.name
    assert file_sha256(path) == record["sha256"]
    assert record["source"]["wheel_sha256"] == "24102f4be41d164e44251168ede0458a45e498a888c81493e2aea48529640569"
    assert (record["source"]["package"], record["source"]["version"], record["license"]) == \
        ("gan-face-generate", "1.1.1", "MIT")
    assert weights_sha256(load_generator("dcgan")) == record["tensors_sha256"]
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        assert sorted(f.keys()) == sorted([f"convs.{i}.weight" for i in range(5)] + [f"convs.{i}.bias" for i in range(4)])
        assert all(f.get_tensor(k).dtype == torch.float32 for k in f.keys())
    assert meta["source_wheel_sha256"] == record["source"]["wheel_sha256"]
    assert "MIT" in meta["license"]
    notice = (WEIGHTS_DIR / "LICENSE-gan-face-generate.txt").read_text()
    assert "Copyright (c) 2023, chien liu" in notice and "Permission is hereby granted" in notice


def test_fold_matches_unfolded_batchnorm():
    """Folding on a random tutorial state equals ConvT + eval-mode BN, hand-checked on one layer."""
    g = torch.Generator().manual_seed(3)
    state = {}
    dims = [(100, 512), (512, 256), (256, 128), (128, 64), (64, 3)]
    for i, (cin, cout) in enumerate(dims):
        state[f"main.{3 * i}.weight"] = torch.randn(cin, cout, 4, 4, generator=g) * 0.02
        if i < 4:
            state[f"main.{3 * i + 1}.weight"] = 1 + 0.1 * torch.randn(cout, generator=g)
            state[f"main.{3 * i + 1}.bias"] = 0.1 * torch.randn(cout, generator=g)
            state[f"main.{3 * i + 1}.running_mean"] = 0.1 * torch.randn(cout, generator=g)
            state[f"main.{3 * i + 1}.running_var"] = 0.5 + torch.rand(cout, generator=g)
            state[f"main.{3 * i + 1}.num_batches_tracked"] = torch.tensor(7)
    folded = fold_dcgan_state(state)
    x = torch.randn(2, 100, 1, 1, generator=g)
    conv = torch.nn.functional.conv_transpose2d(x, state["main.0.weight"])  # [2, 512, 4, 4]
    bn = torch.nn.functional.batch_norm(conv, state["main.1.running_mean"], state["main.1.running_var"],
                                        state["main.1.weight"], state["main.1.bias"], training=False, eps=1e-5)
    fused = torch.nn.functional.conv_transpose2d(x, folded["convs.0.weight"], folded["convs.0.bias"])
    torch.testing.assert_close(fused, bn, rtol=1e-5, atol=1e-6)
    assert torch.equal(folded["convs.4.weight"], state["main.12.weight"])


def test_equals_unfolded_original(gfg_wheel):
    net = _original_tutorial_generator(gfg_wheel)
    gen = load_generator("dcgan")
    z = _z(4, seed=1)
    with torch.no_grad():
        ref = net(z.view(4, 100, 1, 1))
        out = gen.synthesis(z, [])
    torch.testing.assert_close(out, ref, rtol=0, atol=2e-5)


def test_loads_original_checkpoint_and_vendor_script_reproduces(gfg_wheel, tmp_path):
    with zipfile.ZipFile(gfg_wheel) as zf:
        (tmp_path / "weights.tar").write_bytes(zf.read("gan_face_generate/weights.tar"))
    from_tar = load_generator("dcgan", tmp_path / "weights.tar")  # folded on load
    assert weights_sha256(from_tar) == weights_sha256(load_generator("dcgan"))

    script = _vendor_script()
    out = tmp_path / "weights"
    script.main(["--wheel", str(gfg_wheel), "--out-dir", str(out)])
    # Same tensors and metadata; the file bytes may differ only in the order safetensors writes the
    # metadata entries of its JSON header (a hash map), hence the recorded file sha256 is left out.
    new = json.loads((out / "dcgan64_faces.json").read_text())
    old = json.loads((WEIGHTS_DIR / "dcgan64_faces.json").read_text())
    new.pop("sha256"), old.pop("sha256")
    new["conversion"].pop("torch"), old["conversion"].pop("torch")
    assert new == old
    with safe_open(str(out / "dcgan64_faces.safetensors"), framework="pt") as f_new, \
            safe_open(str(WEIGHTS_DIR / "dcgan64_faces.safetensors"), framework="pt") as f_old:
        assert f_new.metadata() == f_old.metadata()
        assert state_sha256({k: f_new.get_tensor(k) for k in f_new.keys()}) == old["tensors_sha256"]


def test_errors(tmp_path):
    with pytest.raises(PulseError, match="unknown generator 'biggan'; choose one of dcgan, stylegan1"):
        load_generator("biggan")
    with pytest.raises(PulseError, match="not found"):
        load_generator("dcgan", tmp_path / "nope.safetensors")
    with pytest.raises(PulseError, match="no mapping network"):
        load_generator("dcgan", mapping=tmp_path / "mapping.pt")
    with pytest.raises(PulseError, match="not embedded"):
        load_generator("stylegan1")
    bad = tmp_path / "bad.pt"
    state = {f"convs.{i}.weight": torch.zeros(1) for i in range(5)}
    torch.save(state, bad)
    with pytest.raises(PulseError, match=r"missing key 'convs.0.bias'"):
        load_generator("dcgan", bad)
    good = {k: v.clone() for k, v in load_generator("dcgan").state_dict().items()}
    good["convs.2.weight"] = torch.zeros(256, 128, 3, 3)
    torch.save(good, bad)
    with pytest.raises(PulseError, match=r"'convs.2.weight' has shape \(256, 128, 3, 3\), expected \(256, 128, 4, 4\)"):
        load_generator("dcgan", bad)
    assert state_sha256(good) != weights_sha256(load_generator("dcgan"))
