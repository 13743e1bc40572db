"""Fixtures of the engine tests: toy artefacts (tests/engine/toy_artifacts.py, no torch) and,
when the exporter and generators exist, real ones exported once per session."""
from __future__ import annotations

import pytest

from toy_artifacts import write_toy_artifacts


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory):
    """Toy artefacts: adam, 20 steps, duplicates 2, noise roles trainable/frozen/zero."""
    return write_toy_artifacts(tmp_path_factory.mktemp("toy"), duplicates=2)


def _export(tmp_path_factory, name: str, generator, lr_size: int, **options):
    """Export real artefacts once per session (torch; skip while the exporter is missing)."""
    try:
        from pulse_trt.export.onnx_export import export_artifacts  # noqa: PLC0415
    except ImportError as e:
        pytest.skip(f"exporter not available: {e}")
    from pulse_trt.engine.options import PulseOptions  # noqa: PLC0415

    out = tmp_path_factory.mktemp(name) / "art"
    return export_artifacts(generator, PulseOptions(**options), lr_size, out, verify=False, check_trt=False,
                            progress=False)


@pytest.fixture(scope="session")
def dcgan_dir(tmp_path_factory, dcgan):
    """The embedded dcgan exported at lr 8 (x8), default options (100 steps)."""
    return _export(tmp_path_factory, "dcgan8", dcgan, 8)


@pytest.fixture(scope="session")
def small_stylegan():
    """A small stylegan1: random weights, 16 px, 8 channels, 16-dim latent."""
    gens = pytest.importorskip("pulse_trt.export.generators")
    return gens.StyleGAN1Generator(resolution=16, fmaps=lambda r: 8, latent_dim=16, seed=0)


@pytest.fixture(scope="session")
def stylegan_dir(tmp_path_factory, small_stylegan):
    """The small stylegan1 exported at lr 4 (x4), duplicates 2."""
    return _export(tmp_path_factory, "sg16", small_stylegan, 4, duplicates=2)


@pytest.fixture(scope="session")
def small_mobilestylegan():
    """A small mobilestylegan: random weights, 32 px (channels 16, 16, 8), 32-dim latent,
    Gaussian fit of 4096 samples."""
    torch = pytest.importorskip("torch")
    from pulse_trt.export.gaussian_fit import gaussian_fit  # noqa: PLC0415
    from pulse_trt.export.generators.mobilestylegan import MobileStyleGANGenerator  # noqa: PLC0415

    g = MobileStyleGANGenerator(seed=0, channels=(16, 16, 8), latent_dim=32)
    mean, std = gaussian_fit(g.mapping, n=4096, seed=0)
    with torch.no_grad():
        g.w_mean.copy_(mean)
        g.w_std.copy_(std)
    return g


@pytest.fixture(scope="session")
def mobilestylegan_dir(tmp_path_factory, small_mobilestylegan):
    """The small mobilestylegan exported at lr 8 (x4), duplicates 2."""
    return _export(tmp_path_factory, "msg32", small_mobilestylegan, 8, duplicates=2)
