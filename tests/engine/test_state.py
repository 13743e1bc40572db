"""engine.state: seeded starts are deterministic, per row, shaped by the spec and the roles."""
from __future__ import annotations

import numpy as np

from pulse_trt.engine.options import PulseOptions
from pulse_trt.engine.spec import GeneratorSpec
from pulse_trt.engine.state import job_rows, latent_rows, start_state

STYLE = GeneratorSpec(name="s", resolution=16, latent_dim=8, num_ws=6,
                      noise_shapes=((1, 4, 4), (1, 4, 4), (1, 8, 8), (1, 8, 8), (1, 16, 16), (1, 16, 16)),
                      has_mapping=True)
VECTOR = GeneratorSpec(name="v", resolution=64, latent_dim=100, num_ws=1)


def test_shapes_and_dtypes():
    s = start_state(STYLE, PulseOptions(), job_rows(2, 3))
    assert s.latent.shape == (6, 6, 8) and s.latent.dtype == np.float32
    assert [n.shape for n in s.noise] == [(6, *shape) for shape in STYLE.noise_shapes]
    assert all(n.dtype == np.float32 for n in s.noise)
    v = start_state(VECTOR, PulseOptions(), job_rows(3, 1))
    assert v.latent.shape == (3, 1, 100) and v.noise == [] and v.roles == []


def test_tile_gives_one_row():
    assert latent_rows(STYLE, PulseOptions(tile_latent=True)) == 1
    assert latent_rows(STYLE, PulseOptions()) == 6
    assert latent_rows(VECTOR, PulseOptions()) == 1
    assert start_state(STYLE, PulseOptions(tile_latent=True), [(0, 0)]).latent.shape == (1, 1, 8)


def test_deterministic():
    a = start_state(STYLE, PulseOptions(seed=0), job_rows(2, 2))
    b = start_state(STYLE, PulseOptions(seed=0), job_rows(2, 2))
    assert np.array_equal(a.latent, b.latent)
    assert all(np.array_equal(x, y) for x, y in zip(a.noise, b.noise))


def test_seeds_and_rows_differ():
    a = start_state(STYLE, PulseOptions(seed=0), [(0, 0), (0, 1), (1, 0)])
    b = start_state(STYLE, PulseOptions(seed=1), [(0, 0)])
    assert not np.array_equal(a.latent[0], b.latent[0])  # seed 0 is a seed: differs from seed 1
    assert not np.array_equal(a.latent[0], a.latent[1])  # restarts differ
    assert not np.array_equal(a.latent[0], a.latent[2])  # inputs differ


def test_row_independent_of_batching():
    both = start_state(STYLE, PulseOptions(seed=5), [(0, 0), (1, 0)])
    alone = start_state(STYLE, PulseOptions(seed=5), [(1, 0)])
    assert np.array_equal(both.latent[1], alone.latent[0])
    for x, y in zip(both.noise, alone.noise):
        assert np.array_equal(x[1], y[0])


def test_roles_zero_maps_are_zero():
    opts = PulseOptions(num_trainable_noise_layers=3, bad_noise_layers="1.4")
    s = start_state(STYLE, opts, job_rows(2, 1))
    assert s.roles == ["trainable", "zero", "trainable", "frozen", "zero", "frozen"]
    for n, role in zip(s.noise, s.roles):
        if role == "zero":
            assert not n.any()
        else:
            assert n.std() > 0.5  # standard normal
    z = start_state(STYLE, PulseOptions(noise_type="zero"), job_rows(1, 1))
    assert all(not n.any() for n in z.noise)


def test_latent_drawn_first_so_noise_options_do_not_change_it():
    a = start_state(STYLE, PulseOptions(noise_type="zero"), [(0, 0)])
    b = start_state(STYLE, PulseOptions(noise_type="trainable"), [(0, 0)])
    c = start_state(STYLE, PulseOptions(noise_type="fixed"), [(0, 0)])
    assert np.array_equal(a.latent, b.latent) and np.array_equal(b.latent, c.latent)
    # frozen and trainable maps draw the same values
    for x, y, role in zip(b.noise, c.noise, b.roles):
        if role != "zero":
            assert np.array_equal(x, y)


def test_latent_is_standard_normal():
    s = start_state(VECTOR, PulseOptions(), job_rows(50, 1))
    assert abs(float(s.latent.mean())) < 0.05 and abs(float(s.latent.std()) - 1.0) < 0.05


def test_job_rows_order():
    assert job_rows(2, 3) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert job_rows(1, 1) == [(0, 0)]
