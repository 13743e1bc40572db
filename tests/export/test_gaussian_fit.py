"""The Gaussian fit: chunked equals one batch, LeakyReLU(5) undoes the mapping's last activation,
the cache is keyed by weights, n and seed, and a cache hit runs no sample."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pulse_trt.engine.errors import PulseError
from pulse_trt.export.gaussian_fit import cached_gaussian_fit, fit_cache_key, fit_cache_path, gaussian_fit
from pulse_trt.export.generators.stylegan1 import MappingNetwork

D = 32


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def mapping() -> MappingNetwork:
    net = MappingNetwork(latent_dim=D)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (100.0 if name.endswith("weight") else 10.0))
    return net.requires_grad_(False)


class _Counter:
    """Counts the rows that went through a module's forward."""

    def __init__(self, module: nn.Module):
        self.rows = 0
        module.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        self.rows += args[0].shape[0]


def test_chunked_equals_one_batch(mapping):
    n = 1000
    z = torch.randn(n, D, generator=torch.Generator().manual_seed(0))  # one batch, seed 0
    with torch.no_grad():
        x = F.leaky_relu(mapping(z), 5.0).double()  # [n, D]
    ref_mean, ref_std = x.mean(0).float(), x.std(0).float()  # unbiased, like torch.std
    for chunk in (n, 96, 7):
        mean, std = gaussian_fit(mapping, n=n, chunk=chunk, seed=0)
        assert mean.shape == (D,) and std.shape == (D,) and mean.dtype == torch.float32
        torch.testing.assert_close(mean, ref_mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(std, ref_std, rtol=1e-5, atol=1e-6)


def test_leaky_relu_5_undoes_the_final_activation():
    """A 'mapping' that is only LeakyReLU(0.2): the fit is that of z itself."""
    n = 500
    ident = nn.Sequential(nn.LeakyReLU(0.2))
    mean, std = gaussian_fit(ident, n=n, chunk=64, seed=3, latent_dim=4)
    z = torch.randn(n, 4, generator=torch.Generator().manual_seed(3)).double()
    torch.testing.assert_close(mean, z.mean(0).float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(std, z.std(0).float(), rtol=1e-5, atol=1e-6)


def test_seed_changes_samples(mapping):
    a, _ = gaussian_fit(mapping, n=200, seed=0)
    b, _ = gaussian_fit(mapping, n=200, seed=1)
    assert not torch.equal(a, b)
    c, _ = gaussian_fit(mapping, n=200, seed=0)
    assert torch.equal(a, c)


def test_cache_hit_costs_nothing(mapping, tmp_path):
    counter = _Counter(mapping)
    mean, std = cached_gaussian_fit(mapping, tmp_path, n=300, seed=0, chunk=128)
    assert counter.rows == 300
    key = fit_cache_key(mapping, 300, 0)
    assert fit_cache_path(tmp_path, key).is_file()
    assert list(tmp_path.iterdir()) == [fit_cache_path(tmp_path, key)]  # no temporary file left
    mean2, std2 = cached_gaussian_fit(mapping, tmp_path, n=300, seed=0, chunk=128)
    assert counter.rows == 300  # no sample drawn, no forward pass
    assert torch.equal(mean, mean2) and torch.equal(std, std2)


def test_cache_key_changes_with_weights_n_and_seed(mapping, tmp_path):
    key = fit_cache_key(mapping, 300, 0)
    assert fit_cache_key(mapping, 301, 0) != key
    assert fit_cache_key(mapping, 300, 1) != key
    cached_gaussian_fit(mapping, tmp_path, n=300)
    with torch.no_grad():
        mapping.dense3.bias[5] += 1.0
    assert fit_cache_key(mapping, 300, 0) != key
    counter = _Counter(mapping)
    cached_gaussian_fit(mapping, tmp_path, n=300)
    assert counter.rows == 300  # new weights: recomputed
    assert len(list(tmp_path.glob("gaussian_fit-*.safetensors"))) == 2


def test_corrupt_cache_is_recomputed(mapping, tmp_path):
    ref = cached_gaussian_fit(mapping, tmp_path, n=100)
    path = fit_cache_path(tmp_path, fit_cache_key(mapping, 100, 0))
    path.write_bytes(b"garbage")
    counter = _Counter(mapping)
    again = cached_gaussian_fit(mapping, tmp_path, n=100)
    assert counter.rows == 100
    assert torch.equal(ref[0], again[0]) and torch.equal(ref[1], again[1])


def test_unwritable_cache_dir_warns_and_still_returns(mapping, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.warns(UserWarning, match="could not cache the Gaussian fit"):
        mean, _ = cached_gaussian_fit(mapping, blocker / "sub", n=50)
    assert torch.equal(mean, gaussian_fit(mapping, n=50)[0])


def test_bad_arguments(mapping):
    with pytest.raises(PulseError, match="at least 2 samples"):
        gaussian_fit(mapping, n=1)
    with pytest.raises(PulseError, match="chunk must be >= 1"):
        gaussian_fit(mapping, n=10, chunk=0)
