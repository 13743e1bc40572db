"""Fixtures of the CLI tests: run `pulse-trt` in-process, write small PNGs, a fake search backend
(for the CLI's own flow: validation, batching, records, Ctrl-C), faces made by the embedded
dcgan (for real end-to-end runs); the artefact cache shared by the whole session is tests/conftest.py's.

Every CLI test runs with PULSE_TRT_CACHE pointing at the session's cache (never ~/.cache), and
the dcgan artefacts for 8x8 inputs with --steps 5 (FAST_STEPS) are exported once per session
(about 10-30 s on 2 cores): fast tests use --steps 5 so that they find them there.
"""
from __future__ import annotations


import numpy as np
import pytest

from cli_helpers import FakeBackends, write_png
from pulse_trt.engine.bicubic import downscale


@pytest.fixture(autouse=True)
def _cache_env(monkeypatch, pulse_cache):
    monkeypatch.setenv("PULSE_TRT_CACHE", str(pulse_cache))


@pytest.fixture
def cli(capsys):
    """cli(*argv) -> (exit code, stdout, stderr) of pulse_trt.cli.main(argv)."""
    from pulse_trt.cli import main  # noqa: PLC0415

    def run(*argv):
        capsys.readouterr()
        rc = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return rc, out, err

    return run


@pytest.fixture
def fake_runner(monkeypatch):
    """Replace the CLI's backends by FakeBackends (returned, to inspect its search calls)."""
    from pulse_trt.cli import upsample  # noqa: PLC0415

    backends = FakeBackends()
    monkeypatch.setattr(upsample, "open_backend", backends)
    return backends


@pytest.fixture(scope="session")
def dcgan_faces(dcgan, tmp_path_factory):
    """Three 8x8 PNGs made by the dcgan itself: seeded latents -> 64 px faces -> PULSE's bicubic
    downscale -> 8-bit. Returns their paths (face0.png, face1.png, face2.png)."""
    import torch  # noqa: PLC0415

    folder = tmp_path_factory.mktemp("faces")
    z = torch.randn(3, 1, dcgan.spec.latent_dim, generator=torch.Generator().manual_seed(1234))  # [3, 1, 100]
    with torch.no_grad():
        hr = dcgan.image01(z, []).clamp(0, 1).numpy()  # [3, 3, 64, 64]
    lr = downscale(hr.astype(np.float64), 8)  # [3, 3, 8, 8]
    paths = []
    for i in range(3):
        rgb = np.clip(np.rint(lr[i] * 255), 0, 255).astype(np.uint8).transpose(1, 2, 0)
        paths.append(write_png(folder / f"face{i}.png", rgb))
    return paths
