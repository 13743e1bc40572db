"""engine.options: schedules, loss strings, noise layers and roles, validation (values by hand)."""
from __future__ import annotations

import math

import pytest

from pulse_trt.engine.errors import PulseError
from pulse_trt.engine.options import (PulseOptions, lr_factor, noise_roles, parse_bad_noise_layers,
                                      parse_loss)


# --- schedules -------------------------------------------------------------------------------

def test_default_schedule_matches_pulse_md():
    o = PulseOptions()
    assert o.lr_at(0) == pytest.approx(0.04)  # 0.4 * (9*0 + 1)/10
    assert o.lr_at(45) == pytest.approx(0.40)  # peak of the triangle over 0.9*S = 90 steps
    assert o.lr_at(90) == pytest.approx(0.04)  # start of the drop: 0.1 * 0.4
    assert o.lr_at(99) == pytest.approx(0.4 * (0.1 - 0.9 * 0.099))  # 0.004364
    assert o.lr_at(99) == pytest.approx(0.0044, abs=5e-5)
    assert o.lr_at(22.5) == pytest.approx(0.4 * 0.55)  # halfway up: (9 * 0.5 + 1)/10


def test_linear1cycle():
    f = [lr_factor(x, 100, "linear1cycle") for x in (0, 25, 50, 75, 100)]
    assert f == pytest.approx([0.1, 0.55, 1.0, 0.55, 0.1])
    assert lr_factor(10, 20, "linear1cycle") == pytest.approx(1.0)


def test_linear1cycledrop_other_length():
    # S = 200: triangle over 180 steps (peak at 90), then 0.1 -> 0.001 over 20 steps.
    assert lr_factor(90, 200, "linear1cycledrop") == pytest.approx(1.0)
    assert lr_factor(180, 200, "linear1cycledrop") == pytest.approx(0.1)
    assert lr_factor(190, 200, "linear1cycledrop") == pytest.approx(0.1 - 0.5 * 0.099)


def test_fixed_schedule():
    o = PulseOptions(lr_schedule="fixed", learning_rate=0.25, steps=7)
    assert [o.lr_at(j) for j in range(7)] == [0.25] * 7


def test_unknown_schedule_in_lr_factor():
    with pytest.raises(PulseError):
        lr_factor(0, 10, "cosine")


# --- loss strings ----------------------------------------------------------------------------

def test_parse_loss_good():
    assert parse_loss("100*L2+0.05*GEOCROSS") == {"L2": 100.0, "GEOCROSS": 0.05}
    assert list(parse_loss("1*GEOCROSS+2*L1")) == ["GEOCROSS", "L1"]  # order kept
    assert parse_loss(" 2 * l2 + 1e-2*L1 ") == {"L2": 2.0, "L1": 0.01}  # case, spaces, exponent
    assert parse_loss(".5*L1") == {"L1": 0.5}


@pytest.mark.parametrize("bad, words", [
    ("", "empty"),
    ("   ", "empty"),
    ("L2", "weight*NAME"),
    ("100*L2+", "weight*NAME"),
    ("100*L2+*GEOCROSS", "weight*NAME"),
    ("-1*L2", "weight*NAME"),
    ("1*L2+2*L2", "twice"),
    ("1*L2+2*l2", "twice"),
    ("1*L3", "unknown loss term"),
    ("1*TOTAL", "unknown loss term"),
])
def test_parse_loss_bad(bad, words):
    with pytest.raises(PulseError) as e:
        parse_loss(bad)
    assert words in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(PulseError):
        PulseOptions(loss_str=bad)


def test_loss_weights_property():
    assert PulseOptions().loss_weights == {"L2": 100.0, "GEOCROSS": 0.05}


# --- noise layers and roles ------------------------------------------------------------------

def test_parse_bad_noise_layers():
    assert parse_bad_noise_layers("17") == {17}
    assert parse_bad_noise_layers("3.17") == {3, 17}
    assert parse_bad_noise_layers("") == frozenset()
    assert parse_bad_noise_layers(" 4 ") == {4}
    assert PulseOptions(bad_noise_layers="0.5").bad_noise == {0, 5}


@pytest.mark.parametrize("bad", ["a", "1..2", "-1", "1,2", "3.x", "1.5.", "2.5e1"])
def test_parse_bad_noise_layers_bad(bad):
    with pytest.raises(PulseError, match="bad_noise_layers"):
        parse_bad_noise_layers(bad)
    with pytest.raises(PulseError, match="bad_noise_layers"):
        PulseOptions(bad_noise_layers=bad)


def test_noise_roles_default_trainable():
    roles = noise_roles(18, PulseOptions())  # 5 trainable, bad layer 17
    assert roles == ["trainable"] * 5 + ["frozen"] * 12 + ["zero"]


def test_noise_roles_each_type():
    assert noise_roles(18, PulseOptions(noise_type="zero", bad_noise_layers="")) == ["zero"] * 18
    assert noise_roles(4, PulseOptions(noise_type="fixed", bad_noise_layers="2")) == ["frozen", "frozen", "zero", "frozen"]
    opts = PulseOptions(noise_type="trainable", num_trainable_noise_layers=3, bad_noise_layers="1.4")
    assert noise_roles(6, opts) == ["trainable", "zero", "trainable", "frozen", "zero", "frozen"]
    assert noise_roles(3, PulseOptions(num_trainable_noise_layers=0, bad_noise_layers="")) == ["frozen"] * 3
    assert noise_roles(2, PulseOptions(num_trainable_noise_layers=9, bad_noise_layers="")) == ["trainable"] * 2
    assert noise_roles(0, PulseOptions()) == []


# --- validation ------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, words", [
    ({"eps": -1e-3}, "eps"),
    ({"eps": math.nan}, "eps"),
    ({"eps": math.inf}, "eps"),
    ({"noise_type": "random"}, "noise_type"),
    ({"opt_name": "lbfgs"}, "opt_name"),
    ({"lr_schedule": "cosine"}, "lr_schedule"),
    ({"learning_rate": 0.0}, "learning_rate"),
    ({"learning_rate": -0.4}, "learning_rate"),
    ({"learning_rate": math.nan}, "learning_rate"),
    ({"steps": 0}, "steps"),
    ({"steps": 1.5}, "steps"),
    ({"steps": True}, "steps"),
    ({"duplicates": 0}, "duplicates"),
    ({"num_trainable_noise_layers": -1}, "num_trainable_noise_layers"),
    ({"seed": -1}, "seed"),
    ({"seed": 1.0}, "seed"),
])
def test_validation_errors_are_one_line(kwargs, words):
    with pytest.raises(PulseError) as e:
        PulseOptions(**kwargs)
    msg = str(e.value)
    assert words in msg and "\n" not in msg


def test_seed_zero_and_eps_zero_are_valid():
    assert PulseOptions(seed=0).seed == 0
    assert PulseOptions(eps=0).eps == 0


def test_dict_round_trip_and_unknown_key():
    o = PulseOptions(steps=7, loss_str="1*L1", tile_latent=True, seed=3)
    assert PulseOptions.from_dict(o.to_dict()) == o
    with pytest.raises(PulseError, match="unknown PULSE option 'stepz'"):
        PulseOptions.from_dict({"stepz": 3})


@pytest.mark.parametrize("field,value", [("learning_rate", "0.4"), ("learning_rate", True), ("eps", "x"), ("eps", None)])
def test_non_numeric_options_are_pulse_errors(field, value):
    with pytest.raises(PulseError):
        PulseOptions(**{field: value})
